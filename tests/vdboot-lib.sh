# vdboot-lib.sh - helpers for the vdboot tests (sourced after lib.sh).
#   requires_kvm            skip unless /dev/kvm can be opened read-write
#   make_probe_fs DIR CFGKIND ARGS   fill DIR with /boot for the probe kernel
#   make_disk OUT FSIMG     MBR disk with FSIMG as bootable partition 1 at 1 MiB
#   crc32_of FILE OFF LEN   zlib crc32 of a byte range, as the probe prints it
#   fs_cat/fs_edit DISK ... read a file of / edit partition 1 with debugfs
#   timer_copy/vga_copy/nombr_copy DISK OUT   copies of the guest for firmware boots
: "${VDBOOT:=$VD_BUILD/boot-check/vdboot}"
PROBE=$VD_BUILD/boot-check/probe.bzImage

requires_kvm() {
    [ -r /dev/kvm ] && [ -w /dev/kvm ] || skip "/dev/kvm not usable"
    python3 -c 'import os; os.close(os.open("/dev/kvm", os.O_RDWR))' 2>/dev/null ||
        skip "/dev/kvm cannot be opened"
}

# make_probe_fs DIR KIND ARGS: KIND = grub | bls | extlinux | symlink
make_probe_fs() {
    local d=$1 kind=$2 args=$3
    mkdir -p "$d/boot"
    cp "$PROBE" "$d/boot/vmlinuz-1.0-probe"
    head -c 200000 /dev/urandom >"$d/boot/initrd.img-1.0-probe"
    case $kind in
    grub)
        mkdir -p "$d/boot/grub"
        cat >"$d/boot/grub/grub.cfg" <<CFG
set default="1"
set timeout=5
menuentry 'Wrong entry' --class debian {
	linux /boot/does-not-exist root=/dev/vda1 wrong.entry
}
menuentry 'Probe 1.0' --class debian {
	insmod ext2
	search --no-floppy --fs-uuid --set=root 1234
	linux	/boot/vmlinuz-1.0-probe $args \$vt_handoff
	initrd	/boot/initrd.img-1.0-probe
}
CFG
        ;;
    bls)
        mkdir -p "$d/boot/loader/entries"
        printf 'title Old\nlinux /boot/missing\noptions old.entry\n' >"$d/boot/loader/entries/a-0.9.conf"
        printf 'title Probe\nversion 1.0\nlinux /boot/vmlinuz-1.0-probe\ninitrd /boot/initrd.img-1.0-probe\noptions %s\n' \
            "$args" >"$d/boot/loader/entries/a-1.0.conf"
        ;;
    extlinux)
        mkdir -p "$d/boot/extlinux"
        printf 'DEFAULT probe\nLABEL other\n  KERNEL /boot/missing\nLABEL probe\n  KERNEL /boot/vmlinuz-1.0-probe\n  INITRD /boot/initrd.img-1.0-probe\n  APPEND %s\n' \
            "$args" >"$d/boot/extlinux/extlinux.conf"
        ;;
    symlink)
        ln -s boot/vmlinuz-1.0-probe "$d/vmlinuz"
        ln -s boot/initrd.img-1.0-probe "$d/initrd.img"
        ;;
    esac
}

make_disk() {
    local out=$1 fs=$2 mib
    mib=$(( ($(stat -c %s "$fs") + 1048575) / 1048576 + 2 ))
    truncate -s "${mib}M" "$out"
    echo 'start=2048, type=83, bootable' | sfdisk -q "$out" >/dev/null
    dd if="$fs" of="$out" bs=1M seek=1 conv=notrunc,sparse status=none
}

crc32_of() {
    python3 -c 'import sys, zlib
f = open(sys.argv[1], "rb"); f.seek(int(sys.argv[2]))
print("0x%08x" % zlib.crc32(f.read(int(sys.argv[3]))))' "$@"
}

# guest_dir: the Debian guest of tests/fixtures/make-guest-image, built once
# (it downloads two .debs with apt-get download): next to VD_MATRIX_DIR when
# that is set (test.sh points both of its runs there), else in the build dir.
guest_dir() {
    local d=$VD_BUILD/tests/vdboot-guest
    [ -z "${VD_MATRIX_DIR:-}" ] || d=$(dirname "$VD_MATRIX_DIR")/vdboot-guest
    mkdir -p "$(dirname "$d")"
    (
        flock 9
        # a guest older than its recipe is rebuilt (the recipe's mtime is
        # that of the checkout that changed it)
        if [ ! -f "$d/out/guest.raw" ] ||
            [ "$VD_SRC/tests/fixtures/make-guest-image" -nt "$d/out/guest.raw" ]; then
            rm -rf "$d/out"
            "$VD_SRC/tests/fixtures/make-guest-image" "$d/out" >"$d.log" 2>&1 ||
                { echo "make-guest-image failed, see $d.log" >&2; tail -5 "$d.log" >&2; exit 1; }
        fi
    ) 9>"$d.lock" || exit 1
    echo "$d/out"
}

# fs_edit DISK CMD...: run debugfs -w commands on partition 1 (at 1 MiB)
fs_edit() {
    local disk=$1; shift
    local fs=$disk.fs start=2048 sectors
    sectors=$(sfdisk -d "$disk" | sed -n 's/.*start= *2048, size= *\([0-9]*\).*/\1/p')
    dd if="$disk" of="$fs" bs=512 skip=$start count="$sectors" status=none
    for c in "$@"; do debugfs -w -R "$c" "$fs" >/dev/null 2>&1; done
    dd if="$fs" of="$disk" bs=512 seek=$start conv=notrunc status=none
    rm -f "$fs"
}

# fs_cat DISK PATH: print PATH from partition 1 (at 1 MiB)
fs_cat() {
    dd if="$1" of="$1.cat" bs=512 skip=2048 status=none
    debugfs -R "cat $2" "$1.cat" 2>/dev/null
    rm -f "$1.cat"
}

# timer_copy GUEST OUT: GUEST with no_timer_check on its GRUB entry.  A
# direct boot appends it (under TCG, or nested, on a loaded host Linux's
# IO-APIC timer check fails: "IO-APIC + timer doesn't work!"); a firmware
# boot takes the guest's own command line, so the copy must carry it.
timer_copy() {
    cp "$1" "$2"
    fs_cat "$1" /boot/grub/grub.cfg | sed 's/panic=-1/panic=-1 no_timer_check/' >"$2.cfg"
    grep -q no_timer_check "$2.cfg" || fail "could not add no_timer_check"
    fs_edit "$2" "rm /boot/grub/grub.cfg" "write $2.cfg /boot/grub/grub.cfg"
    rm -f "$2.cfg"
}

# vga_copy DISK OUT: DISK with GRUB, the kernel and getty on the screen,
# like a desktop image: no console=ttyS0, no serial terminal in GRUB, a
# getty on tty1 only
vga_copy() {
    cp "$1" "$2"
    fs_cat "$1" /boot/grub/grub.cfg | sed 's/ console=ttyS0,115200//; /^serial /d;
        s/terminal_input serial/terminal_input console/; s/terminal_output serial/terminal_output console/' \
        >"$2.grub"
    fs_cat "$1" /etc/inittab | grep -v ttyS0 >"$2.inittab"
    echo 'tty1::respawn:/sbin/getty 38400 tty1 linux' >>"$2.inittab"
    grep -q console=ttyS0 "$2.grub" && fail "could not drop console=ttyS0"
    fs_edit "$2" "rm /boot/grub/grub.cfg" "write $2.grub /boot/grub/grub.cfg" \
        "rm /etc/inittab" "write $2.inittab /etc/inittab"
    rm -f "$2.grub" "$2.inittab"
}

# nombr_copy DISK OUT: DISK with its MBR's boot code (440 bytes) zeroed
nombr_copy() {
    cp "$1" "$2"
    dd if=/dev/zero of="$2" bs=440 count=1 conv=notrunc status=none
}
