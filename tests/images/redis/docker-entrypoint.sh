#!/bin/sh
# Entrypoint of the Redis stand-in, following the public redis image's entrypoint.
set -e

# `docker run image --requirepass x` or `docker run image /path/redis.conf` mean redis-server.
case "$1" in
    -* | *.conf) set -- redis-server "$@" ;;
esac

if [ "$1" = redis-server ]; then
    shift
    # The public image compiles in "protected-mode no" (so other containers can connect
    # without a config file) and runs in /data. Debian's build defaults to protected mode,
    # so pass those defaults as options, placed before the caller's options (Redis applies
    # options in order, the last one wins) and after a config file (which must come first),
    # and only when that config file does not set them itself.
    conf=
    info=
    case "${1:-}" in
        # Informational modes, which redis-server only recognises as its first argument.
        -v | --version | -h | --help | --test-memory | --check-system) info=1 ;;
        -* | '') ;;
        *) conf="$1"; shift ;;
    esac
    sets_in_conf() {
        [ -n "$conf" ] && grep -Eqi "^[[:space:]]*$1[[:space:]]" "$conf" 2>/dev/null
    }
    defaults=
    if [ -z "$info" ]; then
        sets_in_conf protected-mode || defaults="--protected-mode no"
        sets_in_conf dir || defaults="$defaults --dir /data"
    fi
    # shellcheck disable=SC2086 # $defaults is a fixed list of words
    if [ -n "$conf" ]; then
        set -- redis-server "$conf" $defaults "$@"
    else
        set -- redis-server $defaults "$@"
    fi

    # Redis data files are private to the redis user, as in the public image.
    umask 0077

    if [ "$(id -u)" = 0 ]; then
        # Data written by an earlier root run must stay usable by the redis user.
        find . \! -user redis -exec chown redis '{}' +
        # setpriv execs (no parent process left behind), so redis-server becomes PID 1 and
        # gets the stop signal itself.
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi

exec "$@"
