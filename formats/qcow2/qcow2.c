/* qcow2.c - the qcow2 driver table: open/close, and the guest-view I/O
 * dispatch (read, write with copy-on-write, write-zeroes, discard, block
 * status, flush).  See qcow2.h for the file layout and write ordering.
 *
 * Concurrency: reads may run in parallel (parallel_reads); they take
 * qcow2_state.lock around metadata lookups only and read data unlocked.
 * Writes hold the core's exclusive image lock, so they need no lock here. */
#include "qcow2.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* Metadata cache budgets. */
#define QCOW2_L2_CACHE_BYTES (32u << 20)
#define QCOW2_RB_CACHE_BYTES (4u << 20)

static vd_file *qcow2_data(qcow2_state *s)
{
    return s->data_file ? s->data_file : s->file;
}

static void qcow2_state_free(qcow2_state *s)
{
    if (!s)
        return;
    vd_mcache_free(&s->l2c);
    vd_mcache_free(&s->rbc);
    for (size_t i = 0; i < QCOW2_ZPOOL; i++)
        qcow2_zstate_free(&s->zpool[i], s->compression);
    qcow2_snapshots_free(s);
    if (s->data_file)
        vd_file_close(s->data_file);
    free(s->data_file_name);
    free(s->l1);
    free(s->rt);
    free(s->pending);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Read-write opening: refuse what we cannot keep consistent, rebuild the
 * refcounts of a dirty (lazy refcounts) image, drop autoclear bits we do not
 * maintain (e.g. persistent bitmaps: they would go stale). */
static int qcow2_open_rw(vd_image *img, qcow2_state *s, vd_error *err)
{
    if (s->incompat & QCOW2_INCOMPAT_CORRUPT)
        return vd_set_error(err, -EROFS,
                            "qcow2: image is marked corrupt (incompatible bit 1); open it read-only or repair it with check -r all");
    if (s->data_file)
        return vd_set_error(err, -ENOTSUP,
                            "qcow2: writing images with an external data file is not supported; open read-only");
    int r = 0;
    if (s->incompat & QCOW2_INCOMPAT_DIRTY) {
        vd_check_result res;
        r = qcow2_check(img, VD_CHECK_REPAIR_ALL, &res, err);
        if (r == 0 && res.corruptions > res.corruptions_fixed)
            r = vd_set_error(err, -EINVAL,
                             "qcow2: dirty image: %llu refcount errors could not be repaired (%s)",
                             (unsigned long long)(res.corruptions - res.corruptions_fixed),
                             res.first_problem);
        if (r == 0)
            r = qcow2_meta_flush(s, err);
        if (r == 0)
            r = vd_file_sync(s->file, err);
        if (r == 0)
            r = qcow2_header_set_incompat(s, s->incompat & ~QCOW2_INCOMPAT_DIRTY, err);
        img->dirty = false;
    }
    uint64_t keep = s->autoclear & QCOW2_AUTOCLEAR_DATA_RAW;
    if (r == 0 && s->version >= 3 && s->autoclear != keep) {
        r = qcow2_header_write_u64(s, QH_AUTOCLEAR, keep, err);
        s->autoclear = keep;
    }
    return r;
}

static int qcow2_open(vd_image *img, vd_error *err)
{
    qcow2_state *s = calloc(1, sizeof *s);
    if (!s)
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    s->img = img;
    s->file = img->file;
    pthread_mutex_init(&s->lock, NULL);
    img->priv = s;
    int64_t fsz = 0;
    int r = qcow2_header_read(s, img, err);
    if (r == 0 && (fsz = vd_file_size(s->file, err)) < 0)
        r = (int)fsz;
    if (r == 0 && s->data_file_name)
        r = vd_file_open_related(img, s->data_file_name, img->readonly, &s->data_file, err);
    if (r == 0)
        r = qcow2_l1_load(s, s->l1_off, s->l1_size, &s->l1, err);
    if (r == 0)
        r = qcow2_refcount_table_load(s, (uint64_t)fsz, err);
    if (r == 0)
        r = qcow2_snapshots_read(s, (uint64_t)fsz, err);
    if (r == 0 &&
        (vd_mcache_init(&s->l2c, s->file, s->cluster_size, QCOW2_L2_CACHE_BYTES, 16, 1024,
                        "L2 table") < 0 ||
         vd_mcache_init(&s->rbc, s->file, s->cluster_size, QCOW2_RB_CACHE_BYTES, 8, 256,
                        "refcount block") < 0))
        r = vd_set_error(err, -ENOMEM, "qcow2: out of memory for metadata caches");
    if (r == 0) {
        s->l2c.before_write = qcow2_rc_flush_before_l2;
        s->l2c.ctx = s;
        s->rbc.before_write = qcow2_rc_before_write;
        s->rbc.ctx = s;
        s->alloc_next = vd_round_up((uint64_t)fsz, s->cluster_size);
        s->free_hint = UINT64_MAX;
        img->cluster_size = (uint32_t)s->cluster_size;
        img->dirty = s->incompat & QCOW2_INCOMPAT_DIRTY;
        if (!img->readonly)
            r = qcow2_open_rw(img, s, err);
    }
    if (r < 0) {
        qcow2_state_free(s);
        img->priv = NULL;
    }
    return r;
}

static void qcow2_close(vd_image *img)
{
    qcow2_state_free(qcow2_s(img));
    img->priv = NULL;
}

/* An extended L2 cluster `e` is read and reported a subcluster at a time
 * (vd_walk cuts at subcluster boundaries); what one holds at `off`:
 * VD_LAYER_DATA at *host, VD_LAYER_ZERO, or VD_LAYER_UNALLOC (the backing
 * file's bytes). */
struct qcow2_sc_walk {
    qcow2_state *s;
    const qcow2_entry *e;
    vd_extents *ext;
};

static unsigned qcow2_sc_kind(const struct qcow2_sc_walk *w, uint64_t off, uint64_t *host)
{
    uint64_t in = qcow2_offset_in_cluster(w->s, off);
    uint32_t bit = 1u << (in >> w->s->sc_bits);
    *host = w->e->host + in;
    return w->e->alloc_bits & bit ? VD_LAYER_DATA
           : w->e->zero_bits & bit ? VD_LAYER_ZERO : VD_LAYER_UNALLOC;
}

static int qcow2_sc_read_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    const struct qcow2_sc_walk *w = ctx;
    uint64_t host;
    switch (qcow2_sc_kind(w, pt->off, &host)) {
    case VD_LAYER_DATA:
        return vd_file_pread_zfill(qcow2_data(w->s), pt->p, pt->n, host, err);
    case VD_LAYER_ZERO:
        memset(pt->p, 0, pt->n);
        return 0;
    default:
        return vd_backing_pread(img, pt->p, pt->n, pt->off, err);
    }
}

static int qcow2_sc_status_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    (void)img; (void)err;
    const struct qcow2_sc_walk *w = ctx;
    uint64_t host;
    unsigned k = qcow2_sc_kind(w, pt->off, &host);
    return vd_extents_add(w->ext, pt->off, pt->n, k, 0, k == VD_LAYER_DATA ? host : VD_NO_OFFSET);
}

/* Length of the run from `off` (at most len) that maps like cluster `e`:
 * contiguous host clusters for NORMAL, same kind for ZERO/UNALLOC. */
static size_t qcow2_extend_run(qcow2_state *s, const qcow2_entry *e, size_t n, size_t len,
                               uint64_t off, vd_error *err)
{
    while (n < len && (e->kind == QCOW2_NORMAL || e->kind == QCOW2_ZERO ||
                       e->kind == QCOW2_UNALLOC)) {
        qcow2_entry x;
        uint64_t gc = (off + n) >> s->cluster_bits;
        if (qcow2_lookup(s, gc, &x, err) < 0 || x.kind != e->kind || x.copied != e->copied)
            break;
        if (e->kind == QCOW2_NORMAL && x.host != e->host + ((gc << s->cluster_bits) -
                                                             (off & ~(s->cluster_size - 1))))
            break;
        n += len - n < s->cluster_size ? len - n : s->cluster_size;
    }
    return n;
}

static int qcow2_pread(vd_image *img, void *vbuf, size_t len, uint64_t off, vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    uint8_t *buf = vbuf;
    int r = 0;
    while (len && r == 0) {
        uint64_t in = qcow2_offset_in_cluster(s, off);
        size_t n = s->cluster_size - in < len ? (size_t)(s->cluster_size - in) : len;
        qcow2_entry e;
        pthread_mutex_lock(&s->lock);
        r = qcow2_lookup(s, off >> s->cluster_bits, &e, err);
        if (r == 0)
            n = qcow2_extend_run(s, &e, n, len, off, err);
        pthread_mutex_unlock(&s->lock);
        if (r < 0)
            break;
        switch (e.kind) {
        case QCOW2_UNALLOC:
            r = vd_backing_pread(img, buf, n, off, err);
            break;
        case QCOW2_ZERO:
            memset(buf, 0, n);
            break;
        case QCOW2_NORMAL:
            r = vd_file_pread_zfill(qcow2_data(s), buf, n, e.host + in, err);
            break;
        case QCOW2_COMPRESSED:
            r = qcow2_read_compressed_run(s, &e, buf, len, off, &n, err);
            break;
        case QCOW2_SUBCLUSTERS: {
            struct qcow2_sc_walk w = { s, &e, NULL };
            r = vd_walk(img, buf, off, n, 1ull << s->sc_bits, qcow2_sc_read_part, &w, err);
            break;
        }
        }
        buf += n;
        off += n;
        len -= n;
    }
    return r;
}

/* The guest content of cluster gc (clipped at the virtual size). */
int qcow2_read_cluster_guest(qcow2_state *s, uint64_t gc, uint8_t *buf, vd_error *err)
{
    uint64_t off = gc << s->cluster_bits;
    uint64_t n = s->img->size - off < s->cluster_size ? s->img->size - off : s->cluster_size;
    memset(buf + n, 0, s->cluster_size - n);
    return qcow2_pread(s->img, buf, (size_t)n, off, err);
}

/* Write `k` whole guest clusters from gc on into new host clusters. */
static int qcow2_write_new(qcow2_state *s, uint64_t gc, uint64_t k, const uint8_t *data,
                           size_t bytes, vd_error *err)
{
    uint64_t host;
    int r = qcow2_alloc_clusters(s, k, &host, err);
    if (r == 0)
        r = vd_file_pwrite(s->file, data, bytes, host, err);
    for (uint64_t i = 0; r == 0 && i < k; i++) {
        qcow2_entry old;
        if ((r = qcow2_lookup(s, gc + i, &old, err)) < 0)
            break;
        uint64_t h = host + (i << s->cluster_bits);
        if ((r = qcow2_l2_set(s, gc + i, h | QCOW2_OFLAG_COPIED, UINT32_MAX, err)) < 0)
            break;
        r = qcow2_defer_free(s, &old, err);
    }
    return r;
}

/* A COPIED entry promises refcount 1; a wrong flag would make us write into
 * a snapshot's data, so the promise is checked (cached, cheap). */
static int qcow2_verify_private(qcow2_state *s, uint64_t host, uint64_t bytes, vd_error *err)
{
    for (uint64_t o = 0; o < bytes; o += s->cluster_size) {
        uint64_t rc;
        int r = qcow2_refcount_get(s, (host + o) >> s->cluster_bits, &rc, err);
        if (r < 0)
            return r;
        if (rc != 1)
            return vd_set_error(err, -EIO,
                                "qcow2: cluster 0x%llx is marked COPIED but has refcount %llu (repair with check -r all)",
                                (unsigned long long)(host + o), (unsigned long long)rc);
    }
    return 0;
}

static bool qcow2_in_place(const qcow2_entry *e)
{
    return e->kind == QCOW2_NORMAL && e->copied;
}

static int qcow2_pwrite_locked(vd_image *img, const uint8_t *buf, size_t len, uint64_t off,
                               uint8_t *cbuf, vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    int r = 0;
    while (len && r == 0) {
        uint64_t gc = off >> s->cluster_bits, in = qcow2_offset_in_cluster(s, off);
        size_t n = s->cluster_size - in < len ? (size_t)(s->cluster_size - in) : len;
        qcow2_entry e;
        if ((r = qcow2_lookup(s, gc, &e, err)) < 0)
            break;
        if (qcow2_in_place(&e)) {
            n = qcow2_extend_run(s, &e, n, len, off, err);
            r = qcow2_verify_private(s, e.host, in + n, err);
            if (r == 0)
                r = vd_file_pwrite(s->file, buf, n, e.host + in, err);
        } else if (in == 0 && (n == s->cluster_size || off + n == img->size)) {
            /* whole clusters: gather those that all need new clusters */
            uint64_t k = 1;
            while (len - n >= s->cluster_size) {
                qcow2_entry x;
                if ((r = qcow2_lookup(s, gc + k, &x, err)) < 0 || qcow2_in_place(&x))
                    break;
                n += s->cluster_size;
                k++;
            }
            if (r == 0 && len - n && len - n < s->cluster_size && off + len == img->size) {
                n = len;    /* the last, short cluster of the disk */
                k++;
            }
            if (r == 0)
                r = qcow2_write_new(s, gc, k, buf, n, err);
        } else {
            /* partial cluster: copy-on-write from the current guest view */
            if ((r = qcow2_read_cluster_guest(s, gc, cbuf, err)) == 0) {
                memcpy(cbuf + in, buf, n);
                r = qcow2_write_new(s, gc, 1, cbuf, s->cluster_size, err);
            }
        }
        buf += n;
        off += n;
        len -= n;
    }
    return r;
}

static int qcow2_pwrite(vd_image *img, const void *buf, size_t len, uint64_t off, vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    uint8_t *cbuf = malloc(s->cluster_size);
    if (!cbuf)
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    int r = qcow2_pwrite_locked(img, buf, len, off, cbuf, err);
    if (r == 0)
        r = qcow2_release_pending_batch(s, err);
    free(cbuf);
    return r;
}

static vd_file *qcow2_data_file(vd_image *img)
{
    return qcow2_data(qcow2_s(img));
}

/* Whole clusters from `off` (aligned by the core): a run the image already
 * owns in place is reported as it is; otherwise as many following clusters
 * as also need space get fresh contiguous clusters, their L2 entries set as
 * qcow2_write_new does, but no data written: the caller fills them. */
static int qcow2_map_for_write(vd_image *img, uint64_t off, uint64_t len, uint64_t *file_off,
                               uint64_t *mapped, vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    uint64_t gc = off >> s->cluster_bits;
    size_t n = s->cluster_size < len ? s->cluster_size : (size_t)len;
    qcow2_entry e;
    int r = qcow2_lookup(s, gc, &e, err);
    if (r < 0)
        return r;
    if (qcow2_in_place(&e)) {
        size_t want = len < SIZE_MAX / 2 ? (size_t)len : SIZE_MAX / 2;
        n = qcow2_extend_run(s, &e, n, want, off, err);
        if ((r = qcow2_verify_private(s, e.host, n, err)) < 0)
            return r;
        *file_off = e.host;
        *mapped = n;
        return 0;
    }
    uint64_t k = 1, host;
    while (len - n >= s->cluster_size && k < 8192) {
        qcow2_entry x;
        if ((r = qcow2_lookup(s, gc + k, &x, err)) < 0)
            return r;
        if (qcow2_in_place(&x))
            break;
        n += s->cluster_size;
        k++;
    }
    if (len - n && len - n < s->cluster_size && off + len == img->size) {
        n = (size_t)len;    /* the last, short cluster of the disk */
        k++;
    }
    if ((r = qcow2_alloc_clusters(s, k, &host, err)) < 0)
        return r;
    for (uint64_t i = 0; r == 0 && i < k; i++) {
        qcow2_entry old;
        if ((r = qcow2_lookup(s, gc + i, &old, err)) < 0)
            break;
        uint64_t h = host + (i << s->cluster_bits);
        if ((r = qcow2_l2_set(s, gc + i, h | QCOW2_OFLAG_COPIED, UINT32_MAX, err)) == 0)
            r = qcow2_defer_free(s, &old, err);
    }
    if (r == 0)
        r = qcow2_release_pending_batch(s, err);
    *file_off = host;
    *mapped = n;
    return r;
}

/* The entry that makes one whole cluster read as zeroes, or 0 with
 * *write_data when only writing zeroes can (v2 with a backing file). */
static int qcow2_zero_cluster(qcow2_state *s, uint64_t gc, unsigned flags, bool *write_data,
                              vd_error *err)
{
    qcow2_entry old;
    int r = qcow2_lookup(s, gc, &old, err);
    if (r < 0)
        return r;
    *write_data = false;
    if (s->extl2)
        r = qcow2_l2_set(s, gc, 0, (uint64_t)UINT32_MAX << 32, err);
    else if (s->version >= 3) {
        if (old.kind == QCOW2_ZERO && (!old.host || !(flags & VD_ZERO_MAY_UNMAP)))
            return 0;
        if (!(flags & VD_ZERO_MAY_UNMAP) && qcow2_in_place(&old))
            return qcow2_l2_set(s, gc, old.host | QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO, 0, err);
        r = qcow2_l2_set(s, gc, QCOW2_OFLAG_ZERO, 0, err);
    } else if (!s->img->backing_file) {
        if (old.kind == QCOW2_UNALLOC)   /* v2 without backing reads zeroes */
            return 0;
        r = qcow2_l2_set(s, gc, 0, 0, err);
    } else {
        *write_data = true;
        return 0;
    }
    if (r == 0)
        r = qcow2_defer_free(s, &old, err);
    return r;
}

static int qcow2_pwrite_zeroes(vd_image *img, uint64_t off, uint64_t len, unsigned flags,
                               vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    uint8_t *z = calloc(1, s->cluster_size), *cbuf = malloc(s->cluster_size);
    int r = 0;
    if (!z || !cbuf)
        r = vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    while (len && r == 0) {
        uint64_t in = qcow2_offset_in_cluster(s, off);
        uint64_t n = s->cluster_size - in < len ? s->cluster_size - in : len;
        bool whole = in == 0 && (n == s->cluster_size || off + n == img->size);
        bool write_data = !whole;
        if (whole)
            r = qcow2_zero_cluster(s, off >> s->cluster_bits, flags, &write_data, err);
        if (r == 0 && write_data)
            r = qcow2_pwrite_locked(img, z, (size_t)n, off, cbuf, err);
        off += n;
        len -= n;
    }
    if (r == 0)
        r = qcow2_release_pending_batch(s, err);
    free(z);
    free(cbuf);
    return r;
}

/* Whole clusters become unallocated (they read from the backing file, or as
 * zeroes without one); partial clusters are left alone. */
static int qcow2_discard(vd_image *img, uint64_t off, uint64_t len, vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    uint64_t first = vd_round_up(off, s->cluster_size) >> s->cluster_bits;
    uint64_t end = off + len == img->size ? vd_round_up(img->size, s->cluster_size) : off + len;
    int r = 0;
    for (uint64_t gc = first; r == 0 && ((gc + 1) << s->cluster_bits) <= end; gc++)
        r = qcow2_unmap_cluster(s, gc, err);
    if (r == 0)
        r = qcow2_release_pending_batch(s, err);
    return r;
}

int qcow2_unmap_cluster(qcow2_state *s, uint64_t gc, vd_error *err)
{
    qcow2_entry old;
    int r = qcow2_lookup(s, gc, &old, err);
    if (r < 0 || (old.kind == QCOW2_UNALLOC && !old.host))
        return r < 0 ? r : 0;
    if ((r = qcow2_l2_set(s, gc, 0, 0, err)) == 0)
        r = qcow2_defer_free(s, &old, err);
    return r;
}

static int qcow2_flush(vd_image *img, vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    int r = qcow2_release_pending(s, err);
    if (r == 0)
        r = vd_mcache_flush(&s->rbc, err);
    if (r == 0)
        r = vd_file_sync(s->file, err);
    if (r == 0)
        r = vd_mcache_flush(&s->l2c, err);
    if (r == 0)
        r = vd_file_sync(s->file, err);
    return r;
}

/* Most guest clusters one block status call looks at. */
#define QCOW2_STATUS_CLUSTERS 65536

static int qcow2_status_one(qcow2_state *s, const qcow2_entry *e, uint64_t off, uint64_t n,
                            vd_extents *ext, vd_error *err)
{
    uint64_t in = qcow2_offset_in_cluster(s, off);
    switch (e->kind) {
    case QCOW2_NORMAL:
        return vd_extents_add(ext, off, n, VD_LAYER_DATA, 0, e->host + in);
    case QCOW2_ZERO:
        return vd_extents_add(ext, off, n, VD_LAYER_ZERO, 0, VD_NO_OFFSET);
    case QCOW2_COMPRESSED:
        return vd_extents_add(ext, off, n, VD_LAYER_DATA | VD_EXT_COMPRESSED, 0, VD_NO_OFFSET);
    case QCOW2_UNALLOC:
        return vd_extents_add(ext, off, n, VD_LAYER_UNALLOC, 0, VD_NO_OFFSET);
    case QCOW2_SUBCLUSTERS:
        break;
    }
    struct qcow2_sc_walk w = { s, e, ext };
    return vd_walk(s->img, NULL, off, n, 1ull << s->sc_bits, qcow2_sc_status_part, &w, err);
}

static int qcow2_block_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                              vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    int r = 0;
    pthread_mutex_lock(&s->lock);
    for (unsigned i = 0; len && r == 0 && i < QCOW2_STATUS_CLUSTERS; i++) {
        uint64_t in = qcow2_offset_in_cluster(s, off);
        uint64_t n = s->cluster_size - in < len ? s->cluster_size - in : len;
        qcow2_entry e;
        if ((r = qcow2_lookup(s, off >> s->cluster_bits, &e, err)) == 0)
            r = qcow2_status_one(s, &e, off, n, ext, err);
        off += n;
        len -= n;
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}

static void qcow2_details(vd_image *img, vd_kv_fn fn, void *ctx)
{
    qcow2_state *s = qcow2_s(img);
    char b[32];
    fn(ctx, "compat", s->version >= 3 ? "1.1" : "0.10");
    snprintf(b, sizeof b, "%llu", (unsigned long long)s->cluster_size);
    fn(ctx, "cluster_size", b);
    fn(ctx, "lazy_refcounts", s->compat & QCOW2_COMPAT_LAZY ? "true" : "false");
    snprintf(b, sizeof b, "%u", s->refcount_bits);
    fn(ctx, "refcount_bits", b);
    fn(ctx, "compression_type", s->compression == QCOW2_COMPRESS_ZSTD ? "zstd" : "zlib");
    fn(ctx, "extended_l2", s->extl2 ? "true" : "false");
    fn(ctx, "corrupt", s->incompat & QCOW2_INCOMPAT_CORRUPT ? "true" : "false");
    fn(ctx, "dirty", s->incompat & QCOW2_INCOMPAT_DIRTY ? "true" : "false");
    if (s->data_file_name) {
        fn(ctx, "data_file", s->data_file_name);
        fn(ctx, "data_file_raw", s->autoclear & QCOW2_AUTOCLEAR_DATA_RAW ? "true" : "false");
    }
}

static uint64_t qcow2_disk_size(vd_image *img)
{
    qcow2_state *s = qcow2_s(img);
    return vd_file_allocated(s->file) + (s->data_file ? vd_file_allocated(s->data_file) : 0);
}

static const char *const qcow2_extensions[] = { "qcow2", NULL };

const struct vd_driver vd_qcow2 = {
    .name = "qcow2",
    .description = "QEMU copy-on-write v2/v3",
    .extensions = qcow2_extensions,
    .probe = qcow2_probe,
    .align = 512,
    .parallel_reads = true,
    .whole_clusters = true,
    .open = qcow2_open,
    .close = qcow2_close,
    .create = qcow2_create,
    .create_opts = qcow2_create_opts,
    .pread = qcow2_pread,
    .pwrite = qcow2_pwrite,
    .pwrite_compressed = qcow2_pwrite_compressed,
    .pwrite_zeroes = qcow2_pwrite_zeroes,
    .data_file = qcow2_data_file,
    .map_for_write = qcow2_map_for_write,
    .discard = qcow2_discard,
    .flush = qcow2_flush,
    .block_status = qcow2_block_status,
    .check = qcow2_check,
    .details = qcow2_details,
    .list_snapshots = qcow2_list_snapshots,
    .load_snapshot = qcow2_load_snapshot,
    .snapshot = qcow2_snapshot_op,
    .disk_size = qcow2_disk_size,
    .resize = qcow2_resize,
    .resize_zero_tail = true,
    .set_backing = qcow2_set_backing,
    .make_empty = qcow2_make_empty,
    .amend = qcow2_amend,
    .amend_opts = qcow2_amend_opts,
    .can_write = VD_CAN_NATIVE,
};
