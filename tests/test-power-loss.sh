#!/bin/bash
# Power loss, simulated: a writer (tests/crash-writer.c) writes through
# libvdisk with a flush every 8 writes while the library logs every change
# it makes to the image file (VDISK_TEST_WRITE_LOG).  tests/powerloss.py
# then cuts the log at random records and rebuilds what a disk with a
# volatile write cache could hold at that moment: all that the last sync
# made durable, and a random subset of the 4 KiB pieces written since.  For
# each such image: it opens (or `vdconvert check -r all` makes it open),
# every write before the last completed flush reads back exactly, and
# `qemu-img check` (or our own check where qemu has none) finds no
# corruption.  Unlike a SIGKILL (test-crash-consistency.sh) this loses
# writes the page cache held, so it tests the order of syncs in the drivers.
#   VD_POWER_TRIALS   cuts per format (default 60)
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img python3
W=$VD_BUILD/tests/crash-writer
PL=$VD_SRC/tests/powerloss.py
TRIALS=${VD_POWER_TRIALS:-60}
qemu_name() { case $1 in vhd) echo vpc;; *) echo "$1";; esac; }

# power_format FMT: all trials of one format; "total bad repaired" in
# $T/FMT.counts.  Formats run in parallel.
power_format() {
    local fmt=$1 total=0 bad=0 repaired=0 n cut done_n rc
    local D=$T/$fmt
    mkdir -p "$D"
    local img=$D/img.$fmt
    "$VDCONVERT" create -O "$fmt" "$img" 8M >/dev/null
    cp "$img" "$D/base"
    VDISK_TEST_WRITE_LOG=$D/wlog VD_CRASH_WRITES=400 "$W" write "$img" 7 "$D/flushed" 8 \
        2>"$D/werr" || { echo "$fmt: writer failed: $(cat "$D/werr")"; echo "0 1 0" >"$T/$fmt.counts"; return; }
    n=$(python3 "$PL" "$D/wlog" "$img" --count)
    for t in $(seq 1 "$TRIALS"); do
        cut=$(( (t * 7919 + 13) % (n + 1) ))
        [ "$t" = 1 ] && cut=$n
        done_n=$(python3 "$PL" "$D/wlog" "$img" "$D/base" "$D/cut.$fmt" "$cut" "$t")
        total=$((total + 1))
        rc=0
        if ! "$W" verify "$D/cut.$fmt" 7 "$done_n" 8 2>"$D/verr"; then
            # an image that does not open may be repaired; lost data may not
            if grep -q "reopen" "$D/verr" && "$VDCONVERT" check -r all "$D/cut.$fmt" >"$D/rep" 2>&1 &&
                "$W" verify "$D/cut.$fmt" 7 "$done_n" 8 2>"$D/verr"; then
                repaired=$((repaired + 1))
            else
                echo "$fmt cut $cut/$n ($done_n flushed writes): $(head -c 300 "$D/verr") $(head -c 200 "$D/rep" 2>/dev/null)"
                bad=$((bad + 1)); continue
            fi
        fi
        if [ "$fmt" = vdi ] || [ "$fmt" = parallels ] || [ "$fmt" = vhd ]; then
            # qemu's checks of these are partial or absent: ours, repairing
            "$VDCONVERT" check "$D/cut.$fmt" >"$D/chk" 2>&1 || rc=$?
        else
            qemu-img check -f "$(qemu_name "$fmt")" "$D/cut.$fmt" >"$D/chk" 2>&1 || rc=$?
            if grep -q "log that needs to be replayed" "$D/chk"; then
                rc=0; qemu-img check -r all -f vhdx "$D/cut.$fmt" >"$D/chk" 2>&1 || rc=$?
            fi
        fi
        # 0 clean, 3 leaked clusters only (a power loss may leave those)
        if [ $rc != 0 ] && [ $rc != 3 ]; then
            "$VDCONVERT" check -r all "$D/cut.$fmt" >>"$D/chk" 2>&1 || true
            rc=0
            if [ "$fmt" = vdi ] || [ "$fmt" = parallels ] || [ "$fmt" = vhd ]; then
                "$VDCONVERT" check "$D/cut.$fmt" >>"$D/chk" 2>&1 || rc=$?
            else
                qemu-img check -f "$(qemu_name "$fmt")" "$D/cut.$fmt" >>"$D/chk" 2>&1 || rc=$?
            fi
            if [ $rc = 0 ] || [ $rc = 3 ]; then
                repaired=$((repaired + 1))
            else
                echo "$fmt cut $cut/$n: check exit $rc: $(head -4 "$D/chk")"
                bad=$((bad + 1))
            fi
        fi
    done
    echo "$fmt: $TRIALS cuts of $n logged changes"
    echo "$total $bad $repaired" >"$T/$fmt.counts"
}

formats=(qcow2 qed vhdx vdi vhd vmdk parallels)
for fmt in "${formats[@]}"; do power_format "$fmt" >"$T/$fmt.out" 2>&1 & done
wait
total=0 bad=0 repaired=0
for fmt in "${formats[@]}"; do
    cat "$T/$fmt.out"
    [ -f "$T/$fmt.counts" ] || { echo "$fmt: did not finish"; bad=$((bad + 1)); continue; }
    read -r a b c <"$T/$fmt.counts"
    total=$((total + a)) bad=$((bad + b)) repaired=$((repaired + c))
done
echo "$total power-loss cuts, $bad failures, $repaired needed vdconvert check -r all"
[ $bad = 0 ] || fail "$bad power-loss cuts lost flushed data or left a corrupt image"
