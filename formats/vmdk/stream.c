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
 * goes on (the tables already written stay valid). */
#include "vmdk.h"

#include <errno.h>
#include <inttypes.h>
#include <libdeflate.h>
#include <stdlib.h>

/* libdeflate level for grains.  On bench/run.sh's mixed content (1 GiB:
 * 384 MiB of a tar of /usr/lib, 128 MiB random) against qemu-img's file
 * (zlib level 6, 329.4 MB), with grains of 7.9+ bits per byte stored:
 * level 2 gives 335.9 MB (+2.0 %) in 2.5 s of CPU, level 3 334.9 MB in
 * 2.7 s, level 4 334.2 MB in 2.8 s; issue 10 allows +3 %.  (Before
 * high-entropy grains were stored: level 4 331.3 MB in 3.8 s, level 6
 * 327.8 MB in 4.6 s.) */
#define VMDK_DEFLATE_LEVEL 2

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
    struct libdeflate_compressor *c;
    struct libdeflate_compressor *c_store;   /* level 0: incompressible grains */
    uint8_t *cbuf;
    size_t cbuf_len;
};

void vmdk_stream_free(struct vmdk_stream *s)
{
    if (!s)
        return;
    if (s->c)
        libdeflate_free_compressor(s->c);
    if (s->c_store)
        libdeflate_free_compressor(s->c_store);
    free(s->gd);
    free(s->gt);
    free(s->grain);
    free(s->cbuf);
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
    s->c = libdeflate_alloc_compressor(VMDK_DEFLATE_LEVEL);
    s->c_store = libdeflate_alloc_compressor(0);
    s->cbuf_len = libdeflate_zlib_compress_bound(NULL, s->grain_bytes) + 12 + VMDK_SECTOR;
    s->cbuf = malloc(s->cbuf_len);
    if (!s->gd || !s->gt || !s->grain || !s->c || !s->c_store || !s->cbuf)
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

/* Compress and write the buffered grain (all-zero grains are skipped). */
static int vmdk_stream_put_grain(struct vmdk_stream *s, vd_error *err)
{
    if (s->cur_grain == UINT64_MAX || !s->grain_dirty)
        return 0;
    s->grain_dirty = false;
    if (vd_is_zero(s->grain, s->grain_bytes))
        return 0;
    uint64_t g = s->cur_grain, gi = g / s->h.gtes;
    if (gi != s->cur_gt) {
        int r = vmdk_stream_put_gt(s, err);
        if (r < 0)
            return r;
        s->cur_gt = gi;
        memset(s->gt, 0, s->h.gtes * 4ull);
    }
    /* Every grain of a stream is a zlib stream; a random one goes in stored
     * blocks (as deflate would end up doing, without the search). */
    struct libdeflate_compressor *c = vd_looks_incompressible(s->grain, s->grain_bytes)
                                      ? s->c_store : s->c;
    size_t clen = libdeflate_zlib_compress(c, s->grain, s->grain_bytes, s->cbuf + 12,
                                           s->cbuf_len - 12 - VMDK_SECTOR);
    if (!clen)
        return vd_set_error(err, -EIO, "vmdk: compressing grain %" PRIu64 " failed", g);
    vd_put_le64(s->cbuf, g * s->h.grain);
    vd_put_le32(s->cbuf + 8, (uint32_t)clen);
    size_t total = vd_round_up(12 + clen, VMDK_SECTOR);
    memset(s->cbuf + 12 + clen, 0, total - 12 - clen);
    if ((s->pos + total) / VMDK_SECTOR > UINT32_MAX)
        return vd_set_error(err, -EFBIG, "vmdk: streamOptimized file would pass 2 TiB");
    int r = vd_file_pwrite(s->f, s->cbuf, total, s->pos, err);
    if (r < 0)
        return r;
    s->gt[g % s->h.gtes] = (uint32_t)(s->pos / VMDK_SECTOR);
    s->gt_dirty = true;
    s->pos += total;
    return 0;
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
    while (len) {
        uint64_t g = off / s->grain_bytes;
        size_t in = (size_t)(off % s->grain_bytes);
        size_t n = s->grain_bytes - in < len ? (size_t)(s->grain_bytes - in) : len;
        if (s->cur_grain != UINT64_MAX && g < s->cur_grain)
            return vd_set_error(err, -EINVAL, "vmdk: streamOptimized images are written in "
                                "one pass: write at 0x%" PRIx64 " comes after grain at 0x%"
                                PRIx64, off, s->cur_grain * s->grain_bytes);
        if (g != s->cur_grain) {
            int r = vmdk_stream_put_grain(s, err);
            if (r < 0)
                return r;
            s->cur_grain = g;
            memset(s->grain, 0, s->grain_bytes);
        }
        vmdk_stream_reopen(s);
        memcpy(s->grain + in, buf, n);
        s->grain_dirty = true;
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

int vmdk_stream_pread(vd_image *img, uint8_t *buf, size_t len, uint64_t off,
                      vd_error *err)
{
    struct vmdk_stream *s = ((struct vmdk *)img->priv)->stream;
    while (len) {
        uint64_t g = off / s->grain_bytes;
        size_t in = (size_t)(off % s->grain_bytes);
        size_t n = s->grain_bytes - in < len ? (size_t)(s->grain_bytes - in) : len;
        if (g == s->cur_grain)
            memcpy(buf, s->grain + in, n);
        else if (s->cur_grain == UINT64_MAX || g > s->cur_grain)
            memset(buf, 0, n);           /* not written yet */
        else
            return vd_set_error(err, -ENOTSUP, "vmdk: reading back grain %" PRIu64 " of a "
                                "streamOptimized image being written is not supported "
                                "(reopen it after closing)", g);
        buf += n;
        off += n;
        len -= n;
    }
    return 0;
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
