#!/usr/bin/env bash
# Make sure a Docker Engine and Compose v2 are usable on a Debian 12 machine where we are root.
#
#   bash scripts/ensure-engine.sh                  # Debian 12's engine (20.10, API 1.41)
#   bash scripts/ensure-engine.sh --engine modern  # Debian 13's engine (26.1, API 1.45)
#   bash scripts/ensure-engine.sh [--engine E] --stop   # stop that engine if this script started it
#   bash scripts/ensure-engine.sh --engine modern --host  # print its DOCKER_HOST, do nothing else
#
# Idempotent: does nothing when the engine and Compose already work. CI machines start empty
# (nothing installed, nothing running, no stdin), so every step a developer might have done by
# hand is done here. One line is printed per action taken.
#
# The two engines run side by side, each with its own socket, data root, exec root and pidfile,
# so starting one never disturbs containers of the other:
#   debian  unix:///var/run/docker.sock    (/var/lib/docker)    the engine of `apt install docker.io`
#   modern  unix:///var/run/docker26.sock  (/var/lib/docker26)  Debian 13's docker.io + containerd,
#           unpacked (not installed) into $MODERN_DIR, with Debian 12's runc (Debian 13's needs a
#           newer glibc)
# Both engines would otherwise fight over the default bridge (docker0) and the iptables chains
# dockerd owns (each dockerd deletes and recreates DOCKER* chains when it starts). So the modern
# engine's default bridge is an interface of its own (docker26, made here; `--bridge=none`
# would not do: dockerd then deletes docker0, the other engine's bridge), it allocates its
# networks from its own address pool, and it leaves iptables alone (`--iptables=false`). What
# it then needs from the firewall is one rule, added here and removed again on --stop:
# forwarding inside its own addresses (traffic between its containers crosses the host's
# FORWARD chain, whose policy the other dockerd sets to DROP). Ports are published by
# docker-proxy, so 127.0.0.1:<port> works as on any engine.
set -euo pipefail

say() { echo "ensure-engine: $*"; }
die() { echo "ensure-engine: ERROR: $*" >&2; exit 1; }

ENGINE=debian
ACTION=ensure
while [ $# -gt 0 ]; do
    case "$1" in
        --engine) ENGINE="${2:-}"; shift 2 ;;
        --engine=*) ENGINE="${1#*=}"; shift ;;
        --stop) ACTION=stop; shift ;;
        --host) ACTION=host; shift ;;
        *) die "unknown argument '$1'; use [--engine debian|modern] [--stop|--host]" ;;
    esac
done

MODERN_DIR="${PIXSIM_HOST_MODERN_ENGINE_DIR:-/opt/pixsim-host-engine-modern}"
# All of the modern engine's addresses: its networks' pool and its default bridge.
MODERN_NET=10.226.0.0/16
MODERN_POOL=10.226.0.0/17
MODERN_BRIDGE=docker26
MODERN_BRIDGE_IP=10.226.200.1/24
MODERN_RULE=(FORWARD -s "$MODERN_NET" -d "$MODERN_NET" -m comment --comment pixsim-host-modern-engine -j ACCEPT)
case "$ENGINE" in
    debian)
        SOCKET=/var/run/docker.sock
        PIDFILE=/var/run/docker.pid
        # Written only when this script started dockerd, so a caller can tell "ours" from
        # "already there" and stop only ours.
        MARKER=/run/pixsim-host-test-dockerd.pid
        ;;
    modern)
        SOCKET=/var/run/docker26.sock
        PIDFILE=/var/run/docker26.pid
        MARKER=/run/pixsim-host-test-dockerd-modern.pid
        ;;
    *) die "unknown engine '$ENGINE'; use debian or modern" ;;
esac
export DOCKER_HOST="unix://$SOCKET"

if [ "$ACTION" = host ]; then
    echo "$DOCKER_HOST"
    exit 0
fi

# Searched by every docker CLI, so the plugin is found whichever `docker` comes first on PATH.
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
START_TIMEOUT=60

[ "$(id -u)" = 0 ] || die "must run as root (it may install packages and start dockerd)"

export DEBIAN_FRONTEND=noninteractive
SCRIPTS="$(cd "$(dirname "$0")" && pwd)"

APT_UPDATED=0
apt_update_once() {
    # A fresh machine may have no package lists at all; refresh them once per run.
    if [ "$APT_UPDATED" = 0 ]; then
        say "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
}

engine_ok() { docker info >/dev/null 2>&1; }
compose_ok() { docker compose version >/dev/null 2>&1; }
pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

forward_rule() { iptables "$1" "${MODERN_RULE[@]}" 2>/dev/null; }

stop_engine() {
    if [ ! -f "$MARKER" ]; then
        say "no $ENGINE dockerd started by this script (no $MARKER); nothing to stop"
        return 0
    fi
    local pid
    pid="$(cat "$MARKER" 2>/dev/null || true)"
    if pid_alive "$pid"; then
        say "stopping the $ENGINE dockerd (pid $pid)"
        # SIGTERM lets dockerd stop its containers and containerd cleanly.
        kill -TERM "$pid"
        for _ in $(seq 1 120); do
            pid_alive "$pid" || break
            sleep 0.25
        done
        if pid_alive "$pid"; then
            say "dockerd (pid $pid) still running after 30 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$MARKER"
    if [ "$ENGINE" = modern ]; then
        while forward_rule -C; do forward_rule -D || break; done
        ip link delete "$MODERN_BRIDGE" 2>/dev/null || true
    fi
}

ensure_modern_bridge() {
    if ! ip link show "$MODERN_BRIDGE" >/dev/null 2>&1; then
        ip link add "$MODERN_BRIDGE" type bridge
        ip addr add "$MODERN_BRIDGE_IP" dev "$MODERN_BRIDGE"
    fi
    ip link set "$MODERN_BRIDGE" up
}

if [ "$ACTION" = stop ]; then
    stop_engine
    exit 0
fi

# A marker whose process is gone (machine reboot, crash) must not make a caller kill an
# unrelated process later.
if [ -f "$MARKER" ] && ! pid_alive "$(cat "$MARKER" 2>/dev/null || true)"; then
    say "removing stale $MARKER"
    rm -f "$MARKER"
fi

# --- the modern engine's binaries -------------------------------------------------------------
# dockerd finds containerd, its shim, runc, docker-proxy and docker-init on PATH: one folder of
# links puts Debian 13's daemon pieces and Debian 12's runc and init first.
MODERN_BIN="$MODERN_DIR/bin"
ensure_modern_binaries() {
    if [ -x "$MODERN_BIN/dockerd" ] && "$MODERN_BIN/dockerd" --version >/dev/null 2>&1; then
        return 0
    fi
    if ! command -v runc >/dev/null 2>&1 || ! command -v docker-init >/dev/null 2>&1 \
        || ! command -v docker >/dev/null 2>&1; then
        # Debian 12's docker.io brings runc, docker-init and the docker CLI.
        apt_update_once
        say "installing docker.io (for runc, docker-init and the CLI)"
        apt-get install -y -qq docker.io >/dev/null
    fi
    local work
    work="$(mktemp -d "${TMPDIR:-/tmp}/pixsim-host-engine.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    say "downloading Debian 13's docker.io and containerd"
    bash "$SCRIPTS/apt-download.sh" trixie "$work/debs" docker.io containerd
    rm -rf "$MODERN_DIR.new"
    mkdir -p "$MODERN_DIR.new/root" "$MODERN_DIR.new/bin"
    for deb in "$work"/debs/*.deb; do
        dpkg-deb -x "$deb" "$MODERN_DIR.new/root"
    done
    local root="$MODERN_DIR/root" name
    for name in dockerd docker-proxy; do
        ln -s "$root/usr/sbin/$name" "$MODERN_DIR.new/bin/$name"
    done
    for name in containerd containerd-shim-runc-v2 ctr; do
        ln -s "$root/usr/bin/$name" "$MODERN_DIR.new/bin/$name"
    done
    ln -s "$(command -v runc)" "$MODERN_DIR.new/bin/runc"
    ln -s "$(command -v docker-init)" "$MODERN_DIR.new/bin/docker-init"
    rm -rf "$MODERN_DIR"
    mv "$MODERN_DIR.new" "$MODERN_DIR"
    rm -rf "$work"
    trap - EXIT
    "$MODERN_BIN/dockerd" --version >/dev/null || die "$MODERN_BIN/dockerd does not run here"
    say "unpacked $("$MODERN_BIN/dockerd" --version) into $MODERN_DIR"
}

# --- engine ---------------------------------------------------------------------------------
if ! engine_ok; then
    if [ "$ENGINE" = modern ]; then
        ensure_modern_binaries
        DOCKERD=("$MODERN_BIN/dockerd"
            --data-root /var/lib/docker26 --exec-root /var/run/docker26
            --bridge="$MODERN_BRIDGE" --iptables=false
            --default-address-pool "base=$MODERN_POOL,size=24")
        DOCKERD_PATH="$MODERN_BIN:$PATH"
        command -v ip >/dev/null 2>&1 || { apt_update_once; apt-get install -y -qq iproute2 >/dev/null; }
        ensure_modern_bridge
        forward_rule -C || forward_rule -I || die "could not add the iptables rule '${MODERN_RULE[*]}'"
    else
        if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
            apt_update_once
            say "installing docker.io"
            apt-get install -y -qq docker.io >/dev/null
        fi
        DOCKERD=(dockerd)
        DOCKERD_PATH="$PATH"
    fi

    # dockerd writes its pid here; if that process is alive it is merely still starting
    # (or wedged), and a second dockerd would only fail on the same socket and pidfile.
    running_pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    if pid_alive "$running_pid"; then
        say "$ENGINE dockerd already running (pid $running_pid); waiting for it"
        log="(log of pid $running_pid unknown: not started by this script)"
        started=0
    else
        log="$(mktemp "${TMPDIR:-/tmp}/pixsim-host-dockerd-$ENGINE.XXXXXX.log")"
        say "starting the $ENGINE dockerd on $DOCKER_HOST (log: $log)"
        # setsid+nohup: dockerd must outlive this script and not get the caller's SIGHUP/SIGINT.
        # --wait keeps $! alive exactly as long as dockerd, even if setsid had to fork.
        PATH="$DOCKERD_PATH" setsid --wait nohup "${DOCKERD[@]}" --host "$DOCKER_HOST" \
            --pidfile "$PIDFILE" >"$log" 2>&1 </dev/null &
        launcher=$!
        started=1
    fi

    deadline=$((SECONDS + START_TIMEOUT))
    until engine_ok; do
        if [ "$started" = 1 ] && ! pid_alive "$launcher"; then
            echo "ensure-engine: ERROR: dockerd exited during startup" >&2
            echo "---- last lines of $log ----" >&2
            tail -n 40 "$log" >&2
            exit 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "ensure-engine: ERROR: docker info did not answer within ${START_TIMEOUT}s" >&2
            if [ -f "$log" ]; then
                echo "---- last lines of $log ----" >&2
                tail -n 40 "$log" >&2
            fi
            exit 1
        fi
        sleep 0.25
    done

    if [ "$started" = 1 ]; then
        # The daemon's own pidfile names the real dockerd (not a wrapper process).
        pid="$(cat "$PIDFILE")"
        echo "$pid" >"$MARKER"
        say "$ENGINE dockerd ready (pid $pid, marker $MARKER)"
    else
        say "$ENGINE dockerd ready"
    fi
fi

# --- compose v2 -------------------------------------------------------------------------------
if ! compose_ok; then
    # Debian 12 ships only Compose v1; Debian 13's package carries the v2 plugin. It is
    # downloaded and unpacked, not installed: nothing on the machine comes from Debian 13.
    work="$(mktemp -d "${TMPDIR:-/tmp}/pixsim-host-compose.XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    bash "$SCRIPTS/apt-download.sh" trixie "$work/debs" docker-compose
    dpkg-deb -x "$work"/debs/docker-compose_*.deb "$work/unpacked"
    install -D -m 0755 "$work/unpacked/usr/libexec/docker/cli-plugins/docker-compose" \
        "$PLUGIN_DIR/docker-compose"
    say "installed Compose v2 plugin to $PLUGIN_DIR/docker-compose"
    rm -rf "$work"
    trap - EXIT
    compose_ok || die "docker compose still unavailable after installing the plugin"
fi

say "ok ($ENGINE, $DOCKER_HOST): $(docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})'); $(docker compose version)"
