#!/bin/bash
# vdmount partitions: MBR (primary, extended, logical) and GPT disks made by
# sfdisk; every pN equals its byte range as sfdisk reports it, and
# partitions.json agrees with sfdisk --json.  ext2 and ext3 are recognised.
# Damaged tables (GPT primary, both GPT headers, an MBR entry past the end)
# give a working mount with errors reported; mount point errors are clear.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/vdmount-lib.sh"
requires_cmd mke2fs sfdisk python3
requires_fuse

# Check every partition file against sfdisk's table, and the JSON.
check_table() {
    local img=$1 m=$2 what=$3
    sfdisk --json "$img" > "$T/sfdisk.json"
    python3 - "$T/sfdisk.json" "$m" "$img" "$what" <<'PY' || fail "$what: partitions differ"
import json, os, sys, hashlib
sf = json.load(open(sys.argv[1]))["partitiontable"]
m, img, what = sys.argv[2], sys.argv[3], sys.argv[4]
mine = json.load(open(os.path.join(m, "partitions.json")))
assert mine["scheme"] == {"dos": "mbr", "gpt": "gpt"}[sf["label"]], mine["scheme"]
ss = sf.get("sectorsize", 512)
byidx = {p["index"]: p for p in mine["partitions"]}
assert len(byidx) == len(sf["partitions"]), (sorted(byidx), sf["partitions"])
with open(img, "rb") as raw:
    for p in sf["partitions"]:
        idx = int(p["node"].rsplit(img, 1)[1])
        q = byidx[idx]
        start, size = p["start"] * ss, p["size"] * ss
        assert q["start"] == start and q["length"] == size, (idx, q, p)
        f = os.path.join(m, "p%d" % idx)
        assert os.path.getsize(f) == size, (f, os.path.getsize(f), size)
        if q.get("extended"):
            assert p["type"] in ("5", "f", "85"), p
            continue
        if sf["label"] == "gpt":
            assert q["type"] == p["type"].lower(), (q["type"], p["type"])
            assert q["guid"] == p["uuid"].lower(), (q["guid"], p["uuid"])
            assert q["name"] == p.get("name", ""), (q["name"], p.get("name"))
        else:
            assert int(q["type"], 16) == int(p["type"], 16), (q["type"], p["type"])
            assert q["bootable"] == bool(p.get("bootable")), (q, p)
        raw.seek(start)
        want = hashlib.sha256(raw.read(size)).hexdigest()
        got = hashlib.sha256(open(f, "rb").read()).hexdigest()
        assert want == got, "p%d content differs" % idx
print("ok", what, len(sf["partitions"]), "partitions")
PY
}

mkdir -p "$T/r2/etc" "$T/r3/etc"
echo ext2-fs > "$T/r2/etc/hostname"
echo ext3-fs > "$T/r3/etc/hostname"
mke2fs -q -F -t ext2 -d "$T/r2" "$T/ext2.img" 8M
mke2fs -q -F -t ext3 -d "$T/r3" "$T/ext3.img" 8M

# MBR: p1 ext2, extended p2 holding logicals p5 (ext3) and p6, p3 a bootable
# swap type, p4 a primary after the extended one
truncate -s 64M "$T/mbr.raw"
printf 'label: dos\nstart=2048, size=16384, type=83\nstart=20480, size=60000, type=f\nstart=90000, size=20000, type=82, bootable\nstart=22528, size=16384, type=83\nstart=40960, size=8000, type=83\nstart=81920, size=8000, type=8e\n' |
    sfdisk -q "$T/mbr.raw"
dd if="$T/ext2.img" of="$T/mbr.raw" bs=512 seek=2048 conv=notrunc status=none
p5=$(sfdisk --json "$T/mbr.raw" | python3 -c 'import json,sys; print([p["start"] for p in json.load(sys.stdin)["partitiontable"]["partitions"] if p["node"].endswith("5")][0])')
dd if="$T/ext3.img" of="$T/mbr.raw" bs=512 seek="$p5" conv=notrunc status=none
vm_mount "$T/mbr.raw" "$T/mnt"
check_table "$T/mbr.raw" "$T/mnt" mbr
[ "$(cat "$T/mnt/fs/p1/etc/hostname")" = ext2-fs ] || fail "mbr: ext2 in p1"
[ "$(cat "$T/mnt/fs/p5/etc/hostname")" = ext3-fs ] || fail "mbr: ext3 in logical p5"
grep -q '"filesystem": "ext2"' "$T/mnt/partitions.json" || fail "ext2 not named"
grep -q '"filesystem": "ext3"' "$T/mnt/partitions.json" || fail "ext3 not named"
[ "$(ls "$T/mnt/fs")" = "$(printf 'p1\np5')" ] || fail "fs/ lists $(ls "$T/mnt/fs")"
vm_umount "$T/mnt"

# GPT with names, file systems at an offset
truncate -s 64M "$T/gpt.raw"
printf 'label: gpt\nstart=2048, size=16384, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root fs"\nstart=20480, size=16384, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name="swap"\nstart=40960, size=16384, name="data-\xc3\xa9t\xc3\xa9"\n' |
    sfdisk -q "$T/gpt.raw"
dd if="$T/ext3.img" of="$T/gpt.raw" bs=512 seek=2048 conv=notrunc status=none
dd if="$T/ext2.img" of="$T/gpt.raw" bs=512 seek=40960 conv=notrunc status=none
vm_mount "$T/gpt.raw" "$T/mnt"
check_table "$T/gpt.raw" "$T/mnt" gpt
[ "$(cat "$T/mnt/fs/p1/etc/hostname")" = ext3-fs ] || fail "gpt: ext3 in p1"
[ "$(cat "$T/mnt/fs/p3/etc/hostname")" = ext2-fs ] || fail "gpt: ext2 in p3"
vm_umount "$T/mnt"

# GPT primary header damaged: the backup is used and the damage reported
cp "$T/gpt.raw" "$T/gpt-bad1.raw"
printf 'XXXX' | dd of="$T/gpt-bad1.raw" bs=1 seek=$((512 + 16)) conv=notrunc status=none
vm_mount "$T/gpt-bad1.raw" "$T/mnt"
grep -q '"gpt_backup_used": true' "$T/mnt/partitions.json" || fail "backup GPT not used"
grep -q '"error": "gpt: primary header damaged' "$T/mnt/partitions.json" || fail "damage not reported"
[ "$(cat "$T/mnt/fs/p1/etc/hostname")" = ext3-fs ] || fail "gpt backup: p1"
vm_umount "$T/mnt"

# both GPT headers damaged: no partitions, the error in partitions.json,
# the disk itself still readable
cp "$T/gpt-bad1.raw" "$T/gpt-bad2.raw"
printf 'XXXX' | dd of="$T/gpt-bad2.raw" bs=1 seek=$(((64 << 20) - 512)) conv=notrunc status=none
vm_mount "$T/gpt-bad2.raw" "$T/mnt"
grep -q '"error": "gpt: primary header: .*backup header' "$T/mnt/partitions.json" ||
    fail "both headers damaged: $(cat "$T/mnt/partitions.json")"
[ ! -e "$T/mnt/p1" ] || fail "p1 shown from a damaged GPT"
cmp -s "$T/mnt/disk" "$T/gpt-bad2.raw" || fail "disk unreadable with a damaged GPT"
vm_umount "$T/mnt"
if "$VDMOUNT" --cat "$T/gpt-bad2.raw" p1 >/dev/null 2>&1; then fail "--cat p1 of damaged GPT"; fi

# an MBR entry running past the end of the disk is truncated, as Linux does
truncate -s 64M "$T/mbr-long.raw"
printf 'label: dos\nstart=2048, size=16384, type=83\n' | sfdisk -q "$T/mbr-long.raw"
python3 - "$T/mbr-long.raw" <<'PY'
import struct, sys
with open(sys.argv[1], "r+b") as f:       # p2: starts at 32 MiB, 1 GiB long
    f.seek(0x1be + 16); f.write(bytes([0, 0, 0, 0, 0x83, 0, 0, 0]) + struct.pack("<II", 65536, 1 << 21))
PY
vm_mount "$T/mbr-long.raw" "$T/mnt"
[ "$(stat -c %s "$T/mnt/p2")" = $((32 << 20)) ] || fail "p2 not truncated to the disk"
grep -q 'extends past end of disk' "$T/mnt/partitions.json" || fail "truncation not reported"
vm_umount "$T/mnt"

# mount point errors
if "$VDMOUNT" "$T/mbr.raw" "$T/nonexistent" 2>"$T/err"; then fail "missing mount point accepted"; fi
grep -q "nonexistent: No such file" "$T/err" || fail "missing: $(cat "$T/err")"
mkdir -p "$T/full"; touch "$T/full/x"
if "$VDMOUNT" "$T/mbr.raw" "$T/full" 2>"$T/err"; then fail "non-empty mount point accepted"; fi
grep -q "not empty" "$T/err" || fail "non-empty: $(cat "$T/err")"
vm_mount "$T/mbr.raw" "$T/mnt"
if "$VDMOUNT" "$T/mbr.raw" "$T/mnt" 2>"$T/err"; then fail "busy mount point accepted"; fi
grep -q "busy" "$T/err" || fail "busy: $(cat "$T/err")"
vm_umount "$T/mnt"
# a mount whose server was killed: refused as busy, and unmount still works
vm_mount "$T/mbr.raw" "$T/mnt"
kill -KILL "$VM_PID"; wait "$VM_PID" 2>/dev/null || true
if "$VDMOUNT" "$T/mbr.raw" "$T/mnt" 2>"$T/err"; then fail "stale mount point accepted"; fi
grep -q "is busy" "$T/err" || fail "stale: $(cat "$T/err")"
fusermount3 -u "$T/mnt" || fail "unmount of a stale mount"
mountpoint -q "$T/mnt" && fail "stale mount still there"
if "$VDMOUNT" "$T/nosuch.raw" "$T/mnt" 2>"$T/err"; then fail "missing image accepted"; fi
grep -q "nosuch.raw" "$T/err" || fail "missing image: $(cat "$T/err")"
echo "ok"
