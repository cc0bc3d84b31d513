#!/bin/bash
# Power loss, simulated: a writer (tests/crash-writer.c, linked with the test
# build of libvdisk) writes through the library with a flush every 8 writes
# while the library logs every change it makes to the image file
# (VDISK_TEST_WRITE_LOG).  tests/powerloss.py then cuts the log at random
# records and rebuilds what a disk with a volatile write cache could hold at
# that moment: all that the last sync made durable, and a random subset of
# the 4 KiB pieces written since.  For each such image, every write before
# the last completed flush must read back exactly, and the image must be in
# the state docs/flush.md promises for its format (tests/lib.sh
# TRIAL_PROMISE: for most, `qemu-img check` and `vdconvert check` find
# nothing but leaks, with no repair).  Unlike a SIGKILL
# (test-crash-consistency.sh) this loses writes the page cache held, so it
# tests the order of syncs in the drivers.
# The cuts are where the evidence is: the first is after the whole log, the
# others each just before one of the image's syncs, spread evenly over them
# from the first (the first allocations) to the last.  A cut there can leave
# whatever a cut anywhere since the previous sync can (see powerloss.py), so
# 30 cuts judge 29 of the 50-150 flush intervals a run has at full
# strength; random cuts, which the test made before, judged fewer changes
# each.  The slow suite's power-loss-long judges every interval.
#   VD_POWER_TRIALS   cuts per format (default 30)
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3
W=$VD_BUILD/tests/crash-writer
PL=$VD_SRC/tests/powerloss.py
TRIALS=${VD_POWER_TRIALS:-30}
mem_dir M

# The hooks live in the test build only, never in the installed library.
# (grep reads it all: with `grep -q` strings could die of SIGPIPE after a
# match, and under pipefail the check would pass)
if strings "$VD_BUILD/libvdisk/libvdisk.so" | grep VDISK_TEST >/dev/null; then
    fail "libvdisk.so holds a test hook: $(strings "$VD_BUILD/libvdisk/libvdisk.so" | grep VDISK_TEST)"
fi

# power_format FMT: all cuts of one format, made one at a time, as they are
# judged, by one powerloss.py that reads the log once.
power_format() {
    local fmt=$1 n t cut state done_n syncs to from cpid
    local D=$M/$fmt
    mkdir -p "$D"
    local img=$D/img.$fmt
    "$VDCONVERT" create -O "$fmt" "$img" 8M >/dev/null || { echo "create failed"; return 1; }
    cp "$img" "$D/base"
    VDISK_TEST_WRITE_LOG=$D/wlog VD_CRASH_WRITES=400 "$W" write "$img" 7 "$D/flushed" 8 \
        2>"$D/werr" || { echo "writer failed: $(cat "$D/werr")"; return 1; }
    [ -s "$D/wlog" ] || { echo "the write log is empty: not the test build of libvdisk?"; return 1; }
    verify_server "$D"
    coproc CUTTER { python3 "$PL" "$D/wlog" "$img" "$D/base" "$D/cut-{}.$fmt" --serve; }
    to=${CUTTER[1]} from=${CUTTER[0]} cpid=$CUTTER_PID
    read -r n <&"$from" && read -r -a syncs <&"$from" || { echo "powerloss.py failed"; return 1; }
    [ ${#syncs[@]} -gt 8 ] || { echo "only ${#syncs[@]} syncs in the log"; return 1; }
    for t in $(seq 1 "$TRIALS"); do
        # trial t >= 2: the sync (t-2)/(TRIALS-1) of the way through (with
        # more trials than syncs, intervals repeat with other seeds)
        cut=$n
        [ "$t" = 1 ] || cut=${syncs[$(( (t - 2) * ${#syncs[@]} / (TRIALS - 1) ))]}
        echo "$cut:$t" >&"$to"
        read -r done_n <&"$from" || { echo "powerloss.py failed at cut $cut"; return 1; }
        state=$(judge_image "$fmt" "$D/cut-$t.$fmt" "$D/judge" \
            served_verify "$D/cut-$t.$fmt" 7 "$done_n" 8)
        echo "$state" >>"$T/$fmt.states"
        [ "$state" = clean ] ||
            echo "$state (cut $cut/$n, $done_n flushed writes): $(grep -v '^$' "$D/judge" | head -4 | tr '\n' ' ')"
        rm -f "$D/cut-$t.$fmt"
    done
    exec {to}>&-
    wait "$cpid" || { echo "powerloss.py failed"; return 1; }
    verify_server_end || { echo "crash-writer serve failed"; return 1; }
    echo "$TRIALS cuts of $n logged changes (${#syncs[@]} syncs)"
}

per_format power_format "${TRIAL_FORMATS[@]}" || fail "power-loss cuts broke their format's promise"
