#!/bin/bash
# OUT that is a symbolic link is written through, as qemu-img does: the new
# file is made beside the file the link leads to and renamed onto it, so the
# link stays a link and its target holds the output.  A dangling link whose
# folder exists makes the file; a link into a missing folder, a loop, a
# link to the input and a VMDK through a link into another folder are
# refused with one line, leaving every link and file as it was.  ovatool's
# outputs (export's OVA, import's disks and texts) do the same.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io
requires_ovatool
V=$VDCONVERT
cd "$T"
qemu-img create -q -f raw a.raw 4M
qemu-io -f raw -c "write -P 0x5a 0 1M" -c "write -P 0xa5 3M 512K" a.raw >/dev/null
mkdir d
# is_link LINK TARGET: LINK is still a symbolic link with that target.
is_link() { [ -L "$1" ] && [ "$(readlink "$1")" = "$2" ] || fail "$1: no longer a link to $2"; }
# holds FILE FMT: FILE is a regular FMT image showing a.raw.
holds() {
    [ -f "$1" ] && [ ! -L "$1" ] || fail "$1: not a regular file"
    qemu-img compare -q -f raw -F "$2" a.raw "$1" || fail "$1: does not hold the output"
}
no_temps() { [ -z "$(ls -A . d | grep -e vdconvert -e '\.tmp')" ] || fail "left: $(ls -A . d)"; }

# to an existing file, in another folder and through a chain of two links
echo old >d/t.qcow2
ln -s d/t.qcow2 l.qcow2
"$V" -f raw -O qcow2 a.raw l.qcow2 || fail "through a link"
is_link l.qcow2 d/t.qcow2 && holds d/t.qcow2 qcow2
echo old >d/r.raw
ln -s r.raw d/l1.raw && ln -s d/l1.raw l2.raw
"$V" -f raw -O raw a.raw l2.raw || fail "through two links"
is_link l2.raw d/l1.raw && is_link d/l1.raw r.raw && holds d/r.raw raw
# dangling, its folder there: the file is made
ln -s d/new.qcow2 dang.qcow2
"$V" -f raw -O qcow2 a.raw dang.qcow2 || fail "dangling link"
is_link dang.qcow2 d/new.qcow2 && holds d/new.qcow2 qcow2
# a VMDK with an extent, the link beside its target: both files there
ln -s t.vmdk d/lv.vmdk
"$V" -f raw -O vmdk -o subformat=monolithicFlat a.raw d/lv.vmdk || fail "vmdk through a link"
is_link d/lv.vmdk t.vmdk && holds d/t.vmdk vmdk
qemu-img compare -q -f raw -F vmdk a.raw d/lv.vmdk || fail "d/lv.vmdk: not read through the link"
[ -f d/t-flat.vmdk ] || fail "the extent is not beside its descriptor: $(ls d)"
no_temps

# refused, one line naming OUT: nothing made, links kept
refused() {
    local out=$1 why=$2; shift 2
    if "$V" "$@" >log 2>&1; then fail "vdconvert $*: not refused"; fi
    matches "^vdconvert: $out: $why" log || fail "vdconvert $*: $(cat log)"
    [ "$(wc -l <log)" = 1 ] || fail "vdconvert $*: not one line: $(cat log)"
}
ln -s nodir/x.qcow2 missing.qcow2
refused missing.qcow2 "a symbolic link to .*/nodir/x.qcow2, whose folder does not exist" \
    -f raw -O qcow2 a.raw missing.qcow2
ln -s loop2 loop1 && ln -s loop1 loop2
refused loop1 "a symbolic link that loops" -f raw -O qcow2 a.raw loop1
ln -s a.raw in.raw
sum=$(sha256sum <a.raw)
refused in.raw "this is the input a.raw" -f raw -O raw a.raw in.raw
[ "$(sha256sum <a.raw)" = "$sum" ] || fail "the input changed"
ln -s d/t.vmdk far.vmdk
refused far.vmdk "a symbolic link into another folder" -f raw -O vmdk a.raw far.vmdk
is_link missing.qcow2 nodir/x.qcow2 && is_link loop1 loop2 && is_link loop2 loop1
is_link in.raw a.raw && is_link far.vmdk d/t.vmdk
[ ! -e nodir ] || fail "a folder was made"
no_temps

# ovatool, which never overwrites an OVA or disk (a dangling link here):
# export's OVA, import's disk and domain XML
ln -s d/real.ova o.ova
"$OVA" export -n vm --disk a.raw -o o.ova >log 2>&1 || fail "ovatool export: $(cat log)"
is_link o.ova d/real.ova
[ -f d/real.ova ] && [ ! -L d/real.ova ] || fail "d/real.ova: not a regular file"
"$OVA" verify d/real.ova >log 2>&1 || fail "the OVA in d/real.ova: $(cat log)"
mkdir imp
ln -s ../d/disk.qcow2 imp/vm-disk1.qcow2
echo old >d/vm.xml && ln -s ../d/vm.xml imp/vm.xml
"$OVA" import -d imp o.ova >log 2>&1 || fail "ovatool import: $(cat log)"
is_link imp/vm-disk1.qcow2 ../d/disk.qcow2 && holds d/disk.qcow2 qcow2
is_link imp/vm.xml ../d/vm.xml
matches "<domain" d/vm.xml || fail "d/vm.xml: $(cat d/vm.xml)"
no_temps
echo "symlink out: ok"
