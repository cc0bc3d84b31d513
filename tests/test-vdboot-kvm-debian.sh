#!/bin/bash
# Slow suite: the Debian guest of tests/fixtures/make-guest-image on
# /dev/kvm with vdboot's built-in VMM (no qemu).  On hardware
# virtualization this reaches the prompt in about a second; on a nested
# software KVM (kvm_pvm) the kernel runs about 1000x slower, so the timeout
# is long (VDBOOT_KVM_TIMEOUT, default 1500 s).  The test prints how far the
# boot got (the last console lines) and passes only on "login".
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd python3 apt-get dpkg-deb depmod cpio sfdisk
requires_kvm
[ -f /usr/lib/grub/i386-pc/boot.img ] || skip "grub-pc-bin not installed"
[ -x "$VDBOOT" ] || skip "vdboot not built"
G=$(guest_dir)
"$VDCONVERT" convert -q -O "${VDBOOT_KVM_FORMAT:-qcow2}" "$G/guest.raw" "$T/guest.img" ||
    cp "$G/guest.raw" "$T/guest.img"
rc=0
"$VDBOOT" --accel kvm -v --json --timeout "${VDBOOT_KVM_TIMEOUT:-1500}" --console "$T/con" \
    "$T/guest.img" >"$T/json" 2>"$T/err" || rc=$?
cat "$T/err" "$T/json"
echo "--- last console lines:"
tail -n 25 "$T/con" || true
[ $rc = 0 ] || fail "the Debian guest did not reach its prompt on the built-in VMM (exit $rc)"
echo ok
