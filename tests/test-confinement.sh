#!/bin/bash
# References are opened beneath the image's folder (openat2 RESOLVE_BENEATH):
# a symlink out of the folder is refused for a qcow2 backing file, a VMDK
# extent and a VHD parent locator, and followed with --allow-host-paths;
# an absolute reference, or a symlink with an absolute target, that
# resolves inside the folder is accepted (one that leaves it refused); a
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
# symlinks with absolute targets (openat2 refuses them all; they are
# walked by hand): inside the folder accepted, out of it refused - for a
# qcow2 backing file, a VMDK extent and a VHD parent locator
ln -s "$T/in/base.qcow2" in/abs-in.qcow2
ln -s "$T/in/base.vhd" in/abs-in.vhd
cp src.raw in/data.raw; ln -s "$T/in/data.raw" in/abs-in.raw
ln -s "$T/out/secret.raw" in/abs-out.raw
"$V" convert -f raw -O vhd src.raw out/only-out.vhd   # (no file of its name inside)
ln -s "$T/out/only-out.vhd" in/abs-out.vhd
ln -s "$T/in/outside/secret.raw" in/abs-via.raw    # in, then out by a link
qemu-img create -q -f qcow2 -b abs-in.qcow2 -F qcow2 in/l1.qcow2
"$V" compare in/l1.qcow2 src.raw >/dev/null || fail "qcow2: absolute in-folder symlink refused"
"$V" convert -f raw -O vhd -B abs-in.vhd src.raw in/l2.vhd
"$V" compare in/l2.vhd src.raw >/dev/null || fail "vhd: absolute in-folder symlink refused"
vmdk_flat() {  # FILE EXTENT
    printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\nRW 8192 FLAT "%s" 0\n\nddb.adapterType = "ide"\n' "$2" >"$1"
}
vmdk_flat in/l3.vmdk abs-in.raw
"$V" compare in/l3.vmdk src.raw >/dev/null || fail "vmdk: absolute in-folder symlink refused"
for ext in abs-out.raw abs-via.raw; do
    qemu-img create -q -f qcow2 -b $ext -F raw in/x-$ext.qcow2
    refused in/x-$ext.qcow2 $ext
    vmdk_flat in/x-$ext.vmdk $ext
    refused in/x-$ext.vmdk $ext
done
"$V" convert -f raw -O vhd --allow-host-paths -B abs-out.vhd src.raw in/x.vhd
refused in/x.vhd abs-out.vhd
# a relative link out, and an absolute name that goes out through one
qemu-img create -q -f qcow2 -b "$T/in/outside/secret.raw" -F raw in/x-name.qcow2
refused in/x-name.qcow2 "$T/in/outside/secret.raw"

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
"$V" info in/ov.qcow2 | matches "^backing file: base.qcow2" ||
    fail "overlay backing name: $("$V" info in/ov.qcow2 | grep backing)"
"$V" convert -O raw in/ov.qcow2 ov.raw || fail "kept overlay does not open"
[ "$(dd if=ov.raw bs=1 skip=4096 count=7 status=none)" = overlay ] ||
    fail "kept overlay: content"
echo "confinement: ok"
