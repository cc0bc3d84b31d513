/* fuzz-initramfs.c - libFuzzer target: ovatool's initramfs reader
 * (guestdrv.c), which import runs on the guest's own /boot: concatenated
 * newc cpio archives, plain or gzip/zstd/xz, NUL padding between.  Any bytes
 * must end in a note, never a crash, a leak or unbounded work. */
#include "ovatool.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct guest_drivers g;
    memset(&g, 0, sizeof g);
    snprintf(g.initrd_path, sizeof g.initrd_path, "fuzz:/boot/initrd.img");
    guest_scan_initramfs(data, size, &g);
    return 0;
}
