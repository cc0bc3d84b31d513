#!/bin/bash
# Hostile QCOW v1 headers and tables, one crafted field at a time: each must
# be refused by `vdconvert info -f qcow` or by a full conversion with exit 1
# and exactly one line of error naming the format ("qcow:") and what was
# wrong -- never a crash, a sanitizer report, a hang or a huge allocation
# (1 GiB address space and 10 s per run outside the sanitizer build).
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3

qemu-img create -q -f qcow "$T/plain.qcow" 8M
qemu-io -f qcow -c "write -P 0x5a 0 64k" -c "write -P 0xa5 3M 128k" "$T/plain.qcow" >/dev/null
python3 -c "import sys; sys.stdout.buffer.write(bytes(range(256)) * 4096)" > "$T/src.raw"
qemu-img convert -c -O qcow "$T/src.raw" "$T/z.qcow" || true
qemu-img compare -q "$T/src.raw" "$T/z.qcow" || fail "qemu-img did not write z.qcow"

python3 - "$T/plain.qcow" "$T/z.qcow" "$T/h" > "$T/cases" <<'PY'
import os, struct, sys
plain, comp, out = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(out)
g = bytearray(open(plain, "rb").read())
z = bytearray(open(comp, "rb").read())
def case(name, want, data):
    open(f"{out}/{name}.qcow", "wb").write(data)
    print(name, want)
def field(name, want, off, fmt, val, base=g):
    d = bytearray(base); struct.pack_into(fmt, d, off, val); case(name, want, d)
l1 = struct.unpack_from(">Q", g, 40)[0]
l2 = struct.unpack_from(">Q", g, l1)[0]
zl1 = struct.unpack_from(">Q", z, 40)[0]
zl2 = struct.unpack_from(">Q", z, zl1)[0]
ze = struct.unpack_from(">Q", z, zl2)[0]
assert ze >> 63, "first cluster of z.qcow is not compressed"
cb = g[32]
zoff = ze & ((1 << (63 - cb)) - 1)
zlen = (ze >> (63 - cb)) & ((1 << cb) - 1)
case("short", "shorter than the header", g[:40])
field("version", "version", 4, ">I", 9)
field("cluster-small", "cluster_bits", 32, ">B", 8)
field("cluster-big", "cluster_bits", 32, ">B", 17)
field("l2-small", "l2_bits", 33, ">B", 5)
field("l2-big", "l2_bits", 33, ">B", 14)
field("aes", "AES-encrypted", 36, ">I", 1)
field("crypt-unknown", "crypt_method", 36, ">I", 7)
field("size-huge", "too large", 24, ">Q", 1 << 62)
field("l1-too-big", "L1 table", 24, ">Q", 1 << 55)
field("l1-eof", "L1 table", 40, ">Q", 1 << 40)
d = bytearray(g); struct.pack_into(">QI", d, 8, 48, 5000); case("backing-long", "backing file name", d)
d = bytearray(g); struct.pack_into(">QI", d, 8, 1 << 40, 10); case("backing-eof", "backing file name", d)
d = bytearray(g); struct.pack_into(">QI", d, 8, 0x20, 8); case("backing-nul", "NUL", d)
field("l2-eof", "L2 table", l1, ">Q", 1 << 40)
field("data-eof", "past end of file", l2, ">Q", 1 << 40)
field("z-eof", "past end of file", zl2, ">Q", (1 << 63) | (zlen << (63 - cb)) | (1 << 40), z)
d = bytearray(z); d[zoff:zoff + zlen] = b"\xff" * zlen; case("z-garbage", "does not inflate", d)
field("z-short", "does not inflate", zl2, ">Q", (1 << 63) | (3 << (63 - cb)) | zoff, z)
PY

hostile_cases qcow 18
