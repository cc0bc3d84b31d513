#!/bin/bash
# vdmount's `disk` under parallel random I/O: fio runs 4 writer jobs (16 KiB
# random writes, each its own 8 MiB region, every block written once, crc32c
# verify headers checked while writing) and 2 reader jobs on the rest of the
# disk at the same time, through the FUSE mount of a qcow2 image (--rw), of a
# vhdx image (--rw) and of a qcow2 image with a backing file (--overlay).
# Afterwards the image is unmounted and what fio wrote is verified again
# from the image itself: qemu-img converts it to raw and fio --verify_only
# replays the same jobs over that file.  qemu-img check must be clean.
# In the `threads` suite, so test.sh also runs it with vdmount under TSan.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdmount-lib.sh"
requires_cmd qemu-img qemu-io fio
requires_fuse

SIZE=64M
# fio_writers FILE [fio args]: the writer jobs (regions 0-32 MiB).  Replayed
# with --verify_only they read every block back and check its crc32c
# header (without --verify_backlog, which makes verify_only skip blocks).
fio_writers() {
    local f=$1; shift
    fio --name=w --filename="$f" --rw=randwrite --bs=16k --size=8M --numjobs=4 \
        --offset_increment=8M --ioengine=psync --verify=crc32c \
        --randrepeat=1 --randseed=4242 --verify_state_save=0 --group_reporting "$@"
}

# check_image IMG FMT WHAT: verify fio's data from the image and check it
check_image() {
    local img=$1 fmt=$2 what=$3
    qemu-img convert -f "$fmt" -O raw "$img" "$T/check.raw" || fail "$what: qemu-img cannot read the image"
    fio_writers "$T/check.raw" --verify_only >"$T/verify.out" 2>&1 ||
        { head -20 "$T/verify.out"; fail "$what: data fio wrote through the mount is not in the image"; }
    if [ "$fmt" != raw ]; then
        qemu-img check -f "$fmt" "$img" >"$T/qcheck" 2>&1 || { cat "$T/qcheck"; fail "$what: qemu-img check"; }
    fi
    # the reader region (32-64 MiB) still holds what was there before
    cmp -s <(tail -c 32M "$T/check.raw") <(tail -c 32M "$T/before.raw") ||
        fail "$what: the region only read by fio changed"
}

run_fio() {   # run_fio MNT WHAT
    local m=$1 what=$2
    # readers on the untouched half while the writers run
    fio --name=r --filename="$m/disk" --rw=randread --bs=4k --size=16M --numjobs=2 \
        --offset=32M --offset_increment=16M --ioengine=psync --time_based --runtime=3 \
        >"$T/readers.out" 2>&1 &
    local rpid=$!
    fio_writers "$m/disk" --verify_backlog=16 --output-format=json --output="$T/writers.json" \
        >"$T/writers.out" 2>&1 ||
        { head -20 "$T/writers.out"; fail "$what: fio writers (verify while writing) failed"; }
    wait $rpid || { head -20 "$T/readers.out"; fail "$what: fio readers failed"; }
    python3 - "$T/writers.json" "$what" <<'PY' || fail "$what: fio wrote less than 32 MiB"
import json, sys
t = open(sys.argv[1]).read()       # fio may print a warning line first
j = json.loads(t[t.index("{"):])["jobs"][0]
kib, verified = j["write"]["io_kbytes"], j["read"]["io_kbytes"]
print(f"{sys.argv[2]}: fio wrote {kib} KiB (verified {verified} KiB while writing), 4 writers + 2 readers")
assert kib == 32768, kib
PY
}

# the starting content: random data in the reader half, holes elsewhere
qemu-img create -q -f raw "$T/before.raw" $SIZE
qemu-io -f raw -c "write -P 0x3c 32M 8M" -c "write -P 0xc3 48M 4M" "$T/before.raw" >/dev/null

for fmt in qcow2 vhdx; do
    img=$T/disk.$fmt
    qemu-img convert -f raw -O $fmt "$T/before.raw" "$img"
    vm_mount "$img" "$T/mnt" --rw
    run_fio "$T/mnt" "$fmt --rw"
    vm_umount "$T/mnt"
    check_image "$img" $fmt "$fmt --rw"
done

# --overlay: writes land in the throw-away layer, visible while mounted,
# and the image (an overlay itself, on a raw backing file) is unchanged
qemu-img convert -f raw -O raw "$T/before.raw" "$T/base.raw"
qemu-img create -q -f qcow2 -b base.raw -F raw "$T/top.qcow2"
sha=$(sha_of "$T/top.qcow2"); bsha=$(sha_of "$T/base.raw")
vm_mount "$T/top.qcow2" "$T/mnt" --overlay
run_fio "$T/mnt" "qcow2 --overlay"
# verify through the mount itself before it goes away
fio_writers "$T/mnt/disk" --verify_only >"$T/verify.out" 2>&1 ||
    { head -20 "$T/verify.out"; fail "overlay: fio data does not read back through the mount"; }
vm_umount "$T/mnt"
[ "$(sha_of "$T/top.qcow2")" = "$sha" ] && [ "$(sha_of "$T/base.raw")" = "$bsha" ] ||
    fail "overlay: the image or its backing file changed"
echo ok
