#!/bin/bash
# vdboot's host-side decompression (boot-check/vmlinux.c): a bzImage whose
# payload is the probe's ELF compressed with lz4 -l (legacy frames, as Debian
# kernels), gzip or zstd is booted from the ELF's entry after the host
# decompresses it; corrupt payloads fall back to the bzImage entry.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd python3 lz4 gzip zstd
requires_kvm
[ -x "$VDBOOT" ] || skip "vdboot not built"
ELF=$VD_BUILD/boot-check/probe.elf

# The probe's ELF with physical = virtual addresses, the real-mode segment
# dropped: what a vmlinux looks like to a loader.
python3 - "$ELF" "$T/vmlinux" <<'PY'
import struct, sys
e = bytearray(open(sys.argv[1], "rb").read())
phoff, = struct.unpack_from("<Q", e, 32)
phentsize, phnum = struct.unpack_from("<HH", e, 54)
for i in range(phnum):
    o = phoff + i * phentsize
    ptype, = struct.unpack_from("<I", e, o)
    vaddr, = struct.unpack_from("<Q", e, o + 16)
    if ptype == 1 and vaddr < 0x100000:
        struct.pack_into("<I", e, o, 0)          # PT_NULL: the setup segment
    elif ptype == 1:
        struct.pack_into("<Q", e, o + 24, vaddr)  # p_paddr = p_vaddr
open(sys.argv[2], "wb").write(e)
PY

wrap() {  # wrap PAYLOAD OUT: the probe bzImage with PAYLOAD appended and named
    python3 - "$PROBE" "$1" "$2" <<'PY'
import struct, sys
k = bytearray(open(sys.argv[1], "rb").read())
p = open(sys.argv[2], "rb").read()
setup = ((k[0x1f1] or 4) + 1) * 512
struct.pack_into("<II", k, 0x248, len(k) - setup, len(p))
open(sys.argv[3], "wb").write(k + p)
PY
}

lz4 -q -l -9 -c "$T/vmlinux" >"$T/p.lz4"
printf '\x00\x10\x00\x00' >>"$T/p.lz4"          # the kernel build's size trailer
gzip -9nc "$T/vmlinux" >"$T/p.gz"
zstd -q -19 -c "$T/vmlinux" >"$T/p.zst"
for c in lz4 gz zst; do
    wrap "$T/p.$c" "$T/bz.$c"
    rc=0
    "$VDBOOT" --accel kvm -v --timeout 20 --kernel "$T/bz.$c" --append "via=$c" --console "$T/con" \
        >"$T/out" 2>&1 || rc=$?
    [ $rc = 0 ] || { cat "$T/out"; fail "$c: exit $rc"; }
    grep -q 'payload decompressed on the host, vmlinux entry 0x100200' "$T/out" ||
        { cat "$T/out"; fail "$c: not loaded from the decompressed ELF"; }
    grep -q "^probe: cmdline via=$c" "$T/con" || fail "$c: probe did not run"
    echo "$c: booted from the host-decompressed ELF"
done

# corrupt LZ4 (a block's match offset pointing before the output) and a
# truncated gzip: the bzImage entry is used instead, and still boots
python3 - "$T/p.lz4" "$T/bad.lz4" <<'PY'
import sys
p = bytearray(open(sys.argv[1], "rb").read())
for i in range(40, len(p) - 8, 97):
    p[i] ^= 0x5a
open(sys.argv[2], "wb").write(p)
PY
head -c 3000 "$T/p.gz" >"$T/bad.gz"
for c in lz4 gz; do
    wrap "$T/bad.$c" "$T/bzbad.$c"
    rc=0
    "$VDBOOT" --accel kvm -v --timeout 20 --kernel "$T/bzbad.$c" >"$T/out" 2>&1 || rc=$?
    [ $rc = 0 ] || { cat "$T/out"; fail "corrupt $c: exit $rc"; }
    grep -q 'bzImage 64-bit entry; not decompressed on the host' "$T/out" ||
        { cat "$T/out"; fail "corrupt $c: no fallback"; }
done
# --guest-decompress skips the host path
"$VDBOOT" --accel kvm -v --timeout 20 --guest-decompress --kernel "$T/bz.lz4" >"$T/out" 2>&1 ||
    fail "--guest-decompress: $(cat "$T/out")"
grep -q 'kernel: bzImage 64-bit entry$' "$T/out" || fail "--guest-decompress ignored"
echo ok
