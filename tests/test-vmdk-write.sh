#!/bin/bash
# test-vmdk-write: every VMDK subformat vdconvert writes reads back as the
# source (qemu-img compare, and our own read), passes qemu-img check, is read
# by libvmdk's vmdkinfo, and records the adapter type, hardware version and
# createType asked for.  The size is not a multiple of the grain and the last
# sector holds data.  streamOptimized output is parsed marker by marker
# (VMware's layout rules).  Writes into existing images (-n), deltas made
# with -B (partial grains copied from the parent), CID/parentCID upkeep and
# commit into the parent are checked against qemu-img too.
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img python3 vmdkinfo strace
PYVMDK=""
for p in /usr/bin/python3 python3; do
    if "$p" -c 'import pyvmdk' 2>/dev/null; then PYVMDK=$p; break; fi
done
[ -n "$PYVMDK" ] || skip "pyvmdk (python3-libvmdk) not installed: libvmdk content check impossible"

# 70 MiB + 3 sectors: data at the start, across the first grain-table
# boundary (32 MiB), a partial grain, and in the very last sector.
python3 - "$T/src.raw" <<'PY'
import os, sys, random
r = random.Random(7)
size = (70 << 20) + 3 * 512
with open(sys.argv[1], "wb") as f:
    f.truncate(size)
    f.seek(0); f.write(bytes(r.getrandbits(8) for _ in range(100000)))
    f.seek((32 << 20) - 4096); f.write(b"grain-table-boundary" * 1000)
    f.seek(50 << 20); f.write(b"\x01" * 1000)
    f.seek(size - 512); f.write(b"last-sector" * 40)
PY

desc_of() {  # the descriptor text of a VMDK (embedded or separate)
    python3 - "$1" <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read()
if d[:4] == b"KDMV":
    off, n = struct.unpack_from("<QQ", d, 28)
    d = d[off * 512:(off + n) * 512]
sys.stdout.write(d.split(b"\0")[0].decode())
PY
}

roundtrip() {  # SUBFORMAT ADAPTER HWVERSION
    local sub=$1 ad=$2 hw=$3 out=$T/$1-$2.vmdk
    "$VDCONVERT" -O vmdk -o "subformat=$sub,adapter_type=$ad,hwversion=$hw" "$T/src.raw" "$out" ||
        fail "convert to $sub"
    qemu-img compare -q -f raw "$T/src.raw" -F vmdk "$out" || fail "$sub: qemu-img compare differs"
    qemu-img check -q -f vmdk "$out" || fail "$sub: qemu-img check"
    [ "$(qemu-img info -f vmdk --output=json "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["create-type"])')" = "$sub" ] ||
        fail "$sub: qemu-img sees another create type"
    vmdkinfo "$out" >"$T/vmdkinfo.txt" 2>&1 || fail "$sub: vmdkinfo: $(tail -2 "$T/vmdkinfo.txt")"
    grep -q "Media size:.*73401856 bytes" "$T/vmdkinfo.txt" || fail "$sub: vmdkinfo size"
    local d
    d=$(desc_of "$out")
    grep -q "^createType=\"$sub\"" <<<"$d" || fail "$sub: createType"
    grep -q "^ddb.adapterType = \"$ad\"" <<<"$d" || fail "$sub: adapterType"
    grep -q "^ddb.virtualHWVersion = \"$hw\"" <<<"$d" || fail "$sub: virtualHWVersion"
    rm -f "$T/back.raw"
    "$VDCONVERT" "$out" "$T/back.raw" || fail "$sub: read back"
    cmp -s "$T/src.raw" "$T/back.raw" || fail "$sub: our read-back differs"
    echo "ok: $sub ($ad, hw $hw)"
}
roundtrip monolithicSparse ide 4
roundtrip monolithicSparse lsilogic 7
roundtrip monolithicFlat buslogic 6
roundtrip twoGbMaxExtentSparse legacyESX 10
roundtrip twoGbMaxExtentFlat pvscsi 13
roundtrip streamOptimized lsilogic 14
roundtrip streamOptimized ide 4
"$VDCONVERT" -O vmdk -o zeroed_grain=on,compat6=on "$T/src.raw" "$T/zg.vmdk" || fail "zeroed_grain"
qemu-img compare -q -f raw "$T/src.raw" -F vmdk "$T/zg.vmdk" || fail "zeroed_grain: content"
qemu-img check -q -f vmdk "$T/zg.vmdk" || fail "zeroed_grain: check"
desc_of "$T/zg.vmdk" | matches '^ddb.virtualHWVersion = "6"' || fail "compat6: hwversion"
echo "ok: zeroed_grain=on,compat6=on"
ls "$T"/*-flat.vmdk "$T"/*-s001.vmdk "$T"/*-f001.vmdk >/dev/null || fail "extent files missing"

# New grains that one write fills go out as one pwrite (a job of 1 MiB: 16
# grains), and the file grows by that write, not by an ftruncate per grain
# (one thread, -m 1, so the count is exact; the empty image is made first).
# Each grain holds 4 KiB of zeroes: they go with the grain's data (the grain
# is written whole either way), not as a split of the write.
python3 -c 'import sys
with open(sys.argv[1], "wb") as f:
    for g in range(64): f.write(bytes([g + 1]) * 8192 + bytes(4096) + bytes([g + 1]) * 53248)' "$T/dense.raw"
traced -f -qq -e trace=pwrite64,ftruncate -o "$T/dense.trace" \
    "$VDCONVERT" -m 1 -f raw -O vmdk "$T/dense.raw" "$T/dense.vmdk" || fail "dense convert"
qemu-img compare -q -f raw "$T/dense.raw" -F vmdk "$T/dense.vmdk" || fail "dense: content differs"
qemu-img check -q -f vmdk "$T/dense.vmdk" || fail "dense: qemu-img check"
n_mib=$(grep -c 'pwrite64(.*, 1048576, .*= 1048576$' "$T/dense.trace" || true)
n_grain=$(grep -c 'pwrite64(.*= 65536$' "$T/dense.trace" || true)
n_trunc=$(grep -c 'ftruncate(' "$T/dense.trace" || true)
[ "$n_mib" -eq 4 ] && [ "$n_grain" -eq 0 ] && [ "$n_trunc" -le 1 ] ||
    fail "dense: $n_mib writes of 1 MiB (want 4), $n_grain of one grain (want 0), $n_trunc ftruncates (want <= 1)"
echo "ok: 4 MiB of new grains, 4 KiB of zeroes in each, in 4 writes"

# libvmdk (pyvmdk, Debian python3-libvmdk) reads the guest content.  It opens
# the extent file named in the descriptor even for monolithic files, so those
# are made here with `create` (right name) and filled with `convert -n`,
# which writes through the same driver paths.
{
    yal_read() {  # IMG: sha256 of the content as libvmdk reads it
        "$PYVMDK" - "$1" <<'PY'
import hashlib, pyvmdk, sys
h = pyvmdk.handle(); h.open(sys.argv[1]); h.open_extent_data_files()
n = h.get_media_size(); m = hashlib.sha256()
while n:
    b = h.read_buffer(min(n, 1 << 22)); m.update(b); n -= len(b)
print(m.hexdigest())
PY
    }
    src_sha=$(sha256sum <"$T/src.raw" | cut -d' ' -f1)
    for sub in monolithicSparse streamOptimized; do
        "$VDCONVERT" create -O vmdk -o subformat=$sub "$T/yal-$sub.vmdk" 73401856 >/dev/null
        "$VDCONVERT" convert -n -f raw -O vmdk "$T/src.raw" "$T/yal-$sub.vmdk" ||
            fail "convert -n into a new $sub"
        qemu-img compare -q -f raw "$T/src.raw" -F vmdk "$T/yal-$sub.vmdk" || fail "yal-$sub: qemu-img"
        [ "$(yal_read "$T/yal-$sub.vmdk")" = "$src_sha" ] || fail "libvmdk reads $sub differently"
        echo "ok: libvmdk reads $sub content"
    done
    for f in monolithicFlat-buslogic twoGbMaxExtentSparse-legacyESX twoGbMaxExtentFlat-pvscsi; do
        [ "$(yal_read "$T/$f.vmdk")" = "$src_sha" ] || fail "libvmdk reads $f differently"
        echo "ok: libvmdk reads $f content"
    done
}

# streamOptimized: VMware's layout, checked marker by marker.
python3 - "$T/streamOptimized-lsilogic.vmdk" <<'PY'
import struct, sys, zlib
d = open(sys.argv[1], "rb").read()
def fail(m): sys.exit("stream layout: " + m)
magic, ver, flags, cap, grain, doff, dsize, gtes, rgd, gd, over = struct.unpack_from("<IIIQQQQIQQQ", d, 0)
if magic != 0x564d444b or ver != 3: fail("header magic/version %x %d" % (magic, ver))
if flags != 0x30001: fail("flags %#x (want newline check, compressed, markers)" % flags)
if gd != 0xffffffffffffffff: fail("header grain directory is not 'at end'")
if d[73:77] != b"\n \r\n": fail("newline check bytes")
if over * 512 % (grain * 512): fail("overhead not grain aligned")
if len(d) % 512: fail("file not a whole number of sectors")
pos, last_lba, gts, grains = over * 512, -1, [], {}
while True:
    val, size = struct.unpack_from("<QI", d, pos)
    if size:                                 # grain marker
        if val <= last_lba: fail("grain LBAs not increasing at %#x" % pos)
        if val % grain: fail("grain LBA not grain aligned")
        data = zlib.decompress(d[pos + 12:pos + 12 + size])
        if len(data) != grain * 512: fail("grain inflates to %d bytes" % len(data))
        grains[pos // 512] = val
        last_lba = val
        pos += (12 + size + 511) // 512 * 512
        continue
    typ = struct.unpack_from("<I", d, pos + 12)[0]
    if typ == 1:                             # grain table
        if val != gtes * 4 // 512: fail("GT marker size")
        gt = struct.unpack_from("<%dI" % gtes, d, pos + 512)
        idx = None
        for k, e in enumerate(gt):
            if e:
                if grains.get(e) is None: fail("GT entry does not point to a grain marker")
                i = grains[e] // grain // gtes
                if idx is not None and i != idx: fail("GT maps grains of two tables")
                idx = i
                if grains[e] // grain % gtes != k: fail("GT entry in the wrong slot")
        if gts and idx <= gts[-1][0]: fail("grain tables not in increasing order")
        if last_lba // grain // gtes != idx: fail("GT does not follow its own grains")
        gts.append((idx, pos // 512 + 1))
        pos += 512 + val * 512
    elif typ == 2:                           # grain directory
        gdn = (cap // grain + (cap % grain > 0) + gtes - 1) // gtes
        gdir = struct.unpack_from("<%dI" % gdn, d, pos + 512)
        for idx, sec in gts:
            if gdir[idx] != sec: fail("GD entry %d does not point to its GT" % idx)
        gd_sec = pos // 512 + 1
        pos += 512 + val * 512
    elif typ == 3:                           # footer
        if val != 1: fail("footer marker size")
        f = struct.unpack_from("<IIIQQQQIQQQ", d, pos + 512)
        if f[0] != magic or f[9] != gd_sec: fail("footer does not point to the GD")
        pos += 1024
    elif typ == 0:
        if val != 0 or d[pos:pos + 512] != bytes(512): fail("end-of-stream marker")
        if pos + 512 != len(d): fail("data after end-of-stream")
        break
    else:
        fail("unknown marker type %d at %#x" % (typ, pos))
if len(gts) < 2: fail("expected grain tables for both 32 MiB regions with data")
print("ok: streamOptimized layout (%d grains, %d grain tables)" % (len(grains), len(gts)))
PY

# Write into an existing sparse image (-n): new grains, rewritten grains,
# partial grains; the CID changes on the first write.
python3 - "$T/src.raw" "$T/src2.raw" <<'PY'
import sys, shutil
shutil.copy(sys.argv[1], sys.argv[2])
with open(sys.argv[2], "r+b") as f:
    for off in (512, 65536 * 3 + 1024, 40 << 20, (70 << 20) + 512):
        f.seek(off); f.write(b"\xee" * 700)
PY
img=$T/monolithicSparse-ide.vmdk
cid0=$(desc_of "$img" | sed -n 's/^CID=//p')
"$VDCONVERT" convert -n -S 0 -f raw -O vmdk "$T/src2.raw" "$img" || fail "convert -n into vmdk"
qemu-img compare -q -f raw "$T/src2.raw" -F vmdk "$img" || fail "-n: content differs"
qemu-img check -q -f vmdk "$img" || fail "-n: qemu-img check"
cid1=$(desc_of "$img" | sed -n 's/^CID=//p')
[ -n "$cid1" ] && [ "$cid0" != "$cid1" ] || fail "CID not changed by a write ($cid0 -> $cid1)"
echo "ok: writes into an existing image, CID $cid0 -> $cid1"
# the redundant grain directory and its tables mirror the primary ones
python3 - "$img" <<'PY' || fail "redundant grain directory differs from the primary"
import struct, sys
d = open(sys.argv[1], "rb").read()
flags, cap, grain = struct.unpack_from("<IQQ", d, 8)
gtes, rgd, gd = struct.unpack_from("<IQQ", d, 44)
assert flags & 2 and rgd, "no redundant grain directory"
n = -(-cap // grain // gtes)
g1 = struct.unpack_from("<%dI" % n, d, gd * 512)
g2 = struct.unpack_from("<%dI" % n, d, rgd * 512)
used = 0
for a, b in zip(g1, g2):
    assert a and b and a != b
    t1 = d[a * 512:a * 512 + gtes * 4]; t2 = d[b * 512:b * 512 + gtes * 4]
    assert t1 == t2, "grain tables differ"
    used += sum(1 for (x,) in struct.iter_unpack("<I", t1) if x)
assert used > 0
print("ok: redundant grain directory mirrors %d grains" % used)
PY

# A delta over a parent: only the differences land in the child.
"$VDCONVERT" -O vmdk "$T/src.raw" "$T/base.vmdk"
sha_base=$(sha256sum <"$T/base.vmdk")
"$VDCONVERT" convert -B base.vmdk -F vmdk -O vmdk "$T/src2.raw" "$T/child.vmdk" || fail "convert -B"
qemu-img compare -q -f raw "$T/src2.raw" -F vmdk "$T/child.vmdk" || fail "delta: content differs"
qemu-img check -q -f vmdk "$T/child.vmdk" || fail "delta: qemu-img check"
[ "$(sha256sum <"$T/base.vmdk")" = "$sha_base" ] || fail "delta: the parent changed"
[ "$(desc_of "$T/child.vmdk" | sed -n 's/^parentCID=//p')" = "$(desc_of "$T/base.vmdk" | sed -n 's/^CID=//p')" ] ||
    fail "delta: parentCID is not the parent's CID"
desc_of "$T/child.vmdk" | matches '^parentFileNameHint="base.vmdk"' || fail "delta: parentFileNameHint"
qemu-img info -f vmdk "$T/child.vmdk" | matches "backing file: base.vmdk" || fail "delta: qemu sees no backing"
used=$(du -k "$T/child.vmdk" | cut -f1)
[ "$used" -lt 2048 ] || fail "delta holds more than the differences (${used} KiB)"
echo "ok: delta over base.vmdk (${used} KiB)"

# vdconvert create -b, then commit the child into its parent: the parent
# keeps its CID (docs/flush.md: a new one would leave the child's parentCID
# stale at some kill point), so the child still opens and shows the same
# data; another delta made on the same parent (c2) is not warned by a CID
# change and now shows the committed data.
"$VDCONVERT" create -f vmdk -b base.vmdk -F vmdk "$T/c2.vmdk" >/dev/null || fail "create -b"
qemu-img compare -q -f raw "$T/src.raw" -F vmdk "$T/c2.vmdk" || fail "create -b: content"
cid=$(grep -a '^CID=' "$T/base.vmdk")
"$VDCONVERT" commit "$T/child.vmdk" >/dev/null || fail "commit"
qemu-img compare -q -f raw "$T/src2.raw" -F vmdk "$T/base.vmdk" || fail "commit: parent content"
qemu-img check -q -f vmdk "$T/base.vmdk" || fail "commit: qemu-img check of the parent"
[ "$(grep -a '^CID=' "$T/base.vmdk")" = "$cid" ] || fail "commit changed the parent's CID"
qemu-img compare -q -f raw "$T/src2.raw" -F vmdk "$T/child.vmdk" || fail "commit: the child after it"
echo "ok: commit into the parent, which keeps its $cid"

# streamOptimized is written in one pass: out-of-order writes are refused.
"$VDCONVERT" -O vmdk -o subformat=streamOptimized "$T/src.raw" "$T/s.vmdk"
if "$VDCONVERT" convert -n -f raw -O vmdk "$T/src2.raw" "$T/s.vmdk" 2>"$T/err"; then
    fail "rewrote a finished streamOptimized image"
fi
grep -q "streamOptimized" "$T/err" || fail "stream rewrite error: $(cat "$T/err")"
echo "all ok"
