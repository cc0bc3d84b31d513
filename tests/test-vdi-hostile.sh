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
# every mutant in one python run, then info and a conversion of each, every
# command in a process of its own forked by mutant-runner, not an exec each
# (lib.sh's write_mutants, convert_mutants)
write_mutants --cases "$T/good.vdi" vdi "${cases[@]}" </dev/null
convert_mutants --info vdi /dev/null "${cases[@]}"

# the unmodified image still reads (the cases above are not all refusals)
"$VDCONVERT" "$T/good.vdi" "$T/good.raw"
qemu-img compare -q -f vdi "$T/good.vdi" -F raw "$T/good.raw" || fail "good image"
