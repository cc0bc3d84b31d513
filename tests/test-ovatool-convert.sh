#!/bin/bash
# ovatool lint and convert: a VirtualBox-flavoured OVA (exported by ovatool,
# and one built from a real VirtualBox descriptor) linted for VMware lists
# its problems and exits 1; converted, the result lints clean, validates
# against the DMTF schema and imports to a disk identical to the original;
# the same from VMware to VirtualBox.  Controllers and CD-ROMs survive the
# convert both ways.  A broken OVA shows each lint rule.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3 xmllint genisoimage
requires_ovatool
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
# an existing OUT, even a FIFO, is refused, never replaced
mkfifo "$T/fifo.ova"
if "$OVA" export -n vmvm --disk "$T/src.qcow2" -o "$T/fifo.ova" >"$T/fifo.log" 2>&1; then
    fail "export over a FIFO"; fi
grep -q "fifo.ova: already exists; not overwritten" "$T/fifo.log" || fail "FIFO: $(cat "$T/fifo.log")"
[ -p "$T/fifo.ova" ] || fail "export replaced the FIFO"
[ "$(lint_codes "$T/vm.ova" virtualbox)" = "network os-type" ] ||
    fail "virtualbox lint codes of the VMware OVA: $(lint_codes "$T/vm.ova" virtualbox)"
check_converted "$T/vm.ova" virtualbox "$T/src.qcow2"
"$OVA" info "$T/conv-virtualbox-vm.ova" | matches "\[Windows2019_64\] (CIM 118, vdisk name windows2019_64)" ||
    fail "VirtualBox OS id: $("$OVA" info "$T/conv-virtualbox-vm.ova" | grep ^os)"
check_converted "$T/vm.ova" ovf2 "$T/src.qcow2"
"$OVA" convert --target virtualbox --sign "$T/k.pem" --cert "$T/c.pem" "$T/vm.ova" -o "$T/signed.ova" >/dev/null ||
    fail "signed convert"
"$OVA" verify "$T/signed.ova" | matches "certificate: signature ok" || fail "converted signature"

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
    "$OVA" info "$T/conv-vmware-real.ova" | matches "\[ubuntu64Guest\] (CIM 94, vdisk name ubuntu_64)" ||
        fail "real OVA OS: $("$OVA" info "$T/conv-vmware-real.ova" | grep ^os)"
else
    echo "SKIP part: real VirtualBox descriptor (../shared/corpus/ovf) absent"
fi

# --- controllers and CD-ROMs are kept: a VirtualBox OVA with an IDE
# controller holding a CD-ROM (an ISO), a SATA disk and a disk on an LSI
# Logic SAS controller; converted to vmware and back to virtualbox, each
# result lints clean, is schema-valid, and imports with the same disks, the
# ISO byte for byte and the controllers' kinds (libvirt: sata, lsisas1068).
{
    mkdir -p "$T/cd/iso" "$T/cdova"
    echo "vdisk cd" >"$T/cd/iso/readme.txt"
    genisoimage -quiet -V VDCD -o "$T/cdova/cd.iso" "$T/cd/iso"
    qemu-img create -q -f raw "$T/d2.raw" 8M
    qemu-io -f raw -c "write -P 0x63 1M 1M" "$T/d2.raw" >/dev/null
    "$VDCONVERT" convert -O vmdk -o subformat=streamOptimized "$T/src.qcow2" "$T/cdova/d1.vmdk" >/dev/null
    "$VDCONVERT" convert -f raw -O vmdk -o subformat=streamOptimized "$T/d2.raw" "$T/cdova/d2.vmdk" >/dev/null
    python3 - "$T/cdova" <<'PY'
import os, sys
d = sys.argv[1]
sz = {f: os.path.getsize(os.path.join(d, f)) for f in ("cd.iso", "d1.vmdk", "d2.vmdk")}
R = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
V = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
def item(**kw):
    return "<Item>" + "".join("<rasd:%s>%s</rasd:%s>" % (k, v, k) for k, v in sorted(kw.items())) + "</Item>\n"
so = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
ovf = f"""<?xml version="1.0"?>
<Envelope ovf:version="1.0" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="{R}" xmlns:vssd="{V}" xmlns:vbox="http://www.virtualbox.org/ovf/machine">
<References><File ovf:href="d1.vmdk" ovf:id="f1" ovf:size="{sz['d1.vmdk']}"/><File ovf:href="d2.vmdk" ovf:id="f2" ovf:size="{sz['d2.vmdk']}"/><File ovf:href="cd.iso" ovf:id="f3" ovf:size="{sz['cd.iso']}"/></References>
<DiskSection><Info>disks</Info>
<Disk ovf:capacity="{48 << 20}" ovf:diskId="vmdisk1" ovf:fileRef="f1" ovf:format="{so}"/>
<Disk ovf:capacity="{8 << 20}" ovf:diskId="vmdisk2" ovf:fileRef="f2" ovf:format="{so}"/>
<Disk ovf:capacity="{sz['cd.iso']}" ovf:diskId="vmdisk3" ovf:fileRef="f3" ovf:format="http://www.ecma-international.org/publications/standards/Ecma-119.htm"/>
</DiskSection>
<NetworkSection><Info>nets</Info><Network ovf:name="NAT"><Description>NAT</Description></Network></NetworkSection>
<VirtualSystem ovf:id="cdvm"><Info>vm</Info><Name>cdvm</Name>
<OperatingSystemSection ovf:id="96"><Info>os</Info><Description>Debian_64</Description><vbox:OSType ovf:required="false">Debian_64</vbox:OSType></OperatingSystemSection>
<VirtualHardwareSection><Info>hw</Info><System><vssd:ElementName>Virtual Hardware Family</vssd:ElementName><vssd:InstanceID>0</vssd:InstanceID><vssd:VirtualSystemIdentifier>cdvm</vssd:VirtualSystemIdentifier><vssd:VirtualSystemType>virtualbox-2.2</vssd:VirtualSystemType></System>
""" + item(ElementName="1 CPU", InstanceID=1, ResourceType=3, VirtualQuantity=1) + \
    item(AllocationUnits="MegaBytes", ElementName="512 MB", InstanceID=2, ResourceType=4, VirtualQuantity=512) + \
    item(Address=0, ElementName="ideController0", InstanceID=3, ResourceSubType="PIIX4", ResourceType=5) + \
    item(Address=0, ElementName="sataController0", InstanceID=4, ResourceSubType="AHCI", ResourceType=20) + \
    item(Address=0, ElementName="SASController0", InstanceID=5, ResourceSubType="lsilogicsas", ResourceType=6) + \
    item(AutomaticAllocation="true", Connection="NAT", ElementName="nic", InstanceID=6, ResourceSubType="E1000", ResourceType=10) + \
    item(AddressOnParent=0, ElementName="disk1", HostResource="/disk/vmdisk1", InstanceID=7, Parent=4, ResourceType=17) + \
    item(AddressOnParent=0, ElementName="disk2", HostResource="/disk/vmdisk2", InstanceID=8, Parent=5, ResourceType=17) + \
    item(AddressOnParent=1, ElementName="cdrom1", HostResource="/disk/vmdisk3", InstanceID=9, Parent=3, ResourceType=15) + \
    "</VirtualHardwareSection></VirtualSystem></Envelope>\n"
open(os.path.join(d, "cdvm.ovf"), "w").write(ovf)
PY
    ( cd "$T/cdova" && tar --format=ustar -cf "$T/cdvm.ova" cdvm.ovf d1.vmdk d2.vmdk cd.iso )
    for tg in vmware virtualbox; do
        src=$T/cdvm.ova; [ $tg = virtualbox ] && src=$T/cd-vmware.ova
        "$OVA" convert --target $tg "$src" -o "$T/cd-$tg.ova" >"$T/out" 2>&1 || fail "convert CD-ROM OVA to $tg: $(cat "$T/out")"
        grep -q "2 disk(s) (2 passed through, 0 converted), 1 CD-ROM(s)" "$T/out" || fail "CD convert: $(cat "$T/out")"
        grep -q "not carried over" "$T/out" && fail "CD-ROM dropped: $(cat "$T/out")"
        "$OVA" lint --target $tg "$T/cd-$tg.ova" >"$T/out" || fail "$tg lint of the CD-ROM convert: $(cat "$T/out")"
        rm -rf "$T/xc"; mkdir "$T/xc"; tar -C "$T/xc" -xf "$T/cd-$tg.ova"
        cmp -s "$T/xc/cdvm-cd3.iso" "$T/cdova/cd.iso" || fail "$tg: the ISO changed"
        if [ -f "$SCHEMA" ]; then
            xmllint --nonet --noout --schema "$SCHEMA" "$T/xc/cdvm.ovf" 2>"$T/err" || fail "$tg CD: schema: $(cat "$T/err")"
        fi
        python3 - "$T/xc/cdvm.ovf" $tg <<'PY' || fail "$tg: controllers not kept"
import sys, xml.etree.ElementTree as ET
R = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"
items = ET.parse(sys.argv[1]).getroot().iter("{http://schemas.dmtf.org/ovf/envelope/1}Item")
got = sorted((i.findtext(R + "ResourceType"), i.findtext(R + "ResourceSubType") or "")
             for i in items if i.findtext(R + "ResourceType") in ("5", "6", "15", "17", "20"))
sata = "vmware.sata.ahci" if sys.argv[2] == "vmware" else "AHCI"
assert got == [("15", ""), ("17", ""), ("17", ""), ("20", sata), ("5", "PIIX4"), ("6", "lsilogicsas")], got
PY
        rm -rf "$T/ic"
        "$OVA" import --ovf-bus -d "$T/ic" "$T/cd-$tg.ova" >/dev/null 2>"$T/err" || fail "import CD convert: $(cat "$T/err")"
        qemu-img compare -q "$T/src.qcow2" "$T/ic/cdvm-disk1.qcow2" && qemu-img compare -q "$T/d2.raw" "$T/ic/cdvm-disk2.qcow2" ||
            fail "$tg: imported disks differ"
        cmp -s "$T/ic/cdvm-cd3.iso" "$T/cdova/cd.iso" || fail "$tg: imported ISO differs"
        grep -q "bus='sata'" "$T/ic/cdvm.xml" && grep -q "model='lsisas1068'" "$T/ic/cdvm.xml" &&
            grep -q "device='cdrom'" "$T/ic/cdvm.xml" || fail "$tg: imported domain: $(cat "$T/ic/cdvm.xml")"
    done
}

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
