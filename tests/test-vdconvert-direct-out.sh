#!/bin/bash
# -t none (and directsync) for image targets: the target's file is switched
# to O_DIRECT (strace shows the fcntl on it), what it reads back equals the
# source for qemu-img compare, qemu-img check finds it clean, and (where
# the page cache is not the file system's own storage) almost nothing of it
# is left in the page cache.  Formats: qcow2, vdi, monolithicSparse vmdk,
# vhd, and the compressed outputs (qcow2 -c, streamOptimized vmdk), whose
# clusters are packed at byte granularity.  The content puts metadata and
# data at unaligned places: 512-byte and 1000-byte pieces, zeroes inside
# clusters of data, a size that is not a whole number of clusters.
# (test-vdconvert-direct-fallback.sh: a file system that refuses O_DIRECT.)
. "$(dirname "$0")/lib.sh"
requires_cmd qemu-img strace python3
V=$VDCONVERT

head -c 4096 /dev/zero >"$T/probe"
dd if="$T/probe" of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null ||
    skip "the test folder's file system refuses O_DIRECT"
cached_check=1
[ "$(stat -f -c %T "$T")" = tmpfs ] && cached_check=0   # its page cache is the file
command -v fincore >/dev/null || cached_check=0

# 6 MiB - 512: seeded data (the same bytes every run), a written zero MiB,
# pieces of 512 and 1000 bytes, 4 KiB of zeroes inside 64 KiB of data.
python3 - "$T/in.raw" <<'EOF'
import random, sys
r = random.Random(18)
b = bytearray(6 * 1024 * 1024 - 512)
b[0:2 << 20] = r.randbytes(2 << 20)
b[(3 << 20):(3 << 20) + 1000] = r.randbytes(1000)
b[(4 << 20) + 512:(4 << 20) + 1024] = r.randbytes(512)
b[5 << 20:(5 << 20) + 65536] = r.randbytes(65536)
b[(5 << 20) + 32768:(5 << 20) + 36864] = bytes(4096)
b[-700:] = r.randbytes(700)
open(sys.argv[1], "wb").write(b)
EOF

# Each case is converted once.  The plain run traces it (strace) to see the
# target switched to O_DIRECT; the sanitizer run does not: LeakSanitizer
# cannot work under ptrace, and the switch is the same code in both builds.
# What ASan adds is the check of every access, and of leaks at exit, in the
# conversion that is then judged like the plain run's (page cache, content,
# both checks).
san=0
case "$(ldd "$V" 2>/dev/null)" in *libasan*) san=1 ;; esac

# direct_case LABEL MODE OUT_OPTS...
direct_case() {
    local label=$1 mode=$2 out=$T/out.img
    shift 2
    rm -f "$out"
    if [ $san = 1 ]; then
        "$V" -q -t "$mode" -f raw "$@" "$T/in.raw" "$out" || fail "$label: vdconvert failed"
    else
        # (--seccomp-bpf: only the traced fcntl calls stop the process)
        traced -f -qq --seccomp-bpf -y -e trace=fcntl -o "$T/trace" \
            "$V" -q -t "$mode" -f raw "$@" "$T/in.raw" "$out" ||
            fail "$label: vdconvert under strace failed"
        # the target is made under a hidden name beside OUT (a VMDK: in a
        # hidden folder under its own name), then renamed
        matches "F_SETFL, O_RDWR|O_DIRECT" <(grep -F "out.img" "$T/trace") ||
            fail "$label: the target was not switched to O_DIRECT: $(grep -F "$T/" "$T/trace")"
    fi
    if [ $cached_check = 1 ]; then
        local cached size
        cached=$(fincore -n -b -o RES "$out")
        size=$(stat -c %s "$out")
        # what create wrote (header, tables) and the last block may be cached
        [ "$cached" -le $((size / 4)) ] ||
            fail "$label: $cached of $size bytes of the target are in the page cache"
    fi
    qemu-img compare -q -f raw "$T/in.raw" "$out" || fail "$label: content differs"
    local rc=0
    qemu-img check -q "$out" >"$T/check" 2>&1 || rc=$?
    [ $rc = 0 ] || { [ $rc = 63 ] && matches "does not support checks" "$T/check"; } ||
        fail "$label: qemu-img check: $(cat "$T/check")"
    "$V" check "$out" >/dev/null || fail "$label: vdisk check fails"
    echo "$label: ok"
}

direct_case "qcow2" none -O qcow2
direct_case "qcow2 directsync" directsync -O qcow2
direct_case "qcow2, 512-byte clusters" none -O qcow2 -o cluster_size=512
direct_case "vdi" none -O vdi
direct_case "vmdk" none -O vmdk
direct_case "vhd" none -O vpc
direct_case "qcow2 -c" none -O qcow2 -c
direct_case "streamOptimized vmdk" none -O vmdk -o subformat=streamOptimized

# A new VDI block is assembled in one buffer kept for the image (1bc8c93),
# not in a fresh aligned 1 MiB buffer per block: with glibc that was an mmap
# and a munmap per block (under ASan, mmaps), and made raw -> vdi 4-17x
# slower.  So the memory mapping calls of a -t none conversion to VDI must
# not grow with the blocks written: 4 blocks with data against 36.  With a
# buffer per block, the 32 more blocks made 64 more calls (ASan: 78); with
# the kept buffer, none (ASan: 10, its allocator's own).
vdi_maps() {  # BLOCKS: mmap and munmap calls of the conversion
    python3 - "$T/b.raw" "$1" <<'EOF'
import sys
with open(sys.argv[1], 'wb') as f:
    n = int(sys.argv[2]); f.truncate(n << 20)
    for i in range(n):
        f.seek(i << 20); f.write(b'\x5a' * 512)
EOF
    rm -f "$T/b.vdi"
    traced -f -qq --seccomp-bpf -c -e trace=mmap,munmap -o "$T/maps" \
        "$V" -q -t none -O vdi "$T/b.raw" "$T/b.vdi" || fail "vdi buffer: vdconvert under strace failed"
    awk '$NF == "mmap" || $NF == "munmap" { n += $4 } END { print n + 0 }' "$T/maps"
}
few=$(vdi_maps 4)
many=$(vdi_maps 36)
[ $((many - few)) -lt 32 ] ||
    fail "vdi: a buffer per new block? $few mmap/munmap calls for 4 blocks, $many for 36"
echo "vdi block buffer: $few mmap/munmap calls for 4 blocks, $many for 36: ok"
echo "ok"
