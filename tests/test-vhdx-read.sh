#!/bin/bash
# test-vhdx-read: every VHDX that ../shared/corpus/make-matrix makes and every
# VHDX sample in ../shared/corpus/samples reads (vdconvert IMG out.raw) to the
# content qemu-img gives.  Samples qemu cannot read as they are:
#  - qemu/iotest-dirtylog-10G-4M.vhdx: a Hyper-V image with a dirty log.  qemu
#    refuses a read-only open until `qemu-img check -r all` replays the log;
#    we replay it in memory: the content must equal qemu's on a replayed copy,
#    and the sample file must not change.
#  - dissect.hypervisor/differencing.avhdx: qemu 7.2 does not support
#    differencing VHDX, and its parent (a Hyper-V path) is not in the corpus:
#    we parse headers, metadata and the parent locator and then refuse with an
#    error naming the missing parent, the one libvhdi reports.
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img python3
requires_shared
S=$SHARED/corpus/samples
M=$(matrix_dir)

# Two sparse raw files hold the same bytes (missing tail = zeroes).  Only the
# data extents (SEEK_DATA) are read, so 10 GiB guests compare in a second.
same_sparse() {
    python3 - "$1" "$2" <<'PY'
import os, sys
fa, fb = (open(p, 'rb') for p in sys.argv[1:3])
def extents(f):
    fd, end, off, out = f.fileno(), os.fstat(f.fileno()).st_size, 0, []
    while off < end:
        try:
            d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            break
        h = os.lseek(fd, d, os.SEEK_HOLE)
        out.append((d, h)); off = h
    return out
def read(f, off, n):
    f.seek(off); b = f.read(n)
    return b + bytes(n - len(b))
for lo, hi in extents(fa) + extents(fb):
    for o in range(lo, hi, 1 << 22):
        n = min(1 << 22, hi - o)
        if read(fa, o, n) != read(fb, o, n):
            sys.exit("differ near 0x%x" % o)
PY
}

check_same() {   # IMG [EXPECTED_SHA]
    local img=$1 sha=${2:-} out=$T/out.raw
    rm -f "$out" "$T/q.raw"
    "$VDCONVERT" "$img" "$out" || fail "vdconvert $img"
    qemu-img convert -f vhdx -O raw "$img" "$T/q.raw"
    [ "$(stat -c %s "$out")" = "$(stat -c %s "$T/q.raw")" ] || fail "$img: size differs from qemu's"
    same_sparse "$out" "$T/q.raw" || fail "$img: content differs from qemu-img's"
    if [ -n "$sha" ]; then
        [ "$(file_sha "$out")" = "$sha" ] || fail "$img: sha256 differs from manifest"
    fi
    echo "ok: $(basename "$img")"
}

# (matrix rows: the manifest's sha, which make-matrix found to be qemu's
# reading too: lib.sh's matrix_read)
n=0
while IFS=$'\t' read -r file fmt _ _ sha _ qemu _; do
    [ "$fmt" = vhdx ] || continue
    matrix_read "$M/$file" "$sha" "$qemu"
    echo "ok: $(basename "$file")"
    n=$((n + 1))
done < <(grep -v '^#' "$M/MANIFEST.tsv")
[ "$n" -ge 7 ] || fail "only $n vhdx images in the matrix manifest"

unpack() {
    local src=$S/$1 dst=$T/$(basename "${1%.*}")
    case $1 in
    *.bz2) bzip2 -dc "$src" >"$dst" ;;
    *.gz) gzip -dc "$src" >"$dst" ;;
    esac
    echo "$dst"
}
sha_of() { awk -F'\t' -v f="$1" '$1 == f { print $4 }' "$S/EXPECTED.tsv"; }

for s in dissect.hypervisor/dynamic.vhdx.gz dissect.hypervisor/fixed.vhdx.gz \
         qemu/iotest-dynamic-1G.vhdx.bz2 qemu/test-disk2vhd.vhdx.bz2; do
    check_same "$(unpack $s)" "$(sha_of $s)"
done

# Dirty log: replayed in memory, file untouched, content = qemu after repair.
dirty=$(unpack qemu/iotest-dirtylog-10G-4M.vhdx.bz2)
chmod a-w "$dirty"
before=$(file_sha "$dirty")
qemu-img info -f vhdx "$dirty" >/dev/null 2>&1 && fail "qemu-img now opens the dirty log read-only"
rm -f "$T/out.raw"
"$VDCONVERT" "$dirty" "$T/out.raw" || fail "dirty-log sample does not read"
[ "$(file_sha "$dirty")" = "$before" ] || fail "reading changed the dirty-log sample"
cp "$dirty" "$T/replayed.vhdx"
chmod u+w "$T/replayed.vhdx"
qemu-img check -q -r all -f vhdx "$T/replayed.vhdx" >/dev/null 2>&1 || true
qemu-img convert -f vhdx -O raw "$T/replayed.vhdx" "$T/q.raw"
[ "$(stat -c %s "$T/out.raw")" = "$(stat -c %s "$T/q.raw")" ] || fail "dirty log: size differs"
same_sparse "$T/out.raw" "$T/q.raw" || fail "dirty log: our replay differs from qemu's"
echo "ok: dirty-log sample replayed in memory, equal to qemu's replayed copy"

# Differencing AVHDX from Hyper-V whose parent is not here.
avhdx=$(unpack dissect.hypervisor/differencing.avhdx.gz)
if msg=$("$VDCONVERT" "$avhdx" "$T/a.raw" 2>&1); then
    fail "differencing.avhdx opened without its parent"
fi
grep -q "Generation 1_49C4BAF3-4B25-4406-8C4B-D39E65C32385.avhdx" <<<"$msg" ||
    fail "differencing.avhdx: error does not name the parent: $msg"
echo "ok (refused): $msg"
