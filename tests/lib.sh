# tests/lib.sh - sourced by every shell test.
#   requires_cmd CMD...   skip (exit 77) when a command is missing
#   requires_shared       skip when ../shared/corpus is absent
#   T                     a fresh temp dir, removed at exit
#   matrix_dir            prints the dir of ../shared/corpus/make-matrix output
#                         (built once per build dir, under a lock)
#   matrix_read IMG SHA QEMU  vdconvert reads a matrix image to the manifest's sha
#   matrix_and_samples FMT MIN  vdconvert reads every FMT image of the matrix
#                         (at least MIN) and of ../shared's samples as their
#                         manifests say (skips by name without ../shared)
#   run_capped CMD...     CMD with 1 GiB of memory and 10 s (60 s under ASan)
#   hostile_cases FMT MIN each case of $T/cases (NAME WANT: $T/h/NAME.FMT) is
#                         refused as FMT by info or a conversion (at least MIN)
#   write_mutants [--cases] GOOD EXT NAME CODE... < DEFS  $T/NAME.EXT: GOOD
#                         changed by python CODE (below)
#   CRC32C_PY, py_crc32c ARGS... < CODE  python's crc32c() and crc32c_fix()
#                         (VHDX checksums), for write_mutants and CODE (below)
#   convert_mutants [-f FMT] [--info] EXT REF NAME|WANT...  each $T/NAME.EXT
#                         refused in one line with WANT, or (no WANT) read as REF
#   run_many DIR [RMFILE] < JOBS  vdconvert commands with run_capped's limits,
#                         each in a process forked by mutant-runner (below)
#   peer_in_place ERR CMD... IMG  a peer's in-place change of IMG (stderr in
#                         ERR, its status returned), kept and reused (below)
#   fail MSG              print and exit 1
#   matches [OPT] PATTERN grep's verdict on all of stdin, nothing printed:
#                         `cmd | matches PAT`, never `cmd | grep -q PAT`
#   file_sha FILE         sha256 of FILE (openssl's: SHA instructions)
#   raw_sha IMG [FMT]     sha256 of the guest content as qemu-img reads it
#   qemu_name FMT         qemu's name for a vdisk format (vhd -> vpc)
#   mem_dir VAR           VAR = a scratch dir in memory when there is room
#   vd_name FMT           vdisk's name for a qemu format name (vpc -> vhd)
#   expect_format IMG FMT   fail unless vdisk reads IMG as FMT
#   make_variant SRC VARIANT OUT  SRC's content in VARIANT (fmt[:options])
#   judge_copy REF IMG WHAT       qemu-img compare with REF, and check
#   pattern_raw OUT SIZE  a raw file with seeded random data at fixed places
#   readback_sha IMG      sha256 of IMG's guest content as vdisk reads it
#   padded_sha RAW SIZE   sha256 of RAW zero-padded to SIZE
#   vhdi_read IMG [PARENT]  "sha256 size" of the guest content libvhdi reads
#   vhdi_judge IMG RAW WHAT vhdiinfo, libvhdi and vdisk all read RAW from IMG
#   without_last_sector SRC OUT  a copy of SRC with its last sector zeroed
#   per_format FUNC FMT...  run crash or power-loss trials of all formats
#                         at once and check each format's promise (below)
#   judge_image FMT IMG OUT VERIFY...  what an image needs after a crash
#   verify_server DIR     one `crash-writer serve` for this shell's judges:
#                         served_verify ARGS is `crash-writer verify ARGS`
#                         through it, judge_image's checks use it too;
#                         verify_server_end stops it (below)
#   kill_at TRACE N       strace's option that kills at the N-th traced call
#   cut_points TRACE      kill points around a trace's last ftruncates
set -euo pipefail
export LC_ALL=C
: "${VD_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${VD_BUILD:=$VD_SRC/build}"
: "${VDCONVERT:=$VD_BUILD/tools/vdconvert/vdconvert}"
# Runs many short vdconvert/qcow2-write-tool commands, a fork each, no exec
# (tests/mutant-runner.c): the hostile-input tests' thousand mutants.
: "${MUTANT_RUNNER:=$VD_BUILD/tests/mutant-runner}"
SHARED=$(cd "$VD_SRC/.." && pwd)/shared

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
requires_cmd() { for c in "$@"; do command -v "$c" >/dev/null || skip "$c not installed"; done; }
# `cmd | grep -q PAT` under pipefail fails at random: grep -q exits at its
# first match, and a write by cmd after that kills it with SIGPIPE (ldd,
# qemu-io, --help texts, anything over a pipe buffer or flushed per line),
# and the pipeline's status is then 141: a check that should pass fails, and
# one under `!` or `... && fail` passes when it should fail.
# grep without -q reads to the end of its input, so cmd always finishes.
matches() { grep "$@" >/dev/null; }
requires_shared() { [ -d "$SHARED/corpus" ] || skip "../shared/corpus not present"; }
# OVA: the ovatool under test (meson's OVATOOL, else the build's)
requires_ovatool() {
    OVA=${OVATOOL:-$VD_BUILD/tools/ovatool/ovatool}
    [ -x "$OVA" ] || skip "ovatool not built"
}

T=$(mktemp -d "${TMPDIR:-/tmp}/vdtest.XXXXXX")
trap 'rm -rf "$T"' EXIT

# python3 started as the interpreter itself.  The python3 on PATH may be a
# script (a Python version manager's shim, which works out the configured
# version and execs it) whose start costs several times the interpreter's:
# up to 1.5 s and 0.45 CPU-s a call on a busy machine, against 0.1 s, and
# the tests start python3 hundreds of times.  When it is such a script, the
# first call (from the test or any subshell) asks it once which interpreter
# it runs and keeps an exec of that in $T/.bin, first on PATH for the test
# and all it starts, so that every later call (scripts' `#!/usr/bin/env
# python3` too) runs the same interpreter without the shim.  A binary
# python3 (a distribution's) is left alone.
VD_PY_SHIM=
if VD_PY_SHIM=$(command -v python3) && LC_ALL=C read -r -N 2 VD_PY_HEAD <"$VD_PY_SHIM" 2>/dev/null &&
        [ "$VD_PY_HEAD" = '#!' ]; then
    mkdir "$T/.bin"
    PATH=$T/.bin:$PATH
    python3() {
        if [ ! -e "$T/.bin/python3" ]; then
            local real
            real=$("$VD_PY_SHIM" -c 'import sys; print(sys.executable)' 2>/dev/null) &&
                [ -x "$real" ] || real=$VD_PY_SHIM
            printf '#!/bin/sh\nexec %s "$@"\n' "'${real//\'/\'\\\'\'}'" >"$T/.bin/python3.$BASHPID"
            chmod +x "$T/.bin/python3.$BASHPID"
            mv -f "$T/.bin/python3.$BASHPID" "$T/.bin/python3"
        fi
        "$T/.bin/python3" "$@"
    }
fi

matrix_dir() {
    requires_shared
    requires_cmd qemu-img qemu-io python3
    local d="${VD_MATRIX_DIR:-$VD_BUILD/tests/matrix}"
    mkdir -p "$VD_BUILD/tests" "$(dirname "$d")"
    (
        flock 9
        if [ ! -f "$d/MANIFEST.tsv" ]; then
            rm -rf "$d"
            "$SHARED/corpus/make-matrix" "$d" 1 >"$d.log" 2>&1 ||
                { echo "make-matrix failed, see $d.log" >&2; exit 1; }
        fi
    ) 9>"$d.lock" || exit 1
    echo "$d"
}

# file_sha FILE: FILE's sha256, in hex.  openssl's, which uses the CPU's SHA
# instructions: 64 MiB take 0.11 s of CPU here, coreutils' sha256sum 0.32 s,
# and the read tests hash gigabytes of output.
file_sha() {
    local h
    h=$(openssl dgst -sha256 -r "$1") || fail "openssl cannot hash $1"
    echo "${h%% *}"
}

# matrix_read IMG SHA QEMU: vdconvert reads the make-matrix image IMG to
# content of sha256 SHA, the manifest's (of all virtual_size bytes, so the
# size is checked too).  QEMU is the row's qemu column: make-matrix compared
# qemu-img's reading of the image with that content when it built the
# matrix (content=ok, or it failed), so the sha is qemu's view as well and
# asking qemu-img again would repeat that work.
matrix_read() {
    local img=$1 sha=$2
    [[ $3 == content=ok* ]] || fail "$img: make-matrix did not find qemu's content right ($3)"
    rm -f "$T/out.raw"
    "$VDCONVERT" "$img" "$T/out.raw" || fail "$img: vdconvert failed"
    [ "$(file_sha "$T/out.raw")" = "$sha" ] || fail "$img: content differs"
    rm -f "$T/out.raw"
}

matrix_and_samples() {  # FMT MIN
    local fmt=$1 min=$2 n=0 img f _opts _size sha _layers qemu _rest file _notes M S
    if [ ! -d "$SHARED/corpus" ]; then
        # reported as skipped by name: the matrix and sample cases cannot run
        skip "../shared/corpus absent: matrix and samples not checked (the images built here passed)"
    fi
    M=$(matrix_dir)
    while IFS=$'\t' read -r img f _opts _size sha _layers qemu _rest; do
        [ "$f" = "$fmt" ] || continue
        matrix_read "$M/$img" "$sha" "$qemu"
        echo "ok: matrix $img"; n=$((n + 1))
    done < <(grep -v '^#' "$M/MANIFEST.tsv")
    [ $n -ge "$min" ] || fail "only $n $fmt images in the matrix"
    S=$SHARED/corpus/samples
    while IFS=$'\t' read -r file f _size sha _notes; do
        [ "$f" = "$fmt" ] || continue
        case $file in
            *.bz2) bzip2 -dc "$S/$file" > "$T/s.$fmt" ;;
            *.gz) gzip -dc "$S/$file" > "$T/s.$fmt" ;;
            *.xz) xz -dc "$S/$file" > "$T/s.$fmt" ;;
            *) cp "$S/$file" "$T/s.$fmt" ;;
        esac
        rm -f "$T/out.raw"
        "$VDCONVERT" "$T/s.$fmt" "$T/out.raw" || fail "$file: vdconvert failed"
        [ "$(file_sha "$T/out.raw")" = "$sha" ] || fail "$file: content differs"
        echo "ok: sample $file"
    done < <(tail -n +2 "$S/EXPECTED.tsv")
}

# run_capped: the hostile-input tests' limits, so that a huge allocation or
# a loop fails the case instead of passing unnoticed.  Memory: ulimit -v
# under plain builds; ASan reserves terabytes of shadow address space, so
# there its allocator gets the cap instead (an allocation over 1 GiB returns
# NULL, which the code reports as an error), and the time is longer.
run_capped() {
    if [ -z "${VD_SAN:-}" ]; then
        VD_SAN=0
        case "$(ldd "$VDCONVERT" 2>/dev/null)" in *libasan*) VD_SAN=1 ;; esac
    fi
    if [ "$VD_SAN" = 1 ]; then
        ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}max_allocation_size_mb=1024:allocator_may_return_null=1 \
            timeout 60 "$@"
    else
        (ulimit -v 1048576; exec timeout 10 "$@")
    fi
}

# run_many DIR [RMFILE] < JOBS: many short commands with run_capped's limits
# without an exec each.  JOBS has one command a line, its words separated by
# tabs, the first "vdconvert" (tests/mutant-runner.c); each runs from
# vdconvert's main() in a process of its own forked by mutant-runner, its
# stdout in DIR/N.out and stderr in DIR/N.err (N counts lines from 0), and
# RMFILE (an output) is removed before each.  Prints "N STATUS OUTBYTES
# ERRBYTES" a command, STATUS 124 when the time ran out, 128+SIG for a
# signal.  Under ASan, where a process's start and exit (the leak scan) cost
# more than a refused image's work, ten commands run in turn in one child:
# each still starts from main() with its own output files and time limit,
# and a leak is reported in the last command of its child.
run_many() {
    local dir=$1 rm=()
    [ -z "${2:-}" ] || rm=(-r "$2")
    mkdir -p "$dir"
    if [ -z "${VD_SAN:-}" ]; then
        VD_SAN=0
        case "$(ldd "$VDCONVERT" 2>/dev/null)" in *libasan*) VD_SAN=1 ;; esac
    fi
    if [ "$VD_SAN" = 1 ]; then
        ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}max_allocation_size_mb=1024:allocator_may_return_null=1 \
            "$MUTANT_RUNNER" -t 60 -b 10 "${rm[@]}" "$dir"
    else
        "$MUTANT_RUNNER" -t 10 -v 1048576 "${rm[@]}" "$dir"
    fi
}

# CRC32C_PY: python defining crc32c(data), the CRC-32C (Castagnoli,
# reflected 0x82f63b78) that VHDX checksums its headers, region tables and
# log entries with, and crc32c_fix(b, off, n, co=4): the checksum of the n
# bytes of bytearray b at off stored at off + co, computed with those 4
# bytes zero.  write_mutants defines both for its DEFS and CODEs;
# py_crc32c ARGS... < CODE runs the python CODE with them, sys.argv[1:] ARGS.
CRC32C_PY='
import struct
CRC32C_T = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82f63b78 if c & 1 else c >> 1
    CRC32C_T.append(c)
def crc32c(data):
    c = 0xffffffff
    for x in data:
        c = CRC32C_T[(c ^ x) & 0xff] ^ (c >> 8)
    return c ^ 0xffffffff
def crc32c_fix(b, off, n, co=4):
    b[off + co:off + co + 4] = bytes(4)
    b[off + co:off + co + 4] = struct.pack("<I", crc32c(b[off:off + n]))
'
py_crc32c() {
    python3 -c "$CRC32C_PY"'
import sys
exec(sys.stdin.read())' "$@"
}

# write_mutants [--cases] GOOD EXT NAME CODE... < DEFS: for each NAME CODE
# pair (--cases: each argument a case NAME|WANT|CODE), $T/NAME.EXT is a
# fresh copy of GOOD as the bytearray b, changed by the python statements
# CODE (struct imported, CRC32C_PY's functions defined).  DEFS (stdin,
# python; none: </dev/null) defines the helpers the CODEs call, e.g. a
# checksum fix; they change the global b.  All mutants are written in one
# python run.
write_mutants() {
    local cases=0
    [ "$1" != --cases ] || { cases=1; shift; }
    python3 -c "$CRC32C_PY"'
import struct, sys
good = open(sys.argv[1], "rb").read()
exec(sys.stdin.read())
args = sys.argv[5:]
if sys.argv[4] == "1":
    args = [x for c in args for x in c.split("|", 2)[::2]]
for k in range(0, len(args), 2):
    b = bytearray(good)
    exec(args[k + 1])
    open("%s/%s.%s" % (sys.argv[2], args[k], sys.argv[3]), "wb").write(b)
' "$1" "$T" "$2" $cases "${@:3}"
}

# convert_mutants [-f FMT] [--info] EXT REF NAME|WANT[|...]...: each
# $T/NAME.EXT converted to $T/NAME.raw (-f: read as FMT; --info: its `info`
# too, judged alike) through run_many.  A case with WANT must fail with exit
# 1 and one line of output containing WANT; one without (NAME|) must convert
# and read as REF (a damage the format's redundancy covers).
convert_mutants() {
    local fmt=() cmds=(convert) c cmd name pat i rc nout nerr msg n=0
    while [ "${1:0:1}" = - ]; do
        case $1 in
        -f) fmt=(-f "$2"); shift ;;
        --info) cmds=(info convert) ;;
        esac
        shift
    done
    local ext=$1 ref=$2 k=${#cmds[@]}
    shift 2
    local cases=("$@")
    for c in "${cases[@]}"; do
        c=$T/${c%%|*}
        for cmd in "${cmds[@]}"; do
            if [ $cmd = info ]; then set -- info "${fmt[@]}" "$c.$ext"
            else set -- "${fmt[@]}" "$c.$ext" "$c.raw"; fi
            (IFS=$'\t'; echo "vdconvert${IFS}$*")
        done
    done >"$T/jobs"
    run_many "$T/runs" <"$T/jobs" >"$T/runs.st"
    while read -r i rc nout nerr; do
        IFS='|' read -r name pat _ <<<"${cases[$((i / k))]}"
        cmd=${cmds[$((i % k))]}
        msg=$(cat "$T/runs/$i.out" "$T/runs/$i.err")
        n=$((n + 1))
        if [ -z "$pat" ]; then
            [ $rc = 0 ] || fail "$name ($cmd): does not open: $msg"
            [ $cmd = info ] && continue
            cmp -s "$T/$name.raw" "$ref" || fail "$name: content differs"
            echo "ok: $name reads correctly"
            continue
        fi
        [ $rc = 1 ] || fail "$name ($cmd): exit status $rc (want 1): $msg"
        [ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] || fail "$name ($cmd): not one line: $msg"
        grep -q -- "$pat" <<<"$msg" || fail "$name ($cmd): '$msg' does not name '$pat'"
        [ $cmd = info ] || echo "ok: $name: $msg"
    done <"$T/runs.st"
    [ $n = $((k * ${#cases[@]})) ] || fail "mutant-runner ran $n of $((k * ${#cases[@]})) commands"
}

# hostile_cases FMT MIN: each crafted image $T/h/NAME.FMT listed in $T/cases
# as "NAME WANT" must be refused, by `info -f FMT` or else by a conversion,
# with exit 1 and one line of error naming FMT and containing WANT.  The
# info of every case, then the conversions of those info opened, go through
# run_many (a fork each, not an exec).
hostile_cases() {
    local fmt=$1 min=$2 n=0 name want i j rc nout nerr names opened=()
    local -A res
    mapfile -t names < <(cut -d' ' -f1 "$T/cases")
    for name in "${names[@]}"; do
        printf 'vdconvert\tinfo\t-f\t%s\t%s\n' "$fmt" "$T/h/$name.$fmt"
    done >"$T/jobs"
    run_many "$T/info" <"$T/jobs" >"$T/info.st"
    [ "$(wc -l <"$T/info.st")" = ${#names[@]} ] ||
        fail "mutant-runner ran $(wc -l <"$T/info.st") of ${#names[@]} commands"
    while read -r i rc nout nerr; do
        if [ "$rc" = 0 ]; then opened+=("$i"); else res[$i]=$rc:$T/info/$i.err; fi
    done <"$T/info.st"
    for i in "${opened[@]}"; do
        printf 'vdconvert\t-f\t%s\t%s\t%s\n' "$fmt" "$T/h/${names[$i]}.$fmt" "$T/o.raw"
    done >"$T/jobs"
    run_many "$T/conv" "$T/o.raw" <"$T/jobs" >"$T/conv.st"
    [ "$(wc -l <"$T/conv.st")" = ${#opened[@]} ] ||
        fail "mutant-runner ran $(wc -l <"$T/conv.st") of ${#opened[@]} conversions"
    while read -r j rc nout nerr; do res[${opened[$j]}]=$rc:$T/conv/$j.err; done <"$T/conv.st"
    rm -f "$T/o.raw"
    while read -r name want; do
        rc=${res[$n]%%:*}
        cp "${res[$n]#*:}" "$T/err"
        [ $rc = 1 ] || { cat "$T/err"; fail "$name: exit $rc, expected 1"; }
        [ "$(wc -l < "$T/err")" = 1 ] || { cat "$T/err"; fail "$name: not one line of error"; }
        grep -q "$fmt: " "$T/err" || { cat "$T/err"; fail "$name: message does not name $fmt"; }
        grep -qi -- "$want" "$T/err" || { cat "$T/err"; fail "$name: message lacks '$want'"; }
        echo "ok: $name: $(cat "$T/err")"
        n=$((n + 1))
    done < "$T/cases"
    [ $n -ge "$min" ] || fail "only $n cases ran"
}

# peer_in_place ERR CMD... IMG: runs CMD... IMG (a peer such as
# `qemu-img amend -o ...` that changes IMG in place), its stderr in ERR, and
# returns its status.  What it did (IMG after, ERR, status) is kept under
# $VD_PEER_CACHE, keyed by the content of IMG and of its backing files
# (as qemu-img names them), CMD's words and the peer's version; a later run with the same key (test.sh's ASan run after its
# plain run) takes the kept result instead of running the peer again.  The
# peer's result is its own deterministic work, not vdisk's code: the ASan
# run still runs and judges every vdisk command against it.
peer_in_place() {
    local err=$1 img=${*: -1} d key rc=0
    shift
    d=${VD_PEER_CACHE:-$VD_BUILD/tests/peer-cache}
    mkdir -p "$d"
    # the key: the peer's version, the command, and the content of IMG and
    # of every file of its backing chain
    key=$( { "$1" --version | sed -n 1p; printf '%s\n' "$@"
             (cd "$(dirname "$img")" && qemu-img info --backing-chain --output=json -U \
                 "$(basename "$img")" 2>/dev/null | sed -n 's/^ *"filename": "\(.*\)",$/\1/p' |
                 sort -u | xargs -r -d '\n' sha256sum)
             sha256sum <"$img"; } | sha256sum | cut -c1-32)
    if [ -f "$d/$key.rc" ]; then
        cp "$d/$key.img" "$img"; cp "$d/$key.err" "$err"
        return "$(cat "$d/$key.rc")"
    fi
    "$@" 2>"$err" || rc=$?
    # whole entries only: the status file, written last, marks one complete
    cp "$img" "$d/$key.img.$$" && mv "$d/$key.img.$$" "$d/$key.img"
    cp "$err" "$d/$key.err.$$" && mv "$d/$key.err.$$" "$d/$key.err"
    echo $rc >"$d/$key.rc.$$" && mv "$d/$key.rc.$$" "$d/$key.rc"
    return $rc
}

raw_sha() {
    local img=$1 fmt=${2:-}
    if [ -n "$fmt" ]; then
        qemu-img convert -f "$fmt" -O raw "$img" "$T/.sha.raw"
    else
        qemu-img convert -O raw "$img" "$T/.sha.raw"
    fi
    file_sha "$T/.sha.raw"
    rm -f "$T/.sha.raw"
}

qemu_name() { case $1 in vhd) echo vpc ;; *) echo "$1" ;; esac; }

# --- per-format runs -------------------------------------------------------
# What the tests that loop over formats share.  Their lists of formats stay
# fixed in each test: a format that stops working fails the test, it is
# never skipped.

vd_name() { case $1 in vpc) echo vhd ;; *) echo "$1" ;; esac; }

# expect_format IMG FMT: `vdconvert info` reads IMG as FMT (qemu's names
# are accepted): a file that probed as another format, e.g. raw, would only
# test that driver.
expect_format() {
    local want got
    want=$(vd_name "$2")
    got=$("$VDCONVERT" info "$1" 2>/dev/null | sed -n 's/^file format: //p')
    [ "$got" = "$want" ] || fail "$(basename "$1"): vdisk reads it as '${got:-nothing}', not $want"
}

# make_variant SRC VARIANT OUT: OUT is a new image with SRC's guest content
# in VARIANT, "fmt" or "fmt:key=val,..." (vdconvert -o): a copy for raw,
# else `vdconvert convert`.  Fails the test, with vdconvert's message, when
# the variant cannot be written.
make_variant() {
    local src=$1 v=$2 out=$3 fmt=${2%%:*} opts=
    [ "$v" = "$fmt" ] || opts=${v#*:}
    rm -f "$out"
    if [ "$fmt" = raw ]; then
        cp "$src" "$out"
        return
    fi
    "$VDCONVERT" convert -q -O "$fmt" ${opts:+-o "$opts"} "$src" "$out" 2>"$T/.variant.err" ||
        fail "$v: vdconvert cannot write it: $(cat "$T/.variant.err")"
}

# judge_copy REF IMG WHAT: IMG shows REF's guest content (qemu-img compare,
# both probed) and qemu-img check finds nothing in it (for the formats
# qemu checks; exit 63, "not supported", counts as nothing).
judge_copy() {
    local ref=$1 img=$2 what=$3 rc=0
    qemu-img compare -q "$ref" "$img" || fail "$what: content differs from $(basename "$ref")"
    qemu-img check -q "$img" >"$T/.check.out" 2>&1 || rc=$?
    [ $rc = 0 ] || [ $rc = 63 ] || fail "$what: qemu-img check: $(cat "$T/.check.out")"
}

# pattern_raw OUT SIZE: a sparse raw file of SIZE bytes holding random
# bytes (seed 7, so the same every run) at 0+4K, 1M+512 (70000 bytes, not
# sector-sized), 3M+2M, and its last sector.
pattern_raw() {
    python3 - "$1" "$2" <<'PY'
import sys, random
p, size = sys.argv[1], int(sys.argv[2])
r = random.Random(7)
with open(p, 'wb') as f:
    f.truncate(size)
    for off, n in ((0, 4096), (1048576 + 512, 70000), (3 * 1048576, 2 * 1048576),
                   (size - 512, 512)):
        f.seek(off); f.write(bytes(r.getrandbits(8) for _ in range(n)))
PY
}

# readback_sha IMG: sha256 of IMG's guest content as vdisk reads it.
readback_sha() {
    rm -f "$T/.back.raw"
    "$VDCONVERT" "$1" "$T/.back.raw" || fail "$(basename "$1"): vdisk cannot read it back"
    file_sha "$T/.back.raw"
    rm -f "$T/.back.raw"
}

padded_sha() {
    cp "$1" "$T/.pad.raw"
    truncate -s "$2" "$T/.pad.raw"
    file_sha "$T/.pad.raw"
    rm -f "$T/.pad.raw"
}

# vhdi_read IMG [PARENT]: "sha256 size" of the guest content libvhdi
# (pyvhdi, from Debian's python3-libvhdi) reads, for VHD and VHDX.
vhdi_read() {
    /usr/bin/python3 - "$@" <<'PY'
import hashlib, sys, pyvhdi
f = pyvhdi.file(); f.open(sys.argv[1])
if len(sys.argv) > 2:
    p = pyvhdi.file(); p.open(sys.argv[2]); f.set_parent(p)
h = hashlib.sha256(); off = 0; size = f.media_size
while off < size:
    n = min(1 << 20, size - off)
    h.update(f.read_buffer_at_offset(n, off)); off += n
print(h.hexdigest(), size)
PY
}

# vhdi_judge IMG RAW WHAT: vhdiinfo opens IMG, and libvhdi and vdisk both
# read RAW's content from it (zero-padded to the size libvhdi reports, which
# is left in VHDI_SIZE).
vhdi_judge() {
    local sha
    vhdiinfo "$1" >"$T/.vhdiinfo.txt" || fail "$3: vhdiinfo refuses it"
    read -r sha VHDI_SIZE < <(vhdi_read "$1")
    [ "$sha" = "$(padded_sha "$2" "$VHDI_SIZE")" ] || fail "$3: libvhdi reads other content"
    [ "$(readback_sha "$1")" = "$sha" ] || fail "$3: our read-back differs"
}

# without_last_sector SRC OUT: a copy of SRC whose last sector is zero (so
# a format's last block can stay a hole).
without_last_sector() {
    cp "$1" "$2"
    dd if=/dev/zero of="$2" bs=512 seek=$(($(stat -c %s "$1") / 512 - 1)) count=1 conv=notrunc \
        status=none
}

# mem_dir VAR: sets VAR to a fresh folder under /dev/shm when it has 2 GiB
# free (else under $T), removed at exit.  For tests that rewrite many images
# (crash and power-loss trials): what they test is the library's order of
# writes and syncs, not the disk's write-back, and tmpfs keeps them fast on
# a busy disk.
mem_dir() {
    local d
    if [ "$(df -Pk /dev/shm 2>/dev/null | awk 'NR==2 {print $4}')" -ge 2097152 ] 2>/dev/null; then
        d=$(mktemp -d /dev/shm/vdtest.XXXXXX)
        trap 'rm -rf "$T" "'"$d"'"' EXIT
    else
        d=$(mktemp -d "$T/mem.XXXXXX")
    fi
    printf -v "$1" '%s' "$d"
}

# --- crash and power-loss trials -----------------------------------------
# test-crash-consistency.sh (SIGKILL) and test-power-loss.sh (a cut of the
# library's write log) share this.  What docs/flush.md promises after either,
# per format, besides "every write before the last completed flush reads
# back" (all formats):
#   clean   the checks find nothing but leaked clusters, with no repair; a
#           VHDX log left pending is replayed by a read-write open (qemu's,
#           as any VM's), which is the format's own recovery, not a repair
#   repair  the checks may find more, which `vdconvert check -r all` repairs
#           (counted and reported as "repaired")
#   data    nothing to check (raw)
declare -A TRIAL_PROMISE=([raw]=data [qcow2]=clean [qed]=clean [vhdx]=clean
                          [vdi]=repair [vhd]=clean [vmdk]=clean [parallels]=repair)
# (VD_TRIAL_FORMATS narrows the list when one format is being debugged.)
read -r -a TRIAL_FORMATS <<<"${VD_TRIAL_FORMATS:-raw qcow2 qed vhdx vdi vhd vmdk parallels}"

# image_checks FMT IMG OUT: 0 when every check finds nothing but leaks
# (exit 0, or 3 = leaks only): vdisk's (`vdconvert check`'s, through the
# verify server: served_check), and `qemu-img check` where
# qemu checks the format (exit 63: it does not) and opens this variant (it
# cannot open VDI differencing images).  Their output is appended to OUT.
image_checks() {
    local fmt=$1 img=$2 out=$3 rc=0
    [ "$fmt" = raw ] && return 0
    served_check "$img" >>"$out" 2>&1 || rc=$?
    [ $rc = 0 ] || [ $rc = 3 ] || return 1
    [ -z "${NO_QEMU_CHECK:-}" ] || return 0
    rc=0
    qemu-img check -f "$(qemu_name "$fmt")" "$img" >"$out.q" 2>&1 || rc=$?
    cat "$out.q" >>"$out"
    if [ $rc = 1 ] && grep -q "Could not open.*\(unsupported\|not supported\)" "$out.q"; then
        rc=0
    fi
    [ $rc = 0 ] || [ $rc = 3 ] || [ $rc = 63 ]
}

# judge_image FMT IMG OUT VERIFY...: after a kill or a cut.  VERIFY (a
# command) checks that the flushed writes read back.  Prints one word:
#   clean     verified, and the checks find nothing but leaks
#   replayed  the same after a read-write open replayed a pending VHDX log
#   repaired  the same only after `vdconvert check -r all`
#   lost      flushed writes do not read back (even after a repair)
#   corrupt   the checks fail even after the repair
# OUT gets what the verifier and the checks said.
judge_image() {
    local fmt=$1 img=$2 out=$3 state=clean NO_QEMU_CHECK=
    shift 3
    : >"$out"
    if ! "$@" >>"$out" 2>&1; then
        # an image that does not open may be repairable; lost data is not
        grep -q "reopen" "$out" || { echo lost; return; }
        "$VDCONVERT" check -r all "$img" >>"$out" 2>&1 || true
        "$@" >>"$out" 2>&1 || { echo lost; return; }
        state=repaired
    fi
    if [ "$fmt" = vhdx ] && ! qemu-img info -f vhdx "$img" >>"$out" 2>&1 &&
        grep -q "log that needs to be replayed" "$out"; then
        if ! qemu-io -f vhdx -c flush "$img" >>"$out" 2>&1; then
            # qemu opens no differencing VHDX ("Operation not supported"):
            # vdisk's own check replays the log (in memory) and judges alone
            grep -q "Operation not supported" "$out" || { echo corrupt; return; }
            NO_QEMU_CHECK=1
        fi
        [ $state = repaired ] || state=replayed
    fi
    # (A header naming a log with no entry yet is no pending log, for vdisk
    # as for qemu: nothing else here excuses a finding of vdisk's check.)
    image_checks "$fmt" "$img" "$out" && { echo $state; return; }
    "$VDCONVERT" check -r all "$img" >>"$out" 2>&1 || true
    if image_checks "$fmt" "$img" "$out" && "$@" >>"$out" 2>&1; then echo repaired; else echo corrupt; fi
}

# verify_server DIR: starts `crash-writer serve` (tests/crash-writer.c),
# its requests and answers through FIFOs in DIR.  served_verify IMG SEED
# DONE EVERY [BASE] then does what `crash-writer verify` does (its messages
# on stderr, its status returned) without a process of its own, and
# served_check IMG what `vdconvert check IMG` does (the same library calls,
# its exit status): the trials judge hundreds of images a run, and under
# ASan a start and a leak scan cost more than a verify's or a check's work.
# verify_server_end closes its input and returns its exit status (a leak,
# under ASan, fails it).  One per shell; judge_image needs it.
verify_server() {
    mkfifo "$1/vq" "$1/va"
    exec {VD_VQ}<>"$1/vq"
    # (the server must not hold the write end of its own input: EOF ends it)
    "$VD_BUILD/tests/crash-writer" serve <"$1/vq" >"$1/va" {VD_VQ}>&- &
    VD_VPID=$!
    exec {VD_VA}<"$1/va"
}
served_verify() { serve_request verify "$@"; }
served_check() { serve_request check "$@"; }
serve_request() {
    local IFS=$'\t' line
    printf '%s\n' "$*" >&"$VD_VQ"
    while IFS= read -r line <&"$VD_VA"; do
        case $line in
            "end "*) return "${line#end }" ;;
        esac
        printf '%s\n' "$line" >&2
    done
    echo "crash-writer serve gave no answer: it ended" >&2
    return 2
}
verify_server_end() {
    exec {VD_VQ}>&- {VD_VA}<&-
    wait "$VD_VPID"
}

# trial_failed STATE PROMISE: whether a trial's state breaks the promise:
# lost data, a corrupt image, an error of the writer, or a repair where the
# promise is clean.
trial_failed() {
    case $1 in
        clean|replayed) return 1 ;;
        repaired) [ "$2" = clean ] ;;
        *) return 0 ;;
    esac
}

# per_format FUNC FMT...: runs `FUNC FMT` for all formats at once (a trial
# mostly waits, for its kill or on I/O, so the cores stay busy).  FUNC
# prints its report and one word per trial (judge_image's) into
# $T/FMT.states; the reports are printed in order with a table of the
# states, and per_format fails when a format did not finish or a trial
# broke its format's promise (TRIAL_PROMISE).
per_format() {
    local func=$1 fmt bad=0 n
    shift
    for fmt in "$@"; do
        ( "$func" "$fmt" && touch "$T/$fmt.finished" ) >"$T/$fmt.out" 2>&1 &
    done
    wait
    for fmt in "$@"; do
        sed "s/^/$fmt: /" "$T/$fmt.out"
        [ -f "$T/$fmt.finished" ] || { echo "$fmt: did not finish"; bad=$((bad + 1)); }
    done
    printf '%-10s %-7s %6s %6s %9s %9s %5s %8s %6s\n' format promise trials clean replayed \
        repaired lost corrupt error >"$T/table"
    for fmt in "$@"; do
        touch "$T/$fmt.states"
        local c=() s
        for s in clean replayed repaired lost corrupt; do
            c+=("$(grep -cx "$s" "$T/$fmt.states" || true)")
        done
        c+=("$(grep -cvxE 'clean|replayed|repaired|lost|corrupt' "$T/$fmt.states" || true)")
        printf '%-10s %-7s %6s %6s %9s %9s %5s %8s %6s\n' "$fmt" "${TRIAL_PROMISE[$fmt]}" \
            "$(wc -l <"$T/$fmt.states")" "${c[@]}" >>"$T/table"
        while read -r s; do
            if trial_failed "$s" "${TRIAL_PROMISE[$fmt]}"; then bad=$((bad + 1)); fi
        done <"$T/$fmt.states"
    done
    cat "$T/table"
    n=$(cat "$T"/*.states | wc -l)
    echo "$n trials, $bad broke their format's promise (docs/flush.md)"
    [ $bad = 0 ]
}

# kill_at TRACE N: strace's option that kills the command traced into
# TRACE (strace -f -o TRACE) just before its N-th traced call.  strace
# counts each syscall on its own (and per thread), so `inject=SET:when=N`
# would stop at the first syscall of SET called N times, not at the N-th
# call: most later steps would never be reached.  Exact for one thread.
kill_at() {
    awk -v n="$2" '!/\+\+\+|resumed/ {
        c++; name = $0; sub(/^[0-9]+ +/, "", name); sub(/\(.*/, "", name); k[name]++
        if (c == n) { printf "inject=%s:signal=KILL:when=%d\n", name, k[name]; exit }
    }' "$1"
}

# cut_points TRACE: kill points a spread can miss, where an order goes
# wrong most often: each of the last 3 ftruncates and the first pwrite
# after it (or the call after it).  A file cut before the table naming the
# cut space is cleared (a broken QED commit) shows only between the two;
# a spread of 6 points over ~20 steps hits that by chance of the count.
cut_points() {
    grep -v -e '+++' -e resumed "$1" | awk '/ftruncate\(/ { t[++k] = NR; p[k] = 0; next }
        k && !p[k] && /pwrite/ { p[k] = NR }
        END { for (i = (k > 3 ? k - 2 : 1); i <= k; i++) {
                  print t[i]; if (p[i]) print p[i]; else if (t[i] < NR) print t[i] + 1 } }'
}

# run_killed TRACE N CMD...: CMD traced ($SYSCALLS) and killed with SIGKILL
# at its N-th traced call (kill_at TRACE N); fails the test unless CMD was
# killed (exit 137): a `|| true` there let a run the kill never reached (a
# path with fewer calls) be judged as a killed one.
run_killed() {
    local trace=$1 n=$2 rc=0
    shift 2
    # (a subshell, so that the shell's "Killed" notice goes nowhere)
    (traced -f -qq -o /dev/null -e trace="$SYSCALLS" -e "$(kill_at "$trace" "$n")" "$@" \
        >/dev/null 2>&1) 2>/dev/null || rc=$?
    [ $rc = 137 ] || fail "$*: not killed at traced call $n (exit $rc)"
}

# strace runs our binaries under ptrace, where LeakSanitizer cannot work (it
# aborts at exit in the ASan run): leak checking is off for traced commands only.
traced() { ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace "$@"; }
