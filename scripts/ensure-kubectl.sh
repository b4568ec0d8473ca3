#!/usr/bin/env bash
# Make sure a kubectl that can build a host's kubernetes/ folder is on PATH (Debian 12, root).
#
#   bash scripts/ensure-kubectl.sh             # idempotent: does nothing when one already works
#   bash scripts/ensure-kubectl.sh --download  # unpack Debian 13's kubectl even if one works
#
# "Works" means `kubectl kustomize --load-restrictor` exists (kubectl 1.21 or newer): a host's
# kustomization reads the Secret's values from ../.env, which kustomize refuses without
# `--load-restrictor LoadRestrictionsNone`. Debian 12's kubernetes-client is 1.20.2 (its
# kustomize is v2: no such flag), so the kubectl package of Debian 13 (1.32) is used instead.
# It is downloaded with scripts/apt-download.sh, as ensure-engine.sh does for Compose v2:
# nothing else on the machine is installed or upgraded from Debian 13. The binary is unpacked
# to $DEST (it needs only libc6 >= 2.34; Debian 12 has 2.36); no cluster
# is contacted, here or by the tests.
set -euo pipefail

DEST="${PIXSIM_HOST_KUBECTL_DIR:-/usr/local/bin}"

say() { echo "ensure-kubectl: $*"; }
die() { echo "ensure-kubectl: ERROR: $*" >&2; exit 1; }

builds_outside_files() {
    "$1" kustomize --help 2>/dev/null | grep -q -- '--load-restrictor'
}

describe() {
    "$1" version --client 2>/dev/null | head -n 1 || true
}

force=0
[ "${1:-}" = "--download" ] && force=1

if [ "$force" = 0 ] && command -v kubectl >/dev/null 2>&1 && builds_outside_files kubectl; then
    say "ok: $(command -v kubectl): $(describe kubectl)"
    exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (it downloads a Debian package)"
if [ -e "$DEST/kubectl" ] && [ "$force" = 0 ]; then
    die "$DEST/kubectl exists but cannot build a kustomization that reads ../.env (it is older than 1.21); replace it with kubectl 1.21 or newer"
fi

export DEBIAN_FRONTEND=noninteractive
work="$(mktemp -d "${TMPDIR:-/tmp}/pixsim-host-kubectl.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Downloaded from the machine's own Debian source with the suite changed, into a private apt
# state: nothing is installed from Debian 13 and the machine's package lists stay untouched.
bash "$(dirname "$0")/apt-download.sh" trixie "$work/debs" kubectl
dpkg-deb -x "$work"/debs/kubectl_*.deb "$work/unpacked"
install -D -m 0755 "$work/unpacked/usr/bin/kubectl" "$DEST/kubectl"
builds_outside_files "$DEST/kubectl" || die "$DEST/kubectl cannot build with --load-restrictor"
say "installed $DEST/kubectl: $(describe "$DEST/kubectl")"
