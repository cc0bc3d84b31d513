#!/bin/bash
# Concurrency: 8 threads read one handle while a 9th writes (tests/threaded-io.c),
# for every writable format; under TSan in test.sh's thread-sanitizer run.
# A counted amount of work, the same in every build: 8 x 1500 reads, each
# overlapping the writer, and at least 1000 written blocks per format (the
# slow suite's threaded-io-long: 8 x 30000 reads, 20000 writes).
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io
TIO=$VD_BUILD/tests/threaded-io
WRITES=${VD_THREAD_WRITES:-1000}
READS=${VD_THREAD_READS:-1500}
qemu-img create -q -f raw "$T/ref.raw" 8M
qemu-io -f raw -c "write -P 0x31 0 2M" -c "write -P 0x32 3M 1M" -c "write -P 0x33 5M 2M" "$T/ref.raw" >/dev/null
# A fixed list: a format that cannot be written fails the test.
for fmt in raw qcow2 qed vdi vhd vhdx vmdk parallels; do
    out=$T/img.$fmt
    make_variant "$T/ref.raw" "$fmt" "$out"
    "$TIO" "$out" "$T/ref.raw" 8 "$WRITES" "$READS" || fail "$fmt: concurrent I/O"
    echo "ok: $fmt"
done
