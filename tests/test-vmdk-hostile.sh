#!/bin/bash
# test-vmdk-hostile: corrupt and hostile VMDKs get one clear error line (and
# no crash, hang or huge allocation: each run is capped at 1 GiB / 10 s);
# descriptors in the forms real tools write (comments, quotes, CRLF, spaces
# in names, ZERO extents, custom mixes of extents) read correctly.
# The ASan+UBSan rerun of the suite (test.sh) runs this too.
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img python3

# ASan reserves terabytes of address space, so under it the 1 GiB cap is
# the sanitizer's own allocation limit instead of ulimit -v.
SAN=0
case "$(ldd "$VDCONVERT" 2>/dev/null)" in *libasan*) SAN=1 ;; esac
run() {  # vdconvert with limits; stdout+stderr in $T/msg
    if [ $SAN = 1 ]; then
        ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}max_allocation_size_mb=1024:allocator_may_return_null=1" \
            timeout 30 "$VDCONVERT" "$@" >"$T/msg" 2>&1
    else
        (ulimit -v 1048576; timeout 10 "$VDCONVERT" "$@") >"$T/msg" 2>&1
    fi
}
# refused NAME PATTERN ARGS...: vdconvert ARGS must fail with one line
# matching PATTERN.  The case is noted here; run_refused (after the last one)
# runs them all through lib.sh's run_many (vdconvert's main() in a process of
# its own forked by mutant-runner with run_capped's limits, not an exec each)
# and judges each.  Every case has a file of its own.
REFUSED=()
refused() {
    local name=$1 pat=$2 line=vdconvert a
    shift 2
    for a in "$@"; do line+=$'\t'$a; done
    REFUSED+=("$name|$pat")
    printf '%s\n' "$line" >>"$T/refused.jobs"
}
run_refused() {
    local i rc nout nerr name pat n=0
    run_many "$T/refused" "$T/o.raw" <"$T/refused.jobs" >"$T/refused.st"
    while read -r i rc nout nerr; do
        IFS='|' read -r name pat <<<"${REFUSED[$i]}"
        cat "$T/refused/$i.out" "$T/refused/$i.err" >"$T/msg"
        [ "$rc" != 0 ] || fail "$name: accepted"
        [ "$rc" -lt 124 ] || fail "$name: killed or timed out (rc $rc): $(cat "$T/msg")"
        [ "$(wc -l <"$T/msg")" = 1 ] || fail "$name: error is not one line: $(cat "$T/msg")"
        grep -q -- "$pat" "$T/msg" || fail "$name: '$(cat "$T/msg")' does not match '$pat'"
        echo "ok (refused) $name: $(cat "$T/msg")"
        n=$((n + 1))
    done <"$T/refused.st"
    [ $n = ${#REFUSED[@]} ] || fail "mutant-runner ran $n of ${#REFUSED[@]} cases"
}
# (shell only, no python start per case)
patch() {  # FILE OFFSET HEXBYTES
    local hex=$3 esc=
    while [ -n "$hex" ]; do esc+="\\x${hex:0:2}"; hex=${hex:2}; done
    printf %b "$esc" | dd of="$1" bs=1 seek=$(($2)) conv=notrunc status=none
}
le() {  # BYTES VALUE: VALUE little-endian in hex
    local i out= v=$(($2))
    for ((i = 0; i < $1; i++)); do printf -v out '%s%02x' "$out" $(((v >> (8 * i)) & 255)); done
    echo "$out"
}
le32() { le 4 "$1"; }
le64() { le 8 "$1"; }
# LE32/LE64 at an offset of a file, as an unsigned number
u_at() { od -An -t "u$1" -j "$3" -N "$1" "$2" | tr -d ' '; }

# a small sparse image with data in two grains
python3 -c 'import random; f=open("'"$T"'/d.raw","wb"); f.truncate(4<<20); f.write(random.Random(67).randbytes(70000)); f.seek(3<<20); f.write(b"z"*5000)'
qemu-img convert -f raw -O vmdk "$T/d.raw" "$T/good.vmdk"
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$T/d.raw" "$T/stream.vmdk"
run "$T/good.vmdk" "$T/o.raw" && cmp -s "$T/d.raw" "$T/o.raw" || fail "good image does not read"
gd=$(u_at 8 "$T/good.vmdk" 56)
gt=$(u_at 4 "$T/good.vmdk" $((gd * 512)))

NB=0
bad() { NB=$((NB + 1)); B=$T/bad$NB.vmdk; cp "$T/good.vmdk" "$B"; }
sbad() { NB=$((NB + 1)); B=$T/bad$NB.vmdk; cp "$T/stream.vmdk" "$B"; }
bad; patch "$B" 4 "$(le32 9)"
refused "header version" "version 9" "$B" "$T/o.raw"
bad; patch "$B" 20 "$(le64 3)"
refused "grain size not a power of two" "grain size 3" "$B" "$T/o.raw"
bad; patch "$B" 44 "$(le32 0)"
refused "zero grain-table entries" "entries per grain table" "$B" "$T/o.raw"
bad; patch "$B" 12 "$(le64 0x7fffffffffffffff)"
refused "absurd capacity" "capacity .* too large" "$B" "$T/o.raw"
bad; patch "$B" 12 "$(le64 0x7fffffffffff)"
refused "capacity needing a huge grain directory" "grain directory" "$B" "$T/o.raw"
bad; patch "$B" 56 "$(le64 0x10000000)"
refused "grain directory past EOF" "grain directory .* past end of file" "$B" "$T/o.raw"
bad; patch "$B" 36 "$(le64 0x100000)"
refused "huge embedded descriptor" "descriptor size" "$B" "$T/o.raw"
bad; patch "$B" 73 "0a200a0a"
refused "newline bytes (text-mode transfer)" "newline" "$B" "$T/o.raw"
bad; patch "$B" $((gd * 512)) "$(le32 0x7ffffff0)"
refused "grain directory entry past EOF" "grain table at .* past end of file" "$B" "$T/o.raw"
bad; patch "$B" $((gt * 512)) "$(le32 0x7ffffff0)"
refused "grain table entry past EOF" "points to .* past end of file" "$B" "$T/o.raw"
bad; truncate -s 300 "$B"
refused "truncated to 300 bytes" "vmdk\|format" "$B" "$T/o.raw"
bad; truncate -s $((gd * 512 + 100)) "$B"
refused "truncated inside the grain directory" "past end of file" "$B" "$T/o.raw"
bad; truncate -s $(( $(stat -c %s "$T/good.vmdk") - 4096 )) "$B"
refused "truncated inside the last grain" "past end of file" "$B" "$T/o.raw"
bad; printf 'COWD' | dd of="$B" conv=notrunc status=none
refused "vmfsSparse (COWD)" "COWD" "$B" "$T/o.raw"

# streamOptimized: a broken grain and a marker for the wrong sector
sbad; patch "$B" $((0x10000 + 20)) "ffffffffffffffff"
refused "stream grain that does not inflate" "does not inflate" "$B" "$T/o.raw"
sbad; patch "$B" $((0x10000)) "$(le64 4096)"
refused "stream grain marker for another sector" "grain marker" "$B" "$T/o.raw"
sbad; patch "$B" $((0x10000 + 8)) "$(le32 0x7fffffff)"
refused "stream grain with absurd size" "compressed size" "$B" "$T/o.raw"

# --- separate descriptors --------------------------------------------------
mkdir -p "$T/dir/sub"
head -c $((2 << 20)) /dev/zero > "$T/dir/flat.bin"
printf 'hello' | dd of="$T/dir/flat.bin" conv=notrunc status=none
cp "$T/dir/flat.bin" "$T/outside.bin"
desc() {  # FILE EXTENT-LINES...
    local f=$1; shift
    { printf '# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
      printf '%s\n' "$@"; } > "$f"
}
desc "$T/dir/up.vmdk" 'RW 4096 FLAT "../outside.bin" 0'
refused "extent path with ../" "leaves the image's folder" "$T/dir/up.vmdk" "$T/o.raw"
run --allow-host-paths "$T/dir/up.vmdk" "$T/o.raw" || fail "--allow-host-paths: $(cat "$T/msg")"
desc "$T/dir/abs.vmdk" "RW 4096 FLAT \"$T/outside.bin\" 0"
refused "absolute extent path" "leaves the image's folder" "$T/dir/abs.vmdk" "$T/o.raw"
desc "$T/dir/ok.vmdk" 'RW 4096 FLAT "sub/../sub/./x.bin" 0'
cp "$T/dir/flat.bin" "$T/dir/sub/x.bin"
run "$T/dir/ok.vmdk" "$T/o.raw" || fail "a ../ that stays inside: $(cat "$T/msg")"
desc "$T/dir/huge.vmdk" 'RW 1152921504606846976 FLAT "flat.bin" 0'
refused "absurd extent size" "not a sane sector count" "$T/dir/huge.vmdk" "$T/o.raw"
desc "$T/dir/sum.vmdk" 'RW 140737488355328 ZERO' 'RW 140737488355328 ZERO'
refused "extents adding up past the limit" "add up" "$T/dir/sum.vmdk" "$T/o.raw"
desc "$T/dir/many.vmdk"
for i in $(seq 5000); do echo 'RW 1 ZERO'; done >> "$T/dir/many.vmdk"
refused "5000 extents" "more than 4096 extents" "$T/dir/many.vmdk" "$T/o.raw"
desc "$T/dir/type.vmdk" 'RW 4096 WEIRD "flat.bin"'
refused "unknown extent type" "WEIRD extents" "$T/dir/type.vmdk" "$T/o.raw"
desc "$T/dir/missing.vmdk" 'RW 4096 FLAT "nothere.bin" 0'
refused "missing extent file" "nothere.bin" "$T/dir/missing.vmdk" "$T/o.raw"
desc "$T/dir/line.vmdk" "ddb.comment = \"$(head -c 1000000 /dev/zero | tr '\0' x)\"" 'RW 4096 FLAT "flat.bin" 0'
refused "1 MB descriptor line" "descriptor line 6 is 10000[0-9][0-9] bytes long" "$T/dir/line.vmdk" "$T/o.raw"
desc "$T/dir/big.vmdk" 'RW 4096 FLAT "flat.bin" 0'
head -c $((2 << 20)) /dev/zero | tr '\0' '#' >> "$T/dir/big.vmdk"
refused "2 MiB descriptor file" "larger than" "$T/dir/big.vmdk" "$T/o.raw"
printf '# Disk DescriptorFile\nversion=1\nCID=zz\ncreateType="monolithicFlat"\n' > "$T/dir/cid.vmdk"
refused "CID not hex" "CID is not a 32-bit hex number" "$T/dir/cid.vmdk" "$T/o.raw"
printf '# Disk DescriptorFile\nversion=1\nCID=12345678\ncreateType="seSparse"\nRW 8 SESPARSE "flat.bin"\n' > "$T/dir/se.vmdk"
refused "seSparse extent that is not seSparse" "no seSparse magic" "$T/dir/se.vmdk" "$T/o.raw"
run_refused

# --- descriptor forms that must read ----------------------------------------
# CRLF line ends, comments, blank lines, trailing spaces, a name with spaces,
# tabs, VMFS (no offset), FLAT with an offset: compared with qemu-img.
cp "$T/dir/flat.bin" "$T/dir/my disk-flat.vmdk"
printf '%s\r\n' '# Disk DescriptorFile' '  # indented comment' '' 'version=1 ' \
    'encoding="UTF-8"' 'CID=0badc0de' 'parentCID=ffffffff' \
    'createType="monolithicFlat"' '' '# Extent description' \
    'RW 2048 FLAT "my disk-flat.vmdk" 0' $'RW\t1024\tVMFS\t"flat.bin"' \
    'RW 1024 FLAT "flat.bin" 1' '' \
    '#DDB' 'ddb.adapterType = "lsilogic"' 'ddb.comment = "a = b # not a comment"' > "$T/dir/forms.vmdk"
run "$T/dir/forms.vmdk" "$T/o.raw" || fail "descriptor forms: $(cat "$T/msg")"
python3 - "$T/dir/flat.bin" "$T/o.raw" <<'PY' || fail "descriptor forms: wrong content"
import sys
f = open(sys.argv[1], "rb").read()
want = f[:2048 * 512] + f[:1024 * 512] + f[512:512 + 1024 * 512]
sys.exit(0 if open(sys.argv[2], "rb").read() == want else 1)
PY
qemu-img compare -q -f vmdk "$T/dir/forms.vmdk" -F raw "$T/o.raw" || fail "descriptor forms: qemu-img disagrees"
echo "ok: CRLF/comments/quotes/spaces/tabs/VMFS/offset descriptor reads as qemu-img reads it"

# Forms qemu 7.2 does not read, checked against the expected bytes: spaces
# around '=' in createType/CID (qemu: "Unsupported image type ' '"), old Mac
# CR line ends, ZERO extents (qemu skips extent lines without a file name),
# RDONLY extents (qemu skips every extent that is not RW).
printf '%s\r' '# Disk DescriptorFile' 'version=1' 'CID = 0badc0de' \
    'createType =  "custom" ' 'RW 1024 ZERO' 'RDONLY 1024 FLAT "flat.bin" 0' > "$T/dir/extra.vmdk"
run "$T/dir/extra.vmdk" "$T/o.raw" || fail "extra descriptor: $(cat "$T/msg")"
python3 - "$T/dir/flat.bin" "$T/o.raw" <<'PY' || fail "extra descriptor: wrong content"
import sys
f = open(sys.argv[1], "rb").read()
sys.exit(0 if open(sys.argv[2], "rb").read() == bytes(1024 * 512) + f[:1024 * 512] else 1)
PY
echo "ok: spaced keys, CR line ends, ZERO and RDONLY extents"
# read-only and ZERO extents refuse writes
if "$VDCONVERT" convert -n -f raw -O vmdk "$T/o.raw" "$T/dir/extra.vmdk" >"$T/msg" 2>&1; then
    fail "wrote into RDONLY/ZERO extents"
fi
grep -q "read-only" "$T/msg" || fail "RDONLY write error: $(cat "$T/msg")"
# ESX flat descriptors: createType vmfs (qemu 7.2 lists the VMFS extent twice
# and reads a disk of twice the size) and vmfsThin (qemu: "Unsupported image
# type"); both are one VMFS extent over flat.bin.
for ct in vmfs vmfsThin; do
    printf '# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="%s"\n\nRW 4096 VMFS "flat.bin"\n\nddb.adapterType = "lsilogic"\n' \
        "$ct" >"$T/dir/$ct.vmdk"
    run "$T/dir/$ct.vmdk" "$T/o.raw" || fail "$ct descriptor: $(cat "$T/msg")"
    cmp -s "$T/o.raw" "$T/dir/flat.bin" || fail "$ct descriptor: wrong content"
    echo "ok: createType $ct"
done
echo "all ok"
