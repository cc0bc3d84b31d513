#!/bin/bash
# QED writes, judged by qemu: every QED vdconvert writes is identical per
# `qemu-img compare` and passes `qemu-img check` (no corruptions, no leaks)
# -- default geometry, 4K clusters with two-cluster tables (many L2 tables:
# the table cache is evicted while dirty), 1M clusters, a size that is not
# a cluster multiple, an empty disk, QED to QED with a backing chain.
# `vdconvert create -O qed -b base.raw top.qed` records the backing (raw, no
# probe) the way qemu-img does; qemu-io writes to our image and both read the
# same chain.  Bad create options are refused with a message.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3

# A 24 MiB disk: random data, holes, zero runs, a partial last sector run.
python3 - "$T/a.raw" <<'PY'
import os, random, sys
r = random.Random(7)
with open(sys.argv[1], "wb") as f:
    f.truncate(24 << 20)
    for _ in range(40):
        off = r.randrange(0, (24 << 20) - 300000)
        f.seek(off); f.write(os.urandom(r.randrange(1, 300000)))
    f.seek((24 << 20) - 1000); f.write(b"tail" * 250)
PY

judge() {  # IMG SRC: identical to SRC per qemu-img, check clean, reads back
    local img=$1 src=$2
    qemu-img compare -q "$src" "$img" || fail "$(basename "$img"): differs from $(basename "$src")"
    qemu-img check -q "$img" || fail "$(basename "$img"): qemu-img check rc $?"
    [ "$(qemu-img info "$img" | sed -n 's/^file format: //p')" = qed ] || fail "not qed"
    rm -f "$T/back.raw"
    "$VDCONVERT" "$img" "$T/back.raw"
    qemu-img compare -q "$src" "$T/back.raw" || fail "$(basename "$img"): our read-back differs"
    echo "ok: $(basename "$img")"
}

"$VDCONVERT" "$T/a.raw" "$T/d.qed";                                   judge "$T/d.qed" "$T/a.raw"
"$VDCONVERT" -o cluster_size=4096,table_size=2 "$T/a.raw" "$T/c4k.qed"; judge "$T/c4k.qed" "$T/a.raw"
"$VDCONVERT" -o cluster_size=1M,table_size=2 "$T/a.raw" "$T/c1m.qed";   judge "$T/c1m.qed" "$T/a.raw"
[ "$(qemu-img info "$T/c4k.qed" | sed -n 's/^cluster_size: //p')" = 4096 ] || fail "cluster size"

# A size that is not a multiple of the cluster size (nor of 512: rounded up
# to a sector, as qemu-img does).
head -c 1000001 "$T/a.raw" > "$T/odd.raw"
"$VDCONVERT" -O qed "$T/odd.raw" "$T/odd.qed"
[ "$(qemu-img info --output=json "$T/odd.qed" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = 1000448 ] ||
    fail "odd size not rounded to 1000448"
truncate -s 1000448 "$T/odd.raw"; judge "$T/odd.qed" "$T/odd.raw"

# An empty disk: header and L1 only.
truncate -s 8M "$T/empty.raw"
"$VDCONVERT" "$T/empty.raw" "$T/empty.qed"; judge "$T/empty.qed" "$T/empty.raw"
[ "$(stat -c %s "$T/empty.qed")" = $((5 * 65536)) ] || fail "empty image is not header + L1"

# create -b: backing recorded like qemu-img records it.
"$VDCONVERT" create -O qed -b a.raw -F raw "$T/top.qed"
qemu-img info "$T/top.qed" | matches "^backing file: a.raw" || fail "backing name"
qemu-img info "$T/top.qed" | matches -x "backing file format: raw" || fail "backing raw flag"
qemu-img check -q "$T/top.qed" || fail "fresh child check"
judge "$T/top.qed" "$T/a.raw"
# qemu writes into our image; both read the same chain.
qemu-io -f qed -c "write -P 0xab 100k 5k" -c "write -z 1M 64k" -c "write -P 0xcd 23M 1M" \
    "$T/top.qed" >/dev/null
qemu-img convert -O raw "$T/top.qed" "$T/chain.raw"
judge "$T/top.qed" "$T/chain.raw"
cmp -s "$T/chain.raw" "$T/a.raw" && fail "qemu-io writes did not show"
# The backing file is untouched.
qemu-img compare -q "$T/a.raw" "$T/d.qed" || fail "base changed"

# A QED child of a QED, then converted QED -> QED (flattened).
"$VDCONVERT" create -O qed -o backing_file=d.qed,backing_fmt=qed "$T/top2.qed" 24M
qemu-img info "$T/top2.qed" | matches "^backing file: d.qed" || fail "backing_file option"
qemu-img info "$T/top2.qed" | matches "backing file format" && fail "qed backing must be probed"
qemu-io -f qed -c "write -P 0x12 3M 200k" "$T/top2.qed" >/dev/null
qemu-img convert -O raw "$T/top2.qed" "$T/chain2.raw"
"$VDCONVERT" "$T/top2.qed" "$T/flat.qed"; judge "$T/flat.qed" "$T/chain2.raw"

# Bad options: a message naming the problem, no file left.
bad() {  # EXPECTED-TEXT OPTIONS
    if "$VDCONVERT" create -O qed -o "$2" "$T/bad.qed" 1M 2>"$T/err"; then fail "accepted $2"; fi
    grep -q "$1" "$T/err" || { cat "$T/err"; fail "$2: message lacks '$1'"; }
    [ ! -e "$T/bad.qed" ] || fail "$2 left a file"
}
bad "cluster size" cluster_size=3000
bad "cluster size" cluster_size=128M
bad "table size" table_size=32
bad "table_size=1" table_size=1
bad "qemu cannot open" cluster_size=4M,table_size=16
bad "exceed" cluster_size=64M,table_size=16
bad "unknown option" colour=blue
echo "all QED writes verified"
