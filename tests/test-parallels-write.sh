#!/bin/bash
# test-parallels-write: expanding Parallels images vdconvert writes (default
# 1 MiB clusters and -o cluster_size=64K/4M) are read back identically by
# `qemu-img compare`, pass `qemu-img check`, carry a v2 header qemu and
# Parallels accept (signature, version 2, cluster, BAT, size, data offset) and
# are left with the in-use flag clear; qemu-io writes into them read back the
# same through vdisk.  An image whose in-use flag is set (not closed
# cleanly) still reads; vdconvert info says so.  (Refusing writes to it until
# a check repairs it is checked by unit-vdi-parallels.)
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3

python3 - "$T/src.raw" <<'EOF'
import sys
with open(sys.argv[1], 'wb') as f:
    f.truncate(9 * 2**20 + 1536)
    f.seek(0);             f.write(b'\x11' * 4096)
    f.seek(2**20 + 65536); f.write(bytes(range(256)) * 1024)
    f.seek(9 * 2**20);     f.write(b'\xee' * 1536)
EOF

check_header() {  # IMG CLUSTER
    python3 - "$@" <<'EOF'
import struct, sys
img, cluster = sys.argv[1], int(sys.argv[2])
data = open(img, 'rb').read()
h = data[:64]
def fail(m): sys.exit('%s: header: %s' % (img, m))
if h[:16] != b'WithouFreSpacExt': fail('signature')
version, heads, cyls, tracks, bat = struct.unpack_from('<5I', h, 16)
sectors, inuse, data_off, flags, ext = struct.unpack_from('<QIIIQ', h, 36)
if version != 2: fail('version %d' % version)
if tracks * 512 != cluster: fail('cluster %d sectors' % tracks)
if sectors != (9 * 2**20 + 1536) // 512: fail('size %d sectors' % sectors)
if bat != (sectors * 512 + cluster - 1) // cluster: fail('BAT entries %d' % bat)
if inuse != 0: fail('in-use flag %#x left set' % inuse)
if data_off * 512 < 64 + 4 * bat or (data_off * 512) % cluster: fail('data offset %d' % data_off)
if heads != 16 or cyls != sectors // (16 * 32): fail('geometry %d/%d' % (heads, cyls))
for i, e in enumerate(struct.unpack_from('<%dI' % bat, data, 64)):
    if e and (e * cluster < data_off * 512 or e * cluster + cluster > len(data)):
        fail('BAT entry %d = %d outside the data area' % (i, e))
EOF
}

for cs in default 64K 4M; do
    opt=() ; bytes=1048576
    [ $cs = 64K ] && { opt=(-o cluster_size=64K); bytes=65536; }
    [ $cs = 4M ] && { opt=(-o cluster_size=4M); bytes=4194304; }
    img=$T/out-$cs.hds
    "$VDCONVERT" -O parallels "${opt[@]}" "$T/src.raw" "$img" || fail "convert ($cs)"
    qemu-img compare -q -f raw "$T/src.raw" -F parallels "$img" || fail "$cs: content differs"
    qemu-img check -q -f parallels "$img" || fail "$cs: qemu-img check"
    check_header "$img" $bytes || fail "$cs: header"
    echo "ok: cluster $cs"
done

# a qcow2 source, odd size
qemu-img create -q -f qcow2 "$T/q.qcow2" 3000K
qemu-io -f qcow2 -c "write -P 0x33 100K 64K" -c "write -P 0x44 2900K 100K" "$T/q.qcow2" >/dev/null
"$VDCONVERT" -O parallels "$T/q.qcow2" "$T/q.hds" || fail "qcow2 -> parallels"
qemu-img compare -q "$T/q.qcow2" "$T/q.hds" || fail "qcow2 -> parallels content"
qemu-img check -q "$T/q.hds" || fail "qcow2 -> parallels check"
echo "ok: from qcow2"

# qemu writes into our image; we read what it wrote (incl. a new cluster)
img=$T/out-64K.hds
qemu-io -f parallels -c "write -P 0x77 5M 4096" -c "write -P 0x78 100K 512" "$img" >/dev/null
rm -f "$T/back.raw"
"$VDCONVERT" "$img" "$T/back.raw"
qemu-img compare -q -f parallels "$img" -F raw "$T/back.raw" || fail "after qemu-io writes"

# vdconvert's own write path over an existing image: commit a qcow2 overlay
# into our parallels image (writes partial and new clusters into it)
qemu-img create -q -f qcow2 -b out-64K.hds -F parallels "$T/ov.qcow2"
qemu-io -f qcow2 -c "write -P 0x99 7M 1000K" -c "write -P 0x98 66K 1K" "$T/ov.qcow2" >/dev/null
qemu-img convert -f qcow2 -O raw "$T/ov.qcow2" "$T/ov.raw"
"$VDCONVERT" commit "$T/ov.qcow2" >/dev/null || fail "commit into parallels"
qemu-img compare -q -f parallels "$img" -F raw "$T/ov.raw" || fail "after vdisk writes"
qemu-img check -q -f parallels "$img" || fail "check after vdisk writes"
python3 -c "
import struct,sys; h=open('$img','rb').read(64)
sys.exit(struct.unpack_from('<I',h,44)[0] != 0)" || fail "in-use flag left set after our writes"
echo "ok: writes by qemu and by vdisk"

# not closed cleanly: the in-use flag is set
cp "$T/out-default.hds" "$T/dirty.hds"
printf 'Ynot' | dd of="$T/dirty.hds" bs=1 seek=44 conv=notrunc status=none
"$VDCONVERT" info "$T/dirty.hds" | matches "in-use: yes" || fail "dirty flag not reported"
rm -f "$T/back.raw"
"$VDCONVERT" "$T/dirty.hds" "$T/back.raw" || fail "dirty image does not read"
cmp "$T/back.raw" "$T/src.raw" || fail "dirty image content"
echo "ok: in-use flag"

# check: clusters past the last BAT reference are leaks (as qemu-img says);
# -r leaks truncates them; a format extension's clusters are not leaks
cp "$T/out-64K.hds" "$T/leaky.hds"
truncate -s +128K "$T/leaky.hds"
qemu-img check -q -f parallels "$T/leaky.hds" 2>/dev/null && fail "qemu sees no leak (fixture)"
# (check exits non-zero when it finds leaks, like qemu-img: keep the output)
out=$("$VDCONVERT" check "$T/leaky.hds" 2>&1) && fail "check: exit 0 with leaks"
grep -q "2 leaked clusters" <<<"$out" || fail "leak not reported: $out"
"$VDCONVERT" check -r leaks "$T/leaky.hds" >/dev/null || true  # reports what it fixed
qemu-img check -q -f parallels "$T/leaky.hds" || fail "leak not repaired"
qemu-img compare -q -f parallels "$T/leaky.hds" -F parallels "$T/out-64K.hds" || fail "repair changed content"
if [ -d "$SHARED/corpus/samples/qemu" ]; then
    bzip2 -dc "$SHARED/corpus/samples/qemu/parallels-with-bitmap.bz2" >"$T/bitmap.hds"
    size=$(stat -c %s "$T/bitmap.hds")
    out=$("$VDCONVERT" check -r all "$T/bitmap.hds" 2>&1) || fail "extension called an error: $out"
    [ "$(stat -c %s "$T/bitmap.hds")" = "$size" ] || fail "repair truncated the format extension"
fi
echo "ok: check and leak repair"

# the make-matrix images (when ../shared is there): each VDI and Parallels
# image converted to Parallels
if [ -d "$SHARED/corpus" ]; then
    M=$(matrix_dir)
    while IFS=$'\t' read -r file fmt _; do
        case $fmt in vdi|parallels) ;; *) continue ;; esac
        rm -f "$T/m.hds"
        "$VDCONVERT" -O parallels "$M/$file" "$T/m.hds" || fail "$file -> parallels"
        qemu-img compare -q -f $fmt "$M/$file" -F parallels "$T/m.hds" || fail "$file -> parallels: content"
        qemu-img check -q -f parallels "$T/m.hds" || fail "$file -> parallels: check"
        echo "ok: matrix $file -> parallels"
    done < <(grep -v '^#' "$M/MANIFEST.tsv")
fi
