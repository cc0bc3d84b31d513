#!/bin/bash
# A conversion never writes its own input: OUT that is IN, a symlink or a
# hard link to it, a file of its backing chain or an extent of a multi-file
# image is refused before anything is written, and every input file keeps
# its bytes (sha256).
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io
V=$VDCONVERT
cd "$T"
qemu-img create -q -f qcow2 img.qcow2 16M
qemu-io -f qcow2 -c "write -P 0x33 0 1M" img.qcow2 >/dev/null
qemu-img snapshot -c s0 img.qcow2
qemu-img create -q -f qcow2 -b img.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c "write -P 0x44 4M 1M" top.qcow2 >/dev/null
qemu-img create -q -f raw a.raw 4M
qemu-img create -q -f vmdk -o subformat=monolithicFlat flat.vmdk 4M
ln -s img.qcow2 link.qcow2
ln img.qcow2 hard.qcow2
mkdir sub && ln -s ../a.raw sub/a-link.raw
sums() { sha256sum img.qcow2 top.qcow2 a.raw flat.vmdk flat-flat.vmdk | cut -d' ' -f1; }
before=$(sums)

# refused OUT ARGS...: exit 1, one line naming OUT and saying why.
refused() {
    local out=$1; shift
    if "$V" "$@" >log 2>&1; then fail "vdconvert $*: wrote its own input"; fi
    grep -q "^vdconvert: $out: this is the input" log || fail "vdconvert $*: $(cat log)"
    [ "$(wc -l <log)" = 1 ] || fail "vdconvert $*: not one line: $(cat log)"
}
refused img.qcow2 -O qcow2 -l s0 img.qcow2 img.qcow2
refused img.qcow2 -O qcow2 img.qcow2 img.qcow2
refused link.qcow2 -O qcow2 img.qcow2 link.qcow2
refused hard.qcow2 -O raw img.qcow2 hard.qcow2
refused img.qcow2 -O raw link.qcow2 img.qcow2
refused img.qcow2 -O qcow2 top.qcow2 img.qcow2          # the backing file
refused hard.qcow2 -O raw top.qcow2 hard.qcow2          # ... by another name
refused img.qcow2 -n -O qcow2 top.qcow2 img.qcow2       # -n: written in place
refused a.raw -f raw -O vmdk a.raw a.raw
refused sub/a-link.raw -f raw -O raw a.raw sub/a-link.raw
refused flat-flat.vmdk -O raw flat.vmdk flat-flat.vmdk  # an extent
refused flat.vmdk -O vmdk flat.vmdk flat.vmdk
[ "$(sums)" = "$before" ] || fail "an input changed"
[ -z "$(ls -A | grep vdconvert)" ] || fail "temporary files left: $(ls -A)"

# OUT is replaced by a rename only when it is a regular file: a FIFO or a
# character device (as root: a /dev/null made here) is refused and keeps its
# node; a block device (as root, where a loop device can be had) is written
# into with -O raw and stays a block device.
mkfifo fifo
nodes=fifo
if [ "$(id -u)" = 0 ] && mknod null c 1 3 2>/dev/null; then nodes="fifo null"; fi
for n in $nodes; do
    for f in raw qcow2 vmdk; do
        if "$V" -f raw -O $f a.raw $n >log 2>&1; then fail "-O $f to $n: not refused"; fi
        grep -q "^vdconvert: $n: exists and is not a regular file" log || fail "-O $f $n: $(cat log)"
    done
done
[ -p fifo ] || fail "the FIFO was replaced"
[ ! -e null ] || [ -c null ] || fail "the character device node was replaced"
[ "$nodes" = "fifo null" ] || echo "SKIPPED: character device node (not root)"
truncate -s 8M loop.img
if [ "$(id -u)" = 0 ] && L=$(losetup -f --show loop.img 2>/dev/null); then
    "$V" -f raw -O raw a.raw "$L" >log 2>&1 || { losetup -d "$L"; fail "raw to $L: $(cat log)"; }
    if "$V" -f raw -O qcow2 a.raw "$L" >log2 2>&1; then losetup -d "$L"; fail "qcow2 onto $L"; fi
    b=$([ -b "$L" ] && echo yes)
    losetup -d "$L"
    [ "$b" = yes ] || fail "$L is no longer a block device"
    grep -q "a block device takes -O raw" log2 || fail "qcow2 onto $L: $(cat log2)"
    [ "$(head -c 4M loop.img | sha256sum)" = "$(sha256sum <a.raw)" ] || fail "$L: content"
else
    echo "SKIPPED: block device output (no root or no loop device)"
fi
[ -z "$(ls -A | grep vdconvert)" ] || fail "temporary files left: $(ls -A)"

# an output that is not an input is still fine, also next to it
"$V" -O qcow2 top.qcow2 copy.qcow2 || fail "plain conversion"
[ "$(raw_sha copy.qcow2)" = "$(raw_sha top.qcow2)" ] || fail "copy differs"
echo "own input: ok"
