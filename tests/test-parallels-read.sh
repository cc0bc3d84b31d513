#!/bin/bash
# test-parallels-read: every Parallels image that ../shared/corpus/make-matrix
# makes and every Parallels sample in ../shared/corpus/samples reads
# (vdconvert IMG out.raw) to exactly the content qemu-img gives:
#  - qemu/parallels-v1 ("WithoutFreeSpace"), parallels-v2 ("WithouFreSpacExt"),
#    fake.parallels, parallels-with-bitmap (64 GiB, a format-extension cluster);
#  - dissect.hypervisor bundles (folders with DiskDescriptor.xml): expanding.hdd,
#    plain.hdd (a Plain image: raw data), split.hdd (10 GiB over 6 storages).
#    qemu-img cannot open a bundle, only its single .hds files, so a bundle is
#    checked against qemu's view of each of its files at the storage's offset
#    (EXPECTED.tsv's sha of the whole split bundle is that concatenation; we
#    compare data ranges with SEEK_DATA instead of hashing 10 GiB).
# A bundle with a snapshot chain (made here: base + snapshot image, TopGUID or
# a single leaf) reads the top snapshot's clusters over its parent's.
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3
requires_shared
S=$SHARED/corpus/samples
M=$(matrix_dir)

expected_sha() { awk -F'\t' -v f="$1" '$1 == f { print $4 }' "$S/EXPECTED.tsv"; }

check_file() {   # IMG [EXPECTED_SHA]
    local img=$1 sha=${2:-} out=$T/out.raw
    rm -f "$out"
    "$VDCONVERT" "$img" "$out" || fail "vdconvert $img"
    qemu-img compare -q -f parallels "$img" -F raw "$out" || fail "$img: content differs from qemu-img's"
    local qsize
    qsize=$(qemu-img info -f parallels --output=json "$img" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    [ "$(stat -c %s "$out")" = "$qsize" ] || fail "$img: size $(stat -c %s "$out") != qemu's $qsize"
    if [ -n "$sha" ]; then
        [ "$(file_sha "$out")" = "$sha" ] || fail "$img: sha256 differs"
    fi
    echo "ok: $(basename "$img")"
}

# Compare OUT (a sparse raw file) with PIECE at OFFSET, both ways over data
# ranges: where neither has data both read zeroes.
sparse_cmp() {   # OUT OFFSET PIECE
    python3 - "$@" <<'EOF'
import os, sys
out, base, piece = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fa, fb = os.open(out, os.O_RDONLY), os.open(piece, os.O_RDONLY)
plen = os.fstat(fb).st_size
if os.fstat(fa).st_size < base + plen:
    sys.exit('%s: shorter than %s at %d' % (out, piece, base))
def ranges(fd, start, end):
    off = start
    while off < end:
        try:
            d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            return
        if d >= end:
            return
        h = min(os.lseek(fd, d, os.SEEK_HOLE), end)
        yield d, h
        off = h
def same(a_off, b_off, n):
    while n:
        k = min(n, 1 << 22)
        if os.pread(fa, k, a_off) != os.pread(fb, k, b_off):
            sys.exit('%s differs from %s near %#x' % (out, piece, b_off))
        a_off += k; b_off += k; n -= k
for d, h in ranges(fb, 0, plen):
    same(base + d, d, h - d)
for d, h in ranges(fa, base, base + plen):
    same(d, d - base, h - d)
EOF
}

# --- make-matrix images -----------------------------------------------------
# (the manifest's sha is qemu's reading too, and of qemu's virtual size:
# lib.sh's matrix_read)
n=0
while IFS=$'\t' read -r file fmt _ _ sha _ qemu _; do
    [ "$fmt" = parallels ] || continue
    matrix_read "$M/$file" "$sha" "$qemu"
    echo "ok: $(basename "$file")"
    n=$((n + 1))
done < <(grep -v '^#' "$M/MANIFEST.tsv")
[ "$n" -ge 3 ] || fail "only $n parallels images in the matrix manifest"

# --- qemu's samples ------------------------------------------------------------
for s in parallels-v1 parallels-v2 fake.parallels; do
    bzip2 -dc "$S/qemu/$s.bz2" >"$T/$s"
    check_file "$T/$s" "$(expected_sha "qemu/$s.bz2")"
done
bzip2 -dc "$S/qemu/parallels-with-bitmap.bz2" >"$T/with-bitmap.hds"
check_file "$T/with-bitmap.hds"    # 64 GiB: qemu-img compare, no hashing
"$VDCONVERT" info "$T/parallels-v1" | matches WithoutFreeSpace || fail "v1 signature not reported"

# --- dissect.hypervisor bundles -------------------------------------------------
unpack_bundle() {  # NAME -> $T/NAME.hdd with the .hds files gunzipped
    cp -r "$S/dissect.hypervisor/$1.hdd" "$T/"
    chmod -R u+w "$T/$1.hdd"
    gunzip "$T/$1.hdd/"*.gz
}
for b in expanding plain; do
    unpack_bundle $b
    rm -f "$T/out.raw"
    "$VDCONVERT" "$T/$b.hdd" "$T/out.raw" || fail "read bundle $b.hdd"
    hds=$(ls "$T/$b.hdd/"*.hds)
    fmt=parallels
    [ $b = plain ] && fmt=raw
    qemu-img compare -q -f $fmt "$hds" -F raw "$T/out.raw" || fail "$b.hdd differs from qemu's view of its .hds"
    [ "$(file_sha "$T/out.raw")" = \
      "$(expected_sha "dissect.hypervisor/$b.hdd/$(basename "$hds").gz")" ] || fail "$b.hdd sha"
    "$VDCONVERT" "$T/$b.hdd/DiskDescriptor.xml" "$T/out2.raw" || fail "$b: descriptor path"
    cmp "$T/out.raw" "$T/out2.raw" || fail "$b: folder and descriptor differ"
    rm -f "$T/out2.raw"
    echo "ok: bundle $b.hdd"
done

unpack_bundle split
rm -f "$T/out.raw"
"$VDCONVERT" "$T/split.hdd" "$T/out.raw" || fail "read split.hdd"
[ "$(stat -c %s "$T/out.raw")" = 10737418240 ] || fail "split.hdd size"
off=0
for i in 0 1 2 3 4 5; do
    f=$(ls "$T/split.hdd/split.hdd.$i."*.hds)
    qemu-img convert -f parallels -O raw "$f" "$T/piece.raw"
    sparse_cmp "$T/out.raw" $off "$T/piece.raw" || fail "split.hdd storage $i"
    off=$((off + $(stat -c %s "$T/piece.raw")))
    rm -f "$T/piece.raw"
done
[ $off = 10737418240 ] || fail "split pieces add up to $off"
python3 -c "import sys; sys.exit(open('$T/out.raw','rb').read(1 << 20) != b'\x01' * (1 << 20))" ||
    fail "split.hdd: first MiB is not 0x01 bytes (dissect's expectation)"
rm -f "$T/out.raw"
echo "ok: bundle split.hdd (6 storages)"

# --- a bundle with a snapshot chain ----------------------------------------------
B=$T/snap.hdd
mkdir "$B"
G0="{11111111-2222-4333-8444-555555555555}"
G1="{66666666-7777-4888-8999-aaaaaaaaaaaa}"
qemu-img create -q -f parallels -o cluster_size=64K "$B/base.hds" 4M
qemu-img create -q -f parallels -o cluster_size=64K "$B/top.hds" 4M
qemu-img create -q -f raw "$T/expect.raw" 4M
for cmd in "write -P 0x10 0 256K" "write -P 0x20 1M 64K" "write -P 0x30 3M 1M"; do
    qemu-io -f parallels -c "$cmd" "$B/base.hds" >/dev/null
    qemu-io -f raw -c "$cmd" "$T/expect.raw" >/dev/null
done
for cmd in "write -P 0x40 64K 64K" "write -P 0x50 2M 128K" "write -z 3M 64K"; do
    qemu-io -f parallels -c "$cmd" "$B/top.hds" >/dev/null
    qemu-io -f raw -c "$cmd" "$T/expect.raw" >/dev/null
done
descriptor() {  # EXTRA-SNAPSHOT-XML
    cat <<EOF
<?xml version='1.0' encoding='UTF-8'?>
<Parallels_disk_image Version="1.0">
  <Disk_Parameters><Disk_size>8192</Disk_size><LogicSectorSize>512</LogicSectorSize></Disk_Parameters>
  <StorageData><Storage><Start>0</Start><End>8192</End><Blocksize>128</Blocksize>
    <Image><GUID>$G0</GUID><Type>Compressed</Type><File>base.hds</File></Image>
    <Image><GUID>$G1</GUID><Type>Compressed</Type><File>top.hds</File></Image>
  </Storage></StorageData>
  <Snapshots>$1
    <Shot><GUID>$G0</GUID><ParentGUID>{00000000-0000-0000-0000-000000000000}</ParentGUID></Shot>
    <Shot><GUID>$G1</GUID><ParentGUID>$G0</ParentGUID></Shot>
  </Snapshots>
</Parallels_disk_image>
EOF
}
descriptor "" >"$B/DiskDescriptor.xml"
"$VDCONVERT" "$B" "$T/snap.raw" || fail "snapshot bundle"
cmp "$T/snap.raw" "$T/expect.raw" || fail "snapshot bundle: top over base differs"
descriptor "<TopGUID>$G0</TopGUID>" >"$B/DiskDescriptor.xml"
rm -f "$T/snap.raw"
"$VDCONVERT" "$B" "$T/snap.raw" || fail "snapshot bundle with TopGUID"
qemu-img compare -q -f raw "$T/snap.raw" -F parallels "$B/base.hds" || fail "TopGUID=base: not the base view"
"$VDCONVERT" info "$B" | matches "current-snapshot: $G0" || fail "info: current snapshot"
echo "ok: snapshot chain (leaf and TopGUID)"

# the other shots are listed as snapshots, and one can be read by its GUID
descriptor "" >"$B/DiskDescriptor.xml"
"$VDCONVERT" snapshot -l "$B" | matches -i "${G0//[\{\}]/}" || fail "snapshot -l does not list the base"
"$VDCONVERT" snapshot -l "$B" | matches -i "${G1//[\{\}]/}" && fail "snapshot -l lists the current state"
rm -f "$T/snap.raw"
"$VDCONVERT" convert -l "$G0" "$B" "$T/snap.raw" || fail "convert -l base snapshot"
qemu-img compare -q -f raw "$T/snap.raw" -F parallels "$B/base.hds" || fail "snapshot base: not the base view"
if "$VDCONVERT" convert -l "{00000000-1111-2222-3333-444444444444}" "$B" "$T/none.raw" 2>"$T/err"; then
    fail "an unknown snapshot opened"
fi
grep -q "not in the snapshot list" "$T/err" || fail "unknown snapshot error: $(cat "$T/err")"
echo "ok: snapshots listed and read by GUID"
