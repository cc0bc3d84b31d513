#!/bin/bash
# ovatool export and convert never write their own input: an OVA named as
# one of the disks, a symlink or a hard link to one, a file of a disk's
# backing chain or an extent, or (convert) the appliance being converted or,
# for an unpacked .ovf, a file beside it that it reads (a disk, a chunk of
# one, the manifest), is refused with the reason before anything is written
# (no work folder made), and every input keeps its bytes (sha256).
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io
requires_ovatool
cd "$T"
qemu-img create -q -f qcow2 base.qcow2 8M
qemu-io -f qcow2 -c "write -P 0x33 0 1M" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c "write -P 0x44 4M 1M" top.qcow2 >/dev/null
qemu-img create -q -f vmdk -o subformat=monolithicFlat flat.vmdk 4M
"$OVA" export -n vm --disk top.qcow2 -o vm.ova >/dev/null || fail "plain export"
ln -s top.qcow2 link.ova
ln base.qcow2 hard.ova
mkdir sub && ln -s ../vm.ova sub/vm-link.ova
ln vm.ova vm-hard.ova
# the same appliance unpacked (x), and with its disk in two chunks (y)
mkdir x y && tar -C x -xf vm.ova
ln -s x/vm-disk1.vmdk disk-link.vmdk
ln x/vm-disk1.vmdk disk-hard.vmdk
split -b 32768 -d -a 9 x/vm-disk1.vmdk y/vm-disk1.vmdk.
[ -e y/vm-disk1.vmdk.000000001 ] || fail "the disk is not in two chunks"
sed 's|<File ovf:href="vm-disk1.vmdk" ovf:id="file1" ovf:size="[0-9]*"|& ovf:chunkSize="32768"|' \
    x/vm.ovf >y/vm.ovf
grep -q 'chunkSize="32768"' y/vm.ovf || fail "no chunked reference in y/vm.ovf"
sums() {
    sha256sum base.qcow2 top.qcow2 flat.vmdk flat-flat.vmdk vm.ova x/* y/* | cut -d' ' -f1
}
before=$(sums)

# refused OUT WHY ARGS...: exit 1, one line naming OUT and the input
refused() {
    local out=$1 why=$2; shift 2
    local rc=0
    "$OVA" "$@" -o "$out" >log 2>&1 || rc=$?
    [ $rc = 1 ] || fail "ovatool $* -o $out: exit $rc, not 1: $(cat log)"
    grep -q "^ovatool: $out: this is the $why.*; refusing to overwrite an input$" log ||
        fail "ovatool $* -o $out: $(cat log)"
    [ "$(wc -l <log)" = 1 ] || fail "ovatool $* -o $out: not one line: $(cat log)"
}
refused top.qcow2 "disk top.qcow2 or one of its files" export -n vm --disk top.qcow2
refused link.ova "disk top.qcow2 or one of its files" export -n vm --disk top.qcow2
refused base.qcow2 "disk top.qcow2 or one of its files" export -n vm --disk top.qcow2
refused hard.ova "disk top.qcow2 or one of its files" export -n vm --disk top.qcow2
refused flat-flat.vmdk "disk flat.vmdk or one of its files" export -n vm --disk top.qcow2 \
    --disk flat.vmdk
refused vm.ova "appliance vm.ova" convert --target vmware vm.ova
refused sub/vm-link.ova "appliance vm.ova" convert --target vmware vm.ova
refused vm-hard.ova "appliance vm.ova" convert --target vmware vm.ova
refused x/vm-disk1.vmdk "file vm-disk1.vmdk of the appliance x/vm.ovf" convert \
    --target vmware x/vm.ovf
refused disk-link.vmdk "file vm-disk1.vmdk of the appliance x/vm.ovf" convert \
    --target vmware x/vm.ovf
refused disk-hard.vmdk "file vm-disk1.vmdk of the appliance x/vm.ovf" convert \
    --target vmware x/vm.ovf
refused x/vm.mf "file vm.mf of the appliance x/vm.ovf" convert --target vmware x/vm.ovf
refused y/vm-disk1.vmdk.000000001 "file vm-disk1.vmdk.000000001 of the appliance y/vm.ovf" \
    convert --target vmware y/vm.ovf
[ "$(sums)" = "$before" ] || fail "an input changed"
[ -z "$(ls -A . x y | grep -e '\.work' -e '\.conv' -e '\.tmp')" ] || fail "files left: $(ls -A)"

# an OVA next to its inputs is still written
"$OVA" export -n vm --disk top.qcow2 --disk flat.vmdk -o two.ova >/dev/null || fail "export"
"$OVA" convert --target vmware vm.ova -o vmw.ova >/dev/null || fail "convert"
"$OVA" convert --target vmware y/vm.ovf -o y/vmw.ova >/dev/null || fail "convert of y/vm.ovf"
echo "own input: ok"
