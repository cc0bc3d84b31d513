#!/bin/bash
# vdboot on /dev/kvm with the probe kernel (--kernel): login, panic on a
# triple fault / a halt with interrupts off / a panic message, poweroff by
# ACPI S5, timeout (also for a vCPU that never exits), error; --json
# fields; --cpus 2 from the ACPI MADT; the int3 the nested KVM cannot run.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd python3
requires_kvm
[ -x "$VDBOOT" ] || skip "vdboot not built"

run() {  # run EXPECTED_RC ARGS... -> output in $T/out
    local want=$1 rc=0; shift
    "$VDBOOT" --accel kvm --timeout 20 "$@" >"$T/out" 2>&1 || rc=$?
    [ "$rc" = "$want" ] || { cat "$T/out"; fail "vdboot $* exited $rc, want $want"; }
}

run 0 --kernel "$PROBE" --append "hello probe" --console "$T/con"
grep -q '^probe: cmdline hello probe' "$T/con" || fail "command line not passed"
grep -q '^probe: int3 trap ok' "$T/con" || fail "int3 did not trap"
grep -q '^probe: cpus 1 of 1 (madt 1, mptable 1)' "$T/con" || fail "MADT/MP table not seen"
grep -q '^probe: acpi XSDT FACP APIC, \\_S5 0, checksums ok' "$T/con" || { cat "$T/con"; fail "ACPI tables wrong"; }
grep -q 'login after' "$T/out" || fail "no login report"

run 0 --kernel "$PROBE" --json
python3 - "$T/out" <<'PY' || fail "--json fields wrong: $(cat "$T/out")"
import json, sys
j = json.loads(open(sys.argv[1]).read())
assert j["outcome"] == "login" and j["exit_code"] == 0, j
assert j["accelerator"] == "kvm" and j["kernel_version"] == "vdisk-probe", j
assert j["matched"] == "probe login:" and 0 < j["seconds"] < 20, j
assert j["first_output_seconds"] is not None and j["first_output_seconds"] <= j["seconds"]
PY

run 0 --kernel "$PROBE" --cpus 2 --console "$T/con2"
grep -q '^probe: cpus 2 of 2 (madt 2, mptable 2)' "$T/con2" || { cat "$T/con2"; fail "second CPU not up"; }

run 1 --kernel "$PROBE" --append probe.fault=triple
grep -q 'panic after.*triple fault' "$T/out" || { cat "$T/out"; fail "triple fault not reported"; }
run 1 --kernel "$PROBE" --append probe.fault=halt
grep -q 'halted with interrupts disabled' "$T/out" || { cat "$T/out"; fail "dead halt not reported"; }
grep -q 'probe: halting with interrupts off' "$T/out" || fail "last console lines missing"
run 1 --kernel "$PROBE" --append probe.fault=panic
grep -q 'Kernel panic - not syncing: probe.fault=panic' "$T/out" || fail "panic line not reported"
run 5 --kernel "$PROBE" --append probe.fault=poweroff
grep -q 'poweroff after.*guest powered off (ACPI S5' "$T/out" || { cat "$T/out"; fail "poweroff not reported"; }
run 2 --kernel "$PROBE" --append probe.fault=spin --timeout 2
grep -q 'timeout after.*no match within 2 s$' "$T/out" || { cat "$T/out"; fail "spinning vCPU not ended by --timeout"; }

start=$(date +%s)
run 2 --kernel "$PROBE" --expect 'no such prompt' --timeout 2
[ $(( $(date +%s) - start )) -lt 10 ] || fail "timeout took too long"
grep -q 'timeout after' "$T/out" || fail "timeout not reported"
run 0 --kernel "$PROBE" --expect 'cpus [0-9]+ of'

# auto: a calibration guest on /dev/kvm decides, and says why
rc=0
"$VDBOOT" --kernel "$PROBE" --json --timeout 30 >"$T/out" 2>&1 || rc=$?
[ $rc = 0 ] || { cat "$T/out"; fail "--accel auto exited $rc"; }
python3 - "$T/out" <<'PY' || fail "--accel auto: $(cat "$T/out")"
import json, sys
j = json.loads(open(sys.argv[1]).read())
assert j["outcome"] == "login" and j["accelerator"] in ("kvm", "tcg"), j
assert j["accelerator_reason"].startswith("calibration loop of 20000 iterations took"), j
PY

run 3 --kernel /etc/passwd
grep -q 'no Linux setup header' "$T/out" || { cat "$T/out"; fail "bad kernel not explained"; }
run 3 --kernel "$T/missing"
run 3 --kernel "$PROBE" --expect '('
echo "ok"
