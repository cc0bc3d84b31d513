#!/bin/bash
# bench/vdmount.sh - how fast `disk` of a vdmount mount reads compared with
# vdconvert reading the same image.  Not part of the test suite.
#
#   bench/vdmount.sh [BUILD_DIR]
#
# Environment: SIZE=1G, RUNS=3, FORMATS="raw qcow2 vmdk vdi",
# BENCH_DIR=/dev/shm/vdisk-bench-mount.  Input: bench/run.sh's "mixed"-like
# content without the tar (half random data, half holes).  Per format it
# prints the median wall seconds of:
#   vdconvert  vdconvert IMG -O raw OUT (OUT on BENCH_DIR, removed each run)
#   direct     dd bs=4M of MNT/disk, default mount (1 MiB direct requests)
#   cached     dd bs=4M of MNT/disk with --page-cache, first read after mount
# A read of `disk` returns every byte, holes included, where vdconvert skips
# holes but writes its output; both move the same guest content.
set -euo pipefail
export LC_ALL=C
B=$(cd "${1:-build}" && pwd)
VDC=$B/tools/vdconvert/vdconvert VDM=$B/fuse-mount/vdmount
SIZE=${SIZE:-1G} RUNS=${RUNS:-3} FORMATS=${FORMATS:-"raw qcow2 vmdk vdi"}
D=${BENCH_DIR:-/dev/shm/vdisk-bench-mount}
mkdir -p "$D/mnt"
trap 'fusermount3 -u "$D/mnt" 2>/dev/null || true' EXIT
bytes=$(numfmt --from=iec "$SIZE")
q=$((bytes / 4 / 1048576))
qemu-img create -q -f raw "$D/in.raw" "$SIZE"
head -c $((q * 1048576)) /dev/urandom >"$D/rand"
dd if="$D/rand" of="$D/in.raw" bs=1M seek=$((q / 2)) conv=notrunc status=none
dd if="$D/rand" of="$D/in.raw" bs=1M seek=$((2 * q)) conv=notrunc status=none
rm -f "$D/rand"
median() { sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
printf '%-6s %10s %10s %10s\n' format vdconvert direct cached
for f in $FORMATS; do
    img=$D/in.$f
    [ "$f" = raw ] && img=$D/in.raw || qemu-img convert -f raw -O "$f" "$D/in.raw" "$img"
    vc=$(for i in $(seq "$RUNS"); do rm -f "$D/out.raw"; t "$VDC" "$img" -O raw "$D/out.raw"; done | median)
    rm -f "$D/out.raw"
    dio=$(for i in $(seq "$RUNS"); do "$VDM" "$img" "$D/mnt"; t dd if="$D/mnt/disk" of=/dev/null bs=4M status=none
          fusermount3 -u "$D/mnt"; done | median)
    cac=$(for i in $(seq "$RUNS"); do "$VDM" --page-cache "$img" "$D/mnt"; t dd if="$D/mnt/disk" of=/dev/null bs=4M status=none
          fusermount3 -u "$D/mnt"; done | median)
    printf '%-6s %10.3f %10.3f %10.3f\n' "$f" "$vc" "$dio" "$cac"
    [ "$f" = raw ] || rm -f "$img"
done
rm -f "$D/in.raw"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
