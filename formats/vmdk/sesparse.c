/* sesparse.c - ESXi space-efficient sparse (seSparse) extents, read-only.
 *
 * A seSparse file starts with a constant header (magic 0xcafebabe as a
 * 64-bit word) giving, in sectors, the offsets and sizes of its regions:
 * volatile header, journal, grain directory, grain tables, free bitmap,
 * back map and grains.  Grains are 4 KiB (8 sectors), grain tables 32 KiB
 * (4096 64-bit entries).  Entries carry their type in the top nibble:
 *   directory: 0 unallocated, 1 allocated (low 32 bits: grain table index)
 *   table:     0 unallocated (parent), 1 unmapped, 2 zeroed, 3 allocated
 *              (grain index split: bits 48..59 are its low 12 bits, bits
 *              0..47 the rest).
 * The journal is not replayed: ESXi leaves it empty on a clean close. */
#include "vmdk.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#define SE_VERSION 0x0000000200000001ull
#define SE_GRAIN 8u               /* sectors */
#define SE_GT_SECTORS 64u
#define SE_GTES (SE_GT_SECTORS * VMDK_SECTOR / 8)

struct vmdk_sesparse {
    uint64_t capacity;            /* sectors */
    uint64_t gt_off, gt_size;     /* grain table region (sectors) */
    uint64_t grains_off, grains_size;
    uint64_t file_size;
    uint64_t gd_n;
    uint64_t *gd;
    uint64_t **gt;                /* cached tables */
    pthread_mutex_t lock;
};

/* A region [off, off+size) in sectors must lie inside the file. */
static int vmdk_se_region(vd_file *f, const char *what, uint64_t off, uint64_t size,
                          uint64_t fsize, vd_error *err)
{
    uint64_t end;
    if (vd_add_overflow(off, size, &end) || end > fsize / VMDK_SECTOR + 1 ||
        off > UINT64_MAX / VMDK_SECTOR)
        return vd_set_error(err, -EINVAL, "vmdk: %s: seSparse %s region at sector 0x%"
                            PRIx64 " (0x%" PRIx64 " sectors) is past end of file",
                            f->path, what, off, size);
    return 0;
}

int vmdk_sesparse_open(struct vmdk_extent *e, vd_error *err)
{
    uint8_t h[VMDK_SECTOR];
    int64_t fsize = vd_file_size(e->file, err);
    if (fsize < 0)
        return (int)fsize;
    int r = vd_file_pread(e->file, h, sizeof h, 0, err);
    if (r < 0)
        return r;
    const char *p = e->file->path;
    if (vd_le64(h) != VMDK_SESPARSE_MAGIC)
        return vd_set_error(err, -EINVAL, "vmdk: %s: no seSparse magic at 0x0", p);
    if (vd_le64(h + 8) != SE_VERSION)
        return vd_set_error(err, -ENOTSUP, "vmdk: %s: seSparse version 0x%" PRIx64 " at 0x8 "
                            "not supported", p, vd_le64(h + 8));
    if (vd_le64(h + 24) != SE_GRAIN || vd_le64(h + 32) != SE_GT_SECTORS)
        return vd_set_error(err, -ENOTSUP, "vmdk: %s: seSparse grain size %" PRIu64 " / grain "
                            "table size %" PRIu64 " sectors at 0x18 not supported (8 / 64)",
                            p, vd_le64(h + 24), vd_le64(h + 32));
    struct vmdk_sesparse *s = calloc(1, sizeof *s);
    if (!s)
        return vd_set_error(err, -ENOMEM, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    e->se = s;
    s->file_size = (uint64_t)fsize;
    s->capacity = vd_le64(h + 16);
    uint64_t gd_off = vd_le64(h + 128), gd_size = vd_le64(h + 136);
    s->gt_off = vd_le64(h + 144);
    s->gt_size = vd_le64(h + 152);
    s->grains_off = vd_le64(h + 192);
    s->grains_size = vd_le64(h + 200);
    if (s->capacity > VD_MAX_VIRTUAL_SIZE / VMDK_SECTOR)
        return vd_set_error(err, -EINVAL, "vmdk: %s: seSparse capacity 0x%" PRIx64 " sectors "
                            "at 0x10 is too large", p, s->capacity);
    if ((r = vmdk_se_region(e->file, "grain directory", gd_off, gd_size, s->file_size, err)) < 0 ||
        (r = vmdk_se_region(e->file, "grain table", s->gt_off, s->gt_size, s->file_size, err)) < 0)
        return r;
    uint64_t need = (s->capacity + SE_GRAIN * (uint64_t)SE_GTES - 1) / (SE_GRAIN * (uint64_t)SE_GTES);
    if (need * 8 > gd_size * VMDK_SECTOR)
        return vd_set_error(err, -EINVAL, "vmdk: %s: seSparse grain directory of 0x%" PRIx64
                            " sectors is too small for the capacity", p, gd_size);
    if (need * 8 > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EFBIG, "vmdk: %s: seSparse grain directory of %" PRIu64
                            " entries is too big", p, need);
    s->gd_n = need;
    s->gd = malloc(need ? need * 8 : 1);
    s->gt = calloc(need ? need : 1, sizeof *s->gt);
    if (!s->gd || !s->gt)
        return vd_set_error(err, -ENOMEM, "out of memory");
    r = vd_file_pread(e->file, s->gd, need * 8, gd_off * VMDK_SECTOR, err);
    if (r < 0)
        return r;
    for (uint64_t i = 0; i < need; i++)
        s->gd[i] = le64toh(s->gd[i]);
    e->sectors = s->capacity;
    return 0;
}

void vmdk_sesparse_close(struct vmdk_extent *e)
{
    struct vmdk_sesparse *s = e->se;
    if (!s)
        return;
    if (s->gt)
        for (uint64_t i = 0; i < s->gd_n; i++)
            free(s->gt[i]);
    free(s->gt);
    free(s->gd);
    pthread_mutex_destroy(&s->lock);
    free(s);
    e->se = NULL;
}

/* Table entry of grain g; 0 (unallocated) where the directory has none. */
static int vmdk_se_gte(vd_file *f, struct vmdk_sesparse *s, uint64_t g, uint64_t *gte,
                       vd_error *err)
{
    uint64_t i = g / SE_GTES;
    *gte = 0;
    if (i >= s->gd_n)
        return 0;
    uint64_t d = s->gd[i];
    if (d >> 60 == 0)
        return 0;
    if (d >> 60 != 1 || (d & 0x0fffffff00000000ull))
        return vd_set_error(err, -EINVAL, "vmdk: %s: seSparse grain directory entry %" PRIu64
                            " has invalid value 0x%" PRIx64, f->path, i, d);
    uint64_t idx = d & 0xffffffffu, off;
    if (vd_mul_overflow(idx + 1, SE_GT_SECTORS, &off) || off > s->gt_size)
        return vd_set_error(err, -EINVAL, "vmdk: %s: seSparse grain directory entry %" PRIu64
                            " points to grain table %" PRIu64 " outside its region",
                            f->path, i, idx);
    int r = 0;
    pthread_mutex_lock(&s->lock);
    if (!s->gt[i]) {
        uint64_t *t = malloc(SE_GTES * 8);
        if (!t)
            r = vd_set_error(err, -ENOMEM, "out of memory");
        else if ((r = vd_file_pread_zfill(f, t, SE_GTES * 8,
                                          (s->gt_off + idx * SE_GT_SECTORS) * VMDK_SECTOR,
                                          err)) < 0)
            free(t);
        else {
            for (uint32_t k = 0; k < SE_GTES; k++)
                t[k] = le64toh(t[k]);
            s->gt[i] = t;
        }
    }
    if (r == 0)
        *gte = s->gt[i][g % SE_GTES];
    pthread_mutex_unlock(&s->lock);
    return r;
}

/* Byte offset of an allocated grain in the file. */
static int vmdk_se_grain_off(vd_file *f, struct vmdk_sesparse *s, uint64_t g, uint64_t gte,
                             uint64_t *out, vd_error *err)
{
    uint64_t idx = ((gte & 0x0fff000000000000ull) >> 48) | ((gte & 0x0000ffffffffffffull) << 12);
    uint64_t sec;
    if (idx >= s->grains_size / SE_GRAIN || vd_mul_overflow(idx, SE_GRAIN, &sec) ||
        vd_add_overflow(sec, s->grains_off, &sec) ||
        sec + SE_GRAIN > s->file_size / VMDK_SECTOR)
        return vd_set_error(err, -EINVAL, "vmdk: %s: seSparse grain table entry for grain %"
                            PRIu64 " points to grain %" PRIu64 " past end of file",
                            f->path, g, idx);
    *out = sec * VMDK_SECTOR;
    return 0;
}

/* The part of a read inside one grain. */
static int vmdk_se_read_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    struct vmdk_walk *w = ctx;
    struct vmdk_sesparse *s = w->e->se;
    uint64_t at = 0;   /* at: set when r == 0 (gcc -O3 cannot see it) */
    uint64_t gte;
    int r = vmdk_se_gte(w->e->file, s, pt->blk, &gte, err);
    if (r < 0)
        return r;
    switch (gte >> 60) {
    case 0:
        return vd_backing_pread(img, pt->p, pt->n, w->guest_off + pt->done, err);
    case 1: case 2:
        memset(pt->p, 0, pt->n);
        return 0;
    case 3:
        r = vmdk_se_grain_off(w->e->file, s, pt->blk, gte, &at, err);
        return r < 0 ? r : vd_file_pread(w->e->file, pt->p, pt->n, at + pt->in, err);
    default:
        return vd_set_error(err, -EINVAL, "vmdk: %s: seSparse grain table entry for grain %"
                            PRIu64 " has invalid type %" PRIu64, w->e->file->path, pt->blk,
                            gte >> 60);
    }
}

int vmdk_sesparse_pread(vd_image *img, struct vmdk_extent *e, uint8_t *buf, size_t len,
                        uint64_t off, uint64_t guest_off, vd_error *err)
{
    struct vmdk_walk w = { e, guest_off };
    return vd_walk(img, buf, off, len, SE_GRAIN * VMDK_SECTOR, vmdk_se_read_part, &w, err);
}

int vmdk_sesparse_status(struct vmdk_extent *e, uint64_t off, uint64_t len,
                         uint64_t guest_off, vd_extents *ext, vd_error *err)
{
    struct vmdk_sesparse *s = e->se;
    const uint64_t gb = SE_GRAIN * VMDK_SECTOR;
    uint64_t end = off + len;
    /* at most one grain table per call: the core asks again for the rest */
    uint64_t stop = (off / (gb * SE_GTES) + 1) * gb * SE_GTES;
    if (stop < end)
        end = stop;
    while (off < end) {
        uint64_t g = off / gb, gte, at = VD_NO_OFFSET;
        uint64_t n = ((g + 1) * gb < end ? (g + 1) * gb : end) - off;
        int r = vmdk_se_gte(e->file, s, g, &gte, err);
        uint32_t flags = VD_LAYER_UNALLOC;
        if (r == 0 && gte >> 60 > 3)
            r = vd_set_error(err, -EINVAL, "vmdk: %s: seSparse grain table entry for grain %"
                             PRIu64 " has invalid type %" PRIu64, e->file->path, g, gte >> 60);
        else if (r == 0 && (gte >> 60 == 1 || gte >> 60 == 2))
            flags = VD_LAYER_ZERO;
        else if (r == 0 && gte >> 60 == 3) {
            flags = VD_LAYER_DATA;
            r = vmdk_se_grain_off(e->file, s, g, gte, &at, err);
            at += off % gb;
        }
        if (r == 0)
            r = vd_extents_add(ext, guest_off, n, flags, 0, at);
        if (r < 0)
            return r;
        off += n;
        guest_off += n;
    }
    return 0;
}
