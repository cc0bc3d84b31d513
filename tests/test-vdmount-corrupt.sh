#!/bin/bash
# vdmount on damaged ext4 metadata: a corrupt inode, extent header, directory
# block, an extent pointing past the file system, a broken superblock, and
# random byte flips over the metadata and the partition table.  The affected
# files give errors (EIO / EUCLEAN), the rest stays readable, the mount
# process never dies and unmount always succeeds.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdmount-lib.sh"
requires_cmd mke2fs debugfs sfdisk python3 timeout
requires_fuse

make_rootfs "$T/root"
rm -f "$T/root/big/sparse"

# seeded_bytes N SEED: N pseudo-random bytes, the same for the same SEED, so a
# damaged file system is the same on every run
seeded_bytes() {
    python3 -c 'import random, sys; sys.stdout.buffer.write(random.Random(int(sys.argv[2])).randbytes(int(sys.argv[1])))' "$1" "$2"
}

# poke FILE OFFSET HEXBYTES: overwrite bytes in place
poke() {
    python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(int(sys.argv[2])); f.write(bytes.fromhex(sys.argv[3]))' "$@"
}
# inode_off FS PATH: byte offset of PATH's inode in the file system image
inode_off() {
    debugfs -R "imap $2" "$1" 2>/dev/null | python3 -c '
import re, sys
t = sys.stdin.read()
blk = int(re.search(r"located at block (\d+)", t).group(1))
off = int(re.search(r"offset (0x[0-9a-f]+)", t).group(1), 16)
print(blk * 4096 + off)'
}
first_block() {
    debugfs -R "blocks $2" "$1" 2>/dev/null | awk '{print $1}'
}
# expect_error CMD...: the command must fail with EIO or EUCLEAN
expect_error() {
    if "$@" >/dev/null 2>"$T/err"; then fail "no error from: $*"; fi
    grep -q "Input/output error\|Structure needs cleaning" "$T/err" ||
        fail "unexpected error from $*: $(cat "$T/err")"
}
still_fine() {
    local m=$1 what=$2
    kill -0 "$VM_PID" 2>/dev/null || fail "$what: vdmount died"
    cmp -s "$m/fs/p1/etc/passwd" "$T/root/etc/passwd" || fail "$what: etc/passwd unreadable"
    [ "$(cat "$m/fs/p1/home/user/tiny")" = hi ] || fail "$what: home/user/tiny unreadable"
}

# 1. with metadata checksums: a flipped byte in an inode, a garbage
#    directory block
make_ext4 "$T/csum.img" "$T/root" -O metadata_csum
off=$(inode_off "$T/csum.img" /etc/shadow)
poke "$T/csum.img" $((off + 0x28 + 20)) ff          # inside i_block
blk=$(first_block "$T/csum.img" /bin)
seeded_bytes 4096 50 | dd of="$T/csum.img" bs=4096 seek="$blk" conv=notrunc status=none
make_mbr_disk "$T/csum.raw" "$T/csum.img"
vm_mount "$T/csum.raw" "$T/mnt"
expect_error stat "$T/mnt/fs/p1/etc/shadow"
expect_error ls "$T/mnt/fs/p1/bin"
still_fine "$T/mnt" csum
vm_umount "$T/mnt"

# 2. without checksums: a bad extent header magic, an extent that points far
#    past the end of the file system
make_ext4 "$T/plain.img" "$T/root" -O ^metadata_csum
off=$(inode_off "$T/plain.img" /etc/shadow)
poke "$T/plain.img" $((off + 0x28)) 0000             # eh_magic 0xf30a -> 0
off=$(inode_off "$T/plain.img" /big/random)
poke "$T/plain.img" $((off + 0x28 + 12 + 8)) ffffff7f  # first extent: ee_start_lo
make_mbr_disk "$T/plain.raw" "$T/plain.img"
vm_mount "$T/plain.raw" "$T/mnt"
expect_error cat "$T/mnt/fs/p1/etc/shadow"
expect_error cat "$T/mnt/fs/p1/big/random"
still_fine "$T/mnt" plain
vm_umount "$T/mnt"

# 3. a superblock that does not open: fs/p1 exists, reading it fails, the
#    error is in partitions.json, disk and p1 still readable
cp "$T/plain.img" "$T/sb.img"
poke "$T/sb.img" $((1024 + 24)) 40000000              # s_log_block_size = 64
make_mbr_disk "$T/sb.raw" "$T/sb.img"
vm_mount "$T/sb.raw" "$T/mnt"
expect_error ls "$T/mnt/fs/p1"
grep -q '"filesystem_error": "ext2: superblock at 0x100400: block size' "$T/mnt/partitions.json" ||
    fail "superblock error not in partitions.json: $(cat "$T/mnt/partitions.json")"
cmp -s "$T/mnt/p1" "$T/sb.img" || fail "p1 unreadable with a broken superblock"
kill -0 "$VM_PID" || fail "vdmount died on a broken superblock"
vm_umount "$T/mnt"

# 3b. a file system larger than its partition (a truncated copy) is refused
#     before libext2fs sizes its tables from the superblock
head -c $((32 << 20)) "$T/plain.img" > "$T/short.img"
vm_mount "$T/short.img" "$T/mnt"
grep -q 'block count 16384 exceeds the partition (8192 blocks' "$T/mnt/partitions.json" ||
    fail "oversized file system: $(cat "$T/mnt/partitions.json")"
expect_error ls "$T/mnt/fs/disk"
vm_umount "$T/mnt"

# 4. random flips in the metadata area and the partition table; walk
#    everything, read every file.  Never a crash, a hang or a failed unmount.
mkdir -p "$T/small/d"
for i in $(seq 1 40); do echo "file $i" > "$T/small/d/f$i"; done
ln -s d/f1 "$T/small/link"
seeded_bytes 200000 51 > "$T/small/blob"
# the same file system on every run: fixed times, UUID and hash seed, so the
# seeded flips below hit the same bytes of the same metadata each time
find "$T/small" -exec touch -h -d @1700000000 {} +
# the 8 MiB disk with its one partition, copied for each damaged file system
truncate -s 8M "$T/fz-table.raw"
printf 'label: dos\nstart=2048, size=8192, type=83\n' | sfdisk -q "$T/fz-table.raw"
opened=0
for feat in metadata_csum ^metadata_csum,^has_journal; do
    rm -f "$T/fz.img"
    E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t ext4 -b 1024 -O "$feat" -N 128 \
        -U 6b1d3c52-8a0e-4f7a-9d3e-2c5b7a1f0e44 -E hash_seed=0f3a9c1e-5b7d-4e2a-8c6f-1d4b3a2e9f70 \
        -d "$T/small" "$T/fz.img" 4M
    # the eight damaged copies fuzz-SEED.img, one python start for all
    python3 - "$T/fz.img" "$T/fuzz" 8 <<'PY'
import random, shutil, sys
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for seed in range(1, n + 1):
    dst = "%s-%d.img" % (out, seed)
    shutil.copyfile(src, dst)
    r = random.Random(seed)
    with open(dst, "r+b") as f:
        data = bytearray(f.read(256 << 10))      # superblock, descriptors, bitmaps, inodes
        for _ in range(r.choice([4, 16, 64])):
            data[r.randrange(1024 if seed % 3 else 1100, len(data))] ^= 1 << r.randrange(8)
        f.seek(0); f.write(data)
PY
    for seed in $(seq 1 8); do
        mv "$T/fuzz-$seed.img" "$T/fuzz.img"
        cp "$T/fz-table.raw" "$T/fz.raw"
        dd if="$T/fuzz.img" of="$T/fz.raw" bs=512 seek=2048 conv=notrunc status=none
        if [ $((seed % 4)) = 0 ]; then    # and the partition table too
            python3 -c 'import random,sys; r=random.Random(int(sys.argv[2])); f=open(sys.argv[1],"r+b"); f.seek(0x1be+r.randrange(64)); f.write(bytes([r.randrange(256)]))' "$T/fz.raw" "$seed"
        fi
        vm_mount "$T/fz.raw" "$T/mnt"
        ls "$T/mnt/fs/p1" >/dev/null 2>&1 && opened=$((opened + 1))
        timeout 30 find "$T/mnt" -xdev >/dev/null 2>&1 || true
        # head: a corrupt size may claim terabytes of holes
        timeout 30 find "$T/mnt/fs" -xdev -type f -exec head -c 1M {} + >/dev/null 2>&1 || true
        timeout 30 find "$T/mnt/fs" -xdev -type l -exec readlink {} + >/dev/null 2>&1 || true
        python3 -c 'import os,sys
for d, _, fs in os.walk(sys.argv[1]):
    for n in fs:
        try: os.listxattr(os.path.join(d, n), follow_symlinks=False)
        except OSError: pass' "$T/mnt/fs" 2>/dev/null || true
        kill -0 "$VM_PID" 2>/dev/null || fail "vdmount died on fuzzed image ($feat, seed $seed)"
        vm_umount "$T/mnt"
    done
done
echo "fuzz: $opened of 16 damaged file systems still opened and were walked"
[ "$opened" -ge 4 ] || fail "too few fuzzed file systems opened to test anything"
echo "ok"
