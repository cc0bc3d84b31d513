#!/bin/bash
# The conversion engine over every driver: each 64 MiB image of
# ../shared/corpus/make-matrix (every variant qemu-img writes) must be
# recognised as its format, and every third one is converted to qcow2 with
# two workers and judged by qemu-img compare and check.  (The 2 GiB images
# are left to the format tests: too slow here.)  Every image of the list is
# looked at: one whose format vdisk does not recognise fails the test.
# Conversion to raw against MANIFEST.tsv's sha256 is not repeated here:
# each format's read test (qcow2-read, qcow1-read, qed-read, vdi-read,
# vhd-read, vhdx-read, vmdk-read, parallels-read) converts every matrix
# image of its format, of every size, and checks that sha256.
. "$(dirname "$0")/lib.sh"
M=$(matrix_dir)
V=$VDCONVERT
n=0 i=0
while IFS=$'\t' read -r file fmt _opts vsize _sha _rest; do
    [ "$vsize" -le $((64 << 20)) ] 2>/dev/null || continue
    img=$M/$file
    expect_format "$img" "$fmt"
    i=$((i + 1))
    if [ $((i % 3)) -eq 0 ]; then
        rm -f "$T/o.qcow2"
        "$V" -m 2 -O qcow2 "$img" "$T/o.qcow2" 2>"$T/err" || fail "$file -> qcow2: $(cat "$T/err")"
        # (from the image's folder: qemu opens a data_file by a name relative to it)
        (cd "$(dirname "$img")" && judge_copy "$(basename "$img")" "$T/o.qcow2" "$file -> qcow2")
        n=$((n + 1))
    fi
done < <(grep -v '^#' "$M/MANIFEST.tsv" | tail -n +2)
[ $i -gt 0 ] || fail "no matrix image was found"
echo "$i matrix images recognised, $n converted to qcow2 correctly"
