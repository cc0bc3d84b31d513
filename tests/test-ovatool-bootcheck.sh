#!/bin/bash
# ovatool import --boot-check: after the import, vdboot --domain NAME.xml
# boots the VM with the disk, bus, memory, vCPUs and firmware its libvirt
# domain gives it (qemu TCG with SeaBIOS here: the guest's own GRUB), and the
# import succeeds only when the guest reaches its login prompt.
# The project's Debian guest (virtio_blk and ata_piix in its initramfs, no
# AHCI), exported as a VirtualBox OVA (SATA):
#   default suite: --ovf-bus keeps SATA: the boot check fails with the
#     initramfs's own words, exit 1, the imported files kept;  (one boot)
#   argument "slow" (suite slow): the automatic choice (virtio, item of
#     ovatool-guestbus) logs in, and so does --virtio.
# vdboot --domain itself: hostile domain files are one line, exit 3.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd qemu-system-x86_64 python3 apt-get dpkg-deb depmod cpio sfdisk
[ -f /usr/lib/grub/i386-pc/boot.img ] || skip "grub-pc-bin not installed"
[ -f /usr/share/seabios/bios-256k.bin ] || [ -f /usr/share/qemu/bios-256k.bin ] || skip "seabios not installed"
requires_ovatool
[ -x "$VDBOOT" ] || skip "vdboot not built"
export OVATOOL_VDBOOT=$VDBOOT OVATOOL_BOOT_ACCEL=tcg OVATOOL_BOOT_TIMEOUT=150
G=$(guest_dir)
cp --sparse=always "$G/guest.raw" "$T/demo.raw"
"$OVA" export -n demo --disk "$T/demo.raw" --target virtualbox --os-type debian12_64 --memory 256 \
    -o "$T/demo.ova" >/dev/null

# --- hostile domains for vdboot --domain: one line naming the file, exit 3
hostile() {  # hostile WORDS XML
    local rc=0
    printf '%s\n' "$2" >"$T/h.xml"
    "$VDBOOT" --domain "$T/h.xml" >"$T/h.out" 2>&1 || rc=$?
    [ $rc = 3 ] && [ "$(wc -l <"$T/h.out")" = 1 ] && grep -q "^vdboot: --domain $T/h.xml: .*$1" "$T/h.out" ||
        { cat "$T/h.out"; fail "hostile domain ($1): exit $rc"; }
}
hostile "DOCTYPE" '<!DOCTYPE d [<!ENTITY x "y">]><domain>&x;</domain>'
hostile "line 2: " '<domain'
hostile "root element is <vm>" '<vm/>'
hostile "no <disk device=.disk.>" "<domain><devices><disk device='cdrom'/></devices></domain>"
hostile "line 3: <target bus='xen'>" "<domain>
<devices>
<disk><source file='/x'/><target bus='xen'/></disk></devices></domain>"
hostile "<memory unit='PiB'>" "<domain><memory unit='PiB'>1</memory><devices><disk><source file='a'/><target bus='sata'/></disk></devices></domain>"
hostile "<vcpu>-1</vcpu>" "<domain><vcpu>-1</vcpu><devices><disk><source file='a'/><target bus='sata'/></disk></devices></domain>"
hostile "not a format vdisk reads" "<domain><devices><disk><driver type='qcow9'/><source file='a'/><target bus='sata'/></disk></devices></domain>"
hostile "model='buslogic'" "<domain><devices><controller type='scsi' index='0' model='buslogic'/><disk><source file='a'/><target bus='scsi'/></disk></devices></domain>"
head -c 1100000 /dev/zero | tr '\0' ' ' >"$T/big.xml"
rc=0; "$VDBOOT" --domain "$T/big.xml" >"$T/h.out" 2>&1 || rc=$?
[ $rc = 3 ] && grep -q "a domain is at most" "$T/h.out" || { cat "$T/h.out"; fail "1 MiB domain: exit $rc"; }
rc=0; "$VDBOOT" --domain "$T/h.xml" --disk-bus sata >"$T/h.out" 2>&1 || rc=$?
[ $rc = 3 ] && grep -q "no --disk-bus" "$T/h.out" || { cat "$T/h.out"; fail "--domain + --disk-bus: exit $rc"; }

# --- SATA as the OVF says: the guest has no AHCI, the boot check fails
rc=0
"$OVA" import --json --ovf-bus --boot-check -d "$T/sata" "$T/demo.ova" >"$T/sata.json" 2>"$T/sata.err" || rc=$?
[ $rc = 1 ] || { cat "$T/sata.err"; fail "boot check of the SATA import: exit $rc"; }
grep -q "ovatool: boot check failed: panic after .*root device LABEL=vdisk-root not found" "$T/sata.err" ||
    { cat "$T/sata.err"; fail "no kernel words in the failure"; }
[ -f "$T/sata/demo.xml" ] && [ -f "$T/sata/demo-disk1.qcow2" ] || fail "the imported files were not kept"
python3 - "$T/sata.json" <<'PY' || fail "boot check JSON wrong"
import json, sys
j = json.load(open(sys.argv[1]))
b = j["boot_check"]
assert b["ok"] is False and b["vdboot"]["outcome"] == "panic", b
v = b["vdboot"]
assert v["disk_bus"] == "sata" and v["firmware"] == "bios" and v["format"] == "qcow2", v
assert v["image"] == j["disks"][0]["path"], v
assert j["disk_bus"]["decision"] == "option" and j["disks"][0]["bus"] == "sata", j
print("sata:", b["summary"])
PY

if [ "${1:-}" = slow ]; then
    for mode in auto virtio; do
        opt=; [ $mode = virtio ] && opt=--virtio
        rc=0
        "$OVA" import --json $opt --boot-check -d "$T/$mode" "$T/demo.ova" >"$T/$mode.json" 2>"$T/$mode.err" || rc=$?
        [ $rc = 0 ] || { cat "$T/$mode.err"; fail "boot check ($mode): exit $rc"; }
        python3 - "$T/$mode.json" "$mode" <<'PY' || fail "boot check JSON wrong ($mode)"
import json, sys
j = json.load(open(sys.argv[1]))
b = j["boot_check"]
assert b["ok"] is True and b["vdboot"]["outcome"] == "login" and b["vdboot"]["disk_bus"] == "virtio", b
assert j["disk_bus"]["decision"] == ("guest-drivers" if sys.argv[2] == "auto" else "option"), j
print(sys.argv[2] + ":", b["summary"])
PY
    done
fi
echo ok
