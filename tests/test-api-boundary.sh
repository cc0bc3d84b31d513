#!/bin/bash
# The public API is the boundary: libvdisk.so exports the vd_* functions of
# the public headers only (the version script gen-map.py makes, one node
# VDISK_0), the programs link libvdisk.so, nothing outside the library
# and the drivers includes their private headers, and a program built
# against the installed headers and pkg-config file alone compiles and runs.
. "$(dirname "$0")/lib.sh"
requires_cmd nm readelf cc pkg-config
so="$VD_BUILD/libvdisk/libvdisk.so"
[ -e "$so" ] || fail "$so not built"

syms=$(nm -D --defined-only "$so" | awk '{ sub(/@.*/, "", $3); print $3 }')
bad=$(echo "$syms" | grep -vE '^(vd_|VDISK_0$)' || true)
[ -z "$bad" ] || fail "libvdisk.so exports non-vd_* symbols: $(echo $bad | head -c 300)"
echo "libvdisk.so: $(echo "$syms" | grep -c '^vd_') vd_* symbols and the version node"
for s in vd_copy vd_create_options_like vd_open; do
    grep -qx "$s" <<<"$syms" || fail "$s not exported"
done
for s in vd_file_open vd_kvlist_parse vd_find_driver vd_qcow2; do
    ! grep -qx "$s" <<<"$syms" || fail "internal $s exported"
done

# libnbd and libxml2 are loaded on first use (libvdisk/lazylib.c), never
# linked: linked, their dependencies cost every program start ~19 ms of CPU
needed=$(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
heavy=$(grep -E '^lib(nbd|xml2|gnutls|icu)' <<<"$needed" || true)
[ -z "$heavy" ] || fail "libvdisk.so links $(echo $heavy): lazylib.c loads them on first use"

for p in tools/vdconvert/vdconvert tools/ovatool/ovatool fuse-mount/vdmount boot-check/vdboot \
         nbd/nbdkit-vdisk-plugin.so; do
    [ -e "$VD_BUILD/$p" ] || { echo "not built: $p"; continue; }
    # (grep reads it all: `grep -q` under pipefail can fail on SIGPIPE)
    readelf -d "$VD_BUILD/$p" | grep 'NEEDED.*\[libvdisk\.so' >/dev/null || fail "$p does not link libvdisk.so"
    echo "links libvdisk.so: $p"
done

leak=$(cd "$VD_SRC" && grep -rlE '#include "(vd-driver|vd-internal)\.h"' --include='*.[ch]' . |
       grep -vE '^\./(libvdisk|formats|tests)/' || true)
[ -z "$leak" ] || fail "private headers included outside libvdisk/ and formats/: $leak"

# A user's program: only what the .pc file gives (no private requirements
# in Cflags, e.g. no libxml2 folder).
pc="$VD_BUILD/meson-private/vdisk.pc"
[ -e "$pc" ] || fail "$pc not generated"
cflags=$(PKG_CONFIG_PATH="$VD_BUILD/meson-private" pkg-config --cflags vdisk)
case "$cflags" in *libxml2*|*ext2fs*) fail "vdisk.pc Cflags carry private folders: $cflags" ;; esac
cat >"$T/user.c" <<'C'
#include <stdio.h>
#include <vdisk.h>
int main(int argc, char **argv)
{
    vd_image *a, *b;
    vd_error e = { 0 };
    if (argc != 3 || vd_open(argv[1], &(vd_open_opts){ .readonly = true }, &a, &e) < 0 ||
        vd_create(argv[2], &(vd_create_opts){ .format = "qcow2", .size = vd_size(a) }, &e) < 0 ||
        vd_open(argv[2], NULL, &b, &e) < 0 ||
        vd_copy(a, b, &(vd_copy_opts){ .threads = 2, .sparse_size = 4096,
                                        .target_is_zeroed = true }, &e) < 0 ||
        vd_close(b, &e) < 0) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    vd_close(a, NULL);
    return 0;
}
C
# A sanitizer build of the library needs its runtime in the program too.
san=""
if readelf -d "$so" | grep 'NEEDED.*libasan' >/dev/null; then san="-fsanitize=address,undefined"; fi
cc -Wall -Werror $san -I"$VD_BUILD/libvdisk/public" -o "$T/user" "$T/user.c" \
   -L"$VD_BUILD/libvdisk" -lvdisk -Wl,-rpath,"$VD_BUILD/libvdisk" || fail "user program does not build"
# the same bytes every run (lib.sh: seeded data at fixed places, holes between)
pattern_raw "$T/in.raw" $((8 << 20))
"$T/user" "$T/in.raw" "$T/out.qcow2" || fail "user program failed"
"$VDCONVERT" compare "$T/in.raw" "$T/out.qcow2" >/dev/null || fail "vd_copy result differs"
echo ok
