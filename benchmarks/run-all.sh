#!/usr/bin/env bash
# Every benchmark, on both engines of the test command, one after the other:
#
#   bash benchmarks/run-all.sh [--rounds N]        # as root (it may start the engines)
#
# up_vs_compose.py runs once per engine (each run talks to the engine DOCKER_HOST names);
# native_up.py and scale.py run on the modern engine. Engines this script started are
# stopped at the end; engines already running are left alone. Figures go to stdout, progress
# to stderr. PIXSIM_HOST_BENCH_ENGINES="modern debian" (the default) chooses the engines.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
rounds=(--rounds 3)
[ "${1:-}" = "--rounds" ] && rounds=(--rounds "${2:?--rounds needs a number}")
read -r -a ENGINES <<<"${PIXSIM_HOST_BENCH_ENGINES:-modern debian}"

ours=()
stop_ours() {
    local rc=$? engine
    for engine in "${ours[@]}"; do
        bash scripts/ensure-engine.sh --engine "$engine" --stop >&2 || true
    done
    exit "$rc"
}
trap stop_ours EXIT

for engine in "${ENGINES[@]}"; do
    host="$(bash scripts/ensure-engine.sh --engine "$engine" --host)"
    if ! DOCKER_HOST="$host" docker info >/dev/null 2>&1; then
        bash scripts/ensure-engine.sh --engine "$engine" >&2
        ours+=("$engine")
    fi
    DOCKER_HOST="$host" bash scripts/build-test-images.sh >&2
done

echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg)"
for engine in "${ENGINES[@]}"; do
    echo
    echo "## up_vs_compose.py on the $engine engine"
    DOCKER_HOST="$(bash scripts/ensure-engine.sh --engine "$engine" --host)" \
        "$PY" benchmarks/up_vs_compose.py "${rounds[@]}" --profile
done
first="$(bash scripts/ensure-engine.sh --engine "${ENGINES[0]}" --host)"
echo
echo "## native_up.py (Docker figures on the ${ENGINES[0]} engine)"
DOCKER_HOST="$first" "$PY" benchmarks/native_up.py "${rounds[@]}"
echo
echo "## scale.py on the ${ENGINES[0]} engine"
DOCKER_HOST="$first" "$PY" benchmarks/scale.py
echo
echo "## tls.py (native, and Docker on the ${ENGINES[0]} engine)"
"$PY" benchmarks/tls.py --runtime native
DOCKER_HOST="$first" "$PY" benchmarks/tls.py --runtime docker
