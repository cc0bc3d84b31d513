#!/bin/bash
# -T none and -t none on a file system that refuses O_DIRECT (ramfs: its
# files cannot be opened O_DIRECT; tmpfs takes it since Linux 6.6): the
# input is read, or the output (raw or an image) written, through the page cache, with
# one line saying so and naming the user's file, and the content is right.
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img mount umount
V=$VDCONVERT
[ "$(id -u)" = 0 ] || skip "needs root to mount a ramfs"
M=$T/ram
mkdir "$M"
mount -t ramfs ramfs "$M" || skip "cannot mount a ramfs here"
trap 'umount "$M" 2>/dev/null || umount -l "$M"; rm -rf "$T"' EXIT
head -c 4096 /dev/zero >"$M/probe"
! dd if="$M/probe" of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null ||
    skip "this kernel's ramfs takes O_DIRECT: no file system here refuses it"

# 3 MiB + 1234 bytes: random, then 1 MiB of one letter (compresses)
{ head -c $((2 << 20)) /dev/urandom
  head -c $((1 << 20)) /dev/zero | tr '\0' v
  head -c 1234 /dev/urandom; } >"$T/in.raw"
size=$(stat -c %s "$T/in.raw")
cp "$T/in.raw" "$M/in.raw"
qemu-img convert -f raw -O qcow2 -c "$T/in.raw" "$M/in.qcow2"

# one_line ERR WANT: ERR holds exactly the line WANT
one_line() {
    [ "$(cat "$1")" = "$2" ] || fail "expected the one line '$2', got: $(cat "$1")"
}

# sources on the ramfs, read with -T none (and directsync)
for in in in.raw in.qcow2; do
    fmt=raw
    [ $in = in.qcow2 ] && fmt=qcow2
    for mode in none directsync; do
        rm -f "$T/out.raw"
        "$V" -T $mode -t unsafe -f $fmt -O raw "$M/$in" "$T/out.raw" 2>"$T/err" ||
            fail "-T $mode $in: $(cat "$T/err")"
        one_line "$T/err" "vdconvert: $M/$in: its file system does not allow O_DIRECT (-T $mode); reading it through the page cache"
        cmp -n "$size" "$T/in.raw" "$T/out.raw" || fail "-T $mode $in: content differs"
    done
done

# a raw target on the ramfs, written with -t none (and directsync)
for mode in none directsync; do
    rm -f "$M/out.raw"
    "$V" -t $mode -f raw -O raw "$T/in.raw" "$M/out.raw" 2>"$T/err" ||
        fail "-t $mode: $(cat "$T/err")"
    one_line "$T/err" "vdconvert: $M/out.raw: its file system does not allow O_DIRECT (-t $mode); writing it through the page cache"
    cmp "$T/in.raw" "$M/out.raw" || fail "-t $mode: content differs"
done
# image targets too: qcow2 and vdi (metadata writes of a few bytes)
for fmt in qcow2 vdi; do
    rm -f "$M/out.$fmt"
    "$V" -t none -f raw -O $fmt "$T/in.raw" "$M/out.$fmt" 2>"$T/err" ||
        fail "-t none -O $fmt: $(cat "$T/err")"
    one_line "$T/err" "vdconvert: $M/out.$fmt: its file system does not allow O_DIRECT (-t none); writing it through the page cache"
    qemu-img compare -q -f raw "$T/in.raw" "$M/out.$fmt" || fail "-t none -O $fmt: content differs"
done
# -q says nothing; where O_DIRECT works (the test's own folder) nothing is said
rm -f "$M/out.raw"
"$V" -q -t none -f raw -O raw "$T/in.raw" "$M/out.raw" 2>"$T/err"
[ ! -s "$T/err" ] || fail "-q -t none printed: $(cat "$T/err")"
if dd if="$T/in.raw" of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null; then
    "$V" -t none -f raw -O raw "$T/in.raw" "$T/out2.raw" 2>"$T/err"
    [ ! -s "$T/err" ] || fail "-t none where O_DIRECT works printed: $(cat "$T/err")"
    cmp "$T/in.raw" "$T/out2.raw" || fail "-t none: content differs"
fi
echo "ok"
