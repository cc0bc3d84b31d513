/* compress.c - compressed clusters: zlib (raw deflate) and zstd.
 *
 * Reading: the stored range ends at a sector boundary, so the compressed
 * stream may be followed by padding; both decoders stop at the end of the
 * stream and must produce exactly one cluster.
 * Writing: qemu inflates with a 4 KiB window (windowBits -12), so our deflate
 * stream must not reach further back than that: igzip with hist_bits 12, or
 * zlib with windowBits -12 at levels 4-9 (libvdisk/deflate.c).
 * Compressed clusters are packed at byte granularity into host clusters, as
 * qemu does; every host cluster a compressed range touches is counted once
 * per range. */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

/* One whole cluster from a raw deflate stream (a 4 KiB window or up to 32). */
static int qcow2_inflate(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
    size_t got = 0;
    int r = vd_inflate(in, in_len, out, out_len, false, &got);
    return r < 0 ? r : got == out_len ? 0 : -EIO;
}

static int qcow2_unzstd(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d)
        return -ENOMEM;
    ZSTD_inBuffer ib = { in, in_len, 0 };
    ZSTD_outBuffer ob = { out, out_len, 0 };
    int r = -EIO;
    while (ob.pos < ob.size) {
        size_t before_in = ib.pos, before_out = ob.pos;
        size_t z = ZSTD_decompressStream(d, &ob, &ib);
        if (ZSTD_isError(z))
            break;
        if (ob.pos == ob.size) {
            r = 0;
            break;
        }
        if (z == 0 || (ib.pos == before_in && ob.pos == before_out))
            break;       /* frame ended short, or no progress: truncated */
    }
    ZSTD_freeDCtx(d);
    return r;
}

int qcow2_decompress(qcow2_state *s, const uint8_t *in, size_t in_len, uint8_t *out,
                     size_t out_len, vd_error *err)
{
    int r = s->compression == QCOW2_COMPRESS_ZSTD ? qcow2_unzstd(in, in_len, out, out_len)
                                                  : qcow2_inflate(in, in_len, out, out_len);
    if (r == -ENOMEM)
        return vd_set_error(err, r, "qcow2: out of memory");
    return r;
}

/* Compressed clusters of a run of guest clusters are usually stored one
 * after the other (qemu and vdisk pack them at byte granularity), so a run
 * is read with one pread of the span they cover, at most QCOW2_CRUN_SPAN
 * bytes, instead of one per cluster; each is then inflated straight into
 * the caller's buffer when it wants the whole cluster. */
#define QCOW2_CRUN_MAX 64
#define QCOW2_CRUN_SPAN (1u << 20)
#define QCOW2_CRUN_GAP 4096     /* bytes between two ranges still read across */

int qcow2_read_compressed_run(qcow2_state *s, const qcow2_entry *first, uint8_t *buf,
                              size_t len, uint64_t off, size_t *done, vd_error *err)
{
    qcow2_entry e[QCOW2_CRUN_MAX];
    uint64_t gc = off >> s->cluster_bits, end = off + len;
    uint64_t lo = first->host, hi = first->host + first->csize;
    size_t n = 1;
    e[0] = *first;
    pthread_mutex_lock(&s->lock);
    while (n < QCOW2_CRUN_MAX && ((gc + n) << s->cluster_bits) < end) {
        qcow2_entry x;
        if (qcow2_lookup(s, gc + n, &x, NULL) < 0 || x.kind != QCOW2_COMPRESSED ||
            x.host < lo || x.host > hi + QCOW2_CRUN_GAP ||
            x.host + x.csize - lo > QCOW2_CRUN_SPAN)
            break;
        if (x.host + x.csize > hi)
            hi = x.host + x.csize;
        e[n++] = x;
    }
    pthread_mutex_unlock(&s->lock);
    uint8_t *in = malloc(hi - lo), *tmp = NULL;
    if (!in)
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    int r = vd_file_pread_zfill(s->data_file ? s->data_file : s->file, in, hi - lo, lo, err);
    size_t got = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        uint64_t cstart = (gc + i) << s->cluster_bits;
        uint64_t a = cstart > off ? cstart : off;
        uint64_t b = cstart + s->cluster_size < end ? cstart + s->cluster_size : end;
        bool whole = a == cstart && b - a == s->cluster_size;
        if (!whole && !tmp && !(tmp = malloc(s->cluster_size))) {
            r = vd_set_error(err, -ENOMEM, "qcow2: out of memory");
            break;
        }
        uint8_t *out = whole ? buf + (a - off) : tmp;
        r = qcow2_decompress(s, in + (e[i].host - lo), e[i].csize, out, s->cluster_size, err);
        if (r == -EIO)
            vd_set_error(err, r, "qcow2: compressed cluster at 0x%llx (%llu bytes, %s) does not "
                         "decompress to one cluster", (unsigned long long)e[i].host,
                         (unsigned long long)e[i].csize,
                         s->compression == QCOW2_COMPRESS_ZSTD ? "zstd" : "zlib");
        if (r == 0 && !whole)
            memcpy(buf + (a - off), tmp + (a - cstart), (size_t)(b - a));
        got += (size_t)(b - a);
    }
    free(in);
    free(tmp);
    *done = got;
    return r;
}

/* Deflate level of zlib-type clusters (vd_set_compression_level may
 * change it): ISA-L igzip level 3 with a 4 KiB window.  On bench/run.sh's
 * mixed image (64 KiB clusters; 3/8 a tar of /usr/lib, 1/8 random) it took
 * 1.6 s of CPU where zlib level 4 took 8.0 s and qemu's level 6 11.5 s, for
 * 4.8 % more bytes than qemu's output (zlib 4: 1.1 %; igzip 1: 0.8 s, 5.2 %). */
#define QCOW2_DEFLATE_LEVEL 3

/* Compressor states are reused from a small per-image pool: deflate and
 * ZSTD_createCCtx states take hundreds of KiB, too much to allocate per
 * cluster.  Threads that find the pool busy use a temporary state. */
static bool qcow2_zstate_init(qcow2_zstate *z, int type, int level)
{
    if (z->ready)
        return type == QCOW2_COMPRESS_ZSTD ? ZSTD_CCtx_reset(z->zc, ZSTD_reset_session_only) == 0
                                           : true;
    memset(z, 0, sizeof *z);
    if (type == QCOW2_COMPRESS_ZSTD)
        z->ready = (z->zc = ZSTD_createCCtx()) != NULL;
    else
        z->ready = (z->zd = vd_deflater_new(vd_deflate_level(level, QCOW2_DEFLATE_LEVEL),
                                            12, false)) != NULL;
    return z->ready;
}

void qcow2_zstate_free(qcow2_zstate *z, int type)
{
    if (!z->ready)
        return;
    if (type == QCOW2_COMPRESS_ZSTD)
        ZSTD_freeCCtx(z->zc);
    else
        vd_deflater_free(z->zd);
    z->ready = false;
}

static long qcow2_compress_with(qcow2_zstate *z, int type, int level, const uint8_t *in,
                                size_t len, uint8_t *out, size_t out_cap)
{
    if (!qcow2_zstate_init(z, type, level))
        return -ENOMEM;
    if (type == QCOW2_COMPRESS_ZSTD) {
        size_t n = ZSTD_compressCCtx(z->zc, out, out_cap, in, len, 3);
        return ZSTD_isError(n) ? 0 : (long)n;   /* error: mostly "does not fit" */
    }
    return (long)vd_deflate(z->zd, in, len, out, out_cap);
}

long qcow2_compress(qcow2_state *s, const uint8_t *in, size_t len, uint8_t *out, size_t out_cap)
{
    /* Random data would only be deflated to be thrown away (qemu stores
     * such a cluster plain, after trying).  zstd detects it cheaply itself. */
    if (s->compression != QCOW2_COMPRESS_ZSTD && vd_looks_incompressible(in, len))
        return 0;                 /* "does not fit": stored uncompressed */
    qcow2_zstate *z = NULL, tmp = { .ready = false };
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < QCOW2_ZPOOL && !z; i++)
        if (!s->zbusy[i]) {
            s->zbusy[i] = true;
            z = &s->zpool[i];
        }
    pthread_mutex_unlock(&s->lock);
    long n = qcow2_compress_with(z ? z : &tmp, s->compression, s->img->compression_level, in,
                                 len, out, out_cap);
    if (z) {
        pthread_mutex_lock(&s->lock);
        s->zbusy[z - s->zpool] = false;
        pthread_mutex_unlock(&s->lock);
    } else {
        qcow2_zstate_free(&tmp, s->compression);
    }
    return n;
}

/* Choose where `n` compressed bytes go: after the previous compressed data
 * when it fits in that run (and its refcount can count one more), else at
 * the start of newly allocated clusters.  Counts the touched clusters. */
static int qcow2_comp_place(qcow2_state *s, uint64_t n, uint64_t *where, vd_error *err)
{
    uint64_t o = 0, v = 0;
    int r;
    if (s->comp_end && (r = qcow2_refcount_get(s, s->comp_cur >> s->cluster_bits, &v, err)) < 0)
        return r;
    bool can_share = s->comp_end && v < qcow2_rc_max(s);
    if (can_share && s->comp_end - s->comp_cur >= n) {
        o = s->comp_cur;
    } else {
        /* new clusters; when they follow the current run, the data may
         * straddle the boundary (as qemu packs it) */
        uint64_t room = can_share ? s->comp_end - s->comp_cur : 0;
        uint64_t k = (n - room + s->cluster_size - 1) >> s->cluster_bits, host;
        qcow2_alloc_rewind(s);
        if ((r = qcow2_alloc_raw(s, k, &host, err)) < 0)
            return r;
        if (room && host == s->comp_end) {
            o = s->comp_cur;
        } else if (room) {
            /* not contiguous: give the clusters back and take fresh ones
             * big enough for the whole piece */
            s->alloc_next = host;
            k = (n + s->cluster_size - 1) >> s->cluster_bits;
            if ((r = qcow2_alloc_raw(s, k, &host, err)) < 0)
                return r;
            o = host;
        } else {
            o = host;
        }
        s->comp_end = host + (k << s->cluster_bits);
    }
    uint64_t end = vd_round_up(o + n, 512);
    if ((r = qcow2_refcount_update(s, o, end - o, 1, err)) < 0)
        return r;
    s->comp_cur = o + n;
    *where = o;
    return 0;
}

/* Store one guest cluster, compressed into `n` bytes of cbuf (n == 0: did
 * not shrink, written as a normal cluster).  Called with the write lock. */
static int qcow2_write_one_compressed(vd_image *img, const uint8_t *clu, uint64_t gc,
                                      const uint8_t *cbuf, long n, vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    if (n == 0) {   /* incompressible: a normal cluster (clipped at the disk end) */
        uint64_t off = gc << s->cluster_bits;
        uint64_t len = img->size - off < s->cluster_size ? img->size - off : s->cluster_size;
        return img->drv->pwrite(img, clu, (size_t)len, off, err);
    }
    qcow2_entry old;
    int r;
    uint64_t o;
    if ((r = qcow2_lookup(s, gc, &old, err)) < 0 ||
        (r = qcow2_comp_place(s, (uint64_t)n, &o, err)) < 0)
        return r;
    if ((r = vd_file_pwrite(s->file, cbuf, (size_t)n, o, err)) < 0)
        return r;
    uint32_t x = 62 - (s->cluster_bits - 8);
    uint64_t nsec = (vd_round_up((o & 511) + (uint64_t)n, 512)) / 512;
    uint64_t e = QCOW2_OFLAG_COMPRESSED | ((nsec - 1) << x) | o;
    if ((r = qcow2_l2_set(s, gc, e, 0, err)) < 0)
        return r;
    return qcow2_defer_free(s, &old, err);
}

/* Called without the image lock (see vd-driver.h): each cluster is
 * compressed unlocked, then stored under the core's exclusive image lock,
 * which also keeps readers out of the caches. */
int qcow2_pwrite_compressed(vd_image *img, const void *buf, size_t len, uint64_t off,
                            vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    if (qcow2_offset_in_cluster(s, off))
        return vd_set_error(err, -EINVAL, "qcow2: compressed write at 0x%llx not cluster aligned",
                            (unsigned long long)off);
    if (len % s->cluster_size && off + len <= (img->size - 1) / s->cluster_size * s->cluster_size)
        return vd_set_error(err, -EINVAL,
                            "qcow2: compressed write of 0x%zx bytes is not whole clusters", len);
    uint8_t *clu = malloc(s->cluster_size), *cbuf = malloc(s->cluster_size);
    int r = 0;
    if (!clu || !cbuf)
        r = vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    for (size_t done = 0; r == 0 && done < len; done += s->cluster_size) {
        size_t n = len - done < s->cluster_size ? len - done : s->cluster_size;
        memcpy(clu, (const uint8_t *)buf + done, n);
        memset(clu + n, 0, s->cluster_size - n);   /* the tail past the disk end */
        /* as qemu: anything shorter than a cluster is stored compressed */
        long c = qcow2_compress(s, clu, s->cluster_size, cbuf, s->cluster_size - 1);
        if (c < 0) {
            r = vd_set_error(err, (int)c, "qcow2: compression failed");
            break;
        }
        pthread_rwlock_wrlock(&img->lock);
        r = qcow2_write_one_compressed(img, clu, (off + done) >> s->cluster_bits, cbuf, c, err);
        if (r == 0)
            r = qcow2_release_pending_batch(s, err);
        pthread_rwlock_unlock(&img->lock);
    }
    free(clu);
    free(cbuf);
    return r;
}
