#!/bin/bash
# bench/ovatool-convert.sh - `ovatool convert --target vmware` of two OVAs,
# one ovatool against another (A/B: e.g. before and after a change to how
# convert reads the archive).  Not a test.
#
#   OLD=/path/to/other/ovatool bench/ovatool-convert.sh [BUILD_DIR]
#
# Environment: OLD (required: the B side), RUNS=5 (pairs counted, after one
# warm-up pair), BENCH_DIR=/var/tmp/vdisk-bench-ova (shared with
# ovatool-import.sh, whose x.ova and x-disk1.vmdk it uses).
#
# Cases: x.ova (its streamOptimized disk passes through: copied into the
# output) and sp.ova (the same disk as a monolithicSparse VMDK: converted).
# Each pair runs A (this build's ovatool) and B (OLD) in turns, outputs
# removed before each run, page cache warm.  Printed per case: each side's
# median wall time, the medians of the per-pair ratios A/B of wall time and
# of CPU time (user + system; below 1: A faster), and the load average
# (quote ratios, not seconds, when loaded).
. "$(dirname "$0")/lib.sh"
B=${OLD:?set OLD to the ovatool to compare with}
bench_init "${1:-}"
A=$BUILD/tools/ovatool/ovatool
V=$BUILD/tools/vdconvert/vdconvert
[ -f x.ova ] && [ -f x-disk1.vmdk ] ||
    { echo "no x.ova in $D: run bench/ovatool-import.sh first (it makes it)" >&2; exit 1; }
if [ ! -f sp.ova ]; then
    # (named sp.vmdk: ovatool before 5597526 lost a converted disk whose
    # member had the output's name, x-disk1.vmdk)
    rm -rf spdir && mkdir spdir
    tar -C spdir -xf x.ova x.ovf
    "$V" -O vmdk x-disk1.vmdk spdir/sp.vmdk >/dev/null      # monolithicSparse
    sed -i "s|ovf:href=\"x-disk1.vmdk\"|ovf:href=\"sp.vmdk\"|; s|\(ovf:href=\"sp.vmdk\"[^>]*ovf:size=\"\)[0-9]*|\1$(stat -c %s spdir/sp.vmdk)|" \
        spdir/x.ovf
    (cd spdir && tar --format=ustar -cf ../sp.ova x.ovf sp.vmdk)
    rm -rf spdir
fi

# run OVATOOL OVA: "WALL CPU" seconds (CPU: user + system) of one convert
run() {
    rm -f c.ova
    /usr/bin/time -f "%e %U %S" -o t.txt "$1" convert --target vmware -o c.ova "$2" >/dev/null 2>&1 ||
        { echo "$1 convert $2 failed" >&2; exit 1; }
    awk '{print $1, $2 + $3}' t.txt
}

pairs() {  # pairs OVA LABEL
    local a b as=() bs=() rs=() cs=()
    run "$A" "$1" >/dev/null; run "$B" "$1" >/dev/null          # warm-up
    for ((i = 0; i < RUNS; i++)); do
        a=($(run "$A" "$1")); b=($(run "$B" "$1"))
        as+=("${a[0]}"); bs+=("${b[0]}")
        rs+=("$(ratio "${a[0]}" "${b[0]}")"); cs+=("$(ratio "${a[1]}" "${b[1]}")")
    done
    printf '%-30s A %6.2f s  B %6.2f s  wall A/B %5.2fx  CPU A/B %5.2fx  (load %s)\n' "$2" \
        "$(printf '%s\n' "${as[@]}" | median)" "$(printf '%s\n' "${bs[@]}" | median)" \
        "$(printf '%s\n' "${rs[@]}" | median)" "$(printf '%s\n' "${cs[@]}" | median)" \
        "$(cut -d' ' -f1-3 /proc/loadavg)"
}

echo "x.ova $(du -k x.ova | cut -f1) KiB, sp.ova $(du -k sp.ova | cut -f1) KiB; $RUNS pairs"
pairs x.ova "convert, disk passed through"
pairs sp.ova "convert, disk converted"
rm -f c.ova t.txt
