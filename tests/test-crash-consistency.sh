#!/bin/bash
# Crash consistency of every writable format: a writer (tests/crash-writer.c)
# writes through libvdisk with periodic flushes and is SIGKILLed at a random
# moment; then every write before the last completed flush must read back
# exactly, and the image must be in the state docs/flush.md promises for its
# format (tests/lib.sh TRIAL_PROMISE): for most, `qemu-img check` and
# `vdconvert check` find nothing but leaked clusters with no repair; where the
# promise allows a repair, the images that needed one are counted.  Every
# format runs every layout of its fixed list: plain, and on a backing file
# (raw where the format takes any backing, else a parent of its own format).
#   VD_CRASH_TRIALS   trials per format and layout (default 20; the slow
#                     suite runs crash-consistency-long with 200)
# Why 20 is enough by default: the kills land 10-100 ms into the writing, at
# 20 different delays 4.5 ms apart (t * 37 mod 90), i.e. anywhere from the
# first allocations of the empty image to hundreds of writes in, each at a
# phase of the 8-write flush cycle that scheduling makes random; 14 layouts
# make 280 kills a run.  What a kill can leave is a subset of what a power
# cut can (the page cache survives a kill), and power-loss cuts the write
# log systematically; the 200-trial campaign stays in the slow suite.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io
W=$VD_BUILD/tests/crash-writer
TRIALS=${VD_CRASH_TRIALS:-20}
mem_dir M
declare -A BACKING=([qcow2]=raw [qed]=raw [vhdx]=vhdx [vdi]=vdi [vhd]=vhd [vmdk]=vmdk)

"$W" pattern "$M/base.raw" $((16 << 20)) || fail "cannot write the base"

# crash_format FMT: every trial of one format, each of its layouts.  Each
# layout's empty image is made once (img.FMT, the name every trial's copy
# has: a VMDK names its own file inside) and copied for each trial.
crash_format() {
    local fmt=$1 layout base t img pid done_n state tick
    local L=$M/$fmt
    mkdir -p "$L"
    img=$L/img.$fmt
    # nap SECONDS: sleep in the shell (read times out on a FIFO no one
    # writes), not a sleep process per poll of the writer
    mkfifo "$L/tick"; exec {tick}<>"$L/tick"
    nap() { read -r -t "$1" -u "$tick" _ || true; }
    verify_server "$L"
    for layout in plain ${BACKING[$fmt]:+backing}; do
        base=""
        rm -f "$img"
        if [ $layout = backing ]; then
            base=base.${BACKING[$fmt]}
            if [ "$base" != base.raw ]; then
                "$VDCONVERT" -f raw -O "$fmt" "$M/base.raw" "$L/$base" >/dev/null ||
                    { echo "cannot make a $fmt parent"; return 1; }
            else
                cp "$M/base.raw" "$L/base.raw"
            fi
            (cd "$L" && "$VDCONVERT" create -O "$fmt" -b "$base" -F "${BACKING[$fmt]}" \
                "$(basename "$img")" >/dev/null) || { echo "create -b $base failed"; return 1; }
        else
            "$VDCONVERT" create -O "$fmt" "$img" 16M >/dev/null || { echo "create failed"; return 1; }
        fi
        mv "$img" "$L/pristine"
        for t in $(seq 1 "$TRIALS"); do
            rm -f "$L/log"
            cp "$L/pristine" "$img"
            "$W" write "$img" "$t" "$L/log" 8 2>"$L/werr" &
            pid=$!
            # The writer creates its log once the image is open: the kill
            # comes 10-100 ms into its writing, however slow the start.
            while [ ! -e "$L/log" ] && kill -0 $pid 2>/dev/null; do nap 0.005; done
            nap "0.0$(( (t * 37) % 90 + 10 ))"
            kill -9 $pid 2>/dev/null || true
            wait $pid 2>/dev/null || true
            if [ -s "$L/werr" ]; then
                echo "writer error ($layout #$t): $(cat "$L/werr")"; echo error >>"$T/$fmt.states"; continue
            fi
            done_n=$(tail -1 "$L/log" 2>/dev/null || true); done_n=${done_n:-0}
            state=$(judge_image "$fmt" "$img" "$L/judge" \
                served_verify "$img" "$t" "$done_n" 8 ${base:+$M/base.raw})
            echo "$state" >>"$T/$fmt.states"
            [ "$state" = clean ] ||
                echo "$state ($layout #$t, $done_n flushed writes): $(grep -v '^$' "$L/judge" | head -4 | tr '\n' ' ')"
            rm -f "$img"
        done
        echo "$layout: $TRIALS trials"
    done
    verify_server_end || { echo "crash-writer serve failed"; return 1; }
}

per_format crash_format "${TRIAL_FORMATS[@]}" || fail "crash trials broke their format's promise"
