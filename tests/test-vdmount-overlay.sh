#!/bin/bash
# vdmount --overlay: writes land in a temporary qcow2 layer over the image,
# are visible through the mount, and vanish at unmount: the image stays
# byte-identical (sha256 before and after) for raw and every format libvdisk
# reads, and no layer is left in TMPDIR.  --keep-overlay FILE keeps the layer:
# qemu-img sees the image as its backing file and reads the writes through it,
# and vdconvert commit writes them into the image.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdmount-lib.sh"
requires_cmd qemu-img mke2fs debugfs sfdisk python3
requires_fuse

make_rootfs "$T/root"
rm -f "$T/root/big/sparse"
# 16 MiB (a 32 MiB disk): every format's image is converted and hashed
# before and after, so its size was most of the test's CPU
VM_FS_SIZE=16M make_ext4 "$T/fs.img" "$T/root"
make_mbr_disk "$T/disk.raw" "$T/fs.img"
# the scribbles' place: p1's last 16 blocks, which the file system keeps free
SCRIB=$(($(stat -c %s "$T/fs.img") / 4096 - 16))
[ "$(debugfs -R "testb $SCRIB 16" "$T/fs.img" 2>/dev/null | grep -c 'not in use')" = 16 ] ||
    fail "blocks $SCRIB-$((SCRIB + 15)) of the file system are in use"
head -c 65536 /dev/urandom > "$T/pattern"
mkdir -p "$T/tmp"
export TMPDIR="$T/tmp"

if ! vm_try_mount "$T/disk.raw" "$T/mnt" --overlay; then
    grep -q "needs the qcow2 driver" "$T/vdmount.err" && skip "no qcow2 driver in libvdisk"
    fail "--overlay: $(cat "$T/vdmount.err")"
fi
vm_umount "$T/mnt"

scribble() {
    local m=$1 what=$2
    # at the end of p1, where the file system keeps nothing
    dd if="$T/pattern" of="$m/p1" bs=4096 seek=$SCRIB conv=notrunc status=none || fail "$what: write p1"
    dd if="$T/pattern" of="$m/disk" bs=512 seek=7 count=9 conv=notrunc status=none ||
        fail "$what: write disk"
    cmp -s <(dd if="$m/p1" bs=4096 skip=$SCRIB count=16 status=none) "$T/pattern" ||
        fail "$what: writes not visible through the mount"
    [ "$(cat "$m/fs/p1/etc/hostname")" = vdmount-guest ] || fail "$what: file tree under an overlay"
}

for f in raw $(vm_readable_formats "$T/disk.raw"); do
    img="$T/ov.$f"
    if [ "$f" = raw ]; then cp "$T/disk.raw" "$img"; else qemu-img convert -f raw -O "$f" "$T/disk.raw" "$img"; fi
    before=$(sha_of "$img")
    vm_mount "$img" "$T/mnt" --overlay
    scribble "$T/mnt" "$f"
    vm_umount "$T/mnt"
    [ "$(sha_of "$img")" = "$before" ] || fail "$f: image changed under --overlay"
    [ -z "$(ls -A "$T/tmp")" ] || fail "$f: overlay left behind: $(ls -A "$T/tmp")"
    echo "ok $f"
done

# --keep-overlay: the layer stays, with the image as its backing file
before=$(sha_of "$T/disk.raw")
vm_mount "$T/disk.raw" "$T/mnt" --keep-overlay "$T/kept.qcow2"
scribble "$T/mnt" keep
vm_umount "$T/mnt"
[ "$(sha_of "$T/disk.raw")" = "$before" ] || fail "image changed under --keep-overlay"
qemu-img info --output=json "$T/kept.qcow2" > "$T/info.json"
python3 - "$T/info.json" "$T/disk.raw" <<'PY' || fail "kept overlay: $(cat "$T/info.json")"
import json, os, sys
i = json.load(open(sys.argv[1]))
assert i["format"] == "qcow2", i["format"]
assert os.path.realpath(i["full-backing-filename"]) == os.path.realpath(sys.argv[2]), i
PY
qemu-img check "$T/kept.qcow2" >/dev/null || fail "qemu-img check of the kept overlay"
python3 - "$T/disk.raw" "$T/pattern" "$T/want.raw" "$SCRIB" <<'PY'
import shutil, sys
shutil.copyfile(sys.argv[1], sys.argv[3])
pat = open(sys.argv[2], "rb").read()
with open(sys.argv[3], "r+b") as f:
    f.seek((1 << 20) + int(sys.argv[4]) * 4096); f.write(pat)
    f.seek(7 * 512); f.write(pat[:9 * 512])
PY
[ "$(raw_sha "$T/kept.qcow2" qcow2)" = "$(sha_of "$T/want.raw")" ] ||
    fail "qemu-img does not read the writes through the kept overlay"
if "$VDMOUNT" --keep-overlay "$T/kept.qcow2" "$T/disk.raw" "$T/mnt" 2>"$T/err"; then
    fail "--keep-overlay over an existing file accepted"
fi
grep -q "kept.qcow2" "$T/err" || fail "existing overlay: $(cat "$T/err")"
# ... and its writes go into the image with vdconvert commit (vd_copy of the
# layer's own clusters), with no --allow-host-paths: the layer names the
# image relatively.  The layer is emptied and still shows the same disk.
"$VDCONVERT" commit "$T/kept.qcow2" >"$T/commit.out" 2>&1 || fail "commit: $(cat "$T/commit.out")"
[ "$(sha_of "$T/disk.raw")" = "$(sha_of "$T/want.raw")" ] ||
    fail "vdconvert commit of the kept overlay did not write its changes into the image"
qemu-img compare -q "$T/kept.qcow2" "$T/want.raw" || fail "kept overlay after commit"
qemu-img map --output=json "$T/kept.qcow2" | matches '"depth": 0, "present": true' &&
    fail "the kept overlay holds data after commit: $(qemu-img map "$T/kept.qcow2")"
# the image's own backing references stay confined to its folder under
# --overlay too, unless --allow-host-paths
mkdir -p "$T/vm"
qemu-img create -q -f qcow2 -b ../disk.raw -F raw "$T/vm/top.qcow2"
if "$VDMOUNT" --overlay "$T/vm/top.qcow2" "$T/mnt" 2>"$T/err"; then
    fusermount3 -u "$T/mnt"; fail "--overlay followed ../disk.raw without --allow-host-paths"
fi
grep -q "disk.raw" "$T/err" || fail "confinement message: $(cat "$T/err")"
vm_mount "$T/vm/top.qcow2" "$T/mnt" --overlay --allow-host-paths
[ "$(cat "$T/mnt/fs/p1/etc/hostname")" = vdmount-guest ] || fail "overlay over a chain"
vm_umount "$T/mnt"
echo "ok"
