#!/bin/bash
# vdconvert's copy engine: holes stay holes, zero detection (-S; -S 0 fully
# allocates), worker
# counts, copy_file_range vs plain writes, -n/--target-is-zero, -t none, -B
# (only differences written), and round trips through every format vdisk can
# write, each checked with qemu-img compare/check.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io vmdkinfo
V=$VDCONVERT
MiB=1048576

# Input: 64 MiB with 8 MiB random, a 4 MiB run of written zeroes, 3 MiB random
# at an odd offset, a 1 MiB all-zero region in the middle of data, rest holes.
head -c $((8 * MiB)) /dev/urandom >"$T/in.raw"
truncate -s $((64 * MiB)) "$T/in.raw"
dd if=/dev/zero of="$T/in.raw" bs=1M seek=20 count=4 conv=notrunc status=none
dd if=/dev/urandom of="$T/in.raw" bs=4096 seek=$((40 * 256 + 3)) count=768 conv=notrunc status=none
dd if=/dev/zero of="$T/in.raw" bs=1M seek=4 count=1 conv=notrunc status=none
alloc_kib() { du -k "$1" | cut -f1; }

# --- holes stay holes and zero data is not written (default -S 4k) ---------
for cr in "" --no-copy-range; do
    rm -f "$T/out.raw"
    "$V" $cr "$T/in.raw" "$T/out.raw"
    cmp "$T/in.raw" "$T/out.raw" || fail "raw copy $cr differs"
    a=$(alloc_kib "$T/out.raw")
    # 7 MiB + 3 MiB of random data; zero runs and holes not allocated.
    [ "$a" -le $((10 * 1024 + 64)) ] || fail "raw copy $cr allocates $a KiB (expected ~10 MiB)"
    [ "$a" -ge $((10 * 1024)) ] || fail "raw copy $cr lost data: $a KiB"
done

# -S 0: no zero detection, and the output fully allocated as qemu-img's -S 0
# makes it: written zeroes and holes alike are written (raw to raw by
# copy_file_range, or by reads and writes): all 64 MiB.
for cr in "" --no-copy-range; do
    rm -f "$T/out.raw"
    "$V" -S 0 $cr "$T/in.raw" "$T/out.raw"
    cmp "$T/in.raw" "$T/out.raw" || fail "-S 0 $cr copy differs"
    a=$(alloc_kib "$T/out.raw")
    [ "$a" -ge $((64 * 1024)) ] || fail "-S 0 $cr: $a KiB allocated, not all 64 MiB"
done
rm -f "$T/out.qcow2"
"$V" -S 0 -O qcow2 "$T/in.raw" "$T/out.qcow2"
qemu-img compare -q -f raw "$T/in.raw" -F qcow2 "$T/out.qcow2" || fail "-S 0 qcow2 differs"
qemu-img map --output=json -f qcow2 "$T/out.qcow2" | matches '"data": false' &&
    fail "-S 0 qcow2 left ranges unallocated: $(qemu-img map -f qcow2 "$T/out.qcow2")"
echo "ok: -S 0 fully allocates (raw and qcow2)"
# -S 1M: a zero run shorter than 1 MiB stays allocated.
dd if=/dev/zero of="$T/in.raw" bs=4096 seek=100 count=16 conv=notrunc status=none
rm -f "$T/o1" "$T/o2"
"$V" -O raw -S 1M "$T/in.raw" "$T/o1"
"$V" -O raw -S 4k "$T/in.raw" "$T/o2"
cmp "$T/in.raw" "$T/o1" && cmp "$T/in.raw" "$T/o2" || fail "-S variants differ"
[ "$(alloc_kib "$T/o1")" -gt "$(alloc_kib "$T/o2")" ] || fail "-S 1M should allocate more than -S 4k"
"$V" -S 1000 "$T/in.raw" "$T/o3" 2>"$T/err" && fail "-S 1000 (not a multiple of 512) accepted"
[ ! -e "$T/o3" ] || fail "-S error left an output"

# --- worker counts give identical output -------------------------------------
for m in 1 2 7; do
    rm -f "$T/m.raw"
    "$V" -m $m "$T/in.raw" "$T/m.raw"
    cmp "$T/in.raw" "$T/m.raw" || fail "-m $m output differs"
done

# --- -n with and without --target-is-zero ------------------------------------
head -c $((64 * MiB)) /dev/urandom >"$T/dirty.raw"
"$V" -n -O raw "$T/in.raw" "$T/dirty.raw"
cmp "$T/in.raw" "$T/dirty.raw" || fail "-n into a dirty target: old data shows through"
truncate -s 0 "$T/z.raw"; truncate -s $((64 * MiB)) "$T/z.raw"
"$V" -n --target-is-zero -O raw "$T/in.raw" "$T/z.raw"
cmp "$T/in.raw" "$T/z.raw" || fail "-n --target-is-zero differs"
truncate -s $MiB "$T/small.raw"
"$V" -n -O raw "$T/in.raw" "$T/small.raw" 2>"$T/err" && fail "-n into a smaller target accepted"
grep -q "smaller" "$T/err" || fail "-n small target: unclear error: $(cat "$T/err")"

# --- -t none (O_DIRECT target) -----------------------------------------------
rm -f "$T/d.raw"
if "$V" -t none "$T/in.raw" "$T/d.raw" 2>"$T/err"; then
    cmp "$T/in.raw" "$T/d.raw" || fail "-t none output differs"
else
    fail "-t none failed: $(cat "$T/err")"
fi

# --- cache modes (qemu's names): same output; unsafe syncs nothing ----------
for mode in writeback unsafe none writethrough directsync; do
    for f in raw qcow2; do
        rm -f "$T/cm.$f"
        "$V" -t $mode -T $mode -O $f "$T/in.raw" "$T/cm.$f" 2>"$T/err" ||
            fail "-t $mode -O $f failed: $(cat "$T/err")"
        qemu-img compare -f raw -F $f "$T/in.raw" "$T/cm.$f" >/dev/null || fail "-t $mode -O $f differs"
    done
done
if command -v strace >/dev/null; then
    # the default syncs the target before renaming it; -t unsafe does not
    # (creating the empty image syncs its header once either way)
    declare -A syncs
    for mode in writeback unsafe; do
        rm -f "$T/cm.qcow2"
        traced -f -qq -e trace=fdatasync,fsync -o "$T/strace" "$V" -t $mode -O qcow2 "$T/in.raw" "$T/cm.qcow2"
        syncs[$mode]=$(grep -c 'sync(' "$T/strace" || true)
    done
    [ "${syncs[unsafe]}" -le 1 ] && [ "${syncs[writeback]}" -gt "${syncs[unsafe]}" ] ||
        fail "syncs: writeback ${syncs[writeback]}, unsafe ${syncs[unsafe]}"
fi
rc=0; "$V" -t bogus "$T/in.raw" "$T/cm.raw" 2>"$T/err" || rc=$?
[ $rc -ne 0 ] && grep -q "expected none, writeback, unsafe, directsync or writethrough" "$T/err" ||
    fail "-t bogus: $(cat "$T/err")"

# --- an odd size (not a multiple of 512 or of the chunk) ---------------------
head -c $((5 * MiB + 777)) /dev/urandom >"$T/odd.raw"
"$V" -m 3 "$T/odd.raw" "$T/odd2.raw"
cmp "$T/odd.raw" "$T/odd2.raw" || fail "odd-size copy differs"

# --- every writable format: round trip, qemu-img compare and check ----------
# A fixed list: a format vdconvert cannot write fails below.
formats=(qcow2 qed vdi vhd vhdx vmdk parallels)
for f in "${formats[@]}"; do
    q=$(qemu_name "$f")
    "$V" -O "$f" "$T/in.raw" "$T/x.$f" || fail "raw -> $f failed"
    qemu-img compare -f raw -F "$q" "$T/in.raw" "$T/x.$f" >/dev/null || fail "raw -> $f: content differs (qemu-img compare)"
    if qemu-img check -f "$q" "$T/x.$f" >"$T/chk" 2>&1; then :; else
        rc=$?; [ $rc -eq 63 ] || fail "raw -> $f: qemu-img check: $(head -3 "$T/chk")"
    fi
    "$V" "$T/x.$f" "$T/back.raw" || fail "$f -> raw failed"
    # (vhd rounds the size up to its geometry: the tail must read as zeroes)
    qemu-img compare -f raw -F raw "$T/in.raw" "$T/back.raw" >/dev/null || fail "$f -> raw differs"
    rm -f "$T/back.raw"
    # holes stay holes in the sparse format too: far less than 64 MiB.
    [ "$(alloc_kib "$T/x.$f")" -lt $((20 * 1024)) ] || fail "$f output not sparse: $(alloc_kib "$T/x.$f") KiB"
done

# --- streamOptimized VMDK: writes must be strictly sequential ----------------
for m in 1 3; do
    rm -f "$T/s.vmdk"
    "$V" -m $m -O vmdk -o subformat=streamOptimized "$T/in.raw" "$T/s.vmdk" ||
        fail "streamOptimized with -m $m failed"
    qemu-img compare -f raw -F vmdk "$T/in.raw" "$T/s.vmdk" >/dev/null ||
        fail "streamOptimized -m $m: content differs"
    qemu-img check -f vmdk "$T/s.vmdk" >/dev/null || fail "streamOptimized -m $m: qemu-img check"
    "$V" -m $m "$T/s.vmdk" "$T/s.raw" && cmp "$T/in.raw" "$T/s.raw" ||
        fail "streamOptimized -m $m: reading back differs"
    rm -f "$T/s.raw"
done
vmdkinfo "$T/s.vmdk" >/dev/null || fail "vmdkinfo rejects the streamOptimized output"

# --- multi-file VMDK: made in a temporary folder, files renamed out of it -----
mkdir "$T/mf"
for sub in twoGbMaxExtentSparse monolithicFlat; do
    "$V" -O vmdk -o subformat=$sub "$T/in.raw" "$T/mf/$sub.vmdk" || fail "vmdk $sub failed"
    qemu-img compare -f raw -F vmdk "$T/in.raw" "$T/mf/$sub.vmdk" >/dev/null ||
        fail "vmdk $sub: content differs"
done
ls "$T/mf" | matches '^twoGbMaxExtentSparse-s001.vmdk$' || fail "split extent not in place: $(ls "$T/mf")"
ls "$T/mf" | matches '^monolithicFlat-flat.vmdk$' || fail "flat extent not in place: $(ls "$T/mf")"
rc=0
( trap '' XFSZ; ulimit -f 2048; exec "$V" -O vmdk -o subformat=monolithicFlat "$T/in.raw" "$T/mf/fail.vmdk" ) 2>/dev/null || rc=$?
[ $rc -eq 1 ] || fail "multi-file conversion over the size limit: exit $rc"
[ "$(ls -A "$T/mf" | wc -l)" -eq 4 ] || fail "failed multi-file conversion left files: $(ls -A "$T/mf")"

# --- -c: compressed clusters (formats that store them) ---------------------
# Compressible data (text) at unaligned places, so clusters are partly data.
python3 - "$T/c.raw" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
os.ftruncate(fd, 24 << 20)
text = b"".join(b"line %d of some compressible text\n" % i for i in range(60000))
for off in (0, 3 << 20, (9 << 20) + 4096 + 512, (23 << 20) + 100):
    os.pwrite(fd, text[: min(len(text), (24 << 20) - off)], off)
os.pwrite(fd, os.urandom(300000), 15 << 20)
os.close(fd)
EOF
for f in "${formats[@]}"; do
    q=$(qemu_name "$f")
    rc=0; "$V" -c -O "$f" "$T/c.raw" "$T/c.$f" 2>"$T/err" || rc=$?
    # qcow2 stores compressed clusters (streamOptimized VMDK is tested
    # above); every other format must refuse -c with that message.
    if [ $f != qcow2 ]; then
        [ $rc -ne 0 ] || fail "-c $f: accepted"
        grep -q "compressed output (-c) is not supported" "$T/err" || fail "-c $f: $(cat "$T/err")"
        [ ! -e "$T/c.$f" ] || fail "-c $f refused but left an output"
        continue
    fi
    [ $rc -eq 0 ] || fail "-c $f: $(cat "$T/err")"
    echo "compressed output: $f"
    qemu-img compare -f raw -F "$q" "$T/c.raw" "$T/c.$f" >/dev/null || fail "-c $f: content differs"
    qemu-img check -f "$q" "$T/c.$f" >"$T/chk" || fail "-c $f: qemu-img check: $(head -3 "$T/chk")"
    grep -q "compressed clusters" "$T/chk" && ! grep -q " 0.00% compressed" "$T/chk" ||
        fail "-c $f: no compressed clusters: $(tail -2 "$T/chk")"
    "$V" -O "$f" "$T/c.raw" "$T/u.$f"
    [ "$(stat -c %s "$T/c.$f")" -lt "$(stat -c %s "$T/u.$f")" ] || fail "-c $f is not smaller"
    "$V" -m 1 -c -O "$f" "$T/c.raw" "$T/c1.$f"
    qemu-img compare "$T/c.$f" "$T/c1.$f" >/dev/null || fail "-c $f with -m 1 differs"
done

# --- deflate levels: igzip (1-3) and zlib/libdeflate (4-9) read back by qemu --
# qcow2 -c and streamOptimized VMDK (grains deflated in parallel batches,
# with partly written grains at the data's unaligned ends).
for level in 1 3 9; do
    for f in qcow2 vmdk; do
        [[ " ${formats[*]} " == *" $f "* ]] || continue
        opts=compression_level=$level c=-c
        [ $f = vmdk ] && opts=subformat=streamOptimized,$opts c=
        rm -f "$T/l.$f"
        "$V" $c -O $f -o "$opts" "$T/c.raw" "$T/l.$f" || fail "$f $opts failed"
        qemu-img compare -f raw -F $f "$T/c.raw" "$T/l.$f" >/dev/null || fail "$f $opts: content differs"
        qemu-img check -f $f "$T/l.$f" >/dev/null || fail "$f $opts: qemu-img check"
        [ "$(stat -c %s "$T/l.$f")" -lt $((8 << 20)) ] || fail "$f $opts: not compressed"
    done
done
# Clusters larger than the engine's 1 MiB jobs (qcow2 allows 2 MiB): a job
# holds a whole compressed cluster (the job was once widened past its buffer).
"$V" -c -O qcow2 -o cluster_size=2M "$T/c.raw" "$T/l2m.qcow2" || fail "-c cluster_size=2M failed"
qemu-img compare -f raw -F qcow2 "$T/c.raw" "$T/l2m.qcow2" >/dev/null || fail "-c cluster_size=2M: content differs"
qemu-img check -f qcow2 "$T/l2m.qcow2" >/dev/null || fail "-c cluster_size=2M: qemu-img check"
rc=0; "$V" -c -O qcow2 -o compression_level=10 "$T/c.raw" "$T/l.qcow2" 2>"$T/err" || rc=$?
[ $rc -ne 0 ] && grep -q "compression_level=10: expected 1 to 9" "$T/err" ||
    fail "compression_level=10 accepted: $(cat "$T/err")"

# --- -B: an overlay holding only the differences -----------------------------
for f in qcow2 qed; do
    q=$(qemu_name "$f")
    qemu-img convert -f raw -O "$q" "$T/in.raw" "$T/base.$f"
    cp "$T/in.raw" "$T/mod.raw"
    dd if=/dev/urandom of="$T/mod.raw" bs=64k seek=50 count=2 conv=notrunc status=none
    dd if=/dev/zero of="$T/mod.raw" bs=64k seek=3 count=1 conv=notrunc status=none
    (cd "$T" && "$V" -O "$f" -B "base.$f" -F "$f" mod.raw "ov.$f") || fail "-B with $f failed"
    qemu-img compare -f raw -F "$q" "$T/mod.raw" "$T/ov.$f" >/dev/null || fail "-B $f: content differs"
    qemu-img check -f "$q" "$T/ov.$f" >/dev/null || fail "-B $f: qemu-img check"
    qemu-img info -f "$q" "$T/ov.$f" | matches "backing file: base.$f" || fail "-B $f: backing not recorded"
    # Only the two changed places are allocated in the top layer: 64K..256K.
    top=$(qemu-img map -f "$q" --output=json "$T/ov.$f" | grep '"depth": 0' | grep -c '"present": true' || true)
    [ "$top" -ge 1 ] && [ "$top" -le 3 ] || fail "-B $f: expected 2 allocated ranges in the top layer, got $top"
done
echo "engine tests passed"
