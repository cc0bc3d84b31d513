/* walk.c - the one loop that walks a request part by part.
 *
 * Every driver with a block, grain or cluster table reads, writes and
 * reports block status the same way: split [off, off+len) where the table
 * changes, handle each part on its own, step on.  vd_walk is that loop; a
 * driver gives only what it does with one part.  Zeroes written as data
 * (where a format or the core has no cheaper way) go through one loop too. */
#include "vd-driver.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int vd_walk(vd_image *img, void *buf, uint64_t off, uint64_t len, uint64_t block,
            vd_part_fn *fn, void *ctx, vd_error *err)
{
    uint8_t *p = buf;
    struct vd_part pt = { 0 };
    while (pt.done < len) {
        uint64_t left = len - pt.done;
        pt.off = off + pt.done;
        pt.p = p ? p + pt.done : NULL;
        if (block) {
            pt.n = vd_block_piece(pt.off, left, block, &pt.blk, &pt.in);
        } else {
            pt.n = left;
            pt.blk = pt.in = 0;
        }
        uint64_t max = pt.n;
        int r = fn(img, &pt, ctx, err);
        if (r < 0)
            return r;
        /* A part handler may stop short (a run ends), never at nothing:
         * that would loop for ever. */
        if (pt.n == 0 || pt.n > max)
            return vd_set_error(err, -EIO, "internal error: a part of %llu bytes at 0x%llx "
                                "was handled as %llu", (unsigned long long)max,
                                (unsigned long long)pt.off, (unsigned long long)pt.n);
        pt.done += pt.n;
    }
    return 0;
}

/* Emulated zero writes go in chunks of this size. */
#define VD_ZERO_CHUNK (1u << 20)

struct vd_zero_write {
    vd_write_fn *write;
    const void *zero;
    size_t chunk;             /* bytes at zero */
};

static int vd_zero_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    struct vd_zero_write *z = ctx;
    if (pt->n > z->chunk)
        pt->n = z->chunk;
    return z->write(img, z->zero, pt->n, pt->off, err);
}

int vd_zero_by_writing(vd_image *img, uint64_t off, uint64_t len, vd_write_fn *write,
                       vd_error *err)
{
    size_t chunk = len < VD_ZERO_CHUNK ? (size_t)len : VD_ZERO_CHUNK;
    struct vd_zero_write z = { write, calloc(1, chunk ? chunk : 1), chunk };
    if (!z.zero)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vd_walk(img, NULL, off, len, 0, vd_zero_part, &z, err);
    free((void *)z.zero);
    return r;
}

/* ---- table-mapped formats ------------------------------------------------- */

static int vd_map_read_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    const struct vd_mapper *mp = ctx;
    struct vd_map m = { 0 };
    int r = mp->map(img, pt->off, pt->n, &m, err);
    if (r < 0)
        return r;
    pt->n = m.n;
    switch (m.kind) {
    case VD_MAP_BACKING:
        return vd_backing_pread(img, pt->p, pt->n, pt->off, err);
    case VD_MAP_ZERO:
        memset(pt->p, 0, pt->n);
        return 0;
    case VD_MAP_COMPRESSED:
        return mp->read_compressed(img, &m, pt->p, err);
    default:
        /* A last cluster cut short by the file's end reads as zeroes. */
        return vd_file_pread_zfill(img->file, pt->p, pt->n, m.file_off, err);
    }
}

int vd_map_pread(vd_image *img, void *buf, size_t len, uint64_t off,
                 const struct vd_mapper *mp, vd_error *err)
{
    return vd_walk(img, buf, off, len, 0, vd_map_read_part, (void *)mp, err);
}

struct vd_map_status {
    const struct vd_mapper *mp;
    vd_extents *ext;
};

static int vd_map_status_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    static const unsigned flags[] = {
        [VD_MAP_BACKING] = VD_LAYER_UNALLOC,
        [VD_MAP_ZERO] = VD_LAYER_ZERO,
        [VD_MAP_DATA] = VD_LAYER_DATA,
        [VD_MAP_COMPRESSED] = VD_LAYER_DATA | VD_EXT_COMPRESSED,
    };
    struct vd_map_status *c = ctx;
    struct vd_map m = { 0 };
    int r = c->mp->map(img, pt->off, pt->n, &m, err);
    if (r < 0)
        return r;
    pt->n = m.n;
    return vd_extents_add(c->ext, pt->off, pt->n, flags[m.kind], 0,
                          m.kind == VD_MAP_DATA ? m.file_off : VD_NO_OFFSET);
}

int vd_map_block_status(vd_image *img, uint64_t off, uint64_t len, uint64_t table,
                        vd_extents *ext, const struct vd_mapper *mp, vd_error *err)
{
    struct vd_map_status c = { mp, ext };
    uint64_t left = table - off % table;
    return vd_walk(img, NULL, off, len < left ? len : left, 0, vd_map_status_part, &c, err);
}
