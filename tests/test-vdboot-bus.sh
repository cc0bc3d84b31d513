#!/bin/bash
# vdboot --disk-bus on the qemu (tcg) path, the disk an NBD export of
# vdboot's own view: the project's Debian guest has ata_piix and
# virtio_scsi in its initramfs but no ahci, so `--disk-bus sata` ends as
# panic with the initramfs's own words in the reason, while `ide` and
# `scsi` log in.  The built-in VMM refuses buses it does not emulate.
# Three boots, two at a time, about 15 s each.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd qemu-system-x86_64 python3 apt-get dpkg-deb depmod cpio sfdisk
[ -f /usr/lib/grub/i386-pc/boot.img ] || skip "grub-pc-bin not installed"
[ -x "$VDBOOT" ] || skip "vdboot not built"
G=$(guest_dir)
"$VDCONVERT" convert -q -O vmdk "$G/guest.raw" "$T/guest.vmdk"

boot_bg() {  # boot_bg BUS
    ( rc=0
      "$VDBOOT" --accel tcg --memory 256 --timeout 120 --json --console "$T/$1.con" \
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
print("sata: %s; ide login %.1f s, scsi login %.1f s" % (s["reason"], j["ide"]["seconds"], j["scsi"]["seconds"]))
PY
rc=0
"$VDBOOT" --accel kvm --disk-bus sata "$T/guest.vmdk" >"$T/kvm.out" 2>&1 || rc=$?
[ $rc = 3 ] && grep -q 'emulates virtio-blk only' "$T/kvm.out" || { cat "$T/kvm.out"; fail "kvm + sata: exit $rc"; }
echo ok
