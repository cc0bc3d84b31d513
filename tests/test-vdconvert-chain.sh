#!/bin/bash
# vdconvert map against `qemu-img map --output=json` on qemu-made images
# (qcow2 when vdisk reads it, qed with a backing file, vdi, vpc), and the
# chain commands checked with qemu-img: rebase (safe and -u), commit,
# resize (raw in place, other formats rewritten), snapshot -l.
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
    local want=$1; [ "$1" = vpc ] && want=vhd
    qemu-img create -q -f "$1" "probe.$1" 1M && "$V" info "probe.$1" 2>/dev/null | grep -q "file format: $want$"
}

for f in qcow2 qed vdi vpc; do
    if ! readable $f; then echo "skip map of $f: vdisk cannot read it yet"; continue; fi
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
fi
head -c 1M /dev/urandom >r.raw; truncate -s 8M r.raw
same_map r.raw

# --- the chain commands, on qed (the backing-file format vdisk writes) -----------
if ! readable qed || ! "$V" create -q -O qed w.qed 1M >/dev/null 2>&1; then
    echo "skip chain commands: qed not writable"; exit 0
fi
qemu-img convert -O raw top.qed want.raw     # the guest content to keep

# rebase (safe) onto an empty base keeps the content
qemu-img create -q -f qed empty.qed 16M
cp top.qed r1.qed
"$V" rebase -b empty.qed -F qed r1.qed
qemu-img info r1.qed | grep -q "backing file: empty.qed" || fail "rebase: backing not changed"
qemu-img compare -F raw r1.qed want.raw >/dev/null || fail "rebase changed the guest content"
qemu-img check r1.qed >/dev/null || fail "rebase: qemu-img check"
# rebase -b "" flattens
cp top.qed r2.qed
"$V" rebase -b "" r2.qed
qemu-img info r2.qed | grep -q "backing file" && fail "rebase -b '': still has a backing file"
qemu-img compare -F raw r2.qed want.raw >/dev/null || fail "rebase -b '' changed the content"
# rebase -u only changes the reference: same result as qemu-img rebase -u
cp top.qed r3.qed; cp top.qed r4.qed
"$V" rebase -u -b empty.qed -F qed r3.qed
qemu-img rebase -u -f qed -b empty.qed -F qed r4.qed
qemu-img compare r3.qed r4.qed >/dev/null || fail "rebase -u differs from qemu-img rebase -u"

# commit: the base takes the overlay's data, the overlay is emptied
cp base.qed cbase.qed; cp top.qed ctop.qed
qemu-img rebase -u -f qed -b cbase.qed -F qed ctop.qed
"$V" commit ctop.qed | grep -q "Image committed" || fail "commit"
qemu-img compare -F raw cbase.qed want.raw >/dev/null || fail "commit: base lacks the overlay's data"
qemu-img compare -F raw ctop.qed want.raw >/dev/null || fail "commit: chain content changed"
qemu-img check cbase.qed >/dev/null || fail "commit: base fails qemu-img check"
n=$(qemu-img map --output=json ctop.qed | grep -c '"depth": 0' || true)
[ "$n" -eq 0 ] || fail "commit: overlay not emptied ($n extents left)"
cp base.qed kbase.qed; cp top.qed ktop.qed
qemu-img rebase -u -f qed -b kbase.qed -F qed ktop.qed
"$V" commit -d ktop.qed >/dev/null
qemu-img map --output=json ktop.qed | grep -q '"depth": 0, "present": true' || fail "commit -d emptied the overlay"
rc=0; "$V" commit base.qed 2>/dev/null || rc=$?
[ $rc -eq 1 ] || fail "commit without a backing file: exit $rc"

# resize: qed grows by rewrite, raw in place; shrinking needs --shrink
cp top.qed g.qed
"$V" resize g.qed +8M >/dev/null
[ "$(qemu-img info --output=json g.qed | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" -eq $((24 << 20)) ] || fail "resize +8M"
qemu-img compare g.qed want.raw >/dev/null || fail "resize changed the content"
qemu-img check g.qed >/dev/null || fail "resize: qemu-img check"
rc=0; "$V" resize g.qed 4M 2>/dev/null || rc=$?
[ $rc -eq 1 ] || fail "shrink without --shrink: exit $rc"
"$V" resize --shrink g.qed 4M >/dev/null
qemu-img convert -O raw g.qed g.raw
cmp g.raw <(head -c 4M want.raw) || fail "shrunk image content"
cp r.raw rr.raw
"$V" resize rr.raw 20M >/dev/null
[ "$(stat -c %s rr.raw)" -eq $((20 << 20)) ] || fail "raw resize"
cmp <(head -c 8M rr.raw) r.raw || fail "raw resize changed the data"

# snapshot: list works (empty here); the rest says it is not supported
"$V" snapshot -l top.qed >/dev/null || fail "snapshot -l"
rc=0; "$V" snapshot -c s1 top.qed 2>err || rc=$?
[ $rc -eq 1 ] && grep -q "not supported" err || fail "snapshot -c: exit $rc, $(cat err)"
echo "chain tests passed"
