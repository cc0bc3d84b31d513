#!/bin/bash
# ovatool export and convert never write their own input: an OVA named as
# one of the disks, a symlink or a hard link to one, a file of a disk's
# backing chain or an extent, or (convert) the appliance being converted,
# is refused with the reason before anything is written (no work folder
# made), and every input keeps its bytes (sha256).
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
sums() { sha256sum base.qcow2 top.qcow2 flat.vmdk flat-flat.vmdk vm.ova | cut -d' ' -f1; }
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
[ "$(sums)" = "$before" ] || fail "an input changed"
[ -z "$(ls -A | grep -e '\.work' -e '\.conv' -e '\.tmp')" ] || fail "files left: $(ls -A)"

# an OVA next to its inputs is still written
"$OVA" export -n vm --disk top.qcow2 --disk flat.vmdk -o two.ova >/dev/null || fail "export"
"$OVA" convert --target vmware vm.ova -o vmw.ova >/dev/null || fail "convert"
echo "own input: ok"
