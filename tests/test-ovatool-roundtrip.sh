#!/bin/bash
# The migration path end to end: the project's Debian guest (qcow2) ->
# ovatool export (VirtualBox flavour) -> ovatool import -O qcow2 --virtio ->
# the disk equals the original, virt-xml-validate accepts the libvirt domain,
# and the qemu command line import wrote boots the disk to its login prompt
# (QEMU_ACCEL=tcg: this machine's KVM is nested software KVM).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd qemu-img qemu-system-x86_64 virt-xml-validate
requires_ovatool
G=$(guest_dir)
"$VDCONVERT" -O qcow2 "$G/guest.raw" "$T/guest.qcow2"
"$OVA" export -n rt-guest --disk "$T/guest.qcow2" --cpus 1 --memory 256 --os-type debian \
    --target virtualbox -o "$T/rt.ova" >/dev/null
"$OVA" import -O qcow2 --virtio -d "$T/vm" "$T/rt.ova" >/dev/null
qemu-img compare -q "$G/guest.raw" "$T/vm/rt-guest-disk1.qcow2" || fail "round trip changed the disk"
virt-xml-validate "$T/vm/rt-guest.xml" domain >/dev/null || fail "libvirt domain does not validate"
sh -n "$T/vm/rt-guest.sh" || fail "the qemu script is not valid sh"
# Under ASan the boot is not repeated: it is qemu's TCG running the guest
# (about 15 CPU-s), no vdisk code; the script it runs is the same text,
# written by the ovatool run above, that the plain run boots to login.
case "$(ldd "$OVA")" in
    *libasan*) echo "ok: export, import, disk and domain (the boot: plain run only)"; exit 0 ;;
esac
# boot with the generated command line; the serial console is on stdout
( QEMU_ACCEL=tcg QEMU_CPU=max timeout 300 "$T/vm/rt-guest.sh" -no-reboot </dev/null >"$T/console" 2>&1 ) &
pid=$!
for _ in $(seq 600); do
    grep -q "login:" "$T/console" 2>/dev/null && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.5
done
grep -q "login:" "$T/console" || { kill $pid 2>/dev/null; tail -20 "$T/console"; fail "imported VM did not reach login"; }
pkill -f "rt-guest-disk1.qcow2" 2>/dev/null || true
wait $pid 2>/dev/null || true
echo "ok: $(grep -m1 -o '[a-z-]* login:' "$T/console")"
