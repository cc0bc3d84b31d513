#!/bin/bash
# test-vdi-hostile: corrupt and hostile VDI headers and block maps give one
# clear error line naming the field (and offset), never a crash, a hang or a
# huge allocation: block map entries past EOF or beyond the block count,
# absurd block sizes, block counts whose map would be gigabytes, blocks not
# covering the disk size, a block map past EOF, bad header sizes, unknown and
# undo image types, truncated files, a differencing image without a parent
# UUID.  (UUID loops: test-vdi-differencing.)  Memory is capped with ulimit so
# that a huge allocation fails the test instead of passing unnoticed.
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3

qemu-img create -q -f vdi "$T/good.vdi" 4M
qemu-io -f vdi -c "write -P 0x41 1M 1M" "$T/good.vdi" >/dev/null

# NAME PATTERN python-expression-mutating-bytearray-b
cases=(
"bmap-past-eof|points past end of file|struct.pack_into('<I', b, 0x200 + 4*1, 3)"
"bmap-index-too-big|not below the block count|struct.pack_into('<I', b, 0x200 + 4*2, 7)"
"block-size-zero|block size 0|struct.pack_into('<I', b, 376, 0)"
"block-size-odd|block size 1000|struct.pack_into('<I', b, 376, 1000)"
"block-size-1g|block size 1073741824|struct.pack_into('<I', b, 376, 1 << 30)"
"block-extra|block extra data size|struct.pack_into('<I', b, 380, 7)"
"huge-block-count|block map larger than|struct.pack_into('<I', b, 384, 0xfffffff0)"
"blocks-short|do not cover the disk size|struct.pack_into('<Q', b, 368, 5 << 20)"
"disk-size-huge|do not cover|struct.pack_into('<Q', b, 368, 1 << 62)"
"bmap-offset-past-eof|block map at 0x7fff0000|struct.pack_into('<I', b, 340, 0x7fff0000)"
"bmap-offset-in-header|overlaps the header|struct.pack_into('<I', b, 340, 100)"
"data-overlaps-map|overlaps the block map|struct.pack_into('<I', b, 344, 0x200)"
"header-size-small|header size 10|struct.pack_into('<I', b, 72, 10)"
"header-size-huge|header size 4294967295|struct.pack_into('<I', b, 72, 0xffffffff)"
"type-7|image type 7|struct.pack_into('<I', b, 76, 7)"
"type-undo|undo images|struct.pack_into('<I', b, 76, 3)"
"diff-no-parent|without a parent UUID|struct.pack_into('<I', b, 76, 4)"
"version-2|unsupported version 2.0|struct.pack_into('<I', b, 68, 0x20000)"
"allocated-too-many|allocated blocks|struct.pack_into('<I', b, 388, 99)"
"truncated|too short|b[:] = b[:100]"
)
# every mutant in one python run, each case's statement on a fresh copy
python3 - "$T/good.vdi" "$T" "${cases[@]}" <<'PY'
import struct, sys
good = open(sys.argv[1], 'rb').read()
for c in sys.argv[3:]:
    name, _, expr = c.split('|', 2)
    b = bytearray(good)
    exec(expr)
    open(f'{sys.argv[2]}/{name}.vdi', 'wb').write(b)
PY
# info and a conversion of each, every command in a process of its own
# forked by mutant-runner (lib.sh's run_many), not an exec each
for c in "${cases[@]}"; do
    name=${c%%|*}
    printf 'vdconvert\tinfo\t%s\n' "$T/$name.vdi"
    printf 'vdconvert\t%s\t%s\n' "$T/$name.vdi" "$T/out.raw"
done >"$T/jobs"
run_many "$T/runs" "$T/out.raw" <"$T/jobs" >"$T/runs.st"
rm -f "$T/out.raw"
n=0
while read -r i rc nout nerr; do
    IFS='|' read -r name pat expr <<<"${cases[$((i / 2))]}"
    cmd=info
    [ $((i % 2)) = 0 ] || cmd=convert
    msg=$(<"$T/runs/$i.err")
    [ $rc -ne 0 ] || fail "$name ($cmd): accepted"
    [ $rc -lt 124 ] || fail "$name ($cmd): crashed or hung (rc $rc): $msg"
    [ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] || fail "$name ($cmd): not one line: $msg"
    grep -q -- "$pat" <<<"$msg" || fail "$name ($cmd): '$msg' lacks '$pat'"
    [ $cmd = info ] || echo "ok: $name: $msg"
    n=$((n + 1))
done <"$T/runs.st"
[ $n = $((2 * ${#cases[@]})) ] || fail "mutant-runner ran $n of $((2 * ${#cases[@]})) commands"

# the unmodified image still reads (the cases above are not all refusals)
"$VDCONVERT" "$T/good.vdi" "$T/good.raw"
qemu-img compare -q -f vdi "$T/good.vdi" -F raw "$T/good.raw" || fail "good image"
