#!/bin/bash
# vdconvert amend against qemu-img amend, on copies of the same images:
# the exit code and message, the format-specific fields of
# `qemu-img info --output=json`, `qemu-img check` clean, the guest view
# (and every snapshot's) identical to qemu's result.  refcount_bits
# 16 -> 1 -> 64 -> 16 with data; formats without amend options answer in
# qemu-img's words; a SIGKILL before each write or sync of a refcount width
# change leaves an image that qemu-img check finds clean but for leaks,
# with the old or the new width and the same guest view.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io strace
V=$VDCONVERT
cd "$T"

fields() {  # IMG: what amend may change, as qemu-img info --output=json shows it
    qemu-img info --output=json "$1" | grep -E \
        '"(compat|lazy-refcounts|refcount-bits|corrupt|extended-l2|compression-type|virtual-size|backing-filename|id|name)"' |
        tr -d ' \n'
}
snaps() { qemu-img snapshot -l "$1" | awk 'NR > 2 { print $2 }'; }
same_view() {  # A B WHAT: the active state and every snapshot read the same
    qemu-img compare -q "$1" "$2" || fail "$3: guest view differs from qemu-img's result"
    local s
    for s in $(snaps "$1"); do
        qemu-img convert -l "$s" -O raw "$1" a.raw
        qemu-img convert -l "$s" -O raw "$2" b.raw
        cmp -s a.raw b.raw || fail "$3: snapshot $s differs from qemu-img's result"
    done
}
# qemu-img's message without its prefix; ours without "vdconvert: FILE: "
msg() { sed -e 's/^qemu-img: //' -e 's/^vdconvert: [^:]*: //' -e 's/^vdconvert: //' "$1" | sed -n 1p; }  # (sed -n reads all: no SIGPIPE)

amend_like_qemu() {  # NAME IMG OPTIONS
    local name=$1 qrc=0 vrc=0
    cp "$2" q.qcow2; cp "$2" v.qcow2
    peer_in_place q.err qemu-img amend -o "$3" q.qcow2 || qrc=$?
    "$V" amend -o "$3" v.qcow2 2>v.err || vrc=$?
    [ $qrc = $vrc ] || fail "$name: exit $vrc, qemu-img $qrc ($(cat v.err q.err))"
    if [ $vrc != 0 ]; then
        # qemu adds a second line for creation-only options; ours says it in one
        [ "$(msg v.err | sed 's/: this option is only.*//')" = "$(msg q.err)" ] ||
            fail "$name: message '$(msg v.err)', qemu-img '$(msg q.err)'"
        cmp -s v.qcow2 "$2" || fail "$name: refused, but the image changed"
        echo "ok: $name (refused: $(msg v.err))"
        return
    fi
    [ "$(fields v.qcow2)" = "$(fields q.qcow2)" ] ||
        fail "$name: info differs: $(fields v.qcow2) / qemu-img: $(fields q.qcow2)"
    qemu-img check -q v.qcow2 || fail "$name: qemu-img check"
    same_view v.qcow2 q.qcow2 "$name"
    echo "ok: $name"
}

# ---- images ----------------------------------------------------------------------
qemu-img create -q -f qcow2 plain.qcow2 64M
qemu-io -c "write -P 1 0 3M" -c "write -z 8M 1M" -c "write -P 5 20M 64k" plain.qcow2 >/dev/null
qemu-img create -q -f qcow2 snap.qcow2 8M
qemu-io -c "write -P 9 0 1M" -c "write -z 0 128k" snap.qcow2 >/dev/null
qemu-img snapshot -c s1 snap.qcow2
qemu-io -c "write -P 8 64k 64k" -c "write -z 2M 64k" snap.qcow2 >/dev/null
qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c "write -P 0x11 0 4M" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 over.qcow2
qemu-io -c "write -z 0 128k" -c "write -P 0x22 1M 64k" over.qcow2 >/dev/null
qemu-img snapshot -c s1 over.qcow2
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 8M
qemu-io -c "write -P 3 0 1M" v2.qcow2 >/dev/null
qemu-img snapshot -c s1 v2.qcow2
qemu-img create -q -f qcow2 -o extended_l2=on extl2.qcow2 8M
qemu-img create -q -f qcow2 -o compression_type=zstd zstd.qcow2 8M
qemu-img create -q -f qcow2 -o compression_type=zstd zstdc.qcow2 8M
qemu-io -c "write -c -P 0x41 0 64k" zstdc.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o refcount_bits=8 r8.qcow2 8M
# a dirty image: lazy refcounts, killed after writing
qemu-img create -q -f qcow2 -o lazy_refcounts=on dirty.qcow2 8M
(qemu-io -c "write -P 7 0 1M" -c "sigraise 9" dirty.qcow2 >/dev/null 2>&1 || true) 2>/dev/null
qemu-img info --output=json dirty.qcow2 | matches '"dirty-flag": true' || fail "dirty.qcow2 is not dirty"

# ---- parity ------------------------------------------------------------------------
for o in refcount_bits=1 refcount_bits=2 refcount_bits=64 compat=0.10 compat=v2 \
         lazy_refcounts=on lazy_refcounts=off compat=0.10,lazy_refcounts=on \
         compat=0.10,refcount_bits=8 compat=0.11 refcount_bits=3 refcount_bits=128 \
         refcount_bits=x lazy_refcounts=maybe foo=1 cluster_size=4k; do
    amend_like_qemu "plain $o" plain.qcow2 "$o"
done
amend_like_qemu "snapshot shares clusters: refcount_bits=1" snap.qcow2 refcount_bits=1
amend_like_qemu "snapshot, zero clusters: compat=0.10" snap.qcow2 compat=0.10
amend_like_qemu "snapshot: refcount_bits=4" snap.qcow2 refcount_bits=4
amend_like_qemu "overlay, zero clusters, snapshot: compat=0.10" over.qcow2 compat=0.10
amend_like_qemu "v2 with a snapshot: compat=1.1" v2.qcow2 compat=1.1
amend_like_qemu "v2: compat=1.1,refcount_bits=8,lazy_refcounts=on" v2.qcow2 \
    compat=1.1,refcount_bits=8,lazy_refcounts=on
amend_like_qemu "extended L2: compat=0.10" extl2.qcow2 compat=0.10
amend_like_qemu "zstd, no compressed cluster: compat=0.10" zstd.qcow2 compat=0.10
amend_like_qemu "zstd with compressed clusters: compat=0.10" zstdc.qcow2 compat=0.10
amend_like_qemu "refcount_bits=8: compat=0.10" r8.qcow2 compat=0.10
amend_like_qemu "refcount_bits=8: compat=0.10,refcount_bits=16" r8.qcow2 compat=0.10,refcount_bits=16
amend_like_qemu "dirty: lazy_refcounts=off" dirty.qcow2 lazy_refcounts=off

# 16 -> 1 -> 64 -> 16, with data, each step judged against qemu-img's
# amend of the same data to that width: its result fields are those of
# qemu's own 1 -> 64 step, and the parity cases above made (and keep, under
# VD_PEER_CACHE) its results for 1 and 64 (qemu-img takes ~13 CPU-s for
# its own 1 -> 64, qemu's work, not vdisk's)
cp plain.qcow2 v.qcow2
for b in 1 64 16; do
    cp plain.qcow2 q.qcow2
    peer_in_place q.err qemu-img amend -o refcount_bits=$b q.qcow2 || fail "qemu-img amend: $(cat q.err)"
    "$V" amend -p -o refcount_bits=$b v.qcow2 >/dev/null
    [ "$(fields v.qcow2)" = "$(fields q.qcow2)" ] || fail "refcount_bits=$b in sequence: $(fields v.qcow2)"
    qemu-img check -q v.qcow2 || fail "refcount_bits=$b in sequence: check"
    same_view v.qcow2 plain.qcow2 "refcount_bits=$b in sequence"
done
echo "ok: refcount_bits 16 -> 1 -> 64 -> 16"

# ---- usage and other formats -----------------------------------------------------
rc=0; "$V" amend plain.qcow2 2>err || rc=$?
[ $rc = 2 ] && grep -q "Must specify options (-o)" err || fail "amend without -o: exit $rc: $(cat err)"
rc=0; "$V" amend -U -o compat=1.1 plain.qcow2 2>err || rc=$?
[ $rc = 2 ] || fail "amend -U: exit $rc (usage error expected)"
"$V" amend -f qcow2 -o help | matches "^  refcount_bits" || fail "amend -o help lists no refcount_bits"
for f in vdi vmdk vpc vhdx qed parallels raw; do
    qemu-img create -q -f $f x.$f 8M
    rc=0; "$V" amend -f $f -o size=16M x.$f 2>err || rc=$?
    qrc=0; qemu-img amend -f $f -o size=16M x.$f 2>q.err || qrc=$?
    [ $rc = 1 ] && [ $qrc = 1 ] || fail "$f: amend exit $rc, qemu-img $qrc"
    d=$(sed -n "s/.*Format driver '\([a-z]*\)'.*/\1/p" err)
    [ "$(wc -l <err)" = 1 ] && [ -n "$d" ] &&
        [ "$(msg err)" = "$(msg q.err | sed "s/'$f'/'$d'/")" ] ||
        fail "$f: '$(cat err)', qemu-img '$(cat q.err)'"
done
echo "ok: formats without amend options"

# ---- SIGKILL before each write or sync of a refcount width change ------------------
# (kill_at: the N-th traced call exactly; strace's own when=N counts each
# syscall on its own, so most later steps were never reached.)  A SIGKILL
# leaves what the page cache holds, so the image a kill leaves is the one
# the writes before it made: kills before calls with no write between them
# (the syncs) leave the same file, and its judging would repeat.  The kill
# points are the first call and the call after each write (not the last
# call): every file state that a kill before any of the calls can leave,
# each judged once (5 of the 12 calls).  That holds while the command
# changes the file by the traced writes alone: the reference run traces
# every other call that can change a file too, and none may show.
SYSCALLS=pwrite64,pwritev,ftruncate,fallocate,fsync,fdatasync
qemu-img convert -O raw plain.qcow2 want.raw
cp plain.qcow2 k.qcow2
traced -f -qq -o full.log -e trace=$SYSCALLS,write,writev,pwritev2,truncate,rename,renameat,renameat2,unlink,unlinkat,openat,creat \
    "$V" amend -o refcount_bits=4 k.qcow2
grep -v -e '+++' -e resumed full.log >calls.log
other=$(grep -v -E '^[0-9]+ +(pwrite64|pwritev|ftruncate|fallocate|fsync|fdatasync)\(' calls.log |
        grep -v -E '^[0-9]+ +openat\(' || true)
other+=$(grep -E '^[0-9]+ +openat\(.*O_(CREAT|TRUNC)' calls.log || true)
[ -z "$other" ] || fail "refcount_bits=4 changes a file by an untraced call: $other"
grep -v -E '^[0-9]+ +openat\(' calls.log >trace.log
steps=$(wc -l <trace.log)
[ "$steps" -gt 4 ] || fail "refcount_bits kill points: only $steps steps traced"
[ "$(awk '{ print $1 }' trace.log | sort -u | wc -l)" = 1 ] ||
    fail "refcount_bits: traced in more than one thread: kill points would not be exact"
pts=$(awk -v s="$steps" 'NR == 1 { print 1 } /^[0-9]+ +(pwrite|ftruncate|fallocate)/ && NR < s { print NR + 1 }' trace.log |
      sort -nu)
kills=0
for n in $pts; do
    kills=$((kills + 1))
    cp plain.qcow2 k.qcow2
    run_killed trace.log $n "$V" amend -o refcount_bits=4 k.qcow2
    rc=0; qemu-img check -q k.qcow2 >/dev/null 2>&1 || rc=$?
    [ $rc = 0 ] || [ $rc = 3 ] || fail "refcount_bits=4 killed at step $n: qemu-img check exit $rc"
    bits=$(qemu-img info --output=json k.qcow2 | sed -n 's/.*"refcount-bits": \([0-9]*\).*/\1/p')
    [ "$bits" = 16 ] || [ "$bits" = 4 ] || fail "refcount_bits=4 killed at step $n: width $bits"
    qemu-img compare -q -F raw k.qcow2 want.raw || fail "refcount_bits=4 killed at step $n: guest view"
done
echo "ok: refcount_bits=4: $kills kill points, every file state of $steps steps"
echo "amend tests passed"
