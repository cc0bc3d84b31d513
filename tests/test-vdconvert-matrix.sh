#!/bin/bash
# The conversion engine over every driver: each 64 MiB image of
# ../shared/corpus/make-matrix (every variant qemu-img writes) converted to
# raw with two workers must give the guest content MANIFEST.tsv lists; a
# sample of them is also converted to qcow2 and judged by qemu-img compare
# and check.  (The 2 GiB images are left to the format tests: too slow here.)
# Every image of the list is converted: one whose format vdisk does not
# recognise fails the test.
. "$(dirname "$0")/lib.sh"
M=$(matrix_dir)
V=$VDCONVERT
n=0 i=0
while IFS=$'\t' read -r file fmt _opts vsize sha _rest; do
    [ "$vsize" -le $((64 << 20)) ] 2>/dev/null || continue
    img=$M/$file
    expect_format "$img" "$fmt"
    rm -f "$T/o.raw"
    "$V" -m 2 "$img" "$T/o.raw" 2>"$T/err" || fail "$file: $(cat "$T/err")"
    [ "$(sha256sum "$T/o.raw" | cut -d' ' -f1)" = "$sha" ] || fail "$file: content differs from MANIFEST.tsv"
    i=$((i + 1))
    if [ $((i % 6)) -eq 0 ]; then
        rm -f "$T/o.qcow2"
        "$V" -O qcow2 "$img" "$T/o.qcow2" 2>"$T/err" || fail "$file -> qcow2: $(cat "$T/err")"
        judge_copy "$img" "$T/o.qcow2" "$file -> qcow2"
    fi
    n=$((n + 1))
done < <(grep -v '^#' "$M/MANIFEST.tsv" | tail -n +2)
[ $n -gt 0 ] || fail "no matrix image was converted"
echo "$n matrix images converted correctly"
