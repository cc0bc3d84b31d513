#!/bin/bash
# ovatool: info on real OVF descriptors, manifests in both spellings and all
# three digests, certificates (signature and chain), tampering, malformed and
# hostile appliances, import to qcow2 with libvirt XML, export + schema check.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io openssl python3 xmllint genisoimage virt-xml-validate qemu-system-x86_64
requires_ovatool

# --- real descriptors from VirtualBox, vSphere, ovftool (when ../shared is here)
# (without ../shared the test ends as skipped, by name, after the rest passed)
if [ -d "$SHARED/corpus/ovf" ]; then
    o=$("$OVA" info "$SHARED/corpus/ovf/vmware/esxi-two-disks-virt-v2v.ovf")
    grep -q "^disk vmdisk2: disk2.vmdk, capacity 483183820800 bytes" <<<"$o" || fail "two-disks capacity: $o"
    grep -q "^controller 3: SCSI lsilogicsas" <<<"$o" || fail "controller"
    o=$("$OVA" info --json "$SHARED/corpus/ovf/virtualbox/vbox4.3-linux-ubuntu-trusty.ovf")
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["memory-mib"]==512 and d["cpus"]==1 and d["os-type"]=="Ubuntu_64" and d["flavor"]=="virtualbox", d' "$o" ||
        fail "vbox json: $o"
    "$OVA" info "$SHARED/corpus/ovf/ovf2/virtualsystemcollection-govmomi.ovf" | matches "ovf version: 2" ||
        fail "ovf2 namespace"
    # every real descriptor: CPUs, memory and the capacities of the disks of
    # its default configuration (values read off the XML by hand)
    while IFS='|' read -r f want; do
        got=$("$OVA" info --json "$SHARED/corpus/ovf/$f" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["cpus"], d["memory-mib"], " ".join(str(x["capacity"]) for x in d["disks"]))')
        [ "$got" = "$want" ] || fail "$f: got '$got', want '$want'"
    done <<'TABLE'
ovf2/virtualsystemcollection-govmomi.ovf|1 1024 4294967296
virtualbox/vbox4.3-linux-ubuntu-trusty.ovf|1 512 42949672960
virtualbox/vbox5.0-macosx-nxos-efi.ovf|2 8196 4294967296
virtualbox/vbox5.2-macosx-smartos-iso.ovf|1 1024 8388608000 282558464
vmware/complete-sections-govmomi.ovf|None None 107373568
vmware/esx-photon-govmomi.ovf|1 2048 17179869184
vmware/esxi-two-disks-virt-v2v.ovf|1 1024 53687091200 483183820800
vmware/ovftool4.0-multiple-disks-govmomi.ovf|2 64 42949672960 53687091200 107374182400 21474836480
vmware/vsphere-win7-virt-v2v.ovf|1 2048 34359738368
TABLE
    [ "$(ls "$SHARED"/corpus/ovf/*/*.ovf | wc -l)" = 9 ] || echo "note: the corpus has OVFs this table does not cover"
    "$OVA" info "$SHARED/corpus/ovf/vmware/ovftool4.0-multiple-disks-govmomi.ovf" | matches "^configuration: large" ||
        fail "default deployment option"
    # an href that climbs out of the folder is reported, never followed
    "$OVA" info "$SHARED/corpus/ovf/vmware/complete-sections-govmomi.ovf" | matches "unsafe references: 1" ||
        fail "../ href not reported"
    if "$OVA" verify "$SHARED/corpus/ovf/vmware/complete-sections-govmomi.ovf" 2>/dev/null; then
        fail "verify accepted a reference leaving the appliance"; fi
fi

# --- a VMware-style OVA built here: streamOptimized disk by qemu-img
mkdir -p "$T/a"
qemu-img create -q -f raw "$T/src.raw" 32M
qemu-io -f raw -c "write -P 0x11 0 1M" -c "write -P 0x22 20M 3M" "$T/src.raw" >/dev/null
qemu-img convert -O vmdk -o subformat=streamOptimized "$T/src.raw" "$T/a/test-disk1.vmdk"
size=$(stat -c %s "$T/a/test-disk1.vmdk")
cat >"$T/a/test.ovf" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
  xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References><File ovf:href="test-disk1.vmdk" ovf:id="file1" ovf:size="$size"/></References>
  <DiskSection><Info>disks</Info>
    <Disk ovf:capacity="32" ovf:capacityAllocationUnits="byte * 2^20" ovf:diskId="vmdisk1" ovf:fileRef="file1"
      ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/></DiskSection>
  <VirtualSystem ovf:id="testvm"><Info>vm</Info><Name>testvm</Name>
    <OperatingSystemSection ovf:id="96"><Info>os</Info><Description>Debian 12</Description></OperatingSystemSection>
    <VirtualHardwareSection><Info>hw</Info>
      <Item><rasd:ElementName>2 CPUs</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>mem</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>768</rasd:VirtualQuantity></Item>
      <Item><rasd:ElementName>scsi</rasd:ElementName><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6</rasd:ResourceType></Item>
      <Item><rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>disk</rasd:ElementName><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource><rasd:InstanceID>4</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Connection>VM Network</rasd:Connection><rasd:ElementName>nic</rasd:ElementName><rasd:InstanceID>5</rasd:InstanceID><rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection></VirtualSystem></Envelope>
XML
mkova() {  # mkova OUT MF-STYLE(sha256|sha1|spaced|sha512) [cert]
    local out=$1 style=$2
    ( cd "$T/a"
      case $style in
        sha256) for f in test.ovf test-disk1.vmdk; do echo "SHA256($f)= $(sha256sum $f | cut -d' ' -f1)"; done ;;
        sha1) for f in test.ovf test-disk1.vmdk; do echo "SHA1($f)= $(sha1sum $f | cut -d' ' -f1)"; done ;;
        sha512) for f in test.ovf test-disk1.vmdk; do echo "SHA512($f)= $(sha512sum $f | cut -d' ' -f1)"; done ;;
        spaced) for f in test.ovf test-disk1.vmdk; do printf 'SHA256 (%s) = %s\r\n' $f "$(sha256sum $f | cut -d' ' -f1)"; done ;;
      esac >test.mf
      members="test.ovf test-disk1.vmdk test.mf"
      if [ -n "${3:-}" ]; then
          echo "SHA256(test.mf)= $(openssl dgst -sha256 -sign "$T/leaf.key" test.mf | od -An -vtx1 | tr -d ' \n')" >test.cert
          cat "$T/leaf.crt" >>test.cert
          members="$members test.cert"
      fi
      tar --format=ustar -cf "$out" $members; rm -f test.mf test.cert )
}
for style in sha256 sha1 sha512 spaced; do
    mkova "$T/t-$style.ova" $style
    "$OVA" verify "$T/t-$style.ova" >"$T/out" || fail "verify $style: $(cat "$T/out")"
    grep -q "2 digests ok" "$T/out" || fail "verify $style output"
done
o=$("$OVA" info "$T/t-sha256.ova")
grep -q "^cpus: 2$" <<<"$o" && grep -q "^memory: 768 MiB$" <<<"$o" && grep -q "^manifest: ok" <<<"$o" ||
    fail "info of built OVA: $o"

# tampering: one byte of the disk changed -> verify and import refuse
cp "$T/a/test-disk1.vmdk" "$T/keep.vmdk"
mkova "$T/t-good.ova" sha256
python3 - "$T/a/test-disk1.vmdk" <<'PY'
import sys; f=open(sys.argv[1],"r+b"); f.seek(4000); b=f.read(1); f.seek(4000); f.write(bytes([b[0]^1]))
PY
# rebuild with the manifest of the good disk
( cd "$T"; mkdir -p bad; cd bad; tar -xf "$T/t-good.ova" test.mf; cp "$T/a/test.ovf" "$T/a/test-disk1.vmdk" .;
  tar --format=ustar -cf "$T/t-bad.ova" test.ovf test-disk1.vmdk test.mf )
cp "$T/keep.vmdk" "$T/a/test-disk1.vmdk"
if "$OVA" verify "$T/t-bad.ova" 2>"$T/err"; then fail "tampered OVA verified"; fi
grep -q "digest of test-disk1.vmdk does not match" "$T/err" || fail "tamper message: $(cat "$T/err")"
if "$OVA" import -d "$T/imp-bad" "$T/t-bad.ova" 2>"$T/err"; then fail "tampered OVA imported"; fi
[ -z "$(ls -A "$T/imp-bad" 2>/dev/null)" ] || fail "failed import left files: $(ls -A "$T/imp-bad")"

# Digests are computed while reading only for SHA256, or for what a manifest
# placed before the disk names; any other is computed by a second read (the
# archive again on verify, the extracted copy on import).  Each path must
# accept the good disk and catch the changed byte.
cp "$T/a/test-disk1.vmdk" "$T/good.vmdk"
cp "$T/bad/test-disk1.vmdk" "$T/flipped.vmdk"
for alg in sha1 sha512; do
    for order in last first; do
        for disk in good flipped; do
            ( cd "$T/a"; cp "$T/good.vmdk" test-disk1.vmdk
              for f in test.ovf test-disk1.vmdk; do
                  echo "${alg^^}($f)= $(${alg}sum $f | cut -d' ' -f1)"
              done >test.mf
              cp "$T/$disk.vmdk" test-disk1.vmdk
              if [ $order = last ]; then m="test.ovf test-disk1.vmdk test.mf"
              else m="test.ovf test.mf test-disk1.vmdk"; fi
              tar --format=ustar -cf "$T/d.ova" $m; rm test.mf; cp "$T/good.vmdk" test-disk1.vmdk )
            what="$alg manifest $order, $disk disk"
            rm -rf "$T/imp-d"
            if [ $disk = good ]; then
                "$OVA" verify "$T/d.ova" >"$T/out" 2>&1 || fail "verify, $what: $(cat "$T/out")"
                "$OVA" import -d "$T/imp-d" "$T/d.ova" >"$T/out" 2>&1 || fail "import, $what: $(cat "$T/out")"
            else
                "$OVA" verify "$T/d.ova" >"$T/out" 2>&1 && fail "verify accepted the $what"
                grep -q "digest of test-disk1.vmdk does not match" "$T/out" || fail "$what: $(cat "$T/out")"
                "$OVA" import -d "$T/imp-d" "$T/d.ova" >"$T/out" 2>&1 && fail "import accepted the $what"
                grep -q "digest of test-disk1.vmdk does not match" "$T/out" || fail "$what: $(cat "$T/out")"
            fi
        done
    done
done
echo "ok: SHA1 and SHA512 manifests, before and after the disk"

# a manifest that leaves a file out proves nothing about it: refused
( cd "$T/a"; echo "SHA256(test.ovf)= $(sha256sum test.ovf | cut -d' ' -f1)" >test.mf
  tar --format=ustar -cf "$T/t-partial.ova" test.ovf test-disk1.vmdk test.mf; rm test.mf )
if "$OVA" verify "$T/t-partial.ova" 2>"$T/err"; then fail "partial manifest verified"; fi
grep -q "does not list test-disk1.vmdk" "$T/err" || fail "partial manifest message: $(cat "$T/err")"
if "$OVA" import -d "$T/imp-partial" "$T/t-partial.ova" 2>/dev/null; then fail "partial manifest imported"; fi
[ -z "$(ls -A "$T/imp-partial" 2>/dev/null)" ] || fail "partial-manifest import left files"

# certificates: a CA, a leaf signed by it, and a stranger CA
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/ca.key" -out "$T/ca.crt" -subj /CN=vdisk-test-ca -days 2 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$T/leaf.key" -out "$T/leaf.csr" -subj /CN=vdisk-signer 2>/dev/null
openssl x509 -req -in "$T/leaf.csr" -CA "$T/ca.crt" -CAkey "$T/ca.key" -CAcreateserial -out "$T/leaf.crt" -days 2 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/other.key" -out "$T/other.crt" -subj /CN=other -days 2 2>/dev/null
mkova "$T/t-signed.ova" sha256 cert
"$OVA" verify --ca-file "$T/ca.crt" "$T/t-signed.ova" >"$T/out" || fail "signed verify: $(cat "$T/out")"
grep -q "signer /CN=vdisk-signer" "$T/out" && grep -q "chain: trusted" "$T/out" || fail "cert output: $(cat "$T/out")"
if "$OVA" verify --ca-file "$T/other.crt" "$T/t-signed.ova" >"$T/out" 2>&1; then fail "untrusted chain accepted"; fi

# --- malformed and hostile appliances: one-line errors, exit 1, quickly
printf 'not a tar archive at all' >"$T/junk.ova"
cat >"$T/lol.ovf" <<'XML'
<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lollollollollollollollollollol">
<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;"><!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;"><!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><VirtualSystem><Name>&lol6;&xxe;</Name></VirtualSystem></Envelope>
XML
printf '<Envelope><References>' >"$T/trunc.ovf"
printf '<NotOvf/>' >"$T/notovf.ovf"
for bad in junk.ova lol.ovf trunc.ovf notovf.ovf; do
    rc=0; timeout 10 "$OVA" info "$T/$bad" >"$T/out" 2>"$T/err" || rc=$?
    if [ $bad = lol.ovf ]; then
        # entities are not expanded, external ones not loaded: a DOCTYPE is refused
        grep -q "root:" "$T/out" && fail "external entity was loaded"
        grep -q "DOCTYPE" "$T/err" || fail "DOCTYPE not refused: $(cat "$T/err")"
    fi
    [ $rc = 1 ] || fail "$bad: exit $rc"
    [ "$(wc -l <"$T/err")" = 1 ] || fail "$bad: error not one line: $(cat "$T/err")"
done

# hostile archives: members that climb out, absolute names, links, a member
# larger than declared, a gzip bomb, a 100 MB descriptor; nothing may appear
# outside OUTDIR and nothing may be left in it
python3 - "$T" <<'PY'
import io, os, sys, tarfile, gzip
T = sys.argv[1]
ovf = open(f"{T}/a/test.ovf", "rb").read()
disk = open(f"{T}/a/test-disk1.vmdk", "rb").read()
def mk(name, members):
    with tarfile.open(f"{T}/{name}", "w", format=tarfile.USTAR_FORMAT) as t:
        for m in members:
            ti = tarfile.TarInfo(m[0])
            if m[1] == "sym":
                ti.type = tarfile.SYMTYPE; ti.linkname = "/etc/passwd"; t.addfile(ti)
            elif m[1] == "hard":
                ti.type = tarfile.LNKTYPE; ti.linkname = "test.ovf"; t.addfile(ti)
            else:
                ti.size = len(m[1]); t.addfile(ti, io.BytesIO(m[1]))
mk("h-dotdot.ova", [("test.ovf", ovf), ("../escaped", b"x")])
mk("h-abs.ova", [("test.ovf", ovf), (f"{T}/abs-escaped", b"x")])
mk("h-sym.ova", [("test.ovf", ovf), ("test-disk1.vmdk", "sym")])
mk("h-hard.ova", [("test.ovf", ovf), ("test-disk1.vmdk", "hard")])
mk("h-bigger.ova", [("test.ovf", ovf), ("test-disk1.vmdk", disk + b"\0" * 4096)])
# 128 MiB of zeros: past both of import's limits (64 times the compressed
# size plus 64 MiB, about 72 MiB here; the 32 MiB capacity plus 64 MiB),
# as 300 MiB was, for less than half of Python's compressing
bomb = gzip.compress(b"\0" * (128 << 20), 9, mtime=0)
bovf = ovf.replace(b'ovf:size="%d"/>' % len(disk), b'ovf:size="%d" ovf:compression="gzip"/>' % len(bomb))
mk("h-bomb.ova", [("test.ovf", bovf), ("test-disk1.vmdk", bomb)])
mk("h-huge.ova", [("test.ovf", b"<Envelope>" + b" " * (100 << 20) + b"</Envelope>")])
PY
for h in dotdot abs sym hard bigger bomb huge; do
    rc=0; timeout 60 "$OVA" import --no-verify -O raw -d "$T/imp-$h" "$T/h-$h.ova" >/dev/null 2>"$T/err" || rc=$?
    [ $rc = 1 ] || fail "hostile $h: exit $rc ($(cat "$T/err"))"
    [ "$(wc -l <"$T/err")" = 1 ] || fail "hostile $h: error not one line: $(cat "$T/err")"
    [ -z "$(ls -A "$T/imp-$h" 2>/dev/null)" ] || fail "hostile $h left files: $(ls -A "$T/imp-$h")"
    echo "refused $h: $(cat "$T/err")"
done
[ ! -e "$T/escaped" ] && [ ! -e "$T/abs-escaped" ] || fail "a member was written outside OUTDIR"

# --- import (needs the VMDK reader)
"$VDCONVERT" info "$T/a/test-disk1.vmdk" 2>/dev/null | matches "file format: vmdk" ||
    fail "vdisk does not read the appliance's VMDK as vmdk"
{
    "$OVA" import -O qcow2 -d "$T/imp" "$T/t-signed.ova" >"$T/out" 2>&1 || fail "import: $(cat "$T/out")"
    qemu-img compare -q "$T/src.raw" "$T/imp/testvm-disk1.qcow2" || fail "imported disk differs"
    qemu-img check -q "$T/imp/testvm-disk1.qcow2" || fail "imported disk check"
    xmllint --noout "$T/imp/testvm.xml" || fail "domain XML not well-formed"
    grep -q "bus='scsi'" "$T/imp/testvm.xml" && grep -q "<vcpu>2</vcpu>" "$T/imp/testvm.xml" &&
        grep -q "model type='vmxnet3'" "$T/imp/testvm.xml" || fail "domain XML content"
    sh -n "$T/imp/testvm.sh" || fail "qemu script syntax"
    ls -A "$T/imp" | matches ovatool-import && fail "work folder left behind"
    # chunked + gzip-compressed file references
    ( cd "$T/a"; gzip -c test-disk1.vmdk >g.gz; split -b 100000 -d -a 9 g.gz test-disk1.vmdk.
      sed 's|ovf:size="[0-9]*"/>|ovf:size="'"$(stat -c %s g.gz)"'" ovf:compression="gzip" ovf:chunkSize="100000"/>|' test.ovf >c.ovf
      mkdir -p ../c; mv c.ovf ../c/test.ovf; mv test-disk1.vmdk.0* ../c/; rm g.gz )
    "$OVA" import --no-verify -O raw -d "$T/impc" "$T/c/test.ovf" >/dev/null 2>"$T/err" || fail "chunked import: $(cat "$T/err")"
    cmp "$T/src.raw" "$T/impc/testvm-disk1.raw" || fail "chunked gzip import differs"
    # a VirtualBox-style appliance with an ISO on the IDE controller: the ISO
    # is attached read-only as a CD-ROM with its bytes unchanged, not
    # converted like a disk; the qemu line must be one qemu accepts
    {
        mkdir -p "$T/iso/root" "$T/v"; echo "vdisk iso" >"$T/iso/root/README"
        genisoimage -quiet -V VDISKCD -o "$T/v/vb-disk2.iso" "$T/iso/root"
        cp "$T/a/test-disk1.vmdk" "$T/v/vb-disk1.vmdk"
        isz=$(stat -c %s "$T/v/vb-disk2.iso")
        sed -e 's|<File ovf:href="test-disk1.vmdk" ovf:id="file1" ovf:size="[0-9]*"/>|&<File ovf:href="vb-disk2.iso" ovf:id="file2"/>|' \
            -e 's|test-disk1.vmdk|vb-disk1.vmdk|' \
            -e 's|</DiskSection>|<Disk ovf:capacity="'"$isz"'" ovf:diskId="iso2" ovf:fileRef="file2" ovf:format="http://www.ecma-international.org/publications/standards/Ecma-119.htm"/>&|' \
            -e 's|<rasd:ResourceSubType>lsilogic</rasd:ResourceSubType><rasd:ResourceType>6<|<rasd:ResourceSubType>PIIX4</rasd:ResourceSubType><rasd:ResourceType>5<|' \
            -e 's|</VirtualHardwareSection>|<Item><rasd:AddressOnParent>1</rasd:AddressOnParent><rasd:ElementName>cdrom1</rasd:ElementName><rasd:HostResource>/disk/iso2</rasd:HostResource><rasd:InstanceID>6</rasd:InstanceID><rasd:Parent>3</rasd:Parent><rasd:ResourceType>15</rasd:ResourceType></Item>&|' \
            "$T/a/test.ovf" >"$T/v/vb.ovf"
        "$OVA" info "$T/v/vb.ovf" | matches "^cd-rom iso2: vb-disk2.iso" || fail "ISO not shown as a CD-ROM: $("$OVA" info "$T/v/vb.ovf")"
        "$OVA" import --no-verify -O qcow2 -d "$T/impv" "$T/v/vb.ovf" >"$T/out" 2>&1 || fail "ISO import: $(cat "$T/out")"
        cmp "$T/v/vb-disk2.iso" "$T/impv/testvm-cd2.iso" || fail "imported ISO is not byte-identical"
        qemu-img compare -q "$T/src.raw" "$T/impv/testvm-disk1.qcow2" || fail "disk beside the ISO differs"
        python3 - "$T/impv/testvm.xml" <<'PY' || fail "domain XML: CD-ROM not attached as such"
import sys, xml.etree.ElementTree as ET
d = {x.find("target").get("dev"): x for x in ET.parse(sys.argv[1]).findall("devices/disk")}
cd = [x for x in d.values() if x.get("device") == "cdrom"]
assert len(cd) == 1 and len(d) == 2, d
assert cd[0].find("driver").get("type") == "raw" and cd[0].find("readonly") is not None
assert cd[0].find("target").get("bus") == "sata" and cd[0].find("source").get("file").endswith("testvm-cd2.iso")
PY
        virt-xml-validate "$T/impv/testvm.xml" >/dev/null 2>&1 || fail "virt-xml-validate: $(virt-xml-validate "$T/impv/testvm.xml" 2>&1)"
        grep -q "media=cdrom,readonly=on -device ide-cd" "$T/impv/testvm.sh" || fail "qemu line: no CD-ROM"
        {
            # qemu parses the devices and stays up (paused) until killed;
            # a bad device option makes it exit at once with an error
            rc=0; QEMU_ACCEL=tcg QEMU_CPU=max timeout 5 "$T/impv/testvm.sh" -S -nic none \
                </dev/null >"$T/qout" 2>&1 || rc=$?
            [ $rc = 124 ] || fail "qemu refused the generated command line (rc $rc): $(head -3 "$T/qout")"
        }
    }
}

# --- export (needs the streamOptimized VMDK writer)
"$VDCONVERT" create -O vmdk -o subformat=streamOptimized "$T/probe.vmdk" 1M >/dev/null ||
    fail "vdconvert cannot write streamOptimized VMDK (export)"
{
    qemu-img convert -O qcow2 "$T/src.raw" "$T/src.qcow2"
    "$OVA" export -n exported --disk "$T/src.qcow2" --cpus 2 --memory 512 --os-type debian \
        --target vmware --sign "$T/leaf.key" --cert "$T/leaf.crt" -o "$T/exp.ova" || fail "export"
    [ "$(tar -tf "$T/exp.ova" | head -1)" = exported.ovf ] || fail "descriptor not first"
    "$OVA" verify --ca-file "$T/ca.crt" "$T/exp.ova" >/dev/null || fail "exported OVA does not verify"
    mkdir "$T/x"; tar -C "$T/x" -xf "$T/exp.ova"
    qemu-img compare -q "$T/src.raw" "$T/x/exported-disk1.vmdk" || fail "exported disk differs"
    if [ -d "$SHARED/corpus/ovf/schema" ]; then
        xmllint --nonet --noout --schema "$SHARED/corpus/ovf/schema/ovf-1.1.1/dsp8023_1.1.1.xsd" \
            "$T/x/exported.ovf" 2>"$T/err" || fail "OVF 1 schema: $(cat "$T/err")"
        "$OVA" export -n e2 --disk "$T/src.raw" --ovf-version 2 -o "$T/exp2.ova" >/dev/null
        tar -C "$T/x" -xf "$T/exp2.ova" e2.ovf
        xmllint --nonet --noout --schema "$SHARED/corpus/ovf/schema/ovf-2.0.1/dsp8023_2.0.1.xsd" \
            "$T/x/e2.ovf" 2>"$T/err" || fail "OVF 2 schema: $(cat "$T/err")"
    fi
}
[ -d "$SHARED/corpus/ovf" ] || skip "../shared/corpus/ovf absent: real descriptors and the OVF schemas not checked (the rest passed)"
echo ok
