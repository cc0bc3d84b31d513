/* bzimage.c - the Linux x86 boot protocol (Documentation/arch/x86/boot.rst):
 * check the setup header, put the protected-mode kernel at 1 MiB, build the
 * zero page (boot_params) with the header copy, the command line, the
 * initrd and an e820 map, and enter at the 64-bit entry (+0x200).
 * Everything read from the kernel file is checked against its length. */
#include "vmm.h"

#include <stdio.h>
#include <string.h>

/* Setup header fields: offsets in the file and in boot_params alike. */
#define HDR_SETUP_SECTS 0x1f1
#define HDR_SYSSIZE 0x1f4
#define HDR_BOOT_FLAG 0x1fe
#define HDR_JUMP 0x200
#define HDR_MAGIC 0x202
#define HDR_VERSION 0x206
#define HDR_KERNEL_VERSION 0x20e
#define HDR_TYPE_OF_LOADER 0x210
#define HDR_LOADFLAGS 0x211
#define HDR_RAMDISK_IMAGE 0x218
#define HDR_RAMDISK_SIZE 0x21c
#define HDR_HEAP_END_PTR 0x224
#define HDR_CMD_LINE_PTR 0x228
#define HDR_INITRD_ADDR_MAX 0x22c
#define HDR_XLOADFLAGS 0x236
#define HDR_CMDLINE_SIZE 0x238
#define HDR_PAYLOAD_OFFSET 0x248
#define HDR_PAYLOAD_LENGTH 0x24c
#define HDR_INIT_SIZE 0x260
/* boot_params fields outside the header */
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES 0x1e8
#define BP_E820_TABLE 0x2d0
#define BP_E820_MAX 128

#define BOOT_FLAG 0xaa55
#define HDRS_MAGIC 0x53726448      /* "HdrS" */
#define LOADED_HIGH 0x01
#define CAN_USE_HEAP 0x80
#define XLF_KERNEL_64 0x01
#define LOADER_UNDEFINED 0xff
#define E820_RAM 1
#define E820_RESERVED 2

static uint16_t bz_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t bz_le32(const uint8_t *p) { return (uint32_t)bz_le16(p) | (uint32_t)bz_le16(p + 2) << 16; }
static void bz_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void bz_put32(uint8_t *p, uint32_t v) { bz_put16(p, (uint16_t)v); bz_put16(p + 2, (uint16_t)(v >> 16)); }
static void bz_put64(uint8_t *p, uint64_t v) { bz_put32(p, (uint32_t)v); bz_put32(p + 4, (uint32_t)(v >> 32)); }

/* Header checks shared by loading and by --json's version string.  Returns
 * the setup size in bytes, or 0 with a reason in err. */
static size_t bz_check(const uint8_t *k, size_t len, char *err, size_t errlen)
{
    if (len < 0x300) {
        snprintf(err, errlen, "kernel: %zu bytes is too small for a bzImage", len);
        return 0;
    }
    if (bz_le16(k + HDR_BOOT_FLAG) != BOOT_FLAG || bz_le32(k + HDR_MAGIC) != HDRS_MAGIC) {
        snprintf(err, errlen, "kernel: no Linux setup header (boot_flag at 0x1fe, \"HdrS\" at 0x202)");
        return 0;
    }
    uint16_t ver = bz_le16(k + HDR_VERSION);
    if (ver < 0x020c) {
        snprintf(err, errlen, "kernel: boot protocol %u.%02u at 0x206 has no 64-bit entry (need 2.12)",
                 ver >> 8, ver & 0xff);
        return 0;
    }
    if (!(bz_le16(k + HDR_XLOADFLAGS) & XLF_KERNEL_64)) {
        snprintf(err, errlen, "kernel: xloadflags at 0x236 lack XLF_KERNEL_64 (not a 64-bit kernel)");
        return 0;
    }
    unsigned sects = k[HDR_SETUP_SECTS] ? k[HDR_SETUP_SECTS] : 4;
    size_t setup = (size_t)(sects + 1) * 512;
    if (setup >= len) {
        snprintf(err, errlen, "kernel: setup_sects %u at 0x1f1 points past the end of the file", sects);
        return 0;
    }
    /* A truncated file keeps a valid header: the kernel's own decompressor
     * would fail silently before any console exists, so check the sizes the
     * header promises.  syssize may be rounded up to a paragraph. */
    uint64_t sys = (uint64_t)bz_le32(k + HDR_SYSSIZE) * 16;
    if (sys > len - setup + 15) {
        snprintf(err, errlen, "kernel: truncated: syssize at 0x1f4 promises %llu bytes of "
                 "protected-mode code after the %zu-byte setup, the file has %zu",
                 (unsigned long long)sys, setup, len - setup);
        return 0;
    }
    uint64_t poff = bz_le32(k + HDR_PAYLOAD_OFFSET), plen = bz_le32(k + HDR_PAYLOAD_LENGTH);
    if (plen && poff + plen > len - setup) {
        snprintf(err, errlen, "kernel: truncated: payload_offset 0x%llx + payload_length %llu "
                 "at 0x248 end past the %zu bytes of protected-mode code",
                 (unsigned long long)poff, (unsigned long long)plen, len - setup);
        return 0;
    }
    return setup;
}

int bzimage_check(const uint8_t *k, size_t len, char *err, size_t errlen)
{
    return bz_check(k, len, err, errlen) ? 0 : -1;
}

int bzimage_read_version(const uint8_t *k, size_t len, char *out, size_t outlen)
{
    char err[128];
    out[0] = 0;
    size_t setup = bz_check(k, len, err, sizeof(err));
    if (!setup)
        return -1;
    size_t off = (size_t)bz_le16(k + HDR_KERNEL_VERSION) + 0x200;
    if (bz_le16(k + HDR_KERNEL_VERSION) == 0 || off >= setup)
        return -1;
    size_t n = 0;
    while (off + n < setup && k[off + n] && k[off + n] != ' ' && n + 1 < outlen)
        n++;
    memcpy(out, k + off, n);
    out[n] = 0;
    return 0;
}

static int bz_e820_add(uint8_t *bp, uint64_t addr, uint64_t size, uint32_t type)
{
    uint8_t n = bp[BP_E820_ENTRIES];
    if (n >= BP_E820_MAX || size == 0)
        return -1;
    uint8_t *e = bp + BP_E820_TABLE + 20u * n;
    bz_put64(e, addr);
    bz_put64(e + 8, size);
    bz_put32(e + 16, type);
    bp[BP_E820_ENTRIES] = (uint8_t)(n + 1);
    return 0;
}

static void bz_e820(struct vm *vm, uint8_t *bp)
{
    bz_e820_add(bp, 0, VM_MPTABLE, E820_RAM);
    bz_e820_add(bp, VM_MPTABLE, 0xa0000 - VM_MPTABLE, E820_RESERVED);
    bz_e820_add(bp, VM_ACPI, 0x100000 - VM_ACPI, E820_RESERVED);   /* ACPI tables (acpi.c) */
    bz_e820_add(bp, VM_KERNEL, vm->low_size - VM_KERNEL, E820_RAM);
    if (vm->mem_size > vm->low_size)
        bz_e820_add(bp, VM_HIGH_BASE, vm->mem_size - vm->low_size, E820_RAM);
}

/* Puts the initrd as high as the kernel allows, above the kernel's
 * init_size, and records it in the zero page. */
static int bz_initrd(struct vm *vm, const struct boot_image *bi, uint8_t *bp,
                     uint64_t kernel_end, char *err, size_t errlen)
{
    uint64_t max = (uint64_t)bz_le32(bp + HDR_INITRD_ADDR_MAX) + 1;
    uint64_t top = vm->low_size < max ? vm->low_size : max;
    if (bi->initrd_len > top || top - bi->initrd_len < kernel_end) {
        snprintf(err, errlen, "initrd of %zu bytes does not fit below 0x%llx after the kernel "
                 "(raise --memory)", bi->initrd_len, (unsigned long long)top);
        return -1;
    }
    uint64_t addr = (top - bi->initrd_len) & ~0xfffull;
    memcpy(vm_guest_ptr(vm, addr, bi->initrd_len), bi->initrd, bi->initrd_len);
    bz_put32(bp + HDR_RAMDISK_IMAGE, (uint32_t)addr);
    bz_put32(bp + HDR_RAMDISK_SIZE, (uint32_t)bi->initrd_len);
    bz_put32(bp + BP_EXT_RAMDISK_IMAGE, (uint32_t)(addr >> 32));
    bz_put32(bp + BP_EXT_RAMDISK_SIZE, (uint32_t)((uint64_t)bi->initrd_len >> 32));
    return 0;
}

int bzimage_load(struct vm *vm, const struct boot_image *bi, uint64_t *entry,
                 char *err, size_t errlen)
{
    const uint8_t *k = bi->kernel;
    size_t setup = bz_check(k, bi->kernel_len, err, errlen);
    if (!setup)
        return -1;
    size_t pm_len = bi->kernel_len - setup;
    uint64_t init_size = bz_le32(k + HDR_INIT_SIZE);
    uint64_t need = init_size > pm_len ? init_size : pm_len;
    uint64_t kentry = 0, kend = 0;
    char why[256] = "";
    if (bi->host_decompress &&
        vmlinux_load(vm, k, bi->kernel_len, setup, &kentry, &kend, why, sizeof(why)) == 0) {
        snprintf(vm->boot_note, sizeof(vm->boot_note),
                 "payload decompressed on the host, vmlinux entry 0x%llx",
                 (unsigned long long)kentry);
    } else {
        if (need > vm->low_size - VM_KERNEL || vm->low_size <= VM_KERNEL) {
            snprintf(err, errlen, "kernel needs %llu MiB at 1 MiB (init_size at 0x260): raise --memory",
                     (unsigned long long)(need >> 20) + 1);
            return -1;
        }
        memcpy(vm_guest_ptr(vm, VM_KERNEL, pm_len), k + setup, pm_len);
        kentry = VM_KERNEL + 0x200;
        kend = VM_KERNEL + need;
        snprintf(vm->boot_note, sizeof(vm->boot_note), "bzImage 64-bit entry%s%s",
                 why[0] ? "; not decompressed on the host: " : "", why);
    }

    uint8_t *bp = vm_guest_ptr(vm, VM_BOOT_PARAMS, 4096);
    memset(bp, 0, 4096);
    /* The header runs from 0x1f1 to 0x202 + the jump's displacement. */
    size_t hdr_end = 0x202 + k[HDR_JUMP + 1];
    if (hdr_end > setup || hdr_end > 4096)
        hdr_end = 0x268;
    memcpy(bp + HDR_SETUP_SECTS, k + HDR_SETUP_SECTS, hdr_end - HDR_SETUP_SECTS);
    bp[HDR_TYPE_OF_LOADER] = LOADER_UNDEFINED;
    bp[HDR_LOADFLAGS] |= LOADED_HIGH | CAN_USE_HEAP;
    bz_put16(bp + HDR_HEAP_END_PTR, 0xfe00);

    size_t cmax = bz_le32(k + HDR_CMDLINE_SIZE);
    if (cmax == 0 || cmax >= VM_CMDLINE_MAX)
        cmax = VM_CMDLINE_MAX - 1;
    size_t clen = strlen(bi->cmdline ? bi->cmdline : "");
    if (clen > cmax) {
        snprintf(err, errlen, "command line of %zu bytes exceeds the kernel's cmdline_size %zu",
                 clen, cmax);
        return -1;
    }
    char *cl = vm_guest_ptr(vm, VM_CMDLINE, VM_CMDLINE_MAX);
    memset(cl, 0, VM_CMDLINE_MAX);
    memcpy(cl, bi->cmdline ? bi->cmdline : "", clen);
    bz_put32(bp + HDR_CMD_LINE_PTR, (uint32_t)VM_CMDLINE);
    bz_put32(bp + BP_EXT_CMD_LINE_PTR, 0);

    if (bi->initrd && bz_initrd(vm, bi, bp, kend, err, errlen) < 0)
        return -1;
    bz_e820(vm, bp);
    *entry = kentry;
    return 0;
}
