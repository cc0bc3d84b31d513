/* stream.c - writing streamOptimized VMDK in one sequential pass, laid out
 * the way VMware writes it (and ESXi/OVF import expects):
 *
 *   header (version 3, grain directory "at end") | descriptor | pad to 64 KiB
 *   { grain marker + deflated grain }...  grain-table marker + grain table
 *   ... (each grain table follows the grains it maps, in increasing order)
 *   grain-directory marker + directory | footer marker + footer header | EOS
 *
 * Writes must come in increasing grain order (vdconvert writes in order);
 * one grain is buffered so that writes smaller than a grain can fill it.
 * Grains that stay all-zero are not stored.  flush() writes the directory,
 * footer and end-of-stream marker; a later write in order truncates them and
 * goes on (the tables already written stay valid).
 *
 * A write of many whole grains (vdconvert hands over up to 4 MiB at a time)
 * has its grains deflated by one thread per CPU, each into its own slot of a
 * batch buffer, then written in order: writes arrive strictly in order, so
 * without this the whole conversion would compress on one core. */
#include "vmdk.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

/* Deflate level of grains (vd_set_compression_level may change it): ISA-L
 * igzip level 3.  On bench/run.sh's mixed image (1 GiB: 3/8 a tar of
 * /usr/lib, 1/8 random; 64 KiB grains) it took 1.7 s of CPU where
 * libdeflate level 2 took 3.5 s, qemu's zlib level 6 13.2 s; its output was
 * 5.0 % larger than qemu-img's (libdeflate 2: 1.6 %, igzip 1: 5.8 %). */
#define VMDK_DEFLATE_LEVEL 3
#define VMDK_BATCH_BYTES (4u << 20)     /* grains deflated in parallel per round */
#define VMDK_MAX_THREADS 8

struct vmdk_stream {
    struct vmdk_header h;
    vd_file *f;
    uint64_t grain_bytes, n_grains;
    uint32_t gd_n;
    uint32_t *gd;                 /* sector of each written grain table */
    uint32_t *gt;                 /* the table being filled */
    uint64_t cur_gt;              /* its index, UINT64_MAX none */
    bool gt_dirty;                /* it maps grains not yet in the file's copy */
    uint8_t *grain;               /* the buffered grain */
    uint64_t cur_grain;           /* its index, UINT64_MAX none */
    bool grain_dirty;
    uint64_t pos;                 /* next byte to write in the file */
    uint64_t tail_pos;            /* where the directory marker went */
    bool finished;
    int level, n_threads;
    /* per thread: the grain deflater, and a stored-blocks one for grains
     * that look random (as deflate would end up doing, without the search) */
    vd_deflater *zd[VMDK_MAX_THREADS], *zstore[VMDK_MAX_THREADS];
    size_t rec_max;               /* bytes of a grain record at most */
    size_t batch_max;             /* grains per batch */
    uint8_t *batch;               /* batch_max records */
    const uint8_t **bsrc;         /* each batch grain's data, */
    uint64_t *bg;                 /* its index, */
    size_t *blen;                 /* its record's size (0 zero grain, SIZE_MAX failed) */
};

void vmdk_stream_free(struct vmdk_stream *s)
{
    if (!s)
        return;
    for (int i = 0; i < VMDK_MAX_THREADS; i++) {
        vd_deflater_free(s->zd[i]);
        vd_deflater_free(s->zstore[i]);
    }
    free(s->gd);
    free(s->gt);
    free(s->grain);
    free(s->batch);
    free(s->bsrc);
    free(s->bg);
    free(s->blen);
    free(s);
}

int vmdk_stream_begin(vd_image *img, struct vmdk_extent *e, const struct vmdk_header *h,
                      vd_error *err)
{
    struct vmdk *v = img->priv;
    struct vmdk_stream *s = calloc(1, sizeof *s);
    if (!s)
        return vd_set_error(err, -ENOMEM, "out of memory");
    v->stream = s;
    s->h = *h;
    s->f = e->file;
    s->grain_bytes = h->grain * VMDK_SECTOR;
    s->n_grains = (h->capacity + h->grain - 1) / h->grain;
    uint64_t gd_n = (s->n_grains + h->gtes - 1) / h->gtes;
    if (gd_n * 4 > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EFBIG, "vmdk: grain directory of %" PRIu64 " entries is "
                            "too big", gd_n);
    s->gd_n = (uint32_t)gd_n;
    s->gd = calloc(gd_n ? gd_n : 1, 4);
    s->gt = calloc(h->gtes, 4);
    s->grain = malloc(s->grain_bytes);
    /* marker, zlib stream in stored blocks (5 bytes per 64 KiB at most;
     * a deflated grain that would not fit is stored), sector padding */
    s->rec_max = vd_round_up(12 + 6 + s->grain_bytes + 5 * (s->grain_bytes / 16384 + 1),
                             VMDK_SECTOR);
    s->batch_max = VMDK_BATCH_BYTES / s->grain_bytes ? VMDK_BATCH_BYTES / s->grain_bytes : 1;
    s->bsrc = calloc(s->batch_max + 1, sizeof *s->bsrc);
    s->bg = calloc(s->batch_max + 1, sizeof *s->bg);
    s->blen = calloc(s->batch_max + 1, sizeof *s->blen);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    s->n_threads = ncpu < 1 ? 1 : ncpu > VMDK_MAX_THREADS ? VMDK_MAX_THREADS : (int)ncpu;
    if (!s->gd || !s->gt || !s->grain || !s->bsrc || !s->bg || !s->blen)
        return vd_set_error(err, -ENOMEM, "out of memory");
    s->cur_gt = UINT64_MAX;
    s->cur_grain = UINT64_MAX;
    s->pos = h->overhead * VMDK_SECTOR;
    return 0;
}

/* A metadata marker: `sectors` of metadata of `type` follow. */
static int vmdk_stream_marker(struct vmdk_stream *s, uint64_t sectors, uint32_t type,
                              vd_error *err)
{
    uint8_t m[VMDK_SECTOR] = { 0 };
    vd_put_le64(m, sectors);
    vd_put_le32(m + 12, type);
    int r = vd_file_pwrite(s->f, m, sizeof m, s->pos, err);
    if (r == 0)
        s->pos += VMDK_SECTOR;
    return r;
}

/* Write a little-endian table of n entries, padded to whole sectors. */
static int vmdk_stream_table(struct vmdk_stream *s, const uint32_t *t, uint64_t n,
                             uint32_t type, uint32_t *sector, vd_error *err)
{
    uint64_t bytes = vd_round_up(n * 4, VMDK_SECTOR);
    int r = vmdk_stream_marker(s, bytes / VMDK_SECTOR, type, err);
    if (r < 0)
        return r;
    uint8_t *b = calloc(1, bytes ? bytes : 1);
    if (!b)
        return vd_set_error(err, -ENOMEM, "out of memory");
    for (uint64_t i = 0; i < n; i++)
        vd_put_le32(b + 4 * i, t[i]);
    r = vd_file_pwrite(s->f, b, bytes, s->pos, err);
    free(b);
    if (r < 0)
        return r;
    if (sector)
        *sector = (uint32_t)(s->pos / VMDK_SECTOR);
    s->pos += bytes;
    return 0;
}

/* Emit the grain table being filled, if it maps grains not yet written
 * out in a copy of it. */
static int vmdk_stream_put_gt(struct vmdk_stream *s, vd_error *err)
{
    if (s->cur_gt == UINT64_MAX || !s->gt_dirty)
        return 0;
    int r = vmdk_stream_table(s, s->gt, s->h.gtes, VMDK_MARKER_GT, &s->gd[s->cur_gt], err);
    if (r == 0)
        s->gt_dirty = false;
    return r;
}

/* Deflate one grain into a record at `rec` (marker + zlib stream, padded
 * to a sector) with thread slot t's deflaters.  Returns its size, 0 for an
 * all-zero grain (not stored), SIZE_MAX when out of memory. */
static size_t vmdk_stream_record(struct vmdk_stream *s, int t, const uint8_t *grain,
                                 uint64_t g, uint8_t *rec)
{
    if (vd_is_zero(grain, s->grain_bytes))
        return 0;
    if (!s->zd[t] && !(s->zd[t] = vd_deflater_new(s->level, 15, true)))
        return SIZE_MAX;
    if (!s->zstore[t] && !(s->zstore[t] = vd_deflater_new(0, 15, true)))
        return SIZE_MAX;
    size_t cap = s->rec_max - 12, clen = 0;
    if (!vd_looks_incompressible(grain, s->grain_bytes))
        clen = vd_deflate(s->zd[t], grain, s->grain_bytes, rec + 12, cap);
    if (!clen && !(clen = vd_deflate(s->zstore[t], grain, s->grain_bytes, rec + 12, cap)))
        return SIZE_MAX;
    vd_put_le64(rec, g * s->h.grain);
    vd_put_le32(rec + 8, (uint32_t)clen);
    size_t total = vd_round_up(12 + clen, VMDK_SECTOR);
    memset(rec + 12 + clen, 0, total - 12 - clen);
    return total;
}

struct vmdk_batch_part {
    struct vmdk_stream *s;
    size_t m;
    int t, n;                     /* this part deflates grains t, t+n, ... */
};

static void *vmdk_stream_deflate_part(void *arg)
{
    struct vmdk_batch_part *p = arg;
    struct vmdk_stream *s = p->s;
    for (size_t i = (size_t)p->t; i < p->m; i += (size_t)p->n)
        s->blen[i] = vmdk_stream_record(s, p->t, s->bsrc[i], s->bg[i],
                                        s->batch + i * s->rec_max);
    return NULL;
}

/* Write the records of the batch gathered at batch[0..fill) at s->pos. */
static int vmdk_stream_put_records(struct vmdk_stream *s, size_t fill, vd_error *err)
{
    if (!fill)
        return 0;
    int r = vd_file_pwrite(s->f, s->batch, fill, s->pos, err);
    if (r == 0)
        s->pos += fill;
    return r;
}

/* Deflate the m grains in bsrc/bg (increasing indices), one thread per
 * CPU, and write them in order with the grain tables between them. */
static int vmdk_stream_put_batch(struct vmdk_stream *s, size_t m, vd_error *err)
{
    if (!s->batch && !(s->batch = malloc((s->batch_max + 1) * s->rec_max)))
        return vd_set_error(err, -ENOMEM, "out of memory");
    int n = m < (size_t)s->n_threads ? (int)m : s->n_threads;
    struct vmdk_batch_part parts[VMDK_MAX_THREADS];
    pthread_t th[VMDK_MAX_THREADS];
    bool started[VMDK_MAX_THREADS] = { false };
    for (int t = 0; t < n; t++) {
        parts[t] = (struct vmdk_batch_part){ .s = s, .m = m, .t = t, .n = n };
        if (t > 0)
            started[t] = pthread_create(&th[t], NULL, vmdk_stream_deflate_part, &parts[t]) == 0;
    }
    vmdk_stream_deflate_part(&parts[0]);
    for (int t = 1; t < n; t++)
        if (started[t])
            pthread_join(th[t], NULL);
        else
            vmdk_stream_deflate_part(&parts[t]);   /* no thread: do its share here */
    /* Records move down to follow each other (a record never moves past
     * the slot of one not yet placed); tables go between them in order. */
    size_t fill = 0;
    int r = 0;
    for (size_t i = 0; i < m && r == 0; i++) {
        size_t len = s->blen[i];
        if (len == SIZE_MAX)
            return vd_set_error(err, -ENOMEM, "vmdk: out of memory compressing grain %"
                                PRIu64, s->bg[i]);
        if (!len)
            continue;
        uint64_t g = s->bg[i], gi = g / s->h.gtes;
        if (gi != s->cur_gt) {
            if ((r = vmdk_stream_put_records(s, fill, err)) < 0 ||
                (r = vmdk_stream_put_gt(s, err)) < 0)
                return r;
            fill = 0;
            s->cur_gt = gi;
            memset(s->gt, 0, s->h.gtes * 4ull);
        }
        if ((s->pos + fill + len) / VMDK_SECTOR > UINT32_MAX)
            return vd_set_error(err, -EFBIG, "vmdk: streamOptimized file would pass 2 TiB");
        memmove(s->batch + fill, s->batch + i * s->rec_max, len);
        s->gt[g % s->h.gtes] = (uint32_t)((s->pos + fill) / VMDK_SECTOR);
        s->gt_dirty = true;
        fill += len;
    }
    return vmdk_stream_put_records(s, fill, err);
}

/* Compress and write the buffered grain (all-zero grains are skipped). */
static int vmdk_stream_put_grain(struct vmdk_stream *s, vd_error *err)
{
    if (s->cur_grain == UINT64_MAX || !s->grain_dirty)
        return 0;
    s->grain_dirty = false;
    s->bsrc[0] = s->grain;
    s->bg[0] = s->cur_grain;
    return vmdk_stream_put_batch(s, 1, err);
}

/* After flush wrote the tail, the next write in order continues the stream
 * over it. */
static void vmdk_stream_reopen(struct vmdk_stream *s)
{
    if (!s->finished)
        return;
    s->finished = false;
    s->pos = s->tail_pos;
}

int vmdk_stream_pwrite(vd_image *img, const uint8_t *buf, size_t len, uint64_t off,
                       vd_error *err)
{
    struct vmdk_stream *s = ((struct vmdk *)img->priv)->stream;
    if (!s->level)
        s->level = vd_deflate_level(img->compression_level, VMDK_DEFLATE_LEVEL);
    while (len) {
        uint64_t g, in, n = vd_block_piece(off, len, s->grain_bytes, &g, &in);
        if (s->cur_grain != UINT64_MAX && g < s->cur_grain)
            return vd_set_error(err, -EINVAL, "vmdk: streamOptimized images are written in "
                                "one pass: write at 0x%" PRIx64 " comes after grain at 0x%"
                                PRIx64, off, s->cur_grain * s->grain_bytes);
        vmdk_stream_reopen(s);
        /* Whole grains go out in a batch (the buffered grain in front),
         * but the last one of the write: it stays buffered, so that a
         * later write may add to it and reads of it see it. */
        size_t k = in ? 0 : len / s->grain_bytes;
        if (k * s->grain_bytes == len)
            k--;
        if (k > s->batch_max)
            k = s->batch_max;
        if (k > 0) {
            size_t m = 0;
            if (s->cur_grain == g)
                s->grain_dirty = false;          /* wholly overwritten */
            if (s->cur_grain != UINT64_MAX && s->grain_dirty) {
                s->bsrc[m] = s->grain;
                s->bg[m++] = s->cur_grain;
                s->grain_dirty = false;
            }
            for (size_t i = 0; i < k; i++) {
                s->bsrc[m] = buf + i * s->grain_bytes;
                s->bg[m++] = g + i;
            }
            int r = vmdk_stream_put_batch(s, m, err);
            if (r < 0)
                return r;
            s->cur_grain = g + k - 1;            /* written, nothing buffered */
            n = k * s->grain_bytes;
        } else {
            if (g != s->cur_grain) {
                int r = vmdk_stream_put_grain(s, err);
                if (r < 0)
                    return r;
                s->cur_grain = g;
                memset(s->grain, 0, s->grain_bytes);
            }
            memcpy(s->grain + in, buf, n);
            s->grain_dirty = true;
        }
        buf += n;
        off += n;
        len -= n;
    }
    return 0;
}

int vmdk_stream_finish(vd_image *img, vd_error *err)
{
    struct vmdk_stream *s = ((struct vmdk *)img->priv)->stream;
    if (s->finished)
        return 0;
    int r = vmdk_stream_put_grain(s, err);
    if (r == 0)
        r = vmdk_stream_put_gt(s, err);
    if (r < 0)
        return r;
    /* A later write may add grains to this same table: it is written
     * again then, and the directory points to the newer copy. */
    s->tail_pos = s->pos;
    uint32_t gd_sec = 0;
    r = vmdk_stream_table(s, s->gd, s->gd_n, VMDK_MARKER_GD, &gd_sec, err);
    if (r == 0)
        r = vmdk_stream_marker(s, 1, VMDK_MARKER_FOOTER, err);
    if (r < 0)
        return r;
    struct vmdk_header fh = s->h;
    fh.gd_off = gd_sec;
    fh.rgd_off = 0;
    uint8_t b[2 * VMDK_SECTOR];
    vmdk_header_encode(&fh, b);
    memset(b + VMDK_SECTOR, 0, VMDK_SECTOR);          /* end-of-stream marker */
    r = vd_file_pwrite(s->f, b, sizeof b, s->pos, err);
    if (r == 0)
        r = vd_file_truncate(s->f, s->pos + sizeof b, err);
    if (r < 0)
        return r;
    s->pos += sizeof b;
    s->finished = true;
    return 0;
}

/* The part of a read inside one grain: only the grain being filled and
 * those not written yet can be read back. */
static int vmdk_stream_read_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    (void)img;
    struct vmdk_stream *s = ctx;
    if (pt->blk == s->cur_grain)
        memcpy(pt->p, s->grain + pt->in, pt->n);
    else if (s->cur_grain == UINT64_MAX || pt->blk > s->cur_grain)
        memset(pt->p, 0, pt->n);           /* not written yet */
    else
        return vd_set_error(err, -ENOTSUP, "vmdk: reading back grain %" PRIu64 " of a "
                            "streamOptimized image being written is not supported "
                            "(reopen it after closing)", pt->blk);
    return 0;
}

int vmdk_stream_pread(vd_image *img, uint8_t *buf, size_t len, uint64_t off,
                      vd_error *err)
{
    struct vmdk_stream *s = ((struct vmdk *)img->priv)->stream;
    return vd_walk(img, buf, off, len, s->grain_bytes, vmdk_stream_read_part, s, err);
}

int vmdk_stream_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                       vd_error *err)
{
    (void)err;
    struct vmdk_stream *s = ((struct vmdk *)img->priv)->stream;
    uint64_t written_end = s->cur_grain == UINT64_MAX ? 0 : (s->cur_grain + 1) * s->grain_bytes;
    if (off < written_end) {
        uint64_t n = written_end - off < len ? written_end - off : len;
        return vd_extents_add(ext, off, n, VD_LAYER_DATA | VD_EXT_COMPRESSED, 0,
                              VD_NO_OFFSET);
    }
    return vd_extents_add(ext, off, len, VD_LAYER_ZERO, 0, VD_NO_OFFSET);
}
