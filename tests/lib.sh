# tests/lib.sh - sourced by every shell test.
#   requires_cmd CMD...   skip (exit 77) when a command is missing
#   requires_shared       skip when ../shared/corpus is absent
#   T                     a fresh temp dir, removed at exit
#   matrix_dir            prints the dir of ../shared/corpus/make-matrix output
#                         (built once per build dir, under a lock)
#   fail MSG              print and exit 1
#   raw_sha IMG [FMT]     sha256 of the guest content as qemu-img reads it
set -euo pipefail
export LC_ALL=C
: "${VD_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${VD_BUILD:=$VD_SRC/build}"
: "${VDCONVERT:=$VD_BUILD/tools/vdconvert/vdconvert}"
SHARED=$(cd "$VD_SRC/.." && pwd)/shared

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
requires_cmd() { for c in "$@"; do command -v "$c" >/dev/null || skip "$c not installed"; done; }
requires_shared() { [ -d "$SHARED/corpus" ] || skip "../shared/corpus not present"; }

T=$(mktemp -d "${TMPDIR:-/tmp}/vdtest.XXXXXX")
trap 'rm -rf "$T"' EXIT

matrix_dir() {
    requires_shared
    requires_cmd qemu-img qemu-io python3
    local d="${VD_MATRIX_DIR:-$VD_BUILD/tests/matrix}"
    mkdir -p "$VD_BUILD/tests" "$(dirname "$d")"
    (
        flock 9
        if [ ! -f "$d/MANIFEST.tsv" ]; then
            rm -rf "$d"
            "$SHARED/corpus/make-matrix" "$d" 1 >"$d.log" 2>&1 ||
                { echo "make-matrix failed, see $d.log" >&2; exit 1; }
        fi
    ) 9>"$d.lock" || exit 1
    echo "$d"
}

raw_sha() {
    local img=$1 fmt=${2:-}
    if [ -n "$fmt" ]; then
        qemu-img convert -f "$fmt" -O raw "$img" "$T/.sha.raw"
    else
        qemu-img convert -O raw "$img" "$T/.sha.raw"
    fi
    sha256sum "$T/.sha.raw" | cut -d' ' -f1
    rm -f "$T/.sha.raw"
}
