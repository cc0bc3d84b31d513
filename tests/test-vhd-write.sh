#!/bin/bash
# test-vhd-write: every VHD subformat vdconvert writes (fixed/dynamic, with and
# without force_size, a size that is not a whole number of blocks, data in the
# first and last sectors) is read back identically by qemu-img compare and by
# libvhdi (vhdiinfo, and pyvhdi for the content), at the size qemu reports;
# and a differencing VHD made with `vdconvert create -b` is read by libvhdi as
# its parent's content.  (qemu-img check does not support vpc: not run.)
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img vhdiinfo python3
# pyvhdi (python3-libvhdi, lib.sh's vhdi_read) is for Debian's python
/usr/bin/python3 -c 'import pyvhdi' 2>/dev/null || skip "python3-libvhdi not installed"

# 7 MiB + 3 sectors: 4 blocks, the last one partial; data at both ends and in
# the middle, a zero gap in between.
SIZE=$((7 * 1048576 + 1536))
pattern_raw "$T/src.raw" $SIZE

qemu_size() {
    qemu-img info -f vpc --output=json "$1" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'
}

for opts in subformat=fixed subformat=dynamic subformat=fixed,force_size=on \
            subformat=dynamic,force_size=on; do
    out=$T/out-${opts//[=,]/_}.vhd
    "$VDCONVERT" -O vhd -o "$opts" "$T/src.raw" "$out" || fail "convert -o $opts"
    qemu-img compare -q -f raw "$T/src.raw" -F vpc "$out" || fail "$opts: qemu-img compare differs"
    qsize=$(qemu_size "$out")
    case $opts in
    *force_size=on) [ "$qsize" = $SIZE ] || fail "$opts: size $qsize, want exactly $SIZE" ;;
    *) [ "$qsize" -ge $SIZE ] && [ "$qsize" -lt $((SIZE + 16 * 255 * 512)) ] ||
           fail "$opts: CHS-rounded size $qsize out of range" ;;
    esac
    vhdi_judge "$out" "$T/src.raw" "$opts"
    [ "$VHDI_SIZE" = "$qsize" ] || fail "$opts: libvhdi size $VHDI_SIZE != qemu's $qsize"
    echo "ok: $opts (size $qsize)"
done

# The same without data in the last sector (the last block stays a hole).
without_last_sector "$T/src.raw" "$T/notail.raw"
for opts in subformat=dynamic subformat=fixed; do
    "$VDCONVERT" -O vhd -o "$opts" "$T/notail.raw" "$T/notail-$opts.vhd" || fail "notail $opts"
    qemu-img compare -q -f raw "$T/notail.raw" -F vpc "$T/notail-$opts.vhd" || fail "notail $opts differs"
    vhdi_judge "$T/notail-$opts.vhd" "$T/notail.raw" "notail $opts"
    echo "ok: $opts without data in the last sector"
done

# CHS rounding equals qemu-img create's, from 1 MiB to past the largest
# geometry (~127 GiB, where the exact size is kept) and near 2 TB.
for sz in 1048576 10000000 536870912 4294967296 68719476736 137438953472 200000000000 \
          1999999999999; do
    rm -f "$T/q.vhd" "$T/v.vhd"
    qemu-img create -q -f vpc "$T/q.vhd" $sz
    "$VDCONVERT" create -O vhd "$T/v.vhd" $sz >/dev/null
    [ "$(qemu_size "$T/q.vhd")" = "$(qemu_size "$T/v.vhd")" ] ||
        fail "size $sz: qemu makes $(qemu_size "$T/q.vhd"), we make $(qemu_size "$T/v.vhd")"
done
echo "ok: CHS-rounded sizes equal qemu-img create's"

# A fixed VHD is probed as VHD, not raw, and the dynamic one carries the
# footer copy at offset 0.
fmt=$("$VDCONVERT" info "$T/out-subformat_fixed.vhd" | awk '/^file format:/ { print $3 }')
[ "$fmt" = vhd ] || fail "our fixed VHD probed as '$fmt'"
cmp -n 512 "$T/out-subformat_dynamic.vhd" <(tail -c 512 "$T/out-subformat_dynamic.vhd") ||
    fail "dynamic VHD: the copy at 0 differs from the footer"

# Differencing: child of the dynamic one; libvhdi merges it with the parent.
cp "$T/out-subformat_dynamic_force_size_on.vhd" "$T/base.vhd"
"$VDCONVERT" create -O vhd -b base.vhd "$T/child.vhd" || fail "create -b"
vhdiinfo "$T/child.vhd" >"$T/vhdiinfo.txt" || fail "vhdiinfo refuses the child"
grep -q "Differential" "$T/vhdiinfo.txt" || fail "vhdiinfo: not differential: $(cat "$T/vhdiinfo.txt")"
grep -q "base.vhd" "$T/vhdiinfo.txt" || fail "vhdiinfo: parent name missing"
read -r csha csize < <(vhdi_read "$T/child.vhd" "$T/base.vhd")
[ "$csha" = "$(padded_sha "$T/src.raw" "$csize")" ] || fail "child+parent (libvhdi) != parent"
[ "$(readback_sha "$T/child.vhd")" = "$csha" ] || fail "child+parent (ours) != parent"
# A Mac locator (MacX file URL, %-escaped, absolute from another machine)
# and a parent name that does not exist: the URL's file name next to the
# child is found.
mkdir "$T/mac"
cp "$T/base.vhd" "$T/mac/base copy.vhd"
python3 - "$T/child.vhd" "$T/mac/child.vhd" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], 'rb').read())
d = 512
url = b"file://localhost/Users/someone/VMs/base%20copy.vhd"
(off,) = struct.unpack('>Q', b[d + 576 + 16:d + 576 + 24])
b[off:off + 512] = url + bytes(512 - len(url))
b[d + 576:d + 576 + 24] = b"MacX" + struct.pack('>III', 512, len(url), 0) + struct.pack('>Q', off)
b[d + 600:d + 624] = bytes(24)                       # drop the W2ku locator
name = "gone.vhd".encode('utf-16-be')
b[d + 64:d + 576] = name + bytes(512 - len(name))
blk = bytearray(b[d:d + 1024]); blk[36:40] = bytes(4)
b[d + 36:d + 40] = struct.pack('>I', ~sum(blk) & 0xffffffff)
open(sys.argv[2], 'wb').write(b)
PY
[ "$(readback_sha "$T/mac/child.vhd")" = "$csha" ] || fail "MacX child reads other content"
echo "ok: MacX locator resolved to 'base copy.vhd'"
"$VDCONVERT" create -O vhd -o subformat=fixed -b base.vhd "$T/c2.vhd" 2>/dev/null &&
    fail "a fixed differencing VHD was accepted"
echo "ok: differencing child of base.vhd"

# convert -B onto a base.vhd that vdconvert made from a source of the same
# size: the base is CHS-rounded (64 MiB -> 67125248 bytes), the child asks for
# the unrounded size, and the same rounding makes them agree.
head -c $((64 << 20)) /dev/zero >"$T/b64.raw"
printf 'base' | dd of="$T/b64.raw" bs=1 seek=4096 conv=notrunc status=none
cp "$T/b64.raw" "$T/s64.raw"
printf 'child' | dd of="$T/s64.raw" bs=1 seek=$((40 << 20)) conv=notrunc status=none
"$VDCONVERT" -O vhd "$T/b64.raw" "$T/b64.vhd" || fail "convert b64.raw"
"$VDCONVERT" -O vhd -B b64.vhd "$T/s64.raw" "$T/d64.vhd" || fail "convert -B b64.vhd of a 64 MiB source"
rm -f "$T/back.raw"
"$VDCONVERT" "$T/d64.vhd" "$T/back.raw"
cmp -n $((64 << 20)) "$T/back.raw" "$T/s64.raw" || fail "convert -B b64.vhd: content differs"
[ "$(stat -c %s "$T/d64.vhd")" -lt $((8 << 20)) ] || fail "convert -B b64.vhd wrote more than the difference"
echo "ok: convert -B onto a CHS-rounded base of the same source size"
