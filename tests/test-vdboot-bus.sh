#!/bin/bash
# vdboot --disk-bus on the qemu (tcg) path, the disk an NBD export of
# vdboot's own view: the project's Debian guest has ata_piix and
# virtio_scsi in its initramfs but no ahci, so `--disk-bus sata` ends as
# panic with the initramfs's own words in the reason, while `ide` and
# `scsi` log in.  The built-in VMM refuses buses it does not emulate, and
# --accel auto (sata here) gives them to qemu without timing /dev/kvm; with
# --firmware it sends uefi to qemu and times /dev/kvm for bios.
# Three boots, two at a time, about 15 s each, and two cut after 3 s.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd qemu-system-x86_64 python3 apt-get dpkg-deb depmod cpio sfdisk
[ -f /usr/lib/grub/i386-pc/boot.img ] || skip "grub-pc-bin not installed"
[ -x "$VDBOOT" ] || skip "vdboot not built"
G=$(guest_dir)
"$VDCONVERT" convert -q -O vmdk "$G/guest.raw" "$T/guest.vmdk"

boot_bg() {  # boot_bg BUS
    ( rc=0
      "$VDBOOT" --accel "$([ "$1" = sata ] && echo auto || echo tcg)" --memory 256 --timeout 120 --json --console "$T/$1.con" \
          --disk-bus "$1" "$T/guest.vmdk" >"$T/$1.json" 2>&1 || rc=$?
      echo $rc >"$T/$1.rc" ) &
}
boot_bg sata; boot_bg ide; wait
boot_bg scsi; wait
for b in sata ide scsi; do echo "$b: exit $(cat "$T/$b.rc")"; done
python3 - "$T" <<'PY' || fail "--disk-bus results wrong"
import json, sys
j = {b: json.loads(open("%s/%s.json" % (sys.argv[1], b)).read()) for b in ("sata", "ide", "scsi")}
for b, r in j.items():
    assert r["disk_bus"] == b and r["format"] == "vmdk", r
s = j["sata"]
assert s["outcome"] == "panic" and s["exit_code"] == 1, s
assert "root device LABEL=vdisk-root not found" in s["reason"], s["reason"]
for b in ("ide", "scsi"):
    assert j[b]["outcome"] == "login", j[b]
# --accel auto never gives a bus the built-in VMM lacks to it, /dev/kvm or not
assert s["accelerator"] == "tcg", s
assert s["accelerator_reason"] == "--disk-bus sata: the built-in VMM emulates virtio-blk only", s
print("sata: %s; ide login %.1f s, scsi login %.1f s" % (s["reason"], j["ide"]["seconds"], j["scsi"]["seconds"]))
PY
rc=0
"$VDBOOT" --accel kvm --disk-bus sata "$T/guest.vmdk" >"$T/kvm.out" 2>&1 || rc=$?
[ $rc = 3 ] && grep -q 'emulates virtio-blk only' "$T/kvm.out" || { cat "$T/kvm.out"; fail "kvm + sata: exit $rc"; }
# --accel auto with --firmware: uefi is qemu's whatever /dev/kvm does; bios
# on virtio is decided like a direct boot (no /dev/kvm or a slow one: qemu).
# Only the choice is checked: the boots are cut after 3 s.
for fw in uefi bios; do
    ( "$VDBOOT" --accel auto --firmware $fw --timeout 3 --json "$T/guest.vmdk" >"$T/fw-$fw.json" \
          2>"$T/fw-$fw.err" || true ) &
done
wait
python3 - "$T" <<'PY' || fail "--accel auto with --firmware chose wrong"
import json, sys
u = json.loads(open(sys.argv[1] + "/fw-uefi.json").read())
b = json.loads(open(sys.argv[1] + "/fw-bios.json").read())
assert u["firmware"] == "uefi" and u["accelerator"] == "tcg", u
assert u["accelerator_reason"].startswith("--firmware uefi: the built-in VMM has no UEFI"), u
assert b["firmware"] == "bios" and b["accelerator"] in ("kvm", "tcg"), b
why = b["accelerator_reason"]
assert why == "/dev/kvm cannot be opened" or why.startswith("calibration "), b
fast = why.startswith("calibration loop of 20000") and "nested or software KVM" not in why
assert (b["accelerator"] == "kvm") == fast, b
print("auto: uefi -> %s (%s); bios -> %s (%s)" % (u["accelerator"], u["accelerator_reason"],
                                                 b["accelerator"], why))
PY
echo ok
