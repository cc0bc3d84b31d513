#!/bin/bash
# ovatool import, faithful and strict: no manifest (warning; --strict
# refuses), ovf:capacity honoured (file grown, larger file refused, absurd
# capacities refused), a disk without a file created empty, a DOCTYPE
# refused, unusable VM names replaced, every SCSI controller mapped to its
# libvirt model, info --json with every warning and null for what is unsaid.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3 xmllint
requires_ovatool

qemu-img create -q -f raw "$T/src.raw" 32M
qemu-io -f raw -c "write -P 0x5a 0 1M" -c "write -P 0xa5 30M 2M" "$T/src.raw" >/dev/null
qemu-img convert -O vmdk -o subformat=streamOptimized "$T/src.raw" "$T/d1.vmdk"
"$VDCONVERT" info "$T/d1.vmdk" 2>/dev/null | matches "file format: vmdk" ||
    fail "vdisk cannot read VMDK"

# mkova OUT.ova NAME CAPACITY UNITS CTRL-SUBTYPE [manifest] [extra Disk/Item XML]
mkova() {
    local out=$1 name=$2 cap=$3 units=$4 sub=$5 mf=${6:-mf} extra_disk=${7:-} extra_item=${8:-}
    local w; w=$(mktemp -d "$T/w.XXXX")
    cp "$T/d1.vmdk" "$w/d1.vmdk"
    cat >"$w/vm.ovf" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References><File ovf:href="d1.vmdk" ovf:id="file1" ovf:size="$(stat -c %s "$w/d1.vmdk")"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:capacity="$cap" ovf:capacityAllocationUnits="$units" ovf:diskId="vmdisk1" ovf:fileRef="file1"
      ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>$extra_disk</DiskSection>
  <VirtualSystem ovf:id="$name"><Info>vm</Info><Name>$name</Name>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:ElementName>scsi</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>$sub</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>disk</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>$extra_item
    </VirtualHardwareSection></VirtualSystem></Envelope>
XML
    local members="vm.ovf d1.vmdk"
    if [ "$mf" = mf ]; then
        ( cd "$w"; for f in vm.ovf d1.vmdk; do echo "SHA256($f)= $(sha256sum $f | cut -d' ' -f1)"; done >vm.mf )
        members="$members vm.mf"
    fi
    ( cd "$w"; tar --format=ustar -cf "$out" $members )
    rm -rf "$w"
}

# --- no manifest: imported with a warning; --strict refuses
mkova "$T/nomf.ova" nomf 32 "byte * 2^20" lsilogic nomf
"$OVA" import -O raw -d "$T/i-nomf" "$T/nomf.ova" >/dev/null 2>"$T/err" || fail "manifest-less import: $(cat "$T/err")"
grep -q "warning: no manifest" "$T/err" || fail "no warning for the missing manifest: $(cat "$T/err")"
cmp "$T/src.raw" "$T/i-nomf/nomf-disk1.raw" || fail "manifest-less import differs"
rc=0; "$OVA" import --strict -O raw -d "$T/i-strict" "$T/nomf.ova" >/dev/null 2>"$T/err" || rc=$?
[ $rc = 1 ] && grep -q "no manifest.*--strict" "$T/err" || fail "--strict accepted a manifest-less OVA (rc $rc): $(cat "$T/err")"
[ -z "$(ls -A "$T/i-strict" 2>/dev/null)" ] || fail "--strict refusal left files"
"$OVA" info --json "$T/nomf.ova" | python3 -c '
import json,sys; d=json.load(sys.stdin)
assert d["cpus"] is None and d["memory-mib"] is None, d
assert any("no manifest" in w for w in d["warnings"]), d["warnings"]' || fail "info --json of the manifest-less OVA"

# --- capacity: a 64 MiB declared disk with a 32 MiB file is grown to 64 MiB
mkova "$T/grow.ova" grow 64 "byte * 2^20" lsilogic
"$OVA" import -O qcow2 -d "$T/i-grow" "$T/grow.ova" >/dev/null 2>"$T/err" || fail "grow import: $(cat "$T/err")"
[ "$(qemu-img info --output=json "$T/i-grow/grow-disk1.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = $((64 << 20)) ] ||
    fail "disk not grown to its ovf:capacity"
qemu-img compare -q "$T/src.raw" "$T/i-grow/grow-disk1.qcow2" || fail "grown disk's data differs"
# ... "GigaBytes"-style units read too (0.03125 GiB is not whole: use KB)
mkova "$T/growk.ova" growk 65536 "KiloBytes" lsilogic
"$OVA" import -O raw -d "$T/i-growk" "$T/growk.ova" >/dev/null 2>&1 || fail "KiloBytes units"
[ "$(stat -c %s "$T/i-growk/growk-disk1.raw")" = $((64 << 20)) ] || fail "KiloBytes capacity not honoured"
# a file larger than the declared capacity is refused
mkova "$T/small.ova" small 16 "byte * 2^20" lsilogic
rc=0; "$OVA" import -O raw -d "$T/i-small" "$T/small.ova" >/dev/null 2>"$T/err" || rc=$?
[ $rc = 1 ] && [ "$(grep -c "^ovatool: " "$T/err")" = 1 ] && grep -q "larger than the ovf:capacity" "$T/err" ||
    fail "file larger than capacity accepted (rc $rc): $(cat "$T/err")"
[ -z "$(ls -A "$T/i-small" 2>/dev/null)" ] || fail "refused import left files"
# absurd capacities: 2^63 bytes, 2^70 through units, not a number
for c in "9223372036854775808|byte" "1|byte * 2^70" "1|byte * 2^62 * 1024" "12abc|byte" "-1|byte"; do
    mkova "$T/absurd.ova" absurd "${c%%|*}" "${c#*|}" lsilogic
    rc=0; "$OVA" import -O raw -d "$T/i-absurd" "$T/absurd.ova" >/dev/null 2>"$T/err" || rc=$?
    [ $rc = 1 ] && [ "$(grep -c "^ovatool: " "$T/err")" = 1 ] && grep -q "disk vmdisk1: .*capacity.*refused" "$T/err" ||
        fail "capacity '$c' (rc $rc): $(cat "$T/err")"
    "$OVA" info "$T/absurd.ova" | matches "^warning: disk vmdisk1: " || fail "info does not warn about capacity '$c'"
    rm -f "$T/absurd.ova"
done

# --- a disk with no file: an empty disk of its capacity, attached
mkova "$T/empty.ova" empty 32 "byte * 2^20" lsilogicsas mf \
    '<Disk ovf:capacity="8" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk2"/>' \
    '<Item><rasd:AddressOnParent>1</rasd:AddressOnParent><rasd:ElementName>disk2</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk2</rasd:HostResource><rasd:InstanceID>5</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>'
"$OVA" import -O qcow2 -d "$T/i-empty" "$T/empty.ova" >"$T/out" 2>&1 || fail "file-less disk import: $(cat "$T/out")"
[ "$(qemu-img info --output=json "$T/i-empty/empty-disk2.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = $((8 << 20)) ] ||
    fail "empty disk not created at its capacity: $(cat "$T/out")"
python3 - "$T/i-empty/empty.xml" <<'PY' || fail "domain XML of the SAS appliance"
import sys, xml.etree.ElementTree as ET
dev = ET.parse(sys.argv[1]).find("devices")
disks = dev.findall("disk")
assert len(disks) == 2, "both disks attached"
assert all(d.find("target").get("bus") == "scsi" for d in disks)
ctl = [c for c in dev.findall("controller") if c.get("type") == "scsi"]
assert [c.get("model") for c in ctl] == ["lsisas1068"], [c.get("model") for c in ctl]
units = sorted(d.find("address").get("unit") for d in disks)
assert units == ["0", "1"], units
PY
grep -q -- "-device mptsas1068" "$T/i-empty/empty.sh" || fail "qemu line: no LSI SAS controller"
if command -v virt-xml-validate >/dev/null; then
    virt-xml-validate "$T/i-empty/empty.xml" >/dev/null 2>&1 || fail "virt-xml-validate: $(virt-xml-validate "$T/i-empty/empty.xml" 2>&1)"
fi
for m in "VirtualSCSI|vmpvscsi|pvscsi" "BusLogic|lsilogic|lsi53c895a" "lsilogic|lsilogic|lsi53c895a"; do
    IFS='|' read -r sub lv qd <<<"$m"
    mkova "$T/c.ova" ctl 32 "byte * 2^20" "$sub"
    "$OVA" import -O raw -d "$T/i-c-$sub" "$T/c.ova" >/dev/null 2>&1 || fail "controller $sub import"
    grep -q "model='$lv'" "$T/i-c-$sub/ctl.xml" && grep -q -- "-device $qd," "$T/i-c-$sub/ctl.sh" ||
        fail "controller $sub: want libvirt $lv, qemu $qd"
    rm -f "$T/c.ova"
done

# --- a DOCTYPE is refused, even one whose entities expand to nothing
mkova "$T/dt.ova" dt 32 "byte * 2^20" lsilogic nomf
mkdir "$T/dt"; tar -C "$T/dt" -xf "$T/dt.ova"
sed -i '1a <!DOCTYPE Envelope [<!ENTITY nothing "">]>' "$T/dt/vm.ovf"
sed -i 's|<Name>dt</Name>|<Name>\&nothing;</Name>|; s|ovf:id="dt"|ovf:id="\&nothing;"|' "$T/dt/vm.ovf"
( cd "$T/dt"; tar --format=ustar -cf "$T/dt2.ova" vm.ovf d1.vmdk )
for cmd in "info" "import -d $T/i-dt"; do
    rc=0; "$OVA" $cmd "$T/dt2.ova" >/dev/null 2>"$T/err" || rc=$?
    [ $rc = 1 ] && [ "$(grep -c "^ovatool: " "$T/err")" = 1 ] && grep -q "vm.ovf: line 2: .*DOCTYPE.*refused" "$T/err" ||
        fail "$cmd accepted a DOCTYPE (rc $rc): $(cat "$T/err")"
done
[ -z "$(ls -A "$T/i-dt" 2>/dev/null)" ] || fail "DOCTYPE import left files"

# --- VM names unusable as file or domain names: a safe one from the file name
for n in "" "--help" ".hidden" "../../etc/x" "a/b"; do
    rm -rf "$T/i-name"
    mkova "$T/my-appliance.ova" "$n" 32 "byte * 2^20" lsilogic
    "$OVA" import -O raw -d "$T/i-name" "$T/my-appliance.ova" >"$T/out" 2>"$T/err" || fail "name '$n': $(cat "$T/err")"
    grep -q "warning: VM name" "$T/err" || fail "name '$n': no warning"
    [ -f "$T/i-name/my-appliance.xml" ] && [ -f "$T/i-name/my-appliance.sh" ] &&
        [ -f "$T/i-name/my-appliance-disk1.raw" ] || fail "name '$n': outputs $(ls -A "$T/i-name")"
    grep -q "<name>my-appliance</name>" "$T/i-name/my-appliance.xml" || fail "name '$n': domain name"
    [ "$(ls -A "$T/i-name" | wc -l)" = 3 ] || fail "name '$n': stray files $(ls -A "$T/i-name")"
    rm -f "$T/my-appliance.ova"
done
# a dash-leading file name is made safe too
mkova "$T/-x.ova" "" 32 "byte * 2^20" lsilogic
"$OVA" import -O raw -d "$T/i-dash" -- "$T/-x.ova" >/dev/null 2>&1 || fail "dash file name"
[ -f "$T/i-dash/_x.xml" ] || fail "dash-leading file name not made safe: $(ls -A "$T/i-dash")"

# --- info --json carries what the text shows: missing files and unsafe references
mkdir "$T/bare"; tar -C "$T/bare" -xf "$T/nomf.ova" vm.ovf
"$OVA" info "$T/bare/vm.ovf" | matches "^warning: file 'd1.vmdk' referenced by the descriptor is missing" ||
    fail "text info: missing file"
"$OVA" info --json "$T/bare/vm.ovf" | python3 -c '
import json,sys; d=json.load(sys.stdin)
assert d["missing-files"] == 1 and d["unsafe-references"] == 0, d
assert any("d1.vmdk" in w and "missing" in w for w in d["warnings"]), d["warnings"]' || fail "json info: missing file"
echo ok
