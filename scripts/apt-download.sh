#!/usr/bin/env bash
# Download Debian packages of another suite (e.g. Debian 13's) without touching the machine's
# own apt configuration or package lists:
#
#   bash scripts/apt-download.sh SUITE DEST_DIR PACKAGE...     # e.g. trixie /tmp/debs kubectl
#
# The package source is the machine's own configured Debian source (its first non-security
# entry, wherever apt is pointed) with the suite replaced, so no address is written here. The
# index of that suite is fetched into a private apt state folder that is removed afterwards:
# nothing on the machine is ever installed or upgraded from it, and the system's lists stay as
# they were (no second `apt-get update` needed). The .deb files land in DEST_DIR; unpack them
# with `dpkg-deb -x`.
set -euo pipefail

say() { echo "apt-download: $*"; }
die() { echo "apt-download: ERROR: $*" >&2; exit 1; }

[ $# -ge 3 ] || die "usage: apt-download.sh SUITE DEST_DIR PACKAGE..."
suite="$1" dest="$2"
shift 2

# Overridable only to check the parsing against other layouts.
DEB822="${APT_DOWNLOAD_DEB822:-/etc/apt/sources.list.d/debian.sources}"
ONE_LINE="${APT_DOWNLOAD_ONE_LINE:-/etc/apt/sources.list}"

# First non-security stanza of a deb822 file, with Types/Suites/Components narrowed to what is
# needed; URIs and Signed-By (and any other option) are kept as the machine has them.
from_deb822() {
    awk 'BEGIN { RS = ""; ORS = "\n" } !/security/ { print; exit }' "$1" \
        | grep -v '^[[:space:]]*#' \
        | sed -e "s/^Suites:.*/Suites: $suite/" \
              -e 's/^Types:.*/Types: deb/' \
              -e 's/^Components:.*/Components: main/'
}

# First non-security `deb` line of a one-line-style list, with the suite and components replaced
# (an `[option=value ...]` block after `deb` is kept).
from_one_line() {
    awk -v suite="$suite" '
        $1 == "deb" && !/security/ {
            i = 2
            opts = ""
            if ($2 ~ /^\[/) {
                while (i <= NF && $i !~ /\]$/) { opts = opts $i " "; i++ }
                opts = opts $i " "
                i++
            }
            print "deb " opts $i " " suite " main"
            exit
        }' "$1"
}

work="$(mktemp -d "${TMPDIR:-/tmp}/pixsim-host-apt.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# mktemp makes it 0700; the unprivileged _apt downloader must reach the folders inside.
chmod 0755 "$work"
mkdir -p "$work/sources.d" "$work/lists/partial" "$work/cache/archives/partial"

if [ -s "$DEB822" ] && [ -n "$(from_deb822 "$DEB822")" ]; then
    from_deb822 "$DEB822" >"$work/sources.d/$suite.sources"
elif [ -s "$ONE_LINE" ] && [ -n "$(from_one_line "$ONE_LINE")" ]; then
    from_one_line "$ONE_LINE" >"$work/sources.d/$suite.list"
else
    die "no Debian package source found in $DEB822 or $ONE_LINE; configure apt first"
fi

# apt drops privileges to _apt for downloads; it must be able to write into these folders
# (otherwise it falls back to downloading unsandboxed and warns).
chown -R _apt "$work/lists" "$work/cache" 2>/dev/null || true
mkdir -p "$dest" "$work/debs"
chown _apt "$work/debs" 2>/dev/null || true

APT_OPTS=(
    -o "Dir::Etc::SourceList=/dev/null"
    -o "Dir::Etc::SourceParts=$work/sources.d"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache"
    -o "Dir::State::Status=/dev/null"
    -o "APT::Get::List-Cleanup=false"
)
say "fetching the $suite package index (private; the machine's own lists are untouched)"
apt-get "${APT_OPTS[@]}" update -qq
say "downloading ${*/%//$suite} into $dest"
(cd "$work/debs" && apt-get "${APT_OPTS[@]}" download -qq "${@/%//$suite}")
mv "$work"/debs/*.deb "$dest"/
