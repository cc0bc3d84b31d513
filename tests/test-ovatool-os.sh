#!/bin/bash
# ovatool's OS table: every guest it knows, exported for each target, is
# written with the CIM number and the vendor's own id (vmw:osType for
# VMware/ESXi, vbox:OSType for VirtualBox) and read back by info as the same
# name; unknown names are refused with the list; the descriptors stay valid
# against the DMTF schema; VMware's network is not VirtualBox's "NAT".
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img python3 xmllint
requires_ovatool
"$VDCONVERT" create -O vmdk -o subformat=streamOptimized "$T/probe.vmdk" 1M >/dev/null 2>&1 ||
    fail "vdisk cannot write streamOptimized VMDK"
qemu-img create -q -f raw "$T/d.raw" 1M

rc=0; "$OVA" export -n x --disk "$T/d.raw" --os-type bogusOS -o "$T/x.ova" 2>"$T/err" || rc=$?
[ $rc = 1 ] && grep -q "unknown; known names: .*windows10_64.*debian12_64" "$T/err" ||
    fail "unknown OS name accepted (rc $rc): $(cat "$T/err")"
[ ! -e "$T/x.ova" ] || fail "refused export left an OVA"

names=$("$OVA" --help | tail -1 | tr -d ' ' | tr ',' ' ')
[ "$(wc -w <<<"$names")" -ge 20 ] || fail "fewer than 20 guests in the table: $names"
for want in windows7_64 windows8_64 windows81_64 windows10_64 windows11_64 windows2012_64 \
            windows2012r2_64 windows2016_64 windows2019_64 windows2022_64 ubuntu_64 debian11_64 \
            rhel8_64 centos7_64 sles15_64 freebsd13_64; do
    grep -qw "$want" <<<"$names" || fail "$want missing from the table"
done
SCHEMA="$SHARED/corpus/ovf/schema/ovf-1.1.1/dsp8023_1.1.1.xsd"
# every name for the two vendor flavours; a sample for esxi and plain OVF 2.
# Under ASan the sample for all four: each name takes the same code (the
# table is data), which the plain run proves name by name.
sample="windows10_64 windows11_64 windows2022_64 debian11_64 rhel9_64 sles15_64 freebsd13_64"
SAN=0
case "$(ldd "$OVA")" in *libasan*) SAN=1 ;; esac
for target in vmware virtualbox esxi ovf2; do
    list=$names
    case $target in esxi|ovf2) list=$sample ;; esac
    [ $SAN = 0 ] || list=$sample
    for n in $list; do
        "$OVA" export -n "rt-$n" --disk "$T/d.raw" --os-type "$n" --target $target -o "$T/$n.ova" >/dev/null ||
            fail "export $n for $target"
        got=$("$OVA" info "$T/$n.ova" | sed -n 's/^os: .*vdisk name \([^)]*\))$/\1/p')
        [ "$got" = "$n" ] || fail "$target: exported $n, info reads back '$got'"
        [ $n = windows10_64 ] || [ $n = debian11_64 ] || { rm -f "$T/$n.ova"; continue; }
        tar -C "$T" -xf "$T/$n.ova" "rt-$n.ovf"
        if [ -f "$SCHEMA" ] && [ $target != ovf2 ]; then
            xmllint --nonet --noout --schema "$SCHEMA" "$T/rt-$n.ovf" 2>"$T/err" ||
                fail "$target $n: OVF schema: $(cat "$T/err")"
        fi
        python3 - "$T/rt-$n.ovf" $target $n <<'PY' || fail "$target $n: descriptor"
import sys, xml.etree.ElementTree as ET
path, target, name = sys.argv[1:]
ns = {"ovf": "http://schemas.dmtf.org/ovf/envelope/" + ("2" if target == "ovf2" else "1"),
      "vmw": "http://www.vmware.com/schema/ovf", "vbox": "http://www.virtualbox.org/ovf/machine"}
env = ET.parse(path).getroot()
os_ = env.find(".//ovf:OperatingSystemSection", ns)
cim = os_.get("{%s}id" % ns["ovf"])
vmw = os_.get("{%s}osType" % ns["vmw"])
vb = os_.find("vbox:OSType", ns)
# the DMTF CIM_OperatingSystem value map: 120 is Windows 10 64-bit (67 is XP), 96 Debian 64-bit
want = {"windows10_64": ("120", "windows9_64Guest", "Windows10_64"),
        "debian11_64": ("96", "debian11_64Guest", "Debian_64")}[name]
assert cim == want[0], cim
if target in ("vmware", "esxi"):
    assert vmw == want[1] and vb is None, (vmw, vb)
elif target == "virtualbox":
    assert vb is not None and vb.text == want[2] and vmw is None, (vb, vmw)
else:
    assert vmw is None and vb is None
nets = [n.get("{%s}name" % ns["ovf"]) for n in env.findall(".//ovf:Network", ns)]
assert nets == (["VM Network"] if target in ("vmware", "esxi") else ["NAT"]), nets
PY
        rm -f "$T/$n.ova" "$T/rt-$n.ovf"
    done
done
# the libvirt domain names the guest for libosinfo
"$OVA" export -n w --disk "$T/d.raw" --os-type windows2019_64 --target vmware -o "$T/w.ova" >/dev/null
"$OVA" import -O raw -d "$T/iw" "$T/w.ova" >/dev/null 2>&1 || fail "import of the Windows appliance"
grep -q "<libosinfo:os id='http://microsoft.com/win/2k19'/>" "$T/iw/w.xml" || fail "no libosinfo id: $(cat "$T/iw/w.xml")"
grep -q "<clock offset='localtime'/>" "$T/iw/w.xml" || fail "Windows guest clock not localtime"
if command -v virt-xml-validate >/dev/null; then
    virt-xml-validate "$T/iw/w.xml" >/dev/null 2>&1 || fail "virt-xml-validate: $(virt-xml-validate "$T/iw/w.xml" 2>&1)"
fi
"$OVA" info --json "$T/w.ova" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["os-name"]=="windows2019_64" and d["os-type"]=="windows2019srv_64Guest", d' ||
    fail "info --json os-name"
echo "ok: $(wc -w <<<"$names") guests for vmware and virtualbox, a sample for esxi and ovf2"
