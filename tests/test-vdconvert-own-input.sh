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
    local rc=0
    "$V" "$@" >log 2>&1 || rc=$?
    [ $rc != 0 ] || fail "vdconvert $*: wrote its own input"
    [ $rc = 1 ] || fail "vdconvert $*: exit $rc, not 1: $(cat log)"
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

# OUT is replaced by a rename only when it is a regular file: a FIFO is
# refused and keeps its node (device nodes: vdconvert-device-out, as root).
mkfifo fifo
for f in raw qcow2 vmdk; do
    rc=0
    "$V" -f raw -O $f a.raw fifo >log 2>&1 || rc=$?
    [ $rc = 1 ] || fail "-O $f to fifo: exit $rc, not 1: $(cat log)"
    grep -q "^vdconvert: fifo: exists and is not a regular file" log || fail "-O $f fifo: $(cat log)"
done
[ -p fifo ] || fail "the FIFO was replaced"
[ -z "$(ls -A | grep vdconvert)" ] || fail "temporary files left: $(ls -A)"

# an output that is not an input is still fine, also next to it
"$V" -O qcow2 top.qcow2 copy.qcow2 || fail "plain conversion"
[ "$(raw_sha copy.qcow2)" = "$(raw_sha top.qcow2)" ] || fail "copy differs"
echo "own input: ok"
