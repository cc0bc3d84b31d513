/* create.c - creating VHDX images: dynamic, fixed, or differencing (with a
 * VHDX parent).  Layout, every region 1 MiB aligned as the spec asks:
 *
 *   0          file identifier ("vhdxfile", creator "vdisk")
 *   64/128 KiB the two headers (sequence numbers 1 and 2), clean log
 *   192/256 KiB the two region tables (BAT, metadata)
 *   1 MiB      the log (log_size, zeroes)
 *   +log       metadata region (1 MiB): table, then the items from 64 KiB
 *   +1 MiB     BAT (rounded up to 1 MiB)
 *   then       payload blocks: all of them for fixed (FULLY_PRESENT, the file
 *              sparse), none for dynamic and differencing (NOT_PRESENT). */
#include "vhdx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define VHDX_META_ITEMS_OFF (64u << 10)

struct vhdx_plan {
    uint64_t size, block_size, lss, log_size;
    bool fixed, diff;
    uint64_t log_off, meta_off, bat_off, bat_len, data_off, entries;
    uint8_t parent_data_guid[16];
    const char *parent_path;
};

static int vhdx_plan_options(const struct vd_create_args *a, struct vhdx_plan *p, vd_error *err)
{
    const char *sub = vd_opt_str(a->opts, "subformat");
    p->diff = a->backing_file != NULL;
    if (sub && !strcmp(sub, "fixed"))
        p->fixed = true;
    else if (sub && strcmp(sub, "dynamic") && strcmp(sub, "differencing"))
        /* differencing: dynamic with the parent given (or without one) */
        return vd_set_error(err, -EINVAL, "vhdx: subformat=%s: expected fixed, dynamic or "
                            "differencing", sub);
    if (p->fixed && p->diff)
        return vd_set_error(err, -EINVAL, "vhdx: a fixed VHDX cannot have a backing file");
    int r = vd_opt_size(a->opts, "block_size", p->diff ? 2 * VHDX_MiB : 32 * VHDX_MiB,
                        &p->block_size, err);
    if (r == 0)
        r = vd_opt_uint(a->opts, "logical_sector_size", 512, &p->lss, err);
    if (r == 0)
        r = vd_opt_size(a->opts, "log_size", VHDX_MiB, &p->log_size, err);
    if (r < 0)
        return r;
    if (!vd_is_pow2(p->block_size) || p->block_size < VHDX_MiB || p->block_size > 256 * VHDX_MiB)
        return vd_set_error(err, -EINVAL, "vhdx: block_size=%llu: expected a power of two from "
                            "1M to 256M", (unsigned long long)p->block_size);
    if (p->lss != 512 && p->lss != 4096)
        return vd_set_error(err, -EINVAL, "vhdx: logical_sector_size=%llu: expected 512 or 4096",
                            (unsigned long long)p->lss);
    if (!p->log_size || p->log_size % VHDX_MiB || p->log_size > 256 * VHDX_MiB)
        return vd_set_error(err, -EINVAL, "vhdx: log_size=%llu: expected a multiple of 1M up "
                            "to 256M", (unsigned long long)p->log_size);
    return 0;
}

static int vhdx_plan_parent(const struct vd_create_args *a, struct vhdx_plan *p, vd_error *err)
{
    if (!a->backing || strcmp(a->backing->drv->name, "vhdx"))
        return vd_set_error(err, -EINVAL, "vhdx: the parent of a differencing VHDX must be "
                            "a VHDX");
    if (a->size != a->backing->size)
        return vd_set_error(err, -EINVAL, "vhdx: a differencing VHDX has its parent's size "
                            "(%llu), not %llu", (unsigned long long)a->backing->size,
                            (unsigned long long)a->size);
    struct vhdx_state *ps = calloc(1, sizeof *ps);
    if (!ps)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vhdx_read_headers(a->backing->file, ps, err);
    if (r == 0)
        memcpy(p->parent_data_guid, ps->hdr + VHDX_H_DATA_GUID, 16);
    free(ps);
    p->parent_path = a->backing_file;
    return r;
}

static void vhdx_plan_layout(struct vhdx_plan *p)
{
    uint64_t chunk = (1ull << 23) * p->lss / p->block_size;
    uint64_t blocks = (p->size + p->block_size - 1) / p->block_size;
    p->entries = p->diff ? (blocks + chunk - 1) / chunk * (chunk + 1)
                         : blocks + (blocks - 1) / chunk;
    p->log_off = VHDX_MiB;
    p->meta_off = p->log_off + p->log_size;
    p->bat_off = p->meta_off + VHDX_MiB;
    p->bat_len = vd_round_up(p->entries * 8, VHDX_MiB);
    p->data_off = p->bat_off + p->bat_len;
}

static void vhdx_put_header(uint8_t *h, uint64_t seq, const uint8_t *fg, const uint8_t *dg,
                            const struct vhdx_plan *p)
{
    memset(h, 0, VHDX_HEADER_SIZE);
    memcpy(h, "head", 4);
    vd_put_le64(h + VHDX_H_SEQ, seq);
    memcpy(h + VHDX_H_FILE_GUID, fg, 16);
    memcpy(h + VHDX_H_DATA_GUID, dg, 16);
    vd_put_le16(h + VHDX_H_LOG_VERSION, 0);
    vd_put_le16(h + VHDX_H_VERSION, 1);
    vd_put_le32(h + VHDX_H_LOG_LEN, (uint32_t)p->log_size);
    vd_put_le64(h + VHDX_H_LOG_OFF, p->log_off);
    vd_put_le32(h + VHDX_H_CSUM, vhdx_struct_crc(h, VHDX_HEADER_SIZE, VHDX_H_CSUM));
}

static void vhdx_put_regions(uint8_t *rt, const struct vhdx_plan *p)
{
    memset(rt, 0, VHDX_RT_SIZE);
    memcpy(rt, "regi", 4);
    vd_put_le32(rt + 8, 2);
    vhdx_guid_parse(VHDX_GUID_BAT, rt + 16);
    vd_put_le64(rt + 16 + 16, p->bat_off);
    vd_put_le32(rt + 16 + 24, (uint32_t)p->bat_len);
    vd_put_le32(rt + 16 + 28, 1);                       /* required */
    vhdx_guid_parse(VHDX_GUID_META, rt + 48);
    vd_put_le64(rt + 48 + 16, p->meta_off);
    vd_put_le32(rt + 48 + 24, (uint32_t)VHDX_MiB);
    vd_put_le32(rt + 48 + 28, 1);
    vd_put_le32(rt + 4, vhdx_struct_crc(rt, VHDX_RT_SIZE, 4));
}

/* Append a metadata item: table entry `i`, data at *at (8-byte aligned). */
static void vhdx_put_item(uint8_t *m, int i, const char *guid, uint32_t flags,
                          const void *data, uint32_t len, uint32_t *at)
{
    uint8_t *e = m + 32 + 32 * i;
    vhdx_guid_parse(guid, e);
    vd_put_le32(e + 16, *at);
    vd_put_le32(e + 20, len);
    vd_put_le32(e + 24, flags);
    memcpy(m + *at, data, len);
    *at += (len + 7) & ~7u;
}

/* The VHDX parent locator: parent_linkage and relative_path. */
static int vhdx_make_locator(uint8_t *out, size_t cap, const struct vhdx_plan *p,
                             uint32_t *len, vd_error *err)
{
    char linkage[40];
    vhdx_linkage_format(p->parent_data_guid, linkage);
    char *rel = vhdx_win_relpath(p->parent_path);
    if (!rel)
        return vd_set_error(err, -ENOMEM, "out of memory");
    const char *kv[2][2] = { { "parent_linkage", linkage }, { "relative_path", rel } };
    int r = vhdx_locator_build(kv, 2, out, cap, len, err);
    free(rel);
    return r;
}

static int vhdx_put_metadata(uint8_t *m, const struct vhdx_plan *p, vd_error *err)
{
    uint8_t fp[8], vs[8], ls[4], ps[4], pg[16];
    uint32_t at = VHDX_META_ITEMS_OFF;
    int n = 0;
    memset(m, 0, VHDX_MiB);
    memcpy(m, "metadata", 8);
    vd_put_le32(fp, (uint32_t)p->block_size);
    vd_put_le32(fp + 4, (p->fixed ? 1u : 0) | (p->diff ? 2u : 0));
    vd_put_le64(vs, p->size);
    vd_put_le32(ls, (uint32_t)p->lss);
    vd_put_le32(ps, 4096);
    vhdx_guid_random(pg);
    vhdx_put_item(m, n++, VHDX_GUID_FILE_PARAMS, 4, fp, 8, &at);
    vhdx_put_item(m, n++, VHDX_GUID_VDISK_SIZE, 6, vs, 8, &at);
    vhdx_put_item(m, n++, VHDX_GUID_PAGE83, 6, pg, 16, &at);
    vhdx_put_item(m, n++, VHDX_GUID_LSS, 6, ls, 4, &at);
    vhdx_put_item(m, n++, VHDX_GUID_PSS, 6, ps, 4, &at);
    if (p->diff) {
        size_t cap = 8 * (strlen(p->parent_path) + 64);
        uint8_t *loc = malloc(cap);
        if (!loc)
            return vd_set_error(err, -ENOMEM, "out of memory");
        uint32_t len;
        int r = vhdx_make_locator(loc, cap, p, &len, err);
        if (r == 0 && at + len > VHDX_MiB)
            r = vd_set_error(err, -EINVAL, "vhdx: parent path too long");
        if (r < 0) {
            free(loc);
            return r;
        }
        vhdx_put_item(m, n++, VHDX_GUID_PARENT, 4, loc, len, &at);
        free(loc);
    }
    vd_put_le16(m + 10, (uint16_t)n);
    return 0;
}

/* Fixed: every payload block present.  Differencing: every sector bitmap
 * block present and all clear (sparse zeroes), as Hyper-V allocates them;
 * libvhdi consults a chunk's bitmap even for a NOT_PRESENT block.  Dynamic:
 * nothing present, the BAT region stays zeroes. */
static int vhdx_write_bat(vd_file *f, const struct vhdx_plan *p, vd_error *err)
{
    if (!p->fixed && !p->diff)
        return 0;
    uint64_t chunk = (1ull << 23) * p->lss / p->block_size;
    uint8_t *bat = calloc(1, p->bat_len);
    if (!bat)
        return vd_set_error(err, -ENOMEM, "out of memory for the BAT");
    uint64_t off = p->data_off;
    for (uint64_t i = 0; i < p->entries; i++) {
        bool bitmap = i % (chunk + 1) == chunk;
        if (bitmap == p->fixed)
            continue;
        vd_put_le64(bat + 8 * i, off | VHDX_PAYLOAD_FULLY_PRESENT);   /* == SB_PRESENT */
        off += bitmap ? VHDX_MiB : p->block_size;
    }
    int r = vd_file_pwrite(f, bat, p->bat_len, p->bat_off, err);
    if (r == 0)
        r = vd_file_truncate(f, off, err);
    free(bat);
    return r;
}

static int vhdx_write_all(vd_file *f, const struct vhdx_plan *p, vd_error *err)
{
    uint8_t *buf = calloc(1, VHDX_MiB);
    if (!buf)
        return vd_set_error(err, -ENOMEM, "out of memory");
    uint8_t fg[16], dg[16];
    vhdx_guid_random(fg);
    vhdx_guid_random(dg);
    int r = vd_file_truncate(f, p->data_off, err);
    memcpy(buf, "vhdxfile", 8);
    size_t creator_len;     /* the creator field: 512 bytes of UTF-16LE */
    vd_utf16_encode("vdisk", buf + 8, 512, 0, &creator_len, NULL);
    if (r == 0)
        r = vd_file_pwrite(f, buf, 64 << 10, 0, err);
    for (int i = 0; r == 0 && i < 2; i++) {
        vhdx_put_header(buf, (uint64_t)i + 1, fg, dg, p);
        r = vd_file_pwrite(f, buf, VHDX_HEADER_SIZE, i ? VHDX_HEADER2_OFF : VHDX_HEADER1_OFF, err);
    }
    vhdx_put_regions(buf, p);
    if (r == 0)
        r = vd_file_pwrite(f, buf, VHDX_RT_SIZE, VHDX_RT1_OFF, err);
    if (r == 0)
        r = vd_file_pwrite(f, buf, VHDX_RT_SIZE, VHDX_RT2_OFF, err);
    if (r == 0)
        r = vhdx_put_metadata(buf, p, err);
    if (r == 0)
        r = vd_file_pwrite(f, buf, VHDX_MiB, p->meta_off, err);
    if (r == 0)
        r = vhdx_write_bat(f, p, err);
    free(buf);
    return r;
}

int vhdx_create(const struct vd_create_args *a, vd_error *err)
{
    struct vhdx_plan p = { 0 };
    int r = vhdx_plan_options(a, &p, err);
    if (r == 0 && p.diff)
        r = vhdx_plan_parent(a, &p, err);
    if (r < 0)
        return r;
    p.size = vd_round_up(a->size, p.lss);
    if (!p.size || p.size > (64ull << 40))
        return vd_set_error(err, -EINVAL, "vhdx: size %llu: expected 1 byte to 64 TiB",
                            (unsigned long long)a->size);
    vhdx_plan_layout(&p);
    if (p.bat_len > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EINVAL, "vhdx: a BAT of %llu entries is too big; use a larger "
                            "block_size", (unsigned long long)p.entries);
    vd_file *f;
    if ((r = vd_file_create(a->path, &f, err)) < 0)
        return r;
    return vd_file_create_finish(f, vhdx_write_all(f, &p, err), err);
}
