#!/bin/bash
# The built-in VMM on hardware-style KVM: tests/fixtures/svm-harness boots
# a Debian kernel with kvm-amd under qemu's TCG (AMD SVM + nested paging
# emulated), and inside it vdboot --accel kvm boots the probe kernel from
# its /boot in a qcow2 image on virtio-blk, with two vCPUs: login, the
# sectors it read, the ACPI tables (checksums, the MADT's two CPUs, \_S5)
# and both CPUs up, the ACPI PM timer advancing.  With --shutdown acpi and
# probe.button the probe waits at its prompt for the power button: vdboot
# presses it (PM1_STS.PWRBTN_STS), the probe clears it and powers off, and
# the JSON's shutdown field says so; the same when --timeout ends the run
# (an --expect that never matches): the press comes first, the outcome
# stays timeout.  Then the ends a guest can choose: an ACPI S5 poweroff
# (outcome poweroff, exit code 5), a vCPU spinning with interrupts off that
# never leaves KVM_RUN (the kick ends it at --timeout, no watchdog needed),
# and a vCPU thread that ignores kicks (the watchdog ends it).
# --firmware bios: SeaBIOS in the built-in VMM (fw_cfg, CMOS, i440FX, its
# serial console mirror) boots a disk whose MBR holds the boot program of
# tests/fixtures/bios-probe-mbr.S: its text read from sector 1 through the
# BIOS (int 13h on virtio-blk) comes out on the serial console.  Disks that
# do not boot, each broken in one deterministic way, are never reported as
# booted: sector 0 all zeroes (no 55 AA: SeaBIOS's "Boot failed: not a
# bootable disk", panic) and boot code that halts with interrupts off
# (panic naming the CPU and 0x7c01).  An MBR whose boot
# code is zeroed is in vdboot-svm-bios (slow), not here: what those zeroes
# do is undefined (they run on into the disk signature, random per sfdisk
# run, and whatever follows in memory), and in one CI run the L1 froze
# right after that case ended, within seconds, in the power-button case
# that came next.  One way random code does that is known (the harness's
# header: breakpoints the guest arms in DR7 stay armed in the L1 under
# qemu's TCG).
# Each case of run.sh says "start NAME" first: a stalled L1 is named by the
# harness with the case it was in, a missing result by its case.
# The L1 run takes about 25 s of its own time (60-90 s on a busy host).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd qemu-system-x86_64 python3 cpio mkfs.ext4 sfdisk as ld
[ -f /usr/share/seabios/bios-256k.bin ] || skip "seabios not installed"
[ -x "$VDBOOT" ] || skip "vdboot not built"
[ -x /bin/busybox ] || skip "busybox-static not installed"
ls /lib/modules/*/kernel/arch/x86/kvm/kvm-amd.ko >/dev/null 2>&1 ||
    command -v apt-get >/dev/null || skip "no kernel with kvm-amd.ko (linux-image-amd64)"
export VDBOOT PROBE

make_probe_fs "$T/r" grub "probe.sectors=0+8"
mkfs.ext4 -q -F -d "$T/r" "$T/fs" 8M 2>/dev/null
make_disk "$T/probe.raw" "$T/fs"
"$VDCONVERT" convert -q -O qcow2 "$T/probe.raw" "$T/probe.qcow2"
want_crc=$(crc32_of "$T/probe.raw" 0 4096)

# the BIOS boot disk: our MBR program, a text in sector 1
as --32 -o "$T/mbr.o" "$VD_SRC/tests/fixtures/bios-probe-mbr.S"
ld -m elf_i386 -Ttext 0x7c00 --oformat binary -o "$T/mbr.bin" "$T/mbr.o"
[ "$(stat -c %s "$T/mbr.bin")" -le 440 ] || fail "bios-probe-mbr.S assembles to more than 440 bytes"
truncate -s 2M "$T/bios.raw"
# a fixed disk signature (sfdisk picks a random one): the same bytes every run
printf 'label-id: 0x7664626f\nstart=2048, type=83, bootable\n' | sfdisk -q "$T/bios.raw" >/dev/null
dd if="$T/mbr.bin" of="$T/bios.raw" conv=notrunc status=none
printf 'vdisk-bios-sector-1\0' | dd of="$T/bios.raw" bs=512 seek=1 conv=notrunc status=none
"$VDCONVERT" convert -q -O qcow2 "$T/bios.raw" "$T/bios.qcow2"
# the disks that must not boot: sector 0 all zeroes; boot code "cli; hlt"
# (fa f4) with the rest of the MBR (partition table, 55 AA) intact
cp "$T/bios.raw" "$T/nosig.raw"
dd if=/dev/zero of="$T/nosig.raw" bs=512 count=1 conv=notrunc status=none
cp "$T/bios.raw" "$T/halt.raw"
dd if=/dev/zero of="$T/halt.raw" bs=440 count=1 conv=notrunc status=none
printf '\372\364' | dd of="$T/halt.raw" conv=notrunc status=none

# The second boot wedges vCPU 0's thread (VDBOOT_TEST_WEDGE=vcpu: it stops
# answering the kicks after its first exit): --timeout 1 must still end
# vdboot, through its watchdog 10 s later, with the timeout outcome.
cat >"$T/run.sh" <<'SH'
run() {
    name=$1; shift
    echo "start $name"
    t0=$(cut -d. -f1 /proc/uptime)
    "$@"
    echo "$name rc $? after $(( $(cut -d. -f1 /proc/uptime) - t0 )) s"
}
run probe vdboot --json --accel kvm --timeout 60 --cpus 2 --console /tmp/console probe.qcow2
run wedge env VDBOOT_TEST_WEDGE=vcpu vdboot --json --accel kvm --timeout 1 --kernel /probe.bzImage
run poweroff vdboot --json --accel kvm --timeout 60 --kernel /probe.bzImage --append probe.fault=poweroff
run spin vdboot --json --accel kvm --timeout 2 --cpus 2 --kernel /probe.bzImage --append probe.fault=spin
run bios vdboot --json --accel kvm --firmware bios --timeout 60 --console /tmp/console-bios \
    --expect 'sector 1 says: vdisk-bios-sector-1' bios.qcow2
run nosig vdboot --json --accel kvm --firmware bios --timeout 60 nosig.raw
run halt vdboot --json --accel kvm --firmware bios --timeout 60 halt.raw
run button vdboot --json --accel kvm --timeout 60 --shutdown acpi --kernel /probe.bzImage --append probe.button
run button-timeout vdboot --json --accel kvm --timeout 3 --expect never-printed --shutdown acpi \
    --kernel /probe.bzImage --append probe.button
SH
SVM_LOG=$T/l1.log "$VD_SRC/tests/fixtures/svm-harness" -t 420 -f "$T/probe.qcow2" -f "$T/bios.qcow2" \
    -f "$T/nosig.raw" -f "$T/halt.raw" -s "$T/run.sh" >"$T/out" || true
# A frozen L1 (its heartbeat stopped: qemu's emulated SVM host hung, as with
# the debug-register leak the harness header describes; rare, seen under
# load) leaves no result to judge.  That is the emulator failing, not
# vdboot, so the run is reported skipped by name with the harness's line
# (test.sh lists skips); any other harness error fails.
if grep -q '^SVM-ERROR the L1 froze' "$T/out"; then
    cat "$T/out"
    skip "the SVM harness's emulated host froze, not a vdboot result: $(grep -m1 '^SVM-ERROR the L1 froze' "$T/out" | sed 's/^SVM-ERROR //')"
fi
if grep -q '^SVM-ERROR' "$T/out"; then
    cat "$T/out"
    fail "$(grep -m1 '^SVM-ERROR' "$T/out")"
fi
grep -q '^SVM-OUT probe rc 0 ' "$T/out" || { cat "$T/out"; fail "probe did not log in on the SVM harness"; }
python3 - "$T/out" <<'PY' || { cat "$T/out"; fail "a result on the SVM harness is wrong (above)"; }
import json, sys
res, case = {}, None
for line in open(sys.argv[1]):
    if line.startswith("SVM-OUT start "):
        case = line.split()[2]
    elif line.startswith("SVM-OUT {"):
        res[case] = json.loads(line[len("SVM-OUT "):])
names = ["probe", "wedge", "poweroff", "spin", "bios", "nosig", "halt", "button",
         "button-timeout"]
missing = [n for n in names if n not in res]
if missing:
    sys.exit("no JSON from case(s): " + ", ".join(missing))
j, w, p, s, b = (res[n] for n in names[:5])
ns, nh, k, t = (res[n] for n in names[5:])
assert j["outcome"] == "login" and j["accelerator"] == "kvm", j
assert j["format"] == "qcow2" and j["disk_bus"] == "virtio", j
assert j["kernel"].startswith("partition 1 (ext4): /boot/vmlinuz-1.0-probe"), j["kernel"]
assert "cpus 2 of 2 (madt 2, mptable 2)" in j["console_tail"], j["console_tail"]
assert "probe: acpi XSDT FACP APIC, \\_S5 0, checksums ok" in j["console_tail"], j["console_tail"]
print("probe on the built-in VMM in the SVM L1: login after %.2f s" % j["seconds"])
assert w["outcome"] == "timeout" and "watchdog" in w["reason"], w
assert p["outcome"] == "poweroff" and p["exit_code"] == 5, p
assert p["reason"].startswith("guest powered off (ACPI S5: SLP_EN with SLP_TYP 0"), p
assert s["outcome"] == "timeout" and s["reason"] == "no match within 2 s", s
assert "probe: spinning with interrupts off" in s["console_tail"], s
assert b["outcome"] == "login" and b["firmware"] == "bios" and b["accelerator"] == "kvm", b
assert b["matched"].endswith("sector 1 says: vdisk-bios-sector-1") and b["format"] == "qcow2", b
assert "SeaBIOS (version" in b["console_tail"], b["console_tail"]
assert "Booting from Hard Disk..." in b["console_tail"], b["console_tail"]
assert "mbr: running" in b["console_tail"], b["console_tail"]
print("SeaBIOS in the built-in VMM: MBR program ran, read sector 1 in %.2f s" % b["seconds"])
# no 55 AA: SeaBIOS refuses the disk, and says so
assert ns["outcome"] == "panic" and ns["reason"] == "Boot failed: not a bootable disk", ns
assert "SeaBIOS (version" in ns["console_tail"], ns
# cli; hlt at 0x7c00: the vCPU stays halted with interrupts off (SeaBIOS's
# screen mirror may keep the characters it had not flushed yet)
assert nh["outcome"] == "panic", nh
assert nh["reason"] == "CPU 0 halted with interrupts disabled at rip 0x7c02", nh
for n in (ns, nh):
    assert n["firmware"] == "bios" and n["exit_code"] != 0, n
    print("%s: %s: %s" % (n["image"], n["outcome"], n["reason"]))
assert "probe: pm timer at 0x608 advances" in j["console_tail"], j["console_tail"]
assert k["outcome"] == "login" and k["exit_code"] == 0, k
assert k["shutdown"].startswith("acpi: the guest powered off "), k
assert "probe: power button pressed (PM1_STS after clearing 0x0000)" in k["console_tail"], k
print("--shutdown acpi: %s" % k["shutdown"])
assert t["outcome"] == "timeout" and t["reason"] == "no match within 3 s", t
assert t["shutdown"].startswith("acpi: the guest powered off "), t
assert "probe: power button pressed" in t["console_tail"], t
PY
grep -q "^SVM-CONSOLE console probe: sectors 0+8 crc32 $want_crc" "$T/out" ||
    { grep SVM-CONSOLE "$T/out"; fail "virtio-blk read wrong (want crc32 $want_crc)"; }
# (11 s at least: the watchdog's grace; the upper bound only says it ended
# well before the harness's limit, however loaded the host)
grep -Eq '^SVM-OUT wedge rc 2 after (1[1-9]|[2-9][0-9]) s$' "$T/out" ||
    { grep SVM-OUT "$T/out"; fail "wedged vCPU: vdboot did not end by its watchdog"; }
grep '^SVM-OUT wedge rc' "$T/out"
grep -q '^SVM-OUT button-timeout rc 2 ' "$T/out" || { grep SVM-OUT "$T/out"; fail "--shutdown acpi at --timeout: exit code not 2"; }
grep -q '^SVM-OUT button rc 0 ' "$T/out" || { grep SVM-OUT "$T/out"; fail "--shutdown acpi: exit code not 0"; }
grep -q '^SVM-OUT poweroff rc 5 ' "$T/out" || { grep SVM-OUT "$T/out"; fail "ACPI poweroff: exit code not 5"; }
# the kick ended KVM_RUN (the reason is vm_run's, not the watchdog's: checked above)
grep -Eq '^SVM-OUT spin rc 2 after [0-9]+ s$' "$T/out" ||
    { grep SVM-OUT "$T/out"; fail "spinning vCPU: --timeout 2 did not end vdboot before the watchdog"; }
echo ok
