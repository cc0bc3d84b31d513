#!/bin/bash
# Zero-copy conversion on a file system with reflinks: an XFS file system
# in a loop-mounted file.  The correctness tests of test-zero-copy.sh run
# there (in the modes that use copy_file_range), and the outputs of raw -> raw, raw -> qcow2, raw -> vdi, raw -> vhd and qcow2 -> raw must
# share their data extents with the source (filefrag reports them
# "shared"): the data was not copied at all, also where 4 KiB of zeroes sit
# inside each cluster of data.  With --no-copy-range nothing
# is shared, so the check can fail.  Skipped without root, loop devices or
# mkfs.xfs.
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img mkfs.xfs filefrag mount umount python3
[ "$(id -u)" = 0 ] || skip "needs root to mount a loop device"
[ -e /dev/loop-control ] || skip "no loop devices"

M=$T/mnt
mkdir -p "$M"
truncate -s 2G "$T/xfs.img"
mkfs.xfs -q -m reflink=1 "$T/xfs.img" || skip "mkfs.xfs -m reflink=1 failed"
mount -o loop "$T/xfs.img" "$M" || skip "cannot mount a loop device here"
trap 'umount "$M" 2>/dev/null || umount -l "$M"; rm -rf "$T"' EXIT

# The conversions with zero detection and with -S 0, which take
# copy_file_range (reflinks) here; --no-copy-range goes through memory on
# any file system, as test-zero-copy checks on the temp dir's.
ZERO_COPY_DIR=$M ZERO_COPY_MODES="default -S0" bash "$(dirname "$0")/test-zero-copy.sh" ||
    fail "zero-copy tests on XFS"

# 32 MiB of random data then 32 MiB of holes.
head -c 32M /dev/urandom >"$M/a.raw"
truncate -s 64M "$M/a.raw"
shared_kib() {  # FILE: KiB in extents filefrag calls shared
    filefrag -v -b1024 "$1" | awk '/shared/ { n += $6 } END { print n + 0 }'
}
check_shared() {  # LABEL FILE MIN_KIB
    local kib
    kib=$(shared_kib "$2")
    [ "$kib" -ge "$3" ] || fail "$1: only $kib KiB of the output shares extents (want >= $3)"
    echo "$1: $kib KiB shared"
}
"$VDCONVERT" -O raw "$M/a.raw" "$M/b.raw"
check_shared "raw -> raw" "$M/b.raw" 32768
"$VDCONVERT" -O qcow2 "$M/a.raw" "$M/b.qcow2"
check_shared "raw -> qcow2" "$M/b.qcow2" 32768
qemu-img compare -q "$M/a.raw" "$M/b.qcow2" || fail "raw -> qcow2: content differs"
"$VDCONVERT" -O vdi "$M/a.raw" "$M/b.vdi"
check_shared "raw -> vdi" "$M/b.vdi" 32768
qemu-img compare -q "$M/a.raw" "$M/b.vdi" || fail "raw -> vdi: content differs"
"$VDCONVERT" -O vpc "$M/a.raw" "$M/b.vhd"
check_shared "raw -> vhd" "$M/b.vhd" 32768
qemu-img compare -q "$M/a.raw" "$M/b.vhd" || fail "raw -> vhd: content differs"
rm -f "$M/c.raw"
"$VDCONVERT" -O raw "$M/b.qcow2" "$M/c.raw"
check_shared "qcow2 -> raw" "$M/c.raw" 32768
cmp -s "$M/a.raw" "$M/c.raw" || fail "qcow2 -> raw: content differs"

# Zeroes inside clusters that hold data: 4 MiB of random data with 4 KiB
# of zeroes in the middle of every 64 KiB.  Those clusters are allocated
# whole anyway, so each is sent whole (the zeroes with it) and shared; a
# zero test that cut the runs at each zero piece wrote them through memory.
python3 - "$M/z.raw" <<'EOF'
import os, sys
with open(sys.argv[1], "wb") as f:
    for i in range(64):
        f.write(os.urandom(32768) + bytes(4096) + os.urandom(28672))
EOF
for fmt in qcow2 vdi; do
    "$VDCONVERT" -f raw -O $fmt "$M/z.raw" "$M/z.$fmt"
    check_shared "raw -> $fmt, zero pieces in data clusters" "$M/z.$fmt" 4096
    qemu-img compare -q -f raw "$M/z.raw" "$M/z.$fmt" || fail "raw -> $fmt, zero pieces: content differs"
done

# The control: through user space nothing is shared.
"$VDCONVERT" --no-copy-range -O qcow2 "$M/a.raw" "$M/d.qcow2"
[ "$(shared_kib "$M/d.qcow2")" = 0 ] || fail "--no-copy-range output shares extents"
echo "--no-copy-range: nothing shared"
echo "zero-copy reflink tests passed"
