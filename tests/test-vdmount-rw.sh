#!/bin/bash
# vdmount --rw: writes to `disk` and `pN` go through libvdisk into the image,
# for raw and every format libvdisk writes; qemu-img reads them back (and
# checks the image where it can).  Formats vdisk only reads are refused with
# a message; without --rw nothing can be written and the image is unchanged.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdmount-lib.sh"
requires_cmd qemu-img mke2fs debugfs sfdisk python3
requires_fuse

make_rootfs "$T/root"
rm -f "$T/root/big/sparse"
# 16 MiB (a 32 MiB disk): each format's case converts and reads the whole
# image two or three times (qemu-img, before and after), and the writes
# below land at the same places relative to p1, p5 and the disk's end
VM_FS_SIZE=16M make_ext4 "$T/fs.img" "$T/root"
make_mbr_disk "$T/disk.raw" "$T/fs.img"
DISK=$(stat -c %s "$T/disk.raw")
P5=$(sfdisk -d "$T/disk.raw" | sed -n 's/^[^ ]*5 : start= *\([0-9]*\),.*/\1/p')
[ -n "$P5" ] || fail "no p5 in $(sfdisk -d "$T/disk.raw")"
head -c 65536 /dev/urandom > "$T/pattern"

# want_after IMG FMT: sha256 of the guest content after the writes below.
want_after() {
    qemu-img convert -f "$2" -O raw "$1" "$T/want.raw"
    python3 - "$T/want.raw" "$T/pattern" "$DISK" "$P5" <<'PY'
import sys
pat = open(sys.argv[2], "rb").read()
disk, p5 = int(sys.argv[3]), int(sys.argv[4])
with open(sys.argv[1], "r+b") as f:
    f.seek((1 << 20) + 12345); f.write(pat)          # p1 at 12345 (p1 starts at 1 MiB)
    f.seek(disk - 1000); f.write(pat[:1000])         # near the end of the disk
    f.seek(p5 * 512 + 7); f.write(pat[:4096])        # logical p5 at 7
    f.seek(0, 2); f.seek(f.tell() - 5); f.write(b"y" * 5)  # across the end
PY
    sha_of "$T/want.raw"
}

do_writes() {
    local m=$1 what=$2
    dd if="$T/pattern" of="$m/p1" bs=12345 seek=1 conv=notrunc status=none ||
        fail "$what: write to p1"
    python3 - "$m/disk" "$T/pattern" "$m/p5" "$DISK" <<'PY' || fail "$what: writes"
import errno, os, sys
pat = open(sys.argv[2], "rb").read()
fd = os.open(sys.argv[1], os.O_WRONLY)
assert os.pwrite(fd, pat[:1000], int(sys.argv[4]) - 1000) == 1000
size = os.fstat(fd).st_size   # the raw disk's size, or more where the format rounds up
assert os.pwrite(fd, b"y" * 10, size - 5) == 5, "write across the end not short"
try:                       # past the end: the disk does not grow
    os.pwrite(fd, b"x" * 10, size)
    raise SystemExit("write past the end of disk succeeded")
except OSError as e:
    assert e.errno == errno.ENOSPC, e
os.fsync(fd)
os.close(fd)
fd = os.open(sys.argv[3], os.O_WRONLY)
assert os.pwrite(fd, pat[:4096], 7) == 4096
os.close(fd)
PY
    # written data reads back through the mount at once
    cmp -s <(head -c $((DISK - 5)) "$m/disk" | tail -c 995) <(head -c 995 "$T/pattern") ||
        fail "$what: read back"
    # p1 was written as raw bytes: its file tree stays read-only
    if echo x 2>/dev/null > "$m/fs/p1/etc/hostname"; then fail "$what: wrote into fs/"; fi
    if truncate -s 1M "$m/p1" 2>/dev/null; then fail "$what: resized p1"; fi
}

writable=""
for f in raw $(vm_readable_formats "$T/disk.raw"); do
    img="$T/rw.$f"
    if [ "$f" = raw ]; then cp "$T/disk.raw" "$img"; else qemu-img convert -f raw -O "$f" "$T/disk.raw" "$img"; fi
    want=$(want_after "$img" "$f")
    if ! vm_try_mount "$img" "$T/mnt" --rw; then
        grep -q "read-only\|cannot be written" "$T/vdmount.err" ||
            fail "$f: --rw refused: $(cat "$T/vdmount.err")"
        echo "not writable in vdisk: $f: $(cat "$T/vdmount.err")"
        continue
    fi
    do_writes "$T/mnt" "$f"
    vm_umount "$T/mnt"
    [ "$(raw_sha "$img" "$f")" = "$want" ] || fail "$f: qemu-img reads other data after --rw writes"
    if [ "$f" != raw ] && qemu-img check -f "$f" "$img" >"$T/check" 2>&1; then :
    elif [ "$f" != raw ] && ! grep -q "does not support checks" "$T/check"; then
        cat "$T/check"; fail "$f: qemu-img check after --rw writes"
    fi
    writable="$writable $f"
done
echo "written:$writable"

# a format vdisk reads but does not write: refused, with the reason
qemu-img convert -f raw -O qcow "$T/disk.raw" "$T/ro.qcow" 2>/dev/null || true
if [ -f "$T/ro.qcow" ] && "$VDCONVERT" info "$T/ro.qcow" >/dev/null 2>&1; then
    if "$VDMOUNT" --rw "$T/ro.qcow" "$T/mnt" 2>"$T/err"; then fail "--rw on qcow v1 accepted"; fi
    grep -q "read-only" "$T/err" || fail "qcow v1 --rw: $(cat "$T/err")"
fi

# without --rw: nothing writable, image untouched
before=$(sha_of "$T/disk.raw")
vm_mount "$T/disk.raw" "$T/mnt"
if dd if="$T/pattern" of="$T/mnt/disk" conv=notrunc status=none 2>/dev/null; then fail "read-only disk written"; fi
if dd if="$T/pattern" of="$T/mnt/p1" conv=notrunc status=none 2>/dev/null; then fail "read-only p1 written"; fi
vm_umount "$T/mnt"
[ "$(sha_of "$T/disk.raw")" = "$before" ] || fail "image changed by a read-only mount"
echo "ok"
