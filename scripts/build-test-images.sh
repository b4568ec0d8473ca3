#!/usr/bin/env bash
# Build offline stand-ins for the public images pixsim-host runs, inside the local test engine.
#
# No container registry is reachable where the tests run, so the images are built from a Debian
# root filesystem (mmdebstrap) instead of pulled. They are tagged with the public names
# (pgvector/pgvector:pg16, redis:7-alpine, python:3.11-slim) so the code under test runs
# unchanged; these tags exist only in this engine. Built images are reused: each carries a
# label with the hash of its inputs and is rebuilt only when that hash changes.
set -euo pipefail

cd "$(dirname "$0")/.."

BASE_IMAGE=local/debian-base:bookworm
BASE_SUITE=bookworm
BASE_PACKAGES=postgresql-15,redis-server,python3,python3-venv,python3-pip,ca-certificates,util-linux
HASH_LABEL=org.pixsim-host.standin-hash
BASE_HASH_LABEL=org.pixsim-host.base-hash

# stand-in folder under tests/images -> public name it stands in for
STANDINS=(
    "postgres=pgvector/pgvector:pg16"
    "redis=redis:7-alpine"
    "python=python:3.11-slim"
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

if [ "$(image_label "$BASE_IMAGE" "$BASE_HASH_LABEL")" = "$base_hash" ]; then
    say "reused $BASE_IMAGE"
else
    t0="$(now)"
    old_base="$(image_id "$BASE_IMAGE")"
    if ! command -v mmdebstrap >/dev/null 2>&1; then
        say "installing mmdebstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
    fi
    workdir="$(mktemp -d "${TMPDIR:-/tmp}/pixsim-host-rootfs.XXXXXX")"
    trap 'rm -rf "$workdir"' EXIT
    say "building $BASE_IMAGE with mmdebstrap (packages: $BASE_PACKAGES)"
    # mmdebstrap is chatty on stderr; keep it for the error case only.
    if ! mmdebstrap --variant=minbase --include="$BASE_PACKAGES" "$BASE_SUITE" \
        "$workdir/rootfs.tar" >"$workdir/mmdebstrap.log" 2>&1; then
        tail -n 40 "$workdir/mmdebstrap.log" >&2
        die "mmdebstrap failed"
    fi
    changes=(--change "LABEL $BASE_HASH_LABEL=$base_hash")
    for change in "${IMPORT_CHANGES[@]}"; do
        changes+=(--change "$change")
    done
    docker import "${changes[@]}" "$workdir/rootfs.tar" "$BASE_IMAGE" >/dev/null
    rm -rf "$workdir"
    trap - EXIT
    drop_replaced "$old_base" "$BASE_IMAGE"
    say "built $BASE_IMAGE in $(since "$t0")"
fi
base_id="$(image_id "$BASE_IMAGE")"

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

    hash="$(folder_hash "$dir" "$base_id")"
    if [ "$(image_label "$tag" "$HASH_LABEL")" = "$hash" ]; then
        say "reused $tag (stand-in from $dir)"
        continue
    fi
    t0="$(now)"
    old_id="$(image_id "$tag")"
    log="$(mktemp "${TMPDIR:-/tmp}/pixsim-host-build.XXXXXX.log")"
    # Legacy builder: BuildKit/buildx is not part of Debian's docker.io.
    if ! DOCKER_BUILDKIT=0 docker build --label "$HASH_LABEL=$hash" -t "$tag" "$dir" \
        >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        die "docker build of $dir failed"
    fi
    rm -f "$log"
    drop_replaced "$old_id" "$tag"
    say "built $tag from $dir in $(since "$t0")"
done

say "done in $(since "$total_start")"
