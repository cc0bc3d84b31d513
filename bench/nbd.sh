#!/bin/bash
# bench/nbd.sh [BUILD] - vdconvert from an `nbdkit vdisk` export with 1 and
# with 4 connections (8 workers, so that requests are in flight), in turns, on a 2 GiB qcow2 (1.5 GiB data: a tar of
# /usr/lib and random bytes, 0.5 GiB holes), medians of RUNS (default 3).
# Not a test: prints the figures for bench/RESULTS.md.
set -euo pipefail
B=$(cd "${1:-build}" && pwd)
RUNS=${RUNS:-3}
D=${BENCH_DIR:-/dev/shm/vdisk-nbd-bench}
mkdir -p "$D"
VDC=$B/tools/vdconvert/vdconvert PLUGIN=$B/nbd/nbdkit-vdisk-plugin.so
if [ ! -f "$D/src.qcow2" ]; then
    truncate -s 2G "$D/src.raw"
    (set +o pipefail; tar -cf - /usr/lib 2>/dev/null | head -c 1G | dd of="$D/src.raw" conv=notrunc status=none)
    (set +o pipefail; head -c 512M /dev/urandom | dd of="$D/src.raw" bs=1M seek=1024 conv=notrunc status=none)
    qemu-img convert -O qcow2 "$D/src.raw" "$D/src.qcow2"
    rm -f "$D/src.raw"
fi
rm -f "$D/sock"
nbdkit -U "$D/sock" -P "$D/pid" "$PLUGIN" file="$D/src.qcow2"
trap 'kill $(cat "$D/pid") 2>/dev/null; rm -f "$D"/out.qcow2' EXIT
for _ in $(seq 50); do [ -S "$D/sock" ] && break; sleep 0.1; done
URI="nbd+unix:///?socket=$D/sock"
declare -A T
for r in $(seq "$RUNS"); do
    for c in 1 4; do
        rm -f "$D/out.qcow2"
        s=$(date +%s.%N)
        VD_NBD_CONNECTIONS=$c "$VDC" -m "${WORKERS:-8}" -O qcow2 "$URI" "$D/out.qcow2"
        e=$(date +%s.%N)
        T[$c]="${T[$c]:-} $(echo "$e - $s" | bc)"
    done
done
qemu-img compare -q "$D/src.qcow2" "$D/out.qcow2" || { echo "output differs"; exit 1; }
med() { tr ' ' '\n' <<<"$1" | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m1=$(med "${T[1]}") m4=$(med "${T[4]}")
printf 'nbd -> qcow2, 2 GiB (1.5 GiB data): 1 connection %.2f s, 4 connections %.2f s, ratio %.2f\n' \
    "$m1" "$m4" "$(echo "$m1 / $m4" | bc -l)"
