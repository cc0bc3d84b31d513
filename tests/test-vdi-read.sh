#!/bin/bash
# test-vdi-read: every VDI that ../shared/corpus/make-matrix makes and the VDI
# sample in ../shared/corpus/samples (pyVBox/TestHD.vdi, made by VirtualBox)
# read (vdconvert IMG out.raw) to exactly the content qemu-img gives; older
# header versions (1.0 without LCHS geometry, 0.x with the block map right
# after the header) read the same data as the 1.1 image they were made from.
# qemu-img reads only version 1.1 ("unsupported VDI image (version 1.0)"), so
# those two are checked against qemu's view of the 1.1 image they came from.
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3
requires_shared
S=$SHARED/corpus/samples
M=$(matrix_dir)

check_same() {   # IMG [EXPECTED_SHA]
    local img=$1 sha=${2:-} out=$T/out.raw
    rm -f "$out"
    "$VDCONVERT" "$img" "$out" || fail "vdconvert $img"
    qemu-img compare -q -f vdi "$img" -F raw "$out" || fail "$img: content differs from qemu-img's"
    local qsize
    qsize=$(qemu-img info -f vdi --output=json "$img" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    [ "$(stat -c %s "$out")" = "$qsize" ] || fail "$img: size $(stat -c %s "$out") != qemu's $qsize"
    if [ -n "$sha" ]; then
        [ "$(sha256sum <"$out" | cut -d' ' -f1)" = "$sha" ] || fail "$img: sha256 differs"
    fi
    echo "ok: $(basename "$img")"
}

# --- make-matrix images, with the manifest's sha -------------------------
n=0
while IFS=$'\t' read -r file fmt _ _ sha _; do
    [ "$fmt" = vdi ] || continue
    check_same "$M/$file" "$sha"
    n=$((n + 1))
done < <(grep -v '^#' "$M/MANIFEST.tsv")
[ "$n" -ge 2 ] || fail "only $n vdi images in the matrix manifest"

# --- the VirtualBox-made sample ------------------------------------------
# 8 GiB: hashing it would take most of the time budget; qemu-img compare
# (hole-aware) against qemu's view is the check, as EXPECTED.tsv is qemu's.
bzip2 -dc "$S/pyVBox/TestHD.vdi.bz2" >"$T/TestHD.vdi"
grep -q '^pyVBox/TestHD.vdi.bz2' "$S/EXPECTED.tsv" || fail "TestHD.vdi missing from EXPECTED.tsv"
check_same "$T/TestHD.vdi"
"$VDCONVERT" info "$T/TestHD.vdi" | matches "(8589934592 bytes)" || fail "TestHD size"

# --- older header versions, made from a qemu image with data -------------
qemu-img create -q -f vdi "$T/v11.vdi" 5M
qemu-io -f vdi -c "write -P 0x61 1M 1M" -c "write -P 0x62 3584K 512" "$T/v11.vdi" >/dev/null
qemu-img convert -f vdi -O raw "$T/v11.vdi" "$T/v11.raw"
python3 - "$T/v11.vdi" "$T/v10.vdi" "$T/v0.vdi" <<'EOF'
import struct, sys
src = open(sys.argv[1], 'rb').read()
# v1.0: same layout, version 1.0 and header size 384 (no LCHS geometry)
v10 = bytearray(src)
struct.pack_into('<II', v10, 68, 0x00010000, 384)
v10[456:472] = bytes(16)
open(sys.argv[2], 'wb').write(v10)
# v0: type, flags, comment, geometry, size, block size, blocks, allocated,
# 3 UUIDs; block map right after (at 72+348), data right after the map.
typ, flags = struct.unpack_from('<II', src, 76)
off_blocks, off_data = struct.unpack_from('<II', src, 340)
disk, bsize, extra, nblocks, nalloc = struct.unpack_from('<QIIII', src, 368)
h = bytearray(src[:72])
struct.pack_into('<I', h, 68, 0x00000000)
h += struct.pack('<II', typ, flags) + src[84:340] + src[348:364]
h += struct.pack('<QIII', disk, bsize, nblocks, nalloc) + src[392:440]
assert len(h) == 72 + 348
h += src[off_blocks:off_blocks + 4 * nblocks]
h += src[off_data:]
open(sys.argv[3], 'wb').write(h)
EOF
"$VDCONVERT" "$T/v10.vdi" "$T/v10.raw" || fail "v1.0 read"
cmp "$T/v10.raw" "$T/v11.raw" || fail "v1.0 header image reads differently"
echo "ok: v1.0 header"
"$VDCONVERT" "$T/v0.vdi" "$T/v0.raw" || fail "v0 read"
cmp "$T/v0.raw" "$T/v11.raw" || fail "v0 header image reads differently"
echo "ok: v0 header"
