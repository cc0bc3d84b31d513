#!/bin/bash
# vdmount: an ext4 file system (extents, inline data, xattrs, device nodes,
# hard links, symlinks, a 5 GiB sparse file) in partition 1 of an MBR disk,
# stored as raw and as every format libvdisk reads; each is mounted for real
# and compared with what went in, `disk` with qemu-img's raw conversion.
# Also --ls/--cat without FUSE, SIGTERM unmount and the default detach mode.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdmount-lib.sh"
requires_cmd qemu-img mke2fs debugfs sfdisk python3
requires_fuse

make_rootfs "$T/root"
# 16 MiB: room for the tree (3 MB of data, the 5 GiB file is a hole but for
# its last block) and the journal.  Each format's mount reads all of `disk`
# and p1 through FUSE, so their size is most of the test's CPU; what they
# prove (every byte as qemu reads it, p1's range) does not grow with it.
VM_FS_SIZE=16M make_ext4 "$T/fs.img" "$T/root" -O inline_data,metadata_csum
make_mbr_disk "$T/disk.raw" "$T/fs.img"

# Compare the mounted tree at $1 with $T/root and with what debugfs set.
check_tree() {
    local m=$1 what=$2 f
    [ "$(cat "$m/etc/hostname")" = vdmount-guest ] || fail "$what: etc/hostname"
    for f in etc/passwd etc/shadow etc/ssh/ssh_host_key bin/hello home/user/tiny big/random; do
        cmp -s "$T/root/$f" "$m/$f" || fail "$what: $f content differs"
        [ "$(stat -c %a "$T/root/$f")" = "$(stat -c %a "$m/$f")" ] ||
            fail "$what: $f mode $(stat -c %a "$m/$f"), want $(stat -c %a "$T/root/$f")"
    done
    [ "$(stat -c %a "$m/bin/hello")" = 4755 ] || fail "$what: setuid bit lost"
    [ "$(stat -c '%u:%g' "$m/home/user/tiny")" = 1000:100 ] || fail "$what: owner of tiny"
    [ "$(stat -c '%u:%g' "$m/home/user")" = 1000:1000 ] || fail "$what: owner of home/user"
    [ "$(stat -c '%u:%g' "$m/etc/passwd")" = "$(stat -c '%u:%g' "$T/root/etc/passwd")" ] ||
        fail "$what: owner of etc/passwd"
    [ "$(readlink "$m/bin/hostname-link")" = ../etc/hostname ] || fail "$what: relative symlink"
    [ "$(readlink "$m/bin/abs-link")" = /etc/passwd ] || fail "$what: absolute symlink"
    [ "$(readlink "$m/bin/long-link")" = "$(readlink "$T/root/bin/long-link")" ] ||
        fail "$what: symlink stored in a block"
    [ "$(cat "$m/bin/hostname-link")" = vdmount-guest ] || fail "$what: following a symlink"
    [ "$(stat -c %i "$m/etc/passwd")" = "$(stat -c %i "$m/etc/passwd.hard")" ] ||
        fail "$what: hard links have different inode numbers"
    [ "$(stat -c %h "$m/etc/passwd")" = 2 ] || fail "$what: hard link count"
    [ "$(stat -c '%F %t:%T %a' "$m/dev/null")" = "character special file 1:3 666" ] ||
        fail "$what: dev/null is $(stat -c '%F %t:%T %a' "$m/dev/null")"
    [ "$(stat -c '%F %t:%T' "$m/dev/sda")" = "block special file 8:0" ] || fail "$what: dev/sda"
    # major 300 = 0x12c, minor 1000 = 0x3e8: only the "new" encoding holds them
    [ "$(stat -c '%t:%T' "$m/dev/big")" = "12c:3e8" ] || fail "$what: large device numbers"
    [ "$(stat -c %Y "$m/etc/hostname")" = 1600000000 ] || fail "$what: mtime"
    [ "$(stat -c %s "$m/big/sparse")" = "$((5 << 30))" ] || fail "$what: large file size"
    [ "$(tail -c 4096 "$m/big/sparse" | tr -d '\0')" = tail-of-a-large-file ] ||
        fail "$what: tail of the large file"
    python3 - "$m/home/user/tiny" "$what" <<'PY' || fail "$what: xattr"
import os, sys
p = sys.argv[1]
assert os.getxattr(p, "user.color") == b"blue", os.getxattr(p, "user.color")
assert "user.color" in os.listxattr(p), os.listxattr(p)
assert "system.data" not in os.listxattr(p)
PY
    [ "$(find "$m" -xdev | wc -l)" -ge 20 ] || fail "$what: find sees too few files"
    # the tree is read-only
    if echo x 2>/dev/null > "$m/etc/hostname"; then fail "$what: wrote into the file tree"; fi
    if touch "$m/newfile" 2>/dev/null; then fail "$what: created a file"; fi
}

# --ls / --cat without FUSE
"$VDMOUNT" --cat "$T/disk.raw" fs/p1/etc/hostname | matches -x vdmount-guest || fail "--cat hostname"
"$VDMOUNT" --cat "$T/disk.raw" fs/p1/big/random | cmp -s - "$T/root/big/random" || fail "--cat big file"
"$VDMOUNT" --ls "$T/disk.raw" fs/p1/etc > "$T/ls.txt"
grep -q ' hostname$' "$T/ls.txt" && grep -q '^-rw-r----- .* shadow$' "$T/ls.txt" || {
    cat "$T/ls.txt"; fail "--ls fs/p1/etc"; }
"$VDMOUNT" --ls "$T/disk.raw" fs/p1/bin | matches 'hostname-link -> ../etc/hostname' || fail "--ls symlink"
"$VDMOUNT" --ls "$T/disk.raw" | matches ' p5$' || fail "--ls top level"
# an unpartitioned disk holding the file system directly: fs/disk
"$VDMOUNT" --cat "$T/fs.img" fs/disk/etc/hostname | matches -x vdmount-guest || fail "fs/disk"
"$VDMOUNT" --cat "$T/fs.img" partitions.json | matches '"whole_disk"' || fail "whole_disk in json"
# short forms: p1/PATH and /PATH (the first file system)
"$VDMOUNT" --cat "$T/disk.raw" /etc/hostname | matches -x vdmount-guest || fail "--cat /etc/hostname"
"$VDMOUNT" --ls "$T/disk.raw" p1/etc | cmp -s - "$T/ls.txt" || fail "--ls p1/etc"
if "$VDMOUNT" --cat "$T/disk.raw" fs/p1/etc/nothing 2>"$T/err"; then fail "--cat missing file"; fi
grep -q "No such file" "$T/err" || fail "--cat error message: $(cat "$T/err")"

formats="raw $(vm_readable_formats "$T/disk.raw")"
echo "formats: $formats"
for f in $formats; do
    img="$T/disk.$f"
    [ "$f" = raw ] && img="$T/disk.raw" || qemu-img convert -f raw -O "$f" "$T/disk.raw" "$img"
    before=$(sha_of "$img")
    vm_mount "$img" "$T/mnt"
    [ "$(sha_of "$T/mnt/disk")" = "$(raw_sha "$img" "$f")" ] || fail "$f: disk differs from qemu-img"
    cmp -s "$T/mnt/p1" "$T/fs.img" || fail "$f: p1 differs from the file system image"
    check_tree "$T/mnt/fs/p1" "$f"
    vm_umount "$T/mnt"
    [ "$(sha_of "$img")" = "$before" ] || fail "$f: image changed by a read-only mount"
    echo "ok $f"
done

# parallel readers (multi-threaded FUSE): file-system files and partitions at
# once, every result right
par_img=$T/disk.raw
[ -f "$T/disk.qcow2" ] && par_img=$T/disk.qcow2
vm_mount "$par_img" "$T/mnt"
want_rand=$(sha_of "$T/root/big/random")
want_p1=$(sha_of "$T/fs.img")
readers=()
for i in 1 2 3 4; do
    sha_of "$T/mnt/fs/p1/big/random" > "$T/par.r$i" & readers+=($!)
    sha_of "$T/mnt/p1" > "$T/par.p$i" & readers+=($!)
    find "$T/mnt/fs/p1" -type f -size -10M -exec cat {} + > /dev/null 2>&1 & readers+=($!)
done
wait "${readers[@]}" || true
for i in 1 2 3 4; do
    [ "$(cat "$T/par.r$i")" = "$want_rand" ] || fail "parallel read $i of big/random"
    [ "$(cat "$T/par.p$i")" = "$want_p1" ] || fail "parallel read $i of p1"
done
vm_umount "$T/mnt"

# SIGTERM unmounts cleanly
vm_mount "$T/disk.raw" "$T/mnt"
kill -TERM "$VM_PID"
wait "$VM_PID" || fail "vdmount exited $? on SIGTERM"
mountpoint -q "$T/mnt" && fail "still mounted after SIGTERM"

# default mode: detach once mounted
"$VDMOUNT" "$T/disk.raw" "$T/mnt" || fail "detached mount"
VM_MOUNTS+=("$T/mnt")
[ "$(cat "$T/mnt/fs/p1/etc/hostname")" = vdmount-guest ] || fail "detached mount: hostname"
fusermount3 -u "$T/mnt" || fail "unmount of the detached mount"
echo "ok"
