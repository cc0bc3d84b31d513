#!/bin/bash
# Slow suite: the Debian guest of tests/fixtures/make-guest-image to its
# login prompt on vdboot's built-in VMM, on the SVM harness
# (tests/fixtures/svm-harness: kvm-amd in a Debian L1 under qemu's TCG):
# the kernel from the image's /boot, decompressed on the host, logging in
# with --run (typed into the VMM's 16550 UART), and once more with
# --guest-decompress (the kernel's own decompressor).  About 30 s of
# L1 time each on a quiet host; the whole run a few minutes.
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
vdboot --json --accel kvm --timeout 400 --run 'cat /etc/hostname' guest.qcow2
echo "rc $?"
vdboot --json --accel kvm --timeout 400 --guest-decompress guest.qcow2
echo "rc $?"
SH
SVM_LOG=$T/l1.log "$VD_SRC/tests/fixtures/svm-harness" -t 1300 -f "$T/guest.qcow2" -s "$T/run.sh" \
    >"$T/out" || true
sed -n 's/^SVM-OUT \({.*\)/\1/p' "$T/out" >"$T/json"
python3 - "$T/json" <<'PY' || { cat "$T/out"; tail -n 30 "$T/l1.log"; fail "Debian guest did not log in on the SVM harness"; }
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 2, rows
for j, how in zip(rows, ["host-decompressed", "--guest-decompress"]):
    assert j["outcome"] == "login" and j["accelerator"] == "kvm", j
    assert j["matched"] == "vdisk-guest login:", j
    if how != "--guest-decompress":
        assert j["run"]["exit_status"] == 0 and j["run"]["output"] == "vdisk-guest\n", j["run"]
    print("Debian guest, built-in VMM on the SVM harness (%s): login after %.2f s" % (how, j["seconds"]))
PY
[ "$(grep -c '^SVM-OUT rc 0$' "$T/out")" = 2 ] || fail "exit codes: $(grep '^SVM-OUT rc' "$T/out")"
echo ok
