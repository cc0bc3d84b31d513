#!/bin/bash
# qcow2 writes, judged by qemu: every image we write must pass `qemu-img
# check` (no errors, no leaks) and `qemu-img compare` equal to what was
# written.  Covers vdconvert output for many create options (cluster sizes
# 512/64K/2M, v2, refcount widths, extended L2, preallocation, backing),
# compressed writes (zlib, zstd), API writes into qemu-made overlays (COW from
# the backing, zeroes, discard, partial clusters), writes into an image with
# snapshots, a dirty lazy-refcounts image, and check/repair of leaks and
# refcount errors.
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3
TOOL=${QCOW2_TOOL:-$VD_BUILD/tests/qcow2-write-tool}
fails=0
bad() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# judge WHAT IMG REF: qemu-img check clean and content equal to REF.
judge() {
    local what=$1 img=$2 ref=$3 out
    if ! out=$(qemu-img check "$img" 2>&1); then
        bad "$what: qemu-img check: $(echo "$out" | head -3 | tr '\n' ' ')"
        return
    fi
    if ! out=$(qemu-img compare "$ref" "$img" 2>&1); then
        bad "$what: qemu-img compare: $out"
        return
    fi
    echo "ok   $what"
}

cd "$T"
truncate -s 8M src.raw
"$TOOL" -f raw src.raw w:0:1M:1 w:3M:64K:2 w:5000K:700K:3 w:8384512:4K:4 w:6M:1M:5
qemu-img convert -q -f raw -O qcow2 -c src.raw src-zlib.qcow2

# ---- A. vdconvert output ----------------------------------------------------
n=0
while read -r opts; do
    n=$((n + 1))
    "$VDCONVERT" -O qcow2 -o "$opts" src.raw a$n.qcow2 || { bad "convert -o $opts"; continue; }
    judge "vdconvert raw -> qcow2 -o $opts" a$n.qcow2 src.raw
    "$VDCONVERT" -O qcow2 -o "$opts" src-zlib.qcow2 b$n.qcow2 || { bad "convert qcow2 -o $opts"; continue; }
    judge "vdconvert compressed qcow2 -> qcow2 -o $opts" b$n.qcow2 src.raw
    rm -f a$n.qcow2 b$n.qcow2
done <<'EOF'
compat=1.1
cluster_size=512
cluster_size=2M
compat=0.10
compat=0.10,cluster_size=4096
refcount_bits=1
cluster_size=512,refcount_bits=64
refcount_bits=8,cluster_size=1024
extended_l2=on
preallocation=metadata
preallocation=metadata,cluster_size=2M
lazy_refcounts=on
compression_type=zstd
EOF

# compressed output: vdconvert -c when it has it, and always the API
for ct in zlib zstd; do
    for cs in 512 64K 2M; do
        if "$VDCONVERT" -c -O qcow2 -o compression_type=$ct,cluster_size=$cs src.raw c.qcow2; then
            judge "vdconvert -c $ct cluster_size=$cs" c.qcow2 src.raw
        else
            bad "vdconvert -c $ct cluster_size=$cs failed"
        fi
        rm -f c.qcow2
        "$VDCONVERT" create -O qcow2 -o compression_type=$ct,cluster_size=$cs c.qcow2 8M >/dev/null
        "$TOOL" c.qcow2 copyc:src.raw || bad "compressed copy $ct $cs"
        judge "compressed writes $ct cluster_size=$cs" c.qcow2 src.raw
        qemu-img info c.qcow2 | matches "compression type: $ct" || bad "compression type $ct not recorded"
        qemu-img check c.qcow2 | matches '[1-9][0-9.]*% compressed' ||
            bad "$ct $cs: nothing was stored compressed"
        rm -f c.qcow2
    done
done
"$VDCONVERT" create -O qcow2 -o compat=0.10 c.qcow2 8M >/dev/null
"$TOOL" c.qcow2 copyc:src.raw
judge "compressed writes, compat=0.10" c.qcow2 src.raw
rm -f c.qcow2

# compressed output as dense as qemu's (data may straddle host clusters), and
# a source whose size is not a multiple of 512 (the target rounds up)
python3 -c "
import random
r = random.Random(5)
open('text.raw', 'w').write(''.join(r.choice('abcdefghijklmnopqrstuvwxyz0123456789 ') for _ in range(3000001)))"
for ct in zlib zstd; do
    if "$VDCONVERT" -c -O qcow2 -o compression_type=$ct text.raw ours.qcow2 2>err; then
        qemu-img convert -c -O qcow2 -o compression_type=$ct text.raw theirs.qcow2
        judge "vdconvert -c $ct, odd-sized source" ours.qcow2 text.raw
        o=$(stat -c %s ours.qcow2) q=$(stat -c %s theirs.qcow2)
        [ "$o" -le $((q + q / 20)) ] && echo "ok   $ct output $o bytes, qemu-img $q" ||
            bad "$ct output $o bytes, qemu-img writes $q"
    else
        bad "vdconvert -c $ct: $(cat err)"
    fi
    rm -f ours.qcow2 theirs.qcow2 err
done

# with a backing file: only differences are written
qemu-img convert -q -f raw -O qcow2 src.raw base.qcow2
cp src.raw mod.raw
"$TOOL" -f raw mod.raw w:100K:8K:9 w:7M:64K:9 z:3M:64K
"$VDCONVERT" -O qcow2 -B base.qcow2 -F qcow2 mod.raw ov.qcow2 || bad "convert -B"
judge "vdconvert -B base" ov.qcow2 mod.raw
rm -f ov.qcow2 mod.raw

# ---- B. API writes into qemu-made overlays ----------------------------------
ops=(w:1000:3000:11 w:60K:10K:12 w:2M:1M:13 z:5000K:100K z:6M:512K:u
     c:6M:2M:14 w:6M:1000:15 w:4095K:2K:16 f w:8188K:4K:17)
for opts in "compat=1.1" "cluster_size=512" "cluster_size=2M" "compat=0.10" \
            "extended_l2=on" "refcount_bits=1" "compat=1.1,lazy_refcounts=on"; do
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 -o "$opts" ov.qcow2
    cp src.raw mirror.raw
    "$TOOL" -m mirror.raw ov.qcow2 "${ops[@]}" || bad "API writes -o $opts"
    judge "API writes into qemu overlay -o $opts" ov.qcow2 mirror.raw
    # a second session on the same image: in-place rewrites and COW of our own
    "$TOOL" -m mirror.raw ov.qcow2 w:0:2M:21 z:1M:64K:u c:2M:2M:22 w:2M:512:23 ||
        bad "second session -o $opts"
    judge "second API session -o $opts" ov.qcow2 mirror.raw
    rm -f ov.qcow2 mirror.raw
done

# discard and zeroes without a backing file read as zeroes
for opts in "compat=1.1" "compat=0.10" "extended_l2=on"; do
    qemu-img convert -q -f raw -O qcow2 -o "$opts" src.raw d.qcow2
    cp src.raw mirror.raw
    "$TOOL" -m mirror.raw d.qcow2 d:0:1M z:3M:64K:u z:5M:200K d:6M:64K w:6M:4K:3 ||
        bad "discard -o $opts"
    judge "discard/zero -o $opts" d.qcow2 mirror.raw
    rm -f d.qcow2 mirror.raw
done

# ---- C. writes into an image with internal snapshots ------------------------
cp base.qcow2 snap.qcow2
qemu-img snapshot -c s1 snap.qcow2
qemu-io -f qcow2 -c "write -P 0x5a 1M 1M" snap.qcow2 >/dev/null
qemu-img snapshot -c s2 snap.qcow2
for s in s1 s2; do qemu-img convert -O raw -l $s snap.qcow2 want-$s.raw; done
qemu-img convert -O raw snap.qcow2 mirror.raw
"$TOOL" -m mirror.raw snap.qcow2 w:1M:4K:31 w:0:64K:32 z:5M:1M:u d:7M:64K c:4M:64K:33 ||
    bad "writes into snapshotted image"
# discard made 7M..7M+64K unallocated: no backing, so zeroes in the mirror
judge "writes into an image with snapshots" snap.qcow2 mirror.raw
for s in s1 s2; do
    qemu-img convert -O raw -l $s snap.qcow2 got-$s.raw
    cmp -s got-$s.raw want-$s.raw && echo "ok   snapshot $s unchanged by writes" ||
        bad "snapshot $s changed by writes"
done
rm -f snap.qcow2 ./*-s?.raw mirror.raw

# ---- D. dirty image with lazy refcounts -------------------------------------
qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 8M
(qemu-io -f qcow2 -c "write -P 0x77 0 3M" -c "sigraise 9" lazy.qcow2 >/dev/null 2>&1 || true) 2>/dev/null
if qemu-img info lazy.qcow2 2>/dev/null | matches "lazy refcounts: true" &&
   ! qemu-img check lazy.qcow2 >/dev/null 2>&1; then
    "$TOOL" lazy.qcow2 info | matches '^dirty=true' || bad "dirty bit not reported"
    "$TOOL" lazy.qcow2 f || bad "open dirty image read-write"
    qemu-io -f qcow2 -r -c "read -P 0x77 0 3M" lazy.qcow2 >/dev/null || bad "dirty image data"
    qemu-img check lazy.qcow2 >/dev/null && echo "ok   dirty lazy-refcounts image rebuilt on open" ||
        bad "dirty image not repaired: $(qemu-img check lazy.qcow2 2>&1 | tail -2)"
    "$TOOL" lazy.qcow2 info | matches '^dirty=false' || bad "dirty bit not cleared"
else
    echo "note: could not make a dirty image with qemu-io sigraise"
fi
rm -f lazy.qcow2

# ---- E. check and repair ----------------------------------------------------
# set_refcount IMG CLUSTER VALUE: poke a 16-bit refcount on disk.
set_refcount() {
    python3 - "$@" <<'EOF'
import struct, sys
path, cl, val = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, 'r+b') as f:
    h = f.read(104)
    cbits = struct.unpack('>I', h[20:24])[0]
    rt = struct.unpack('>Q', h[48:56])[0]
    per = (1 << cbits) * 8 // 16
    f.seek(rt + cl // per * 8)
    rb = struct.unpack('>Q', f.read(8))[0]
    f.seek(rb + cl % per * 2)
    f.write(struct.pack('>H', val))
EOF
}
qemu-img convert -q -f raw -O qcow2 src.raw ck.qcow2
"$TOOL" ck.qcow2 check >/dev/null || bad "clean image reported unclean"
set_refcount ck.qcow2 0 2          # header: a leak
out=$("$TOOL" ck.qcow2 check) && bad "leak: check exit 0"
grep -q 'corruptions=0 leaks=1 ' <<<"$out" || bad "leak not found: $out"
"$TOOL" ck.qcow2 check:leaks >/dev/null || bad "leak repair failed"
qemu-img check ck.qcow2 >/dev/null && echo "ok   leak repaired" || bad "leak not repaired"
data=$(qemu-img map --output=json ck.qcow2 | python3 -c \
    'import json,sys; print([e["offset"] for e in json.load(sys.stdin) if e.get("data")][0] >> 16)')
set_refcount ck.qcow2 "$data" 0    # a used data cluster: an error
out=$("$TOOL" ck.qcow2 check) && bad "refcount error not reported"
# two errors, as qemu-img check counts them: the refcount, and the COPIED
# flag that no longer matches it
grep -q 'corruptions=2 ' <<<"$out" || bad "refcount error count: $out"
"$TOOL" ck.qcow2 check:leaks >/dev/null && bad "check -r leaks claimed to fix an error"
"$TOOL" ck.qcow2 check:all >/dev/null || bad "error repair failed"
judge "refcount error repaired" ck.qcow2 src.raw
rm -f ck.qcow2

# ---- F. refusals ------------------------------------------------------------
qemu-img convert -q -f raw -O qcow2 src.raw cor.qcow2
python3 -c "
import sys
f = open('cor.qcow2', 'r+b'); f.seek(79); f.write(bytes([2]))"   # corrupt bit
"$TOOL" cor.qcow2 w:0:4K:1 2>err && bad "corrupt image opened read-write"
grep -q "marked corrupt" err || bad "corrupt refusal message: $(cat err)"
"$TOOL" cor.qcow2 dump:x.raw && cmp -s x.raw src.raw || bad "corrupt image not readable read-only"
rm -f cor.qcow2 x.raw err

# ---- G. incompressible clusters are stored as they are ---------------------
# Random data is not compressed (qemu stores it raw too, after trying); text
# is.  qemu-img map shows a file offset only for uncompressed data.
head -c 1M /dev/urandom >rt.raw
python3 -c 'import sys; sys.stdout.write(("vdisk compressible line of text\n" * 40000)[:1 << 20])' >>rt.raw
"$VDCONVERT" -c -O qcow2 rt.raw rt.qcow2 || bad "convert -c of random + text"
qemu-img compare -q rt.raw rt.qcow2 || bad "random + text -c: content differs"
qemu-img check -q rt.qcow2 || bad "random + text -c: check"
qemu-img map --output=json rt.qcow2 | python3 -c '
import json, sys
m = json.load(sys.stdin)
raw = sum(e["length"] for e in m if e["data"] and "offset" in e)
comp = sum(e["length"] for e in m if e["data"] and "offset" not in e)
assert raw == 1 << 20 and comp == 1 << 20, (raw, comp)' || bad "random clusters compressed or text stored raw"
rm -f rt.raw rt.qcow2

[ "$fails" = 0 ] || fail "$fails qcow2 write checks failed"
echo "all qcow2 write checks passed"
