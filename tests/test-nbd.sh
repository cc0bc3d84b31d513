#!/bin/bash
# NBD: `nbdkit vdisk` serves every format on a Unix socket and on 127.0.0.1;
# qemu (which reads NBD natively) finds the content identical, the extents
# nbdinfo --map reports are right (every hole/zero range is zero in the
# source), writes through a writable export land in the image, vdconvert reads
# nbd:// sources, and a server killed mid-transfer gives a clear error and no
# half-written target.
#   test-nbd.sh          all of that (and vdmount --cat over NBD)
#   test-nbd.sh vdboot   vdboot booting an export (a test of its own, nbd-vdboot,
#                        since it needs /dev/kvm and is skipped by name without)
. "$(dirname "$0")/lib.sh"
requires_cmd nbdkit nbdinfo qemu-img qemu-io python3 mke2fs
PLUGIN=$VD_BUILD/nbd/nbdkit-vdisk-plugin.so
VDMOUNT=${VDMOUNT:-$VD_BUILD/fuse-mount/vdmount}
[ -f "$PLUGIN" ] || skip "nbdkit plugin not built (needs nbdkit-plugin-dev)"
[ -x "$VDMOUNT" ] || skip "vdmount not built (needs libfuse3-dev, libext2fs-dev)"
# In the sanitizer build the plugin needs the ASan runtime loaded first; the
# leak checker is for our code, not nbdkit's own exit path.
nbdkit() {
    local pre=""
    for lib in libasan libubsan; do
        if [[ "$(ldd "$PLUGIN")" == *"$lib"* ]]; then
            pre="$pre $(gcc -print-file-name=$lib.so)"
        fi
    done
    if [ -n "$pre" ]; then
        LD_PRELOAD="${pre# }" ASAN_OPTIONS=detect_leaks=0 command nbdkit "$@"
    else
        command nbdkit "$@"
    fi
}

qemu-img create -q -f raw "$T/src.raw" 32M
qemu-io -f raw -c "write -P 0x61 0 1M" -c "write -P 0x62 5M 3M" -c "write -P 0x63 31M 512k" "$T/src.raw" >/dev/null

serve() {  # serve [--filter=F...] file=IMG [params...]: nbdkit on $T/sock, sets PID
    local filters=()
    while [[ ${1:-} == --filter=* ]]; do filters+=("$1"); shift; done
    rm -f "$T/sock" "$T/pid"
    nbdkit -U "$T/sock" -P "$T/pid" -f "${filters[@]}" "$PLUGIN" "$@" >"$T/nbdkit.log" 2>&1 &
    # until it serves or exits: no fixed limit, which a loaded machine (or
    # the ASan build) can exceed; meson's timeout bounds a hang
    local job=$!
    until [ -S "$T/sock" ] && [ -s "$T/pid" ]; do
        kill -0 $job 2>/dev/null || fail "nbdkit did not start: $(cat "$T/nbdkit.log")"
        sleep 0.05
    done
    PID=$(cat "$T/pid")
}
stop() { kill "$PID" 2>/dev/null || true; wait 2>/dev/null || true; }
URI="nbd+unix:///?socket=$T/sock"

# An ext4 image holding /etc/hostname, for vdmount and vdboot over NBD.
make_fs_qcow2() {
    mkdir -p "$T/root/etc"; echo served-host >"$T/root/etc/hostname"
    truncate -s 32M "$T/fs.raw"; mke2fs -q -t ext4 -d "$T/root" "$T/fs.raw"
    qemu-img convert -O qcow2 "$T/fs.raw" "$T/fs.qcow2"
}

if [ "${1:-}" = vdboot ]; then
    . "$(dirname "$0")/vdboot-lib.sh"
    requires_kvm
    [ -x "$VDBOOT" ] && [ -f "$PROBE" ] || fail "vdboot or its probe kernel not built"
    make_fs_qcow2
    serve file="$T/fs.qcow2"
    rc=0; timeout 120 "$VDBOOT" --accel kvm --timeout 30 --kernel "$PROBE" "$URI" >"$T/boot" 2>&1 || rc=$?
    stop
    [ $rc = 0 ] && grep -q "probe login:" "$T/boot" || fail "vdboot over NBD: $(tail -3 "$T/boot")"
    echo "ok: vdboot (probe kernel, kvm) over NBD"
    exit 0
fi

check_extents() {  # every hole/zero range nbdinfo reports must be zero in src
    nbdinfo --map --json "$URI" >"$T/map.json"
    python3 - "$T/map.json" "$T/src.raw" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); src = open(sys.argv[2], "rb").read()
total = sum(e["length"] for e in m)
src += bytes(max(0, total - len(src)))   # VHD rounds its size up to CHS
covered = 0
for e in m:
    if e["type"] & 2:   # zero
        assert src[e["offset"]:e["offset"] + e["length"]].count(0) == e["length"], e
    covered += e["length"]
assert covered == len(src) and e["offset"] + e["length"] == total, (covered, len(src))
PY
}

# A fixed list: a format qemu-img cannot write or vdisk does not read fails.
n=0
for fmt in raw qcow2 qcow qed vdi vpc vhdx vmdk parallels; do
    img=$T/img.$fmt
    qemu-img convert -O "$fmt" "$T/src.raw" "$img" || fail "qemu-img cannot write $fmt"
    expect_format "$img" "$fmt"
    serve file="$img"
    qemu-img compare -f raw -F raw "$URI" "$T/src.raw" >/dev/null ||
        { stop; fail "$fmt over NBD differs from the source"; }
    check_extents || { stop; fail "$fmt: extents wrong"; }
    stop
    n=$((n + 1)); last=$img
done

# TCP on 127.0.0.1, and vdconvert reading an nbd:// source with 4 connections.
# The port: the first free one from a start that differs between the tests
# running at once (nbdkit binds before it goes to the background, and exits
# non-zero when the port is taken).
port=$((20000 + $$ % 20000))
until nbdkit -i 127.0.0.1 -p $port -P "$T/tpid" "$PLUGIN" file="$last" >"$T/nbdkit.log" 2>&1; do
    grep -q "in use" "$T/nbdkit.log" || fail "nbdkit on TCP: $(cat "$T/nbdkit.log")"
    port=$((port + 1))
done
until [ -s "$T/tpid" ]; do sleep 0.05; done
qemu-img compare -f raw -F raw "nbd://127.0.0.1:$port/" "$T/src.raw" >/dev/null ||
    fail "TCP export of $(basename "$last") differs"
VD_NBD_CONNECTIONS=4 "$VDCONVERT" -O raw "nbd://127.0.0.1:$port/" "$T/fromnbd.raw" || fail "vdconvert from nbd://"
qemu-img compare -q -f raw -F raw "$T/src.raw" "$T/fromnbd.raw" || fail "vdconvert nbd:// result differs"
kill "$(cat "$T/tpid")"

# vdmount and vdboot take the same URIs (a farm boots images from one store)
make_fs_qcow2
serve file="$T/fs.qcow2"
[ "$("$VDMOUNT" --cat "$URI" /etc/hostname)" = served-host ] || { stop; fail "vdmount over NBD"; }
stop
echo "ok: vdmount --cat over NBD (vdboot over NBD: the nbd-vdboot test)"

# a writable export: writes land in the image
cp "$T/src.raw" "$T/w.raw"
qemu-img convert -O qed "$T/src.raw" "$T/w.qed"
serve file="$T/w.qed" readonly=false
qemu-io -f raw -c "write -P 0x77 2M 1M" -c "write -z 5M 64k" -c flush "$URI" >/dev/null
stop
qemu-io -f raw -c "write -P 0x77 2M 1M" -c "write -z 5M 64k" "$T/w.raw" >/dev/null
qemu-img compare -f qed -F raw "$T/w.qed" "$T/w.raw" >/dev/null || fail "writes through NBD lost"
qemu-img check -q "$T/w.qed" || fail "image written through NBD fails qemu-img check"

# vdisk's own NBD client writes too: a 20 MiB write (8 MiB requests),
# zeroes as WRITE_ZEROES and, to a server without them (nbdkit's nozero
# filter), as zero buffers written, and a trim; the served image then
# equals a raw copy that had the same writes
for f in "" --filter=nozero; do
    rm -f "$T/c.raw" "$T/m.raw"
    truncate -s 64M "$T/c.raw"; truncate -s 64M "$T/m.raw"
    serve $f file="$T/c.raw" readonly=false
    "$QCOW2_TOOL" -m "$T/m.raw" "$URI" w:1M:20M:1 w:100:9000:2 z:3M:17M z:30M:5M:u \
        w:40M:20M:3 d:44M:10M f >"$T/ct.out" 2>&1 || { stop; fail "client writes ${f}: $(cat "$T/ct.out")"; }
    stop
    cmp "$T/c.raw" "$T/m.raw" || fail "vdisk's NBD client ${f:+($f) }lost writes"
done

# a server killed mid-transfer: clear error, nothing left behind.  The
# server logs each read and then holds it 60 s (nbdkit's log and delay
# filters), so it is killed once vdconvert's first read has arrived and
# before any can finish: mid-transfer however slow the machine.
python3 -c "open('$T/big.raw', 'wb').write(b'vdisk-nbd-data\n' * (1 << 20))"
serve --filter=log --filter=delay file="$T/big.raw" logfile="$T/reqs" rdelay=60
rc=0; "$VDCONVERT" -O qcow2 "$URI" "$T/half.qcow2" 2>"$T/err" & conv=$!
until grep -q "Read " "$T/reqs" 2>/dev/null; do
    kill -0 $conv 2>/dev/null || break
    sleep 0.05
done
grep -q "Read " "$T/reqs" || fail "vdconvert ended before reading from the server: $(cat "$T/err")"
kill -9 "$PID"
wait $conv || rc=$?
stop
[ $rc != 0 ] || fail "conversion from a killed server succeeded"
[ $rc -lt 128 ] || fail "vdconvert crashed (exit $rc)"
[ "$(wc -l <"$T/err")" = 1 ] || fail "error not one line: $(cat "$T/err")"
ls "$T" | matches half && fail "half-written target left: $(ls "$T")"
echo "ok: $n formats served"
