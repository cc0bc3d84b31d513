#!/bin/bash
# vdconvert snapshot -c/-a/-d on qcow2, checked against qemu: snapshots we
# create are listed by qemu-img, read back (qemu-img convert -l) as the
# disk was, applied and deleted by qemu; snapshots qemu creates are applied
# and deleted by us; after every step qemu-img check finds no error and no
# leak.  For v3 and v2 (compat=0.10) images, extended L2, compressed
# clusters, and an L1 table that must grow (a snapshot of a bigger disk).
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io
V=$VDCONVERT
cd "$T"

clean() {  # IMG STEP: qemu-img check finds nothing, not even leaks
    local out
    out=$(qemu-img check "$1" 2>&1) || fail "$2: qemu-img check failed: $out"
    grep -q "No errors were found" <<<"$out" || fail "$2: qemu-img check: $out"
    if grep -q "leaked" <<<"$out"; then fail "$2: leaked clusters: $out"; fi
}
same_as() {  # IMG RAW STEP
    qemu-img compare -q -F raw "$1" "$2" || fail "$3: disk content differs from $2"
}

for opts in "compat=1.1" "compat=0.10" "extended_l2=on,cluster_size=128k"; do
    img=a.qcow2
    rm -f "$img" ./*.raw
    qemu-img create -q -f qcow2 -o "$opts" "$img" 64M
    qemu-io -c "write -q -P 0x11 0 4M" -c "write -q -P 0x22 8M 1M" "$img"
    [ "$opts" = compat=1.1 ] && qemu-io -c "write -q -c -P 0x23 12M 1M" "$img"
    qemu-img convert -O raw "$img" state1.raw

    "$V" snapshot -c first "$img" || fail "$opts: snapshot -c first"
    clean "$img" "$opts: after -c first"
    qemu-img snapshot -l "$img" | matches " first " || fail "$opts: qemu does not list 'first'"
    qemu-io -c "write -q -P 0x33 1M 1M" -c "write -q -P 0x44 20M 1M" "$img"
    clean "$img" "$opts: after writing over the snapshot"
    qemu-img convert -O raw "$img" state2.raw
    qemu-img convert -l first -O raw "$img" snap.raw
    cmp -s snap.raw state1.raw || fail "$opts: snapshot 'first' does not hold the disk as it was"

    "$V" snapshot -c second "$img" || fail "$opts: snapshot -c second"
    "$V" snapshot -c second "$img" 2>/dev/null && fail "$opts: a second 'second' was accepted"
    "$V" snapshot -a first "$img" || fail "$opts: snapshot -a first"
    clean "$img" "$opts: after -a first"
    same_as "$img" state1.raw "$opts: after -a first"
    "$V" snapshot -a 2 "$img" || fail "$opts: snapshot -a 2 (by id)"
    same_as "$img" state2.raw "$opts: after -a 2"
    clean "$img" "$opts: after -a 2"

    # qemu applies and deletes ours
    qemu-img snapshot -a first "$img" || fail "$opts: qemu could not apply our snapshot"
    same_as "$img" state1.raw "$opts: qemu applied 'first'"
    qemu-img snapshot -d second "$img" || fail "$opts: qemu could not delete our snapshot"
    clean "$img" "$opts: qemu deleted 'second'"
    # we apply and delete qemu's
    qemu-io -c "write -q -P 0x55 2M 64k" "$img"
    qemu-img convert -O raw "$img" state3.raw
    qemu-img snapshot -c third "$img"
    qemu-io -c "write -q -P 0x66 2M 3M" "$img"
    "$V" snapshot -a third "$img" || fail "$opts: snapshot -a of qemu's snapshot"
    same_as "$img" state3.raw "$opts: applied qemu's 'third'"
    clean "$img" "$opts: after applying qemu's 'third'"
    "$V" snapshot -d third "$img" || fail "$opts: snapshot -d of qemu's snapshot"
    "$V" snapshot -d first "$img" || fail "$opts: snapshot -d first"
    clean "$img" "$opts: all deleted"
    [ -z "$(qemu-img snapshot -l "$img")" ] || fail "$opts: snapshots left after deleting all"
    same_as "$img" state3.raw "$opts: content after deleting every snapshot"
    # nothing left shared: a write goes in place again, and the file does
    # not keep the snapshots' clusters
    "$V" snapshot -d first "$img" 2>/dev/null && fail "$opts: deleting a missing snapshot succeeded"
    echo "$opts: create, apply, delete (ours and qemu's): clean and identical"
done

# A snapshot taken of a bigger disk: applying it must grow the L1 table
# and the virtual size back.
rm -f b.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4k b.qcow2 600M
qemu-io -c "write -q -P 0x77 590M 1M" b.qcow2
qemu-img convert -O raw b.qcow2 big.raw
"$V" snapshot -c big b.qcow2
qemu-img resize -q --shrink b.qcow2 16M 2>/dev/null ||
    skip "qemu-img cannot shrink an image with snapshots here"
"$V" snapshot -a big b.qcow2 || fail "apply of a bigger disk's snapshot"
clean b.qcow2 "after applying the bigger snapshot"
same_as b.qcow2 big.raw "after applying the bigger snapshot"
echo "grown L1 and virtual size: clean and identical"

# refcount_bits=1 cannot count a second reference: a clear error, and the
# image is unchanged and clean.
rm -f c.qcow2
qemu-img create -q -f qcow2 -o refcount_bits=1 c.qcow2 8M
qemu-io -c "write -q -P 0x12 0 1M" c.qcow2
cp c.qcow2 c0.qcow2
"$V" snapshot -c x c.qcow2 2>err.txt && fail "refcount_bits=1: snapshot accepted"
grep -q "c.qcow2" err.txt || fail "refcount_bits=1: the error does not name the file: $(cat err.txt)"
qemu-img check -q c.qcow2 || fail "refcount_bits=1: image damaged by the refused snapshot"
echo "refcount_bits=1: refused ($(head -1 err.txt))"

"$V" snapshot -c x "$T/state1.raw" 2>/dev/null && fail "raw: snapshot accepted"
echo "qcow2 snapshot tests passed"
