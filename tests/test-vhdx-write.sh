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
PY=/usr/bin/python3
$PY -c 'import pyvhdi' 2>/dev/null || skip "python3-libvhdi not installed"

SIZE=$((7 * 1048576 + 1536))
$PY - "$T/src.raw" $SIZE <<'PY'
import sys, random
p, size = sys.argv[1], int(sys.argv[2])
r = random.Random(7)
with open(p, 'wb') as f:
    f.truncate(size)
    for off, n in ((0, 4096), (1048576 + 512, 70000), (3 * 1048576, 2 * 1048576),
                   (size - 512, 512)):
        f.seek(off); f.write(bytes(r.getrandbits(8) for _ in range(n)))
PY

vhdi_read() {  # IMG [PARENT] -> "sha256 size"
    $PY - "$@" <<'PY'
import hashlib, sys, pyvhdi
f = pyvhdi.file(); f.open(sys.argv[1])
if len(sys.argv) > 2:
    p = pyvhdi.file(); p.open(sys.argv[2]); f.set_parent(p)
h = hashlib.sha256(); off = 0; size = f.media_size
while off < size:
    n = min(1 << 20, size - off)
    h.update(f.read_buffer_at_offset(n, off)); off += n
print(h.hexdigest(), size)
PY
}
padded_sha() {
    cp "$1" "$T/pad.raw"
    truncate -s "$2" "$T/pad.raw"
    sha256sum <"$T/pad.raw" | cut -d' ' -f1
}

for opts in subformat=dynamic subformat=fixed block_size=1M block_size=256M,log_size=4M \
            logical_sector_size=4096; do
    out=$T/out-${opts//[=,]/_}.vhdx
    "$VDCONVERT" -O vhdx -o "$opts" "$T/src.raw" "$out" || fail "convert -o $opts"
    read -r vsha vsize < <(vhdi_read "$out")
    case $opts in
    logical_sector_size=4096)
        [ "$vsize" = $(( (SIZE + 4095) / 4096 * 4096 )) ] || fail "$opts: size $vsize"
        qemu-img info -f vhdx "$out" >/dev/null 2>&1 && echo "note: qemu now reads 4K sectors" ;;
    *)
        [ "$vsize" = $SIZE ] || fail "$opts: libvhdi size $vsize, want $SIZE"
        qemu-img check -f vhdx "$out" >"$T/check.txt" 2>&1 || fail "$opts: qemu-img check: $(cat "$T/check.txt")"
        qemu-img compare -q -f raw "$T/src.raw" -F vhdx "$out" || fail "$opts: qemu-img compare differs" ;;
    esac
    vhdiinfo "$out" >"$T/vhdiinfo.txt" || fail "$opts: vhdiinfo refuses it"
    [ "$vsha" = "$(padded_sha "$T/src.raw" "$vsize")" ] || fail "$opts: libvhdi reads other content"
    rm -f "$T/back.raw"
    "$VDCONVERT" "$out" "$T/back.raw"
    [ "$(sha256sum <"$T/back.raw" | cut -d' ' -f1)" = "$vsha" ] || fail "$opts: our read-back differs"
    echo "ok: $opts"
done
# The same without data in the last sector (the last block stays a hole).
cp "$T/src.raw" "$T/notail.raw"
dd if=/dev/zero of="$T/notail.raw" bs=512 seek=$((SIZE / 512 - 1)) count=1 conv=notrunc status=none
for opts in subformat=dynamic subformat=fixed; do
    "$VDCONVERT" -O vhdx -o "$opts" "$T/notail.raw" "$T/notail-$opts.vhdx" || fail "notail $opts"
    qemu-img compare -q -f raw "$T/notail.raw" -F vhdx "$T/notail-$opts.vhdx" || fail "notail $opts differs"
    vhdiinfo "$T/notail-$opts.vhdx" >/dev/null || fail "notail $opts: vhdiinfo refuses it"
    read -r vsha vsize < <(vhdi_read "$T/notail-$opts.vhdx")
    [ "$vsha" = "$(padded_sha "$T/notail.raw" "$vsize")" ] || fail "notail $opts: libvhdi differs"
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
rm -f "$T/back.raw"
"$VDCONVERT" "$T/child.vhdx" "$T/back.raw"
[ "$(sha256sum <"$T/back.raw" | cut -d' ' -f1)" = "$csha" ] || fail "child+parent (ours) != parent"
echo "ok: differencing child of base.vhdx"
