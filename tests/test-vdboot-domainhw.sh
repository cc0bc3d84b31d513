#!/bin/bash
# vdboot --domain attaches the domain's NICs, CD-ROMs and further disks
# under qemu: a domain with an e1000 <interface>, an ide <disk
# device='cdrom'> (an ISO made by genisoimage, beside the domain, given by a
# relative path with a comma) and a second virtio disk (qcow2, 8 MiB, served
# through vdisk on its own NBD socket) boots the project's Debian guest through SeaBIOS and its GRUB
# (--accel auto: qemu, because the built-in VMM has no NIC or CD-ROM).  The
# guest's initramfs has no e1000 or sr_mod, so the check is what the guest's
# kernel enumerates: PCI device 8086:100e (e1000) and a SCSI device of type 5
# (CD-ROM, found by ata_piix on the secondary channel), a virtio disk of
# 16384 sectors (virtio_blk is in the initramfs), plus the qemu command
# line that -v prints.  --nic's own checks and hostile domains need no boot.
# One boot of about 15-30 s.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd qemu-system-x86_64 python3 apt-get dpkg-deb depmod cpio sfdisk genisoimage
[ -f /usr/lib/grub/i386-pc/boot.img ] || skip "grub-pc-bin not installed"
[ -f /usr/share/seabios/bios-256k.bin ] || [ -f /usr/share/qemu/bios-256k.bin ] || skip "seabios not installed"
[ -x "$VDBOOT" ] || skip "vdboot not built"

# --- refusals: one line, exit 3, no boot
refused() {  # refused WORDS ARGS...
    local w=$1 rc=0; shift
    "$VDBOOT" "$@" >"$T/r.out" 2>&1 || rc=$?
    [ $rc = 3 ] && [ "$(wc -l <"$T/r.out")" = 1 ] && grep -q -- "$w" "$T/r.out" ||
        { cat "$T/r.out"; fail "refusal ($w): exit $rc"; }
}
touch "$T/x.raw"
refused "--nic 'ne2k_pci': want none, user, virtio-net-pci" --nic ne2k_pci "$T/x.raw"
dom() {  # dom DEVICES-XML: a domain with a disk x.raw and these devices
    printf "<domain>\n<devices><disk device='disk'><source file='x.raw'/><target bus='virtio'/></disk>\n%s\n</devices></domain>\n" "$1" >"$T/h.xml"
}
dom "<interface type='network'><model type='ne2k_isa'/></interface>"
refused "h.xml: line 3: <model type='ne2k_isa'>: vdboot attaches virtio, e1000" --domain "$T/h.xml"
dom "<disk device='cdrom'><source file='missing.iso'/><target bus='ide'/></disk>"
refused "h.xml: line 3: CD-ROM <source file='$T/missing.iso'>: No such file" --domain "$T/h.xml"
dom "<disk device='cdrom'><source file='x.raw'/><target bus='virtio'/></disk>"
refused "<target bus='virtio'> of a CD-ROM" --domain "$T/h.xml"
dom "<disk device='disk'><source file='y.raw'/><driver type='qcow9'/><target bus='sata'/></disk>"
refused "line 3: <driver type='qcow9'>: not a format vdisk reads" --domain "$T/h.xml"
dom ""
refused "no --nic" --domain "$T/h.xml" --nic user

# --- the boot: e1000 + an ide CD-ROM
G=$(guest_dir)
cp --sparse=always "$G/guest.raw" "$T/guest.raw"
mkdir -p "$T/iso" && echo hello >"$T/iso/hello.txt"
genisoimage -quiet -V VDCD -o "$T/a,b.iso" "$T/iso"
truncate -s 8M "$T/data.raw"
"$VDCONVERT" convert -q -O qcow2 "$T/data.raw" "$T/data.qcow2"   # 16384 sectors
cat >"$T/vm.xml" <<'XML'
<domain type='kvm'>
  <name>hw</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='guest.raw'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
      <source file='a,b.iso'/><target dev='hdc' bus='ide'/><readonly/></disk>
    <interface type='network'><source network='default'/><model type='e1000'/></interface>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='data.qcow2'/><target dev='vdb' bus='virtio'/></disk>
  </devices>
</domain>
XML
rc=0
"$VDBOOT" -v --domain "$T/vm.xml" --timeout 150 --json --console "$T/hw.con" \
    --run 'cat /sys/bus/pci/devices/*/vendor /sys/bus/pci/devices/*/device /sys/bus/scsi/devices/*/type /sys/block/vd*/size' \
    >"$T/hw.json" 2>"$T/hw.err" || rc=$?
[ $rc = 0 ] || { cat "$T/hw.json" "$T/hw.err"; tail -n 20 "$T/hw.con"; fail "boot with e1000 + cdrom: exit $rc"; }
grep -q -- "^vdboot: qemu: .* -drive file=nbd+unix:///?socket=[^ ]*,format=raw,if=none,id=x0,cache=unsafe -device virtio-blk-pci,drive=x0 -nic user,model=e1000 -drive if=none,id=cd0,media=cdrom,readonly=on,format=raw,file.driver=file,file.filename=$T/a,,b.iso -device ide-cd,drive=cd0,bus=ide.1,unit=0" "$T/hw.err" ||
    { cat "$T/hw.err"; fail "qemu command line lacks the NIC or CD-ROM"; }
python3 - "$T/hw.json" <<'PY' || fail "the guest does not see the NIC or the CD-ROM"
import json, sys
j = json.loads(open(sys.argv[1]).read())
assert j["outcome"] == "login" and j["firmware"] == "bios", j
assert j["accelerator"] == "tcg", j
assert j["accelerator_reason"] == "the domain's <interface>: the built-in VMM has no network card", j
out = j["run"]["output"].split()
assert "0x100e" in out, out       # e1000 (8086:100e)
assert "5" in out, out            # a SCSI device of type 5: the ATAPI CD-ROM
assert "16384" in out, out        # the second disk, data.qcow2 (8 MiB) through vdisk
print("login in %.1f s; guest sees e1000, a CD-ROM and the second disk" % j["seconds"])
PY
# every bus for CD-ROMs and further disks, each group on its own
# controllers: qemu must take the command line (cut after 3 s: a timeout,
# not qemu's refusal)
cat >"$T/bus.xml" <<'XML'
<domain><devices>
  <disk device='disk'><source file='guest.raw'/><target bus='sata'/></disk>
  <disk device='cdrom'><source file='a,b.iso'/><target bus='sata'/></disk>
  <disk device='cdrom'><source file='a,b.iso'/><target bus='scsi'/></disk>
  <disk device='cdrom'><source file='a,b.iso'/><target bus='ide'/></disk>
  <disk device='cdrom'><target bus='ide'/></disk>
  <disk device='disk'><source file='data.qcow2'/><target bus='scsi'/></disk>
  <disk device='disk'><source file='data.qcow2'/><target bus='sata'/></disk>
  <disk device='disk'><source file='data.qcow2'/><target bus='ide'/></disk>
  <disk device='disk'><source file='data.qcow2'/><target bus='scsi'/></disk>
</devices></domain>
XML
rc=0; "$VDBOOT" -v --json --accel tcg --timeout 3 --domain "$T/bus.xml" >"$T/bus.json" 2>"$T/bus.err" || rc=$?
x="-drive file=nbd+unix:///?socket=[^ ]*,format=raw,if=none"
c="-drive if=none,id=cd[0-3],media=cdrom,readonly=on"
grep -q -- "^vdboot: qemu: .* -device ahci,id=ahci0 -device ide-hd,drive=d0,bus=ahci0.0,bootindex=0 .*\
$x,id=x0,cache=unsafe -device virtio-scsi-pci,id=xscsi -device scsi-hd,drive=x0,bus=xscsi.0,scsi-id=0 \
$x,id=x1,cache=unsafe -device ahci,id=xahci -device ide-hd,drive=x1,bus=xahci.1 \
$x,id=x2,cache=unsafe -device ide-hd,drive=x2,bus=ide.0,unit=0 \
$x,id=x3,cache=unsafe -device scsi-hd,drive=x3,bus=xscsi.0,scsi-id=3 -nic none \
$c[^ ]* -device ahci,id=cdahci -device ide-cd,drive=cd0,bus=cdahci.0 \
$c[^ ]* -device virtio-scsi-pci,id=cdscsi -device scsi-cd,drive=cd1,bus=cdscsi.0,scsi-id=1 \
$c[^ ]* -device ide-cd,drive=cd2,bus=ide.1,unit=0 $c -device ide-cd,drive=cd3,bus=ide.1,unit=1$" "$T/bus.err" &&
    grep -q '"outcome": *"timeout"' "$T/bus.json" ||
    { cat "$T/bus.json" "$T/bus.err"; fail "CD-ROMs and disks on every bus: exit $rc"; }
# --nic: the qemu command line (the boot is cut after 2 s), and the built-in
# VMM refuses it (--accel kvm) before any boot, /dev/kvm or not
"$VDBOOT" -v --accel tcg --nic virtio-net-pci --timeout 2 "$T/guest.raw" >/dev/null 2>"$T/nic.err" || true
grep -q -- "^vdboot: qemu: .* -nic user,model=virtio-net-pci$" "$T/nic.err" || { cat "$T/nic.err"; fail "--nic virtio-net-pci"; }
"$VDBOOT" -v --accel tcg --timeout 2 "$T/guest.raw" >/dev/null 2>"$T/nonic.err" || true
grep -q -- "^vdboot: qemu: .* -nic none$" "$T/nonic.err" || { cat "$T/nonic.err"; fail "no --nic: want -nic none"; }
rc=0; "$VDBOOT" --accel kvm --nic user "$T/guest.raw" >"$T/kvm.out" 2>&1 || rc=$?
[ $rc = 3 ] && grep -q -- "--nic: the built-in VMM has no network card; use --accel tcg" "$T/kvm.out" ||
    { cat "$T/kvm.out"; fail "--accel kvm --nic user: exit $rc"; }
echo ok
