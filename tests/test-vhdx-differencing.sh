#!/bin/bash
# test-vhdx-differencing: a real Hyper-V differencing disk
# (dissect.hypervisor/differencing.avhdx: 32 PARTIALLY_PRESENT blocks, sector
# bitmaps) read over a parent, compared with libvhdi (pyvhdi, set_parent).
# The real parent is not in the corpus, so the test makes one: a VHDX of the
# same size with distinct data in every block the child touches, named as the
# child's parent locator says, its data write GUID set to the child's
# parent_linkage.  qemu 7.2 cannot read differencing VHDX, so libvhdi is the
# peer here.  A parent with another GUID is refused.
source "$(dirname "$0")/lib.sh"
requires_cmd python3 strace vhdiinfo
requires_shared
PY=/usr/bin/python3
$PY -c 'import pyvhdi' 2>/dev/null || skip "python3-libvhdi not installed"
S=$SHARED/corpus/samples
mkdir -p "$T/d"
child=$T/d/child.avhdx
parent="$T/d/Generation 1_49C4BAF3-4B25-4406-8C4B-D39E65C32385.avhdx"
gzip -dc "$S/dissect.hypervisor/differencing.avhdx.gz" >"$child"

# The blocks the child holds (payload BAT entries with a non-zero state) and
# its virtual size, parsed independently of the driver.
read -r size blocks < <(python3 - "$child" <<'PY'
import struct, sys
b = open(sys.argv[1], 'rb').read()
rt = b[0x30000:0x40000]
for i in range(struct.unpack('<I', rt[8:12])[0]):
    e = rt[16 + 32 * i:48 + 32 * i]
    off, ln = struct.unpack('<QI', e[16:28])
    if e[:4] == bytes.fromhex('6677c22d'): bat, blen = off, ln
    if e[:4] == bytes.fromhex('06a27c8b'): meta = off
m = b[meta:meta + 65536]
for i in range(struct.unpack('<H', m[10:12])[0]):
    e = m[32 + 32 * i:64 + 32 * i]
    o = struct.unpack('<I', e[16:20])[0]
    if e[:4] == bytes.fromhex('2442a52f'): size = struct.unpack('<Q', b[meta + o:meta + o + 8])[0]
    if e[:4] == bytes.fromhex('3767a1ca'): bs = struct.unpack('<I', b[meta + o:meta + o + 4])[0]
chunk = (1 << 23) * 512 // bs
ents = struct.unpack('<%dQ' % (blen // 8), b[bat:bat + blen])
blocks = [i - i // (chunk + 1) for i, e in enumerate(ents) if i % (chunk + 1) != chunk and e & 7]
assert bs == 2 << 20 and len(blocks) == 32, (bs, len(blocks))
print(size, ','.join(map(str, blocks)))
PY
)

# The parent: distinct bytes in every block the child touches, plus block 1
# which the child does not touch.
python3 - "$T/parent.raw" "$size" "$blocks" <<'PY'
import random, sys
p, size, blocks = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3].split(',')]
r = random.Random(11)
with open(p, 'wb') as f:
    f.truncate(size)
    for blk in blocks + [1]:
        f.seek(blk << 21); f.write(r.randbytes(2 << 20))
PY
"$VDCONVERT" -O vhdx -o block_size=2M "$T/parent.raw" "$parent" || fail "make the parent"

set_guid() {  # FILE GUID: both headers' DataWriteGuid, CRC-32C fixed (lib.sh)
    py_crc32c "$1" "$2" <<'PY'
import uuid
p, g = sys.argv[1], uuid.UUID(sys.argv[2]).bytes_le
b = bytearray(open(p, 'rb').read(0x21000))
with open(p, 'r+b') as f:
    for h in (0x10000, 0x20000):
        b[h + 32:h + 48] = g
        crc32c_fix(b, h, 4096)
        f.seek(h); f.write(b[h:h + 4096])
PY
}
set_guid "$parent" ff34003b-11ed-4cf8-a166-b2be05e20b80

"$VDCONVERT" "$child" "$T/out.raw" || fail "child over the made parent does not read"
$PY - "$child" "$parent" "$T/out.raw" "$T/parent.raw" "$blocks" <<'PY'
import sys, pyvhdi
c = pyvhdi.file(); c.open(sys.argv[1]); p = pyvhdi.file(); p.open(sys.argv[2]); c.set_parent(p)
ours, par = open(sys.argv[3], 'rb'), open(sys.argv[4], 'rb')
mixed = 0
for blk in [int(x) for x in sys.argv[5].split(',')] + [1, 2]:
    want = c.read_buffer_at_offset(2 << 20, blk << 21)
    ours.seek(blk << 21); got = ours.read(2 << 20)
    if got != want:
        sys.exit('block %d differs from libvhdi' % blk)
    par.seek(blk << 21); pb = par.read(2 << 20)
    sec = [got[i:i + 512] == pb[i:i + 512] for i in range(0, 2 << 20, 512)]
    mixed += any(sec) and not all(sec)
if mixed < 10:
    sys.exit('only %d blocks mix child and parent sectors: the bitmap was not exercised' % mixed)
print('ok: 34 blocks equal libvhdi; %d mix child and parent sectors' % mixed)
PY

set_guid "$parent" 00000000-1111-2222-3333-444444444444
if msg=$("$VDCONVERT" "$child" "$T/out2.raw" 2>&1); then fail "a parent with another GUID was accepted"; fi
grep -q "parent_linkage {ff34003b-11ed-4cf8-a166-b2be05e20b80} does not match" <<<"$msg" ||
    fail "wrong error: $msg"
echo "ok (refused): $msg"

# Dropping the parent in place (rebase -b "", and -u): the 32 partially
# present blocks are completed where they lie (their missing sectors get
# the parent's data, or zeroes with -u), then one log entry clears the
# sector bitmaps, the parent flag and the locator.  The file keeps its
# inode; vdisk and libvhdi (no parent now) read the old guest view (safe)
# or the child's own sectors over zeroes (-u).  A SIGKILL before a write,
# truncate or sync leaves a file that opens,
# that vdisk's check finds clean (after the replay of a pending log), and
# whose view is the old or the new one (every step of both, with
# VD_VHDX_KILL=all: the slow suite's vhdx-differencing-kill).
set_guid "$parent" ff34003b-11ed-4cf8-a166-b2be05e20b80
cp "$child" "$T/d/c0.avhdx"
$PY - "$T/out.raw" "$T/parent.raw" "$T/own.raw" "$blocks" <<'PY'
import sys
ours, par = open(sys.argv[1], 'rb'), open(sys.argv[2], 'rb')
with open(sys.argv[3], 'wb') as f:
    f.truncate(ours.seek(0, 2))
    for blk in [int(x) for x in sys.argv[4].split(',')]:
        ours.seek(blk << 21); par.seek(blk << 21)
        a, p = ours.read(2 << 20), par.read(2 << 20)
        f.seek(blk << 21)
        f.write(b''.join(bytes(512) if a[i:i + 512] == p[i:i + 512] else a[i:i + 512]
                         for i in range(0, 2 << 20, 512)))
PY
libvhdi_reads() {  # IMG RAW WHAT: libvhdi, without a parent, reads RAW's blocks
    $PY - "$1" "$2" "$blocks" <<'PY' || fail "$3: libvhdi reads other data"
import sys, pyvhdi
f = pyvhdi.file(); f.open(sys.argv[1]); raw = open(sys.argv[2], 'rb')
for blk in [int(x) for x in sys.argv[3].split(',')] + [1, 2]:
    raw.seek(blk << 21)
    if f.read_buffer_at_offset(2 << 20, blk << 21) != raw.read(2 << 20):
        sys.exit('block %d' % blk)
PY
}
for mode in safe unsafe; do
    img=$T/d/$mode.avhdx want=$T/out.raw u=
    [ $mode = unsafe ] && { want=$T/own.raw; u=-u; }
    cp "$T/d/c0.avhdx" "$img"; i=$(stat -c %i "$img")
    "$VDCONVERT" rebase $u -b "" "$img" || fail "rebase $u -b '' failed"
    [ "$(stat -c %i "$img")" = "$i" ] || fail "rebase $u -b '': rewritten (new inode)"
    "$VDCONVERT" info "$img" | matches "subformat: dynamic" || fail "rebase $u -b '': not dynamic"
    "$VDCONVERT" check -q "$img" || fail "rebase $u -b '': check"
    "$VDCONVERT" compare -q "$img" "$want" || fail "rebase $u -b '': guest view"
    vhdiinfo "$img" >/dev/null || fail "rebase $u -b '': vhdiinfo refuses it"
    libvhdi_reads "$img" "$want" "rebase $u -b ''"
    # (kill points: slow suite only; each run syncs a hundred times or more)
    if [ "${VD_VHDX_KILL:-}" != all ]; then
        echo "ok: rebase $u -b '' in place (kill points: slow suite)"; continue
    fi
    SYSCALLS=pwrite64,pwritev,ftruncate,fallocate,fsync,fdatasync,copy_file_range
    cp "$T/d/c0.avhdx" "$img"
    # (kill_at: the N-th traced call exactly, on one CPU so that vdconvert
    # copies in one thread: strace counts each syscall and thread on its own)
    traced -f -qq -o "$T/trace.log" -e trace=$SYSCALLS taskset -c 0 "$VDCONVERT" rebase $u -b "" "$img"
    steps=$(grep -cv -e '+++' -e resumed "$T/trace.log" || true)
    [ "$(grep -v -e '+++' -e resumed "$T/trace.log" | awk '{ print $1 }' | sort -u | wc -l)" = 1 ] ||
        fail "rebase $u -b '': traced in more than one thread: kill points would not be exact"
    kills=0 replayed=0
    for ((n = 1; n <= steps; n++)); do
        kills=$((kills + 1))
        cp "$T/d/c0.avhdx" "$img"
        run_killed "$T/trace.log" $n taskset -c 0 "$VDCONVERT" rebase $u -b "" "$img"
        "$VDCONVERT" info "$img" >"$T/info" 2>&1 || fail "rebase $u -b '' killed at step $n: $(tail -1 "$T/info")"
        if grep -q "log: replayed in memory" "$T/info"; then
            "$VDCONVERT" check -q -r all "$img" >/dev/null 2>&1 || fail "rebase $u -b '' killed at step $n: replay"
            replayed=$((replayed + 1))
        fi
        "$VDCONVERT" check -q "$img" || fail "rebase $u -b '' killed at step $n: check"
        "$VDCONVERT" compare -q "$img" "$T/out.raw" || "$VDCONVERT" compare -q "$img" "$want" ||
            fail "rebase $u -b '' killed at step $n: guest view neither old nor new"
    done
    echo "ok: rebase $u -b '' in place; $kills of $steps kill points, $replayed logs replayed"
done
