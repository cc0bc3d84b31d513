#!/bin/bash
# vdconvert map against `qemu-img map --output=json` on qemu-made images
# (qcow2 when vdisk reads it, qed with a backing file, vdi, vpc), and the
# chain commands checked with qemu-img: rebase (safe and -u), commit,
# resize (in place), snapshot -l.  (Inode, mode, xattrs and crash points of the
# in-place operations: test-vdconvert-inplace.sh.)
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3
V=$VDCONVERT
cd "$T"

# Same extents as qemu-img: start, length, data, zero, depth and file offset.
# (For zero ranges only "zero" is compared: qemu reports unallocated blocks
# of some formats as present zeroes, vdisk as holes.)
same_map() {
    local img=$1
    "$V" map --json "$img" >mine.json || fail "map $img failed"
    qemu-img map --output=json "$img" >theirs.json
    python3 - mine.json theirs.json <<'EOF' || fail "map of $img differs from qemu-img's"
import json, sys
def norm(path):
    out = []
    for e in json.load(open(path)):
        k = (e["data"], e["zero"], e["depth"] if e["data"] else None,
             e.get("offset"))
        if out and out[-1][1] == k and out[-1][0][1] == e["start"]:
            out[-1] = ((out[-1][0][0], e["start"] + e["length"]), k)
        else:
            out.append(((e["start"], e["start"] + e["length"]), k))
    return out
a, b = norm(sys.argv[1]), norm(sys.argv[2])
if a != b:
    for x, y in zip(a, b):
        if x != y:
            print("mine:", x, "qemu-img:", y)
            break
    print(len(a), "extents vs", len(b))
    sys.exit(1)
EOF
}

fill() {  # IMG FMT: a few data ranges, a zero range, holes
    qemu-io -f "$2" -c "write -P 0x11 0 192k" -c "write -P 0x22 5M 64k" \
        -c "write -z 6M 128k" -c "write -P 0x33 9M 1M" "$1" >/dev/null
}

readable() {  # QEMU_FMT: vdisk reads it as that format (not as raw)
    qemu-img create -q -f "$1" "probe.$1" 1M &&
        "$V" info "probe.$1" 2>/dev/null | matches "file format: $(vd_name "$1")$"
}

for f in qcow2 qed vdi vpc; do
    readable $f || fail "map of $f: vdisk does not read it as $f"
    qemu-img create -q -f $f m.$f 16M
    fill m.$f $f
    same_map m.$f
done
if readable qed; then
    qemu-img create -q -f qed base.qed 16M
    fill base.qed qed
    qemu-img create -q -f qed -b base.qed -F qed top.qed
    qemu-io -f qed -c "write -P 0x44 64k 64k" -c "write -z 9M 64k" -c "write -P 0x55 12M 64k" top.qed >/dev/null
    same_map top.qed
    # The human layout too: mapped data extents with the file they live in.
    diff <("$V" map top.qed) <(qemu-img map top.qed) >map.diff || fail "human map differs: $(cat map.diff)"
fi
head -c 1M /dev/urandom >r.raw; truncate -s 8M r.raw
same_map r.raw

# --- the chain commands, on every writable format with backing files -----------
chain_cmds() {  # FMT
    local F=$1 n rc
    echo "chain commands on $F"
    qemu-img create -q -f $F base.$F 16M
    fill base.$F $F
    qemu-img create -q -f $F -b base.$F -F $F top.$F
    qemu-io -f $F -c "write -P 0x44 64k 64k" -c "write -z 9M 64k" -c "write -P 0x55 12M 64k" top.$F >/dev/null
    qemu-img convert -O raw top.$F want.raw     # the guest content to keep

    # rebase (safe) onto an empty base keeps the content
    qemu-img create -q -f $F empty.$F 16M
    cp top.$F r1.$F
    "$V" rebase -b empty.$F -F $F r1.$F
    qemu-img info r1.$F | matches "backing file: empty.$F" || fail "rebase: backing not changed"
    qemu-img compare -F raw r1.$F want.raw >/dev/null || fail "rebase changed the guest content"
    qemu-img check r1.$F >/dev/null || fail "rebase: qemu-img check"
    # rebase -b "" flattens
    cp top.$F r2.$F
    "$V" rebase -b "" r2.$F
    qemu-img info r2.$F | matches "backing file" && fail "rebase -b '': still has a backing file"
    qemu-img compare -F raw r2.$F want.raw >/dev/null || fail "rebase -b '' changed the content"
    # rebase -u only changes the reference: same result as qemu-img rebase -u
    cp top.$F r3.$F; cp top.$F r4.$F
    "$V" rebase -u -b empty.$F -F $F r3.$F
    qemu-img rebase -u -f $F -b empty.$F -F $F r4.$F
    qemu-img compare r3.$F r4.$F >/dev/null || fail "rebase -u differs from qemu-img rebase -u"

    # commit: the base takes the overlay's data, the overlay is emptied
    cp base.$F cbase.$F; cp top.$F ctop.$F
    qemu-img rebase -u -f $F -b cbase.$F -F $F ctop.$F
    "$V" commit ctop.$F | matches "Image committed" || fail "commit"
    qemu-img compare -F raw cbase.$F want.raw >/dev/null || fail "commit: base lacks the overlay's data"
    qemu-img compare -F raw ctop.$F want.raw >/dev/null || fail "commit: chain content changed"
    qemu-img check cbase.$F >/dev/null || fail "commit: base fails qemu-img check"
    n=$(qemu-img map --output=json ctop.$F | grep -c '"depth": 0' || true)
    [ "$n" -eq 0 ] || fail "commit: overlay not emptied ($n extents left)"
    cp base.$F kbase.$F; cp top.$F ktop.$F
    qemu-img rebase -u -f $F -b kbase.$F -F $F ktop.$F
    "$V" commit -d ktop.$F >/dev/null
    qemu-img map --output=json ktop.$F | matches '"depth": 0, "present": true' || fail "commit -d emptied the overlay"
    rc=0; "$V" commit base.$F 2>/dev/null || rc=$?
    [ $rc -eq 1 ] || fail "commit without a backing file: exit $rc"

    # resize in place; shrinking needs --shrink
    cp top.$F g.$F
    "$V" resize g.$F +8M >/dev/null
    [ "$(qemu-img info --output=json g.$F | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" -eq $((24 << 20)) ] || fail "resize +8M"
    qemu-img compare g.$F want.raw >/dev/null || fail "resize changed the content"
    qemu-img check g.$F >/dev/null || fail "resize: qemu-img check"
    rc=0; "$V" resize g.$F 4M 2>/dev/null || rc=$?
    [ $rc -eq 1 ] || fail "shrink without --shrink: exit $rc"
    "$V" resize --shrink g.$F 4M >/dev/null
    qemu-img convert -O raw g.$F g.raw
    cmp g.raw <(head -c 4M want.raw) || fail "shrunk image content"
}
for F in qed qcow2; do
    readable $F && "$V" create -q -O $F w.$F 1M >/dev/null || fail "chain commands on $F: not writable"
    chain_cmds $F
done

cp r.raw rr.raw
"$V" resize rr.raw 20M >/dev/null
[ "$(stat -c %s rr.raw)" -eq $((20 << 20)) ] || fail "raw resize"
cmp <(head -c 8M rr.raw) r.raw || fail "raw resize changed the data"

# resize keeps the layout: qcow2 compat/cluster size, vdi uuid/static
if "$V" create -q -O qcow2 -o compat=0.10,cluster_size=4096 k.qcow2 8M >/dev/null 2>&1; then
    qemu-io -f qcow2 -c "write -P 9 1M 64k" k.qcow2 >/dev/null
    "$V" resize k.qcow2 12M >/dev/null
    qemu-img info k.qcow2 >info.txt
    grep -q "compat: 0.10" info.txt && grep -q "cluster_size: 4096" info.txt &&
        grep -q "(12582912 bytes)" info.txt || fail "qcow2 resize lost its layout: $(cat info.txt)"
    qemu-img check k.qcow2 >/dev/null || fail "resized qcow2: qemu-img check"
fi
if "$V" create -q -O vdi -o static=on k.vdi 4M >/dev/null 2>&1; then
    u=$("$V" info k.vdi | sed -n 's/^ *uuid: //p')
    "$V" resize k.vdi 8M >/dev/null
    [ "$("$V" info k.vdi | sed -n 's/^ *uuid: //p')" = "$u" ] || fail "vdi resize changed the uuid"
    "$V" info k.vdi | matches "type: static" || fail "vdi resize lost static"
    qemu-img check -f vdi k.vdi >/dev/null || fail "resized vdi: qemu-img check"
fi

# snapshot -l, info and convert -l on a qemu-made qcow2 with internal snapshots
if readable qcow2; then
    qemu-img create -q -f qcow2 s.qcow2 8M
    qemu-io -c "write -P 0x61 0 1M" s.qcow2 >/dev/null
    qemu-img snapshot -c first s.qcow2
    qemu-io -c "write -P 0x62 512k 1M" s.qcow2 >/dev/null
    "$V" snapshot -l s.qcow2 | matches first || fail "snapshot -l does not list 'first'"
    "$V" info --json s.qcow2 | matches '"name": "first"' || fail "info --json lacks the snapshot"
    "$V" -l first s.qcow2 snap.raw
    qemu-img convert -l snapshot.name=first -O raw s.qcow2 qsnap.raw
    cmp snap.raw qsnap.raw || fail "convert -l first differs from qemu-img's"
    "$V" -l snapshot.name=first s.qcow2 snap2.raw && cmp snap.raw snap2.raw || fail "-l snapshot.name="
    rc=0; "$V" -l nosuch s.qcow2 bad.raw 2>/dev/null || rc=$?
    [ $rc -eq 1 ] && [ ! -e bad.raw ] || fail "convert -l of a missing snapshot: exit $rc"
fi
# snapshot on raw: list works (none); creating says the format has none
# (qcow2 snapshots: test-qcow2-snapshot.sh)
"$V" snapshot -l r.raw >/dev/null || fail "snapshot -l"
rc=0; "$V" snapshot -c s1 r.raw 2>err || rc=$?
[ $rc -eq 1 ] && grep -q "r.raw: format raw has no internal snapshots" err ||
    fail "snapshot -c: exit $rc, $(cat err)"
echo "chain tests passed"
