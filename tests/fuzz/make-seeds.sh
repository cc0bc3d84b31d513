#!/bin/bash
# make-seeds.sh OUTDIR - seed corpora for the fuzz targets: small images of
# every format qemu-img writes, with data, zero ranges and (where the format
# has them) compressed clusters, backing references and snapshots; one folder
# per format (OUTDIR/qcow2/, OUTDIR/qed/, ...), named as the fuzz-open-FMT
# targets are.  Files stay small (tiny clusters, 1-4 MiB disks) because
# libFuzzer mutates whole inputs.
set -euo pipefail
out=$1
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "make-seeds: qemu-img/qemu-io needed (apt-get install qemu-utils)" >&2; exit 1; }
mkdir -p "$out"
cd "$out"
# A backing file outside the seed folders (images name it as ../base.raw).
qemu-img create -q -f raw base.raw 1048576
mk() {  # mk FMT NAME SIZE-IN-BYTES [create options...]: create, write a pattern
    local fmt=$1 name=$2 size=$3; shift 3
    mkdir -p "$fmt"
    qemu-img create -q -f "$fmt" "$@" "$fmt/$name" "$size"
    qemu-io -f "$fmt" -c "write -P 0x5a 0 4k" -c "write -P 0xa5 $((size / 2)) 8k" \
        -c "write -z 64k 4k" "$fmt/$name" >/dev/null 2>&1 || true
}
mk qcow2 c512.qcow2 1048576 -o cluster_size=512
mk qcow2 v2.qcow2 1048576 -o cluster_size=512,compat=0.10
mk qcow2 ext.qcow2 1048576 -o cluster_size=16384,extended_l2=on
mk qcow2 back.qcow2 1048576 -o cluster_size=512,backing_file=../base.raw,backing_fmt=raw
qemu-img snapshot -c snap1 qcow2/c512.qcow2
qemu-img convert -c -O qcow2 -o cluster_size=512 qcow2/v2.qcow2 qcow2/z.qcow2
mk qed c4k.qed 1048576 -o cluster_size=4096,table_size=2
mk qed back.qed 1048576 -o cluster_size=4096,table_size=2,backing_file=../base.raw,backing_fmt=raw
mk qcow a.qcow 1048576
qemu-img convert -c -O qcow qcow/a.qcow qcow/z.qcow 2>/dev/null || true
mk vdi dyn.vdi 1048576
mk vdi static.vdi 262144 -o static=on
mk vmdk sparse.vmdk 1048576
mk vmdk stream.vmdk 1048576 -o subformat=streamOptimized
mk vpc dyn.vhd 1048576
mk vpc fixed.vhd 262144 -o subformat=fixed
mk vhdx dyn.vhdx 1048576 -o block_size=1M
mk parallels a.hds 1048576 -o cluster_size=4096
mv vpc vhd
ls -l */ | awk 'NF > 5 { n++; s += $5 } END { printf "make-seeds: %d seeds, %d bytes\n", n, s }'
