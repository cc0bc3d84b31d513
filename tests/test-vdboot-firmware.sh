#!/bin/bash
# Slow suite: --firmware boots the disk through its own boot code under
# qemu (tcg), the disk an NBD export of vdboot's view.  The project's Debian
# guest (GRUB's boot.img in the MBR, core.img in the gap, serial terminal)
# reaches login through SeaBIOS -> MBR -> GRUB -> kernel in qcow2, vmdk and
# vhdx; with --firmware auto it picks bios (no EFI system partition).
# A copy whose GRUB and kernel use the screen (no console=ttyS0, getty on
# tty1 only, like a desktop image) reaches login seen on the VGA text
# console.  Broken copies never log in: the partition's type set to 0 ends
# at GRUB's command line (panic, "grub>" read off the screen); the MBR boot
# code zeroed (440 bytes) runs garbage after SeaBIOS's "Booting from Hard
# Disk..." and ends as timeout (those words in the reason) or, when the
# garbage returns to SeaBIOS, as panic ("No bootable device").
# UEFI: tests/fixtures/make-uefi-image puts the same guest on a GPT disk
# with systemd-boot on an ESP; OVMF -> BOOTX64.EFI -> EFI stub -> login in
# raw, vdi and qcow2 (--firmware auto picks uefi); with the loader deleted
# from the ESP, OVMF falls back to its shell: panic.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd qemu-system-x86_64 python3 apt-get dpkg-deb depmod cpio sfdisk
[ -f /usr/lib/grub/i386-pc/boot.img ] || skip "grub-pc-bin not installed"
[ -f /usr/share/seabios/bios-256k.bin ] || skip "seabios not installed"
[ -f /usr/share/ovmf/OVMF.fd ] || skip "ovmf not installed"
[ -f /usr/lib/systemd/boot/efi/systemd-bootx64.efi ] || skip "systemd-boot-efi not installed"
requires_cmd mkfs.vfat mcopy mdel
[ -x "$VDBOOT" ] || skip "vdboot not built"
G=$(guest_dir)
timer_copy "$G/guest.raw" "$T/bios.raw"
for f in qcow2 vmdk vhdx; do
    "$VDCONVERT" convert -q -O $f "$T/bios.raw" "$T/bios.$f"
done
nombr_copy "$T/bios.raw" "$T/nombr.raw"
cp "$T/bios.raw" "$T/badtype.raw"
sfdisk -q --part-type "$T/badtype.raw" 1 0 >/dev/null 2>&1 || fail "sfdisk --part-type"
"$VD_SRC/tests/fixtures/make-uefi-image" "$G" "$T/uefi.raw" 2>/dev/null || fail "make-uefi-image"
for f in vdi qcow2; do
    "$VDCONVERT" convert -q -O $f "$T/uefi.raw" "$T/uefi.$f"
done
cp "$T/uefi.raw" "$T/noldr.raw"
esp=$(sfdisk -d "$T/noldr.raw" | sed -n 's/.*start= *\([0-9]*\), size= *\([0-9]*\), type=C12A7328.*/\1 \2/p')
dd if="$T/noldr.raw" of="$T/esp" bs=512 skip="${esp% *}" count="${esp#* }" status=none
MTOOLS_SKIP_CHECK=1 mdel -i "$T/esp" ::/EFI/BOOT/BOOTX64.EFI
dd if="$T/esp" of="$T/noldr.raw" bs=512 seek="${esp% *}" conv=notrunc status=none
vga_copy "$T/bios.raw" "$T/vga.raw"

boot_bg() {  # boot_bg NAME IMG TIMEOUT FIRMWARE
    ( rc=0
      "$VDBOOT" --accel tcg --memory 512 --timeout "$3" --json --console "$T/$1.con" \
          --firmware "$4" "$2" >"$T/$1.json" 2>&1 || rc=$?
      echo $rc >"$T/$1.rc" ) &
}
boot_bg qcow2 "$T/bios.qcow2" 150 bios; boot_bg vmdk "$T/bios.vmdk" 150 bios; wait
boot_bg vhdx "$T/bios.vhdx" 150 auto; boot_bg nombr "$T/nombr.raw" 60 bios; wait
boot_bg badtype "$T/badtype.raw" 60 bios; boot_bg vga "$T/vga.raw" 150 bios; wait
boot_bg uraw "$T/uefi.raw" 200 uefi; boot_bg uvdi "$T/uefi.vdi" 200 uefi; wait
boot_bg uqcow2 "$T/uefi.qcow2" 200 auto; boot_bg noldr "$T/noldr.raw" 120 uefi; wait
python3 - "$T" <<'PY' || fail "firmware boots wrong"
import json, sys
d = sys.argv[1]
j = {n: json.loads(open("%s/%s.json" % (d, n)).read())
     for n in ("qcow2", "vmdk", "vhdx", "nombr", "badtype", "vga", "uraw", "uvdi", "uqcow2",
               "noldr")}
for n in ("qcow2", "vmdk", "vhdx"):
    r = j[n]
    assert r["outcome"] == "login" and r["firmware"] == "bios" and r["format"] == n, r
    assert r["matched"] == "vdisk-guest login:" and "SeaBIOS" in r["kernel"], r
    assert r["prompt_seen_on"] == "serial", r
    print("%s: SeaBIOS -> GRUB -> login after %.1f s" % (n, r["seconds"]))
assert "auto" in j["vhdx"]["kernel"], j["vhdx"]["kernel"]
v = j["vga"]
assert v["outcome"] == "login" and v["prompt_seen_on"] == "vga", v
assert "console=ttyS0" not in (v["cmdline"] or ""), v
print("vga: no console=ttyS0, login seen on the VGA text console after %.1f s" % v["seconds"])
b = j["badtype"]
assert b["outcome"] == "panic" and b["reason"].startswith("grub>"), b
n = j["nombr"]
# What the zeroes do depends on the registers and memory SeaBIOS left and on
# when the timer interrupts them: seen running on until the timeout and
# returning to SeaBIOS, which then says "No bootable device" (panic).
assert n["outcome"] in ("timeout", "panic"), n
assert "Booting from Hard Disk" in n["reason"] + (n["console_tail"] or ""), n
assert "GRUB" not in (n["console_tail"] or ""), n
for n, fmt in (("uraw", "raw"), ("uvdi", "vdi"), ("uqcow2", "qcow2")):
    r = j[n]
    assert r["outcome"] == "login" and r["firmware"] == "uefi" and r["format"] == fmt, r
    assert "OVMF" in r["kernel"] and r["prompt_seen_on"] == "serial", r
    print("%s: OVMF -> systemd-boot -> login after %.1f s" % (n, r["seconds"]))
assert "EFI system partition" in j["uqcow2"]["kernel"], j["uqcow2"]["kernel"]
l = j["noldr"]
assert l["outcome"] == "panic" and "UEFI Interactive Shell" in l["reason"], l
assert "failed to load" in l["console_tail"] or "UEFI Interactive Shell" in l["console_tail"], l
for k in ("badtype", "nombr", "noldr"):
    print("%s: %s: %s" % (k, j[k]["outcome"], j[k]["reason"]))
PY
echo ok
