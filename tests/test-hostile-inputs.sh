#!/bin/bash
# Hostile inputs for every format: small qemu-img images of each format are
# truncated, zero-filled and bit-flipped (deterministic seed); `vdconvert info`
# and a full conversion of every mutant must end with exit 0 or 1 and, on
# failure, exactly one line of error naming the file -- never a crash, a
# sanitizer report, a hang or a multi-GiB allocation.  Outside the sanitizer
# build each run is limited to 1 GiB of address space and 2 s of CPU (the
# limits OpenStack puts on qemu-img info after CVE-2015-5162).
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3

SAN=0
# (no `ldd | grep -q` under pipefail: grep exits early and ldd dies of SIGPIPE)
case "$(ldd "$VDCONVERT")" in *libasan*) SAN=1 ;; esac
# mutants per source image (13 sources, 2 commands each); fewer under the
# sanitizers, where every run costs ~10x
N=${VD_HOSTILE_MUTANTS:-$([ $SAN = 1 ] && echo 24 || echo 48)}

mk() {  # mk FMT FILE [create options]
    local fmt=$1 f=$2; shift 2
    qemu-img create -q -f "$fmt" "$@" "$f" 8M
    qemu-io -f "$fmt" -c "write -P 0x5a 0 64k" -c "write -P 0xa5 3M 128k" \
        -c "write -z 1M 64k" "$f" >/dev/null
}
mk qcow2 "$T/s.qcow2" -o cluster_size=4096
mk qcow2 "$T/s-v2.qcow2" -o compat=0.10
qemu-img convert -c -O qcow2 "$T/s.qcow2" "$T/s-z.qcow2"
mk qed "$T/s.qed"
mk qcow "$T/s.qcow"
mk vdi "$T/s.vdi"
mk vpc "$T/s.vhd"
mk vhdx "$T/s.vhdx"
mk parallels "$T/s.hdd"
mk vmdk "$T/s.vmdk"
qemu-img convert -O vmdk -o subformat=streamOptimized "$T/s.vmdk" "$T/s-stream.vmdk"

# Every source must be recognised as its format (a fixed list: one that
# probed as raw would only test the raw driver).
for s in "$T"/s*; do
    case $s in *.qcow2) want=qcow2 ;; *.qcow) want=qcow ;; *.hdd) want=parallels ;;
                *) want=${s##*.} ;; esac
    expect_format "$s" "$want"
done
python3 - "$T" "$N" <<'PY'
import hashlib, os, random, sys, glob
T, N = sys.argv[1], int(sys.argv[2])
rnd = random.Random(1)
os.makedirs(f"{T}/m", exist_ok=True)
# A mutant equal to its source or to an earlier mutant (zeroes written over
# zeroes: about one in six) would only repeat a run: not written.
seen = set()
for src in sorted(glob.glob(f"{T}/s*")):
    data = open(src, "rb").read()
    base = os.path.basename(src)
    seen.add(hashlib.sha256(data).digest())
    for i in range(N):
        d = bytearray(data)
        kind = i % 4
        if kind == 0:     # truncate somewhere in the metadata-rich start or anywhere
            cut = rnd.randrange(0, min(len(d), 1 << 17)) if i % 8 == 0 else rnd.randrange(0, len(d))
            d = d[:cut]
        elif kind == 1:   # zero a run inside the first 64 KiB
            o = rnd.randrange(0, min(len(d), 65536)); n = rnd.choice([1, 4, 8, 64, 512])
            d[o:o + n] = bytes(len(d[o:o + n]))
        elif kind == 2:   # flip bits in the first 4 KiB (headers)
            for _ in range(rnd.randrange(1, 4)):
                o = rnd.randrange(0, min(len(d), 4096)); d[o] ^= 1 << rnd.randrange(8)
        else:             # write 0xff.. into a 4/8-byte field somewhere in the first 1 MiB
            o = rnd.randrange(0, min(len(d), 1 << 20)) & ~3
            d[o:o + 8] = b"\xff" * len(d[o:o + 8])
            if rnd.random() < 0.5: d[o:o + 4] = b"\x7f\xff\xff\xf0"
        h = hashlib.sha256(d).digest()
        if h not in seen:
            seen.add(h)
            open(f"{T}/m/{base}.{i:03d}", "wb").write(d)
PY

bad=0 ran=0 refused=0
# Each command runs in a process of its own, forked by mutant-runner
# (tests/mutant-runner.c) from vdconvert's main(): the same code from main()
# on as an exec of vdconvert, without an exec per mutant.  Outside the
# sanitizers each run has 1 GiB of address space, 2 s of CPU and 10 s, in
# a child of its own.
mutants=("$T"/m/*)
for m in "${mutants[@]}"; do
    printf 'vdconvert\tinfo\t%s\n' "$m"
    printf 'vdconvert\t%s\t%s\n' "$m" "$T/out.raw"
done >"$T/jobs"
mkdir "$T/runs"
if [ $SAN = 1 ]; then
    # five mutants' commands in turn per child: a child's fixed cost under
    # ASan (fork, exit, the leak scan) is most of a command's; a leak is
    # reported in the last command of its child
    "$MUTANT_RUNNER" -t 30 -b 10 -r "$T/out.raw" "$T/runs" <"$T/jobs" >"$T/runs.st"
else
    "$MUTANT_RUNNER" -t 10 -v 1048576 -c 2 -r "$T/out.raw" "$T/runs" <"$T/jobs" >"$T/runs.st"
fi
rm -f "$T/out.raw"
mapfile -t cmds <"$T/jobs"
while read -r i rc nout nerr; do
    m=${mutants[$((i / 2))]} cmd=${cmds[$i]//$'\t'/ }
    ran=$((ran + 1))
    if [ $rc -gt 1 ]; then
        echo "BAD: $cmd -> exit $rc"; head -5 "$T/runs/$i.err"; bad=$((bad + 1)); continue
    fi
    if [ $rc = 1 ]; then
        refused=$((refused + 1))
        # (shell builtins: this runs for a thousand mutants)
        mapfile -t lines <"$T/runs/$i.err"
        if [ ${#lines[@]} != 1 ] || [[ ${lines[0]} != *"${m##*/}"* ]]; then
            echo "BAD: $cmd -> error not one line naming the file:"; head -5 "$T/runs/$i.err"
            bad=$((bad + 1))
        fi
    fi
done <"$T/runs.st"
[ $ran = ${#cmds[@]} ] || fail "mutant-runner ran $ran of ${#cmds[@]} commands"
echo "$ran runs, $refused refused with an error, $bad bad"
[ $bad = 0 ] || fail "$bad runs crashed, hung or misreported"
# the refused count shows the mutants were not all harmless
[ $refused -gt 0 ] || fail "no mutant was refused: the harness is not testing anything"
