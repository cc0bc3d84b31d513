#!/bin/bash
# vdboot's CI reports on the qemu (tcg) path with the probe kernel found in
# each image's /boot (about a second a boot): three images in three
# formats, one of them broken (its boot entry asks the probe for a triple
# fault), booted two at a time.  --junit validates against tests/junit.xsd
# with exactly one failure, --tap has one "not ok", --json one object a line
# with image, format, firmware, disk bus and console tail; a truncated
# kernel is an error naming the header field.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd qemu-system-x86_64 python3 mkfs.ext4 sfdisk xmllint
[ -x "$VDBOOT" ] || skip "vdboot not built"

mkimg() {  # mkimg NAME FORMAT ARGS
    rm -rf "$T/r"
    make_probe_fs "$T/r" grub "$3"
    mkfs.ext4 -q -F -d "$T/r" "$T/$1.fs" 8M 2>/dev/null
    make_disk "$T/$1.raw" "$T/$1.fs"
    "$VDCONVERT" convert -q -O "$2" "$T/$1.raw" "$T/$1.$2" || fail "vdconvert to $2"
    rm -f "$T/$1.fs" "$T/$1.raw"
}
mkimg good1 qcow2 "probe.hello=1"
mkimg broken vmdk "probe.fault=triple"
mkimg good2 vhdx "probe.hello=2"
imgs=("$T/good1.qcow2" "$T/broken.vmdk" "$T/good2.vhdx")

rc=0
"$VDBOOT" --accel tcg --timeout 30 --memory 64 -j 2 --json --junit "$T/junit.xml" \
    --console "$T" "${imgs[@]}" >"$T/json" 2>"$T/err" || rc=$?
[ $rc = 1 ] || { cat "$T/json" "$T/err"; fail "three images, one panics: exit $rc, want 1"; }
xmllint --noout --schema "$VD_SRC/tests/junit.xsd" "$T/junit.xml" 2>"$T/xsd" ||
    { cat "$T/junit.xml" "$T/xsd"; fail "--junit output does not validate"; }
python3 - "$T/junit.xml" "$T/json" "${imgs[@]}" <<'PY' || fail "reports wrong"
import json, sys
import xml.etree.ElementTree as ET
junit, jsonl, imgs = sys.argv[1], sys.argv[2], sys.argv[3:]
root = ET.parse(junit).getroot()
suite = root.find("testsuite")
cases = suite.findall("testcase")
assert [c.get("name") for c in cases] == imgs, [c.get("name") for c in cases]
fails = [c for c in cases if c.find("failure") is not None]
assert len(fails) == 1 and suite.get("failures") == "1" and suite.get("tests") == "3"
f = fails[0].find("failure")
assert fails[0].get("name").endswith("broken.vmdk"), fails[0].get("name")
assert f.get("type") == "panic" and f.get("message").startswith("panic: "), f.attrib
for c in cases:
    assert "probe" in c.find("system-out").text, c.find("system-out").text
good = [c for c in cases if c.find("failure") is None]
assert all("probe login:" in c.find("system-out").text for c in good)
assert "probe.fault=triple" in fails[0].find("system-out").text or \
       "triple" in fails[0].find("system-out").text, fails[0].find("system-out").text
rows = [json.loads(l) for l in open(jsonl)]
assert sorted(r["image"] for r in rows) == sorted(imgs), rows
by = {r["image"]: r for r in rows}
for img, fmt in zip(imgs, ["qcow2", "vmdk", "vhdx"]):
    r = by[img]
    assert r["format"] == fmt and r["firmware"] == "direct" and r["disk_bus"] == "virtio", r
    assert r["console_tail"] and r["accelerator"] == "tcg", r
assert by[imgs[0]]["outcome"] == "login" and by[imgs[2]]["outcome"] == "login"
assert by[imgs[1]]["outcome"] == "panic" and by[imgs[1]]["exit_code"] == 1
assert "probe.hello=1" in by[imgs[0]]["cmdline"]
PY
ls "$T"/1-good1.qcow2.log "$T"/2-broken.vmdk.log "$T"/3-good2.vhdx.log >/dev/null ||
    fail "per-image console transcripts missing"

# TAP, one at a time
rc=0
"$VDBOOT" --accel tcg --timeout 30 --memory 64 --tap "${imgs[@]}" >"$T/tap" 2>&1 || rc=$?
[ $rc = 1 ] || { cat "$T/tap"; fail "--tap: exit $rc, want 1"; }
python3 - "$T/tap" "${imgs[@]}" <<'PY' || { cat "$T/tap"; fail "TAP output wrong"; }
import re, sys
lines = open(sys.argv[1]).read().splitlines()
imgs = sys.argv[2:]
assert lines[0] == "TAP version 13" and lines[1] == "1..3", lines[:2]
tests = [l for l in lines if re.match(r"(not )?ok \d+ - ", l)]
assert len(tests) == 3, tests
assert tests[0].startswith("ok 1 - " + imgs[0] + ": login after")
assert tests[1].startswith("not ok 2 - " + imgs[1] + ": panic after")
assert tests[2].startswith("ok 3 - " + imgs[2] + ": login after")
i = lines.index(tests[1])
assert lines[i + 1] == "  ---" and lines[i + 2] == "  outcome: panic", lines[i:i + 4]
assert "  ..." in lines[i:]
PY

# a truncated kernel: the header field at fault, before qemu starts
head -c 3000 "$PROBE" >"$T/trunc"
rc=0
"$VDBOOT" --accel tcg --json --kernel "$T/trunc" >"$T/t.json" 2>&1 || rc=$?
[ $rc = 3 ] || fail "truncated kernel: exit $rc, want 3"
grep -q 'truncated: syssize at 0x1f4' "$T/t.json" || fail "truncated kernel: $(cat "$T/t.json")"
echo ok
