#!/bin/bash
# OUT that is a device node is never replaced by a rename: a character
# device (a /dev/null made here) is refused and keeps its node; a block
# device (a loop device) is written into with -O raw, refused with any
# other format, and stays a block device.  Needs root (mknod, losetup):
# skipped by name otherwise.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io losetup
[ "$(id -u)" = 0 ] || skip "device node outputs need root (mknod, losetup)"
V=$VDCONVERT
cd "$T"
qemu-img create -q -f raw a.raw 4M
qemu-io -f raw -c "write -P 0x33 0 1M" a.raw >/dev/null
mknod null c 1 3 2>log || skip "mknod refused here: $(cat log)"
for f in raw qcow2 vmdk; do
    if "$V" -f raw -O $f a.raw null >log 2>&1; then fail "-O $f to null: not refused"; fi
    matches "^vdconvert: null: exists and is not a regular file" log || fail "-O $f null: $(cat log)"
done
[ -c null ] || fail "the character device node was replaced"

truncate -s 8M loop.img
L=$(losetup -f --show loop.img 2>log) || skip "no loop device here: $(cat log)"
trap 'losetup -d "$L"; rm -rf "$T"' EXIT
"$V" -f raw -O raw a.raw "$L" >log 2>&1 || fail "raw to $L: $(cat log)"
if "$V" -f raw -O qcow2 a.raw "$L" >log 2>&1; then fail "qcow2 onto $L: not refused"; fi
matches "^vdconvert: $L: a block device takes -O raw" log || fail "qcow2 onto $L: $(cat log)"
[ -b "$L" ] || fail "$L is no longer a block device"
[ "$(head -c 4M loop.img | sha256sum)" = "$(sha256sum <a.raw)" ] || fail "$L: content"
[ -z "$(ls -A | grep vdconvert)" ] || fail "temporary files left: $(ls -A)"
echo "device out: ok"
