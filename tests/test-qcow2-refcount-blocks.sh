#!/bin/bash
# qcow2 allocations that need new refcount blocks.
# 1. The largest allocation a public path makes: one vd_pwrite over
#    unallocated clusters takes one run for the whole write (formats/qcow2
#    qcow2_pwrite_locked gathers every cluster that needs a new one), here
#    24 MiB of 512-byte clusters with 64-bit refcounts: 49152 clusters at
#    once, 768 new refcount blocks and a growing refcount table on the way.
#    qemu-img check must find nothing, qemu-img compare the written bytes.
# 2. A kill at any point of such writes leaves leaks at most: the library's
#    write log (VDISK_TEST_WRITE_LOG, test build) of a short crash-writer
#    run is replayed in order up to every record (what a SIGKILL there
#    leaves) and each prefix is checked.  Before the fix a new refcount
#    block was named by the refcount table while its own refcount was still
#    0 on disk ("ERROR cluster N refcount=0 reference=1"): a later
#    allocation could take that cluster again and overwrite the block.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img python3
TOOL=$VD_BUILD/tests/qcow2-write-tool
W=$VD_BUILD/tests/crash-writer

for v in 512:64:24M 4096:16:32M; do
    IFS=: read -r cs rb len <<<"$v"
    qemu-img create -q -f qcow2 -o cluster_size="$cs",refcount_bits="$rb" "$T/big.qcow2" 48M
    truncate -s 48M "$T/big.raw"
    "$TOOL" -m "$T/big.raw" "$T/big.qcow2" "w:$cs:$len:1" f >/dev/null ||
        fail "cluster $cs, refcount bits $rb: the $len write failed"
    qemu-img check "$T/big.qcow2" >"$T/check" 2>&1 ||
        fail "cluster $cs, refcount bits $rb: $(grep -v '^$' "$T/check" | head -3 | tr '\n' ' ')"
    qemu-img compare -q -f raw -F qcow2 "$T/big.raw" "$T/big.qcow2" ||
        fail "cluster $cs, refcount bits $rb: the image does not read back the $len write"
    rm -f "$T/big.qcow2" "$T/big.raw"
done

# 512-byte clusters, 16-bit refcounts: a refcount block per 128 KiB, so the
# writer's 64 KiB writes at seeded offsets cross into new blocks often.
img=$T/k.qcow2
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=16 "$img" 4M
cp "$img" "$T/base"
VDISK_TEST_WRITE_LOG=$T/wlog VD_CRASH_WRITES=8 "$W" write "$img" 7 "$T/flushed" 4 \
    2>"$T/werr" || fail "crash-writer failed: $(cat "$T/werr")"
[ -s "$T/wlog" ] || fail "the write log is empty: not the test build of libvdisk?"
# Every prefix of the log's changes to the image: cut-N.qcow2 holds the base
# plus the first N changes, in order.
python3 - "$T/wlog" "$img" "$T/base" "$T/cut" <<'PY' >"$T/ncuts"
import shutil, struct, sys
log, image, base, out = sys.argv[1:5]
data = open(log, 'rb').read()
pos, changes = 0, []
while pos + 28 <= len(data):
    _, op, plen, off, ln = struct.unpack_from('<4sIIQQ', data, pos)
    pos += 28
    name = data[pos:pos + plen].decode()
    pos += plen
    payload = data[pos:pos + ln] if op == 1 else b''
    pos += len(payload)
    if name == image and op in (1, 2, 3):
        changes.append((op, off, ln, payload))
shutil.copyfile(base, out)
with open(out, 'r+b') as f:
    for n, (op, off, ln, payload) in enumerate(changes, 1):
        if op == 3:
            f.truncate(off)
        else:
            f.seek(off)
            f.write(payload if op == 1 else b'\0' * ln)
        f.flush()
        shutil.copyfile(out, '%s-%d.qcow2' % (out, n))
print(len(changes))
PY
n=$(cat "$T/ncuts")
[ "$n" -gt 20 ] || fail "only $n changes in the write log"
for i in $(seq 1 "$n"); do
    rc=0
    qemu-img check "$T/cut-$i.qcow2" >"$T/check" 2>&1 || rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 3 ] ||    # 3: leaks only
        fail "killed after change $i of $n: $(grep -v -e '^$' -e '^Leaked' "$T/check" | head -2 | tr '\n' ' ')"
    rm -f "$T/cut-$i.qcow2"
done
echo "largest runs clean; $n kill points leave leaks at most"
