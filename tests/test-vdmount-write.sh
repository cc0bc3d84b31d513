#!/bin/bash
# vdmount --rw and --overlay change the files of an ext4 partition: create,
# write, append, truncate, rename (over a file, across directories, a
# directory), mkdir, rmdir, symlink, hard link, chmod, chown, utimens, unlink.
# Inside a qcow2 (plain ext4) and a VMDK (inline_data): afterwards qemu-img
# check is clean, e2fsck -fn finds the partition clean, and vdmount --ls/--cat
# and debugfs read the result.  --overlay: the same changes are seen through
# the mount, the image stays byte-identical, and its entries show the
# image's own times.  A full file system gives ENOSPC and stays clean; one
# whose vdmount is killed says "not clean".  Refused with a message at mount: a journal that needs
# recovery, the quota feature; a partition written as raw bytes keeps its
# file tree read-only, and the other way round.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdmount-lib.sh"
requires_cmd qemu-img mke2fs debugfs dumpe2fs e2fsck sfdisk python3
requires_fuse

make_rootfs "$T/root"
rm -f "$T/root/big/sparse"
# 16 MiB file systems (32 MiB disks): each result is converted whole to raw
# and its partition checked by e2fsck, which scale with them; the changes
# below need a few MB
export VM_FS_SIZE=16M
FS_MIB=16
make_ext4 "$T/fs.img" "$T/root"
make_ext4 "$T/fs-inline.img" "$T/root" -O inline_data,metadata_csum
make_mbr_disk "$T/disk.raw" "$T/fs.img"
make_mbr_disk "$T/disk-inline.raw" "$T/fs-inline.img"
python3 - "$T/data" "$T/tail" <<'PY'
import random, sys
r = random.Random(20)
open(sys.argv[1], "wb").write(bytes(r.getrandbits(8) for _ in range(300000)))
open(sys.argv[2], "wb").write(bytes(r.getrandbits(8) for _ in range(5000)))
PY
head -c 250000 "$T/data" > "$T/motd.want"

# The changes, through the mount at $1; each is read back at once.
change_files() {
    local m=$1/fs/p1 what=$2
    cp "$T/data" "$m/etc/motd" || fail "$what: create and write"
    cat "$T/tail" >> "$m/etc/motd" || fail "$what: append"
    cmp -s <(cat "$T/data" "$T/tail") "$m/etc/motd" || fail "$what: appended file reads back"
    truncate -s 250000 "$m/etc/motd" || fail "$what: truncate"
    echo more >> "$m/home/user/tiny" || fail "$what: append to a small file"
    echo replaced > "$m/bin/hello" || fail "$what: overwrite (O_TRUNC)"
    echo "new hostname" > "$m/etc/hostname.new"
    mv "$m/etc/hostname.new" "$m/etc/hostname" || fail "$what: rename over a file"
    mv "$m/big/random" "$m/home/user/random" || fail "$what: rename across directories"
    mkdir "$m/srv" "$m/srv/www" || fail "$what: mkdir"
    mv "$m/empty" "$m/srv/empty" && rmdir "$m/srv/empty" || fail "$what: move and rmdir a directory"
    ln -s ../etc/motd "$m/srv/motd-link" || fail "$what: symlink"
    ln "$m/etc/passwd" "$m/srv/passwd.hard2" || fail "$what: hard link"
    chmod 0640 "$m/etc/motd" && chown 1234:5678 "$m/etc/motd" || fail "$what: chmod, chown"
    touch -m -d @1700000000.5 "$m/srv/www" || fail "$what: utimens"
    rm "$m/etc/shadow" "$m/etc/passwd.hard" && rm -r "$m/etc/ssh" || fail "$what: unlink"
    if mv "$m/srv" "$m/srv/www/inside" 2>/dev/null; then fail "$what: moved a directory into itself"; fi
    if rmdir "$m/srv" 2>/dev/null; then fail "$what: removed a directory that is not empty"; fi
    cmp -s "$T/motd.want" "$m/etc/motd" || fail "$what: truncated file reads back"
    cmp -s "$T/motd.want" "$m/srv/motd-link" || fail "$what: through the new symlink"
    [ "$(cat "$m/etc/hostname")" = "new hostname" ] || fail "$what: renamed file"
    [ "$(cat "$m/home/user/tiny")" = "$(printf 'hi\nmore')" ] || fail "$what: small file"
    [ "$(cat "$m/bin/hello")" = replaced ] || fail "$what: overwritten file: $(head -c 50 "$m/bin/hello")"
    [ "$(stat -c '%a %u:%g %s' "$m/etc/motd")" = "640 1234:5678 250000" ] ||
        fail "$what: motd is $(stat -c '%a %u:%g %s' "$m/etc/motd")"
    [ "$(stat -c %h "$m/etc/passwd")" = 2 ] || fail "$what: link count $(stat -c %h "$m/etc/passwd")"
    [ "$(stat -c %Y "$m/srv/www")" = 1700000000 ] || fail "$what: mtime"
    [ ! -e "$m/etc/shadow" ] && [ ! -e "$m/etc/ssh" ] || fail "$what: removed files still there"
}

# Check an image after the changes: qemu-img, e2fsck, debugfs, vdmount --ls/--cat.
check_result() {
    local img=$1 f=$2
    qemu-img check -q -f "$f" "$img" || fail "$f: qemu-img check"
    qemu-img convert -f "$f" -O raw "$img" "$T/out.raw"
    dd if="$T/out.raw" of="$T/p1.raw" bs=1M skip=1 count=$FS_MIB status=none
    e2fsck -fn "$T/p1.raw" > "$T/fsck" 2>&1 || { cat "$T/fsck"; fail "$f: e2fsck -fn"; }
    "$VDMOUNT" --cat "$img" fs/p1/etc/motd | cmp -s - "$T/motd.want" || fail "$f: --cat motd"
    "$VDMOUNT" --cat "$img" fs/p1/etc/hostname | matches -x "new hostname" || fail "$f: --cat hostname"
    "$VDMOUNT" --cat "$img" fs/p1/home/user/random | cmp -s - "$T/root/big/random" ||
        fail "$f: --cat moved file"
    [ "$("$VDMOUNT" --cat "$img" fs/p1/bin/hello)" = replaced ] || fail "$f: --cat overwritten file"
    "$VDMOUNT" --ls "$img" fs/p1/etc > "$T/ls"
    grep -q '^-rw-r----- .* 1234 .* 5678 .* 250000 .* motd$' "$T/ls" &&
        ! grep -q 'shadow\|ssh\|hostname.new\|passwd.hard$' "$T/ls" || { cat "$T/ls"; fail "$f: --ls etc"; }
    "$VDMOUNT" --ls "$img" fs/p1/srv > "$T/ls"
    grep -q 'motd-link -> ../etc/motd$' "$T/ls" && grep -q '^d.* www$' "$T/ls" &&
        grep -q '^-.* 2 .* passwd.hard2$' "$T/ls" || { cat "$T/ls"; fail "$f: --ls srv"; }
    # the time as stored: seconds, then nanoseconds << 2 (500000000 << 2)
    debugfs -R "stat /srv/www" "$T/p1.raw" 2>/dev/null | matches 'mtime: 0x6553f100:77359400' ||
        fail "$f: mtime of srv/www as debugfs reads it"
}

for case in "qcow2 disk.raw" "vmdk disk-inline.raw"; do
    set -- $case
    f=$1
    img="$T/w.$f"
    qemu-img convert -f raw -O "$f" "$T/$2" "$img"
    vm_mount "$img" "$T/mnt" --rw
    change_files "$T/mnt" "$f"
    # the file tree is written: the partition's raw bytes are not
    if dd if=/dev/zero of="$T/mnt/p1" bs=4096 seek=100 count=1 conv=notrunc status=none 2>/dev/null; then
        fail "$f: raw write over a file tree being written"
    fi
    vm_umount "$T/mnt"
    check_result "$img" "$f"
    echo "ok --rw $f"
done

# --overlay: the same changes, the image unchanged, true times on top
img="$T/ov.qcow2"
qemu-img convert -f raw -O qcow2 "$T/disk.raw" "$img"
touch -d @1650000000 "$img"
before=$(sha_of "$img")
vm_mount "$img" "$T/mnt" --overlay
change_files "$T/mnt" overlay
[ "$(stat -c %Y "$T/mnt/disk")" = 1650000000 ] || fail "overlay: disk mtime $(stat -c %Y "$T/mnt/disk")"
vm_umount "$T/mnt"
[ "$(sha_of "$img")" = "$before" ] || fail "overlay: the image changed"
"$VDMOUNT" --cat "$img" fs/p1/etc/shadow | matches -x secret || fail "overlay: image content"
echo "ok --overlay"

# a full file system: ENOSPC, then emptying and removing the file that
# filled it leaves it clean
rm -f "$T/small.raw"; truncate -s 8M "$T/small.raw"
mke2fs -q -F -t ext4 -b 1024 "$T/small.raw" 8M
vm_mount "$T/small.raw" "$T/mnt" --rw
if dd if=/dev/zero of="$T/mnt/fs/disk/fill" bs=1M count=16 status=none 2>"$T/err"; then
    fail "16 MiB written into an 8 MiB file system"
fi
grep -q "No space left" "$T/err" || fail "full: $(cat "$T/err")"
# statfs of a file tree is its own: 8192 blocks of 1 KiB, none free to users
[ "$(stat -f -c '%S %b %a' "$T/mnt/fs/disk")" = "1024 8192 0" ] ||
    fail "full: statfs $(stat -f -c '%S %b %a' "$T/mnt/fs/disk")"
: > "$T/mnt/fs/disk/fill" && [ "$(stat -c %s "$T/mnt/fs/disk/fill")" = 0 ] || fail "full: emptying"
dd if=/dev/zero of="$T/mnt/fs/disk/fill" bs=1M count=16 status=none 2>/dev/null || true
rm "$T/mnt/fs/disk/fill" || fail "full: rm"
echo after > "$T/mnt/fs/disk/after" || fail "full: a file after rm"
vm_umount "$T/mnt"
e2fsck -fn "$T/small.raw" > "$T/fsck" 2>&1 || { cat "$T/fsck"; fail "full: e2fsck -fn"; }
echo "ok full file system"

# four writers at once (FUSE serves them on several threads; libext2fs is
# serialized per file system): every file there, the file system clean
cp "$T/fs.img" "$T/par.raw"
vm_mount "$T/par.raw" "$T/mnt" --rw
pids=()
for w in 1 2 3 4; do
    (
        d="$T/mnt/fs/disk/w$w"
        mkdir "$d" || exit 1
        for i in $(seq 1 12); do
            printf 'writer %s file %s\n' "$w" "$i" > "$d/f$i.tmp" && mv "$d/f$i.tmp" "$d/f$i" || exit 1
        done
        rm "$d/f1"
    ) > "$T/par.$w" 2>&1 &
    pids[w]=$!
done
for w in 1 2 3 4; do wait "${pids[w]}" || fail "parallel writer $w: $(cat "$T/par.$w")"; done
vm_umount "$T/mnt"
e2fsck -fn "$T/par.raw" > "$T/fsck" 2>&1 || { cat "$T/fsck"; fail "parallel: e2fsck -fn"; }
for w in 1 2 3 4; do
    "$VDMOUNT" --ls "$T/par.raw" fs/disk/w$w > "$T/ls"
    [ "$(grep -c ' f[0-9]*$' "$T/ls")" = 11 ] || { cat "$T/ls"; fail "parallel: w$w"; }
    [ "$("$VDMOUNT" --cat "$T/par.raw" fs/disk/w$w/f12)" = "writer $w file 12" ] ||
        fail "parallel: w$w/f12"
done
echo "ok parallel writers"

# killed while in use: the superblock already says "not clean", so the
# next e2fsck (and a guest's boot) checks the file system
cp "$T/fs.img" "$T/killed.raw"
vm_mount "$T/killed.raw" "$T/mnt" --rw
echo x > "$T/mnt/fs/disk/x" || fail "killed: write"
kill -KILL "$VM_PID"
wait "$VM_PID" 2>/dev/null || true
fusermount3 -u -z "$T/mnt"
dumpe2fs -h "$T/killed.raw" 2>/dev/null | matches '^Filesystem state: *not clean$' ||
    fail "killed: $(dumpe2fs -h "$T/killed.raw" 2>/dev/null | grep state)"
echo "ok killed while writing"

# raw bytes first: the file tree stays read-only for the rest of the mount
cp "$T/disk.raw" "$T/raw-first.raw"
vm_mount "$T/raw-first.raw" "$T/mnt" --rw
dd if=/dev/zero of="$T/mnt/p1" bs=4096 seek=$((FS_MIB * 256 - 16)) count=1 conv=notrunc status=none ||
    fail "raw write"
if touch "$T/mnt/fs/p1/new" 2>"$T/err"; then fail "file tree written after raw bytes"; fi
grep -q "Read-only file system" "$T/err" || fail "raw first: $(cat "$T/err")"
vm_umount "$T/mnt"

# refused at mount, with the reason: the image is left as it was
refused() {
    local what=$1 want=$2
    make_mbr_disk "$T/bad.raw" "$T/bad.img"
    local before
    before=$(sha_of "$T/bad.raw")
    vm_mount "$T/bad.raw" "$T/mnt" --rw
    grep -q "fs/p1 stays read-only: ext2: not writable: $want" "$VM_ERR" ||
        fail "$what: message: $(cat "$VM_ERR")"
    [ "$(cat "$T/mnt/fs/p1/etc/hostname")" = vdmount-guest ] || fail "$what: not readable"
    if touch "$T/mnt/fs/p1/new" 2>"$T/err"; then fail "$what: written"; fi
    grep -q "Read-only file system" "$T/err" || fail "$what: $(cat "$T/err")"
    vm_umount "$T/mnt"
    [ "$(sha_of "$T/bad.raw")" = "$before" ] || fail "$what: image changed"
    echo "ok refused: $what"
}
cp "$T/fs.img" "$T/bad.img"
debugfs -w -R "feature needs_recovery" "$T/bad.img" >/dev/null 2>&1
refused "dirty journal" "its journal needs recovery"
cp "$T/fs.img" "$T/bad.img"
debugfs -w -R "feature quota" "$T/bad.img" >/dev/null 2>&1
refused "quota" "feature quota"
echo ok
