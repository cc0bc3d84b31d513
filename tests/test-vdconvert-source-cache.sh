#!/bin/bash
# vdconvert -T (source cache mode, qemu's names): none and directsync read
# every file of the input chain with O_DIRECT (seen with strace: the flag is
# set on each input file's descriptor), the others through the page cache;
# the output is the same either way.  The inputs make the library's
# unaligned reads go through its aligned buffers: a raw file whose size is
# not a multiple of the block size, compressed qcow2 clusters and
# streamOptimized grains at any offset, and a qcow2 overlay over a backing
# file.  The target is written -t unsafe: its syncs are not what is tested.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io strace
V=$VDCONVERT
MiB=1048576

# 9 MiB + 1234 bytes: 3 MiB random, 2 MiB of one letter (compresses),
# 1 MiB of written zeroes, random up to the odd end.
{ head -c $((3 * MiB)) /dev/urandom
  head -c $((2 * MiB)) /dev/zero | tr '\0' v
  head -c $((1 * MiB)) /dev/zero
  head -c $((3 * MiB + 1234)) /dev/urandom; } >"$T/in.raw"
qemu-img convert -f raw -O qcow2 "$T/in.raw" "$T/in.qcow2"
qemu-img convert -f raw -O qcow2 -c "$T/in.raw" "$T/inc.qcow2"
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$T/in.raw" "$T/ins.vmdk"
# an overlay over the compressed base: 64 KiB of 0xab at 1 MiB + 512
qemu-img create -q -f qcow2 -b inc.qcow2 -F qcow2 "$T/top.qcow2"
qemu-io -f qcow2 -c "write -q -P 0xab $((MiB + 512)) 65536" "$T/top.qcow2"
cp "$T/in.raw" "$T/top.raw"
head -c 65536 /dev/zero | tr '\0' '\253' |
    dd of="$T/top.raw" bs=512 seek=$((2 * 1024 + 1)) conv=notrunc status=none

# fd_direct STRACE_LOG NAME: "direct" when a descriptor of a file named NAME
# was made O_DIRECT, "opened" when such a file was only opened
fd_direct() {
    awk -v name="$2" '
    match($0, /openat2?\([^,]*, "[^"]*"/) {
        p = substr($0, RSTART, RLENGTH); sub(/^[^"]*"/, "", p); sub(/"$/, "", p)
        if ((p == name || substr(p, length(p) - length(name)) == "/" name) &&
            match($0, /= [0-9]+$/)) { fds[substr($0, RSTART + 2)] = 1; opened = 1 }
    }
    /F_SETFL, .*O_DIRECT.*\) = 0$/ && match($0, /fcntl\([0-9]+/) {
        if (substr($0, RSTART + 6, RLENGTH - 6) in fds) direct = 1
    }
    END { print direct ? "direct" : opened ? "opened" : "not-opened" }' "$1"
}

for in in in.raw in.qcow2 inc.qcow2 ins.vmdk top.qcow2; do
    want=$T/in.raw
    [ $in = top.qcow2 ] && want=$T/top.raw
    # (directsync reads as none does, unsafe and writethrough as writeback:
    # tried on the first input only)
    modes="none writeback"
    [ $in = in.raw ] && modes="none directsync writeback unsafe writethrough"
    for mode in $modes; do
        rm -f "$T/out.raw"
        traced -f -qq --seccomp-bpf -e trace=openat,openat2,fcntl -o "$T/strace" \
            "$V" -T $mode -t unsafe -O raw "$T/$in" "$T/out.raw" 2>"$T/err" ||
            fail "-T $mode $in failed: $(cat "$T/err")"
        # Skip only when the file system itself refuses O_DIRECT (dd's aligned
        # direct read of the same file fails too); a fallback where it works
        # is vdconvert's fault.
        if grep -q "does not allow O_DIRECT" "$T/err"; then
            dd if="$T/$in" of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null &&
                fail "-T $mode $in: vdconvert fell back from O_DIRECT where dd reads with it: $(cat "$T/err")"
            skip "the file system of $T refuses O_DIRECT: $(cat "$T/err")"
        fi
        # (qcow2 and VMDK round the size up to 512: the padding is not compared)
        cmp -n "$(stat -c %s "$want")" "$want" "$T/out.raw" ||
            fail "-T $mode $in: output differs from the input's content"
        files=$in
        [ $in = top.qcow2 ] && files="top.qcow2 inc.qcow2"
        for f in $files; do
            got=$(fd_direct "$T/strace" "$f")
            case $mode in none|directsync) exp=direct ;; *) exp=opened ;; esac
            [ "$got" = "$exp" ] || fail "-T $mode $in: $f was $got, expected $exp"
        done
    done
done
# the output is never written O_DIRECT by -T
traced -f -qq --seccomp-bpf -e trace=openat,openat2,fcntl -o "$T/strace" "$V" -T none -t unsafe -f raw -O qcow2 "$T/in.raw" "$T/out.qcow2"
[ "$(grep -c 'F_SETFL.*O_DIRECT' "$T/strace")" = 1 ] || fail "-T none: O_DIRECT on more than the input"
qemu-img compare -f raw -F qcow2 "$T/in.raw" "$T/out.qcow2" >/dev/null || fail "-T none -O qcow2 differs"
rc=0; "$V" -T bogus "$T/in.raw" "$T/x.raw" 2>"$T/err" || rc=$?
[ $rc -ne 0 ] && grep -q -- "-T bogus: expected none, writeback" "$T/err" || fail "-T bogus: $(cat "$T/err")"
echo "ok"
