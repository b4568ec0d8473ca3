#!/usr/bin/env bash
# Make sure a Docker Engine and Compose v2 are usable on a Debian 12 machine where we are root.
#
#   bash scripts/ensure-engine.sh          # idempotent: does nothing when both already work
#   bash scripts/ensure-engine.sh --stop   # stop the dockerd this script started (if any)
#
# CI machines start empty (nothing installed, nothing running, no stdin), so every step that
# a developer might have done by hand is done here. One line is printed per action taken.
set -euo pipefail

# Written only when this script started dockerd, so a caller can tell "ours" from "already
# there" and stop only ours.
MARKER=/run/pixsim-host-test-dockerd.pid
SOCKET=/var/run/docker.sock
# Searched by every docker CLI (Debian's 20.10 and newer ones in /usr/local/bin alike), so the
# plugin is found whichever `docker` comes first on PATH.
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
START_TIMEOUT=60

say() { echo "ensure-engine: $*"; }
die() { echo "ensure-engine: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it may install packages and start dockerd)"

export DEBIAN_FRONTEND=noninteractive

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

stop_engine() {
    if [ ! -f "$MARKER" ]; then
        say "no dockerd started by this script (no $MARKER); nothing to stop"
        return 0
    fi
    local pid
    pid="$(cat "$MARKER" 2>/dev/null || true)"
    if pid_alive "$pid"; then
        say "stopping dockerd (pid $pid)"
        # SIGTERM lets dockerd stop its containers and containerd cleanly.
        kill -TERM "$pid"
        for _ in $(seq 1 60); do
            pid_alive "$pid" || break
            sleep 0.5
        done
        if pid_alive "$pid"; then
            say "dockerd (pid $pid) still running after 30 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$MARKER"
}

if [ "${1:-}" = "--stop" ]; then
    stop_engine
    exit 0
fi

# A marker whose process is gone (machine reboot, crash) must not make a caller kill an
# unrelated process later.
if [ -f "$MARKER" ] && ! pid_alive "$(cat "$MARKER" 2>/dev/null || true)"; then
    say "removing stale $MARKER"
    rm -f "$MARKER"
fi

# --- engine ---------------------------------------------------------------------------------
if ! engine_ok; then
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        apt_update_once
        say "installing docker.io"
        apt-get install -y -qq docker.io >/dev/null
    fi

    # dockerd writes its pid here; if that process is alive it is merely still starting
    # (or wedged), and a second dockerd would only fail on the same socket and pidfile.
    running_pid="$(cat /var/run/docker.pid 2>/dev/null || true)"
    if pid_alive "$running_pid"; then
        say "dockerd already running (pid $running_pid); waiting for it"
        log="(log of pid $running_pid unknown: not started by this script)"
        started=0
    else
        log="$(mktemp "${TMPDIR:-/tmp}/pixsim-host-dockerd.XXXXXX.log")"
        say "starting dockerd (log: $log)"
        # setsid+nohup: dockerd must outlive this script and not get the caller's SIGHUP/SIGINT.
        # --wait keeps $! alive exactly as long as dockerd, even if setsid had to fork.
        setsid --wait nohup dockerd --host "unix://$SOCKET" >"$log" 2>&1 </dev/null &
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
        sleep 0.5
    done

    if [ "$started" = 1 ]; then
        # The daemon's own pidfile names the real dockerd (not a wrapper process).
        pid="$(cat /var/run/docker.pid)"
        echo "$pid" >"$MARKER"
        say "dockerd ready (pid $pid, marker $MARKER)"
    else
        say "dockerd ready"
    fi
fi

# --- compose v2 -------------------------------------------------------------------------------
if ! compose_ok; then
    # Debian 12 ships only Compose v1; Debian 13's package carries the v2 plugin. Its package
    # index is added for one download only and removed again, so nothing else on the machine
    # is ever installed or upgraded from Debian 13.
    TRIXIE_SRC=/etc/apt/sources.list.d/trixie-tmp.sources
    work="$(mktemp -d "${TMPDIR:-/tmp}/pixsim-host-compose.XXXXXX")"
    # apt-get download drops privileges to _apt, which must be able to write here (otherwise
    # it falls back to downloading unsandboxed and warns).
    chown _apt "$work" 2>/dev/null || true
    cleanup_compose() {
        if [ -f "$TRIXIE_SRC" ]; then
            rm -f "$TRIXIE_SRC"
            apt-get update -qq || true
        fi
        rm -rf "$work"
    }
    trap cleanup_compose EXIT

    say "adding temporary Debian 13 package source for docker-compose"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        >"$TRIXIE_SRC"
    apt-get update -qq
    say "downloading docker-compose/trixie"
    (cd "$work" && apt-get download -qq docker-compose/trixie)
    say "removing temporary Debian 13 package source"
    rm -f "$TRIXIE_SRC"
    apt-get update -qq
    APT_UPDATED=1

    dpkg-deb -x "$work"/docker-compose_*.deb "$work/unpacked"
    install -D -m 0755 "$work/unpacked/usr/libexec/docker/cli-plugins/docker-compose" \
        "$PLUGIN_DIR/docker-compose"
    say "installed Compose v2 plugin to $PLUGIN_DIR/docker-compose"
    cleanup_compose
    trap - EXIT

    compose_ok || die "docker compose still unavailable after installing the plugin"
fi

say "ok: $(docker version --format 'engine {{.Server.Version}} (API {{.Server.APIVersion}})'); $(docker compose version)"
