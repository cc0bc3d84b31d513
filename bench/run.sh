#!/bin/bash
# bench/run.sh - time vdconvert against `qemu-img convert` on the same
# inputs and outputs, in turns, in one run; cp --sparse=always is the limit
# for raw.  Not part of the test suite.
#
#   bench/run.sh [BUILD_DIR]
#
# Two modes:
#  PAIRS (the default): the conversions of issue 18, each twice on the same
#   terms - durable: vdconvert's default (synced before the rename) against
#   `qemu-img convert -t writeback` (which syncs too), with
#   `cp --sparse=always IN OUT && sync -f OUT` as the floor; and unsynced:
#   `vdconvert -t unsafe` against qemu-img's default (cache=unsafe), with
#   plain `cp --sparse=always` as the floor.  Output sizes are printed beside
#   the times (they matter for compressed outputs).
#  PAIRS= (empty): the older matrix - every input format -> raw and raw ->
#   every output format, vdconvert's default against qemu-img's default.
#
# Environment:
#   PAIRS="raw:qcow2 raw:vdi qcow2:vmdk qcow2c:raw vmdks:qcow2 raw:qcow2c raw:vmdks"
#                  IN:OUT formats (vmdk = monolithicSparse, vmdks =
#                  streamOptimized, qcow2c = compressed qcow2)
#   SIZE=1G        virtual size of each input image (matrix mode: 2G)
#   RUNS=5         timed runs per command (the median is reported)
#   KINDS=mixed    input contents (matrix mode: "dense holes zeros empty"):
#                  dense  random data everywhere
#                  holes  1 MiB random / 1 MiB hole, alternating
#                  zeros  95% written zeroes (allocated), 5% random
#                  empty  all holes
#                  mixed  3/8 a tar of /usr/lib, 1/8 random, rest holes
#                         (the reference content of issue 10)
#                  sparse 1 MiB of random data at the start of every GiB,
#                         the rest holes (for SIZE=100G: memory stays flat)
#   FORMATS="raw qcow2 qcow2c vmdk vdi vhd"   matrix mode's formats
#                  (there vmdk = streamOptimized)
#   BENCH_DIR=BUILD_DIR/bench-work   where images are made (needs ~7x SIZE);
#                  the default is on the checkout's own file system
#   WORKERS=       -m for vdconvert (default: its own, the CPU count)
#   QEMU_OPTS=     extra options for qemu-img convert, e.g. "-m 8 -W"
#   BENCH_FS=xfs   make an XFS file system (reflinks) in a file in BENCH_DIR,
#                  loop-mount it and work there (root, xfsprogs); default:
#                  BENCH_DIR's own file system
#   BENCH_FS=tmpfs mount a tmpfs (8 GiB at most) on BENCH_DIR/tmpfs and work
#                  there (root): the page cache alone, no disk
#
# A format vdisk cannot read or write yet is skipped and said so.  Per pair
# it prints the median wall time of each tool, the ratio qemu-img/vdconvert
# (> 1: vdconvert is faster), their median CPU time (user+sys) and peak RSS,
# output sizes, and whether the outputs are identical in content (qemu-img
# compare) and clean (qemu-img check).
set -euo pipefail
export LC_ALL=C
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build}
V=${VDCONVERT:-$BUILD/tools/vdconvert/vdconvert}
PAIRS=${PAIRS-raw:qcow2 raw:vdi qcow2:vmdk qcow2c:raw vmdks:qcow2 raw:qcow2c raw:vmdks}
if [ -n "$PAIRS" ]; then
    SIZE=${SIZE:-1G}; KINDS=${KINDS:-mixed}
else
    SIZE=${SIZE:-2G}; KINDS=${KINDS:-dense holes zeros empty}
fi
RUNS=${RUNS:-5}
FORMATS=${FORMATS:-raw qcow2 qcow2c vmdk vdi vhd}
D=${BENCH_DIR:-$BUILD/bench-work}
VOPT=()
[ -n "${WORKERS:-}" ] && VOPT=(-m "$WORKERS")
read -r -a QOPT <<<"${QEMU_OPTS:-}"

[ -x "$V" ] || { echo "no vdconvert at $V (build first, or pass the build dir)" >&2; exit 1; }
for c in qemu-img /usr/bin/time python3; do
    command -v "$c" >/dev/null || { echo "$c is needed" >&2; exit 1; }
done
mkdir -p "$D"
if [ "${BENCH_FS:-}" = xfs ]; then
    command -v mkfs.xfs >/dev/null || { echo "BENCH_FS=xfs needs mkfs.xfs (xfsprogs)" >&2; exit 1; }
    mkdir -p "$D/xfs"
    mountpoint -q "$D/xfs" && umount "$D/xfs"
    rm -f "$D/xfs.img"
    truncate -s 64G "$D/xfs.img"
    mkfs.xfs -q -m reflink=1 "$D/xfs.img"
    mount -o loop "$D/xfs.img" "$D/xfs"
    XFS_BASE=$D
    trap 'umount "$XFS_BASE/xfs"; rm -f "$XFS_BASE/xfs.img"' EXIT
    D=$D/xfs
elif [ "${BENCH_FS:-}" = tmpfs ]; then
    mkdir -p "$D/tmpfs"
    mountpoint -q "$D/tmpfs" && umount "$D/tmpfs"
    mount -t tmpfs -o size=8G tmpfs "$D/tmpfs"
    TMPFS_BASE=$D
    trap 'umount "$TMPFS_BASE/tmpfs"' EXIT
    D=$D/tmpfs
elif [ -n "${BENCH_FS:-}" ]; then
    echo "BENCH_FS=$BENCH_FS: expected xfs or tmpfs" >&2; exit 1
fi
BYTES=$(python3 -c "import sys; s=sys.argv[1]; m={'K':10,'M':20,'G':30,'T':40}; print(int(s[:-1]) << m[s[-1]] if s[-1] in m else int(s))" "$SIZE")
MiB=1048576

# ---- inputs -------------------------------------------------------------------

# 1 MiB of random data at every STEP MiB of FILE below LIMIT MiB.
put_random() {  # FILE STEP LIMIT
    python3 - "$@" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
for i in range(0, int(sys.argv[3]), int(sys.argv[2])):
    os.pwrite(fd, os.urandom(1 << 20), i << 20)
os.close(fd)
EOF
}

make_raw() {  # KIND FILE
    local kind=$1 f=$2 n=$((BYTES / MiB)) g=$((BYTES >> 30))
    rm -f "$f"
    case $kind in
    dense) head -c "$BYTES" /dev/urandom >"$f" ;;
    holes) truncate -s "$BYTES" "$f"; put_random "$f" 2 "$n" ;;
    zeros) head -c "$BYTES" /dev/zero >"$f"; put_random "$f" 20 "$n" ;;
    empty) truncate -s "$BYTES" "$f" ;;
    sparse) truncate -s "$BYTES" "$f"; put_random "$f" 1024 $(((g > 1 ? g : 1) * 1024)) ;;
    mixed)  # issue 10's reference: 3/8 a tar of /usr/lib, 1/8 random, rest holes
        tar cf - /usr/lib 2>/dev/null | head -c $((BYTES / 8 * 3)) >"$f" || true
        head -c $((BYTES / 8)) /dev/urandom >>"$f"
        truncate -s "$BYTES" "$f"
        ;;
    esac
}

qemu_args() {  # FMT -> qemu-img convert output options
    case $1 in
    raw) echo "-O raw" ;;
    qcow2) echo "-O qcow2" ;;
    qcow2c) echo "-O qcow2 -c" ;;
    vmdk) if [ -n "$PAIRS" ]; then echo "-O vmdk"; else echo "-O vmdk -o subformat=streamOptimized"; fi ;;
    vmdks) echo "-O vmdk -o subformat=streamOptimized" ;;
    vdi) echo "-O vdi" ;;
    vhd) echo "-O vpc" ;;
    esac
}
vd_args() {  # FMT -> vdconvert output options
    case $1 in
    qcow2c) echo "-O qcow2 -c" ;;
    vmdk) if [ -n "$PAIRS" ]; then echo "-O vmdk"; else echo "-O vmdk -o subformat=streamOptimized"; fi ;;
    vmdks) echo "-O vmdk -o subformat=streamOptimized" ;;
    *) echo "-O $1" ;;
    esac
}
ext() { case $1 in qcow2c) echo qcow2 ;; vmdks) echo vmdk ;; *) echo "$1" ;; esac; }

vd_reads() {  # FILE FMT: vdisk reads it as that format
    local want; want=$(ext "$2")
    # (grep without -q reads all: a SIGPIPE to vdconvert would fail the pipeline)
    "$V" info "$1" 2>/dev/null | grep "file format: $want\$" >/dev/null
}
vd_writes() {  # FMT
    local f="$D/probe-out.$(ext "$1")"
    rm -f "$f"
    local ok=0
    # shellcheck disable=SC2046
    "$V" $(vd_args "$1") "$D/probe.raw" "$f" >/dev/null 2>&1 && ok=1
    rm -f "$f"
    [ $ok = 1 ]
}

# ---- timing -----------------------------------------------------------------------

# run_once OUT CMD...: run with the output removed first; prints "wall cpu rss_kib"
run_once() {
    local out=$1; shift
    rm -f "$out"
    sync -f "$D" 2>/dev/null || true
    /usr/bin/time -f "%e %U %S %M" -o "$D/.time" "$@" >/dev/null 2>"$D/.err" ||
        { echo "FAILED: $* ($(head -1 "$D/.err"))" >&2; return 1; }
    awk '{ printf "%.3f %.3f %d\n", $1, $2 + $3, $4 }' "$D/.time"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# bench_pair LABEL IN OUT_VD OUT_Q "VD ARGS" "QEMU ARGS" [CP]
bench_pair() {
    local label=$1 in=$2 ovd=$3 oq=$4 va=$5 qa=$6 cp=${7:-}
    local vw=() vc=() vr=() qw=() qc=() qr=() cw=()
    for ((i = 0; i < RUNS; i++)); do
        # shellcheck disable=SC2086
        read -r w c r < <(run_once "$ovd" "$V" "${VOPT[@]}" $va "$in" "$ovd") || return 0
        vw+=("$w"); vc+=("$c"); vr+=("$r")
        # shellcheck disable=SC2086
        read -r w c r < <(run_once "$oq" qemu-img convert "${QOPT[@]}" $qa "$in" "$oq") || return 0
        qw+=("$w"); qc+=("$c"); qr+=("$r")
        if [ -n "$cp" ]; then
            read -r w c r < <(run_once "$D/cp.raw" cp --sparse=always "$in" "$D/cp.raw")
            cw+=("$w")
        fi
    done
    local mv mq
    mv=$(printf '%s\n' "${vw[@]}" | median)
    mq=$(printf '%s\n' "${qw[@]}" | median)
    local same=identical
    qemu-img compare "$ovd" "$oq" >/dev/null 2>&1 || same=DIFFERENT
    qemu-img check "$ovd" >/dev/null 2>&1 || [ $? -eq 63 ] || same="$same,CHECK-FAILS"
    local szv szq
    szv=$(du -k "$ovd" | cut -f1); szq=$(du -k "$oq" | cut -f1)
    printf '%-22s %8s %8s %6s %8s %8s %7s %7s %9s %9s %s' "$label" "$mv" "$mq" \
        "$(awk -v a="$mq" -v b="$mv" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')" \
        "$(printf '%s\n' "${vc[@]}" | median)" "$(printf '%s\n' "${qc[@]}" | median)" \
        "$(( $(printf '%s\n' "${vr[@]}" | sort -n | tail -1) / 1024 ))" \
        "$(( $(printf '%s\n' "${qr[@]}" | sort -n | tail -1) / 1024 ))" "$szv" "$szq" "$same"
    [ -n "$cp" ] && printf '  cp=%s' "$(printf '%s\n' "${cw[@]}" | median)"
    printf '\n'
    rm -f "$ovd" "$oq" "$D/cp.raw"
}

# bench_terms LABEL IN OUT_VD OUT_Q "VD ARGS" "QEMU ARGS" CP
# Both terms of issue 18: durable (vdconvert default vs qemu-img -t
# writeback, floor cp + sync) and unsynced (vdconvert -t unsafe vs qemu-img's
# default, floor cp).  CP=1: print the floor (uncompressed pairs).
bench_terms() {
    local label=$1 in=$2 ovd=$3 oq=$4 va=$5 qa=$6 cp=$7 term vt qt ct
    for term in durable unsafe; do
        if [ $term = durable ]; then
            vt=""; qt="-t writeback"; ct=(sh -c 'cp --sparse=always "$1" "$2" && sync -f "$2"' cp "$in" "$D/cp.raw")
        else
            vt="-t unsafe"; qt=""; ct=(cp --sparse=always "$in" "$D/cp.raw")
        fi
        local vw=() vc=() vr=() qw=() qc=() qr=() cw=()
        for ((i = 0; i < RUNS; i++)); do
            # shellcheck disable=SC2086
            read -r w c r < <(run_once "$ovd" "$V" "${VOPT[@]}" $vt $va "$in" "$ovd") || return 0
            vw+=("$w"); vc+=("$c"); vr+=("$r")
            # shellcheck disable=SC2086
            read -r w c r < <(run_once "$oq" qemu-img convert "${QOPT[@]}" $qt $qa "$in" "$oq") || return 0
            qw+=("$w"); qc+=("$c"); qr+=("$r")
            if [ "$cp" = 1 ]; then
                read -r w c r < <(run_once "$D/cp.raw" "${ct[@]}")
                cw+=("$w")
            fi
        done
        local mv mq same=identical
        mv=$(printf '%s\n' "${vw[@]}" | median)
        mq=$(printf '%s\n' "${qw[@]}" | median)
        qemu-img compare "$ovd" "$oq" >/dev/null 2>&1 || same=DIFFERENT
        qemu-img check "$ovd" >/dev/null 2>&1 || [ $? -eq 63 ] || same="$same,CHECK-FAILS"
        printf '%-20s %-7s %7s %7s %6s %7s %7s %7s %6s %6s %9s %9s %s\n' "$label" "$term" "$mv" "$mq" \
            "$(awk -v a="$mq" -v b="$mv" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')" \
            "$([ "$cp" = 1 ] && printf '%s\n' "${cw[@]}" | median || echo -)" \
            "$(printf '%s\n' "${vc[@]}" | median)" "$(printf '%s\n' "${qc[@]}" | median)" \
            "$(( $(printf '%s\n' "${vr[@]}" | sort -n | tail -1) / 1024 ))" \
            "$(( $(printf '%s\n' "${qr[@]}" | sort -n | tail -1) / 1024 ))" \
            "$(du -k "$ovd" | cut -f1)" "$(du -k "$oq" | cut -f1)" "$same"
        rm -f "$ovd" "$oq" "$D/cp.raw"
    done
}

# ---- main ----------------------------------------------------------------------------

echo "# $(date -u +%FT%TZ) $(uname -r), $(nproc) CPUs, $(qemu-img --version | head -1)"
echo "# SIZE=$SIZE RUNS=$RUNS KINDS='$KINDS' FORMATS='$FORMATS' BENCH_DIR=${BENCH_DIR:-} BENCH_FS=${BENCH_FS:-} QEMU_OPTS='${QEMU_OPTS:-}' $0 $*"
echo "# working in $D ($(stat -f -c %T "$D"))"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
truncate -s 1M "$D/probe.raw"
if [ -n "$PAIRS" ]; then
    printf '%-20s %-7s %7s %7s %6s %7s %7s %7s %6s %6s %9s %9s %s\n' "pair" "terms" "vd_s" \
        "qemu_s" "ratio" "cp_s" "vd_cpu" "q_cpu" "vd_MiB" "q_MiB" "vd_KiB" "qemu_KiB" "content"
    echo "# durable: vdconvert (default) vs qemu-img -t writeback, cp --sparse=always + sync"
    echo "# unsafe:  vdconvert -t unsafe vs qemu-img (default), cp --sparse=always"
fi
for kind in $KINDS; do
    raw="$D/$kind.raw"
    make_raw "$kind" "$raw"
    if [ -n "$PAIRS" ]; then
        for p in $PAIRS; do
            fin=${p%%:*} fout=${p#*:}
            in=$raw
            if [ "$fin" != raw ]; then
                in="$D/$kind.in.$fin.$(ext "$fin")"
                # shellcheck disable=SC2046
                qemu-img convert -f raw $(qemu_args "$fin") "$raw" "$in"
            fi
            if ! vd_reads "$in" "$fin"; then
                echo "$kind $fin->$fout: skipped, vdisk cannot read $fin yet"
            elif ! vd_writes "$fout"; then
                echo "$kind $fin->$fout: skipped, vdisk cannot write $fout yet"
            else
                e=$(ext "$fout") cp=1
                case "$fin $fout" in *qcow2c*|*vmdks*) cp=0 ;; esac
                bench_terms "$kind $fin->$fout" "$in" "$D/o.vd.$e" "$D/o.q.$e" "$(vd_args "$fout")" \
                    "$(qemu_args "$fout")" "$cp"
            fi
            [ "$in" = "$raw" ] || rm -f "$in"
        done
        rm -f "$raw"
        continue
    fi
    printf '%-22s %8s %8s %6s %8s %8s %7s %7s %9s %9s %s\n' "pair" "vd_s" "qemu_s" "ratio" \
        "vd_cpu" "qemu_cpu" "vd_MiB" "qemu_MiB" "vd_KiB" "qemu_KiB" "content"
    for f in $FORMATS; do
        [ "$f" = raw ] && continue
        in="$D/$kind.in.$f.$(ext "$f")"
        # shellcheck disable=SC2046
        qemu-img convert -f raw $(qemu_args "$f") "$raw" "$in"
        if vd_reads "$in" "$f"; then
            bench_pair "$kind $f->raw" "$in" "$D/o.vd.raw" "$D/o.q.raw" "-O raw" "-O raw"
        else
            echo "$kind $f->raw: skipped, vdisk cannot read $f yet"
        fi
        rm -f "$in"
    done
    for f in $FORMATS; do
        if ! vd_writes "$f"; then
            echo "$kind raw->$f: skipped, vdisk cannot write $f yet"
            continue
        fi
        e=$(ext "$f")
        bench_pair "$kind raw->$f" "$raw" "$D/o.vd.$e" "$D/o.q.$e" "$(vd_args "$f")" \
            "$(qemu_args "$f")" "$([ "$f" = raw ] && echo cp)"
    done
    rm -f "$raw"
done
rm -f "$D/probe.raw" "$D/.time" "$D/.err"
