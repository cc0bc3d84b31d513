#!/bin/bash
# test-vmdk-read: every VMDK that ../shared/corpus/make-matrix makes and every
# VMDK sample in ../shared/corpus/samples reads (vdconvert IMG out.raw, format
# probed) to exactly the content qemu-img gives, at qemu's virtual size; and
# the delta of a chain reads its parent through the core.
# Samples qemu cannot read:
#  - dissect.hypervisor/sesparse.vmdk: a bare ESXi seSparse extent with no
#    descriptor.  qemu 7.2 probes it as raw and cannot open it as vmdk (it
#    reads seSparse only through a descriptor); libvmdk refuses it.  We read
#    it, bare and through a descriptor we write for it, and check what
#    dissect.hypervisor's own test expects: 512 MiB, the first 16 MiB 'a',
#    the rest zero.  Corrupted copies are refused.
#  - qemu/afl9.vmdk: fuzzed (qemu: "L1 size too big"); refused.
#  - qemu/iotest-version3.vmdk: qemu reads it (ESXi stream, version 3, grain
#    directory at the end); libvmdk cannot, because it tries to open the
#    extent file named in the embedded descriptor.  We read it like qemu.
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img python3
requires_shared
S=$SHARED/corpus/samples
M=$(matrix_dir)

check_same() {   # IMG [EXPECTED_SHA]
    local img=$1 sha=${2:-} out=$T/out.raw
    rm -f "$out"
    "$VDCONVERT" "$img" "$out" || fail "vdconvert $img"
    "$VDCONVERT" info "$img" | matches "file format: vmdk" || fail "$img: not probed as vmdk"
    local qsize
    qsize=$(qemu-img info -f vmdk --output=json "$img" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    [ "$(stat -c %s "$out")" = "$qsize" ] || fail "$img: size $(stat -c %s "$out") != qemu's $qsize"
    qemu-img compare -q -f vmdk "$img" -F raw "$out" || fail "$img: content differs from qemu-img's"
    # hashing a multi-GiB sparse output costs minutes here; above 256 MiB
    # qemu-img compare (which skips holes) is the check
    if [ -n "$sha" ] && [ "$qsize" -le $((256 << 20)) ]; then
        [ "$(file_sha "$out")" = "$sha" ] || fail "$img: sha256 differs from manifest"
    fi
    echo "ok: $(basename "$img")"
}

expect_error() {  # IMG PATTERN
    local msg
    if msg=$("$VDCONVERT" "$1" "$T/err.raw" 2>&1); then
        fail "$1: opened, expected an error matching '$2'"
    fi
    [ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] || fail "$1: error is not one line: $msg"
    grep -q -- "$2" <<<"$msg" || fail "$1: error '$msg' does not match '$2'"
    echo "ok (refused): $msg"
}

# --- make-matrix images, with the manifest's sha -------------------------
# The manifest's sha is qemu's reading too (lib.sh's matrix_read); the
# 2 GiB images are not hashed, qemu-img compare judges them (check_same).
n=0
while IFS=$'\t' read -r file fmt _ size sha _ qemu _; do
    [ "$fmt" = vmdk ] || continue
    if [ "$size" -le $((256 << 20)) ]; then
        matrix_read "$M/$file" "$sha" "$qemu"
        "$VDCONVERT" info "$M/$file" | matches "file format: vmdk" || fail "$file: not probed as vmdk"
        echo "ok: $(basename "$file")"
    else
        check_same "$M/$file" "$sha"
    fi
    n=$((n + 1))
done < <(grep -v '^#' "$M/MANIFEST.tsv")
[ "$n" -ge 17 ] || fail "only $n vmdk images in the matrix manifest"

# the delta of the chain: its backing is the parent named in the descriptor
"$VDCONVERT" info "$M/img/vmdkchain-delta.vmdk" | matches "backing file: vmdkchain-base.vmdk" ||
    fail "delta: backing file not reported"

# --- samples --------------------------------------------------------------
unpack() {  # corpus-relative path -> file in $T
    local src=$S/$1 dst=$T/$(basename "${1%.*}")
    case $1 in
    *.bz2) bzip2 -dc "$src" >"$dst" ;;
    *.gz) gzip -dc "$src" >"$dst" ;;
    *) cp "$src" "$dst" ;;
    esac
    echo "$dst"
}
while IFS=$'\t' read -r file fmt _ sha _; do
    [ "$fmt" = vmdk ] || continue
    check_same "$(unpack "$file")" "$sha"
done < <(grep -v '^file' "$S/EXPECTED.tsv")

expect_error "$(unpack qemu/afl9.vmdk.bz2)" "vmdk: .*"
se=$(unpack dissect.hypervisor/sesparse.vmdk.gz)
check_sesparse() {  # IMG
    rm -f "$T/se.raw"
    "$VDCONVERT" "$1" "$T/se.raw" || fail "seSparse $1"
    python3 - "$T/se.raw" <<'PY' || fail "seSparse $1: content is not 16 MiB of 'a' then zeroes"
import sys
with open(sys.argv[1], "rb") as f:
    a = f.read(16 << 20)
    ok = a == b"a" * (16 << 20)
    n = len(a)
    while ok and (b := f.read(1 << 20)):
        ok = b == bytes(len(b)); n += len(b)
sys.exit(0 if ok and n == 512 << 20 else 1)
PY
    echo "ok: seSparse $(basename "$1")"
}
check_sesparse "$se"
printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="seSparse"\n\nRW 1048576 SESPARSE "sesparse.vmdk"\n' >"$T/se-desc.vmdk"
check_sesparse "$T/se-desc.vmdk"
python3 - "$se" "$T" <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
gt = struct.unpack_from("<Q", d, 144)[0] * 512
gd = struct.unpack_from("<Q", d, 128)[0] * 512
def out(name, patch):
    b = bytearray(d); patch(b); open(f"{sys.argv[2]}/{name}", "wb").write(b)
out("se-version.vmdk", lambda b: struct.pack_into("<Q", b, 8, 0x300000001))
out("se-gte.vmdk", lambda b: struct.pack_into("<Q", b, gt, 0x3000_0fff_ffff_ffff))
out("se-gde.vmdk", lambda b: struct.pack_into("<Q", b, gd, 0x1000_0000_7fff_ffff))
out("se-gtetype.vmdk", lambda b: struct.pack_into("<Q", b, gt, 0x7000_0000_0000_0000))
PY
expect_error "$T/se-version.vmdk" "seSparse version"
expect_error "$T/se-gte.vmdk" "past end of file"
expect_error "$T/se-gde.vmdk" "outside its region"
expect_error "$T/se-gtetype.vmdk" "invalid type"
echo "all ok"
