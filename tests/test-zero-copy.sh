#!/bin/bash
# Zero-copy conversion: data a source stores plainly in its file goes with
# copy_file_range (zero detection on the job read into memory) into a raw
# target at the guest offset or into clusters vd_map_for_write allocates in
# a qcow2, VDI or VHD target (with zero detection: on a file system that
# shares blocks, else through memory; the same outputs are checked either way).
# Every source format with a plain data file, made by
# qemu-img, converted to raw, qcow2, vdi and vhd, must equal what qemu-img reads, with
# and without zero detection, and check clean; the same holds for the
# fallbacks: runs that are not whole target clusters, a backing chain (data
# of depth 1), clusters that point past the end of the file, --no-copy-range.
#
#   ZERO_COPY_DIR=/mnt/xfs  run in that folder instead of the temp dir
#   (test-zero-copy-reflink.sh runs this on XFS and checks the sharing).
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3
D=${ZERO_COPY_DIR:-$T}
V=$VDCONVERT

# 8 MiB of mixed content: whole clusters of data, 4 KiB pieces at odd
# offsets (runs that are not whole 64 KiB clusters), written zeroes, holes.
python3 - "$D/src.raw" <<'EOF'
import os, random, sys
random.seed(7)
fd = os.open(sys.argv[1], os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
os.ftruncate(fd, 8 << 20)
os.pwrite(fd, random.randbytes(1 << 20), 0)                  # 1 MiB of data
os.pwrite(fd, b"\0" * (256 << 10), 1 << 20)                   # written zeroes
os.pwrite(fd, random.randbytes(4096), (2 << 20) + 12288)      # lone 4 KiB
os.pwrite(fd, random.randbytes(20480), (3 << 20) + 4096)      # 20 KiB, unaligned
for i in range(16):                                           # data/zero stripes
    os.pwrite(fd, random.randbytes(4096) if i % 2 else b"\0" * 4096, (4 << 20) + i * 4096)
os.pwrite(fd, random.randbytes((1 << 20) - 512), 7 << 20)     # up to the last sector
os.close(fd)
EOF

# The modes each source is converted in: zero detection (image targets go
# through memory on a file system without reflinks, with copy_file_range
# on one with them), -S 0 (copy_file_range everywhere), --no-copy-range
# (through memory everywhere).  ZERO_COPY_MODES narrows the list: the XFS
# run of test-zero-copy-reflink.sh leaves out --no-copy-range, whose path
# (copy_plan: zero_copy off, vd_fs_shares_blocks never asked) is the one
# the run on the temp dir's file system has just checked.
MODES=(default -S0 --no-copy-range)
[ -z "${ZERO_COPY_MODES:-}" ] || read -r -a MODES <<<"$ZERO_COPY_MODES"
declare -A MODE_ARGS=([default]= [-S0]=$'-S\t0\t' [--no-copy-range]=$'--no-copy-range\t')

# convert_and_compare LABEL SRC: SRC to raw, qcow2, vdi and vhd in every
# mode, each conversion (and the check of a vhd output) in a process of its
# own forked by mutant-runner from vdconvert's main() (lib.sh's run_many:
# the same code from main() on as an exec of vdconvert, without its start,
# which under ASan costs more than an 8 MiB conversion); then each output
# must equal what qemu-img reads from SRC, and check clean.
convert_and_compare() {
    local label=$1 src=$2 m of i=0 rc nout nerr what=() outs=()
    for m in "${MODES[@]}"; do
        [ -n "${MODE_ARGS[$m]+set}" ] || fail "unknown mode $m in ZERO_COPY_MODES"
        for of in raw qcow2 vdi vhd; do
            printf 'vdconvert\t%s-O\t%s\t%s\t%s\n' "${MODE_ARGS[$m]}" "$of" "$src" "$D/o$i.$of"
            what+=("$label $m -> $of") outs+=("$D/o$i.$of")
            if [ $of = vhd ]; then
                printf 'vdconvert\tcheck\t%s\n' "$D/o$i.$of"
                what+=("$label $m -> vhd: vdconvert check") outs+=("")
            fi
            i=$((i + 1))
        done
    done >"$T/zc.jobs"
    rm -rf "$T/zc"
    run_many "$T/zc" <"$T/zc.jobs" >"$T/zc.st"
    [ "$(wc -l <"$T/zc.st")" = ${#what[@]} ] ||
        fail "$label: mutant-runner ran $(wc -l <"$T/zc.st") of ${#what[@]} commands"
    while read -r i rc nout nerr; do
        local w=${what[$i]} out=${outs[$i]}
        [ "$rc" = 0 ] || { cat "$T/zc/$i.err"; fail "$w: vdconvert exit $rc"; }
        [ -n "$out" ] || continue
        qemu-img compare -q "$src" "$out" || fail "$w: content differs"
        case $out in
        *.qcow2|*.vdi) qemu-img check -q "$out" || fail "$w: qemu-img check" ;;
        esac
        rm -f "$out"
    done <"$T/zc.st"
}

for fmt in raw qcow2 vdi vpc vhdx qed qcow; do
    src=$D/src.$fmt
    [ "$fmt" = raw ] || qemu-img convert -f raw -O "$fmt" "$D/src.raw" "$src"
    convert_and_compare "$fmt" "$src"
done
echo "formats: raw qcow2 vdi vhd vhdx qed qcow -> raw, qcow2, vdi, vhd: identical"

# -S 0 copies everything block status calls data, written zeroes included;
# zero detection leaves them out (the qcow2 output is smaller).
"$V" -S 0 -O qcow2 "$D/src.raw" "$D/s0.qcow2"
"$V" -O qcow2 "$D/src.raw" "$D/s4k.qcow2"
data_bytes() { qemu-img map --output=json "$1" |
    python3 -c 'import json, sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]))'; }
a0=$(data_bytes "$D/s0.qcow2"); a4=$(data_bytes "$D/s4k.qcow2")
[ "$a0" -gt "$a4" ] || fail "zero detection did not leave out written zeroes ($a0 vs $a4 data bytes)"

# A backing chain: the overlay's own clusters come from its file, the rest
# from the base's file (depth 1).
qemu-img create -q -f qcow2 -b src.raw -F raw "$D/top.qcow2"
qemu-io -c "write -q -P 0x5a 64k 128k" -c "write -q -P 0xa5 5m 4k" "$D/top.qcow2" ||
    fail "qemu-io could not write into the overlay"
convert_and_compare "qcow2 over raw" "$D/top.qcow2"
echo "backing chain: identical"

# Clusters that point past the end of the file: the driver's read decides
# (zeroes), not a short copy_file_range.
qemu-img convert -f raw -O qcow2 "$D/src.raw" "$D/cut.qcow2"
sz=$(stat -c %s "$D/cut.qcow2")
truncate -s $((sz - 300 * 1024)) "$D/cut.qcow2"
rm -f "$D/cut-a.raw" "$D/cut-b.raw"
"$V" -O raw "$D/cut.qcow2" "$D/cut-a.raw" || fail "truncated qcow2: vdconvert failed"
"$V" --no-copy-range -O raw "$D/cut.qcow2" "$D/cut-b.raw" || fail "truncated qcow2 with --no-copy-range: vdconvert failed"
cmp -s "$D/cut-a.raw" "$D/cut-b.raw" || fail "truncated qcow2: zero-copy and --no-copy-range outputs differ"
qemu-img compare -q -f qcow2 -F raw "$D/cut.qcow2" "$D/cut-a.raw" ||
    fail "truncated qcow2: output differs from what qemu-img reads"
echo "clusters past the end of the file: as the driver reads them"

# An existing target (-n): data lands in its clusters, in place or new.
qemu-img create -q -f qcow2 "$D/exist.qcow2" 8M
qemu-io -c "write -q -P 0x11 0 2m" "$D/exist.qcow2" || fail "qemu-io could not write"
"$V" -n -O qcow2 "$D/src.raw" "$D/exist.qcow2" || fail "-n: vdconvert failed"
qemu-img compare -q "$D/src.raw" "$D/exist.qcow2" || fail "-n: content differs"
qemu-img check -q "$D/exist.qcow2" || fail "-n: qemu-img check"
echo "existing target: identical"
echo "zero-copy tests passed"
