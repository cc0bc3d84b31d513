#!/bin/bash
# Hostile qcow2 images: hundreds of mutants of small, metadata-dense images
# (truncated at many points, header fields zeroed or set to all-ones,
# tables zero-filled, single and multiple bit flips across header, refcount
# table and blocks, L1/L2 tables, snapshot table).  For each: `vdconvert
# info`, a full conversion to raw, and a read-write session (writes, zeroes,
# check -r all) must end with exit status 0..3 and, on failure, a one-line
# message: never a signal, a hang (10 s) or an allocation over 1 GiB.
# Our check must also agree with qemu-img check on every mutant both open.
# Run under an ASan+UBSan build too (test.sh does), with fewer bit flips and
# without the agreement with qemu-img (a property of the check's logic, which
# the plain run proves; the check's code still runs under the sanitizers in
# every mutant's read-write session, which ends with check -r all), five
# mutants' commands in turn in each forked child (the plain run: one each).
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3 timeout
TOOL=${QCOW2_TOOL:-$VD_BUILD/tests/qcow2-write-tool}
N_FLIPS=${VD_QCOW2_FLIPS:-50}
cd "$T"

# Memory cap: ulimit -v would break ASan's shadow mapping; ASan gets its own
# allocation cap instead.
# (not `ldd | grep -q` under pipefail: grep exits at the first match and
# ldd, still writing, dies of SIGPIPE, which made the ASan build look plain
# now and then, its runs then capped by ulimit -v)
if [[ "$(ldd "$VDCONVERT" 2>/dev/null)" == *libasan* ]]; then
    export ASAN_OPTIONS=max_allocation_size_mb=1024:allocator_may_return_null=1:detect_leaks=1
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    memcap=unlimited
    N_FLIPS=${VD_QCOW2_FLIPS:-25}   # ASan runs are ~5x slower: fewer flips
    AGREE=0
    TMO=60   # a hang is a hang at any bound; ASan runs are slower
    # five mutants' commands in turn per child (mutant-runner -b): a child's
    # fixed cost under ASan (fork, exit, the leak scan) is most of a command's
    BATCH=15
else
    memcap=$((1024 * 1024))
    AGREE=1
    TMO=10
    BATCH=1
fi

# ---- small, metadata-dense originals ----------------------------------------
truncate -s 2M src.raw
"$TOOL" -f raw src.raw w:0:256K:1 w:700K:64K:2 w:1536K:100K:3
qemu-img convert -q -f raw -O qcow2 -o cluster_size=512 src.raw a.qcow2
qemu-io -f qcow2 -c "write -z 64K 32K" a.qcow2 >/dev/null
qemu-img snapshot -c snap1 a.qcow2
qemu-io -f qcow2 -c "write -P 0x33 0 16K" a.qcow2 >/dev/null
qemu-img convert -q -f raw -O qcow2 -c -o compat=0.10,cluster_size=4096 src.raw base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 -o cluster_size=4096 b.qcow2
qemu-io -f qcow2 -c "write -P 0x44 8K 4K" b.qcow2 >/dev/null
qemu-img convert -q -f raw -O qcow2 -c -o extended_l2=on,cluster_size=16K,compression_type=zstd,refcount_bits=1 src.raw c.qcow2
qemu-io -f qcow2 -c "write -z 32K 16K" -c "write -P 7 0 4K" c.qcow2 >/dev/null

python3 - "$N_FLIPS" <<'EOF'
import hashlib, os, random, struct, sys
nflips = int(sys.argv[1])
rnd = random.Random(1234)
os.makedirs('m', exist_ok=True)
count = 0
seen = set()
def emit(base, tag, data):
    # a mutant equal to its original or to an earlier one (a field zeroed
    # that was zero already) would only repeat a run: skipped
    global count
    h = hashlib.sha256(data).digest()
    if h in seen:
        return
    seen.add(h)
    open('m/%s-%s.qcow2' % (base, tag), 'wb').write(data)
    count += 1
def meta_ranges(d):
    """header cluster, L1, refcount table + blocks, L2 tables, snapshots"""
    cb = struct.unpack('>I', d[20:24])[0]; cs = 1 << cb
    l1n, l1o = struct.unpack('>IQ', d[36:48])
    rto, rtc = struct.unpack('>QI', d[48:60])
    nsn, sno = struct.unpack('>IQ', d[60:72])
    r = [(0, min(cs, 4096)), (l1o, l1n * 8), (rto, min(rtc * cs, 4096))]
    for i in range(min(rtc * cs // 8, 64)):
        rb = struct.unpack('>Q', d[rto + i * 8: rto + i * 8 + 8])[0] & ~0x1ff
        if rb and rb < len(d): r.append((rb, min(cs, 4096)))
    for i in range(l1n):
        l2 = struct.unpack('>Q', d[l1o + i * 8: l1o + i * 8 + 8])[0] & 0x00fffffffffffe00
        if l2 and l2 < len(d): r.append((l2, min(cs, 4096)))
    if nsn: r.append((sno, 200))
    return [(o, n) for o, n in r if n > 0 and o < len(d)]
fields = [(4, 4), (8, 8), (16, 4), (20, 4), (24, 8), (32, 4), (36, 4), (40, 8), (48, 8),
          (56, 4), (60, 4), (64, 8), (72, 8), (80, 8), (88, 8), (96, 4), (100, 4), (104, 1)]
for base in ('a', 'b', 'c'):
    d = open(base + '.qcow2', 'rb').read()
    seen.add(hashlib.sha256(d).digest())
    ranges = meta_ranges(d)
    cuts = sorted(set([0, 1, 4, 50, 71, 72, 103, 104, 112, 511, 512, 4095, 4096] +
                      [o for o, n in ranges] + [o + n // 2 for o, n in ranges] +
                      [rnd.randrange(len(d)) for _ in range(10)]))
    for c in cuts:
        if c < len(d): emit(base, 'trunc%d' % c, d[:c])
    for off, n in fields:
        emit(base, 'zero%d' % off, d[:off] + bytes(n) + d[off + n:])
        emit(base, 'ones%d' % off, d[:off] + b'\xff' * n + d[off + n:])
    for i, (o, n) in enumerate(ranges[:12]):
        emit(base, 'zfill%d' % i, d[:o] + bytes(n) + d[o + n:])
    for k in range(nflips):
        b = bytearray(d)
        for _ in range(1 if k % 3 else 4):
            o, n = rnd.choice(ranges)
            p = o + rnd.randrange(n)
            b[p] ^= 1 << rnd.randrange(8)
        emit(base, 'flip%d' % k, bytes(b))
print(count, 'mutants')
EOF
# b's mutants need their backing file next to them
cp base.qcow2 m/

fails=0
# Every command runs in a process of its own, forked by mutant-runner
# (tests/mutant-runner.c) from vdconvert's or qcow2-write-tool's main(): the
# same code from main() on as an exec of the tool, without an exec each.
# judge NAME STATUS OUTBYTES ERRBYTES ERRFILE CMD: exit status must be 0..3
# (124: the time ran out), a failure needs a message, and no sanitizer may
# speak.  (Shell builtins only: this runs a thousand times.)
judge() {
    local name=$1 rc=$2 nout=$3 nerr=$4 err=$5 lines=()
    shift 5
    [ "$rc" = 0 ] && [ "$nerr" = 0 ] && return
    mapfile -t lines <"$err"
    if [ "$rc" -gt 3 ]; then
        echo "FAIL: $name: $* exited $rc: ${lines[*]:0:3}" >&2
        fails=$((fails + 1))
    elif [ "$rc" -ne 0 ] && [ ${#lines[@]} = 0 ] && [ "$nout" = 0 ]; then
        echo "FAIL: $name: $* failed ($rc) without a message" >&2
        fails=$((fails + 1))
    elif [[ "${lines[*]}" == *"runtime error"* || "${lines[*]}" == *AddressSanitizer* ]]; then
        echo "FAIL: $name: sanitizer: ${lines[*]:0:3}" >&2
        fails=$((fails + 1))
    fi
}
mutants=(m/[abc]-*.qcow2)
# Our check must classify a mutant as qemu-img check does (clean, leaks
# only, corruptions) whenever both can open it; both run before any
# read-write session changes the mutant.
if [ $AGREE = 1 ]; then
    declare -A qrc
    for f in "${mutants[@]}"; do
        q=0
        timeout 10 qemu-img check -q "$f" >/dev/null 2>&1 || q=$?
        qrc[$f]=$q
    done
    mkdir -p agree
    for f in "${mutants[@]}"; do printf 'qcow2-write-tool\t%s\tcheck\n' "$f"; done |
        "$MUTANT_RUNNER" -t 10 agree >agree.st
    while read -r i orc nout nerr; do
        f=${mutants[$i]} o=
        q=${qrc[$f]}
        [ "$nout" = 0 ] || IFS= read -r o <"agree/$i.out" || true
        case "$q/$orc" in
        0/0) continue ;;
        3/2) [[ $o == *"corruptions=0 leaks="[1-9]* ]] && continue ;;
        2/2) [[ $o == *"corruptions="[1-9]* ]] && continue ;;
        1/* | 63/* | */1) continue ;;   # one side cannot open it at all
        esac
        echo "FAIL: ${f#m/}: qemu-img check exit $q, ours exit $orc: $o" >&2
        fails=$((fails + 1))
    done <agree.st
    [ "$(wc -l <agree.st)" = ${#mutants[@]} ] || fail "mutant-runner checked $(wc -l <agree.st) mutants"
fi
# Per mutant, in this order: info, a full conversion to raw, and the
# read-write session.
mkdir -p runs
for f in "${mutants[@]}"; do
    printf 'vdconvert\tinfo\t%s\n' "$f"
    printf 'vdconvert\t-O\traw\t%s\tout.raw\n' "$f"
    printf 'qcow2-write-tool\t%s\tw:0:4K:1\tz:8K:8K\tc:16K:16K:2\td:32K:16K\tcheck:all\tf\n' "$f"
done >jobs
mv_cap=()
[ "$memcap" = unlimited ] || mv_cap=(-v "$memcap")
"$MUTANT_RUNNER" -t $TMO -b $BATCH "${mv_cap[@]}" -r out.raw runs <jobs >runs.st
mapfile -t cmds <jobs
n=0
while read -r i rc nout nerr; do
    cmd=${cmds[$i]//$'\t'/ }
    judge "${mutants[$((i / 3))]#m/}" "$rc" "$nout" "$nerr" "runs/$i.err" "$cmd"
    n=$((n + 1))
done <runs.st
[ "$n" = $((3 * ${#mutants[@]})) ] || fail "mutant-runner ran $n of $((3 * ${#mutants[@]})) commands"
n=${#mutants[@]}
rm -f out.raw
echo "$n mutants tried"
[ "$n" -gt 250 ] || fail "too few mutants ($n)"
[ $BATCH = 1 ] || [ "$fails" = 0 ] ||
    echo "(each child ran $((BATCH / 3)) mutants in turn: a leak is reported in its last command)" >&2
[ "$fails" = 0 ] || fail "$fails hostile-input runs misbehaved"
echo "all hostile qcow2 mutants handled"
