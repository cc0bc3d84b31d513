#!/bin/bash
# The new user's list of issue 20, run as they ran it: each message and exit
# code a sysadmin who knows qemu-img meets on day one.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img
V=$VDCONVERT
B=$VD_BUILD
cd "$T"
MiB=1048576

expect() {  # RC PATTERN CMD...: exit code RC and a stderr+stdout line matching PATTERN
    local want=$1 pat=$2 rc=0
    shift 2
    "$@" >out 2>&1 || rc=$?
    [ $rc = "$want" ] || fail "$*: exit $rc, expected $want: $(head -5 out)"
    [ -z "$pat" ] || grep -Eq -- "$pat" out || fail "$*: no line matching '$pat': $(head -5 out)"
}

head -c $MiB /dev/urandom >guest.raw
truncate -s $((8 * MiB)) guest.raw
qemu-img convert -f raw -O qcow2 guest.raw guest.qcow2

# --- every tool: --version, --help, unknown options, exit codes 0/1/2 ------------------
ver=$("$V" --version | cut -d' ' -f3)
tools=("$V")
[ -x "$B/tools/ovatool/ovatool" ] && tools+=("$B/tools/ovatool/ovatool")
[ -x "$B/fuse-mount/vdmount" ] && tools+=("$B/fuse-mount/vdmount")
[ -x "$B/boot-check/vdboot" ] && tools+=("$B/boot-check/vdboot")
for t in "${tools[@]}"; do
    n=$(basename "$t")
    expect 0 "^$n \\(vdisk\\) $ver\$" "$t" --version
    expect 0 "^usage: $n" "$t" --help
    usage_rc=2; [ "$n" = vdboot ] && usage_rc=3    # vdboot: 2 is a timeout
    expect $usage_rc "^$n( convert)?: unknown (command|option)" "$t" --bogus-option
    [ "$(head -1 out | grep -c unknown)" = 1 ] && grep -q "^usage: $n" out ||
        fail "$n --bogus-option: not one line and the usage: $(cat out)"
done
echo "ok: --version, --help, unknown options in ${#tools[@]} tools"
if [ -x "$B/tools/ovatool/ovatool" ]; then
    expect 2 "^ovatool: unknown command 'frob'" "$B/tools/ovatool/ovatool" frob x.ova
fi

# --- vdconvert: commands are not implicit conversions -----------------------------------
expect 2 "^vdconvert: unknown command 'infoo'" "$V" infoo guest.raw
expect 1 "^vdconvert: 'bitmap' is not supported" "$V" bitmap guest.qcow2
grep -q "open" out && fail "bitmap fell through to a conversion: $(cat out)"
cp guest.qcow2 am.qcow2
expect 0 "" "$V" amend -o compat=0.10 am.qcow2
[ "$(qemu-img info am.qcow2 | sed -n 's/^ *compat: //p')" = 0.10 ] || fail "amend -o compat=0.10"
expect 1 "^vdconvert: guest.raw: Format driver 'raw' does not support option amendment\$" \
    "$V" amend -f raw -o size=1G guest.raw
expect 0 "^Sending 10 read requests" "$V" bench -c 10 guest.qcow2
expect 0 "" "$V" dd if=guest.qcow2 of=dd.raw bs=1M count=2
[ "$(stat -c %s dd.raw)" = $((2 * MiB)) ] || fail "dd wrote $(stat -c %s dd.raw) bytes"
echo "ok: infoo, amend, bitmap, bench, dd"

# --- usage errors exit 2 in every command, resize, commit and rebase too -----------------
expect 2 "^vdconvert resize: expected IMG and SIZE" "$V" resize guest.qcow2
expect 2 "^vdconvert resize: unknown option" "$V" resize --frob guest.qcow2 +1M
expect 2 "^vdconvert commit: expected one image" "$V" commit
expect 2 "^vdconvert commit: unknown option" "$V" commit -Z guest.qcow2
expect 2 "^vdconvert rebase: -b BACKING is required" "$V" rebase guest.qcow2
expect 2 "^vdconvert rebase: expected one image" "$V" rebase -b guest.qcow2 -F qcow2
expect 2 "^vdconvert amend: Must specify options" "$V" amend guest.qcow2
expect 2 "^vdconvert amend: -U/--force-share is not allowed" "$V" amend -U -o compat=1.1 guest.qcow2
echo "ok: usage errors of resize, commit, rebase, amend exit 2"

# --- format names -------------------------------------------------------------------------
expect 1 "^vdconvert: Unknown file format 'qcow3' \\(formats: .*qcow2" "$V" -O qcow3 guest.qcow2 out.img
expect 1 "^vdconvert: Unknown file format 'qcow3'" "$V" create -f qcow3 new.img 1M
"$V" guest.qcow2 t.parallels
[ "$("$V" info t.parallels | sed -n 's/^file format: //p')" = parallels ] || fail "t.parallels is not Parallels"
qemu-img compare -q -f qcow2 -F parallels guest.qcow2 t.parallels || fail "t.parallels content"
"$V" guest.qcow2 t.hds
[ "$("$V" info t.hds | sed -n 's/^file format: //p')" = parallels ] || fail "t.hds is not Parallels"
expect 1 "t.foo: cannot tell the output format .*-O FMT" "$V" guest.qcow2 t.foo
[ ! -e t.foo ] || fail "t.foo written"
"$V" -O vpc guest.qcow2 t.vpc && [ "$("$V" info t.vpc | sed -n 's/^file format: //p')" = vhd ] ||
    fail "-O vpc (qemu's name for vhd)"
# A format vdisk does not read (here a DMG-like file) is probed as raw: warned
printf 'koly' | dd of=fake.dmg bs=1 seek=$((MiB - 512)) conv=notrunc 2>/dev/null
expect 0 "^WARNING: Image format was not specified for 'fake.dmg' and probing guessed raw" \
    "$V" fake.dmg f.qcow2
grep -q "Specify the 'raw' format explicitly to remove the restrictions." out || fail "warning text"
rm -f f.qcow2
"$V" -f raw fake.dmg f.qcow2 2>err
[ ! -s err ] || fail "-f raw did not silence the warning: $(cat err)"
echo "ok: format names, extensions, guessed-raw warning"

# --- messages name the user's files; signals leave nothing behind --------------------------
rc=0
( trap '' XFSZ; ulimit -f 1024; exec "$V" -f raw -O qcow2 guest.raw full.qcow2 ) 2>err || rc=$?
[ $rc = 1 ] && grep -q "^vdconvert: full.qcow2: " err && ! grep -q 'vdconvert-[0-9]' err ||
    fail "error does not name full.qcow2 (exit $rc): $(cat err)"
rc=0
( ulimit -f 1024; exec "$V" -f raw -O vdi guest.raw ul.vdi ) 2>/dev/null || rc=$?
[ $rc = $((128 + 25)) ] || fail "ulimit -f: exit $rc"
if ls -A | matches vdconvert; then fail "temporary output left: $(ls -A | grep vdconvert)"; fi
echo "ok: errors name the user's files; SIGXFSZ leaves nothing"

# --- qemu-img parity the new user met ----------------------------------------------------
cp guest.qcow2 same.qcow2
expect 0 "^Images are identical.\$" "$V" compare -s guest.qcow2 same.qcow2
[ "$(wc -l <out)" = 1 ] || fail "compare -s of identical images: $(cat out)"
qemu-img snapshot -c snap1 same.qcow2
"$V" snapshot -l same.qcow2 | sed -n 2p | matches "^ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\$" ||
    fail "snapshot -l header: $("$V" snapshot -l same.qcow2)"
expect 0 "size=$((8 * MiB)) backing_file=guest.qcow2 backing_fmt=qcow2" \
    "$V" create -O qcow2 -b guest.qcow2 -F qcow2 over.qcow2
expect 1 "Backing file specified without backing format" "$V" create -O qcow2 -b guest.qcow2 o2.qcow2
expect 1 "requires explicit backing format" "$V" -O qcow2 -B guest.qcow2 guest.raw o3.qcow2
expect 63 "does not support checks" "$V" check -f raw guest.raw
cp guest.qcow2 small.qcow2
qemu-img resize -q small.qcow2 16M
expect 0 "" "$V" resize --shrink small.qcow2 -- -8M
[ "$(qemu-img info --output=json small.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = $((8 * MiB)) ] ||
    fail "resize -- -8M"
if command -v nbdkit >/dev/null && "$V" --help | matches ' nbd'; then
    nbdkit -U "$T/nbd.sock" -P "$T/nbd.pid" file guest.raw
    # (nbdkit binds before it returns; its pid file follows from the child)
    until [ -S "$T/nbd.sock" ] && [ -s "$T/nbd.pid" ]; do sleep 0.05; done
    uri="nbd+unix:///?socket=$T/nbd.sock"
    "$V" map "$uri" >v.map
    qemu-img map -f raw "$uri" >q.map
    kill "$(cat "$T/nbd.pid")"
    [ "$(sed -n 2p v.map | awk '{print $1, $2, $3}')" = "$(sed -n 2p q.map | awk '{print $1, $2, $3}')" ] ||
        fail "map of an NBD URI: $(cat v.map) / qemu-img: $(cat q.map)"
    echo "ok: map nbd+unix:// as qemu-img"
fi
echo "ok: compare -s, snapshot -l, create -b, -F, check 63, resize -- -SIZE"

# --- one progress style, naming the user's files -----------------------------------
"$V" -p -f raw guest.raw prog.vmdk 2>prog
grep -qx 'guest.raw -> prog.vmdk: 100%' prog && [ "$(wc -l <prog)" -le 11 ] ||
    fail "vdconvert -p: $(cat prog)"
if [ -x "$B/tools/ovatool/ovatool" ]; then
    "$B/tools/ovatool/ovatool" export -n pp --disk guest.qcow2 -p -o pp.ova 2>prog >/dev/null ||
        fail "ovatool export: $(cat prog)"
    grep -qx 'guest.qcow2 -> pp-disk1.vmdk: 100%' prog && ! grep -q 'work' prog &&
        [ "$(wc -l <prog)" -le 11 ] || fail "ovatool export -p: $(cat prog)"
fi
echo "ok: progress lines name the user's files (vdconvert, ovatool export)"
