#!/bin/bash
# QED reads: every QED image ../shared/corpus/make-matrix builds and every QED
# sample in ../shared/corpus/samples (when present), plus images built here
# with qemu-img/qemu-io -- cluster sizes 4K..2M, a size that is not a cluster
# multiple, zero clusters hiding backing data, a backing file smaller than
# the image, a three-level chain, a raw backing that carries the QED magic
# (the "no probe" feature bit must keep it raw) and an image left with
# NEED_CHECK set -- each must convert to exactly what qemu-img reads.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3

same_as_qemu() {  # IMG [FMT]: vdconvert's raw output == qemu-img's
    local img=$1 want
    want=$(raw_sha "$img" "${2:-}")
    rm -f "$T/out.raw"
    "$VDCONVERT" "$img" "$T/out.raw" || fail "$(basename "$img"): vdconvert failed"
    [ "$(file_sha "$T/out.raw")" = "$want" ] ||
        fail "$(basename "$img"): content differs from qemu-img"
    rm -f "$T/out.raw"
    echo "ok: $(basename "$img")"
}
# (one qemu-io for all of an image's commands: it runs them in turn)
wr() { local f=$1 c a=(); shift; for c in "$@"; do a+=(-c "$c"); done; qemu-io -f qed "${a[@]}" "$f" >/dev/null; }

# --- built here --------------------------------------------------------------
for spec in "4096 2" "65536 16" "2097152 8"; do
    set -- $spec
    f=$T/c$1.qed
    qemu-img create -q -f qed -o cluster_size=$1,table_size=$2 "$f" $((10 * 1048576 + 512))
    wr "$f" "write -P 0x11 0 4k" "write -P 0x22 1000000 300k" "write -P 0x33 9M 1M" \
        "write -P 0x44 $((10 * 1048576)) 512" "write -z 5M 64k"
    same_as_qemu "$f"
done

# Zero clusters and a backing file smaller than the image.
qemu-img create -q -f raw "$T/small.raw" 1M
qemu-io -f raw -c "write -P 0x5a 0 1M" "$T/small.raw" >/dev/null
qemu-img create -q -f qed -b small.raw -F raw "$T/top.qed" 3M
wr "$T/top.qed" "write -z 64k 128k" "write -P 0x66 900k 200k" "write -P 0x77 2M 4k"
same_as_qemu "$T/top.qed"
"$VDCONVERT" "$T/top.qed" "$T/z.raw"
cmp -n 65536 <(head -c 65536 /dev/zero) <(tail -c +65537 "$T/z.raw") ||
    fail "zero cluster did not hide the backing data"
rm -f "$T/z.raw"

# Three levels: qed -> qed -> raw.
qemu-img create -q -f qed -b top.qed -F qed "$T/top2.qed"
wr "$T/top2.qed" "write -P 0x88 128k 64k" "write -z 950k 10k"
same_as_qemu "$T/top2.qed"

# A raw backing file that starts with the QED magic is still raw.
python3 -c "import sys; sys.stdout.buffer.write(b'QED\0' + b'\x10\0\0\0' * 3 + b'\x99' * 65520)" > "$T/magic.raw"
qemu-img create -q -f qed -b magic.raw -F raw "$T/m.qed" 64k
same_as_qemu "$T/m.qed"

# NEED_CHECK set (a crash mid-write): read-only use reads the same content.
cp "$T/c65536.qed" "$T/nc.qed"
printf '\x02' | dd of="$T/nc.qed" bs=1 seek=16 conv=notrunc status=none
same_as_qemu "$T/nc.qed"

# --- the shared matrix and samples -----------------------------------------
matrix_and_samples qed 4
exit 0
