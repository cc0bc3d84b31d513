#!/bin/bash
# Metadata order under a power loss (qcow2, parallels): a disk with a volatile write
# cache may keep a later write and lose an earlier one unless a sync lies
# between them.  The library's write log (VDISK_TEST_WRITE_LOG, test build)
# of a short crash-writer run is cut after each change in turn, keeping the
# durable part (everything before the last sync) and of the rest only that
# change (tests/powerloss.py --newest): every pair of writes with no sync
# between them is split this way.  Each image must hold the flushed writes
# and check clean or with leaks only.  Pairs that must be ordered: a new
# refcount block (and its own refcount) before the refcount table entry that
# names it; refcounts before the L2 table that references the clusters; an
# L2 table before the L1 entry that points to it; an L2 entry's removal
# before the refcount that drops; a cluster freed is not taken again before
# the sync of its removal.  512-byte clusters make every write need
# new L2 tables and refcount blocks; every 7th write is a zero write that
# frees clusters.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img python3
W=$VD_BUILD/tests/crash-writer
PL=$VD_SRC/tests/powerloss.py
mem_dir M

# order_case CLUSTER SIZE WRITES FLUSH_EVERY SEED UNMAP: one writer run, every
# change cut this way; prints the broken cuts, returns their count.
order_case() {
    local cs=$1 size=$2 writes=$3 every=$4 seed=$5 unmap=$6 n=0 bad=0 k done_n rc
    local img=$M/p-$cs.qcow2 c
    qemu-img create -q -f qcow2 -o cluster_size="$cs",refcount_bits=16 "$img" "$size"
    cp "$img" "$M/base"
    VDISK_TEST_WRITE_LOG=$M/wlog-$cs VD_CRASH_WRITES=$writes VD_CRASH_UNMAP=$unmap \
        "$W" write "$img" "$seed" "$M/flushed" "$every" 2>"$M/werr" ||
        fail "crash-writer failed: $(cat "$M/werr")"
    [ -s "$M/wlog-$cs" ] || fail "the write log is empty: not the test build of libvdisk?"
    python3 "$PL" "$M/wlog-$cs" "$img" "$M/base" "$M/cut-{}.qcow2" --newest >"$M/cuts" ||
        fail "powerloss.py failed"
    while read -r k done_n; do
        c=$M/cut-$k.qcow2
        n=$((n + 1))
        rc=0
        qemu-img check "$c" >"$M/check" 2>&1 || rc=$?
        if [ "$rc" != 0 ] && [ "$rc" != 3 ]; then    # 3: leaks only
            bad=$((bad + 1))
            echo "cluster $cs: cut after change $k ($done_n flushed writes): $(grep -v -e '^$' -e '^Leaked' "$M/check" | head -2 | tr '\n' ' ')"
        elif ! "$W" verify "$c" "$seed" "$done_n" "$every" >"$M/verify" 2>&1; then
            bad=$((bad + 1))
            echo "cluster $cs: cut after change $k ($done_n flushed writes): $(head -2 "$M/verify" | tr '\n' ' ')"
        fi
        rm -f "$c"
    done <"$M/cuts"
    [ "$n" -gt 15 ] || fail "cluster $cs: only $n changes in the write log"
    echo "cluster $cs: $n cuts, $bad broke the order"
    return "$bad"
}

bad=0
# 512-byte clusters: an L2 table per 32 KiB and a refcount block per
# 128 KiB of data, so nearly every write makes both (the old order: 10 of 46
# cuts broke, an L1 entry or a refcount table entry naming a table the disk
# did not hold).
order_case 512 4M 4 2 7 0 || bad=$((bad + $?))
# 4 KiB clusters in 512 KiB: writes overlap, zero writes free clusters
# (their L2 entries written, then the counts lowered) and new writes take
# them again (the old order: 6 of 46 broke, "refcount=0 reference=1").
order_case 4096 512K 16 4 6 1 || bad=$((bad + $?))
# Parallels: a new cluster's BAT entry must follow the cluster, synced (the
# old code wrote it right after the data: 6 of 14 cuts left an entry past
# the end of the file, an image that no longer opened, data lost).  The
# in-use flag makes every cut after the first write need a repair, which its
# promise allows (tests/lib.sh TRIAL_PROMISE); lost data or a corrupt image
# it does not.
img=$M/p.parallels
"$VDCONVERT" create -O parallels "$img" 8M >/dev/null || fail "parallels: create failed"
cp "$img" "$M/base"
VDISK_TEST_WRITE_LOG=$M/wlog-prl VD_CRASH_WRITES=8 "$W" write "$img" 6 "$M/flushed" 4 \
    2>"$M/werr" || fail "crash-writer failed: $(cat "$M/werr")"
python3 "$PL" "$M/wlog-prl" "$img" "$M/base" "$M/cut-{}.parallels" --newest >"$M/cuts" ||
    fail "powerloss.py failed"
n=0 pbad=0
while read -r k done_n; do
    n=$((n + 1))
    state=$(judge_image parallels "$M/cut-$k.parallels" "$M/judge" \
        "$W" verify "$M/cut-$k.parallels" 6 "$done_n" 4)
    if trial_failed "$state" "${TRIAL_PROMISE[parallels]}"; then
        pbad=$((pbad + 1))
        echo "parallels: cut after change $k ($done_n flushed writes): $state: $(grep -v '^$' "$M/judge" | head -2 | tr '\n' ' ')"
    fi
    rm -f "$M/cut-$k.parallels"
done <"$M/cuts"
[ "$n" -gt 5 ] || fail "parallels: only $n changes in the write log"
echo "parallels: $n cuts, $pbad broke the promise"
bad=$((bad + pbad))

# qcow2, a cluster freed and taken again before the sync: a batch of 4096
# freed clusters is released (L2 entries written, counts lowered) with no
# sync, and the next allocation must not take one of them: the old L2
# entry may still be on the disk without its removal, and new data there
# would show through it.  The old code handed out the cluster right above
# the cursor (guest 64K's, freed by the 2.5M unmapping zero write) for
# guest 2M's data: the cut after that data write showed guest 64K holding
# it.  Only the last 25 changes are cut: the bug lies in the unflushed tail.
T2=$QCOW2_TOOL_LOG
ops=(w:0:4M:1 f z:0:64K:u f w:0:64K:2 f z:64K:2560K:u w:2M:4K:3)
img=$M/r.qcow2
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=16 "$img" 8M
cp "$img" "$M/base"
# the guest's states, replayed on raw files: every sector of a cut must
# hold what it held in one of them
i=0 acc=()
truncate -s 8M "$M/st0.raw"
for op in "${ops[@]}"; do
    [ "$op" = f ] && continue
    acc+=("$op") i=$((i + 1))
    truncate -s 8M "$M/st$i.raw"
    "$T2" -f raw "$M/st$i.raw" "${acc[@]}" >/dev/null || fail "reuse: raw replay failed"
done
VDISK_TEST_WRITE_LOG=$M/wlog-r "$T2" "$img" "${ops[@]}" >/dev/null 2>"$M/werr" ||
    fail "qcow2-write-tool failed: $(cat "$M/werr")"
python3 "$PL" "$M/wlog-r" "$img" "$M/base" "$M/cut-{}.qcow2" --newest 25 >"$M/cuts" ||
    fail "powerloss.py failed"
n=0 rbad=0
while read -r k done_n; do
    c=$M/cut-$k.qcow2
    n=$((n + 1))
    rc=0
    qemu-img check "$c" >"$M/check" 2>&1 || rc=$?
    if [ "$rc" != 0 ] && [ "$rc" != 3 ]; then
        rbad=$((rbad + 1))
        echo "reuse: cut after change $k: $(grep -v -e '^$' -e '^Leaked' "$M/check" | head -2 | tr '\n' ' ')"
    else
        qemu-img convert -O raw "$c" "$M/cut.raw"
        python3 - "$M/cut.raw" "$M"/st[0-5].raw >"$M/j" <<'PY' || { rbad=$((rbad + 1)); echo "reuse: cut after change $k: $(cat "$M/j")"; }
import sys
cut = open(sys.argv[1], 'rb').read()
states = [open(p, 'rb').read() for p in sys.argv[2:]]
for off in range(0, len(cut), 512):
    if all(st[off:off + 512] != cut[off:off + 512] for st in states):
        print('guest offset %d holds what no state of the guest held' % off)
        sys.exit(1)
PY
    fi
    rm -f "$c"
done <"$M/cuts"
[ "$n" = 25 ] || fail "reuse: $n cuts, not 25"
echo "qcow2 reuse: $n cuts, $rbad broke the order"
bad=$((bad + rbad))
[ "$bad" = 0 ] || fail "$bad cuts broke the order"
