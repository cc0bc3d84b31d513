# vdmount-lib.sh - sourced by tests/test-vdmount-*.sh after lib.sh.
#   requires_fuse          skip unless /dev/fuse, fusermount3 and vdmount exist
#   make_rootfs DIR        the file tree that goes into the test file system
#   make_ext4 IMG DIR [mke2fs args]  ext4 image of DIR plus owners, device
#                          nodes and an xattr set with debugfs (no root needed),
#                          $VM_FS_SIZE big (64M unless set)
#   make_mbr_disk OUT FS   FS + 16 MiB disk (80 MiB for 64M): p1 = FS at 1 MiB,
#                          extended p2 with logicals p5, p6
#   vm_mount IMG MNT [ARGS]  vdmount in the foreground, in the background;
#                          returns once mounted (VM_PID is the process)
#   vm_umount MNT          fusermount3 -u and wait for the process to exit 0
: "${VDMOUNT:=$VD_BUILD/fuse-mount/vdmount}"
VM_MOUNTS=()
VM_PIDS=()

vm_cleanup() {
    local m
    for m in "${VM_MOUNTS[@]}"; do
        mountpoint -q "$m" 2>/dev/null && fusermount3 -u -z "$m" 2>/dev/null
    done
    local p
    for p in "${VM_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap vm_cleanup EXIT

requires_fuse() {
    [ -x "$VDMOUNT" ] || skip "vdmount not built (needs libfuse3-dev, libext2fs-dev)"
    [ -c /dev/fuse ] || skip "/dev/fuse missing"
    requires_cmd fusermount3 mountpoint
    # /dev/fuse can exist yet be unusable (containers without the capability)
    mkdir -p "$T/.probe" "$T/.probe-mnt"
    truncate -s 1M "$T/.probe/d.raw"
    if ! "$VDMOUNT" "$T/.probe/d.raw" "$T/.probe-mnt" 2>"$T/.probe/err"; then
        skip "FUSE mounts do not work here: $(cat "$T/.probe/err")"
    fi
    fusermount3 -u "$T/.probe-mnt"
}

make_rootfs() {
    local d=$1
    mkdir -p "$d/etc/ssh" "$d/bin" "$d/dev" "$d/big" "$d/home/user" "$d/empty"
    echo "vdmount-guest" > "$d/etc/hostname"
    printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n' > "$d/etc/passwd"
    echo "secret" > "$d/etc/shadow"; chmod 0640 "$d/etc/shadow"
    echo "key" > "$d/etc/ssh/ssh_host_key"; chmod 0600 "$d/etc/ssh/ssh_host_key"
    printf '#!/bin/sh\necho hi\n' > "$d/bin/hello"; chmod 4755 "$d/bin/hello"
    ln -s ../etc/hostname "$d/bin/hostname-link"
    ln -s /etc/passwd "$d/bin/abs-link"
    ln -s "$(printf 'x%.0s' $(seq 1 200))" "$d/bin/long-link"   # slow symlink
    ln "$d/etc/passwd" "$d/etc/passwd.hard"
    echo "hi" > "$d/home/user/tiny"        # inline data with -O inline_data
    head -c 3000000 /dev/urandom > "$d/big/random"    # extents
    python3 - "$d/big/sparse" <<'PY'
import sys
with open(sys.argv[1], "wb") as f:          # a 5 GiB file, data at 4 GiB+ only
    f.seek((5 << 30) - 4096); f.write(b"tail-of-a-large-file\n".ljust(4096, b"\0"))
PY
    touch -d @1600000000 "$d/etc/hostname"
}

make_ext4() {
    local img=$1 dir=$2 size=${VM_FS_SIZE:-64M}; shift 2
    rm -f "$img"
    truncate -s "$size" "$img"
    mke2fs -q -F -t ext4 -b 4096 -L vdroot -d "$dir" "$@" "$img" "$size"
    # ownership, device nodes and an xattr, set the same way without root
    debugfs -w "$img" -f - >/dev/null 2>&1 <<'EOF'
sif /home/user uid 1000
sif /home/user gid 1000
sif /home/user/tiny uid 1000
sif /home/user/tiny gid 100
cd /dev
mknod null c 1 3
mknod sda b 8 0
mknod big c 300 1000
sif null mode 020666
sif sda mode 060660
cd /
ea_set /home/user/tiny user.color blue
EOF
}

make_mbr_disk() {
    local out=$1 fs=$2 sectors
    sectors=$(($(stat -c %s "$fs") / 512))
    rm -f "$out"
    truncate -s $((sectors * 512 + (16 << 20))) "$out"
    printf 'label: dos\nstart=2048, size=%d, type=83, bootable\nstart=%d, size=30000, type=5\nsize=8000, type=83\nsize=8000, type=82\n' \
        "$sectors" $((2048 + sectors)) | sfdisk -q "$out"
    dd if="$fs" of="$out" bs=1M seek=1 conv=notrunc,sparse status=none
}

# Start vdmount in the foreground (in the background); 0 once mounted, 1
# when it exited instead (its messages are then in $T/vdmount.err).  Each
# mount writes its messages to a file of its own ($VM_ERR), complete once
# it has exited: no pipe to wait for.  No fixed time limit either (a loaded
# machine, or the ASan build, can take seconds to mount): it mounts or it
# exits, and meson's timeout bounds a hang.
vm_try_mount() {
    local img=$1 mnt=$2; shift 2
    mkdir -p "$mnt"
    VM_N=$((${VM_N:-0} + 1))
    VM_ERR=$T/vdmount.$VM_N.err
    "$VDMOUNT" --foreground "$@" "$img" "$mnt" 2>"$VM_ERR" &
    VM_PID=$!
    VM_PIDS+=("$VM_PID")
    VM_MOUNTS+=("$mnt")
    until mountpoint -q "$mnt"; do
        if ! kill -0 "$VM_PID" 2>/dev/null; then
            wait "$VM_PID" || true
            cp "$VM_ERR" "$T/vdmount.err"
            return 1
        fi
        sleep 0.05
    done
}

vm_mount() {
    vm_try_mount "$@" || { cat "$T/vdmount.err" >&2; fail "vdmount $1 exited"; }
}

vm_umount() {
    local mnt=$1
    fusermount3 -u "$mnt" || fail "fusermount3 -u $mnt failed"
    local rc=0
    wait "$VM_PID" || rc=$?
    [ "$rc" = 0 ] || { cat "$VM_ERR" >&2; fail "vdmount exited $rc after unmount"; }
    mountpoint -q "$mnt" && fail "$mnt still mounted"
    return 0
}

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

# Formats libvdisk reads, by their qemu-img names: a fixed list, so that a
# format that stops reading fails the test that mounts it instead of
# dropping out of its list.
vm_readable_formats() {
    echo qcow2 vmdk vdi vpc vhdx qed parallels
}
