#!/bin/bash
# vdconvert's command line: errors (one line, exit 1, no output left), usage
# errors (one line and the synopsis, exit 2),
# the temp+rename behaviour (a failed conversion leaves nothing and keeps an
# existing OUT intact), -o help, --help of every sub-command, progress output
# (plain lines in a pipe, a bar with ETA on a terminal), compare and check
# exit codes, info --json/--backing-chain, measure against qemu-img.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io nbdkit script
V=$VDCONVERT
MiB=1048576
cd "$T"

head -c $((4 * MiB)) /dev/urandom >in.raw
truncate -s $((32 * MiB)) in.raw

only_dotfiles_free() {  # no temporary file may remain in the folder
    if ls -A "$T" | matches 'vdconvert'; then fail "temporary files left: $(ls -A "$T" | grep vdconvert)"; fi
}
one_line_error() {  # CMD...: must fail with exit 1 and exactly one stderr line
    local rc=0
    "$V" "$@" >/dev/null 2>err || rc=$?
    [ $rc -eq 1 ] || fail "vdconvert $*: exit $rc, expected 1"
    [ "$(wc -l <err)" -eq 1 ] || fail "vdconvert $*: error is not one line: $(cat err)"
    grep -q '^vdconvert: ' err || fail "vdconvert $*: error lacks the program name: $(cat err)"
}
usage_error() {  # CMD...: must fail with exit 2, one error line, then the synopsis
    local rc=0
    "$V" "$@" >/dev/null 2>err || rc=$?
    [ $rc -eq 2 ] || fail "vdconvert $*: exit $rc, expected 2"
    head -1 err | matches '^vdconvert' || fail "vdconvert $*: error lacks the program name: $(cat err)"
    sed -n 2p err | matches '^usage: vdconvert' || fail "vdconvert $*: no synopsis: $(cat err)"
}

# --- wrong options: one line, exit 1, no output --------------------------------
usage_error -Z in.raw out.raw
one_line_error -O nosuchformat in.raw out.img
one_line_error -m 0 in.raw out.raw
one_line_error -S 7 in.raw out.raw
one_line_error -t bogus in.raw out.raw
usage_error in.raw
one_line_error missing.raw out.raw
one_line_error -o nosuchkey=1 -O vdi -f raw in.raw out.vdi
one_line_error --target-is-zero in.raw out.raw
usage_error info
usage_error info --bogus in.raw
one_line_error create -O raw c.raw
one_line_error create -O raw c.raw 12Q
usage_error resize in.raw
one_line_error map --start-offset x in.raw
usage_error rebase in.raw
one_line_error snapshot -c s1 -f raw in.raw
[ ! -e out.raw ] && [ ! -e out.img ] && [ ! -e out.vdi ] || fail "an output file was left behind"
only_dotfiles_free

# --- a failed conversion leaves nothing, and an existing OUT is untouched -----
echo "precious" >keep.raw
# The file-size limit makes writes fail half-way (EFBIG, SIGXFSZ ignored).
rc=0
( trap '' XFSZ; ulimit -f 1024; exec "$V" -m 2 in.raw keep.raw ) 2>err || rc=$?
[ $rc -eq 1 ] || fail "conversion over the size limit: exit $rc ($(cat err))"
[ "$(cat keep.raw)" = precious ] || fail "failed conversion damaged the existing output"
only_dotfiles_free
rc=0
( trap '' XFSZ; ulimit -f 1024; exec "$V" -O vdi in.raw new.vdi ) 2>err || rc=$?
[ $rc -eq 1 ] && [ ! -e new.vdi ] || fail "failed vdi conversion left new.vdi (exit $rc)"
only_dotfiles_free
# Interrupted by a signal: nothing is left either.
head -c $((256 * MiB)) /dev/zero | tr '\0' 'x' >big.raw
# Every signal that ends the process (INT restored: a background job starts
# with it ignored, and an ignored signal stays ignored).
for sig in INT TERM HUP PIPE; do
    for fmt in raw vmdk; do      # vmdk: made in a temporary folder
        opts=(); [ $fmt = vmdk ] && opts=(-o subformat=twoGbMaxExtentFlat)
        env --default-signal=INT "$V" -f raw -S 0 -m 1 --no-copy-range -O $fmt "${opts[@]}" \
            big.raw sig.$fmt & pid=$!
        # the signal comes once the temporary output exists (vdconvert sets
        # its handlers before it makes it): mid-conversion however slow the
        # start, not before the handlers (a fixed sleep raced with that)
        until compgen -G ".sig.$fmt.vdconvert-*" >/dev/null || compgen -G ".vdconvert-*" >/dev/null; do
            kill -0 $pid 2>/dev/null || break
            sleep 0.01
        done
        kill -$sig $pid; rc=0; wait $pid || rc=$?
        # finished before the signal (rc 0): complete; killed: nothing left
        [ $rc -eq 0 ] || [ ! -e sig.$fmt ] || fail "interrupted output left ($sig, exit $rc)"
        rm -f sig.$fmt sig-*.vmdk
        only_dotfiles_free
    done
done
# SIGXFSZ (ulimit -f, not ignored): killed, but the temporary output is gone.
rc=0
( ulimit -f 1024; exec "$V" -f raw -O vdi in.raw xfsz.vdi ) 2>/dev/null || rc=$?
[ $rc -eq $((128 + 25)) ] && [ ! -e xfsz.vdi ] || fail "SIGXFSZ: exit $rc"
only_dotfiles_free
# Errors name OUT, not the temporary name it is written under.
rc=0
( trap '' XFSZ; ulimit -f 1024; exec "$V" -f raw -O qcow2 in.raw named.qcow2 ) 2>err || rc=$?
grep -q '^vdconvert: named.qcow2: pwrite' err && ! grep -q 'vdconvert-' err ||
    fail "the error does not name the user's file: $(cat err)"
only_dotfiles_free
rm -f big.raw sig.raw
# Successful conversion replaces the old file in one rename.
"$V" in.raw keep.raw
cmp in.raw keep.raw || fail "conversion over an existing file differs"

# --- an NBD export as the output is written in place (-n implied) ----------------
"$V" --help | matches ' nbd' || fail "vdconvert built without NBD support (libnbd-dev)"
{
    nbdkit -U "$T/nbd.sock" -P "$T/nbd.pid" memory $((32 * MiB))
    # (nbdkit binds before it returns; its pid file follows from the child)
    until [ -S "$T/nbd.sock" ] && [ -s "$T/nbd.pid" ]; do sleep 0.05; done
    rc=0; "$V" -p in.raw "nbd+unix:///?socket=$T/nbd.sock" 2>/dev/null || rc=$?
    qemu-img compare -f raw in.raw "nbd+unix:///?socket=$T/nbd.sock" >/dev/null || rc=9
    kill "$(cat "$T/nbd.pid")"
    [ $rc -eq 0 ] || fail "conversion into an NBD export: $rc"
}

# --- -o help, --help -----------------------------------------------------------
"$V" -O raw -o help in.raw x.raw | matches preallocation || fail "-o help lists no raw option"
[ ! -e x.raw ] || fail "-o help created an output"
"$V" create -O vdi -o help | matches static || fail "create -o help lists no vdi option"
for c in convert info map check compare create resize measure snapshot commit rebase; do
    "$V" $c --help | matches "usage: vdconvert" || fail "$c --help"
done
"$V" --help | matches "rebase" || fail "--help lists no sub-commands"

# --- progress -------------------------------------------------------------------
"$V" -p -m 1 -f raw in.raw p.raw 2>prog
# one line per 10 %, naming the files as typed
grep -q '^in.raw -> p.raw: 100%$' prog || fail "no final progress line: $(cat prog)"
[ "$(wc -l <prog)" -le 11 ] || fail "more than a line per 10 %: $(tr '\n' ' ' <prog)"
prev=-1
while read -r line; do
    n=${line#in.raw -> p.raw: }; n=${n%\%}
    [ "$n" -gt "$prev" ] && [ $((n / 10)) -gt $((prev < 0 ? -1 : prev / 10)) ] ||
        fail "progress not increasing by 10 %: $(tr '\n' ' ' <prog)"
    prev=$n
done <prog
rm -f p.raw
"$V" -q -p -f raw in.raw p.raw 2>prog
[ ! -s prog ] || fail "-q still printed progress"
{
    rm -f p.raw
    script -qec "$V -p in.raw $T/p.raw" /dev/null >tty.out
    grep -q $'\r' tty.out && grep -q 'took' tty.out && grep -q '100.0%' tty.out &&
        grep -q "in.raw -> $T/p.raw \[" tty.out ||
        fail "no progress bar on a terminal: $(cat -v tty.out)"
}

# --- compare exit codes ------------------------------------------------------------
cp in.raw same.raw
"$V" compare in.raw same.raw | matches "Images are identical" || fail "compare identical"
cp in.raw diff.raw
# in.raw is random there: flip the byte's bits so it differs whatever it was
old=$(od -An -tu1 -j $((3 * MiB + 700)) -N1 in.raw)
printf "\\$(printf %03o $((old ^ 255)))" | dd of=diff.raw bs=1 seek=$((3 * MiB + 700)) conv=notrunc status=none
rc=0; "$V" compare in.raw diff.raw >out || rc=$?
[ $rc -eq 1 ] || fail "compare of different images: exit $rc"
grep -q "Content mismatch at offset $((3 * MiB + 512))!" out || fail "compare offset: $(cat out)"
qemu-img compare -f raw -F raw in.raw diff.raw >qout || true
grep -q "offset $((3 * MiB + 512))!" qout || fail "qemu-img reports another offset: $(cat qout)"
rc=0; "$V" compare in.raw nothere.raw 2>/dev/null || rc=$?
[ $rc -eq 2 ] || fail "compare with a missing image: exit $rc"
cp in.raw longer.raw; truncate -s $((40 * MiB)) longer.raw
"$V" compare in.raw longer.raw | matches identical || fail "zero tail should compare identical"
rc=0; "$V" compare -s in.raw longer.raw >/dev/null || rc=$?
[ $rc -eq 1 ] || fail "strict compare with size mismatch: exit $rc"
printf 'Y' | dd of=longer.raw bs=1 seek=$((36 * MiB)) conv=notrunc status=none
rc=0; "$V" compare in.raw longer.raw >/dev/null || rc=$?
[ $rc -eq 1 ] || fail "data past the shorter image not noticed"

# --- check exit codes ---------------------------------------------------------------
rc=0; "$V" check in.raw 2>/dev/null || rc=$?
[ $rc -eq 63 ] || fail "check on raw: exit $rc, expected 63 (no check)"
qemu-img create -q -f qed q.qed 16M
qemu-io -c "write -P 7 0 1M" q.qed >/dev/null
"$V" check q.qed | matches "No errors" || fail "check of a clean qed"
"$V" check --json q.qed | matches '"corruptions": 0' || fail "check --json"
# An L2 entry pointing past the end of the file is a corruption (exit 2).
l1=$(od -An -t u8 -j 40 -N 8 q.qed | tr -d ' ')
l2=$(od -An -t u8 -j "$l1" -N 8 q.qed | tr -d ' ')
printf '\x00\x00\x00\x40\x00\x00\x00\x00' | dd of=q.qed bs=1 seek=$((l2 + 8)) conv=notrunc status=none
rc=0; "$V" check q.qed >out 2>&1 || rc=$?
[ $rc -eq 2 ] || fail "check of a corrupt qed: exit $rc: $(cat out)"
qemu-img check q.qed >/dev/null 2>&1 && fail "qemu-img finds the corrupted qed clean"

# A qcow2 with one leaked cluster (refcount 1, no reference): exit 3, and
# -r leaks repairs it (exit 0, qemu-img agrees).
if "$V" create -q -O qcow2 probe.qcow2 1M >/dev/null 2>&1; then
    qemu-img create -q -f qcow2 l.qcow2 16M
    qemu-io -c "write -P 1 0 128k" l.qcow2 >/dev/null
    python3 - l.qcow2 <<'EOF'
import os, struct, sys
p = sys.argv[1]
with open(p, "r+b") as f:
    rt = struct.unpack(">Q", f.read(104)[48:56])[0]          # refcount table offset
    f.seek(rt)
    rb = struct.unpack(">Q", f.read(8))[0]                    # first refcount block
    size = os.path.getsize(p)
    f.seek(rb + 2 * (size // 65536))                          # the cluster past the end
    f.write(struct.pack(">H", 1))
    f.truncate(size + 65536)
EOF
    rc=0; qemu-img check l.qcow2 >/dev/null 2>&1 || rc=$?
    [ $rc -eq 3 ] || fail "the leak recipe did not make qemu-img see a leak ($rc)"
    rc=0; "$V" check l.qcow2 >out || rc=$?
    [ $rc -eq 3 ] && grep -q "1 leaked clusters were found" out || fail "check of a leaky qcow2: exit $rc: $(cat out)"
    "$V" check --json l.qcow2 >out || true
    grep -q '"leaks": 1' out || fail "check --json leaks: $(cat out)"
    rc=0; "$V" check -r leaks l.qcow2 >out || rc=$?
    [ $rc -eq 0 ] && grep -q "No errors" out || fail "check -r leaks: exit $rc: $(cat out)"
    qemu-img check l.qcow2 >/dev/null || fail "qemu-img still finds problems after -r leaks"
fi

# --- info -------------------------------------------------------------------------------
qemu-img create -q -f qed base.qed 32M
qemu-img create -q -f qed -b base.qed -F qed top.qed
"$V" info top.qed | matches "backing file: base.qed" || fail "info shows no backing file"
"$V" info --json --backing-chain top.qed >chain.json
python3 - chain.json <<'EOF' || fail "info --backing-chain --json"
import json, sys
c = json.load(open(sys.argv[1]))
assert [i["filename"].split("/")[-1] for i in c] == ["top.qed", "base.qed"], c
assert c[0]["backing-filename"] == "base.qed" and c[0]["virtual-size"] == 32 << 20
EOF
"$V" info --json in.raw | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["format"]=="raw"' ||
    fail "info --json is not JSON"

# qcow2 format details in --json: qemu-img's keys and typed values
qemu-img create -q -f qcow2 q2.qcow2 8M
if "$V" info q2.qcow2 | matches "file format: qcow2"; then
    "$V" info --json q2.qcow2 >mine.json
    qemu-img info --output=json q2.qcow2 >theirs.json
    python3 - mine.json theirs.json <<'EOF' || fail "qcow2 format details differ from qemu-img's"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for k in ("virtual-size", "cluster-size", "format", "dirty-flag"):
    assert a[k] == b[k], (k, a[k], b[k])
for k, v in b["format-specific"]["data"].items():
    assert a["format-specific"]["data"].get(k) == v, (k, v, a["format-specific"]["data"])
EOF
fi

# --- measure against qemu-img --------------------------------------------------------
for args in "--size 1G" "--size 10G -o cluster_size=4k" "in.raw"; do
    a=$("$V" measure -O qcow2 $args --output=json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["required"], d["fully-allocated"])')
    b=$(qemu-img measure -O qcow2 $args --output=json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["required"], d["fully-allocated"])')
    [ "$a" = "$b" ] || fail "measure $args: vdconvert '$a', qemu-img '$b'"
done
echo "cli tests passed"
