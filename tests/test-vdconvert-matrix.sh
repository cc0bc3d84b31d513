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
files=() fmts=()
while IFS=$'\t' read -r file fmt _opts vsize _sha _rest; do
    [ "$vsize" -le $((64 << 20)) ] 2>/dev/null || continue
    files+=("$file") fmts+=("$(vd_name "$fmt")")
done < <(grep -v '^#' "$M/MANIFEST.tsv" | tail -n +2)
[ ${#files[@]} -gt 0 ] || fail "no matrix image was found"
# Every image's `vdconvert info` in one run_many (a fork each, not an exec:
# under ASan a start cost more than the info's work); what expect_format
# does, the format line compared with the manifest's.
for file in "${files[@]}"; do
    printf 'vdconvert\tinfo\t%s\n' "$M/$file"
done | run_many "$T/info" >"$T/info.st"
[ "$(wc -l <"$T/info.st")" = ${#files[@]} ] ||
    fail "mutant-runner ran $(wc -l <"$T/info.st") of ${#files[@]} info commands"
n=0
for i in "${!files[@]}"; do
    file=${files[$i]}
    got=$(sed -n 's/^file format: //p' "$T/info/$i.out")
    [ "$got" = "${fmts[$i]}" ] ||
        fail "$(basename "$file"): vdisk reads it as '${got:-nothing}', not ${fmts[$i]} ($(head -1 "$T/info/$i.err"))"
    if [ $(((i + 1) % 3)) -eq 0 ]; then
        img=$M/$file
        rm -f "$T/o.qcow2"
        "$V" -m 2 -O qcow2 "$img" "$T/o.qcow2" 2>"$T/err" || fail "$file -> qcow2: $(cat "$T/err")"
        # (from the image's folder: qemu opens a data_file by a name relative to it)
        (cd "$(dirname "$img")" && judge_copy "$(basename "$img")" "$T/o.qcow2" "$file -> qcow2")
        n=$((n + 1))
    fi
done
echo "${#files[@]} matrix images recognised, $n converted to qcow2 correctly"
