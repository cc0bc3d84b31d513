#!/bin/bash
# Hostile QED headers and tables, one crafted field at a time: each must be
# refused by `vdconvert info -f qed` or by a full conversion with exit 1 and exactly
# one line of error that names the format ("qed:") and what was wrong --
# never a crash, a sanitizer report, a hang or a huge allocation (each run is
# capped at 1 GiB of address space and 10 s outside the sanitizer build).
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3

qemu-img create -q -f qed -o cluster_size=4096,table_size=2 "$T/good.qed" 8M
qemu-io -f qed -c "write -P 0x5a 0 64k" -c "write -P 0xa5 3M 128k" "$T/good.qed" >/dev/null

# Each case: NAME EXPECTED-TEXT, file $T/h/NAME.qed.
python3 - "$T/good.qed" "$T/h" > "$T/cases" <<'PY'
import os, struct, sys
src, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
g = bytearray(open(src, "rb").read())
cs = 4096
l1 = struct.unpack_from("<Q", g, 40)[0]
l2 = struct.unpack_from("<Q", g, l1)[0]
def case(name, want, data):
    open(f"{out}/{name}.qed", "wb").write(data)
    print(name, want)
def field(name, want, off, fmt, val):
    d = bytearray(g); struct.pack_into(fmt, d, off, val); case(name, want, d)
case("short", "shorter than the header", g[:40])
case("no-l1", "L1 table", g[:l1 + 100])
field("cs-zero", "cluster size", 4, "<I", 0)
field("cs-odd", "cluster size", 4, "<I", 3000)
field("cs-huge", "cluster size", 4, "<I", 1 << 31)
field("ts-zero", "table size", 8, "<I", 0)
field("ts-three", "table size", 8, "<I", 3)
field("ts-huge", "table size", 8, "<I", 1 << 20)
field("hdr-zero", "header size", 12, "<I", 0)
field("hdr-huge", "header size", 12, "<I", 0xffffffff)
field("feature", "unknown feature", 16, "<Q", 1 << 40)
field("l1-eof", "L1 table", 40, "<Q", 1 << 40)
field("l1-unaligned", "L1 table", 40, "<Q", l1 + 8)
field("l1-in-header", "L1 table", 40, "<Q", 0)
field("size-huge", "image size", 48, "<Q", 1 << 62)
field("size-odd", "multiple of 512", 48, "<Q", 8 * 1048576 + 1)
d = bytearray(g); struct.pack_into("<QII", d, 16, 1, 0, 0); struct.pack_into("<II", d, 56, 4000, 500)
case("backing-outside", "backing file name", d)
d = bytearray(g); struct.pack_into("<Q", d, 16, 1); struct.pack_into("<II", d, 56, 64, 0xffffffff)
case("backing-huge", "backing file name", d)
field("l2-eof", "L2 table", l1, "<Q", 1 << 40)
field("l2-unaligned", "L2 table", l1, "<Q", l2 + 8)
field("data-eof", "past end of file", l2, "<Q", 1 << 40)
field("data-unaligned", "not cluster aligned", l2, "<Q", 4096 * 20 + 12)
field("data-low-bits", "not cluster aligned", l2 + 8, "<Q", 2)
PY

hostile_cases qed 20
# Probing still says QED for a header with the magic but broken geometry.
if "$VDCONVERT" info "$T/h/cs-odd.qed" 2>"$T/err"; then fail "probed cs-odd opened"; fi
grep -q "qed: cluster size" "$T/err" || fail "probe did not pick qed for a broken header"
