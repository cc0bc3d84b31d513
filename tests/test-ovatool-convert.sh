#!/bin/bash
# ovatool lint and convert: a VirtualBox-flavoured OVA (exported by ovatool,
# and one built from a real VirtualBox descriptor) linted for VMware lists
# its problems and exits 1; converted, the result lints clean, validates
# against the DMTF schema and imports to a disk identical to the original;
# the same from VMware to VirtualBox.  A broken OVA shows each lint rule.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3 xmllint
OVA=${OVATOOL:-$VD_BUILD/tools/ovatool/ovatool}
[ -x "$OVA" ] || skip "ovatool not built"
"$VDCONVERT" create -O vmdk -o subformat=streamOptimized "$T/probe.vmdk" 1M >/dev/null 2>&1 ||
    fail "vdisk cannot write streamOptimized VMDK"
SCHEMA="$SHARED/corpus/ovf/schema/ovf-1.1.1/dsp8023_1.1.1.xsd"

qemu-img create -q -f qcow2 "$T/src.qcow2" 48M
qemu-io -f qcow2 -c "write -P 0x61 0 1M" -c "write -P 0x62 40M 3M" "$T/src.qcow2" >/dev/null

# lint_codes OVA TARGET: the problem codes, sorted, one line
lint_codes() {
    { "$OVA" lint --json --target "$2" "$1" || true; } | python3 -c '
import json,sys; d=json.load(sys.stdin)
assert d["clean"] == (not d["problems"]), d
print(" ".join(sorted(set(p["code"] for p in d["problems"]))))'
}

# check_converted SRC.ova TARGET ORIGINAL-IMAGE: convert, lint clean,
# schema-valid, disks passed through, import identical
check_converted() {
    local src=$1 target=$2 orig=$3
    local out="$T/conv-$target-$(basename "$src")"
    "$OVA" convert --target "$target" "$src" -o "$out" >"$T/out" 2>&1 || fail "convert $src to $target: $(cat "$T/out")"
    grep -q "passed through" "$T/out" || fail "convert output: $(cat "$T/out")"
    "$OVA" lint --target "$target" "$out" >"$T/out" || fail "$target lint of the converted $src: $(cat "$T/out")"
    "$OVA" verify "$out" >/dev/null || fail "converted $src does not verify"
    local x="$T/x-$target"; rm -rf "$x"; mkdir "$x"; tar -C "$x" -xf "$out"
    local xsd=$SCHEMA
    [ $target = ovf2 ] && xsd="$SHARED/corpus/ovf/schema/ovf-2.0.1/dsp8023_2.0.1.xsd"
    if [ -f "$xsd" ]; then
        xmllint --nonet --noout --schema "$xsd" "$x"/*.ovf 2>"$T/err" || fail "$target: schema: $(cat "$T/err")"
    fi
    rm -rf "$T/imp"
    "$OVA" import -O qcow2 -d "$T/imp" "$out" >/dev/null 2>"$T/err" || fail "import of converted $src: $(cat "$T/err")"
    qemu-img compare -q "$orig" "$T/imp/"*-disk1.qcow2 || fail "$src -> $target: imported disk differs"
}

# --- VirtualBox -> VMware
"$OVA" export -n vbvm --disk "$T/src.qcow2" --cpus 2 --memory 768 --os-type debian11_64 \
    --target virtualbox -o "$T/vb.ova" >/dev/null
rc=0; "$OVA" lint --target vmware "$T/vb.ova" >"$T/out" || rc=$?
[ $rc = 1 ] || fail "lint of a VirtualBox OVA for vmware: exit $rc"
grep -q "^$T/vb.ova: vmware: \[system-type\] VirtualSystemType is 'virtualbox-2.2'.*: write vmx-" "$T/out" ||
    fail "lint text: $(cat "$T/out")"
[ "$(lint_codes "$T/vb.ova" vmware)" = "controller network os-type system-type" ] ||
    fail "vmware lint codes of the VirtualBox OVA: $(lint_codes "$T/vb.ova" vmware)"
"$OVA" lint --target virtualbox "$T/vb.ova" >/dev/null || fail "ovatool's VirtualBox OVA not clean for VirtualBox"
check_converted "$T/vb.ova" vmware "$T/src.qcow2"
check_converted "$T/vb.ova" esxi "$T/src.qcow2"
o=$("$OVA" info "$T/conv-vmware-vb.ova")
grep -q "vdisk name debian11_64)" <<<"$o" && grep -q "^cpus: 2$" <<<"$o" && grep -q "^memory: 768 MiB$" <<<"$o" &&
    grep -q "^network: VM Network$" <<<"$o" || fail "converted VM lost name/OS/CPUs/memory: $o"

# --- VMware -> VirtualBox (and OVF 2), signed
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/k.pem" -out "$T/c.pem" -subj /CN=conv -days 2 2>/dev/null
"$OVA" export -n vmvm --disk "$T/src.qcow2" --os-type windows2019_64 --target vmware -o "$T/vm.ova" >/dev/null
[ "$(lint_codes "$T/vm.ova" virtualbox)" = "network os-type" ] ||
    fail "virtualbox lint codes of the VMware OVA: $(lint_codes "$T/vm.ova" virtualbox)"
check_converted "$T/vm.ova" virtualbox "$T/src.qcow2"
"$OVA" info "$T/conv-virtualbox-vm.ova" | grep -q "\[Windows2019_64\] (CIM 118, vdisk name windows2019_64)" ||
    fail "VirtualBox OS id: $("$OVA" info "$T/conv-virtualbox-vm.ova" | grep ^os)"
check_converted "$T/vm.ova" ovf2 "$T/src.qcow2"
"$OVA" convert --target virtualbox --sign "$T/k.pem" --cert "$T/c.pem" "$T/vm.ova" -o "$T/signed.ova" >/dev/null ||
    fail "signed convert"
"$OVA" verify "$T/signed.ova" | grep -q "certificate: signature ok" || fail "converted signature"

# --- a real VirtualBox descriptor (VirtualBox 4.3, Ubuntu, 40 GiB disk)
REAL="$SHARED/corpus/ovf/virtualbox/vbox4.3-linux-ubuntu-trusty.ovf"
if [ -f "$REAL" ]; then
    mkdir "$T/real"
    qemu-img create -q -f raw "$T/real.raw" 40G
    qemu-io -f raw -c "write -P 0x71 0 2M" -c "write -P 0x72 39G 1M" "$T/real.raw" >/dev/null
    qemu-img convert -O vmdk -o subformat=streamOptimized "$T/real.raw" "$T/real/box-disk.vmdk"
    sed "s|ovf:size=\"381374464\"|ovf:size=\"$(stat -c %s "$T/real/box-disk.vmdk")\"|" "$REAL" >"$T/real/box.ovf"
    ( cd "$T/real"; tar --format=ustar -cf "$T/real.ova" box.ovf box-disk.vmdk )
    rc=0; "$OVA" lint --target vmware "$T/real.ova" >"$T/out" || rc=$?
    [ $rc = 1 ] || fail "real VirtualBox OVA lint: exit $rc"
    codes=$(lint_codes "$T/real.ova" vmware)
    for c in manifest-missing system-type controller os-type network; do
        grep -qw $c <<<"$codes" || fail "real VirtualBox OVA: no $c problem for vmware ($codes)"
    done
    check_converted "$T/real.ova" vmware "$T/real.raw"
    "$OVA" info "$T/conv-vmware-real.ova" | grep -q "\[ubuntu64Guest\] (CIM 94, vdisk name ubuntu_64)" ||
        fail "real OVA OS: $("$OVA" info "$T/conv-vmware-real.ova" | grep ^os)"
else
    echo "SKIP part: real VirtualBox descriptor (../shared/corpus/ovf) absent"
fi

# --- a broken OVA: every rule speaks once
python3 - "$T" <<'PY'
import io, sys, tarfile, gzip, hashlib
T = sys.argv[1]
import subprocess
x = f"{T}/x-vmware"
ovf = open(next(__import__("glob").iglob(f"{x}/*.ovf")), "rb").read()
disk = open(next(__import__("glob").iglob(f"{x}/*.vmdk")), "rb").read()
name = [l for l in ovf.decode().split('"') if l.endswith(".vmdk")][0]
gz = gzip.compress(disk)
bad = ovf.replace(b'vmx-10', b'virtualbox-2.2').replace(b'VM Network', b'Bridged')
bad = bad.replace(b'ovf:size="%d"' % len(disk), b'ovf:size="%d" ovf:compression="gzip"' % (len(gz) + 7))
bad = bad.replace(b'<rasd:ResourceType>10<', b'<rasd:ResourceType>35<', 0)
bad = bad.replace(b'</VirtualHardwareSection>', b'<Item><rasd:ElementName>sound</rasd:ElementName><rasd:InstanceID>99</rasd:InstanceID><rasd:ResourceType>35</rasd:ResourceType></Item></VirtualHardwareSection>')
mf = "SHA256 (%s) = %s\r\n" % (name, hashlib.sha256(gz).hexdigest())
with tarfile.open(f"{T}/broken.ova", "w", format=tarfile.GNU_FORMAT) as t:
    for n, data in ((name, gz), ("x.ovf", bad), ("x.mf", mf.encode()), ("extra.txt", b"x")):
        ti = tarfile.TarInfo(n); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
PY
codes=$(lint_codes "$T/broken.ova" vmware)
grep -q "x.ovf is not referenced" "$T/out" 2>/dev/null && fail "the descriptor taken for an extra member"
for c in tar-format tar-order tar-extra manifest-syntax system-type network item-type compression file-size; do
    grep -qw $c <<<"$codes" || fail "broken OVA: no $c problem ($codes)"
done
rc=0; "$OVA" lint --target vmware "$T/broken.ova" >"$T/out" || rc=$?
[ $rc = 1 ] && [ "$(wc -l <"$T/out")" -ge 9 ] || fail "broken OVA lint (rc $rc): $(cat "$T/out")"
rc=0; "$OVA" lint --target nosuch "$T/vb.ova" 2>/dev/null || rc=$?
[ $rc = 1 ] || fail "unknown lint target accepted"
echo "ok"
