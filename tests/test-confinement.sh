#!/bin/bash
# References are opened beneath the image's folder (openat2 RESOLVE_BENEATH):
# a symlink out of the folder is refused for a qcow2 backing file, a VMDK
# extent and a VHD parent locator, and followed with --allow-host-paths;
# an absolute reference that resolves inside the folder is accepted; a
# `vdmount --keep-overlay` overlay opens without --allow-host-paths.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdmount-lib.sh"
requires_cmd qemu-img qemu-io
requires_fuse
V=$VDCONVERT
cd "$T"
mkdir -p in out
ln -s ../out in/outside
qemu-img create -q -f raw src.raw 4M
qemu-io -f raw -c "write -P 0x5a 0 1M" src.raw >/dev/null
cp src.raw out/secret.raw

# refused IMG: one line naming IMG and the reference; exit 1.
refused() {
    if "$V" info "$1" >log 2>&1; then fail "$1: a reference out of the folder was followed"; fi
    grep -q "^vdconvert: $1: reference to '$2' leaves the image's folder" log ||
        fail "$1: unexpected message: $(cat log)"
}
# qcow2 backing file through the symlink
qemu-img create -q -f qcow2 -b outside/secret.raw -F raw in/q.qcow2
refused in/q.qcow2 outside/secret.raw
"$V" convert --allow-host-paths -O raw in/q.qcow2 q.raw || fail "qcow2: --allow-host-paths"
cmp -s q.raw src.raw || fail "qcow2: content through --allow-host-paths"
# a magic link is no way out either
qemu-img create -q -f qcow2 -b /proc/self/root/etc/passwd -F raw in/magic.qcow2
"$V" info in/magic.qcow2 >log 2>&1 && fail "magic link followed"

# VMDK extent through the symlink
cat > in/v.vmdk <<EOF
# Disk DescriptorFile
version=1
CID=fffffffe
parentCID=ffffffff
createType="monolithicFlat"

RW 8192 FLAT "outside/secret.raw" 0

ddb.adapterType = "ide"
EOF
refused in/v.vmdk outside/secret.raw
"$V" convert --allow-host-paths -O raw in/v.vmdk v.raw || fail "vmdk: --allow-host-paths"
cmp -s v.raw src.raw || fail "vmdk: content through --allow-host-paths"

# VHD parent locator through the symlink
"$V" convert -f raw -O vhd src.raw out/base.vhd
"$V" convert -f raw -O vhd --allow-host-paths -B outside/base.vhd src.raw in/child.vhd
refused in/child.vhd outside/base.vhd
"$V" info --allow-host-paths in/child.vhd >/dev/null || fail "vhd: --allow-host-paths"

# absolute references that resolve inside the folder: accepted
"$V" convert -f raw -O qcow2 src.raw in/base.qcow2
qemu-img create -q -f qcow2 -b "$T/in/base.qcow2" -F qcow2 in/abs.qcow2
ln -s in in-link
qemu-img create -q -f qcow2 -b "$T/in-link/base.qcow2" -F qcow2 in/abs2.qcow2
for img in in/abs.qcow2 in/abs2.qcow2; do
    "$V" compare "$img" src.raw >/dev/null || fail "$img: absolute in-folder backing"
done
cp out/base.vhd in/base.vhd
"$V" convert -f raw -O vhd -B "$T/in/base.vhd" src.raw in/c2.vhd
"$V" compare in/c2.vhd src.raw >/dev/null || fail "vhd: absolute in-folder parent"
# ... and ".." that stays inside
mkdir in/sub
qemu-img create -q -f qcow2 -b sub/../base.qcow2 -F qcow2 in/dotdot.qcow2
"$V" info in/dotdot.qcow2 >/dev/null || fail "sub/../base.qcow2 refused"
qemu-img create -q -f qcow2 -b ../base.qcow2 -F qcow2 in/sub/up.qcow2
refused in/sub/up.qcow2 ../base.qcow2

# vdmount --keep-overlay: the overlay names its image relatively and opens
# with vdconvert as it is
vm_mount in/base.qcow2 mnt --keep-overlay in/ov.qcow2
printf 'overlay' | dd of=mnt/disk bs=1 seek=4096 conv=notrunc status=none
vm_umount mnt
"$V" info in/ov.qcow2 | grep -q "^backing file: base.qcow2" ||
    fail "overlay backing name: $("$V" info in/ov.qcow2 | grep backing)"
"$V" convert -O raw in/ov.qcow2 ov.raw || fail "kept overlay does not open"
[ "$(dd if=ov.raw bs=1 skip=4096 count=7 status=none)" = overlay ] ||
    fail "kept overlay: content"
echo "confinement: ok"
