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

verify_server "$M"

# judge_cuts WHAT EXT JUDGE: each cut image $M/cut-K.EXT that $M/cuts lists
# ("K FLUSHED", from powerloss.py --newest) is judged by `JUDGE IMG
# FLUSHED`, which prints what is wrong and fails when the cut broke the
# order; prints those cuts and the count, sets N_CUTS and BROKEN.
judge_cuts() {
    local what=$1 ext=$2 judge=$3 k done_n why
    N_CUTS=0 BROKEN=0
    while read -r k done_n; do
        N_CUTS=$((N_CUTS + 1))
        if ! why=$("$judge" "$M/cut-$k.$ext" "$done_n"); then
            BROKEN=$((BROKEN + 1))
            echo "$what: cut after change $k ($done_n flushed writes): $why"
        fi
        rm -f "$M/cut-$k.$ext"
    done <"$M/cuts"
    echo "$what: $N_CUTS cuts, $BROKEN broke the order"
}

# qcheck IMG: qemu-img check finds nothing or leaks only (exit 3), else
# prints its first findings and fails.
qcheck() {
    local rc=0
    qemu-img check "$1" >"$M/check" 2>&1 || rc=$?
    if [ "$rc" = 0 ] || [ "$rc" = 3 ]; then
        return 0
    fi
    grep -v -e '^$' -e '^Leaked' "$M/check" | head -2 | tr '\n' ' '
    return 1
}

# qcow2_cut IMG FLUSHED: qcheck, and the flushed writes read back (the
# writer's SEED and EVERY in CUT_SEED, CUT_EVERY).
qcow2_cut() {
    qcheck "$1" || return
    served_verify "$1" "$CUT_SEED" "$2" "$CUT_EVERY" 2>"$M/verify" && return
    head -2 "$M/verify" | tr '\n' ' '
    return 1
}

# order_case CLUSTER SIZE WRITES FLUSH_EVERY SEED UNMAP: one writer run, every
# change cut this way; prints the broken cuts, adds their count to bad.
order_case() {
    local cs=$1 size=$2 writes=$3 unmap=$6
    local img=$M/p-$cs.qcow2
    CUT_EVERY=$4 CUT_SEED=$5
    qemu-img create -q -f qcow2 -o cluster_size="$cs",refcount_bits=16 "$img" "$size"
    cp "$img" "$M/base"
    VDISK_TEST_WRITE_LOG=$M/wlog-$cs VD_CRASH_WRITES=$writes VD_CRASH_UNMAP=$unmap \
        "$W" write "$img" "$CUT_SEED" "$M/flushed" "$CUT_EVERY" 2>"$M/werr" ||
        fail "crash-writer failed: $(cat "$M/werr")"
    [ -s "$M/wlog-$cs" ] || fail "the write log is empty: not the test build of libvdisk?"
    python3 "$PL" "$M/wlog-$cs" "$img" "$M/base" "$M/cut-{}.qcow2" --newest >"$M/cuts" ||
        fail "powerloss.py failed"
    judge_cuts "cluster $cs" qcow2 qcow2_cut
    [ "$N_CUTS" -gt 15 ] || fail "cluster $cs: only $N_CUTS changes in the write log"
    bad=$((bad + BROKEN))
}

bad=0
# 512-byte clusters: an L2 table per 32 KiB and a refcount block per
# 128 KiB of data, so nearly every write makes both (the old order: 10 of 46
# cuts broke, an L1 entry or a refcount table entry naming a table the disk
# did not hold).
order_case 512 4M 4 2 7 0
# 4 KiB clusters in 512 KiB: writes overlap, zero writes free clusters
# (their L2 entries written, then the counts lowered) and new writes take
# them again (the old order: 6 of 46 broke, "refcount=0 reference=1").
order_case 4096 512K 16 4 6 1
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
# prl_cut IMG FLUSHED: judge_image's verdict keeps the format's promise
prl_cut() {
    local state
    state=$(judge_image parallels "$1" "$M/judge" served_verify "$1" 6 "$2" 4)
    trial_failed "$state" "${TRIAL_PROMISE[parallels]}" || return 0
    echo "$state: $(grep -v '^$' "$M/judge" | head -2 | tr '\n' ' ')"
    return 1
}
judge_cuts parallels parallels prl_cut
[ "$N_CUTS" -gt 5 ] || fail "parallels: only $N_CUTS changes in the write log"
bad=$((bad + BROKEN))

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
# One Python for all cuts (a start each cost more than its judging): it
# reads the guest's states once, then answers each raw file it is given with
# "ok" or the first guest offset no state held.  A 64 KiB block that equals
# one state's block whole is passed at once; the others sector by sector.
coproc SECTORS { python3 -c '
import sys
states = [open(p, "rb").read() for p in sys.argv[1:]]
for line in sys.stdin:
    cut = open(line.rstrip("\n"), "rb").read()
    bad = None
    for blk in range(0, len(cut), 65536):
        if any(st[blk:blk + 65536] == cut[blk:blk + 65536] for st in states):
            continue
        for off in range(blk, min(blk + 65536, len(cut)), 512):
            if all(st[off:off + 512] != cut[off:off + 512] for st in states):
                bad = off
                break
        if bad is not None:
            break
    print("ok" if bad is None else "guest offset %d holds what no state of the guest held" % bad,
          flush=True)
' "$M"/st[0-5].raw; }
# reuse_cut IMG FLUSHED: qcheck, and every sector as qemu reads it holds what
# it held in one of the guest's states
reuse_cut() {
    local ans
    qcheck "$1" || return
    qemu-img convert -O raw "$1" "$M/cut.raw"
    echo "$M/cut.raw" >&"${SECTORS[1]}"
    read -r ans <&"${SECTORS[0]}" || ans="the sector judge (python3) ended"
    [ "$ans" = ok ] && return
    echo "$ans"
    return 1
}
judge_cuts reuse qcow2 reuse_cut
[ "$N_CUTS" = 25 ] || fail "reuse: $N_CUTS cuts, not 25"
bad=$((bad + BROKEN))
sp=$SECTORS_PID sfd=${SECTORS[1]}
exec {sfd}>&-
wait "$sp" || fail "the sector judge (python3) failed"
verify_server_end || fail "crash-writer serve failed"
[ "$bad" = 0 ] || fail "$bad cuts broke the order"
