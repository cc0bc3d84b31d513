#!/bin/bash
# test-parallels-hostile: corrupt and hostile Parallels images and bundles
# give one clear error line, never a crash, a hang or a huge allocation:
#  - image files: BAT entries past EOF or into the header/BAT, zero and huge
#    cluster sizes, a BAT running past EOF, absurd sizes, unknown versions,
#    truncated headers;
#  - bundles: a DiskDescriptor.xml over 1 MiB, a DTD with an entity bomb,
#    malformed XML, a wrong root, a missing or folder-escaping image file,
#    gaps between storages, snapshot loops, several leaves without TopGUID,
#    unknown image types, a storage without an image for the current snapshot,
#    a non-numeric or absurd Disk_size, a corrupt image inside a bundle.
# Memory is capped with ulimit so a huge allocation fails instead of passing.
source "$(dirname "$0")/lib.sh"
requires_cmd qemu-img qemu-io python3

expect_error() {  # NAME PATTERN ARGS...
    local name=$1 pat=$2 msg rc
    shift 2
    set +e
    msg=$(run_capped "$VDCONVERT" "$@" 2>&1 >/dev/null)
    rc=$?
    set -e
    [ $rc -ne 0 ] || fail "$name: accepted"
    [ $rc -lt 124 ] || fail "$name: crashed or hung (rc $rc): $msg"
    [ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] || fail "$name: not one line: $msg"
    grep -q -- "$pat" <<<"$msg" || fail "$name: '$msg' lacks '$pat'"
    echo "ok: $name: $msg"
}

# --- image files ------------------------------------------------------------
qemu-img create -q -f parallels -o cluster_size=64K "$T/good.hds" 4M
qemu-io -f parallels -c "write -P 0x41 64K 64K" "$T/good.hds" >/dev/null
cases=(
"bat-past-eof|points past end of file|struct.pack_into('<I', b, 64 + 4*1, 1000)"
"bat-into-header|into the header/BAT|b[:16] = b'WithoutFreeSpace'; struct.pack_into('<I', b, 32, 200); struct.pack_into('<I', b, 64 + 4*1, 1)"
"tracks-zero|cluster of 0 sectors|struct.pack_into('<I', b, 28, 0)"
"tracks-huge|cluster of 4294967295 sectors|struct.pack_into('<I', b, 28, 0xffffffff)"
"bat-huge|BAT larger than|struct.pack_into('<I', b, 32, 0xfffffff0)"
"bat-past-file|runs past end of file|struct.pack_into('<I', b, 32, 100000)"
"sectors-huge|is too large|struct.pack_into('<Q', b, 36, 1 << 62)"
"version-3|version 3|struct.pack_into('<I', b, 16, 3)"
"truncated|too short for a header|b[:] = b[:40]"
)
# every mutant in one python run, then every conversion through run_many
# (vdconvert's main() in a process of its own forked by mutant-runner,
# run_capped's limits) and judged (lib.sh's write_mutants and
# convert_mutants).  A truncated file without a full header probes as raw:
# the format is forced.
write_mutants --cases "$T/good.hds" hds "${cases[@]}" </dev/null
convert_mutants -f parallels hds /dev/null "${cases[@]}"

# A format extension offset past the end of the file: the image reads (we do
# not use extensions) but `check` reports the damaged header.
python3 -c "
import struct
b = bytearray(open('$T/good.hds', 'rb').read())
b[:16] = b'WithouFreSpacExt'
struct.pack_into('<Q', b, 56, len(b) // 512 + 8)
open('$T/ext-past-eof.hds', 'wb').write(b)"
rc=0; "$VDCONVERT" check "$T/ext-past-eof.hds" >"$T/chk.txt" 2>&1 || rc=$?
[ $rc = 2 ] && grep -q "format extension offset .* past end of file" "$T/chk.txt" ||
    fail "ext_off past end of file: check exit $rc: $(cat "$T/chk.txt")"
echo "ok: ext-past-eof: $(grep -m1 "past end" "$T/chk.txt")"

# --- bundles -------------------------------------------------------------------
B=$T/b.hdd
mkdir "$B"
cp "$T/good.hds" "$B/disk.hds"
G="{5fbaabe3-6958-40ff-92a7-860e329aab41}"
G2="{11111111-6958-40ff-92a7-860e329aab41}"
ROOT="{00000000-0000-0000-0000-000000000000}"
xml() {  # STORAGES SNAPSHOTS [DISK_SIZE]
    printf '<?xml version="1.0"?>\n<Parallels_disk_image Version="1.0">\n'
    printf '<Disk_Parameters><Disk_size>%s</Disk_size></Disk_Parameters>\n' "${3:-8192}"
    printf '<StorageData>%s</StorageData>\n<Snapshots>%s</Snapshots>\n</Parallels_disk_image>\n' "$1" "$2"
}
storage() {  # START END FILE [GUID] [TYPE]
    printf '<Storage><Start>%s</Start><End>%s</End><Blocksize>128</Blocksize><Image><GUID>%s</GUID><Type>%s</Type><File>%s</File></Image></Storage>' \
        "$1" "$2" "${4:-$G}" "${5:-Compressed}" "$3"
}
shot() { printf '<Shot><GUID>%s</GUID><ParentGUID>%s</ParentGUID></Shot>' "$1" "$2"; }

xml "$(storage 0 8192 disk.hds)" "$(shot $G $ROOT)" >"$B/DiskDescriptor.xml"
"$VDCONVERT" "$B" "$T/ok.raw" || fail "the base bundle does not read"
qemu-img compare -q -f raw "$T/ok.raw" -F parallels "$B/disk.hds" || fail "base bundle content"
echo "ok: base bundle reads"

bundle_case() {  # NAME PATTERN (descriptor already written)
    expect_error "bundle $1" "$2" "$B" "$T/out.raw"
    rm -f "$T/out.raw"
}

python3 -c "
import sys
pad = '<!-- ' + 'x' * (2 << 20) + ' -->\n'
sys.stdout.write(open('$B/DiskDescriptor.xml').read().replace('<StorageData>', pad + '<StorageData>'))
" >"$B/big.xml" && mv "$B/big.xml" "$B/DiskDescriptor.xml"
bundle_case huge "more than the 1048576 accepted"

{
    printf '<?xml version="1.0"?>\n<!DOCTYPE Parallels_disk_image [\n<!ENTITY a "aaaaaaaaaaaaaaaaaaaa">\n'
    prev=a
    for e in b c d e f g h i j; do
        printf '<!ENTITY %s "%s">\n' $e "$(printf "&$prev;%.0s" 1 2 3 4 5 6 7 8 9 10)"
        prev=$e
    done
    printf ']>\n<Parallels_disk_image><Disk_Parameters><Disk_size>&j;</Disk_size></Disk_Parameters></Parallels_disk_image>\n'
} >"$B/DiskDescriptor.xml"
bundle_case entity-bomb "DTD\|not well-formed"

printf '<Parallels_disk_image><Disk_Parameters>' >"$B/DiskDescriptor.xml"
bundle_case malformed "not well-formed"

xml "$(storage 0 8192 disk.hds)" "$(shot $G $ROOT)" | sed 's/Parallels_disk_image Version/Parallels_disk_image_x Version/; s|</Parallels_disk_image>|</Parallels_disk_image_x>|' >"$B/DiskDescriptor.xml"
bundle_case wrong-root "unknown image format\|root element"

xml "$(storage 0 8192 missing.hds)" "$(shot $G $ROOT)" >"$B/DiskDescriptor.xml"
bundle_case missing-file "missing.hds"

cp "$T/good.hds" "$T/outside.hds"
xml "$(storage 0 8192 ../outside.hds)" "$(shot $G $ROOT)" >"$B/DiskDescriptor.xml"
bundle_case escaping-path "leaves the image's folder"

xml "$(storage 0 4096 disk.hds)$(storage 4608 8192 disk.hds)" "$(shot $G $ROOT)" >"$B/DiskDescriptor.xml"
bundle_case storage-gap "gap or overlap"

xml "$(storage 0 4096 disk.hds)" "$(shot $G $ROOT)" >"$B/DiskDescriptor.xml"
bundle_case storage-short "before the disk size"

xml "$(storage 0 8192 disk.hds)" "<TopGUID>$G</TopGUID>$(shot $G $G2)$(shot $G2 $G)" >"$B/DiskDescriptor.xml"
bundle_case snapshot-loop "loops"

xml "$(storage 0 8192 disk.hds)" "$(shot $G $ROOT)$(shot $G2 $ROOT)" >"$B/DiskDescriptor.xml"
bundle_case two-leaves "2 snapshot leaves"

xml "$(storage 0 8192 disk.hds $G Sparse)" "$(shot $G $ROOT)" >"$B/DiskDescriptor.xml"
bundle_case unknown-type "type 'Sparse'"

xml "$(storage 0 8192 disk.hds $G2)" "$(shot $G $ROOT)" >"$B/DiskDescriptor.xml"
bundle_case no-image-for-snapshot "no image for snapshot"

xml "$(storage 0 8192 disk.hds)" "$(shot $G $ROOT)" "-5" >"$B/DiskDescriptor.xml"
bundle_case disk-size-negative "Disk_size"

xml "$(storage 0 8192 disk.hds)" "$(shot $G $ROOT)" "99999999999999999999" >"$B/DiskDescriptor.xml"
bundle_case disk-size-overflow "Disk_size"

xml "$(storage 0 8192 disk.hds)" "$(shot $G $ROOT)" "36028797018963968" >"$B/DiskDescriptor.xml"
bundle_case disk-size-huge "too large"

cp "$T/bat-past-eof.hds" "$B/disk.hds"
xml "$(storage 0 8192 disk.hds)" "$(shot $G $ROOT)" >"$B/DiskDescriptor.xml"
bundle_case corrupt-image "disk.hds: parallels: BAT entry 1"

# a small, well-formed DTD: refused too (entities would expand when read)
xml "$(storage 0 8192 disk.hds)" "$(shot $G $ROOT)" |
    sed 's|^<Parallels_disk_image |<!DOCTYPE Parallels_disk_image [ <!ENTITY sz "8192"> ]>\n<Parallels_disk_image |; s|<Disk_size>8192<|<Disk_size>\&sz;<|' >"$B/DiskDescriptor.xml"
grep -q '&sz;' "$B/DiskDescriptor.xml" || fail "DTD fixture"
bundle_case small-dtd "has a DTD"
