#!/bin/bash
# vdmount on the project's Debian guest (tests/fixtures/make-guest-image),
# converted to every format libvdisk reads: `disk` equals qemu-img's raw
# conversion, and the whole tree under fs/p1 (type, mode, owner, size,
# mtime, content, symlink targets) equals what debugfs rdump extracts from
# the raw partition.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdmount-lib.sh"
. "$(dirname "$0")/vdboot-lib.sh"
requires_cmd qemu-img debugfs sfdisk python3
requires_fuse
type guest_dir >/dev/null 2>&1 || skip "no guest_dir helper in vdboot-lib.sh"
g=$(guest_dir)

# the reference: partition 1 extracted with debugfs
start=$(sfdisk --json "$g/guest.raw" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][0]["start"])')
dd if="$g/guest.raw" of="$T/p1.img" bs=512 skip="$start" status=none
mkdir -p "$T/ref"
debugfs -R "rdump / $T/ref" "$T/p1.img" >/dev/null 2>&1
[ "$(cat "$T/ref/etc/hostname")" = vdisk-guest ] || fail "reference extraction failed"

compare_tree() {
    python3 - "$T/ref" "$1" "$2" <<'PY'
import hashlib, os, stat, sys
ref, mnt, what = sys.argv[1:4]
def walk(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = os.lstat(p)
    return out
a, b = walk(ref), walk(mnt)
bad = []
for rel, sa in sorted(a.items()):
    sb = b.get(rel)
    if sb is None:
        bad.append("missing " + rel); continue
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        bad.append("type " + rel); continue
    pa, pb = os.path.join(ref, rel), os.path.join(mnt, rel)
    if stat.S_ISLNK(sa.st_mode):
        if os.readlink(pa) != os.readlink(pb): bad.append("link " + rel)
        continue
    if (sa.st_mode, sa.st_uid, sa.st_gid) != (sb.st_mode, sb.st_uid, sb.st_gid):
        bad.append("mode/owner %s %o %d:%d vs %o %d:%d" % (rel, sa.st_mode, sa.st_uid,
                   sa.st_gid, sb.st_mode, sb.st_uid, sb.st_gid))
    if int(sa.st_mtime) != int(sb.st_mtime) and not stat.S_ISDIR(sa.st_mode):
        bad.append("mtime " + rel)
    if stat.S_ISREG(sa.st_mode):
        ha = hashlib.sha256(open(pa, "rb").read()).hexdigest()
        hb = hashlib.sha256(open(pb, "rb").read()).hexdigest()
        if ha != hb: bad.append("content " + rel)
extra = [r for r in b if r not in a and not stat.S_ISCHR(b[r].st_mode)
         and not stat.S_ISBLK(b[r].st_mode)]
if extra: bad.append("only in the mount: " + ", ".join(sorted(extra)[:5]))
if bad:
    print(what + ": " + "; ".join(bad[:10])); sys.exit(1)
print("ok %s: %d entries match" % (what, len(a)))
PY
}

# Under ASan the whole tree is compared on raw and qcow2 only: the tree walk
# runs the same ext2 code over whatever bytes the format layer returns, and
# each format's own read code still runs under ASan for all of `disk` (and
# the ext2 code over it for etc/hostname).  The plain run compares the tree
# on every format.
tree_formats=all
case "$(ldd "$VDMOUNT")" in *libasan*) tree_formats="raw qcow2" ;; esac
for f in raw $(vm_readable_formats "$g/guest.raw"); do
    img="$T/guest.$f"
    if [ "$f" = raw ]; then img="$g/guest.raw"; else qemu-img convert -f raw -O "$f" "$g/guest.raw" "$img"; fi
    vm_mount "$img" "$T/mnt"
    [ "$(sha_of "$T/mnt/disk")" = "$(raw_sha "$img" "$f")" ] || fail "$f: disk differs from qemu-img"
    [ "$(cat "$T/mnt/fs/p1/etc/hostname")" = vdisk-guest ] || fail "$f: etc/hostname"
    if [ "$tree_formats" = all ] || [[ " $tree_formats " == *" $f "* ]]; then
        compare_tree "$T/mnt/fs/p1" "$f" || fail "$f: tree differs"
    else
        echo "ok $f: disk and etc/hostname (the tree: raw and qcow2 under ASan, all in the plain run)"
    fi
    vm_umount "$T/mnt"
    [ "$f" = raw ] || rm -f "$img"
done
echo "ok"
