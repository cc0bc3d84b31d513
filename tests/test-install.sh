#!/bin/bash
# Packaging: `meson install --destdir D` puts the four tools' man pages and the
# nbdkit plugin's under the configured prefix, the plugin in
# $libdir/nbdkit/plugins (not the system nbdkit's folder), vdisk.h and
# vdisk.pc; a program built with `pkg-config --cflags --libs vdisk` from D
# runs against the installed library.
. "$(dirname "$0")/lib.sh"
requires_cmd meson pkg-config cc python3
D=$T/dest
meson install -C "$VD_BUILD" --destdir "$D" --no-rebuild >"$T/install.log" 2>&1 ||
    fail "meson install: $(tail -5 "$T/install.log")"
opt() {  # the value of a build option as meson has it
    meson introspect "$VD_BUILD" --buildoptions |
        python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"] == sys.argv[1]][0])' "$1"
}
prefix=$(opt prefix) libdir=$(opt libdir) mandir=$(opt mandir) san=$(opt b_sanitize)
case $libdir in /*) ;; *) libdir=$prefix/$libdir ;; esac
case $mandir in /*) ;; *) mandir=$prefix/$mandir ;; esac
R=$D$prefix

# --- man pages: one per tool that was built, and the plugin's -------------------
want=(vdconvert)
[ -x "$VD_BUILD/tools/ovatool/ovatool" ] && want+=(ovatool)
[ -x "$VD_BUILD/fuse-mount/vdmount" ] && want+=(vdmount)
[ -x "$VD_BUILD/boot-check/vdboot" ] && want+=(vdboot)
for t in "${want[@]}"; do
    [ -x "$R/bin/$t" ] || fail "$t not installed in $prefix/bin"
    [ -f "$D$mandir/man1/$t.1" ] || fail "$t.1 not installed in $mandir/man1"
    grep -q '^\.SH EXIT STATUS' "$D$mandir/man1/$t.1" ||
        fail "$t.1 has no EXIT STATUS section"
done
if [ -f "$VD_BUILD/nbd/nbdkit-vdisk-plugin.so" ]; then
    plugin=$D$libdir/nbdkit/plugins/nbdkit-vdisk-plugin.so
    [ -f "$plugin" ] || fail "plugin not under the prefix: $(find "$D" -name 'nbdkit-vdisk*')"
    [ -f "$D$mandir/man1/nbdkit-vdisk-plugin.1" ] || fail "nbdkit-vdisk-plugin.1 not installed"
    if command -v nbdkit >/dev/null && [ -z "$san" -o "$san" = none ]; then
        nbdkit "$plugin" --version | matches "^vdisk " || fail "installed plugin: no --version"
    fi
fi
outside=$(find "$D" -type f ! -path "$D$prefix/*" | sed -n 1,3p)   # (head: SIGPIPE to find)
[ -z "$outside" ] || fail "files installed outside the prefix $prefix: $outside"

# --- a program built with pkg-config from D ---------------------------------------
[ -f "$R/include/vdisk.h" ] || fail "vdisk.h not installed"
pc=$(find "$D" -name vdisk.pc | sed -n 1p)
[ -n "$pc" ] || fail "vdisk.pc not installed"
cat >"$T/prog.c" <<'C'
#include <vdisk.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    vd_error e;
    vd_image *img;
    if (argc != 2 || vd_open(argv[1], &(vd_open_opts){ .readonly = true }, &img, &e) < 0) {
        fprintf(stderr, "prog: %s\n", argc == 2 ? e.msg : "usage");
        return 1;
    }
    const vd_format_desc *f = vd_format_lookup("vpc");
    printf("%s %s %llu %s\n", vd_version(), vd_format_name(img),
           (unsigned long long)vd_size(img), f ? f->name : "?");
    return vd_close(img, NULL) < 0;
}
C
export PKG_CONFIG_SYSROOT_DIR=$D PKG_CONFIG_PATH=$(dirname "$pc")
flags=$(pkg-config --cflags --libs vdisk) || fail "pkg-config vdisk failed"
extra=()
[ -n "$san" ] && [ "$san" != none ] && extra=(-fsanitize="$san")
cc "${extra[@]}" -o "$T/prog" "$T/prog.c" $flags 2>"$T/cc.err" ||
    fail "cc with pkg-config flags ($flags): $(head -3 "$T/cc.err")"
qemu-img create -q -f qcow2 "$T/d.qcow2" 3M 2>/dev/null || "$VDCONVERT" create -q -O qcow2 "$T/d.qcow2" 3M
out=$(LD_LIBRARY_PATH=$D$libdir "$T/prog" "$T/d.qcow2") || fail "installed program failed: $out"
[ "$out" = "$("$VDCONVERT" --version | cut -d' ' -f3) qcow2 3145728 vhd" ] ||
    fail "installed program printed '$out'"
# It really ran against the installed library, not the build tree's.
deps=$(LD_LIBRARY_PATH=$D$libdir ldd "$T/prog")
grep -q "$D$libdir/libvdisk.so" <<<"$deps" ||
    fail "program not linked against the installed libvdisk: $(grep vdisk <<<"$deps")"
echo "ok: installed under $prefix: ${want[*]} + plugin, man pages, vdisk.pc; program runs"
