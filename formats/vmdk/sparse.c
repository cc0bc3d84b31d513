/* sparse.c - hosted sparse extents: the "KDMV" header, the grain directory
 * (and its redundant copy), grain tables cached on first use, grains plain or
 * compressed behind grain markers (streamOptimized), and grain allocation for
 * writes (new grains go to the end of the file; both grain tables are
 * updated after the grain data is written, so a crash leaves at worst a
 * leaked grain, never a table pointing at garbage).  Grain tables live in
 * the library's bounded metadata cache (VMDK_GT_CACHE_BYTES): a 2 TiB
 * extent, or a directory whose entries all name one table, costs no more
 * memory than a small one. */
#include "vmdk.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* Grain tables kept in memory: 512 tables of 512 entries (2 KiB) map 16 GiB
 * of 64 KiB grains; qemu keeps 16. */
#define VMDK_GT_CACHE_BYTES (1u << 20)

struct vmdk_sparse {
    struct vmdk_header h;
    uint64_t grain_bytes;      /* bytes per grain */
    uint64_t n_grains;         /* grains the header's capacity needs */
    uint32_t gd_n;             /* grain directory entries */
    uint32_t *gd, *rgd;        /* sector numbers of the grain tables */
    /* Grain tables, little-endian as on disk.  A changed table goes to
     * disk at eviction or flush, after the file is synced (before_write),
     * so that after a power loss no entry points at a grain that did not
     * reach the disk. */
    vd_mcache gtc;
    uint64_t file_size;        /* current end of file (grows on writes) */
    pthread_mutex_t lock;      /* guards gtc and the grain cache */
    uint64_t cache_grain;      /* last decompressed grain, UINT64_MAX none */
    uint8_t *cache;
};

int vmdk_header_parse(const uint8_t *b, struct vmdk_header *h, const char *where,
                      uint64_t file_size, vd_error *err)
{
    if (vd_le32(b) != VMDK_MAGIC)
        return vd_set_error(err, -EINVAL, "vmdk: %s: bad magic at 0x0", where);
    h->version = vd_le32(b + 4);
    h->flags = vd_le32(b + 8);
    h->capacity = vd_le64(b + 12);
    h->grain = vd_le64(b + 20);
    h->desc_off = vd_le64(b + 28);
    h->desc_size = vd_le64(b + 36);
    h->gtes = vd_le32(b + 44);
    h->rgd_off = vd_le64(b + 48);
    h->gd_off = vd_le64(b + 56);
    h->overhead = vd_le64(b + 64);
    h->compress = vd_le16(b + 77);
    if (h->version < 1 || h->version > 3)
        return vd_set_error(err, -ENOTSUP, "vmdk: %s: header version %" PRIu32 " at 0x4 "
                            "not supported (1-3)", where, h->version);
    /* The newline bytes catch a file mangled by a text-mode transfer. */
    if ((h->flags & VMDK_FLAG_NL_DETECT) &&
        (b[73] != '\n' || b[74] != ' ' || b[75] != '\r' || b[76] != '\n'))
        return vd_set_error(err, -EINVAL, "vmdk: %s: newline check bytes at 0x49 are "
                            "wrong (file transferred in text mode?)", where);
    if (h->capacity > VD_MAX_VIRTUAL_SIZE / VMDK_SECTOR)
        return vd_set_error(err, -EINVAL, "vmdk: %s: capacity 0x%" PRIx64 " sectors at "
                            "0xc is too large", where, h->capacity);
    if (!vd_is_pow2(h->grain) || h->grain > VMDK_MAX_GRAIN_SECTORS)
        return vd_set_error(err, -EINVAL, "vmdk: %s: grain size %" PRIu64 " sectors at "
                            "0x14 is not a power of two up to %u", where, h->grain,
                            VMDK_MAX_GRAIN_SECTORS);
    if (h->gtes == 0 || h->gtes > VMDK_MAX_GTES)
        return vd_set_error(err, -EINVAL, "vmdk: %s: %" PRIu32 " entries per grain table "
                            "at 0x2c (1-%u expected)", where, h->gtes, VMDK_MAX_GTES);
    if ((h->flags & VMDK_FLAG_COMPRESSED) && h->compress != 1)
        return vd_set_error(err, -ENOTSUP, "vmdk: %s: compression algorithm %u at 0x4d "
                            "not supported (1 = deflate)", where, h->compress);
    if (h->desc_size > VMDK_MAX_DESC_BYTES / VMDK_SECTOR)
        return vd_set_error(err, -EINVAL, "vmdk: %s: descriptor size %" PRIu64 " sectors "
                            "at 0x24 is larger than %u bytes", where, h->desc_size,
                            VMDK_MAX_DESC_BYTES);
    if (h->desc_off && h->desc_off > file_size / VMDK_SECTOR)
        return vd_set_error(err, -EINVAL, "vmdk: %s: descriptor offset 0x%" PRIx64
                            " sectors at 0x1c is past end of file", where, h->desc_off);
    return 0;
}

void vmdk_header_encode(const struct vmdk_header *h, uint8_t *b)
{
    memset(b, 0, VMDK_SECTOR);
    vd_put_le32(b, VMDK_MAGIC);
    vd_put_le32(b + 4, h->version);
    vd_put_le32(b + 8, h->flags);
    vd_put_le64(b + 12, h->capacity);
    vd_put_le64(b + 20, h->grain);
    vd_put_le64(b + 28, h->desc_off);
    vd_put_le64(b + 36, h->desc_size);
    vd_put_le32(b + 44, h->gtes);
    vd_put_le64(b + 48, h->rgd_off);
    vd_put_le64(b + 56, h->gd_off);
    vd_put_le64(b + 64, h->overhead);
    b[72] = 0;                       /* uncleanShutdown */
    b[73] = '\n';
    b[74] = ' ';
    b[75] = '\r';
    b[76] = '\n';
    vd_put_le16(b + 77, h->compress);
}

/* Read a grain directory of `n` entries at sector `sec`. */
static int vmdk_sparse_read_gd(vd_file *f, uint64_t sec, uint32_t n, uint64_t fsize,
                               const char *what, uint32_t **out, vd_error *err)
{
    uint64_t bytes = (uint64_t)n * 4, off, end;
    if (vd_mul_overflow(sec, VMDK_SECTOR, &off) || vd_add_overflow(off, bytes, &end) ||
        end > fsize)
        return vd_set_error(err, -EINVAL, "vmdk: %s: %s at sector 0x%" PRIx64 " (%" PRIu32
                            " entries) extends past end of file (size 0x%" PRIx64 ")",
                            f->path, what, sec, n, fsize);
    uint32_t *gd = malloc(bytes ? bytes : 1);
    if (!gd)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vd_file_pread(f, gd, bytes, off, err);
    if (r < 0) {
        free(gd);
        return r;
    }
    for (uint32_t i = 0; i < n; i++)
        gd[i] = le32toh(gd[i]);
    *out = gd;
    return 0;
}

/* streamOptimized files made by VMware put the grain directory at the end
 * and a copy of the header with its real offset in a footer. */
static int vmdk_sparse_footer(vd_file *f, struct vmdk_header *h, uint64_t fsize,
                              vd_error *err)
{
    uint8_t b[2 * VMDK_SECTOR];
    if (fsize < 4 * VMDK_SECTOR)
        return vd_set_error(err, -EINVAL, "vmdk: %s: grain directory is at the end but "
                            "the file is too short for a footer", f->path);
    int r = vd_file_pread(f, b, sizeof b, fsize - 3 * VMDK_SECTOR, err);
    if (r < 0)
        return r;
    if (vd_le32(b + 12) != VMDK_MARKER_FOOTER || vd_le32(b + 8) != 0)
        return vd_set_error(err, -EINVAL, "vmdk: %s: no footer marker at 0x%" PRIx64
                            " (incomplete streamOptimized file?)", f->path,
                            fsize - 3 * VMDK_SECTOR);
    struct vmdk_header fh;
    r = vmdk_header_parse(b + VMDK_SECTOR, &fh, f->path, fsize, err);
    if (r < 0)
        return r;
    if (fh.gd_off == VMDK_GD_AT_END || fh.capacity != h->capacity ||
        fh.grain != h->grain || fh.gtes != h->gtes)
        return vd_set_error(err, -EINVAL, "vmdk: %s: footer header at 0x%" PRIx64 " does "
                            "not match the header", f->path, fsize - 2 * VMDK_SECTOR);
    h->gd_off = fh.gd_off;
    h->rgd_off = fh.rgd_off;
    h->flags = fh.flags;
    return 0;
}

/* Grains reach the disk before a grain table entry naming them. */
static int vmdk_sparse_sync_grains(void *file, vd_error *err)
{
    return vd_file_sync(file, err);
}

int vmdk_sparse_open(struct vmdk_extent *e, const struct vmdk_header *hin, vd_error *err)
{
    struct vmdk_sparse *s = calloc(1, sizeof *s);
    if (!s)
        return vd_set_error(err, -ENOMEM, "out of memory");
    pthread_mutex_init(&s->lock, NULL);
    s->cache_grain = UINT64_MAX;
    e->sp = s;
    s->h = *hin;
    int64_t fsize = vd_file_size(e->file, err);
    if (fsize < 0)
        return (int)fsize;
    s->file_size = (uint64_t)fsize;
    int r = 0;
    if (s->h.gd_off == VMDK_GD_AT_END && (r = vmdk_sparse_footer(e->file, &s->h,
                                                                 s->file_size, err)) < 0)
        return r;
    s->grain_bytes = s->h.grain * VMDK_SECTOR;
    s->n_grains = (s->h.capacity + s->h.grain - 1) / s->h.grain;
    uint64_t gd_n = (s->n_grains + s->h.gtes - 1) / s->h.gtes;
    if (gd_n * 4 > VD_MAX_TABLE_BYTES || gd_n > UINT32_MAX)
        return vd_set_error(err, -EFBIG, "vmdk: %s: grain directory of %" PRIu64 " entries "
                            "is too big", e->file->path, gd_n);
    s->gd_n = (uint32_t)gd_n;
    r = vmdk_sparse_read_gd(e->file, s->h.gd_off, s->gd_n, s->file_size,
                            "grain directory", &s->gd, err);
    if (r == 0 && (s->h.flags & VMDK_FLAG_RGD) && s->h.rgd_off)
        r = vmdk_sparse_read_gd(e->file, s->h.rgd_off, s->gd_n, s->file_size,
                                "redundant grain directory", &s->rgd, err);
    if (r < 0)
        return r;
    if (vd_mcache_init(&s->gtc, e->file, (size_t)s->h.gtes * 4, VMDK_GT_CACHE_BYTES, 4, 1024,
                       "grain table") < 0)
        return vd_set_error(err, -ENOMEM, "vmdk: %s: out of memory", e->file->path);
    s->gtc.before_write = vmdk_sparse_sync_grains;
    s->gtc.ctx = e->file;
    return 0;
}

void vmdk_sparse_close(struct vmdk_extent *e)
{
    struct vmdk_sparse *s = e->sp;
    if (!s)
        return;
    vd_mcache_free(&s->gtc);
    free(s->gd);
    free(s->rgd);
    free(s->cache);
    pthread_mutex_destroy(&s->lock);
    free(s);
    e->sp = NULL;
}

uint32_t vmdk_sparse_grain_bytes(struct vmdk_extent *e)
{
    return (uint32_t)e->sp->grain_bytes;
}

bool vmdk_sparse_zero_grain(struct vmdk_extent *e)
{
    return e->sp->h.flags & VMDK_FLAG_ZERO_GRAIN;
}

bool vmdk_sparse_is_stream(struct vmdk_extent *e)
{
    return e->sp && (e->sp->h.flags & VMDK_FLAG_COMPRESSED);
}

/* Grain table `i` (its directory entry is set) from the cache, lock held:
 * *gt its little-endian entries until the next table is asked for, *slot
 * for vd_mcache_mark_dirty. */
static int vmdk_sparse_table(vd_file *f, struct vmdk_sparse *s, uint32_t i, uint8_t **gt,
                             size_t *slot, vd_error *err)
{
    uint64_t off = (uint64_t)s->gd[i] * VMDK_SECTOR;
    if (off + s->gtc.table_bytes > s->file_size)
        return vd_set_error(err, -EINVAL, "vmdk: %s: grain directory entry %" PRIu32
                            " points to a grain table at 0x%" PRIx64 " past end of file "
                            "(size 0x%" PRIx64 ")", f->path, i, off, s->file_size);
    return vd_mcache_get(&s->gtc, off, gt, slot, true, err);
}

/* Grain table entry of grain `g` (0 when the table is absent). */
static int vmdk_sparse_gte(vd_file *f, struct vmdk_sparse *s, uint64_t g, uint32_t *gte,
                           vd_error *err)
{
    uint64_t i = g / s->h.gtes;
    *gte = VMDK_GTE_UNALLOC;
    if (i >= s->gd_n || s->gd[i] == 0)
        return 0;
    uint8_t *gt;
    size_t slot;
    pthread_mutex_lock(&s->lock);
    int r = vmdk_sparse_table(f, s, (uint32_t)i, &gt, &slot, err);
    if (r == 0)
        *gte = vd_le32(gt + 4 * (g % s->h.gtes));
    pthread_mutex_unlock(&s->lock);
    return r;
}

int vmdk_inflate(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len,
                 size_t *got)
{
    int r = vd_inflate(in, in_len, out, out_len, true, got);
    return r == -EIO ? -EINVAL : r;
}

/* Read and decompress the grain whose marker (or data) starts at sector
 * `gte` into `out` (grain_bytes). */
static int vmdk_sparse_read_compressed(vd_file *f, struct vmdk_sparse *s, uint64_t g,
                                       uint32_t gte, uint8_t *out, vd_error *err)
{
    uint64_t off = (uint64_t)gte * VMDK_SECTOR;
    bool markers = s->h.flags & VMDK_FLAG_MARKERS;
    size_t hdr = markers ? 12 : 0;
    uint64_t clen;
    if (off >= s->file_size)
        goto past_eof;
    if (markers) {
        uint8_t m[12];
        int r = vd_file_pread(f, m, sizeof m, off, err);
        if (r < 0)
            return r;
        uint64_t lba = vd_le64(m);
        clen = vd_le32(m + 8);
        if (lba != g * s->h.grain)
            return vd_set_error(err, -EINVAL, "vmdk: %s: grain marker at 0x%" PRIx64 " is for "
                                "sector 0x%" PRIx64 ", grain table says 0x%" PRIx64,
                                f->path, off, lba, g * s->h.grain);
        if (clen == 0 || clen > 2 * s->grain_bytes + 4096)
            return vd_set_error(err, -EINVAL, "vmdk: %s: grain marker at 0x%" PRIx64 " has "
                                "compressed size %" PRIu64, f->path, off, clen);
    } else {
        clen = s->file_size - off < 2 * s->grain_bytes ? s->file_size - off
                                                        : 2 * s->grain_bytes;
    }
    if (off + hdr + clen > s->file_size)
        goto past_eof;
    uint8_t *cbuf = malloc(clen);
    if (!cbuf)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vd_file_pread(f, cbuf, clen, off + hdr, err);
    size_t got = 0;
    if (r == 0 && vmdk_inflate(cbuf, clen, out, s->grain_bytes, &got) < 0)
        r = vd_set_error(err, -EINVAL, "vmdk: %s: compressed grain at 0x%" PRIx64
                         " does not inflate", f->path, off);
    free(cbuf);
    if (r == 0 && got < s->grain_bytes)
        memset(out + got, 0, s->grain_bytes - got);
    return r;
past_eof:
    return vd_set_error(err, -EINVAL, "vmdk: %s: grain table entry for grain %" PRIu64
                        " points to 0x%" PRIx64 " past end of file (size 0x%" PRIx64 ")",
                        f->path, g, off, s->file_size);
}

/* Copy [in_off, in_off+n) of compressed grain g.  A whole grain inflates
 * straight into the caller's buffer, without the lock, so that the threads of
 * a conversion decompress in parallel; parts of a grain go through a
 * one-grain cache so that small sequential reads inflate it once. */
static int vmdk_sparse_copy_compressed(vd_file *f, struct vmdk_sparse *s, uint64_t g,
                                       uint32_t gte, uint8_t *dst, size_t in_off,
                                       size_t n, vd_error *err)
{
    if (n == s->grain_bytes)
        return vmdk_sparse_read_compressed(f, s, g, gte, dst, err);
    int r = 0;
    pthread_mutex_lock(&s->lock);
    if (!s->cache && !(s->cache = malloc(s->grain_bytes)))
        r = vd_set_error(err, -ENOMEM, "out of memory");
    if (r == 0 && s->cache_grain != g) {
        s->cache_grain = UINT64_MAX;
        r = vmdk_sparse_read_compressed(f, s, g, gte, s->cache, err);
        if (r == 0)
            s->cache_grain = g;
    }
    if (r == 0)
        memcpy(dst, s->cache + in_off, n);
    pthread_mutex_unlock(&s->lock);
    return r;
}

/* The part of a read inside one grain. */
static int vmdk_sparse_read_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    struct vmdk_walk *w = ctx;
    struct vmdk_sparse *s = w->e->sp;
    uint64_t g = pt->blk;
    uint32_t gte = VMDK_GTE_UNALLOC;
    int r = g < s->n_grains ? vmdk_sparse_gte(w->e->file, s, g, &gte, err) : 0;
    if (r < 0)
        return r;
    if (gte == VMDK_GTE_UNALLOC)
        return vd_backing_pread(img, pt->p, pt->n, w->guest_off + pt->done, err);
    if (gte == VMDK_GTE_ZERO && (s->h.flags & VMDK_FLAG_ZERO_GRAIN)) {
        memset(pt->p, 0, pt->n);
        return 0;
    }
    if (s->h.flags & VMDK_FLAG_COMPRESSED)
        return vmdk_sparse_copy_compressed(w->e->file, s, g, gte, pt->p, pt->in, pt->n, err);
    uint64_t at = (uint64_t)gte * VMDK_SECTOR + pt->in;
    if (at + pt->n > s->file_size)
        return vd_set_error(err, -EINVAL, "vmdk: %s: grain table entry for grain %" PRIu64
                            " points to 0x%" PRIx64 " past end of file (size 0x%" PRIx64 ")",
                            w->e->file->path, g, (uint64_t)gte * VMDK_SECTOR, s->file_size);
    return vd_file_pread(w->e->file, pt->p, pt->n, at, err);
}

int vmdk_sparse_pread(vd_image *img, struct vmdk_extent *e, uint8_t *buf, size_t len,
                      uint64_t off, uint64_t guest_off, vd_error *err)
{
    struct vmdk_walk w = { e, guest_off };
    return vd_walk(img, buf, off, len, e->sp->grain_bytes, vmdk_sparse_read_part, &w, err);
}

/* Point grain g at sector v in the cached table (and its redundant copy);
 * the tables on disk follow at eviction or flush, after a sync. */
static int vmdk_sparse_set_gte(vd_file *f, struct vmdk_sparse *s, uint64_t g, uint32_t v,
                               vd_error *err)
{
    uint32_t i = (uint32_t)(g / s->h.gtes);
    uint8_t *gt;
    size_t slot;
    pthread_mutex_lock(&s->lock);
    int r = vmdk_sparse_table(f, s, i, &gt, &slot, err);
    if (r == 0) {
        vd_put_le32(gt + 4 * (g % s->h.gtes), v);
        vd_mcache_mark_dirty(&s->gtc, slot,
                             s->rgd && s->rgd[i] ? (uint64_t)s->rgd[i] * VMDK_SECTOR : 0);
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}

int vmdk_sparse_flush(struct vmdk_extent *e, vd_error *err)
{
    struct vmdk_sparse *s = e->sp;
    if (!s)
        return 0;
    pthread_mutex_lock(&s->lock);
    int r = vd_mcache_flush(&s->gtc, err);
    pthread_mutex_unlock(&s->lock);
    return r;
}

/* Take `bytes` at the end of the file for grains that are written at once:
 * *sec gets their sector.  The write itself extends the file (a truncate
 * first cost one more system call per grain: 10 % of a copy's CPU). */
static int vmdk_sparse_reserve(vd_file *f, struct vmdk_sparse *s, uint64_t bytes,
                               uint64_t *sec, vd_error *err)
{
    uint64_t at = vd_round_up(s->file_size, VMDK_SECTOR);
    if ((at + bytes) / VMDK_SECTOR > UINT32_MAX)
        return vd_set_error(err, -EFBIG, "vmdk: %s: sparse extent would grow past 2 TiB",
                            f->path);
    s->file_size = at + bytes;
    *sec = at / VMDK_SECTOR;
    return 0;
}

/* Append `bytes` of zeroes at the end of the file; *sec gets its sector. */
static int vmdk_sparse_append(vd_file *f, struct vmdk_sparse *s, uint64_t bytes,
                              uint64_t *sec, vd_error *err)
{
    uint64_t old = s->file_size;
    int r = vmdk_sparse_reserve(f, s, bytes, sec, err);
    if (r == 0 && (r = vd_file_truncate(f, s->file_size, err)) < 0)
        s->file_size = old;
    return r;
}

/* A grain table for directory entry i (hosted sparse files normally have
 * them all preallocated; a directory with holes gets new tables here). */
static int vmdk_sparse_ensure_gt(vd_file *f, struct vmdk_sparse *s, uint32_t i,
                                 vd_error *err)
{
    if (s->gd[i])
        return 0;
    uint64_t bytes = vd_round_up((uint64_t)s->h.gtes * 4, VMDK_SECTOR), sec = 0, rsec = 0;
    int r = vmdk_sparse_append(f, s, bytes, &sec, err);
    if (r == 0 && s->rgd)
        r = vmdk_sparse_append(f, s, bytes, &rsec, err);
    if (r < 0)
        return r;
    uint8_t le[4];
    vd_put_le32(le, (uint32_t)sec);
    r = vd_file_pwrite(f, le, 4, s->h.gd_off * VMDK_SECTOR + i * 4ull, err);
    if (r == 0 && s->rgd) {
        vd_put_le32(le, (uint32_t)rsec);
        r = vd_file_pwrite(f, le, 4, s->h.rgd_off * VMDK_SECTOR + i * 4ull, err);
        s->rgd[i] = (uint32_t)rsec;
    }
    if (r < 0)
        return r;
    s->gd[i] = (uint32_t)sec;      /* the new table reads as zeroes */
    return 0;
}

/* Write part of a grain that is not allocated yet: the rest of the grain
 * comes from the backing chain (or zeroes) so that the new grain is whole. */
static int vmdk_sparse_alloc_grain(vd_image *img, struct vmdk_extent *e, uint64_t g,
                                   uint32_t old, const uint8_t *buf, size_t in, size_t n,
                                   uint64_t guest_off, vd_error *err)
{
    struct vmdk_sparse *s = e->sp;
    uint8_t *grain = NULL;
    const uint8_t *src = buf;
    int r = 0;
    if (n != s->grain_bytes) {
        grain = malloc(s->grain_bytes);
        if (!grain)
            return vd_set_error(err, -ENOMEM, "out of memory");
        uint64_t gstart = guest_off - in;
        uint64_t avail = img->size - gstart < s->grain_bytes ? img->size - gstart
                                                               : s->grain_bytes;
        memset(grain, 0, s->grain_bytes);
        if (old == VMDK_GTE_UNALLOC)
            r = vd_backing_pread(img, grain, (size_t)avail, gstart, err);
        memcpy(grain + in, buf, n);
        src = grain;
    }
    uint64_t sec = 0;
    if (r == 0)
        r = vmdk_sparse_reserve(e->file, s, s->grain_bytes, &sec, err);
    if (r == 0)
        r = vd_file_pwrite(e->file, src, s->grain_bytes, sec * VMDK_SECTOR, err);
    if (r == 0)
        r = vmdk_sparse_set_gte(e->file, s, g, (uint32_t)sec, err);
    free(grain);
    return r;
}

/* The part of a write inside one grain: in place, or a new grain. */
static int vmdk_sparse_write_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    struct vmdk_walk *w = ctx;
    struct vmdk_sparse *s = w->e->sp;
    uint64_t g = pt->blk;
    if (g >= s->n_grains)
        return vd_set_error(err, -EINVAL, "vmdk: %s: write at 0x%" PRIx64 " beyond the "
                            "extent's capacity", w->e->file->path, pt->off);
    uint32_t gte = 0;
    int r = vmdk_sparse_ensure_gt(w->e->file, s, (uint32_t)(g / s->h.gtes), err);
    if (r == 0)
        r = vmdk_sparse_gte(w->e->file, s, g, &gte, err);
    if (r < 0)
        return r;
    bool zero_gte = gte == VMDK_GTE_ZERO && (s->h.flags & VMDK_FLAG_ZERO_GRAIN);
    if (gte == VMDK_GTE_UNALLOC || zero_gte)
        return vmdk_sparse_alloc_grain(img, w->e, g, gte, pt->p, pt->in, pt->n,
                                       w->guest_off + pt->done, err);
    uint64_t at = (uint64_t)gte * VMDK_SECTOR + pt->in;
    if (at + pt->n > s->file_size)
        return vd_set_error(err, -EINVAL, "vmdk: %s: grain table entry for grain %" PRIu64
                            " points past end of file", w->e->file->path, g);
    return vd_file_pwrite(w->e->file, pt->p, pt->n, at, err);
}

/* The whole grains from `off` (on a grain boundary) that a write of `len`
 * bytes fills and that hold no data yet, appended together: one write for
 * them all, then their entries.  A copy writes 1 MiB jobs, so 16 grains of
 * 64 KiB take one system call instead of 16.  *done: the bytes written, 0
 * when fewer than two such grains start here (the caller writes one grain
 * the ordinary way). */
static int vmdk_sparse_new_run(struct vmdk_extent *e, const uint8_t *buf, uint64_t off,
                               uint64_t len, uint64_t *done, vd_error *err)
{
    struct vmdk_sparse *s = e->sp;
    *done = 0;
    if (off % s->grain_bytes)
        return 0;
    uint64_t g0 = off / s->grain_bytes, k = 0;
    while ((k + 1) * s->grain_bytes <= len && g0 + k < s->n_grains) {
        uint32_t gte = 0;
        int r = vmdk_sparse_ensure_gt(e->file, s, (uint32_t)((g0 + k) / s->h.gtes), err);
        if (r == 0)
            r = vmdk_sparse_gte(e->file, s, g0 + k, &gte, err);
        if (r < 0)
            return r;
        if (gte != VMDK_GTE_UNALLOC &&
            !(gte == VMDK_GTE_ZERO && (s->h.flags & VMDK_FLAG_ZERO_GRAIN)))
            break;
        k++;
    }
    if (k < 2)
        return 0;
    uint64_t sec = 0;
    int r = vmdk_sparse_reserve(e->file, s, k * s->grain_bytes, &sec, err);
    if (r == 0)
        r = vd_file_pwrite(e->file, buf, k * s->grain_bytes, sec * VMDK_SECTOR, err);
    for (uint64_t i = 0; r == 0 && i < k; i++)
        r = vmdk_sparse_set_gte(e->file, s, g0 + i, (uint32_t)(sec + i * s->h.grain), err);
    *done = r == 0 ? k * s->grain_bytes : 0;
    return r;
}

int vmdk_sparse_pwrite(vd_image *img, struct vmdk_extent *e, const uint8_t *buf,
                       size_t len, uint64_t off, uint64_t guest_off, vd_error *err)
{
    struct vmdk_sparse *s = e->sp;
    if (s->h.flags & VMDK_FLAG_COMPRESSED)
        return vd_set_error(err, -ENOTSUP, "vmdk: %s: rewriting a compressed "
                            "(streamOptimized) extent is not supported; convert it "
                            "to monolithicSparse first", e->file->path);
    for (uint64_t done = 0, n; done < len; done += n) {
        int r = vmdk_sparse_new_run(e, buf + done, off + done, len - done, &n, err);
        if (r < 0)
            return r;
        if (n)
            continue;
        /* one grain (or the part of one) in place, or a new grain alone */
        n = s->grain_bytes - (off + done) % s->grain_bytes;
        if (n > len - done)
            n = len - done;
        struct vmdk_walk w = { e, guest_off + done };
        r = vd_walk(img, (void *)(buf + done), off + done, n, s->grain_bytes,
                    vmdk_sparse_write_part, &w, err);
        if (r < 0)
            return r;
    }
    return 0;
}

int vmdk_sparse_status(struct vmdk_extent *e, uint64_t off, uint64_t len,
                       uint64_t guest_off, vd_extents *ext, vd_error *err)
{
    struct vmdk_sparse *s = e->sp;
    uint64_t end = off + len;
    while (off < end) {
        uint64_t g = off / s->grain_bytes;
        uint64_t gend = (g + 1) * s->grain_bytes;
        uint32_t gte = VMDK_GTE_UNALLOC;
        uint64_t i = g / s->h.gtes;
        if (g >= s->n_grains || i >= s->gd_n || s->gd[i] == 0) {
            /* the whole grain table's range is unallocated */
            gend = (i + 1) * s->h.gtes * s->grain_bytes;
        } else {
            int r = vmdk_sparse_gte(e->file, s, g, &gte, err);
            if (r < 0)
                return r;
        }
        uint64_t n = (gend < end ? gend : end) - off;
        uint32_t flags;
        uint64_t foff = VD_NO_OFFSET;
        if (gte == VMDK_GTE_UNALLOC)
            flags = VD_LAYER_UNALLOC;
        else if (gte == VMDK_GTE_ZERO && (s->h.flags & VMDK_FLAG_ZERO_GRAIN))
            flags = VD_LAYER_ZERO;
        else if (s->h.flags & VMDK_FLAG_COMPRESSED)
            flags = VD_LAYER_DATA | VD_EXT_COMPRESSED;
        else {
            flags = VD_LAYER_DATA;
            foff = (uint64_t)gte * VMDK_SECTOR + off % s->grain_bytes;
        }
        int r = vd_extents_add(ext, guest_off, n, flags, 0, foff);
        if (r < 0)
            return r;
        off += n;
        guest_off += n;
    }
    return 0;
}

/* Every table and grain inside the file, GD and RGD agreeing in shape. */
int vmdk_sparse_check(struct vmdk_extent *e, vd_check_result *res, vd_error *err)
{
    struct vmdk_sparse *s = e->sp;
    for (uint32_t i = 0; i < s->gd_n; i++) {
        if (!s->gd[i])
            continue;
        uint8_t *gt = NULL;
        size_t slot;
        pthread_mutex_lock(&s->lock);
        int r = vmdk_sparse_table(e->file, s, i, &gt, &slot, err);
        if (r < 0) {
            pthread_mutex_unlock(&s->lock);
            res->corruptions++;
            if (!res->first_problem[0] && err)
                snprintf(res->first_problem, sizeof res->first_problem, "%s", err->msg);
            continue;
        }
        for (uint32_t k = 0; k < s->h.gtes; k++) {
            uint64_t g = (uint64_t)i * s->h.gtes + k;
            uint32_t gte = vd_le32(gt + 4 * k);
            if (g >= s->n_grains)
                break;
            res->total_clusters++;
            if (gte == VMDK_GTE_UNALLOC ||
                (gte == VMDK_GTE_ZERO && (s->h.flags & VMDK_FLAG_ZERO_GRAIN)))
                continue;
            res->allocated_clusters++;
            uint64_t need = (s->h.flags & VMDK_FLAG_COMPRESSED) ? VMDK_SECTOR : s->grain_bytes;
            if ((uint64_t)gte * VMDK_SECTOR + need > s->file_size) {
                res->corruptions++;
                if (!res->first_problem[0])
                    snprintf(res->first_problem, sizeof res->first_problem,
                             "%s: grain table %" PRIu32 " entry %" PRIu32 " points to 0x%"
                             PRIx64 " past end of file", e->file->path, i, k,
                             (uint64_t)gte * VMDK_SECTOR);
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
    if (res->image_end_offset < s->file_size)
        res->image_end_offset = s->file_size;
    return 0;
}

/* Clear every grain table (and its redundant copy) on disk: the extent
 * then holds nothing of its own (commit's emptying).  Grains stay in the
 * file, unreferenced, as VMware's own tools leave them until a shrink. */
int vmdk_sparse_make_empty(struct vmdk_extent *e, vd_error *err)
{
    struct vmdk_sparse *s = e->sp;
    uint64_t bytes = (uint64_t)s->h.gtes * 4;
    uint8_t *z = calloc(1, bytes);
    if (!z)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vmdk_sparse_flush(e, err);
    pthread_mutex_lock(&s->lock);
    vd_mcache_drop(&s->gtc, UINT64_MAX);      /* every table is zeroed below */
    pthread_mutex_unlock(&s->lock);
    for (uint32_t i = 0; r == 0 && i < s->gd_n; i++) {
        if (s->gd[i])
            r = vd_file_pwrite(e->file, z, bytes, (uint64_t)s->gd[i] * VMDK_SECTOR, err);
        if (r == 0 && s->rgd && s->rgd[i])
            r = vd_file_pwrite(e->file, z, bytes, (uint64_t)s->rgd[i] * VMDK_SECTOR, err);
    }
    free(z);
    return r == 0 ? vd_file_sync(e->file, err) : r;
}

/* Grow the extent to `sectors` inside its grain directory's room: the
 * directory fills whole sectors, so entries past the ones in use fit in
 * place.  Each new entry gets a zeroed grain table (and redundant copy)
 * appended to the file - qemu writes through a directory entry of 0 into
 * sector 0, so none may be left unallocated - and then, synced, the
 * header's capacity changes with one 8-byte write, synced: the commit
 * point.  A crash before it leaves tables past the disk's end that nothing
 * reads (a later grow allocates its own).  `check_only`: say whether it
 * fits, change nothing.  `zero_to` (bytes, 0: none): the grains up to it
 * past the old capacity read as zeroes before the capacity changes. */
/* Grains [g0, g1), past the extent's old capacity, made to read as zeroes
 * (over a backing file) before the capacity exposes them: zero entries
 * where the header allows them, else grains appended as one hole; synced
 * before their tables are written, and after. */
static int vmdk_sparse_zero_grains(struct vmdk_extent *e, uint64_t g0, uint64_t g1,
                                   vd_error *err)
{
    struct vmdk_sparse *s = e->sp;
    bool zg = s->h.flags & VMDK_FLAG_ZERO_GRAIN;
    uint64_t sec = 0;
    int r = g0 < g1 && !zg ? vmdk_sparse_append(e->file, s, (g1 - g0) * s->grain_bytes, &sec, err)
                           : 0;
    for (uint64_t g = g0; r == 0 && g < g1; g++)
        r = vmdk_sparse_set_gte(e->file, s, g, zg ? VMDK_GTE_ZERO
                                                  : (uint32_t)(sec + (g - g0) * s->h.grain), err);
    if (r == 0)
        r = vd_file_sync(e->file, err);
    if (r == 0)
        r = vmdk_sparse_flush(e, err);
    return r == 0 ? vd_file_sync(e->file, err) : r;
}

int vmdk_sparse_grow(struct vmdk_extent *e, uint64_t sectors, bool check_only,
                     uint64_t zero_to, vd_error *err)
{
    struct vmdk_sparse *s = e->sp;
    /* the core names the image; an extent of a descriptor file is named */
    const char *who = e->own_file ? e->file->path : "";
    if (s->h.flags & (VMDK_FLAG_COMPRESSED | VMDK_FLAG_MARKERS))
        return vd_set_error(err, -ENOTSUP, "vmdk: %s%sa streamOptimized extent cannot grow "
                            "in place (its grain directory is written once, at its end)",
                            who, *who ? ": " : "");
    uint64_t grains = (sectors + s->h.grain - 1) / s->h.grain;
    uint64_t gd_n = (grains + s->h.gtes - 1) / s->h.gtes;
    uint64_t room = vd_round_up((uint64_t)s->gd_n * 4, VMDK_SECTOR) / 4;
    if (gd_n > room || s->h.overhead + grains * s->h.grain > UINT32_MAX)
        return vd_set_error(err, -ENOSPC, "vmdk: %s%sthe grain directory at sector 0x%" PRIx64
                            " has room for %" PRIu64 " grain tables (%" PRIu64 " bytes); "
                            "growing past that needs a new image (vdconvert convert)",
                            who, *who ? ": " : "", s->h.gd_off, room,
                            room * s->h.gtes * s->grain_bytes);
    if (check_only)
        return 0;
    uint32_t *gd = realloc(s->gd, gd_n * 4), *rgd = s->rgd;
    if (gd)
        s->gd = gd;
    if (gd && rgd && (rgd = realloc(s->rgd, gd_n * 4)))
        s->rgd = rgd;
    if (!gd || (s->rgd && !rgd))
        return vd_set_error(err, -ENOMEM, "out of memory");
    for (uint64_t i = s->gd_n; i < gd_n; i++) {
        s->gd[i] = 0;
        if (s->rgd)
            s->rgd[i] = 0;
    }
    uint32_t old_n = s->gd_n;
    s->gd_n = (uint32_t)gd_n;
    int r = 0;
    for (uint32_t i = old_n; r == 0 && i < s->gd_n; i++)
        r = vmdk_sparse_ensure_gt(e->file, s, i, err);
    if (r == 0 && s->gd_n > old_n)
        r = vd_file_sync(e->file, err);
    if (r == 0 && zero_to > e->sectors * VMDK_SECTOR)
        r = vmdk_sparse_zero_grains(e, (e->sectors + s->h.grain - 1) / s->h.grain,
                                    (zero_to / VMDK_SECTOR + s->h.grain - 1) / s->h.grain, err);
    uint8_t cap[8];
    vd_put_le64(cap, sectors);
    if (r == 0)
        r = vd_file_pwrite(e->file, cap, sizeof cap, 12, err);
    if (r == 0)
        r = vd_file_sync(e->file, err);
    if (r < 0)
        return r;
    s->h.capacity = sectors;
    s->n_grains = grains;
    e->sectors = sectors;
    return 0;
}
