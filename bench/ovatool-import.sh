#!/bin/bash
# bench/ovatool-import.sh - `ovatool import` of an OVA holding one
# streamOptimized VMDK against `vdconvert` of the same VMDK to qcow2
# (issue 19: import should cost what the conversion costs).  Not a test.
#
#   bench/ovatool-import.sh [BUILD_DIR]
#
# Environment: RUNS=5 (A/B pairs counted, after one warm-up pair),
# SIZE_MIB=1024 (virtual size), BENCH_DIR=/var/tmp/vdisk-bench-ova.
#
# The disk: a quarter of it a tar of /usr/lib (compressible), an eighth
# random, the rest holes; `ovatool export` packs it into x.ova (SHA256
# manifest), and the VMDK member is taken out of the OVA with tar, so both
# tools read the very same streamOptimized bytes.  Each pair runs
#   A: ovatool import -O qcow2 -d out x.ova        (verify + convert)
#   B: vdconvert -O qcow2 x-disk1.vmdk v.qcow2
# in turns (outputs removed before each run, page cache warm).  Printed:
# each tool's median wall time, the median of the per-pair ratios A/B, and
# the same with `ovatool import --no-verify`.
. "$(dirname "$0")/lib.sh"
bench_init "${1:-}"
V=$BUILD/tools/vdconvert/vdconvert
O=$BUILD/tools/ovatool/ovatool
SIZE_MIB=${SIZE_MIB:-1024}

if [ ! -f x.ova ]; then
    truncate -s "${SIZE_MIB}M" disk.raw
    # (tar dies of SIGPIPE once head has enough: not an error here)
    { tar -C /usr -cf - lib 2>/dev/null || true; } | head -c $((SIZE_MIB / 4))M |
        dd of=disk.raw conv=notrunc status=none
    head -c $((SIZE_MIB / 8))M /dev/urandom |
        dd of=disk.raw bs=1M seek=$((SIZE_MIB / 2)) conv=notrunc status=none
    "$O" export -n x --disk disk.raw -o x.ova >/dev/null
    rm -f disk.raw
    tar -xf x.ova x-disk1.vmdk
fi
[ -f x-disk1.vmdk ] || { echo "x.ova holds no x-disk1.vmdk: $(tar -tf x.ova)" >&2; exit 1; }

now() { date +%s.%N; }
timed() { local t0; t0=$(now); "$@" >/dev/null 2>&1; echo "$(now) - $t0" | bc; }

run_a() { rm -rf out; timed "$O" import -O qcow2 -d out "$@" x.ova; }
run_b() { rm -f v.qcow2; timed "$V" -O qcow2 x-disk1.vmdk v.qcow2; }

pairs() {  # pairs LABEL [import options]
    local label=$1 a b as=() bs=() rs=()
    shift
    run_a "$@" >/dev/null; run_b >/dev/null          # warm-up
    for ((i = 0; i < RUNS; i++)); do
        a=$(run_a "$@"); b=$(run_b)
        as+=("$a"); bs+=("$b"); rs+=("$(ratio "$a" "$b")")
    done
    printf '%-28s ovatool %6.2f s  vdconvert %6.2f s  ratio %5.2fx  (load %s)\n' "$label" \
        "$(printf '%s\n' "${as[@]}" | median)" "$(printf '%s\n' "${bs[@]}" | median)" \
        "$(printf '%s\n' "${rs[@]}" | median)" "$(cut -d' ' -f1-3 /proc/loadavg)"
}

echo "disk: $(du -k x-disk1.vmdk | cut -f1) KiB streamOptimized, ${SIZE_MIB} MiB virtual; $RUNS pairs"
pairs "import (verify)"
pairs "import --no-verify" --no-verify
qemu-img compare -q out/x-disk1.qcow2 v.qcow2 2>/dev/null ||
    { echo "the two outputs differ" >&2; exit 1; }
