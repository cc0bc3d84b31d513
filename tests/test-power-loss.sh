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
#   VD_POWER_TRIALS   cuts per format (default 60)
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3
W=$VD_BUILD/tests/crash-writer
PL=$VD_SRC/tests/powerloss.py
TRIALS=${VD_POWER_TRIALS:-60}
mem_dir M

# The hooks live in the test build only, never in the installed library.
if strings "$VD_BUILD/libvdisk/libvdisk.so" | grep -q VDISK_TEST; then
    fail "libvdisk.so holds a test hook: $(strings "$VD_BUILD/libvdisk/libvdisk.so" | grep VDISK_TEST)"
fi

# power_format FMT: all cuts of one format, made four at a time from one
# read of the log.
power_format() {
    local fmt=$1 n t cut state pairs=() seeds=() done_n
    local D=$M/$fmt
    mkdir -p "$D"
    local img=$D/img.$fmt
    "$VDCONVERT" create -O "$fmt" "$img" 8M >/dev/null || { echo "create failed"; return 1; }
    cp "$img" "$D/base"
    VDISK_TEST_WRITE_LOG=$D/wlog VD_CRASH_WRITES=400 "$W" write "$img" 7 "$D/flushed" 8 \
        2>"$D/werr" || { echo "writer failed: $(cat "$D/werr")"; return 1; }
    [ -s "$D/wlog" ] || { echo "the write log is empty: not the test build of libvdisk?"; return 1; }
    n=$(python3 "$PL" "$D/wlog" "$img" --count)
    for t in $(seq 1 "$TRIALS"); do
        cut=$(( (t * 7919 + 13) % (n + 1) ))
        [ "$t" = 1 ] && cut=$n
        pairs+=("$cut:$t") seeds+=("$t")
        [ ${#pairs[@]} = 4 ] || [ "$t" = "$TRIALS" ] || continue
        mapfile -t dones < <(python3 "$PL" "$D/wlog" "$img" "$D/base" "$D/cut-{}.$fmt" "${pairs[@]}")
        for i in "${!seeds[@]}"; do
            t=${seeds[$i]} done_n=${dones[$i]} cut=${pairs[$i]%%:*}
            state=$(judge_image "$fmt" "$D/cut-$t.$fmt" "$D/judge" \
                "$W" verify "$D/cut-$t.$fmt" 7 "$done_n" 8)
            echo "$state" >>"$T/$fmt.states"
            [ "$state" = clean ] ||
                echo "$state (cut $cut/$n, $done_n flushed writes): $(grep -v '^$' "$D/judge" | head -4 | tr '\n' ' ')"
            rm -f "$D/cut-$t.$fmt"
        done
        pairs=() seeds=()
    done
    echo "$TRIALS cuts of $n logged changes"
}

per_format power_format "${TRIAL_FORMATS[@]}" || fail "power-loss cuts broke their format's promise"
