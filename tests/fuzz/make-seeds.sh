#!/bin/bash
# make-seeds.sh OUTDIR - seed corpora for the fuzz targets: small images of
# every format qemu-img writes, with data, zero ranges and (where the format
# has them) compressed clusters, backing references and snapshots; one folder
# per format (OUTDIR/qcow2/, OUTDIR/qed/, ...), named as the fuzz-open-FMT
# targets are.  Files stay small (tiny clusters, 1-4 MiB disks) because
# libFuzzer mutates whole inputs.
set -euo pipefail
out=$1
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "make-seeds: qemu-img/qemu-io needed (apt-get install qemu-utils)" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$out"
# A backing file outside the seed folders (images name it as ../base.raw).
qemu-img create -q -f raw base.raw 1048576
mk() {  # mk FMT NAME SIZE-IN-BYTES [create options...]: create, write a pattern
    local fmt=$1 name=$2 size=$3; shift 3
    mkdir -p "$fmt"
    qemu-img create -q -f "$fmt" "$@" "$fmt/$name" "$size"
    qemu-io -f "$fmt" -c "write -P 0x5a 0 4k" -c "write -P 0xa5 $((size / 2)) 8k" \
        -c "write -z 64k 4k" "$fmt/$name" >/dev/null 2>&1 || true
}
mk qcow2 c512.qcow2 1048576 -o cluster_size=512
mk qcow2 v2.qcow2 1048576 -o cluster_size=512,compat=0.10
mk qcow2 ext.qcow2 1048576 -o cluster_size=16384,extended_l2=on
mk qcow2 back.qcow2 1048576 -o cluster_size=512,backing_file=../base.raw,backing_fmt=raw
qemu-img snapshot -c snap1 qcow2/c512.qcow2
qemu-img convert -c -O qcow2 -o cluster_size=512 qcow2/v2.qcow2 qcow2/z.qcow2
mk qed c4k.qed 1048576 -o cluster_size=4096,table_size=2
mk qed back.qed 1048576 -o cluster_size=4096,table_size=2,backing_file=../base.raw,backing_fmt=raw
mk qcow a.qcow 1048576
qemu-img convert -c -O qcow qcow/a.qcow qcow/z.qcow 2>/dev/null || true
mk vdi dyn.vdi 1048576
mk vdi static.vdi 262144 -o static=on
mk vmdk sparse.vmdk 1048576
mk vmdk stream.vmdk 1048576 -o subformat=streamOptimized
mk vpc dyn.vhd 1048576
mk vpc fixed.vhd 262144 -o subformat=fixed
mk vhdx dyn.vhdx 1048576 -o block_size=1M
mk parallels a.hds 1048576 -o cluster_size=4096
mv vpc vhd
# fuzz-vhdx-compact: the 16 KiB metadata pieces of qemu's VHDX (offsets as in
# fuzz-open.c), for a 1 MiB-block image with data and one with 32 MiB blocks.
mk vhdx big.vhdx 67108864
mkdir -p fuzz-vhdx-compact
for v in vhdx/dyn.vhdx vhdx/big.vhdx; do
    python3 - "$v" "fuzz-vhdx-compact/$(basename "$v" .vhdx).bin" <<'PY'
import sys
src = open(sys.argv[1], 'rb').read()
at = [0, 64 << 10, 128 << 10, 192 << 10, 256 << 10, 1 << 20, 2 << 20, 3 << 20,
      (3 << 20) + (64 << 10), 8 << 20]
out = b''.join(src[a:a + 16384].ljust(16384, b'\0') for a in at)
open(sys.argv[2], 'wb').write(out.rstrip(b'\0'))
PY
done
rm -f vhdx/big.vhdx

# Parser targets (folders named as the targets).  Partition tables: small
# raw disks partitioned by sfdisk (MBR with an extended chain, GPT).
if command -v sfdisk >/dev/null; then
    mkdir -p fuzz-partition
    truncate -s 96K fuzz-partition/mbr.raw fuzz-partition/gpt.raw
    printf 'start=8, size=40, type=83, bootable\nstart=48, size=120, type=5\nstart=56, size=40, type=83\nstart=104, size=40, type=82\n' |
        sfdisk -q fuzz-partition/mbr.raw >/dev/null 2>&1 || true
    printf 'label: gpt\nfirst-lba: 34\nstart=40, size=40, name=root\nstart=80, size=48, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\n' |
        sfdisk -q fuzz-partition/gpt.raw >/dev/null 2>&1 || true
fi
# Boot configs: the first byte picks the parser (0 grub, 1 extlinux, 2 BLS).
mkdir -p fuzz-bootcfg
{ printf '\0'; cat <<'CFG'
set default="1>0"
menuentry 'Debian' --class debian { linux /boot/vmlinuz-6.1 root=UUID=abc ro quiet $vt_handoff
  initrd /boot/initrd.img-6.1 }
submenu 'Advanced' {
  menuentry "Debian, 6.1 recovery" { linux /boot/vmlinuz-6.1 root=/dev/vda1 ro single
    initrd /boot/initrd.img-6.1
  }
}
CFG
} >fuzz-bootcfg/grub.cfg
{ printf '\1'; printf 'DEFAULT linux\nLABEL rescue\n  KERNEL /vmlinuz.old\nLABEL linux\n  LINUX /boot/vmlinuz\n  INITRD /boot/initrd.img\n  APPEND root=/dev/sda1 console=ttyS0\n'; } >fuzz-bootcfg/extlinux.conf
{ printf '\2'; printf 'title Fedora Linux 39\nversion 6.5.6\nlinux /vmlinuz-6.5.6\ninitrd /initramfs-6.5.6.img\noptions root=UUID=1234 ro rhgb $kernelopts\n'; } >fuzz-bootcfg/bls.conf
# initramfs images: a small newc cpio with module names and a
# modules.builtin, plain, an early + gzip pair, zstd and xz (when the tools
# are there)
mkdir -p fuzz-initramfs
( tmp=$(mktemp -d); mkdir -p "$tmp/lib/modules/6.1/kernel/drivers/block" "$tmp/kernel/x86/microcode"
  : >"$tmp/lib/modules/6.1/kernel/drivers/block/virtio_blk.ko"; : >"$tmp/ahci.ko.zst"
  printf 'kernel/drivers/virtio/virtio_pci.ko\n' >"$tmp/lib/modules/6.1/modules.builtin"
  (cd "$tmp" && find lib ahci.ko.zst | cpio -o -H newc --quiet) >fuzz-initramfs/plain.cpio
  (cd "$tmp" && find kernel | cpio -o -H newc --quiet) >"$tmp/early.cpio"
  cat "$tmp/early.cpio" <(gzip -c fuzz-initramfs/plain.cpio) >fuzz-initramfs/early-gzip
  command -v zstd >/dev/null && zstd -q -c fuzz-initramfs/plain.cpio >fuzz-initramfs/main.zst
  command -v xz >/dev/null && xz -c fuzz-initramfs/plain.cpio >fuzz-initramfs/main.xz
  rm -rf "$tmp" ) || true
# OVF descriptors and manifests: the real ones in ../shared when present, and
# a small one written here; OVAs: a plain, a signed-looking and a gzip one.
mkdir -p fuzz-ovf fuzz-ova
for f in "${VD_SHARED:-$here/../../../shared}"/corpus/ovf/*/*.ovf; do
    [ -f "$f" ] && cp "$f" fuzz-ovf/
done
cat >fuzz-ovf/mini.ovf <<'OVF'
<?xml version="1.0"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
<References><File ovf:href="d1.vmdk" ovf:id="f1" ovf:size="512" ovf:compression="gzip" ovf:chunkSize="100"/><File ovf:href="cd.iso" ovf:id="f2"/></References>
<DiskSection><Disk ovf:capacity="${size}" ovf:diskId="d1" ovf:fileRef="f1" ovf:capacityAllocationUnits="byte * 2^20"/>
<Disk ovf:capacity="1" ovf:diskId="cd" ovf:fileRef="f2" ovf:format="http://www.ecma-international.org/publications/standards/Ecma-119.htm"/></DiskSection>
<DeploymentOptionSection><Configuration ovf:id="big" ovf:default="true"/></DeploymentOptionSection>
<VirtualSystem ovf:id="vm"><Name>vm</Name><ProductSection><Property ovf:key="size" ovf:value="16"/></ProductSection>
<VirtualHardwareSection>
<Item><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
<Item ovf:configuration="big"><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:VirtualQuantity>512</rasd:VirtualQuantity></Item>
<Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>5</rasd:ResourceType></Item>
<Item><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:HostResource>ovf:/disk/d1</rasd:HostResource><rasd:ResourceType>17</rasd:ResourceType></Item>
<Item><rasd:InstanceID>5</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:HostResource>/disk/cd</rasd:HostResource><rasd:ResourceType>15</rasd:ResourceType></Item>
<Item><rasd:InstanceID>6</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType><rasd:ResourceSubType>E1000</rasd:ResourceSubType><rasd:Connection>NAT</rasd:Connection></Item>
</VirtualHardwareSection></VirtualSystem></Envelope>
OVF
printf 'SHA256(mini.ovf)= %s\nSHA1 (d1.vmdk) = %s\r\n' "$(sha256sum fuzz-ovf/mini.ovf | cut -d' ' -f1)" \
    "$(printf x | sha1sum | cut -d' ' -f1)" >fuzz-ovf/mini.mf
( tmp=$(mktemp -d); cp fuzz-ovf/mini.ovf "$tmp/vm.ovf"; printf 'disk' >"$tmp/d1.vmdk"
  cd "$tmp"
  printf 'SHA256(vm.ovf)= %s\nSHA256(d1.vmdk)= %s\n' "$(sha256sum vm.ovf | cut -d' ' -f1)" \
      "$(sha256sum d1.vmdk | cut -d' ' -f1)" >vm.mf
  printf 'SHA256(vm.mf)= 00ff\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n' >vm.cert
  tar --format=ustar -cf "$out/fuzz-ova/plain.ova" vm.ovf d1.vmdk vm.mf
  tar --format=ustar -cf "$out/fuzz-ova/cert.ova" vm.ovf d1.vmdk vm.mf vm.cert
  gzip -c d1.vmdk >d1.vmdk.gz; mv d1.vmdk.gz d1.vmdk
  tar --format=gnu -cf "$out/fuzz-ova/gnu.ova" vm.ovf d1.vmdk
  cd /; rm -rf "$tmp" )
ls -l */ | awk 'NF > 5 { n++; s += $5 } END { printf "make-seeds: %d seeds, %d bytes\n", n, s }'
