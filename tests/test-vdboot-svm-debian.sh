#!/bin/bash
# Slow suite: the Debian guest of tests/fixtures/make-guest-image to its
# login prompt on vdboot's built-in VMM, on the SVM harness
# (tests/fixtures/svm-harness: kvm-amd in a Debian L1 under qemu's TCG):
#  1. --cpus 2, the kernel from the image's /boot decompressed on the host,
#     logging in with --run (typed into the VMM's 16550 UART): the Debian
#     cloud kernel has no MP table parser, so its two CPUs (nproc), the
#     fixed power button and the PCI root bridge come from vdboot's ACPI
#     tables, and virtio-blk's interrupt is routed by the DSDT's _PRT to
#     the IO-APIC (level: fasteoi); the PM timer is offered as the acpi_pm
#     clocksource and the SCI is registered on IRQ 9 (level); then, with
#     --shutdown acpi, vdboot presses the ACPI power button: the guest's
#     rcS watcher logs it and powers off through init (ACPI S5);
#  2. once more with --guest-decompress (the kernel's own decompressor) and
#     --run 'poweroff -f': Linux powers off through the ACPI \_S5 package
#     and PM1a_CNT, vdboot ends with outcome poweroff, exit code 5.
# About 30 s of L1 time each on a quiet host; the whole run a few minutes.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd qemu-system-x86_64 python3 cpio apt-get dpkg-deb depmod sfdisk
[ -f /usr/lib/grub/i386-pc/boot.img ] || skip "grub-pc-bin not installed"
[ -x "$VDBOOT" ] || skip "vdboot not built"
[ -x /bin/busybox ] || skip "busybox-static not installed"
export VDBOOT PROBE
G=$(guest_dir)
"$VDCONVERT" convert -q -O qcow2 "$G/guest.raw" "$T/guest.qcow2"
cat >"$T/run.sh" <<'SH'
vdboot --json --accel kvm --timeout 400 --cpus 2 --shutdown acpi \
    --run 'cat /etc/hostname; nproc; ls -1 /sys/bus/acpi/devices; grep virtio /proc/interrupts; cat /sys/devices/system/clocksource/clocksource0/available_clocksource; grep acpi /proc/interrupts' guest.qcow2
echo "rc $?"
vdboot --json --accel kvm --timeout 400 --guest-decompress --run 'poweroff -f' guest.qcow2
echo "rc $?"
SH
SVM_LOG=$T/l1.log "$VD_SRC/tests/fixtures/svm-harness" -t 1300 -f "$T/guest.qcow2" -s "$T/run.sh" \
    >"$T/out" || true
sed -n 's/^SVM-OUT \({.*\)/\1/p' "$T/out" >"$T/json"
python3 - "$T/json" <<'PY' || { cat "$T/out"; tail -n 30 "$T/l1.log"; fail "Debian guest did not log in on the SVM harness"; }
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 2, rows
j, p = rows
assert j["outcome"] == "login" and j["accelerator"] == "kvm", j
assert j["matched"] == "vdisk-guest login:", j
assert j["run"]["exit_status"] == 0, j["run"]
out = j["run"]["output"].split("\n")
assert out[0] == "vdisk-guest" and out[1] == "2", out
assert "LNXPWRBN:00" in out and "PNP0A03:00" in out, out
irq = [l for l in out if "virtio" in l]
assert irq and all("IO-APIC" in l and "fasteoi" in l for l in irq), irq
assert any("acpi_pm" in l.split() for l in out), out
sci = [l for l in out if l.split()[-1:] == ["acpi"]]
assert len(sci) == 1 and sci[0].split()[0] == "9:" and "9-fasteoi" in sci[0], sci
assert j["shutdown"].startswith("acpi: the guest powered off "), j["shutdown"]
assert "vdisk-guest: power button pressed" in j["console_tail"], j["console_tail"]
assert "reboot: Power down" in j["console_tail"], j["console_tail"]
print("--shutdown acpi: %s" % j["shutdown"])
print("Debian guest, built-in VMM on the SVM harness (host-decompressed, --cpus 2): "
      "logged in, ran the command, nproc 2, in %.2f s" % j["seconds"])
assert p["outcome"] == "poweroff" and p["exit_code"] == 5 and p["accelerator"] == "kvm", p
assert "ACPI S5" in p["reason"] and "while running the --run command" in p["reason"], p
assert p["run"]["command"] == "poweroff -f" and "> poweroff -f" in p["console_tail"], p
assert "reboot: Power down" in p["console_tail"], p["console_tail"]
print("Debian guest (--guest-decompress): logged in, then 'poweroff -f': poweroff after %.2f s"
      % p["seconds"])
PY
[ "$(grep '^SVM-OUT rc ' "$T/out" | tr '\n' ' ')" = "SVM-OUT rc 0 SVM-OUT rc 5 " ] ||
    fail "exit codes: $(grep '^SVM-OUT rc' "$T/out")"
echo ok
