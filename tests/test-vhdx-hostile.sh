#!/bin/bash
# test-vhdx-hostile: damaged and hostile VHDX files get a one-line error naming
# the field and its offset - never a crash, hang or huge allocation (the
# ASan+UBSan rerun of the suite runs this too).  A damaged current header
# falls back to the other one.  Checksummed structures are re-checksummed
# after the change, so that the field itself is what is tested.
source "$(dirname "$0")/lib.sh"
requires_cmd python3

# Our own layout: log at 1 MiB, metadata at 2 MiB (items from +64 KiB: block
# size, virtual size, page 83, logical and physical sector size), BAT at
# 3 MiB, blocks from 4 MiB.  Two blocks written.
python3 -c "
import random; r = random.Random(3)
with open('$T/src.raw', 'wb') as f:
    f.truncate(5 << 20); f.write(r.randbytes(4096)); f.seek(3 << 20); f.write(r.randbytes(8192))"
"$VDCONVERT" -O vhdx -o block_size=1M "$T/src.raw" "$T/good.vhdx" || fail "make the base image"
"$VDCONVERT" "$T/good.vhdx" "$T/good.raw" && cmp -s "$T/good.raw" "$T/src.raw" || fail "base image"

# mutate NAME PYTHON, expect_error NAME PATTERN, expect_good NAME only note
# the case; run_cases (at the end) writes every mutant in one python run
# (lib.sh's write_mutants, with the helpers below) and converts and judges
# each (convert_mutants: run_many, a fork each, not an exec).
MUTS=() CASES=()
mutate() { MUTS+=("$1" "$2"); }
expect_error() { CASES+=("$1|$2"); }
expect_good() { CASES+=("$1|"); }
run_cases() {
    write_mutants "$T/good.vhdx" vhdx "${MUTS[@]}" <<'PY'
def fix(off, n, co=4): crc32c_fix(b, off, n, co)
def hdrs(): fix(0x10000, 4096); fix(0x20000, 4096)
def rts(): fix(0x30000, 65536); fix(0x40000, 65536)
def p16(o, v): b[o:o + 2] = struct.pack('<H', v)
def p32(o, v): b[o:o + 4] = struct.pack('<I', v)
def p64(o, v): b[o:o + 8] = struct.pack('<Q', v)
def both_hdr(o, data):
    for h in (0x10000, 0x20000): b[h + o:h + o + len(data)] = data
    hdrs()
def log_entry(descs, data_secs, seq=7):
    # an entry at the start of the log (1 MiB), with the header's log GUID
    g = bytes(range(1, 17)); both_hdr(48, g)
    nd = len(descs); ds = (64 + 32 * nd + 4095) // 4096
    n = (ds + len(data_secs)) * 4096
    e = bytearray(n)
    e[0:4] = b'loge'; struct.pack_into('<IIQI', e, 8, n, 0, seq, nd); e[32:48] = g
    struct.pack_into('<QQ', e, 48, len(b), len(b))
    for i, d in enumerate(descs): e[64 + 32 * i:96 + 32 * i] = d
    for i, s in enumerate(data_secs): e[(ds + i) * 4096:(ds + i + 1) * 4096] = s
    struct.pack_into('<I', e, 4, crc32c(e))
    b[1 << 20:(1 << 20) + n] = e
PY
    convert_mutants vhdx "$T/src.raw" "${CASES[@]}"
}

mutate truncated 'del b[(3 << 20) + 4096:]'
expect_error truncated "vhdx: "
mutate tiny 'del b[70000:]'
expect_error tiny "too small"
mutate headers-bad 'b[0x10000 + 100] ^= 1; b[0x20000 + 100] ^= 1'
expect_error headers-bad "no valid header at 0x10000 or 0x20000"
mutate header1-bad 'b[0x10000 + 100] ^= 1'
expect_good header1-bad
mutate header-version 'both_hdr(66, struct.pack("<H", 2))'
expect_error header-version "header version 2 at 0x"
mutate log-misaligned 'both_hdr(72, struct.pack("<Q", (1 << 20) + 512))'
expect_error log-misaligned "log at 0x100200"
mutate log-huge 'both_hdr(68, struct.pack("<I", 0xfff00000))'
expect_error log-huge "not 1 MiB aligned or too big"
mutate regions-bad 'b[0x30000 + 20] ^= 1; b[0x40000 + 20] ^= 1'
expect_error regions-bad "no valid region table"
mutate region-past-eof 'p64(0x30000 + 16 + 16, 1 << 50); p64(0x40000 + 16 + 16, 1 << 50); rts()'
expect_error region-past-eof "region entry at 0x30010"
mutate region-count 'p32(0x30008, 100000); p32(0x40008, 100000); rts()'
expect_error region-count "region table at 0x30000 has 100000 entries"
mutate block-size-odd 'p32((2 << 20) + 65536, 3 << 20)'
expect_error block-size-odd "block size 3145728"
mutate block-size-huge 'p32((2 << 20) + 65536, 1 << 31)'
expect_error block-size-huge "block size 2147483648"
mutate vsize-huge 'p64((2 << 20) + 65536 + 8, 1 << 62)'
expect_error vsize-huge "virtual disk size 4611686018427387904"
mutate lss-odd 'p32((2 << 20) + 65536 + 32, 1000)'
expect_error lss-odd "logical sector size 1000"
mutate meta-count 'p16((2 << 20) + 10, 60000)'
expect_error meta-count "metadata table at 0x200000 has 60000 entries"
mutate meta-item-outside 'p32((2 << 20) + 32 + 16, 0xfffff000)'
expect_error meta-item-outside "metadata entry 0 at 0x200020"
mutate meta-unknown 'b[(2 << 20) + 32] ^= 0x55'
expect_error meta-unknown "unknown required metadata item"
mutate bat-past-eof 'p64((3 << 20) + 8, (1 << 40) | 6)'
expect_error bat-past-eof "BAT entry 1 at 0x300008 points past end of file"
mutate bat-state 'p64(3 << 20, 5)'
expect_error bat-state "BAT entry 0 at 0x300000 has invalid state 5"
# log entry whose data descriptor targets the file identifier (offset 0)
mutate log-wild-target 'log_entry([b"desc" + bytes(12) + struct.pack("<QQ", 0, 7)],
                                  [b"data" + struct.pack("<I", 0) + bytes(4084) + struct.pack("<I", 7)])'
expect_error log-wild-target "log descriptor 0 (seq 7) writes 0x1000 bytes at 0x0"
# log entry zeroing 2^60 bytes
mutate log-huge-zero 'log_entry([b"zero" + bytes(4) + struct.pack("<QQQ", 1 << 60, 3 << 20, 7)], [])'
expect_error log-huge-zero "log descriptor 0"
# log named in the header but holding no valid entry: nothing to replay
mutate log-garbage 'g = bytes(range(1, 17)); both_hdr(48, g); b[1 << 20:(1 << 20) + 4096] = b"loge" + bytes(4092)'
expect_good log-garbage
# a valid entry that re-writes a BAT sector (replayed in memory)
mutate log-valid 'sec = bytes(b[3 << 20:(3 << 20) + 4096])
log_entry([b"desc" + sec[4092:] + sec[:8] + struct.pack("<QQ", 3 << 20, 7)],
          [b"data" + struct.pack("<I", 0) + sec[8:4092] + struct.pack("<I", 7)])'
expect_good log-valid
run_cases
