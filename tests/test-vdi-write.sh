#!/bin/bash
# test-vdi-write: VDI images vdconvert writes (dynamic and -o static=on) read
# back identically per `qemu-img compare` and pass `qemu-img check`; their
# headers carry, field by field, what VirtualBox requires: the signature text,
# magic, version 1.1, header size 400, image type, block map/data offsets,
# geometry with 512-byte sectors, disk/block sizes and counts, and UUIDs: a
# fresh random creation UUID on every image, or the one given by -o uuid=.
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3

# source: 5 MiB + 512 bytes (a partial last block), data, zeroes and a tail
python3 - "$T/src.raw" <<'EOF'
import sys
with open(sys.argv[1], 'wb') as f:
    f.truncate(5 * 2**20 + 512)
    f.seek(0);           f.write(b'\x11' * 4096)
    f.seek(2**20 + 512); f.write(bytes(range(256)) * 64)
    f.seek(5 * 2**20);   f.write(b'\xee' * 512)
EOF

check_header() {  # IMG TYPE [UUID]
    python3 - "$@" <<'EOF'
import struct, sys, uuid
img, want_type = sys.argv[1], int(sys.argv[2])
h = open(img, 'rb').read(512)
size = len(open(img, 'rb').read())
def u32(o): return struct.unpack_from('<I', h, o)[0]
def fail(m): sys.exit('%s: header: %s' % (img, m))
text = b'<<< Oracle VM VirtualBox Disk Image >>>\n'
if h[:len(text)] != text or any(h[len(text):64]): fail('signature text')
if u32(64) != 0xbeda107f: fail('magic')
if u32(68) != 0x00010001: fail('version %#x, want 1.1' % u32(68))
if u32(72) != 400: fail('header size %d' % u32(72))
if u32(76) != want_type: fail('type %d, want %d' % (u32(76), want_type))
if u32(80) != 0: fail('flags')
off_blocks, off_data = u32(340), u32(344)
if off_blocks % 512 or off_blocks < 72 + 400: fail('block map offset %#x' % off_blocks)
cyl, heads, secs, ssize = struct.unpack_from('<4I', h, 348)
if ssize != 512 or heads != 16 or secs != 63 or cyl == 0: fail('legacy geometry %r' % ((cyl, heads, secs, ssize),))
disk, bsize, extra, nblocks, nalloc = struct.unpack_from('<QIIII', h, 368)
if bsize != 2**20 or extra != 0: fail('block size %d/%d' % (bsize, extra))
if nblocks != (disk + bsize - 1) // bsize: fail('block count %d for size %d' % (nblocks, disk))
if off_data < off_blocks + 4 * nblocks or off_data % 512: fail('data offset %#x' % off_data)
if want_type == 2 and (nalloc != nblocks or size < off_data + nblocks * bsize): fail('static: not all allocated')
lchs = struct.unpack_from('<4I', h, 456)
if lchs[3] != 512: fail('LCHS sector size')
create, modify = uuid.UUID(bytes_le=h[392:408]), uuid.UUID(bytes_le=h[408:424])
if create.int == 0 or modify.int == 0 or create == modify: fail('UUIDs %s %s' % (create, modify))
if want_type != 4 and any(h[424:456]): fail('link/parent UUIDs set on a base image')
if len(sys.argv) > 3 and str(create) != sys.argv[3]: fail('uuid %s, want %s' % (create, sys.argv[3]))
bmap = struct.unpack_from('<%dI' % nblocks, open(img, 'rb').read()[off_blocks:off_blocks + 4 * nblocks])
used = [e for e in bmap if e < 0xfffffffe]
if len(used) != nalloc or len(set(used)) != len(used): fail('block map vs allocated count')
print(create)
EOF
}

for mode in dynamic static; do
    opt=static=off; type=1
    [ $mode = static ] && { opt=static=on; type=2; }
    "$VDCONVERT" -O vdi -o $opt "$T/src.raw" "$T/$mode.vdi" || fail "convert to $mode vdi"
    qemu-img compare -q -f raw "$T/src.raw" -F vdi "$T/$mode.vdi" || fail "$mode: content differs"
    qemu-img check -q -f vdi "$T/$mode.vdi" || fail "$mode: qemu-img check"
    qemu-img info -f vdi "$T/$mode.vdi" | matches "virtual size: 5 MiB (5243392 bytes)" ||
        fail "$mode: size per qemu-img info"
    check_header "$T/$mode.vdi" $type >/dev/null || fail "$mode: header"
    echo "ok: $mode"
done

# only the blocks holding data are allocated (block 0, 1 and 5)
[ "$(qemu-img map -f vdi --output=json "$T/dynamic.vdi" |
     python3 -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]))')" \
  = $((2 * 1048576 + 512)) ] || fail "dynamic: expected blocks 0, 1 and the partial 5 allocated"

# a fresh UUID on every image; -o uuid= keeps a given one (migrations)
u1=$(check_header "$T/dynamic.vdi" 1)
"$VDCONVERT" create -O vdi "$T/again.vdi" 5M || fail create
u2=$(check_header "$T/again.vdi" 1)
[ "$u1" != "$u2" ] || fail "two images share the UUID $u1"
"$VDCONVERT" -O vdi -o uuid=$u1 "$T/dynamic.vdi" "$T/kept.vdi" || fail "convert with uuid="
check_header "$T/kept.vdi" 1 "$u1" >/dev/null || fail "uuid= not stored"
"$VDCONVERT" info "$T/kept.vdi" | matches "uuid: $u1" || fail "info does not show the uuid"
qemu-img compare -q "$T/kept.vdi" "$T/src.raw" || fail "kept: content"
if "$VDCONVERT" create -O vdi -o uuid=not-a-uuid "$T/bad.vdi" 1M 2>"$T/err"; then
    fail "uuid=not-a-uuid accepted"
fi
grep -q "not a UUID" "$T/err" || fail "uuid error: $(cat "$T/err")"
if "$VDCONVERT" create -O vdi -o uuid=00000000-0000-0000-0000-000000000000 "$T/bad.vdi" 1M 2>"$T/err"; then
    fail "null uuid accepted"
fi
grep -q "null UUID" "$T/err" || fail "null uuid error: $(cat "$T/err")"
echo "ok: uuids"

# writes through qemu-io into our image, and ours read back by qemu
qemu-io -f vdi -c "write -P 0x77 3M 4096" "$T/dynamic.vdi" >/dev/null
"$VDCONVERT" "$T/dynamic.vdi" "$T/back.raw"
qemu-img compare -q -f vdi "$T/dynamic.vdi" -F raw "$T/back.raw" || fail "after qemu-io write"
qemu-img check -q -f vdi "$T/dynamic.vdi" || fail "check after qemu-io write"

# a VDI from a qcow2 source with a non-MiB size, and qemu's own VDI as source
qemu-img create -q -f qcow2 "$T/q.qcow2" 3000K
qemu-io -f qcow2 -c "write -P 0x33 100K 64K" -c "write -P 0x44 2900K 100K" "$T/q.qcow2" >/dev/null
"$VDCONVERT" -O vdi "$T/q.qcow2" "$T/q.vdi" || fail "qcow2 -> vdi"
qemu-img compare -q "$T/q.qcow2" "$T/q.vdi" || fail "qcow2 -> vdi content"
qemu-img check -q "$T/q.vdi" || fail "qcow2 -> vdi check"
echo "ok: other sources"

# the make-matrix images (when ../shared is there): each VDI and Parallels
# image converted to VDI, dynamic and static
if [ -d "$SHARED/corpus" ]; then
    M=$(matrix_dir)
    while IFS=$'\t' read -r file fmt _; do
        case $fmt in vdi|parallels) ;; *) continue ;; esac
        for opt in static=off static=on; do
            rm -f "$T/m.vdi"
            "$VDCONVERT" -O vdi -o $opt "$M/$file" "$T/m.vdi" || fail "$file -> vdi $opt"
            qemu-img compare -q -f $fmt "$M/$file" -F vdi "$T/m.vdi" || fail "$file -> vdi $opt: content"
            qemu-img check -q -f vdi "$T/m.vdi" || fail "$file -> vdi $opt: check"
        done
        echo "ok: matrix $file -> vdi"
    done < <(grep -v '^#' "$M/MANIFEST.tsv")
fi
