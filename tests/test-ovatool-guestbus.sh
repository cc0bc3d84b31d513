#!/bin/bash
# ovatool import chooses the disk bus from what the guest can boot from: the
# project's Debian guest (tests/fixtures/make-guest-image), exported as a
# VirtualBox OVA (SATA/AHCI controller), imported:
#   - as is (virtio_blk + virtio_pci in its gzip initramfs): virtio-blk;
#   - its initramfs rebuilt without virtio and AHCI, as an uncompressed
#     early-microcode cpio + a zstd main cpio: the OVF's SATA kept, with a
#     warning naming virtio_blk and ahci;
#   - that initramfs xz-compressed, virtio_blk/virtio_pci listed in the
#     kernel's /lib/modules/KV/modules.builtin: virtio-blk ("built-in")
#     (a small ext4 file system as the whole disk, as the hostile ones);
#   - hostile initramfs images (a cpio name size of 0xffffffff, truncated
#     gzip, bytes that are neither cpio nor compressed): a note naming the
#     offset, the OVF's bus, exit 0;
#   - --virtio: the option decides.
# --json carries the decision and the reason.  --hypervisor xen writes a
# libvirt Xen domain that virt-xml-validate accepts, as is the KVM one.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd python3 apt-get dpkg-deb depmod cpio sfdisk debugfs mkfs.ext4 zstd xz gzip virt-xml-validate qemu-img
[ -f /usr/lib/grub/i386-pc/boot.img ] || skip "grub-pc-bin not installed"
requires_ovatool
G=$(guest_dir)
kv=$(sed -n 's/^kernel_version=//p' "$G/guest.info")

# debugfs commands (one file) on partition 1 of DISK
fs_cmds() {
    local disk=$1 cmds=$2 fs=$1.fs sectors
    sectors=$(sfdisk -d "$disk" | sed -n 's/.*start= *2048, size= *\([0-9]*\).*/\1/p')
    dd if="$disk" of="$fs" bs=512 skip=2048 count="$sectors" status=none
    debugfs -w -f "$cmds" "$fs" >/dev/null 2>&1
    dd if="$fs" of="$disk" bs=512 seek=2048 conv=notrunc status=none
    rm -f "$fs"
}
# guest_with NAME INITRD: a copy of the guest with that initramfs, exported
# as a VirtualBox OVA NAME.ova
guest_with() {
    local n=$1 ird=$2
    cp --sparse=always "$G/guest.raw" "$T/$n.raw"
    printf 'cd /boot\nrm initrd.img-%s\nwrite %s initrd.img-%s\n' "$kv" "$ird" "$kv" >"$T/$n.cmds"
    fs_cmds "$T/$n.raw" "$T/$n.cmds"
    "$OVA" export -n "$n" --disk "$T/$n.raw" --target virtualbox --os-type debian12_64 \
        -o "$T/$n.ova" >/dev/null
}
imp() {  # imp LABEL NAME [OPTS...]: import NAME.ova into out-LABEL, JSON to LABEL.json
    local l=$1 n=$2 rc=0; shift 2
    "$OVA" import --json "$@" -d "$T/out-$l" "$T/$n.ova" >"$T/$l.json" 2>"$T/$l.err" || rc=$?
    [ $rc = 0 ] || { cat "$T/$l.err"; fail "import $l: exit $rc"; }
}

# --- the initramfs variants
mkdir -p "$T/main" "$T/early/kernel/x86/microcode"
(cd "$T/main" && gzip -dc "$G/initrd.img" | cpio -id --quiet)
rm -f "$T"/main/mods/virtio*.ko "$T"/main/mods/ahci.ko "$T"/main/mods/libahci.ko
[ -f "$T/main/mods/sd_mod.ko" ] || fail "the guest initramfs has no mods/sd_mod.ko"
printf 'microcode, not a module\n' >"$T/early/kernel/x86/microcode/AuthenticAMD.bin"
(cd "$T/early" && find . | sort | cpio -o -H newc -R 0:0 --quiet) >"$T/early.cpio"
(cd "$T/main" && find . | sort | cpio -o -H newc -R 0:0 --quiet) >"$T/main.cpio"
cat "$T/early.cpio" <(zstd -q -c "$T/main.cpio") >"$T/ird-zstd"
cat "$T/early.cpio" <(xz -c "$T/main.cpio") >"$T/ird-xz"
printf 'kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/block/virtio_blk.ko\n' \
    >"$T/builtin"
# hostile: a header with c_namesize ffffffff; truncated gzip; junk after cpio
python3 - "$T" <<'PY'
import sys, gzip
t = sys.argv[1]
hdr = b"070701" + b"00000001" + b"000081a4" + b"0" * 8 * 4 + b"00000010" + b"0" * 8 * 4 + b"ffffffff" + b"0" * 8
open(t + "/ird-bad-name", "wb").write(open(t + "/early.cpio", "rb").read() + hdr + b"x" * 64)
z = gzip.compress(open(t + "/main.cpio", "rb").read())
open(t + "/ird-trunc", "wb").write(z[: len(z) // 2])
open(t + "/ird-junk", "wb").write(open(t + "/early.cpio", "rb").read() + b"\x42" * 4096)
PY

cp --sparse=always "$G/guest.raw" "$T/asis.raw"
"$OVA" export -n asis --disk "$T/asis.raw" --target virtualbox --os-type debian12_64 -o "$T/asis.ova" >/dev/null
guest_with novirtio "$T/ird-zstd"
# the xz one and the hostile ones on small file systems (the whole disk, no
# partition table)
mkdir -p "$T/fs-builtin/lib/modules/$kv"
cp "$T/builtin" "$T/fs-builtin/lib/modules/$kv/modules.builtin"
cp "$T/ird-xz" "$T/ird-builtin"
for n in builtin bad-name trunc junk; do
    mkdir -p "$T/fs-$n/boot"
    cp "$T/ird-$n" "$T/fs-$n/boot/initrd.img-$kv"
    truncate -s 8M "$T/$n.raw"; mkfs.ext4 -q -d "$T/fs-$n" "$T/$n.raw"
    "$OVA" export -n "$n" --disk "$T/$n.raw" --target virtualbox -o "$T/$n.ova" >/dev/null
done
grep -q "<rasd:ResourceType>20</rasd:ResourceType>" <(tar -xOf "$T/asis.ova" asis.ovf) ||
    fail "the VirtualBox export has no SATA controller"

imp asis asis
imp opt-virtio junk --virtio
imp novirtio novirtio --hypervisor xen
imp builtin builtin --hypervisor xen
imp badname bad-name
imp trunc trunc
imp junk junk
# the same JSON key names the text output says
"$OVA" import -d "$T/out-text" "$T/builtin.ova" >"$T/text.out" 2>&1
grep -q '^disk bus: the guest has virtio_blk (built in), virtio_pci (built in)' "$T/text.out" ||
    { cat "$T/text.out"; fail "text output lacks the disk bus line"; }
# the warning names the missing drivers on stderr
grep -q "warning: the guest lacks virtio_blk.*SATA controller, but it has no ahci driver" "$T/novirtio.err" ||
    { cat "$T/novirtio.err"; fail "no warning naming virtio_blk and ahci"; }

python3 - "$T" <<'PY' || fail "bus decisions wrong"
import json, sys
t = sys.argv[1]
j = {n: json.load(open("%s/%s.json" % (t, n))) for n in
     ("asis", "opt-virtio", "novirtio", "builtin", "badname", "trunc", "junk")}
def bus(n):
    return j[n]["disk_bus"]
def xml(n):
    return open(j[n]["domain"]).read()
a = bus("asis")
assert a["mode"] == "virtio-blk" and a["decision"] == "guest-drivers", a
assert a["guest"]["drivers"]["virtio_blk"] == "initramfs" and a["guest"]["drivers"]["ahci"] is None, a
assert "virtio_blk (initramfs)" in a["reason"] and "instead of the OVF's SATA" in a["reason"], a
assert "bus='virtio'" in xml("asis") and "bus='sata'" not in xml("asis")
assert j["asis"]["disks"][0]["bus"] == "virtio"
assert bus("opt-virtio")["decision"] == "option" and bus("opt-virtio")["mode"] == "virtio-blk"
n = bus("novirtio")
assert n["mode"] == "ovf" and n["decision"] == "ovf", n
assert "virtio_blk" in n["warning"] and "no ahci driver" in n["warning"], n
assert n["guest"]["drivers"]["sd_mod"] == "initramfs" and n["guest"]["drivers"]["virtio_blk"] is None, n
assert n["guest"]["note"] is None, n["guest"]["note"]
assert "bus='sata'" in xml("novirtio")
b = bus("builtin")
assert b["mode"] == "virtio-blk" and b["guest"]["drivers"]["virtio_blk"] == "built-in", b
assert b["guest"]["modules_builtin"] == "whole disk:/lib/modules/%s/modules.builtin" % \
    b["guest"]["initramfs"].split("initrd.img-")[1], b
for h, words in (("badname", "bad c_filesize or c_namesize"), ("trunc", "gzip data at offset 0 is corrupt or truncated"),
                 ("junk", "is neither cpio nor")):
    g = bus(h)
    assert g["mode"] == "ovf" and words in (g["guest"]["note"] or ""), (h, g)
    assert words in g["reason"], (h, g["reason"])
    assert g["guest"]["initramfs"].startswith("whole disk:/boot/initrd.img-"), g
print("asis:", a["reason"])
print("novirtio warning:", n["warning"])
print("badname note:", bus("badname")["guest"]["note"])
# Xen: HVM with hvmloader, emulated IDE disks (no xen_blkfront in the guest)
x = open(j["novirtio"]["xen_domain"]).read()
assert "<domain type='xen'>" in x and ">hvm</type>" in x and "hvmloader" in x and "bus='ide'" in x, x
assert j["asis"]["xen_domain"] is None
PY
for f in "$T/out-novirtio/novirtio.xml" "$T/out-novirtio/novirtio-xen.xml" \
         "$T/out-builtin/builtin-xen.xml" "$T/out-asis/asis.xml"; do
    virt-xml-validate "$f" domain >"$T/v.out" 2>&1 || { cat "$T/v.out" "$f"; fail "$f: not a valid domain"; }
done
# the imported disk is the guest's, whatever the bus
qemu-img compare -q "$T/asis.raw" "$T/out-asis/asis-disk1.qcow2" || fail "imported disk differs"
echo ok
