#!/bin/bash
# vdboot --run on the qemu (tcg) path with the project's Debian guest
# (tests/fixtures/make-guest-image, root without a password): vdboot types
# the login and the command over the serial console.  `cat /etc/hostname`
# prints the guest's hostname (exit 0, in --json's run object); a command
# that exits 3 is outcome check_failed, exit code 4, its stderr in the
# output.  Two boots at a time, about 15 s each.  The built-in VMM's UART
# input is tested the same way on the SVM harness (vdboot-svm-debian, slow).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd qemu-system-x86_64 python3 apt-get dpkg-deb depmod cpio sfdisk
[ -f /usr/lib/grub/i386-pc/boot.img ] || skip "grub-pc-bin not installed"
[ -x "$VDBOOT" ] || skip "vdboot not built"
G=$(guest_dir)
"$VDCONVERT" convert -q -O qcow2 "$G/guest.raw" "$T/guest.qcow2"
host=$(sed -n 's/^hostname=//p' "$G/guest.info")
[ -n "$host" ] || host=vdisk-guest

run_bg() {  # run_bg NAME CMD
    ( rc=0
      "$VDBOOT" --accel tcg --memory 256 --timeout 120 --json --console "$T/$1.con" \
          --run "$2" "$T/guest.qcow2" >"$T/$1.json" 2>&1 || rc=$?
      echo $rc >"$T/$1.rc" ) &
}
run_bg host 'cat /etc/hostname'
run_bg fail 'echo check went wrong >&2; exit 3'
wait
[ "$(cat "$T/host.rc")" = 0 ] || { cat "$T/host.json"; tail -n 20 "$T/host.con"; fail "--run cat /etc/hostname: exit $(cat "$T/host.rc")"; }
[ "$(cat "$T/fail.rc")" = 4 ] || { cat "$T/fail.json"; tail -n 20 "$T/fail.con"; fail "--run exit 3: exit $(cat "$T/fail.rc"), want 4"; }
python3 - "$T/host.json" "$T/fail.json" "$host" <<'PY' || fail "--run results wrong"
import json, sys
h = json.loads(open(sys.argv[1]).read())
f = json.loads(open(sys.argv[2]).read())
assert h["outcome"] == "login" and h["exit_code"] == 0, h
assert h["matched"] == "vdisk-guest login:", h["matched"]
assert h["run"] == {"command": "cat /etc/hostname", "user": "root", "exit_status": 0,
                    "output": sys.argv[3] + "\n", "output_truncated": False}, h["run"]
assert f["outcome"] == "check_failed" and f["exit_code"] == 4, f
assert f["run"]["exit_status"] == 3 and f["run"]["output"] == "check went wrong\n", f["run"]
assert "exited 3" in f["reason"], f["reason"]
print("hostname %r after %.1f s; exit 3 -> check_failed after %.1f s" %
      (h["run"]["output"], h["seconds"], f["seconds"]))
PY
echo ok
