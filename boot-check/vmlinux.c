/* vmlinux.c - decompress a bzImage's payload on the host and load the ELF
 * vmlinux inside it, so that the guest starts at the kernel proper instead
 * of running the decompressor.
 *
 * Why: on a nested software KVM a guest runs ~1000x slower, and a Debian
 * kernel's own decompressor then takes over a minute; the host does the same
 * work in a fraction of a second.  On hardware it still saves a little.  The
 * entry is vmlinux's startup_64 with the same 64-bit boot protocol state as
 * the bzImage entry (identity map, %rsi = boot_params), as Firecracker boots
 * an uncompressed vmlinux.  Only when the payload is LZ4 (legacy frames, what
 * Debian uses), gzip or zstd and a well-formed ELF64; otherwise the caller
 * falls back to the bzImage path.  Everything is bounds-checked: the
 * payload, every LZ4 block (liblz4's safe decoder), every ELF header and
 * segment. */
#include "vmm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lz4.h>
#include <zlib.h>
#include <zstd.h>

#define HDR_PAYLOAD_OFFSET 0x248
#define HDR_PAYLOAD_LENGTH 0x24c
#define LZ4_LEGACY_MAGIC 0x184c2102u
#define LZ4_LEGACY_BLOCK (8u << 20)
#define VMLINUX_MAX (512u << 20)
#define KERNEL_MAP_BASE 0xffffffff80000000ull   /* __START_KERNEL_map */

static uint32_t vml_le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t vml_le64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* LZ4 legacy frames: magic, then (u32 size, block)...; the kernel build
 * appends the 4-byte uncompressed size, which is not a block. */
static uint8_t *vml_lz4_legacy(const uint8_t *p, size_t len, size_t *out_len)
{
    size_t pos = 4, n = 0, cap = 64u << 20;
    uint8_t *out = malloc(cap);
    while (out && len - pos > 4) {
        uint32_t bs = vml_le32(p + pos);
        pos += 4;
        if (bs == LZ4_LEGACY_MAGIC)
            continue;
        if (bs > len - pos)
            goto bad;
        if (cap - n < LZ4_LEGACY_BLOCK) {
            if (cap >= VMLINUX_MAX)
                goto bad;
            uint8_t *o = realloc(out, cap * 2);
            if (!o)
                goto bad;
            out = o;
            cap *= 2;
        }
        /* liblz4's safe decoder: bounded by both buffers, as hostile input needs */
        if (bs > INT32_MAX)
            goto bad;
        int got = LZ4_decompress_safe((const char *)p + pos, (char *)out + n, (int)bs,
                                      (int)LZ4_LEGACY_BLOCK);
        if (got < 0)
            goto bad;
        n += (size_t)got;
        pos += bs;
    }
    *out_len = n;
    return out;
bad:
    free(out);
    return NULL;
}

static uint8_t *vml_gzip(const uint8_t *p, size_t len, size_t *out_len)
{
    z_stream z = { 0 };
    size_t cap = 64u << 20;
    uint8_t *out = malloc(cap);
    if (!out || inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) {
        free(out);
        return NULL;
    }
    z.next_in = (Bytef *)p;
    z.avail_in = (uInt)(len > UINT32_MAX ? UINT32_MAX : len);
    int rc = Z_OK;
    while (rc == Z_OK) {
        if (z.total_out == cap) {
            uint8_t *o = cap < VMLINUX_MAX ? realloc(out, cap * 2) : NULL;
            if (!o)
                break;
            out = o;
            cap *= 2;
        }
        z.next_out = out + z.total_out;
        z.avail_out = (uInt)(cap - z.total_out);
        rc = inflate(&z, Z_NO_FLUSH);
    }
    *out_len = z.total_out;
    inflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

static uint8_t *vml_zstd(const uint8_t *p, size_t len, size_t *out_len)
{
    ZSTD_DStream *ds = ZSTD_createDStream();
    size_t cap = 64u << 20;
    uint8_t *out = malloc(cap);
    ZSTD_inBuffer in = { p, len, 0 };
    ZSTD_outBuffer ob = { out, cap, 0 };
    size_t rc = 1;
    while (ds && out && rc != 0) {
        if (ob.pos == ob.size) {
            uint8_t *o = cap < VMLINUX_MAX ? realloc(out, cap * 2) : NULL;
            if (!o)
                break;
            out = o;
            cap *= 2;
            ob.dst = out;
            ob.size = cap;
        }
        rc = ZSTD_decompressStream(ds, &ob, &in);
        if (ZSTD_isError(rc) || (rc != 0 && in.pos == in.size && ob.pos < ob.size))
            break;
    }
    ZSTD_freeDStream(ds);
    if (rc != 0) {
        free(out);
        return NULL;
    }
    *out_len = ob.pos;
    return out;
}

/* Loads PT_LOAD segments at their physical addresses.  Returns 0 with the
 * physical entry and the end of the highest segment. */
static int vml_load_elf(struct vm *vm, const uint8_t *e, size_t len, uint64_t *entry,
                        uint64_t *end, char *err, size_t errlen)
{
    if (len < 64 || memcmp(e, "\177ELF", 4) || e[4] != 2 || e[5] != 1 ||
        (e[18] | e[19] << 8) != 62) {
        snprintf(err, errlen, "payload is not an x86-64 ELF");
        return -1;
    }
    uint64_t phoff = vml_le64(e + 32);
    unsigned phentsize = e[54] | e[55] << 8, phnum = e[56] | e[57] << 8;
    if (phentsize < 56 || phnum == 0 || phoff > len || (uint64_t)phnum * phentsize > len - phoff) {
        snprintf(err, errlen, "vmlinux program headers at 0x%llx out of bounds",
                 (unsigned long long)phoff);
        return -1;
    }
    uint64_t ent = vml_le64(e + 24), top = 0;
    if (ent >= KERNEL_MAP_BASE)
        ent -= KERNEL_MAP_BASE;
    bool entry_loaded = false;
    for (unsigned i = 0; i < phnum; i++) {
        const uint8_t *ph = e + phoff + (uint64_t)i * phentsize;
        if (vml_le32(ph) != 1)  /* PT_LOAD */
            continue;
        uint64_t off = vml_le64(ph + 8), pa = vml_le64(ph + 24);
        uint64_t fsz = vml_le64(ph + 32), msz = vml_le64(ph + 40);
        uint8_t *dst = vm_guest_ptr(vm, pa, msz);
        if (fsz > msz || off > len || fsz > len - off || !dst) {
            snprintf(err, errlen, "vmlinux segment %u (paddr 0x%llx, %llu bytes) does not fit "
                     "the file or guest memory", i, (unsigned long long)pa,
                     (unsigned long long)msz);
            return -1;
        }
        memcpy(dst, e + off, fsz);
        memset(dst + fsz, 0, msz - fsz);
        if (ent >= pa && ent - pa < msz)
            entry_loaded = true;
        if (pa + msz > top)
            top = pa + msz;
    }
    if (!entry_loaded) {
        snprintf(err, errlen, "vmlinux entry 0x%llx is in no loaded segment", (unsigned long long)ent);
        return -1;
    }
    *entry = ent;
    *end = top;
    return 0;
}

int vmlinux_load(struct vm *vm, const uint8_t *k, size_t klen, size_t setup, uint64_t *entry,
                 uint64_t *end, char *err, size_t errlen)
{
    uint32_t po = vml_le32(k + HDR_PAYLOAD_OFFSET), pl = vml_le32(k + HDR_PAYLOAD_LENGTH);
    if (pl < 8 || po > klen - setup || pl > klen - setup - po) {
        snprintf(err, errlen, "no payload (payload_offset/length at 0x248)");
        return -1;
    }
    const uint8_t *p = k + setup + po;
    size_t n = 0;
    uint8_t *elf = NULL;
    const char *how;
    if (vml_le32(p) == LZ4_LEGACY_MAGIC)
        elf = vml_lz4_legacy(p, pl, &n), how = "lz4";
    else if (p[0] == 0x1f && p[1] == 0x8b)
        elf = vml_gzip(p, pl, &n), how = "gzip";
    else if (vml_le32(p) == 0xfd2fb528u)
        elf = vml_zstd(p, pl, &n), how = "zstd";
    else {
        snprintf(err, errlen, "payload compression %02x%02x%02x%02x not decoded on the host",
                 p[0], p[1], p[2], p[3]);
        return -1;
    }
    if (!elf) {
        snprintf(err, errlen, "%s payload of %u bytes does not decompress", how, pl);
        return -1;
    }
    int rc = vml_load_elf(vm, elf, n, entry, end, err, errlen);
    free(elf);
    return rc;
}
