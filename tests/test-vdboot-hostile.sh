#!/bin/bash
# vdboot on hostile inputs: mutated probe bzImage headers (--kernel) and
# mangled boot configurations in an ext4 image must end as an outcome
# (exit 1, 2 or 3) with a message, quickly, never as a crash.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd python3 mkfs.ext4
requires_kvm
[ -x "$VDBOOT" ] || skip "vdboot not built"

outcome_ok() {  # outcome_ok RC WHAT
    case $1 in 0|1|2|3) ;; *) fail "$2: vdboot died with status $1" ;; esac
}

# 1. header fields of the bzImage: each mutated alone
python3 - "$PROBE" "$T" <<'PY'
import random, struct, sys
src, out = sys.argv[1], sys.argv[2]
k = bytearray(open(src, "rb").read())
random.seed(7)
muts = []
fields = [(0x1f1, 1), (0x1fe, 2), (0x201, 1), (0x202, 4), (0x206, 2), (0x20e, 2),
          (0x22c, 4), (0x230, 4), (0x236, 2), (0x238, 4), (0x260, 4)]
for off, n in fields:
    for v in (random.getrandbits(8 * n), (1 << (8 * n)) - 1):
        b = bytearray(k)
        b[off:off + n] = v.to_bytes(n, "little")
        muts.append(b)
muts.append(k[:0x250])            # truncated inside the header
muts.append(k[:2560])             # setup only, no kernel
muts.append(bytearray(4096))      # zeroes
for i, m in enumerate(muts):
    open(f"{out}/k{i}", "wb").write(m)
print(len(muts))
PY
n=$(ls "$T"/k* | wc -l)
for ((i = 0; i < n; i++)); do
    rc=0
    timeout 30 "$VDBOOT" --accel kvm --timeout 5 --memory 64 --kernel "$T/k$i" >"$T/o" 2>&1 || rc=$?
    outcome_ok $rc "kernel mutation $i"
    [ -s "$T/o" ] || fail "kernel mutation $i: no message"
done
echo "$n kernel header mutations: all ended with an outcome"

# 2. mangled boot configurations
mk() {  # mk NAME: ext4 image from $T/r
    mkfs.ext4 -q -F -d "$T/r" "$T/$1.img" 4M 2>/dev/null
}
rm -rf "$T/r"; mkdir -p "$T/r/boot/grub"
python3 - "$T/r/boot/grub/grub.cfg" <<'PY'
import sys
s = "set default=\"0>0>0>0\"\n" + "submenu 'x' {\n" * 500 + "menuentry '" + "A" * 100000 + "' {\n"
s += "linux " + "/" * 5000 + " " + "arg " * 20000 + "\n" + "}\n" * 10
open(sys.argv[1], "w").write(s)
PY
mk nested
rm -rf "$T/r"; mkdir -p "$T/r/boot/grub"
printf 'menuentry "a" {\n linux\n initrd\n}\nmenuentry {\n' >"$T/r/boot/grub/grub.cfg"
mk empty-lines
rm -rf "$T/r"; mkdir -p "$T/r/boot/loader/entries"
for i in $(seq 1 100); do printf 'linux /boot/k%d\n' "$i" >"$T/r/boot/loader/entries/e$i.conf"; done
mk many-bls
rm -rf "$T/r"; mkdir -p "$T/r/boot"
ln -s vmlinuz "$T/r/vmlinuz"       # a symlink loop
mk loop
rm -rf "$T/r"; mkdir -p "$T/r/boot/extlinux"
printf 'DEFAULT x\nLABEL x\nKERNEL /boot/extlinux/extlinux.conf\n' >"$T/r/boot/extlinux/extlinux.conf"
mk not-a-kernel
for img in nested empty-lines many-bls loop not-a-kernel; do
    rc=0
    timeout 30 "$VDBOOT" --accel kvm --timeout 5 --memory 64 "$T/$img.img" >"$T/o" 2>&1 || rc=$?
    outcome_ok $rc "$img"
    [ $rc = 3 ] || { cat "$T/o"; fail "$img: exit $rc, want 3 (error)"; }
    echo "$img: $(head -c 200 "$T/o")"
done
echo ok
