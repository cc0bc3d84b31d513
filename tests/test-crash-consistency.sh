#!/bin/bash
# Crash consistency of every writable format: a writer (tests/crash-writer.c)
# writes through libvdisk with periodic flushes and is SIGKILLed at a random
# moment; then the image must open, everything written before the last
# completed flush must read back exactly, and `qemu-img check` must report no
# corruption (leaked clusters are allowed: that is what a crash may leave).
# Formats run with and without a backing file where they support one.
#   VD_CRASH_TRIALS   trials per format and layout (default 50, so 100 per
#                     format; the slow suite runs crash-consistency-long
#                     with 200)
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img python3
W=$VD_BUILD/tests/crash-writer
TRIALS=${VD_CRASH_TRIALS:-50}
SIZE=16M

python3 -c "import os; open('$T/base.raw','wb').write(bytes((i*7+3)&0xff for i in range(16<<20)))"

formats=()
for fmt in qcow2 qed vdi vhd vhdx vmdk parallels; do
    if "$VDCONVERT" create -O "$fmt" "$T/probe.$fmt" 1M >/dev/null 2>&1; then formats+=("$fmt"); fi
    rm -rf "$T/probe.$fmt"*
done
[ ${#formats[@]} -gt 0 ] || skip "no writable image format besides raw yet"
qemu_name() { case $1 in vhd) echo vpc;; *) echo "$1";; esac; }

# crash_format FMT: every trial of one format, both layouts; prints its
# lines and leaves "total bad repaired" in $T/FMT.counts.  Formats run in
# parallel: a trial mostly waits for its kill, so the cores stay busy.
crash_format() {
    local fmt=$1 total=0 bad=0 repaired=0 layout base bfmt t img pid done_n base_arg rc
    local L=$T/$fmt
    for layout in plain backing; do
        if [ $layout = backing ]; then
            # The parent in the same format (VDI/VHD/VHDX/VMDK differencing
            # disks need one), in raw for the formats that take any backing.
            base=base.raw bfmt=raw
            if ! (cd "$T" && "$VDCONVERT" create -O "$fmt" -b base.raw -F raw "probe.$fmt" >/dev/null 2>&1); then
                rm -rf "$T/probe.$fmt" "$T/probe.$fmt".* "$T/base.$fmt"
                "$VDCONVERT" -O "$fmt" "$T/base.raw" "$T/base.$fmt" >/dev/null 2>&1 || continue
                (cd "$T" && "$VDCONVERT" create -O "$fmt" -b "base.$fmt" -F "$fmt" "probe.$fmt" >/dev/null 2>&1) || continue
                base=base.$fmt bfmt=$fmt
            fi
            rm -f "$T/probe.$fmt"
        fi
        for t in $(seq 1 "$TRIALS"); do
            img=$T/img-$t.$fmt
            rm -f "$img" "$L.log"
            if [ $layout = backing ]; then
                (cd "$T" && "$VDCONVERT" create -O "$fmt" -b "$base" -F "$bfmt" "$(basename "$img")" >/dev/null)
            else
                "$VDCONVERT" create -O "$fmt" "$img" $SIZE >/dev/null
            fi
            "$W" write "$img" "$t" "$L.log" 8 2>"$L.werr" &
            pid=$!
            sleep "0.0$(( (t * 37) % 90 + 10 ))"
            kill -9 $pid 2>/dev/null || true
            wait $pid 2>/dev/null || true
            if [ -s "$L.werr" ]; then echo "writer error ($fmt $layout #$t): $(cat "$L.werr")"; bad=$((bad+1)); continue; fi
            done_n=$(tail -1 "$L.log" 2>/dev/null || echo 0)
            total=$((total + 1))
            base_arg=""; [ $layout = backing ] && base_arg=$T/base.raw
            if ! "$W" verify "$img" "$t" "$done_n" 8 $base_arg 2>"$L.verr"; then
                echo "LOST DATA ($fmt $layout #$t, $done_n flushed writes): $(cat "$L.verr")"
                bad=$((bad + 1)); continue
            fi
            if [ "$fmt" != vmdk ] || ! grep -q streamOptimized "$img" 2>/dev/null; then
                rc=0; qemu-img check -f "$(qemu_name "$fmt")" "$img" >"$L.chk" 2>&1 || rc=$?
                # qemu cannot open some variants at all (VDI differencing
                # images): our own check judges those.
                if grep -q "log that needs to be replayed" "$L.chk"; then
                    # a VHDX killed mid-update: replaying the log is recovery
                    rc=0; qemu-img check -r all -f vhdx "$img" >"$L.chk" 2>&1 || rc=$?
                fi
                if grep -q "Could not open.*\(unsupported\|not supported\)" "$L.chk"; then
                    rc=0; "$VDCONVERT" check "$img" >"$L.chk" 2>&1 || rc=$?
                    echo "(qemu cannot open it; vdconvert check exit $rc)" >>"$L.chk"
                fi
                # 0 clean, 3 leaks only; 63 = format has no check in qemu.
                # Anything else must be repairable by our own check -r all.
                if [ $rc != 0 ] && [ $rc != 3 ] && [ $rc != 63 ]; then
                    "$VDCONVERT" check -r all "$img" >>"$L.chk" 2>&1 || true
                    rc=0; qemu-img check -f "$(qemu_name "$fmt")" "$img" >>"$L.chk" 2>&1 || rc=$?
                    [ $rc = 0 ] || [ $rc = 3 ] || [ $rc = 63 ] || rc=fail
                    if [ $rc != fail ]; then repaired=$((repaired + 1)); else rc=2; fi
                fi
                if [ $rc != 0 ] && [ $rc != 3 ] && [ $rc != 63 ]; then
                    echo "qemu-img check ($fmt $layout #$t) exit $rc: $(head -5 "$L.chk")"
                    bad=$((bad + 1))
                fi
            fi
            rm -f "$img"
        done
        echo "$fmt $layout: $TRIALS trials"
    done
    echo "$total $bad $repaired" >"$T/$fmt.counts"
}

for fmt in "${formats[@]}"; do crash_format "$fmt" >"$T/$fmt.out" 2>&1 & done
wait
total=0 bad=0 repaired=0
for fmt in "${formats[@]}"; do
    cat "$T/$fmt.out"
    [ -f "$T/$fmt.counts" ] || { echo "$fmt: the trial loop did not finish"; bad=$((bad + 1)); continue; }
    read -r a b c <"$T/$fmt.counts"
    total=$((total + a)) bad=$((bad + b)) repaired=$((repaired + c))
done
echo "$total trials, $bad failures, $repaired needed vdconvert check -r (formats: ${formats[*]})"
[ $bad = 0 ] || fail "$bad crash trials lost data or corrupted the image"
