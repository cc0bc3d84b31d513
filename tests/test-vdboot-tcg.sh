#!/bin/bash
# vdboot --accel tcg: the project's Debian guest (tests/fixtures/
# make-guest-image: cloud kernel, busybox initramfs, getty on ttyS0) reaches
# "login:" from its own /boot after vdconvert to every writable format, two
# boots at a time; the image files do not change.  Broken copies end as
# `error` (kernel deleted) or `panic` (no /sbin/init, wrong root=: the
# initramfs reboots, qemu's SHUTDOWN event says guest-reset), each with its
# reason.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd qemu-system-x86_64 python3 apt-get dpkg-deb depmod cpio sfdisk debugfs
[ -f /usr/lib/grub/i386-pc/boot.img ] || skip "grub-pc-bin not installed"
[ -x "$VDBOOT" ] || skip "vdboot not built"
G=$(guest_dir)
kv=$(sed -n 's/^kernel_version=//p' "$G/guest.info")

boot_bg() {  # boot_bg NAME IMG [args]: result in $T/NAME.{json,con,rc}
    local n=$1 img=$2; shift 2
    ( rc=0
      "$VDBOOT" --accel tcg --memory 256 --timeout 180 --json --console "$T/$n.con" "$@" "$img" \
          >"$T/$n.json" 2>&1 || rc=$?
      echo $rc >"$T/$n.rc" ) &
}
check() {  # check NAME WANT_OUTCOME WANT_RC PATTERN
    local n=$1 rc
    rc=$(cat "$T/$n.rc")
    [ "$rc" = "$3" ] || { cat "$T/$n.json"; tail -n 15 "$T/$n.con" 2>/dev/null; fail "$n: exit $rc, want $3"; }
    grep -q "\"outcome\": \"$2\"" "$T/$n.json" || fail "$n: outcome not $2: $(cat "$T/$n.json")"
    grep -q -- "$4" "$T/$n.json" || fail "$n: '$4' not in $(cat "$T/$n.json")"
}

# The default suite boots four formats (about 25 s); the slow suite's
# vdboot-tcg-formats runs this script with VDBOOT_TCG_FORMATS=all.
formats=$("$VDCONVERT" --help 2>&1 | sed -n 's/^formats: //p')
want=${VDBOOT_TCG_FORMATS:-qcow2 vdi vhdx vmdk:subformat=streamOptimized}
[ "$want" != all ] ||
    want="raw qcow2 vmdk vdi vhd vhdx parallels qed vmdk:subformat=streamOptimized"
variants=()
for v in $want; do
    case " raw $formats " in *" ${v%%:*} "*) variants+=("$v") ;; esac
done
[ ${#variants[@]} -gt 0 ] || skip "vdconvert writes none of: $want"
names=()
for v in "${variants[@]}"; do
    n=${v//[:=]/-}
    make_variant "$G/guest.raw" "$v" "$T/$n.img"
    sha256sum <"$T/$n.img" >"$T/$n.sha"
    names+=("$n")
done
if [ "${VDBOOT_TCG_FORMATS:-}" != all ]; then
    # broken copies
    cp "$G/guest.raw" "$T/nokernel.raw"
    fs_edit "$T/nokernel.raw" "rm /boot/vmlinuz-$kv"
    cp "$G/guest.raw" "$T/noinit.raw"
    fs_edit "$T/noinit.raw" "rm /sbin/init"
    cp "$G/guest.raw" "$T/badroot.raw"
    dd if="$G/guest.raw" of="$T/p1" bs=512 skip=2048 status=none
    debugfs -R "cat /boot/grub/grub.cfg" "$T/p1" 2>/dev/null | sed 's/root=LABEL=vdisk-root/root=LABEL=no-such-disk/' >"$T/grub.cfg"
    rm -f "$T/p1"
    grep -q no-such-disk "$T/grub.cfg" || fail "could not prepare the wrong-root grub.cfg"
    fs_edit "$T/badroot.raw" "rm /boot/grub/grub.cfg" "write $T/grub.cfg /boot/grub/grub.cfg"
fi

# every boot in one queue, two at a time (one per core)
queue=()
for n in "${names[@]}"; do queue+=("$n:$T/$n.img"); done
[ "${VDBOOT_TCG_FORMATS:-}" = all ] || queue+=("noinit:$T/noinit.raw" "badroot:$T/badroot.raw")
for ((i = 0; i < ${#queue[@]}; i += 2)); do
    for q in "${queue[@]:i:2}"; do boot_bg "${q%%:*}" "${q#*:}"; done
    wait
done
for n in "${names[@]}"; do
    check "$n" login 0 '"matched": "vdisk-guest login:"'
    grep -q "\"kernel_version\": \"$kv\"" "$T/$n.json" || fail "$n: kernel version not reported"
    grep -q '"kernel": "partition 1 (ext4): /boot/vmlinuz-' "$T/$n.json" || fail "$n: kernel not from /boot"
    sha256sum <"$T/$n.img" | cmp -s - "$T/$n.sha" || fail "$n: image changed"
    echo "$n: login in $(sed -n 's/.*"seconds": \([0-9.]*\).*/\1/p' "$T/$n.json") s"
done

[ "${VDBOOT_TCG_FORMATS:-}" != all ] || { echo ok; exit 0; }

"$VDBOOT" --accel tcg --json "$T/nokernel.raw" >"$T/nokernel.json" 2>&1 && fail "nokernel booted"
echo $? >"$T/nokernel.rc"
check nokernel error 3 "kernel /boot/vmlinuz-$kv named by /boot/grub/grub.cfg is missing"
check noinit panic 1 'guest reset (a reboot or a triple fault: qemu.s SHUTDOWN event, reason guest-reset) before the prompt'
grep -q 'no /sbin/init' "$T/noinit.con" || fail "noinit: reason not on the console"
check badroot panic 1 'guest reset (a reboot or a triple fault: qemu.s SHUTDOWN event, reason guest-reset) before the prompt'
grep -q 'root device LABEL=no-such-disk not found' "$T/badroot.con" || fail "badroot: reason not on the console"
echo ok
