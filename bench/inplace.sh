#!/bin/bash
# bench/inplace.sh - in-place metadata operations against qemu-img: resize
# and commit of an 8 GiB qcow2 holding 1 GiB (issue 15/18: time follows the
# metadata, or the overlay's data, not the image size).  Not a test.
#
#   bench/inplace.sh [BUILD_DIR]
#
# Environment: RUNS=5 (median reported), BENCH_DIR=/var/tmp/vdisk-bench-inplace
# (needs ~3 GiB), OVERLAY=256 (MiB of data in the overlay that commit moves).
#
# resize: each run grows its own copy of the image by 1 GiB (vdconvert resize
#         IMG +1G / qemu-img resize IMG +1G), on a page cache that holds it.
# commit: each run commits a fresh overlay (OVERLAY MiB in 1 MiB pieces, one
#         every 4 MiB) into a fresh copy of the base (copies not timed).
set -euo pipefail
export LC_ALL=C
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build}
V=${VDCONVERT:-$BUILD/tools/vdconvert/vdconvert}
RUNS=${RUNS:-5}
OVERLAY=${OVERLAY:-256}
D=${BENCH_DIR:-/var/tmp/vdisk-bench-inplace}
for c in qemu-img qemu-io python3; do
    command -v $c >/dev/null || { echo "needs $c" >&2; exit 1; }
done
mkdir -p "$D"
cd "$D"

if [ ! -f base.qcow2 ]; then
    # 8 GiB, 1 MiB of random data at the start of every 8 MiB: 1 GiB of data
    python3 - <<'PY'
import os
with open("base.raw", "wb") as f:
    f.truncate(8 << 30)
    for i in range(1024):
        f.seek(i * (8 << 20))
        f.write(os.urandom(1 << 20))
PY
    qemu-img convert -O qcow2 base.raw base.qcow2
    rm -f base.raw
fi
if [ ! -f top.qcow2 ]; then
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
    args=()
    for ((i = 0; i < OVERLAY; i++)); do args+=(-c "write -P $((i % 250 + 1)) $((i * 4 + 2))M 1M"); done
    qemu-io -f qcow2 "${args[@]}" top.qcow2 >/dev/null
fi

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timeit() {  # prints seconds of "$@"
    local t0 t1; t0=$(now); "$@" >/dev/null; t1=$(now)
    python3 -c "print(f'{$t1 - $t0:.4f}')"
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $(df -T . | awk 'NR==2 {print $2}') in $D"
for tool in vdconvert qemu-img; do
    cp base.qcow2 r-$tool.qcow2
done
: >t-resize-vdconvert; : >t-resize-qemu-img; : >t-commit-vdconvert; : >t-commit-qemu-img
for ((r = 0; r < RUNS; r++)); do
    timeit "$V" resize r-vdconvert.qcow2 +1G >>t-resize-vdconvert
    timeit qemu-img resize r-qemu-img.qcow2 +1G >>t-resize-qemu-img
done
for ((r = 0; r < RUNS; r++)); do
    for tool in vdconvert qemu-img; do
        cp base.qcow2 cb.qcow2; cp top.qcow2 ct.qcow2
        qemu-img rebase -u -f qcow2 -b cb.qcow2 -F qcow2 ct.qcow2
        sync
        if [ $tool = vdconvert ]; then
            timeit "$V" commit ct.qcow2 >>t-commit-vdconvert
        else
            timeit qemu-img commit ct.qcow2 >>t-commit-qemu-img
        fi
    done
done
qemu-img check -q r-vdconvert.qcow2 || echo "WARNING: resized image fails qemu-img check"
printf "%-8s %-28s %-28s %s\n" op vdconvert qemu-img ratio
for op in resize commit; do
    a=$(median <t-$op-vdconvert); b=$(median <t-$op-qemu-img)
    printf "%-8s %-28s %-28s %s\n" $op "$a s" "$b s" "$(python3 -c "print(f'{$b / $a:.2f}')")"
done
echo "(ratio = qemu-img / vdconvert; > 1: vdconvert faster; medians of $RUNS)"
rm -f cb.qcow2 ct.qcow2 r-*.qcow2
