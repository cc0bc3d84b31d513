#!/bin/bash
# vdboot kernel discovery: grub.cfg (default entry by number, $vars
# dropped), BLS entries (newest), extlinux.conf (DEFAULT label), /vmlinuz
# symlinks; a partitioned disk, a bare filesystem, a separate /boot
# partition; --append overrides; missing kernels and disks without a
# filesystem end as `error` naming the reason.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd python3 mkfs.ext4 sfdisk
requires_kvm
[ -x "$VDBOOT" ] || skip "vdboot not built"

boot() {  # boot WANT_RC IMG [args] -> $T/out (console), $T/json
    local want=$1 img=$2 rc=0; shift 2
    "$VDBOOT" --accel kvm --timeout 20 --json --console "$T/out" "$@" "$img" >"$T/json" 2>&1 || rc=$?
    [ "$rc" = "$want" ] || { cat "$T/json" "$T/out"; fail "$img: exit $rc, want $want"; }
}
cmdline_is() {  # vdboot appends noxsave clearcpuid=smap on a nested kvm_pvm (vdboot(1))
    grep -qxF "probe: cmdline $1" <(tr -d '\r' <"$T/out" | sed 's/ \{0,1\}noxsave//; s/ \{0,1\}clearcpuid=[^ ]*//') ||
        { grep cmdline "$T/out"; fail "cmdline is not '$1'"; }
}

for kind in grub bls extlinux symlink; do
    rm -rf "$T/r"
    make_probe_fs "$T/r" $kind "kind=$kind root=/dev/vda"
    mkfs.ext4 -q -F -d "$T/r" "$T/$kind.img" 4M 2>/dev/null
    boot 0 "$T/$kind.img"
    case $kind in
    symlink) cmdline_is "console=ttyS0,115200" ;;
    *) cmdline_is "kind=$kind root=/dev/vda console=ttyS0,115200" ;;
    esac
    grep -q '"kernel": "whole disk (ext4)' "$T/json" || fail "$kind: source not reported"
    echo "$kind: ok"
done

# --append replaces the discovered arguments; console=ttyS0 is not doubled
boot 0 "$T/grub.img" --append "console=ttyS0 mine"
cmdline_is "console=ttyS0 mine"

# a separate /boot partition (paths without /boot) after a root partition
rm -rf "$T/b" && mkdir -p "$T/b/grub"
cp "$PROBE" "$T/b/vmlinuz-2"
printf 'menuentry "only" {\n linux /vmlinuz-2 sep=boot\n}\n' >"$T/b/grub/grub.cfg"
mkfs.ext4 -q -F -d "$T/b" "$T/boot.fs" 3M 2>/dev/null
mkfs.ext4 -q -F "$T/root.fs" 3M 2>/dev/null
truncate -s 8M "$T/two.raw"
printf 'start=2048, size=6144, type=83\nstart=8192, size=6144, type=83, bootable\n' | sfdisk -q "$T/two.raw" >/dev/null
dd if="$T/root.fs" of="$T/two.raw" bs=512 seek=2048 conv=notrunc status=none
dd if="$T/boot.fs" of="$T/two.raw" bs=512 seek=8192 conv=notrunc status=none
boot 0 "$T/two.raw"
cmdline_is "sep=boot console=ttyS0,115200"
grep -q '"kernel": "partition 2 (ext4): /vmlinuz-2' "$T/json" || fail "separate /boot not reported"

# broken: the kernel grub.cfg names is gone
rm -rf "$T/r" && make_probe_fs "$T/r" grub "x" && rm "$T/r/boot/vmlinuz-1.0-probe"
mkfs.ext4 -q -F -d "$T/r" "$T/nokernel.img" 4M 2>/dev/null
boot 3 "$T/nokernel.img"
grep -q 'kernel /boot/vmlinuz-1.0-probe named by /boot/grub/grub.cfg is missing' "$T/json" ||
    fail "missing kernel not explained: $(cat "$T/json")"
# broken: no filesystem at all
truncate -s 4M "$T/empty.raw"
boot 3 "$T/empty.raw"
grep -q 'no kernel found' "$T/json" || fail "empty disk not explained"
echo ok
