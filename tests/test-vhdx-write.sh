#!/bin/bash
# test-vhdx-write: every VHDX variant vdconvert writes (dynamic, fixed, block
# sizes 1M and 256M, a bigger log, 4096-byte logical sectors; a size that is
# not a whole number of blocks with data in the first and last sectors)
# passes `qemu-img check`, equals the source by `qemu-img compare`, and is
# read the same by libvhdi (vhdiinfo; pyvhdi for the content).  qemu 7.2
# refuses 4096-byte logical sectors ("Operation not supported"), so that one
# is judged by libvhdi only.
# Our log is real: with VDISK_VHDX_TEST_CRASH=after-log (test build of the
# library, tests/crash-writer) the writer stops once
# its log entry is durable (BAT not yet updated in place), and then qemu's
# replay (check -r all) and ours (read-only, in memory) both give the data.
# A differencing VHDX made with `vdconvert create -b` is read by libvhdi as
# its parent's content.
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img vhdiinfo python3
/usr/bin/python3 -c 'import pyvhdi' 2>/dev/null || skip "python3-libvhdi not installed"

SIZE=$((7 * 1048576 + 1536))
pattern_raw "$T/src.raw" $SIZE


for opts in subformat=dynamic subformat=fixed block_size=1M block_size=256M,log_size=4M \
            logical_sector_size=4096; do
    out=$T/out-${opts//[=,]/_}.vhdx
    "$VDCONVERT" -O vhdx -o "$opts" "$T/src.raw" "$out" || fail "convert -o $opts"
    vhdi_judge "$out" "$T/src.raw" "$opts"
    case $opts in
    logical_sector_size=4096)
        [ "$VHDI_SIZE" = $(( (SIZE + 4095) / 4096 * 4096 )) ] || fail "$opts: size $VHDI_SIZE"
        qemu-img info -f vhdx "$out" >/dev/null 2>&1 && echo "note: qemu now reads 4K sectors" ;;
    *)
        [ "$VHDI_SIZE" = $SIZE ] || fail "$opts: libvhdi size $VHDI_SIZE, want $SIZE"
        qemu-img check -f vhdx "$out" >"$T/check.txt" 2>&1 || fail "$opts: qemu-img check: $(cat "$T/check.txt")"
        qemu-img compare -q -f raw "$T/src.raw" -F vhdx "$out" || fail "$opts: qemu-img compare differs" ;;
    esac
    echo "ok: $opts"
done
# The same without data in the last sector (the last block stays a hole).
without_last_sector "$T/src.raw" "$T/notail.raw"
for opts in subformat=dynamic subformat=fixed; do
    "$VDCONVERT" -O vhdx -o "$opts" "$T/notail.raw" "$T/notail-$opts.vhdx" || fail "notail $opts"
    qemu-img compare -q -f raw "$T/notail.raw" -F vhdx "$T/notail-$opts.vhdx" || fail "notail $opts differs"
    vhdi_judge "$T/notail-$opts.vhdx" "$T/notail.raw" "notail $opts"
    echo "ok: $opts without data in the last sector"
done

grep -q "Fixed" <(vhdiinfo "$T/out-subformat_fixed.vhdx") || fail "fixed VHDX not reported Fixed"

# --- a crash after the log entry is durable --------------------------------
# crash-writer links the test build of libvdisk, whose VHDX driver (only
# there) stops writing anything once a log entry is durable when
# VDISK_VHDX_TEST_CRASH=after-log: 32 writes, one flush, then the "crash".
CW=$VD_BUILD/tests/crash-writer
"$VDCONVERT" create -O vhdx -o block_size=1M "$T/crash.vhdx" 16M >/dev/null || fail "create crash.vhdx"
VDISK_VHDX_TEST_CRASH=after-log VD_CRASH_WRITES=32 "$CW" write "$T/crash.vhdx" 3 "$T/crash.log" 32 ||
    fail "crash-writer with the crash hook"
qemu-img info -f vhdx "$T/crash.vhdx" >/dev/null 2>&1 &&
    fail "the crashed image has no pending log (qemu opens it read-only)"
before=$(sha256sum <"$T/crash.vhdx")
"$CW" verify "$T/crash.vhdx" 3 32 32 || fail "our in-memory replay lost data"
rm -f "$T/back.raw"
"$VDCONVERT" "$T/crash.vhdx" "$T/back.raw" || fail "we cannot read our crashed image"
[ "$(sha256sum <"$T/crash.vhdx")" = "$before" ] || fail "a read-only open changed the file"
cp "$T/crash.vhdx" "$T/crash-q.vhdx"
qemu-img check -r all -f vhdx "$T/crash-q.vhdx" >"$T/check.txt" 2>&1 || true
qemu-img check -f vhdx "$T/crash-q.vhdx" >/dev/null || fail "qemu's replay of our log: $(cat "$T/check.txt")"
qemu-img compare -q -f raw "$T/back.raw" -F vhdx "$T/crash-q.vhdx" || fail "qemu's replay of our log lost data"
echo "ok: our log replays in qemu and in vdisk"

# --- differencing -----------------------------------------------------------
cp "$T/out-block_size_1M.vhdx" "$T/base.vhdx"
"$VDCONVERT" create -O vhdx -b base.vhdx "$T/child.vhdx" || fail "create -b"
vhdiinfo "$T/child.vhdx" >"$T/vhdiinfo.txt" || fail "vhdiinfo refuses the child"
grep -q "Differential" "$T/vhdiinfo.txt" || fail "vhdiinfo: not differential: $(cat "$T/vhdiinfo.txt")"
read -r csha csize < <(vhdi_read "$T/child.vhdx" "$T/base.vhdx")
[ "$csha" = "$(padded_sha "$T/src.raw" "$csize")" ] || fail "child+parent (libvhdi) != parent"
[ "$(readback_sha "$T/child.vhdx")" = "$csha" ] || fail "child+parent (ours) != parent"
echo "ok: differencing child of base.vhdx"
