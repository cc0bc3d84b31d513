#!/bin/bash
# Image locks against a real qemu, both ways.
#  1. qemu-io holds an overlay (and so its base) for writing: every vdisk
#     writer is refused with a message naming the file, and neither file
#     changes; vdisk readers are refused without -U and work with it.
#  2. vdmount --rw (and nbdkit with the vdisk plugin, readonly=false) holds
#     an image: qemu-img resize, qemu-io write and qemu-img info without -U
#     fail with qemu's "Failed to get ... lock"; qemu-img info -U works.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdmount-lib.sh"
requires_cmd qemu-img qemu-io nbdkit
requires_fuse
PLUGIN=$VD_BUILD/nbd/nbdkit-vdisk-plugin.so
[ -f "$PLUGIN" ] || fail "nbdkit plugin not built"
nbdkit() {   # the ASan build's plugin needs the runtime preloaded (as test-nbd.sh)
    local pre="" lib
    for lib in libasan libubsan; do
        [[ "$(ldd "$PLUGIN")" == *"$lib"* ]] && pre="$pre $(gcc -print-file-name=$lib.so)"
    done
    if [ -n "$pre" ]; then
        LD_PRELOAD="${pre# }" ASAN_OPTIONS=detect_leaks=0 command nbdkit "$@"
    else
        command nbdkit "$@"
    fi
}
V=$VDCONVERT
cd "$T"
qemu-img create -q -f qcow2 base.qcow2 16M
qemu-io -f qcow2 -c "write -P 0x11 0 1M" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c "write -P 0x22 2M 1M" top.qcow2 >/dev/null
qemu-img create -q -f qcow2 other.qcow2 16M
qemu-img create -q -f raw src.raw 16M
sums() { sha256sum base.qcow2 top.qcow2 | cut -d' ' -f1 | tr '\n' ' '; }

# expect_refused WHAT FILE CMD...: non-zero exit, one line naming FILE and
# saying another process uses it.
expect_refused() {
    local what=$1 file=$2; shift 2
    if "$@" >out 2>err; then fail "$what: succeeded while the image is in use"; fi
    grep -q "$file: another process" err || fail "$what: unexpected message: $(cat err)"
    [ "$(wc -l <err)" = 1 ] || fail "$what: not one line: $(cat err)"
}

# ---- 1. qemu holds the image for writing --------------------------------
mkfifo fifo
qemu-io -f qcow2 top.qcow2 <fifo >qemu-io.log 2>&1 &
QPID=$!
exec 3>fifo
# until qemu-io holds its locks (no fixed limit: a loaded machine can take
# seconds to start it), or until it has exited.  Watched in /proc/locks
# (device and inode as the kernel prints them): probing with qemu-img info
# would take a read lock that a starting qemu-io could trip over.
lockid=$(printf '%02x:%02x:%s' $(stat -c '%Hd %Ld %i' top.qcow2))
until awk -v id="$lockid" '$2 == "OFDLCK" && $6 == id { found = 1 } END { exit !found }' /proc/locks; do
    kill -0 $QPID 2>/dev/null || fail "qemu-io did not lock top.qcow2: $(cat qemu-io.log)"
    sleep 0.05
done
before=$(sums)

expect_refused "resize" top.qcow2 "$V" resize top.qcow2 +1M
expect_refused "commit" top.qcow2 "$V" commit top.qcow2
expect_refused "rebase -u" top.qcow2 "$V" rebase -u -b other.qcow2 -F qcow2 top.qcow2
expect_refused "rebase" top.qcow2 "$V" rebase -b other.qcow2 -F qcow2 top.qcow2
expect_refused "snapshot -c" top.qcow2 "$V" snapshot -c s1 top.qcow2
expect_refused "check -r all" top.qcow2 "$V" check -r all top.qcow2
expect_refused "amend" top.qcow2 "$V" amend -o refcount_bits=8 top.qcow2
expect_refused "convert -n into it" top.qcow2 "$V" convert -n -f raw -O qcow2 src.raw top.qcow2
# the base: qemu reads it and does not share writing it
expect_refused "resize of the base" base.qcow2 "$V" resize base.qcow2 +1M
mkdir -p mnt
expect_refused "vdmount --rw" top.qcow2 "$VDMOUNT" --rw top.qcow2 mnt
mountpoint -q mnt && fail "vdmount --rw mounted an image in use"
nbdkit -U "$T/sock" -f "$PLUGIN" file=top.qcow2 readonly=false >nbd.log 2>&1 &&
    fail "nbdkit readonly=false started on an image in use"
grep -q "another process" nbd.log || fail "nbdkit: unexpected message: $(cat nbd.log)"

# readers: refused without -U, fine with it
expect_refused "info" top.qcow2 "$V" info top.qcow2
expect_refused "map" top.qcow2 "$V" map top.qcow2
expect_refused "convert from it" top.qcow2 "$V" convert -O raw top.qcow2 out.raw
[ -e out.raw ] && fail "convert left out.raw behind"
expect_refused "vdmount (read-only)" top.qcow2 "$VDMOUNT" top.qcow2 mnt
"$V" info -U top.qcow2 >/dev/null || fail "info -U"
"$V" map --force-share top.qcow2 >/dev/null || fail "map --force-share"
"$V" check -U top.qcow2 >/dev/null || fail "check -U"
"$V" compare -U top.qcow2 top.qcow2 >/dev/null || fail "compare -U"
"$V" convert -U -O raw top.qcow2 out.raw || fail "convert -U"
vm_mount top.qcow2 mnt -U
cmp -s mnt/disk out.raw || fail "vdmount -U: content differs"
vm_umount mnt
[ "$(sums)" = "$before" ] || fail "an image changed while qemu held it"
exec 3>&-
wait "$QPID"

# ---- 2. vdisk holds the image for writing -------------------------------
# expect_qemu_refused WHAT CMD...: qemu's own lock error.
expect_qemu_refused() {
    local what=$1; shift
    if "$@" >out 2>&1; then fail "$what: qemu got the image vdisk holds"; fi
    grep -q 'Failed to get .*lock' out || fail "$what: unexpected: $(cat out)"
}
holder_checks() {   # HOLDER: the image is held read-write by it
    local h=$1 before
    before=$(sums)
    expect_qemu_refused "$h: qemu-img resize" qemu-img resize top.qcow2 +1M
    expect_qemu_refused "$h: qemu-io write" qemu-io -f qcow2 -c "write 0 4k" top.qcow2
    expect_qemu_refused "$h: qemu-img info" qemu-img info top.qcow2
    expect_qemu_refused "$h: qemu-img commit" qemu-img commit top.qcow2
    qemu-img info -U top.qcow2 >/dev/null || fail "$h: qemu-img info -U"
    expect_refused "$h: vdconvert resize" top.qcow2 "$V" resize top.qcow2 +1M
    expect_refused "$h: vdconvert info" top.qcow2 "$V" info top.qcow2
    "$V" info -U top.qcow2 >/dev/null || fail "$h: vdconvert info -U"
    # the base is read by the holder: it can be read, not written
    qemu-img info base.qcow2 >/dev/null || fail "$h: qemu-img info of the base"
    expect_qemu_refused "$h: qemu-img resize of the base" qemu-img resize base.qcow2 +1M
    [ "$(sums)" = "$before" ] || fail "$h: a refused command changed an image"
}
vm_mount top.qcow2 mnt --rw
holder_checks "vdmount --rw"
vm_umount mnt
qemu-img info top.qcow2 >/dev/null || fail "the lock outlived vdmount"

nbdkit -U "$T/sock" -P "$T/pid" -f "$PLUGIN" file=top.qcow2 readonly=false >nbd.log 2>&1 &
NPID=$!
until [ -S "$T/sock" ] && [ -s "$T/pid" ]; do
    kill -0 $NPID 2>/dev/null || fail "nbdkit did not start: $(cat nbd.log)"
    sleep 0.05
done
holder_checks "nbdkit readonly=false"
kill "$(cat "$T/pid")"
wait
qemu-img info top.qcow2 >/dev/null || fail "the lock outlived nbdkit"

# vdisk readers share with each other and with qemu readers
"$V" info top.qcow2 >/dev/null && qemu-img info top.qcow2 >/dev/null ||
    fail "readers refused with no writer around"
echo "image locks: ok"
