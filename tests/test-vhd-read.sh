#!/bin/bash
# test-vhd-read: every VHD that ../shared/corpus/make-matrix makes and every
# VHD sample in ../shared/corpus/samples reads (vdconvert IMG out.raw) to the
# content qemu-img gives, at qemu's virtual size.  Samples qemu cannot read:
#  - dfvfs/image.vhd, image-differential.vhd: both footer and dynamic-header
#    checksums are wrong; qemu refuses them and so do we (same reason).  With
#    the checksums repaired we read libvhdi's view (EXPECTED.tsv), including
#    the differencing disk merged with its parent.
#  - dfvfs/fat-differential.vhd: its parent fat-parent.vhd is not in the
#    corpus; qemu 7.2 reads it as a standalone dynamic disk (wrong), we refuse
#    with an error naming the missing parent.
#  - qemu/afl5.img: fuzzed; refused (qemu: "Max Table Entries too large").
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img python3
requires_shared
S=$SHARED/corpus/samples
M=$(matrix_dir)

# content check: size from `vdconvert info`, then qemu-img compare (which skips
# holes on both sides, so the 127 GiB samples take a second).
check_same() {   # IMG [EXPECTED_SHA]
    local img=$1 sha=${2:-} out=$T/out.raw
    rm -f "$out"
    "$VDCONVERT" "$img" "$out" || fail "vdconvert $img"
    local qsize
    qsize=$(qemu-img info -f vpc --output=json "$img" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    [ "$(stat -c %s "$out")" = "$qsize" ] || fail "$img: size $(stat -c %s "$out") != qemu's $qsize"
    qemu-img compare -q -f vpc "$img" -F raw "$out" || fail "$img: content differs from qemu-img's"
    if [ -n "$sha" ]; then
        [ "$(file_sha "$out")" = "$sha" ] || fail "$img: sha256 differs from manifest"
    fi
    echo "ok: $(basename "$img")"
}

expect_error() {  # IMG PATTERN
    local msg
    if msg=$("$VDCONVERT" "$1" "$T/err.raw" 2>&1); then
        fail "$1: opened, expected an error matching '$2'"
    fi
    [ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] || fail "$1: error is not one line: $msg"
    grep -q -- "$2" <<<"$msg" || fail "$1: error '$msg' does not match '$2'"
    echo "ok (refused): $msg"
}

# --- make-matrix images, with the manifest's sha -------------------------
# (the manifest's sha is qemu's reading too, and of qemu's virtual size:
# lib.sh's matrix_read)
n=0
while IFS=$'\t' read -r file fmt _ _ sha _ qemu _; do
    [ "$fmt" = vpc ] || continue
    matrix_read "$M/$file" "$sha" "$qemu"
    echo "ok: $(basename "$file")"
    n=$((n + 1))
done < <(grep -v '^#' "$M/MANIFEST.tsv")
[ "$n" -ge 4 ] || fail "only $n vpc images in the matrix manifest"

# --- samples --------------------------------------------------------------
unpack() {  # corpus-relative path -> file in $T
    local src=$S/$1 dst=$T/$(basename "${1%.*}")
    case $1 in
    *.bz2) bzip2 -dc "$src" >"$dst" ;;
    *.gz) gzip -dc "$src" >"$dst" ;;
    esac
    echo "$dst"
}
sha_of() { awk -F'\t' -v f="$1" '$1 == f { print $4 }' "$S/EXPECTED.tsv"; }

for s in dfvfs/ext2.vhd.bz2 dissect.hypervisor/dynamic.vhd.gz dissect.hypervisor/fixed.vhd.gz \
         qemu/d2v-zerofilled.vhd.bz2; do
    check_same "$(unpack $s)" "$(sha_of $s)"
done
# 127 GiB guests: qemu-img compare only (hashing 127 GiB of zeroes is slow).
# virtualpc-dynamic is read by its CHS size (creator "vpc "), hyperv2012r2 by
# its footer's current size (creator "win ").
for s in qemu/hyperv2012r2-dynamic.vhd.bz2 qemu/virtualpc-dynamic.vhd.bz2; do
    check_same "$(unpack $s)"
done

# fixed.vhd must be probed as VHD (by its footer), not raw.
fmt=$("$VDCONVERT" info "$T/fixed.vhd" | awk '/^file format:/ { print $3 }')
[ "$fmt" = vhd ] || fail "fixed.vhd probed as '$fmt'"

expect_error "$(unpack dfvfs/fat-differential.vhd.bz2)" "fat-parent.vhd"
expect_error "$(unpack qemu/afl5.img.bz2)" "vhd: "
img=$(unpack dfvfs/image.vhd.bz2)
diff=$(unpack dfvfs/image-differential.vhd.bz2)
expect_error "$img" "footer checksum at 0x200a40"
qemu-img info -f vpc "$img" >/dev/null 2>&1 && fail "qemu-img now reads image.vhd: update this test"

# Repair the checksums (footer, its copy at 0, dynamic header) and read again.
python3 - "$img" "$diff" <<'PY'
import struct, sys
def fix(b, off, n, co):
    blk = bytearray(b[off:off + n]); blk[co:co + 4] = bytes(4)
    b[off + co:off + co + 4] = struct.pack('>I', ~sum(blk) & 0xffffffff)
for p in sys.argv[1:]:
    b = bytearray(open(p, 'rb').read())
    fix(b, len(b) - 512, 512, 64)
    if b[:8] == b'conectix':
        fix(b, 0, 512, 64)
    (do,) = struct.unpack('>Q', b[len(b) - 512 + 16:len(b) - 512 + 24])
    fix(b, do, 1024, 36)
    open(p, 'wb').write(b)
PY
rm -f "$T/out.raw"
"$VDCONVERT" "$diff" "$T/out.raw" || fail "repaired image-differential.vhd"
[ "$(file_sha "$T/out.raw")" = "$(sha_of dfvfs/image-differential.vhd.bz2)" ] ||
    fail "image-differential.vhd + parent: not libvhdi's content"
echo "ok: repaired image-differential.vhd over image.vhd"

# The parent UUID is checked: a parent with another unique id is refused.
python3 - "$img" <<'PY'
import struct, sys
p = sys.argv[1]; b = bytearray(open(p, 'rb').read())
for off in (0, len(b) - 512):
    b[off + 68] ^= 0xff
    blk = bytearray(b[off:off + 512]); blk[64:68] = bytes(4)
    b[off + 64:off + 68] = struct.pack('>I', ~sum(blk) & 0xffffffff)
open(p, 'wb').write(b)
PY
expect_error "$diff" "parent UUID"
