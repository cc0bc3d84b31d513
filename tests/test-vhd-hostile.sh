#!/bin/bash
# test-vhd-hostile: damaged and hostile VHDs get a one-line error naming the
# field and offset (never a crash, hang or huge allocation; the ASan+UBSan
# rerun of the suite runs this too).  A damaged trailing footer with a good
# copy at offset 0 is read through the copy.
source "$(dirname "$0")/lib.sh"
requires_cmd python3

"$VDCONVERT" create -O vhd -o force_size=on "$T/good.vhd" $((5 * 1048576)) >/dev/null
python3 - "$T/good.vhd" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, 'rb').read())
# give it two allocated blocks by hand: append block data + move the footer
import struct
foot = b[-512:]; del b[-512:]
for i, fillc in ((0, 0x11), (2, 0x22)):
    sec = len(b) // 512
    b[0x600 + 4 * i:0x600 + 4 * i + 4] = struct.pack('>I', sec)
    b += b'\xff' * 512 + bytes([fillc]) * (2 << 20)
b += foot
open(p, 'wb').write(b)
PY
"$VDCONVERT" "$T/good.vhd" "$T/good.raw" || fail "the base image does not read"

# mutate NAME PYTHON-STATEMENTS: b is the file as a bytearray; fix_footer()
# and fix_dyn() recompute the checksums so that the field itself is tested.
# mutate, expect_error NAME PATTERN, expect_good NAME only note
# the case; run_cases (at the end) writes every mutant in one python run
# (lib.sh's write_mutants, with the helpers below) and converts and judges
# each (convert_mutants: run_many, a fork each, not an exec).
MUTS=() CASES=()
mutate() { MUTS+=("$1" "$2"); }
expect_error() { CASES+=("$1|$2"); }
expect_good() { CASES+=("$1|"); }
run_cases() {
    write_mutants "$T/good.vhd" vhd "${MUTS[@]}" <<'PY'
def csum(off, n, co):
    blk = bytearray(b[off:off + n]); blk[co:co + 4] = bytes(4)
    b[off + co:off + co + 4] = struct.pack('>I', ~sum(blk) & 0xffffffff)
def fix_footer():
    csum(len(b) - 512, 512, 64); csum(0, 512, 64)
def fix_dyn():
    csum(512, 1024, 36)
def put32(off, v): b[off:off + 4] = struct.pack('>I', v)
def put64(off, v): b[off:off + 8] = struct.pack('>Q', v)
def both(off, data):     # a footer field in both copies
    for base in (0, len(b) - 512):
        b[base + off:base + off + len(data)] = data
PY
    convert_mutants vhd "$T/good.raw" "${CASES[@]}"
}

mutate truncated 'del b[len(b) // 2:]'
expect_error truncated "vhd: "
mutate tiny 'del b[100:]'
expect_error tiny "too small for a footer"
mutate footers-flipped 'b[len(b) - 512 + 50] ^= 1; b[50] ^= 1'
expect_error footers-flipped "footer checksum at 0x"
mutate no-cookie 'b[len(b) - 512] = 0; b[0] = 0'   # (checked after run_cases)
mutate dyn-flipped 'b[512 + 40] ^= 4'
expect_error dyn-flipped "dynamic header checksum at 0x224"
mutate bat-past-eof 'put32(0x600 + 8, 0x7ffffff0)'
expect_error bat-past-eof "BAT entry 2 at 0x608 points past end of file"
mutate bat-into-header 'put32(0x600, 0)'
expect_error bat-into-header "BAT entry 0 at 0x600 points into the header"
mutate block-size-odd 'put32(512 + 32, 3 << 20); fix_dyn()'
expect_error block-size-odd "block size 3145728 at 0x220 is invalid"
mutate block-size-huge 'put32(512 + 32, 1 << 31); fix_dyn()'
expect_error block-size-huge "block size 2147483648 at 0x220 is invalid"
mutate entries-huge 'put32(512 + 28, 0x40000001); fix_dyn()'
expect_error entries-huge "max table entries 1073741825 at 0x21c is too large"
mutate entries-few 'put32(512 + 28, 1); fix_dyn()'
expect_error entries-few "cannot hold the virtual size"
mutate bat-offset 'put64(512 + 16, 1 << 62); fix_dyn()'
expect_error bat-offset "BAT at 0x4000000000000000"
mutate data-offset 'both(16, struct.pack(">Q", 1 << 60)); fix_footer()'
expect_error data-offset "dynamic header past end of file"
mutate disk-type 'both(60, struct.pack(">I", 9)); fix_footer()'
expect_error disk-type "disk type 9 at 0x3c"
mutate size-huge 'both(48, struct.pack(">Q", 1 << 62)); both(28, b"win "); fix_footer()'
expect_error size-huge "current size"
# differencing disk whose locators point anywhere and whose parent is absent
mutate diff-wild 'both(60, struct.pack(">I", 4)); fix_footer()
for i in range(8):
    o = 512 + 576 + 24 * i
    b[o:o + 4] = (b"W2ru", b"W2ku", b"MacX")[i % 3]
    put32(o + 8, 0xffffffff if i < 4 else 0); put64(o + 16, 1 << 63)
fix_dyn()'
expect_error diff-wild "differencing disk names no parent"
# its one locator is 3 bytes of UTF-16 and its parent name starts with an
# unpaired surrogate: refused, naming the first bad one (not read as '?')
mutate diff-utf16 'both(60, struct.pack(">I", 4)); fix_footer()
o = 512 + 576
b[o:o + 4] = b"W2ru"; put32(o + 4, 512); put32(o + 8, 3); put64(o + 16, 0x600)
b[512 + 64:512 + 68] = b"\xd8\x00\x00a"
fix_dyn()'
expect_error diff-utf16 "parent locator 0 at 0x600: invalid UTF-16 at byte 2"

# Damaged trailing footer, intact copy at 0: read through the copy.
mutate tail-flipped 'b[len(b) - 512 + 50] ^= 1'
expect_good tail-flipped
run_cases
"$VDCONVERT" info "$T/no-cookie.vhd" 2>/dev/null | matches "format: vhd" &&
    fail "a file without the VHD cookie was opened as VHD"
echo "ok: no-cookie is not opened as VHD"
