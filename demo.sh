#!/bin/bash
# demo.sh - the one command that shows vdisk's main job on a fresh Debian 12
# machine: installs what is missing, builds, builds a small bootable Linux
# guest disk from Debian packages (tests/fixtures/make-guest-image), converts
# it through several formats with vdconvert, checks every step against
# qemu-img, and shows `vdconvert info` of the result.  Later steps (listing
# the guest's /etc, boot-checking it) run when those tools are built.
set -euo pipefail
cd "$(dirname "$0")"
./test.sh --deps
if [ -f build/build.ninja ]; then meson setup --reconfigure build >/dev/null; else meson setup build >/dev/null; fi
ninja -C build >/dev/null
B=$PWD/build
VDC=$B/tools/vdconvert/vdconvert
D=$B/demo
mkdir -p "$D"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ ! -f "$D/guest.raw" ]; then
    step "building the demo guest (Debian kernel + busybox, from Debian packages)"
    if [ -x tests/fixtures/make-guest-image ]; then
        tests/fixtures/make-guest-image "$D/guest-build" >/dev/null
        cp --sparse=always "$D/guest-build/guest.raw" "$D/guest.raw"
    else
        echo "tests/fixtures/make-guest-image is not there yet; using a plain ext4 disk"
        mkdir -p "$D/root/etc"; echo vdisk-demo >"$D/root/etc/hostname"
        truncate -s 64M "$D/guest.raw"; mke2fs -q -t ext4 -d "$D/root" "$D/guest.raw"
    fi
fi
src=$D/guest.raw
prev=$src
for fmt in qcow2 vmdk vdi vhdx vhd parallels qed qcow2; do
    if ! "$VDC" create -O "$fmt" "$D/probe.$fmt" 1M >/dev/null 2>&1; then
        echo "(skipping $fmt: not writable by this build yet)"; continue
    fi
    rm -f "$D/probe.$fmt"
    ext=$fmt
    [ "$fmt" = parallels ] && ext=hds     # a Parallels image file is NAME.hds
    out=$D/guest-via-$fmt.$ext
    step "vdconvert -O $fmt $(basename "$prev") -> $(basename "$out")"
    rm -f "$out"
    infmt=()
    [ "$prev" = "$src" ] && infmt=(-f raw)  # a raw input is named, not guessed
    /usr/bin/time -f "%e s, %M KiB peak RSS" "$VDC" -p "${infmt[@]}" -O "$fmt" "$prev" "$out"
    [ "$("$VDC" info "$out" | sed -n 's/^file format: //p')" = "$fmt" ] ||
        { echo "demo: $out is not a $fmt image"; exit 1; }
    qemu-img compare -q "$src" "$out" && echo "qemu-img compare: identical to the original"
    prev=$out
done
step "vdconvert info $(basename "$prev")"
"$VDC" info "$prev"
if [ -x "$B/tools/ovatool/ovatool" ]; then
    OVA=$B/tools/ovatool/ovatool
    step "ovatool export: the converted guest as a VirtualBox appliance, then import it for KVM"
    rm -rf "$D/demo.ova" "$D/imported"
    "$OVA" export -n vdisk-demo --disk "$prev" --cpus 1 --memory 256 --os-type debian \
        --target virtualbox -o "$D/demo.ova"
    "$OVA" verify "$D/demo.ova"
    "$OVA" import -O qcow2 -d "$D/imported" "$D/demo.ova"
    qemu-img compare -q "$src" "$D/imported/vdisk-demo-disk1.qcow2" &&
        echo "qemu-img compare: the imported disk is identical to the original"
    sed -n '1,6p' "$D/imported/vdisk-demo.xml"
fi
if [ -x "$B/fuse-mount/vdmount" ]; then
    step "vdmount --ls $(basename "$prev") /etc (the guest's files, no mount needed)"
    "$B/fuse-mount/vdmount" --ls "$prev" /p1/etc 2>/dev/null || "$B/fuse-mount/vdmount" --ls "$prev" /etc || true
fi
if [ -x "$B/boot-check/vdboot" ]; then
    step "vdboot $(basename "$prev") (does the converted guest still boot?)"
    "$B/boot-check/vdboot" "$prev" || true
fi
