#!/bin/bash
# QCOW v1 reads: every QCOW image ../shared/corpus/make-matrix builds and
# every QCOW v1 sample in ../shared/corpus/samples (when present), plus images
# built here -- scattered writes, a size that is not a cluster multiple,
# compressed clusters (qemu-img convert -c), a compressed child over a
# backing file, a two-level chain -- each must convert to exactly what
# qemu-img reads.  The image is read-only in vdisk; an AES-encrypted image
# (qemu-img with a secret) is refused with a message saying so.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3

same_as_qemu() {  # IMG
    local img=$1 want
    want=$(raw_sha "$img" qcow)
    rm -f "$T/out.raw"
    "$VDCONVERT" "$img" "$T/out.raw" || fail "$(basename "$img"): vdconvert failed"
    [ "$(file_sha "$T/out.raw")" = "$want" ] ||
        fail "$(basename "$img"): content differs from qemu-img"
    rm -f "$T/out.raw"
    echo "ok: $(basename "$img")"
}
# (one qemu-io for all of an image's commands: it runs them in turn)
wr() { local f=$1 c a=(); shift; for c in "$@"; do a+=(-c "$c"); done; qemu-io -f qcow "${a[@]}" "$f" >/dev/null; }

qemu-img create -q -f qcow "$T/a.qcow" $((6 * 1048576 + 1000))
wr "$T/a.qcow" "write -P 0x11 0 4k" "write -P 0x22 1000000 300k" "write -P 0x33 5M 1M" \
    "write -P 0x44 6M 1024"
same_as_qemu "$T/a.qcow"
"$VDCONVERT" info "$T/a.qcow" | matches "file format: qcow" || fail "not probed as qcow"

# Compressed clusters.  (qemu-img 7.2 exits 1 after writing a complete
# compressed qcow; the image is judged by qemu-img compare instead.)
python3 -c "
import random, sys
r = random.Random(3)
d = bytearray(8 << 20)
for i in range(0, len(d), 4096):
    k = r.randrange(4)
    if k == 1: d[i:i+4096] = bytes([r.randrange(256)]) * 4096
    elif k == 2: d[i:i+4096] = r.randbytes(4096)
    elif k == 3: d[i:i+4096] = (b'text%06d' % i) * 409 + b'tail.t'
sys.stdout.buffer.write(bytes(d))" > "$T/src.raw"
qemu-img convert -c -O qcow "$T/src.raw" "$T/z.qcow" || true
qemu-img compare -q "$T/src.raw" "$T/z.qcow" || fail "qemu-img did not write z.qcow"
[ "$(stat -c %s "$T/z.qcow")" -lt $((6 << 20)) ] || fail "z.qcow is not compressed"
same_as_qemu "$T/z.qcow"

# A compressed child over a backing file, and a plain child over that.
qemu-img create -q -f qcow -b a.qcow -F qcow "$T/mid.qcow"
wr "$T/mid.qcow" "write -P 0x55 64k 256k" "write -P 0x66 5M 8k"
qemu-img convert -c -O qcow -B a.qcow -F qcow "$T/mid.qcow" "$T/midz.qcow" || true
qemu-img compare -q "$T/mid.qcow" "$T/midz.qcow" || fail "qemu-img did not write midz.qcow"
same_as_qemu "$T/midz.qcow"
qemu-img create -q -f qcow -b midz.qcow -F qcow "$T/top.qcow"
wr "$T/top.qcow" "write -P 0x77 100k 4k"
same_as_qemu "$T/top.qcow"

# Read-only driver: writing is refused; encrypted images are refused.
if "$VDCONVERT" create -O qcow "$T/new.qcow" 1M 2>"$T/err"; then fail "qcow create accepted"; fi
qemu-img create -q --object secret,id=s0,data=abc -f qcow \
    -o encrypt.format=aes,encrypt.key-secret=s0 "$T/enc.qcow" 1M || fail "qemu-img cannot make an AES qcow"
if "$VDCONVERT" info "$T/enc.qcow" 2>"$T/err"; then fail "encrypted image opened"; fi
grep -q "qcow: image is AES-encrypted" "$T/err" || { cat "$T/err"; fail "encryption message"; }
echo "ok: encrypted image refused: $(cat "$T/err")"

# --- the shared matrix and samples -----------------------------------------
matrix_and_samples qcow 2
exit 0
