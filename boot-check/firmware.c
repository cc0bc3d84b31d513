/* firmware.c - the BIOS image of a firmware boot (--firmware bios under the
 * built-in VMM): SeaBIOS, from Debian's seabios package.
 *
 * Placed like a PC's flash and like qemu places it: the whole image ends at
 * 4 GiB (the reset vector, 0xfffffff0, is its last 16 bytes), read-only, and
 * its last 128 KiB also sit at 0xe0000-0xfffff in low RAM, where real-mode
 * code at F000:xxxx runs.  That low copy is ordinary writable RAM: the
 * i440FX PAM registers SeaBIOS programs to unlock "shadow RAM" change
 * nothing here, and SeaBIOS, seeing them clear at first, copies its own code
 * from the high image into the low one, which is harmless.
 *
 * A vCPU created by KVM is already in the reset state (real mode, CS base
 * 0xffff0000, IP 0xfff0), so vCPU 0 needs no setup: it runs the image. */
#include "vdboot.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define FW_TOP 0x100000000ull
#define FW_LOW_COPY 0x20000ull        /* 128 KiB at 0xe0000 */
#define FW_LOW_END 0x100000ull
#define FW_MIN_SIZE 0x10000ull        /* 64 KiB */
#define FW_MAX_SIZE 0x400000ull       /* 4 MiB: stays above the KVM TSS pages */
#define FW_ROM_SLOT 2                 /* 0: low RAM, 1: RAM above 4 GiB */

int firmware_load(struct vm *vm, const char *path, char *err, size_t errlen)
{
    uint8_t *img;
    size_t len;
    if (access(path, F_OK) < 0) {
        snprintf(err, errlen, "--firmware bios: no %s (apt-get install seabios)", path);
        return -1;
    }
    if (read_whole_file(path, &img, &len, err, errlen) < 0)
        return -1;
    if (len < FW_MIN_SIZE || len > FW_MAX_SIZE || len % 0x1000) {
        snprintf(err, errlen, "%s: firmware image size %zu at offset 0: want a multiple of "
                 "4 KiB from 64 KiB to 4 MiB", path, len);
        free(img);
        return -1;
    }
    /* its last 16 bytes are the reset vector: a far jump (0xea) there */
    if (img[len - 16] != 0xea) {
        snprintf(err, errlen, "%s: offset %zu (reset vector): byte 0x%02x, not a far jump "
                 "(0xea): not a BIOS image", path, len - 16, img[len - 16]);
        free(img);
        return -1;
    }
    if (vm->low_size < FW_LOW_END) {
        snprintf(err, errlen, "guest memory too small for the BIOS at 0xe0000");
        free(img);
        return -1;
    }
    vm->rom = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (vm->rom == MAP_FAILED) {
        vm->rom = NULL;
        snprintf(err, errlen, "cannot map %zu bytes for %s: %s", len, path, strerror(errno));
        free(img);
        return -1;
    }
    vm->rom_size = len;
    memcpy(vm->rom, img, len);
    size_t low = len < FW_LOW_COPY ? len : FW_LOW_COPY;
    memcpy(vm->mem + FW_LOW_END - low, img + len - low, low);
    free(img);
    /* Read-only where KVM can do it: a guest write there then exits as
     * MMIO to nothing and is dropped, as on flash. */
    bool ro = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_READONLY_MEM) > 0;
    struct kvm_userspace_memory_region r = {
        .slot = FW_ROM_SLOT, .flags = ro ? KVM_MEM_READONLY : 0,
        .guest_phys_addr = FW_TOP - len, .memory_size = len,
        .userspace_addr = (uintptr_t)vm->rom,
    };
    if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r) < 0) {
        snprintf(err, errlen, "KVM_SET_USER_MEMORY_REGION for %s at 0x%llx: %s", path,
                 (unsigned long long)(FW_TOP - len), strerror(errno));
        return -1;
    }
    snprintf(vm->boot_note, sizeof(vm->boot_note), "%s (%zu KiB) at 0x%llx%s and 0x%llx", path,
             len >> 10, (unsigned long long)(FW_TOP - len), ro ? " read-only" : "",
             (unsigned long long)(FW_LOW_END - low));
    return 0;
}
