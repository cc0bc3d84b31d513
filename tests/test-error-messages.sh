#!/bin/bash
# test-error-messages: what a message shows from image metadata stays one
# line: control characters in a backing file name (newline, ESC sequences)
# come out escaped, in errors and in `info`; a backing chain deeper than 64
# files says so first, naming the top file and the one too deep, however
# long the names are; a library loaded on first use (libnbd, libxml2) that
# cannot be loaded is named in one line with its package, exit 1.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img

cd "$T"
# --- control characters from a backing file name ---------------------------
qemu-img create -q -f qcow2 -u -b $'evil\n\e[31mname\x7f.raw' -F raw ctl.qcow2 1M
rc=0; msg=$("$VDCONVERT" info ctl.qcow2 2>&1 >/dev/null) || rc=$?
[ $rc != 0 ] || fail "a missing backing file was accepted"
[ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] || fail "not one line: $msg"
printf '%s' "$msg" | matches $'[\x01-\x1f\x7f]' && fail "control characters in: $(printf '%q' "$msg")"
grep -qF 'evil\n\e[31mname\x7f.raw' <<<"$msg" || fail "not escaped as expected: $msg"
echo "ok: $msg"

# --- a chain deeper than 64 files -------------------------------------------
# Long names: with every level's name in front, the reason would be cut off.
long=$(printf 'l%.0s' $(seq 1 40))
"$VDCONVERT" create -O qcow2 "c0-$long.qcow2" 1M >/dev/null
for i in $(seq 1 64); do
    qemu-img create -q -f qcow2 -u -b "c$((i - 1))-$long.qcow2" -F qcow2 "c$i-$long.qcow2" 1M
done
"$VDCONVERT" info "c63-$long.qcow2" >/dev/null || fail "a chain of 64 files does not open"
rc=0; msg=$("$VDCONVERT" info "c64-$long.qcow2" 2>&1 >/dev/null) || rc=$?
[ $rc != 0 ] || fail "a chain of 65 files opened"
[ "$msg" = "vdconvert: c64-$long.qcow2: backing chain deeper than 64 files (c0-$long.qcow2 is file 65)" ] ||
    fail "chain depth message: $msg"
echo "ok: $msg"

# --- a library loaded on first use that cannot be loaded --------------------
# libnbd (NBD URIs) and libxml2 (Parallels bundles) are dlopened by libvdisk
# on first use (libvdisk/lazylib.c).  An empty file under the library's
# name, found first through LD_LIBRARY_PATH, makes that dlopen fail as a
# broken install does (the real library cannot be hidden without removing
# it): the user gets one line naming the library and its package, exit 1.
mkdir nbd-stub xml-stub
: >nbd-stub/libnbd.so.0
: >xml-stub/libxml2.so.2
# unloadable STUB RC WANT CMD...: CMD run with STUB's library first in the
# search path exits RC with one line of error containing WANT
unloadable() {
    local stub=$T/$1 want_rc=$2 want=$3 rc=0 msg
    shift 3
    msg=$(LD_LIBRARY_PATH=$stub${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$@" 2>&1 >/dev/null) || rc=$?
    [ $rc = "$want_rc" ] || fail "$*: exit $rc, want $want_rc: $msg"
    [ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] || fail "$*: not one line: $msg"
    grep -qF -- "$want" <<<"$msg" || fail "$*: '$msg' lacks '$want'"
    echo "ok: $msg"
}
unloadable nbd-stub 1 "vdconvert: nbd://127.0.0.1:9/: nbd: cannot load libnbd.so.0 (install libnbd0): $T/nbd-stub/libnbd.so.0: " \
    "$VDCONVERT" nbd://127.0.0.1:9/ out.raw
mkdir b.hdd
printf '<?xml version="1.0"?>\n<Parallels_disk_image Version="1.0"></Parallels_disk_image>\n' \
    >b.hdd/DiskDescriptor.xml
unloadable xml-stub 1 "vdconvert: b.hdd/DiskDescriptor.xml: parallels: cannot load libxml2.so.2 (install libxml2): " \
    "$VDCONVERT" b.hdd out.raw
[ ! -e out.raw ] || fail "an output was left"
OVA=${OVATOOL:-$VD_BUILD/tools/ovatool/ovatool}
if [ -x "$OVA" ]; then
    unloadable nbd-stub 1 "ovatool: nbd://127.0.0.1:9/: nbd: cannot load libnbd.so.0 (install libnbd0): " \
        "$OVA" export -n vm --disk nbd://127.0.0.1:9/ -o vm.ova
    [ -z "$(ls -A | grep '^vm\.ova')" ] || fail "export left files: $(ls -A)"
    # ovatool reads every OVF with libxml2 and links it: the dynamic loader
    # refuses to start it (exit 127), before any file is read
    "$VDCONVERT" create -O raw disk.raw 1M >/dev/null
    "$OVA" export -n vm --disk disk.raw -o vm.ova >/dev/null || fail "export"
    unloadable xml-stub 127 "libxml2.so.2: file too short" "$OVA" info vm.ova
else
    echo "not built: ovatool (its cases not run)"
fi
