#!/bin/bash
# vdboot --run on the qemu (tcg) path with the project's Debian guest
# (tests/fixtures/make-guest-image, root without a password): vdboot types
# the login and the command over the serial console.  `cat /etc/hostname`
# prints the guest's hostname (exit 0, in --json's run object), and with
# --shutdown acpi vdboot then presses the ACPI power button (qemu's
# system_powerdown): the guest's rcS watcher logs it and powers off through
# init, the JSON's shutdown field says so; a command
# that exits 3 is outcome check_failed, exit code 4, its stderr in the
# output.  The guest's own end: 'poweroff -f' is outcome poweroff, exit
# code 5 (qemu's SHUTDOWN event says guest-shutdown: its exit status alone
# cannot tell a poweroff from a reset), and a kernel crash
# (sysrq 'c') is panic, exit code 1.  Two boots at a time, about 15 s each.  The built-in VMM's UART
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

run_bg() {  # run_bg NAME CMD [vdboot args]
    ( rc=0 n=$1 c=$2; shift 2
      "$VDBOOT" --accel tcg --memory 256 --timeout 120 --json --console "$T/$n.con" \
          --run "$c" "$@" "$T/guest.qcow2" >"$T/$n.json" 2>&1 || rc=$?
      echo $rc >"$T/$n.rc" ) &
}
run_bg host 'cat /etc/hostname' --shutdown acpi
run_bg fail 'echo check went wrong >&2; exit 3'
wait
run_bg off 'poweroff -f'
run_bg crash 'echo c >/proc/sysrq-trigger'
wait
[ "$(cat "$T/host.rc")" = 0 ] || { cat "$T/host.json"; tail -n 20 "$T/host.con"; fail "--run cat /etc/hostname: exit $(cat "$T/host.rc")"; }
[ "$(cat "$T/fail.rc")" = 4 ] || { cat "$T/fail.json"; tail -n 20 "$T/fail.con"; fail "--run exit 3: exit $(cat "$T/fail.rc"), want 4"; }
for n in off:5 crash:1; do
    [ "$(cat "$T/${n%:*}.rc")" = "${n#*:}" ] ||
        { cat "$T/${n%:*}.json"; tail -n 20 "$T/${n%:*}.con"; fail "--run ${n%:*}: exit $(cat "$T/${n%:*}.rc"), want ${n#*:}"; }
done
python3 - "$T/host.json" "$T/fail.json" "$host" "$T/off.json" "$T/crash.json" <<'PY' || fail "--run results wrong"
import json, sys
h = json.loads(open(sys.argv[1]).read())
f = json.loads(open(sys.argv[2]).read())
o = json.loads(open(sys.argv[4]).read())
c = json.loads(open(sys.argv[5]).read())
assert o["outcome"] == "poweroff" and o["exit_code"] == 5, o
assert o["reason"].startswith("guest powered off (qemu's SHUTDOWN event, reason guest-shutdown) "
                              "while running the --run command"), o["reason"]
assert "reboot: Power down" in o["console_tail"], o["console_tail"]
assert c["outcome"] == "panic" and c["exit_code"] == 1, c
assert "Kernel panic - not syncing: sysrq triggered crash" in c["reason"], c["reason"]
assert h["outcome"] == "login" and h["exit_code"] == 0, h
assert h["matched"] == "vdisk-guest login:", h["matched"]
assert h["run"] == {"command": "cat /etc/hostname", "user": "root", "exit_status": 0,
                    "output": sys.argv[3] + "\n", "output_truncated": False}, h["run"]
assert h["shutdown"].startswith("acpi: the guest powered off ") and \
    h["shutdown"].endswith(" s after vdboot pressed the power button"), h["shutdown"]
assert "vdisk-guest: power button pressed" in h["console_tail"], h["console_tail"]
assert "reboot: Power down" in h["console_tail"], h["console_tail"]
assert f["shutdown"] is None, f
assert f["outcome"] == "check_failed" and f["exit_code"] == 4, f
assert f["run"]["exit_status"] == 3 and f["run"]["output"] == "check went wrong\n", f["run"]
assert "exited 3" in f["reason"], f["reason"]
print("hostname %r after %.1f s, then %s; exit 3 -> check_failed after %.1f s" %
      (h["run"]["output"], h["seconds"], h["shutdown"], f["seconds"]))
print("poweroff -f -> poweroff after %.1f s; sysrq crash -> panic after %.1f s" %
      (o["seconds"], c["seconds"]))
PY
echo ok
