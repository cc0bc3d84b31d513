#!/bin/bash
# qemu-img parity where scripts depend on it, each against qemu-img's own
# output on the same images: compare (-s, messages, first offset, exit
# codes), snapshot -l (columns), check (exit 63, a dirty VHDX log), commit -b,
# create -b (size from the backing file), -F with -b/-B, and the commands
# added for parity (dd, bench, amend) when present.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io
V=$VDCONVERT
cd "$T"
MiB=1048576

same() {  # NAME ARGS...: stdout and exit code of `qemu-img ARGS` and `vdconvert ARGS`
    local name=$1 qrc=0 vrc=0
    shift
    qemu-img "$@" >q.out 2>q.err || qrc=$?
    "$V" "$@" >v.out 2>v.err || vrc=$?
    [ $qrc = $vrc ] || fail "$name: exit $vrc, qemu-img $qrc ($(cat v.err q.err))"
    diff q.out v.out >/dev/null || fail "$name: output differs from qemu-img's:
$(diff q.out v.out)"
    echo "ok: $name (exit $vrc)"
}

# --- compare -----------------------------------------------------------------------
qemu-img create -q -f qcow2 a.qcow2 8M
qemu-io -c "write -P 1 1M 1M" -c "write -z 3M 1M" a.qcow2 >/dev/null
qemu-img convert -O raw a.qcow2 a.raw
qemu-img create -q -f qcow2 b.qcow2 8M
qemu-io -c "write -P 1 1M 1M" -c "write -P 2 5M 4k" b.qcow2 >/dev/null
qemu-img create -q -f qcow2 c.qcow2 16M
qemu-io -c "write -P 1 1M 1M" -c "write -P 3 12M 4k" c.qcow2 >/dev/null
qemu-img create -q -f qcow2 d.qcow2 16M
qemu-io -c "write -P 1 1M 1M" d.qcow2 >/dev/null
qemu-img create -q -f qcow2 e.qcow2 8M
qemu-io -c "write -P 1 1M 1M" -c "write -P 9 1540k 1k" e.qcow2 >/dev/null
same "compare identical (qcow2, raw)" compare -f qcow2 -F raw a.qcow2 a.raw
same "compare -s, status differs at 0" compare -s -f qcow2 -F raw a.qcow2 a.raw
same "compare, content differs" compare a.qcow2 b.qcow2
same "compare -s, zero cluster against unallocated" compare -s a.qcow2 b.qcow2
same "compare -s, the other way" compare -s b.qcow2 a.qcow2
same "compare -s identical" compare -s a.qcow2 a.qcow2
same "compare, sector inside a cluster" compare a.qcow2 e.qcow2
same "compare, sizes differ, data past the end" compare a.qcow2 c.qcow2
same "compare, sizes differ, zero tail" compare a.qcow2 d.qcow2
same "compare -s, sizes differ" compare -s a.qcow2 d.qcow2
same "compare -q" compare -q a.qcow2 c.qcow2
same "compare, missing file" compare a.qcow2 nothere.qcow2

# --- snapshot -l and info's snapshot table -------------------------------------------
cp a.qcow2 s.qcow2
qemu-img snapshot -c first s.qcow2
qemu-img snapshot -c "second one" s.qcow2
"$V" snapshot -c third s.qcow2
same "snapshot -l" snapshot -l s.qcow2
qemu-img info s.qcow2 | sed -n '/^Snapshot list/,/^Format/p' >q.out
"$V" info s.qcow2 | sed -n '/^Snapshot list/,/^Format/p' >v.out
diff q.out v.out >/dev/null || fail "info's snapshot table differs: $(diff q.out v.out)"
echo "ok: info's snapshot table"

# --- check exit codes ----------------------------------------------------------------
qemu-img convert -O qcow a.qcow2 a.qcow
for f in a.raw a.qcow; do
    qrc=0; qemu-img check "$f" >/dev/null 2>&1 || qrc=$?
    vrc=0; "$V" check "$f" >/dev/null 2>&1 || vrc=$?
    [ $qrc = 63 ] && [ $vrc = 63 ] || fail "check $f: exit $vrc, qemu-img $qrc (63: no check)"
done
echo "ok: check exits 63 for formats without a check (raw, qcow)"
same "check of a clean qcow2" check a.qcow2
qemu-img convert -c -O qcow2 a.qcow2 cc.qcow2
same "check: compressed clusters" check cc.qcow2
qemu-img create -q -f qcow2 fr.qcow2 8M
qemu-io -c "write 4M 64k" -c "write 0 64k" -c "write 64k 128k" fr.qcow2 >/dev/null
same "check: fragmented clusters" check fr.qcow2
# A VHDX whose log needs replaying: qemu-img cannot open it read-only and
# says to run check -r all; vdconvert check reports the log (exit 2), and
# check -r all replays it as qemu-img does.
dirty=$SHARED/corpus/samples/qemu/iotest-dirtylog-10G-4M.vhdx.bz2
if [ -f "$dirty" ]; then
    bunzip2 -c "$dirty" >d1.vhdx
    cp d1.vhdx d2.vhdx
    rc=0; "$V" check d1.vhdx >out 2>&1 || rc=$?
    [ $rc = 2 ] && grep -q "vhdx: the log at 0x100000 holds metadata changes" out ||
        fail "dirty VHDX log not reported (exit $rc): $(cat out)"
    qemu-img check -r all d2.vhdx >q.out 2>&1
    rc=0; "$V" check -r all d1.vhdx >v.out 2>&1 || rc=$?
    [ $rc = 0 ] && head -7 q.out | diff - <(head -7 v.out) >/dev/null ||
        fail "check -r all of a dirty VHDX: $(cat v.out)"
    cmp d1.vhdx d2.vhdx >/dev/null || qemu-img compare -q d1.vhdx d2.vhdx ||
        fail "the replayed VHDX differs from qemu's"
    echo "ok: dirty VHDX log reported, replayed by check -r all as qemu-img does"
else
    echo "skip: dirty VHDX sample (shared corpus) not present"
fi

# --- create -b: size from the backing file; -F with -b/-B --------------------------
rc=0; qemu-img create -f qcow2 -b a.qcow2 q1.qcow2 >/dev/null 2>&1 || rc=$?
vrc=0; "$V" create -O qcow2 -b a.qcow2 v1.qcow2 >/dev/null 2>v.err || vrc=$?
[ $rc = 1 ] && [ $vrc = 1 ] && [ ! -e v1.qcow2 ] && grep -q "Backing file specified without backing format" v.err ||
    fail "create -b without -F: exit $vrc, qemu-img $rc: $(cat v.err)"
rc=0; qemu-img convert -O qcow2 -B a.qcow2 b.qcow2 q2.qcow2 >/dev/null 2>&1 || rc=$?
vrc=0; "$V" convert -O qcow2 -B a.qcow2 b.qcow2 v2.qcow2 >/dev/null 2>v.err || vrc=$?
[ $rc = 1 ] && [ $vrc = 1 ] && [ ! -e v2.qcow2 ] && grep -q "requires explicit backing format" v.err ||
    fail "convert -B without -F: exit $vrc, qemu-img $rc: $(cat v.err)"
cp b.qcow2 rb.qcow2
for u in "" -u; do
    rc=0; qemu-img rebase $u -b a.qcow2 rb.qcow2 >/dev/null 2>&1 || rc=$?
    vrc=0; "$V" rebase $u -b a.qcow2 rb.qcow2 >/dev/null 2>v.err || vrc=$?
    [ $rc = 1 ] && [ $vrc = 1 ] && grep -q "backing format must be specified" v.err ||
        fail "rebase $u -b without -F: exit $vrc, qemu-img $rc: $(cat v.err)"
done
qemu-img create -f qcow2 -b a.qcow2 -F qcow2 q3.qcow2 | sed 's/.*size=\([0-9]*\).*/\1/' >q.out
"$V" create -O qcow2 -b a.qcow2 -F qcow2 v3.qcow2 | sed 's/.*size=\([0-9]*\) .*/\1/' >v.out
[ "$(cat v.out)" = $((8 * MiB)) ] && diff q.out v.out >/dev/null ||
    fail "create -b: size $(cat v.out), qemu-img $(cat q.out)"
[ "$(qemu-img info --output=json v3.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = $((8 * MiB)) ] ||
    fail "create -b: the image is not the backing file's size"
echo "ok: create -b takes the backing size; -F required with -b/-B as qemu-img 7.2"

# --- dd: qemu-img's operands and arithmetic, content against qemu-img dd -----------
dd_same() {  # NAME OPERANDS...: same output content and exit code as qemu-img dd
    local name=$1 qrc=0 vrc=0
    shift
    rm -f q.dd v.dd
    qemu-img dd "$@" of=q.dd >/dev/null 2>q.err || qrc=$?
    "$V" dd "$@" of=v.dd >/dev/null 2>v.err || vrc=$?
    [ $qrc = $vrc ] || fail "dd $name: exit $vrc, qemu-img $qrc ($(cat v.err q.err))"
    if [ $qrc = 0 ]; then
        [ "$(stat -c %s q.dd)" = "$(stat -c %s v.dd)" ] && cmp q.dd v.dd >/dev/null ||
            fail "dd $name: output differs from qemu-img dd's ($(stat -c %s q.dd) / $(stat -c %s v.dd) bytes)"
    fi
    echo "ok: dd $name (exit $vrc)"
}
dd_same "whole image" if=a.qcow2
dd_same "bs=1M count=3 skip=1" if=a.qcow2 bs=1M count=3 skip=1
dd_same "bs=64k skip=20" if=a.qcow2 bs=64k skip=20
dd_same "bs=3000 count=2" if=a.qcow2 bs=3000 count=2
dd_same "count=1k bs=1" if=a.qcow2 count=1k bs=1
# qemu-img 7.2 prints this error but exits 0; vdconvert exits 1
rc=0; qemu-img dd if=a.qcow2 of=q.dd bs=1M skip=20 2>q.err || rc=$?
vrc=0; "$V" dd if=a.qcow2 of=v.dd bs=1M skip=20 2>v.err || vrc=$?
grep -q "a.qcow2: cannot skip to specified offset" q.err &&
    grep -q "a.qcow2: cannot skip to specified offset" v.err && [ $vrc = 1 ] ||
    fail "dd skip past the end: exit $vrc $(cat v.err) / qemu-img $rc $(cat q.err)"
dd_same "bs=0" if=a.qcow2 bs=0
grep -q "Invalid bs specified" v.err || fail "dd bs=0: $(cat v.err)"
rc=0; "$V" dd if=a.qcow2 of=x.raw conv=notrunc 2>v.err || rc=$?
[ $rc = 2 ] && grep -q "unrecognized operand conv" v.err || fail "dd conv=: exit $rc $(cat v.err)"
rm -f q.qcow2 v.qcow2
qemu-img dd -O qcow2 if=a.qcow2 of=q.qcow2 bs=64k
"$V" dd -O qcow2 if=a.qcow2 of=v.qcow2 bs=64k
qemu-img compare -q q.qcow2 v.qcow2 && qemu-img check -q v.qcow2 || fail "dd -O qcow2"
echo "ok: dd -O qcow2 (content equal, qemu-img check clean)"

# --- bench: qemu-img's lines; writes land where qemu-img bench puts them -------------
for args in "-c 1000" "-c 100 -s 64k" "-c 10 -d 4 -o 4096 -S 8192" "-w -c 50 -S 1M"; do
    qemu-img bench -f qcow2 $args a.qcow2 | sed -n 1p >q.out   # (sed reads all: no SIGPIPE)
    cp a.qcow2 w.qcow2
    "$V" bench -f qcow2 $args w.qcow2 >v.out || fail "bench $args"
    head -1 v.out | diff q.out - >/dev/null || fail "bench $args: $(head -1 v.out) / $(cat q.out)"
    grep -Eq '^Run completed in [0-9]+\.[0-9]{3} seconds\.$' v.out || fail "bench $args: $(cat v.out)"
done
# 50 writes of 4k zeroes 1M apart, wrapping at 8M - 4k: both leave the same content
cp a.qcow2 qw.qcow2
cp a.qcow2 vw.qcow2
qemu-img bench -w -c 50 -S 1M --pattern=7 qw.qcow2 >/dev/null
"$V" bench -w -c 50 -S 1M --pattern=7 vw.qcow2 >/dev/null
qemu-img compare -q qw.qcow2 vw.qcow2 || fail "bench -w wrote elsewhere than qemu-img bench"
rc=0; "$V" bench -t bogus a.qcow2 2>v.err || rc=$?
[ $rc = 1 ] && grep -q "Invalid cache mode" v.err || fail "bench -t bogus: exit $rc"
echo "ok: bench lines, offsets and write pattern as qemu-img bench"

# --- commit -b: into a deeper base, as qemu-img 7.2 ----------------------------------
# base <- mid <- top, each with data of its own; qemu-img and vdconvert each
# commit top into base in a copy of the chain: every layer's guest view and
# backing reference must end up the same (the top is not emptied; mid is
# left as it is, so its own view changes with the base).
mkdir -p cq cv
for d in cq cv; do
    qemu-img create -q -f qcow2 $d/base.qcow2 4M
    qemu-io -c "write -P 1 0 4M" -c "write -z 3M 64k" $d/base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 $d/mid.qcow2
    qemu-io -c "write -P 2 1M 1M" -c "write -z 2560k 64k" $d/mid.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 $d/top.qcow2
    qemu-io -c "write -P 3 1536k 1M" -c "write -z 64k 64k" $d/top.qcow2 >/dev/null
done
qemu-img convert -O raw cq/top.qcow2 top-before.raw
(cd cq && qemu-img commit -q -b base.qcow2 top.qcow2)
(cd cv && "$V" commit -q -b base.qcow2 top.qcow2)
for l in base mid top; do
    qemu-img compare -q cq/$l.qcow2 cv/$l.qcow2 || fail "commit -b: $l reads differently from qemu-img's"
    [ "$(qemu-img info cq/$l.qcow2 | grep '^backing' | sed 's/ (actual path.*//')" = \
      "$(qemu-img info cv/$l.qcow2 | grep '^backing' | sed 's/ (actual path.*//')" ] ||
        fail "commit -b: $l's backing reference differs"
    qemu-img check -q cv/$l.qcow2 || fail "commit -b: check $l"
done
qemu-img compare -q -F raw cv/top.qcow2 top-before.raw || fail "commit -b changed the top's view"
qemu-img map --output=json cv/top.qcow2 | matches '"depth": 0, "present": true, "zero": false, "data": true' ||
    fail "commit -b emptied the top"
# -b naming the immediate backing file: the top is not emptied either
cp cq/top.qcow2 cq/t2.qcow2; cp cq/top.qcow2 cv/t2.qcow2
(cd cq && qemu-img commit -q -b mid.qcow2 t2.qcow2)
(cd cv && "$V" commit -q -b mid.qcow2 t2.qcow2)
qemu-img compare -q cq/mid.qcow2 cv/mid.qcow2 && qemu-img compare -q cq/t2.qcow2 cv/t2.qcow2 ||
    fail "commit -b into the immediate backing file"
# a name that is not in the chain: qemu-img's message, exit 1
rc=0; (cd cv && "$V" commit -b nothere.qcow2 top.qcow2) 2>v.err || rc=$?
qrc=0; (cd cq && qemu-img commit -b nothere.qcow2 top.qcow2) 2>q.err || qrc=$?
[ $rc = 1 ] && [ $qrc = 1 ] && [ "$(sed 's/^vdconvert: //' v.err)" = "$(sed 's/^qemu-img: //' q.err)" ] ||
    fail "commit -b nothere: exit $rc '$(cat v.err)', qemu-img $qrc '$(cat q.err)'"
echo "ok: commit -b into a deeper base and into the backing file, as qemu-img commit -b"
