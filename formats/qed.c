/* qed.c - QEMU Enhanced Disk (QED), read and write.
 *
 * Layout (qemu docs/interop/qed_spec.rst): a little-endian header in the
 * first `header_size` clusters, an L1 table of `table_size` clusters, L2
 * tables of the same size, data clusters.  An L2 entry is 0 (unallocated:
 * read the backing file), 1 (a zero cluster) or the file offset of the data
 * cluster.  New clusters and tables are appended at the end of the file.
 *
 * Crash safety follows the spec's need-check protocol: before the first
 * metadata change of a session QED_F_NEED_CHECK is set (and synced); flush
 * writes the tables, syncs, and clears it.  An image found with the flag set
 * is checked and repaired when opened read-write, used as is (marked dirty)
 * when opened read-only.  Beyond the protocol, no table entry ever reaches
 * the file before what it points to: new L1 and L2 entries stay in memory
 * until a flush (or an eviction from the table cache) has synced the data
 * clusters and tables they name, so that after a power loss the image needs
 * no repair at all, only leaked clusters may be left (docs/flush.md).
 *
 * Memory stays bounded whatever the header says: only the L1 entries that
 * cover the virtual size are read, only the used part of each L2 table, and
 * a few L2 tables are cached. */
#include "qed.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- header -------------------------------------------------------------- */

static int qed_probe(const uint8_t *head, size_t len, const uint8_t *tail,
                     size_t tail_len, uint64_t file_size)
{
    (void)tail; (void)tail_len; (void)file_size;
    if (len < QED_HEADER_LEN || vd_le32(head + QED_H_MAGIC) != QED_MAGIC)
        return 0;
    uint32_t cs = vd_le32(head + QED_H_CLUSTER), ts = vd_le32(head + QED_H_TABLE);
    bool sane = vd_is_pow2(cs) && cs >= QED_MIN_CLUSTER && cs <= QED_MAX_CLUSTER &&
                vd_is_pow2(ts) && ts <= QED_MAX_TABLE_SIZE;
    return sane ? 100 : 50;
}

static void qed_header_encode(const struct qed_state *s, uint8_t *h,
                              uint32_t bf_off, uint32_t bf_len)
{
    memset(h, 0, QED_HEADER_LEN);
    vd_put_le32(h + QED_H_MAGIC, QED_MAGIC);
    vd_put_le32(h + QED_H_CLUSTER, s->cluster_size);
    vd_put_le32(h + QED_H_TABLE, s->table_size);
    vd_put_le32(h + QED_H_HDRSIZE, s->header_size);
    vd_put_le64(h + QED_H_FEATURES, s->features);
    vd_put_le64(h + QED_H_COMPAT, s->compat);
    vd_put_le64(h + QED_H_AUTOCLEAR, s->autoclear);
    vd_put_le64(h + QED_H_L1, s->l1_off);
    vd_put_le64(h + QED_H_SIZE, s->image_size);
    vd_put_le32(h + QED_H_BF_OFF, bf_off);
    vd_put_le32(h + QED_H_BF_LEN, bf_len);
}

/* Rewrite only the feature words: the rest of the header never changes. */
int qed_write_features(vd_image *img, vd_error *err)
{
    struct qed_state *s = img->priv;
    uint8_t b[24];
    vd_put_le64(b, s->features);
    vd_put_le64(b + 8, s->compat);
    vd_put_le64(b + 16, s->autoclear);
    return vd_file_pwrite(img->file, b, sizeof b, QED_H_FEATURES, err);
}

/* Geometry checks shared by open and create. */
static int qed_check_geometry(uint64_t cs, uint64_t ts, uint64_t size, vd_error *err)
{
    if (!vd_is_pow2(cs) || cs < QED_MIN_CLUSTER || cs > QED_MAX_CLUSTER)
        return vd_set_error(err, -EINVAL, "qed: cluster size %llu (header offset 0x4) is not "
                            "a power of two between 4 KiB and 64 MiB", (unsigned long long)cs);
    if (!vd_is_pow2(ts) || ts > QED_MAX_TABLE_SIZE)
        return vd_set_error(err, -EINVAL, "qed: table size %llu (header offset 0x8) is not "
                            "a power of two between 1 and 16", (unsigned long long)ts);
    if (cs * ts > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EFBIG, "qed: tables of %llu bytes exceed the %llu byte limit",
                            (unsigned long long)(cs * ts),
                            (unsigned long long)VD_MAX_TABLE_BYTES);
    if (size % 512)
        return vd_set_error(err, -EINVAL, "qed: image size %llu (header offset 0x30) is not a "
                            "multiple of 512", (unsigned long long)size);
    uint64_t entries = cs * ts / 8, max;
    if (!vd_mul_overflow(entries * entries, cs, &max) && size > max)
        return vd_set_error(err, -EINVAL, "qed: image size %llu is more than the tables can "
                            "map (%llu)", (unsigned long long)size, (unsigned long long)max);
    if (size > VD_MAX_VIRTUAL_SIZE)
        return vd_set_error(err, -EFBIG, "qed: image size 0x%llx too large",
                            (unsigned long long)size);
    return 0;
}

static void qed_state_derive(struct qed_state *s)
{
    s->table_bytes = (uint64_t)s->cluster_size * s->table_size;
    s->table_entries = s->table_bytes / 8;
    s->span = s->table_entries * s->cluster_size;
    s->data_start = (uint64_t)s->header_size * s->cluster_size;
    s->l1_n = (s->image_size + s->span - 1) / s->span;
}

/* ---- tables -------------------------------------------------------------- */

/* Is `e` a usable data cluster offset?  (Not 0 or 1.) */
static int qed_check_data(vd_image *img, uint64_t e, uint64_t l2_off, uint64_t idx,
                          vd_error *err)
{
    struct qed_state *s = img->priv;
    if (e & (s->cluster_size - 1))
        return vd_set_error(err, -EINVAL, "qed: L2 entry %llu at 0x%llx (0x%llx) is not "
                            "cluster aligned", (unsigned long long)idx,
                            (unsigned long long)(l2_off + idx * 8), (unsigned long long)e);
    if (e < s->data_start || e >= s->file_end)
        return vd_set_error(err, -EINVAL, "qed: L2 entry %llu at 0x%llx points %s (0x%llx)",
                            (unsigned long long)idx, (unsigned long long)(l2_off + idx * 8),
                            e < s->data_start ? "into the header" : "past end of file",
                            (unsigned long long)e);
    return 0;
}

/* Is a table at `off` aligned, after the header and inside the file? */
bool qed_table_ok(const struct qed_state *s, uint64_t off, uint64_t file_size)
{
    uint64_t end;
    return !(off & (s->cluster_size - 1)) && off >= s->data_start &&
           !vd_add_overflow(off, s->table_bytes, &end) && end <= file_size;
}

/* Entries of L2 table `l1_index` that map guest bytes below image_size. */
static uint64_t qed_l2_used(const struct qed_state *s, uint64_t l1_index)
{
    uint64_t left = s->image_size - l1_index * s->span;
    uint64_t n = (left + s->cluster_size - 1) / s->cluster_size;
    return n < s->table_entries ? n : s->table_entries;
}

static uint64_t qed_e(const struct qed_l2 *t, uint64_t i)
{
    return t ? vd_le64(t->b + i * 8) : 0;
}

static int qed_l1_writeback(vd_image *img, vd_error *err)
{
    struct qed_state *s = img->priv;
    if (s->l1_dirty_hi <= s->l1_dirty_lo)
        return 0;
    uint64_t n = s->l1_dirty_hi - s->l1_dirty_lo;
    uint8_t *b = malloc(n * 8);
    if (!b)
        return vd_set_error(err, -ENOMEM, "out of memory");
    for (uint64_t i = 0; i < n; i++)
        vd_put_le64(b + i * 8, s->l1[s->l1_dirty_lo + i]);
    int r = vd_file_pwrite(img->file, b, n * 8, s->l1_off + s->l1_dirty_lo * 8, err);
    free(b);
    if (r == 0)
        s->l1_dirty_lo = s->l1_dirty_hi = 0;
    return r;
}

/* The cache's hook before dirty tables are written (a flush, or an
 * eviction): the data clusters and new (zero-extended) tables they point
 * at reach the disk first. */
static int qed_before_table_write(void *ctx, vd_error *err)
{
    vd_image *img = ctx;
    struct qed_state *s = img->priv;
    s->synced = true;
    return vd_file_sync(img->file, err);
}

int qed_cache_writeback(vd_image *img, vd_error *err)
{
    struct qed_state *s = img->priv;
    s->synced = false;
    int r = vd_mcache_flush(&s->l2c, err);
    if (r == 0 && s->l1_dirty_hi > s->l1_dirty_lo && !s->synced)
        r = qed_before_table_write(img, err);
    return r == 0 ? qed_l1_writeback(img, err) : r;
}

/* The cache holds of each table the entries below the image size: all of
 * them but for a single table's tail, so a header with huge tables over a
 * small image does not make every slot huge. */
int qed_cache_reset(vd_image *img, vd_error *err)
{
    struct qed_state *s = img->priv;
    uint64_t used = qed_l2_used(s, 0);
    vd_mcache_free(&s->l2c);
    if (vd_mcache_init(&s->l2c, img->file, (size_t)(used ? used : 1) * 8, QED_L2_CACHE_BYTES,
                       2, 64, "L2 table") < 0)
        return vd_set_error(err, -ENOMEM, "qed: out of memory for the L2 table cache");
    s->l2c.before_write = qed_before_table_write;
    s->l2c.ctx = img;
    return 0;
}

static int qed_l2_load(vd_image *img, uint64_t l1_index, uint64_t off, struct qed_l2 *t,
                       vd_error *err)
{
    struct qed_state *s = img->priv;
    int64_t fsize = vd_file_size(img->file, err);
    if (fsize < 0)
        return (int)fsize;
    if (!qed_table_ok(s, off, (uint64_t)fsize))
        return vd_set_error(err, -EINVAL, "qed: L1 entry %llu at 0x%llx: L2 table at 0x%llx is "
                            "misaligned, in the header or past end of file (size 0x%llx)",
                            (unsigned long long)l1_index,
                            (unsigned long long)(s->l1_off + l1_index * 8),
                            (unsigned long long)off, (unsigned long long)fsize);
    int r = vd_mcache_get(&s->l2c, off, &t->b, &t->slot, true, err);
    if (r < 0)
        return r;
    t->off = off;
    t->n = qed_l2_used(s, l1_index);
    return 0;
}

/* Before the first metadata change of a session, mark the image as needing
 * a check, durably. */
static int qed_mark_dirty(vd_image *img, vd_error *err)
{
    struct qed_state *s = img->priv;
    if (s->flag_set)
        return 0;
    s->features |= QED_F_NEED_CHECK;
    int r = qed_write_features(img, err);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0)
        s->flag_set = true;
    return r;
}

/* Append `bytes` (a multiple of the cluster size) at the end of the file. */
static uint64_t qed_alloc(struct qed_state *s, uint64_t bytes)
{
    uint64_t off = s->file_end;
    s->file_end += bytes;
    return off;
}

/* A fresh, zeroed L2 table for `l1_index`: the file is extended over it
 * (reads as zeroes) before the L1 entry points to it. */
static int qed_l2_create(vd_image *img, uint64_t l1_index, struct qed_l2 *t, vd_error *err)
{
    struct qed_state *s = img->priv;
    int r = qed_mark_dirty(img, err);
    if (r < 0)
        return r;
    uint64_t off = qed_alloc(s, s->table_bytes);
    r = vd_file_truncate(img->file, s->file_end, err);
    if (r == 0)
        r = vd_mcache_get(&s->l2c, off, &t->b, &t->slot, false, err);
    if (r < 0)
        return r;
    /* The L1 entry reaches the file with the next writeback, after the
     * extension over the table is synced. */
    s->l1[l1_index] = off;
    if (s->l1_dirty_hi <= s->l1_dirty_lo) {
        s->l1_dirty_lo = l1_index;
        s->l1_dirty_hi = l1_index + 1;
    } else {
        if (l1_index < s->l1_dirty_lo)
            s->l1_dirty_lo = l1_index;
        if (l1_index + 1 > s->l1_dirty_hi)
            s->l1_dirty_hi = l1_index + 1;
    }
    t->off = off;
    t->n = qed_l2_used(s, l1_index);
    return 0;
}

/* The L2 table for guest offset `off` in *view, *out = view; *out = NULL
 * when it is not allocated and `alloc` is false. */
static int qed_l2_get(vd_image *img, uint64_t off, bool alloc, struct qed_l2 *view,
                      struct qed_l2 **out, vd_error *err)
{
    struct qed_state *s = img->priv;
    uint64_t i = off / s->span;
    uint64_t l2_off = s->l1[i];
    *out = NULL;
    if (!l2_off && !alloc)
        return 0;
    int r = l2_off ? qed_l2_load(img, i, l2_off, view, err) : qed_l2_create(img, i, view, err);
    if (r == 0)
        *out = view;
    return r;
}

static void qed_l2_set(struct qed_state *s, struct qed_l2 *t, uint64_t idx, uint64_t v)
{
    vd_put_le64(t->b + idx * 8, v);
    vd_mcache_mark_dirty_range(&s->l2c, t->slot, (size_t)idx * 8, (size_t)idx * 8 + 8);
}

/* ---- reading ------------------------------------------------------------- */

/* The L2 entry for guest offset `off`: *e, 0 when its table is unallocated
 * and `alloc` is false (*t NULL), at index *idx of table *t (in *view). */
static int qed_lookup(vd_image *img, uint64_t off, bool alloc, struct qed_l2 *view,
                      struct qed_l2 **t, uint64_t *idx, uint64_t *e, vd_error *err)
{
    struct qed_state *s = img->priv;
    int r = qed_l2_get(img, off, alloc, view, t, err);
    *idx = off % s->span / s->cluster_size;
    *e = r == 0 ? qed_e(*t, *idx) : 0;
    return r;
}

/* Length of the run starting at entry `idx` that reads the same way (all
 * unallocated, all zero, or file-contiguous data), capped at `max` bytes. */
static uint64_t qed_run(vd_image *img, struct qed_l2 *t, uint64_t idx, uint64_t in,
                        uint64_t max)
{
    struct qed_state *s = img->priv;
    uint64_t e = qed_e(t, idx);
    uint64_t len = s->cluster_size - in;
    uint64_t j = idx + 1;
    uint64_t n = t ? t->n : s->table_entries;
    while (len < max && j < n) {
        uint64_t f = qed_e(t, j);
        bool same = e <= QED_ZERO_ENTRY ? f == e : f == e + (j - idx) * s->cluster_size;
        if (!same)
            break;
        len += s->cluster_size;
        j++;
    }
    return len < max ? len : max;
}

/* What the bytes at `off` are: a run of like entries in one L2 table. */
static int qed_map(vd_image *img, uint64_t off, uint64_t max, struct vd_map *m, vd_error *err)
{
    struct qed_state *s = img->priv;
    struct qed_l2 tv, *t;
    uint64_t idx, e;
    int r = qed_lookup(img, off, false, &tv, &t, &idx, &e, err);
    if (r < 0)
        return r;
    m->in = off % s->cluster_size;
    m->n = qed_run(img, t, idx, m->in, max);
    m->file_off = e + m->in;
    m->kind = e == 0 ? VD_MAP_BACKING : e == QED_ZERO_ENTRY ? VD_MAP_ZERO : VD_MAP_DATA;
    return m->kind == VD_MAP_DATA ? qed_check_data(img, e, t->off, idx, err) : 0;
}

static const struct vd_mapper qed_mapper = { .map = qed_map };

static int qed_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err)
{
    return vd_map_pread(img, buf, len, off, &qed_mapper, err);
}

static int qed_block_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                            vd_error *err)
{
    struct qed_state *s = img->priv;
    /* one L2 table per call */
    return vd_map_block_status(img, off, len, s->span, ext, &qed_mapper, err);
}

/* ---- writing ------------------------------------------------------------- */

/* Write part of one cluster whose entry is unallocated or zero: a new
 * cluster gets the old content (backing file or zeroes) around the data. */
static int qed_write_partial_new(vd_image *img, struct qed_l2 *t, uint64_t idx,
                                 const uint8_t *p, size_t n, uint64_t off, vd_error *err)
{
    struct qed_state *s = img->priv;
    uint64_t cl = off / s->cluster_size * s->cluster_size;
    uint64_t in = off - cl;
    uint64_t valid = s->image_size - cl < s->cluster_size ? s->image_size - cl
                                                          : s->cluster_size;
    memset(s->scratch, 0, s->cluster_size);
    int r = 0;
    if (qed_e(t, idx) == 0)
        r = vd_backing_pread(img, s->scratch, (size_t)valid, cl, err);
    if (r < 0)
        return r;
    memcpy(s->scratch + in, p, n);
    uint64_t at = qed_alloc(s, s->cluster_size);
    r = vd_file_pwrite(img->file, s->scratch, s->cluster_size, at, err);
    if (r == 0)
        qed_l2_set(s, t, idx, at);
    return r;
}

/* Whole clusters [idx, idx+k) not yet allocated get `k` new contiguous
 * clusters holding `p`. */
static int qed_write_full_new(vd_image *img, struct qed_l2 *t, uint64_t idx, uint64_t k,
                              const uint8_t *p, vd_error *err)
{
    struct qed_state *s = img->priv;
    uint64_t at = qed_alloc(s, k * s->cluster_size);
    int r = vd_file_pwrite(img->file, p, (size_t)(k * s->cluster_size), at, err);
    for (uint64_t j = 0; r == 0 && j < k; j++)
        qed_l2_set(s, t, idx + j, at + j * s->cluster_size);
    return r;
}

static int qed_pwrite(vd_image *img, const void *buf, size_t len, uint64_t off, vd_error *err)
{
    struct qed_state *s = img->priv;
    const uint8_t *p = buf;
    int r = 0;
    while (len && r == 0) {
        struct qed_l2 tv, *t;
        uint64_t idx, e, in = off % s->cluster_size;
        if ((r = qed_lookup(img, off, true, &tv, &t, &idx, &e, err)) < 0)
            break;
        size_t n = (size_t)qed_run(img, t, idx, in, len);
        if (e > QED_ZERO_ENTRY) {
            /* Allocated: overwrite in place. */
            if ((r = qed_check_data(img, e, t->off, idx, err)) == 0)
                r = vd_file_pwrite(img->file, p, n, e + in, err);
        } else if ((r = qed_mark_dirty(img, err)) < 0) {
            break;
        } else if (in || n < s->cluster_size) {
            /* The run may be longer than the cluster but this is partial. */
            n = n < s->cluster_size - in ? n : (size_t)(s->cluster_size - in);
            r = qed_write_partial_new(img, t, idx, p, n, off, err);
        } else {
            uint64_t k = n / s->cluster_size;
            n = (size_t)(k * s->cluster_size);
            r = qed_write_full_new(img, t, idx, k, p, err);
        }
        p += n;
        off += n;
        len -= n;
    }
    /* New entries wait for the next flush (qed_cache_writeback). */
    return r;
}

static int qed_pwrite_zeroes(vd_image *img, uint64_t off, uint64_t len, unsigned flags,
                             vd_error *err)
{
    struct qed_state *s = img->priv;
    (void)flags;
    int r = 0;
    while (len && r == 0) {
        uint64_t in = off % s->cluster_size;
        uint64_t n = s->cluster_size - in < len ? s->cluster_size - in : len;
        if (in || n < s->cluster_size) {
            /* Part of a cluster: write real zeroes. */
            uint8_t *z = calloc(1, (size_t)n);
            if (!z)
                return vd_set_error(err, -ENOMEM, "out of memory");
            r = qed_pwrite(img, z, (size_t)n, off, err);
            free(z);
        } else {
            struct qed_l2 tv, *t;
            uint64_t idx, e;
            bool need = img->backing_file != NULL;
            if ((r = qed_lookup(img, off, need, &tv, &t, &idx, &e, err)) < 0)
                break;
            if (e > QED_ZERO_ENTRY) {
                /* Keep the cluster (no leak); punch it to zeroes. */
                if ((r = qed_check_data(img, e, t->off, idx, err)) == 0)
                    r = vd_file_zero(img->file, e, s->cluster_size, err);
            } else if (e == 0 && need) {
                /* A zero cluster hides the backing file's data. */
                if ((r = qed_mark_dirty(img, err)) == 0)
                    qed_l2_set(s, t, idx, QED_ZERO_ENTRY);
            }
        }
        off += n;
        len -= n;
    }
    return r;
}

static int qed_flush(vd_image *img, vd_error *err)
{
    struct qed_state *s = img->priv;
    int r = qed_cache_writeback(img, err);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0 && s->flag_set) {
        s->features &= ~QED_F_NEED_CHECK;
        r = qed_write_features(img, err);
        if (r == 0)
            r = vd_file_sync(img->file, err);
        if (r == 0)
            s->flag_set = false;
    }
    return r;
}

/* ---- open, close, create ------------------------------------------------- */

static int qed_parse_header(vd_image *img, struct qed_state *s, const uint8_t *h,
                            uint64_t fsize, vd_error *err)
{
    if (vd_le32(h + QED_H_MAGIC) != QED_MAGIC)
        return vd_set_error(err, -EINVAL, "qed: bad magic at 0x0");
    s->cluster_size = vd_le32(h + QED_H_CLUSTER);
    s->table_size = vd_le32(h + QED_H_TABLE);
    s->header_size = vd_le32(h + QED_H_HDRSIZE);
    s->features = vd_le64(h + QED_H_FEATURES);
    s->compat = vd_le64(h + QED_H_COMPAT);
    s->autoclear = vd_le64(h + QED_H_AUTOCLEAR);
    s->l1_off = vd_le64(h + QED_H_L1);
    s->image_size = vd_le64(h + QED_H_SIZE);
    int r = qed_check_geometry(s->cluster_size, s->table_size, s->image_size, err);
    if (r < 0)
        return r;
    if (s->features & ~QED_F_KNOWN)
        return vd_set_error(err, -ENOTSUP, "qed: unknown feature bits 0x%llx (header offset "
                            "0x10)", (unsigned long long)(s->features & ~QED_F_KNOWN));
    if (s->header_size == 0 || (uint64_t)s->header_size * s->cluster_size > fsize)
        return vd_set_error(err, -EINVAL, "qed: header size of %u clusters (header offset "
                            "0xc) is zero or past end of file (size 0x%llx)",
                            s->header_size, (unsigned long long)fsize);
    qed_state_derive(s);
    if (!qed_table_ok(s, s->l1_off, fsize))
        return vd_set_error(err, -EINVAL, "qed: L1 table at 0x%llx (header offset 0x28) is "
                            "misaligned, in the header or past end of file (size 0x%llx)",
                            (unsigned long long)s->l1_off, (unsigned long long)fsize);
    img->size = s->image_size;
    img->cluster_size = s->cluster_size;
    return 0;
}

static int qed_read_backing_name(vd_image *img, struct qed_state *s, const uint8_t *h,
                                 vd_error *err)
{
    if (!(s->features & QED_F_BACKING_FILE))
        return 0;
    uint32_t off = vd_le32(h + QED_H_BF_OFF), len = vd_le32(h + QED_H_BF_LEN);
    if (len == 0 || len > QED_MAX_BACKING_NAME || (uint64_t)off + len > s->data_start)
        return vd_set_error(err, -EINVAL, "qed: backing file name at 0x%x (%u bytes) is "
                            "empty, too long or outside the header clusters", off, len);
    int r = vd_file_read_string(img->file, off, len, "qed: backing file name",
                                &img->backing_file, err);
    if (r < 0)
        return r;
    if (s->features & QED_F_BACKING_RAW) {
        img->backing_format = strdup("raw");
        if (!img->backing_format)
            return vd_set_error(err, -ENOMEM, "out of memory");
    }
    return 0;
}

static int qed_read_l1(vd_image *img, struct qed_state *s, vd_error *err)
{
    s->l1 = calloc(s->l1_n ? s->l1_n : 1, 8);
    if (!s->l1)
        return vd_set_error(err, -ENOMEM, "qed: out of memory for the L1 table");
    int r = vd_file_pread(img->file, s->l1, s->l1_n * 8, s->l1_off, err);
    for (uint64_t i = 0; r == 0 && i < s->l1_n; i++)
        s->l1[i] = vd_le64(&s->l1[i]);
    return r;
}

static void qed_free(struct qed_state *s)
{
    if (!s)
        return;
    vd_mcache_free(&s->l2c);
    free(s->l1);
    free(s->scratch);
    free(s);
}

/* A set NEED_CHECK flag: repaired when writable, tolerated read-only (every
 * table and offset is still bounds-checked on use). */
static int qed_open_need_check(vd_image *img, vd_error *err)
{
    if (img->readonly) {
        img->dirty = true;
        return 0;
    }
    vd_check_result res;
    memset(&res, 0, sizeof res);
    int r = qed_check(img, VD_CHECK_REPAIR_ALL, &res, err);
    if (r == 0 && res.corruptions != res.corruptions_fixed)
        r = vd_set_error(err, -EIO, "qed: needs a check and cannot be repaired: %s",
                         res.first_problem);
    return r;
}

static int qed_open(vd_image *img, vd_error *err)
{
    uint8_t h[QED_HEADER_LEN];
    uint64_t fsize;
    int r = vd_file_read_header(img->file, h, sizeof h, "qed", &fsize, err);
    if (r < 0)
        return r;
    struct qed_state *s = calloc(1, sizeof *s);
    if (!s)
        return vd_set_error(err, -ENOMEM, "out of memory");
    img->priv = s;
    if ((r = qed_parse_header(img, s, h, (uint64_t)fsize, err)) < 0 ||
        (r = qed_read_backing_name(img, s, h, err)) < 0 ||
        (r = qed_read_l1(img, s, err)) < 0 || (r = qed_cache_reset(img, err)) < 0)
        goto fail;
    s->file_end = vd_round_up((uint64_t)fsize, s->cluster_size);
    s->scratch = malloc(s->cluster_size);
    if (!s->scratch) {
        r = vd_set_error(err, -ENOMEM, "out of memory");
        goto fail;
    }
    if (s->autoclear && !img->readonly) {
        s->autoclear = 0;    /* bits we do not know lose their meaning */
        if ((r = qed_write_features(img, err)) < 0)
            goto fail;
    }
    if ((s->features & QED_F_NEED_CHECK) && (r = qed_open_need_check(img, err)) < 0)
        goto fail;
    return 0;
fail:
    qed_free(s);
    img->priv = NULL;
    return r;
}

static void qed_close(vd_image *img)
{
    qed_free(img->priv);
    img->priv = NULL;
}

/* The virtual size of a backing file named only in the options. */
static int qed_backing_size(const char *path, const char *bf, const char *bfmt,
                            uint64_t *size, vd_error *err)
{
    vd_image *b;
    int r = vd_open_related(path, bf, &(vd_open_opts){ .readonly = true, .format = bfmt,
                            .no_backing = true, .force_share = true }, &b, err);
    if (r < 0)
        return r;
    *size = vd_size(b);
    vd_close(b, NULL);
    return 0;
}

static int qed_create(const struct vd_create_args *a, vd_error *err)
{
    uint64_t cs, ts, size = a->size;
    const char *obf = vd_opt_str(a->opts, "backing_file");
    const char *obfmt = vd_opt_str(a->opts, "backing_fmt");
    const char *bf = a->backing_file ? a->backing_file : obf;
    const char *bfmt = a->backing_format ? a->backing_format : obfmt;
    int r;
    if ((r = vd_opt_size(a->opts, "cluster_size", QED_DEF_CLUSTER, &cs, err)) < 0 ||
        (r = vd_opt_uint(a->opts, "table_size", QED_DEF_TABLE_SIZE, &ts, err)) < 0)
        return r;
    if (!size && bf && !a->backing && (r = qed_backing_size(a->path, bf, bfmt, &size, err)) < 0)
        return r;
    size = vd_round_up(size, 512);
    if ((r = qed_check_geometry(cs, ts, size, err)) < 0)
        return r;
    /* Valid per the spec, but qemu (7.2) rejects one-cluster tables as an
     * offset overflow and could not open the image. */
    if (ts == 1)
        return vd_set_error(err, -EINVAL, "qed: table_size=1 is not accepted by qemu; "
                            "use 2 to 16");
    uint64_t entries = cs * ts / 8, max;
    if (vd_mul_overflow(entries * entries, cs, &max))
        return vd_set_error(err, -EINVAL, "qed: cluster_size=%llu with table_size=%llu maps "
                            "more than 2^64 bytes, which qemu cannot open; use a smaller "
                            "table_size", (unsigned long long)cs, (unsigned long long)ts);
    size_t bflen = bf ? strlen(bf) : 0;
    if (bf && (bflen == 0 || QED_HEADER_LEN + bflen > cs))
        return vd_set_error(err, -EINVAL, "qed: backing file name of %zu bytes does not fit "
                            "the %llu byte header cluster", bflen, (unsigned long long)cs);
    struct qed_state s = {
        .cluster_size = (uint32_t)cs, .table_size = (uint32_t)ts, .header_size = 1,
        .l1_off = cs, .image_size = size,
        .features = (bf ? QED_F_BACKING_FILE : 0) |
                    (bf && bfmt && !strcmp(bfmt, "raw") ? QED_F_BACKING_RAW : 0),
    };
    uint8_t *h = calloc(1, QED_HEADER_LEN + bflen);
    if (!h)
        return vd_set_error(err, -ENOMEM, "out of memory");
    qed_header_encode(&s, h, bf ? QED_HEADER_LEN : 0, (uint32_t)bflen);
    if (bf)
        memcpy(h + QED_HEADER_LEN, bf, bflen);
    vd_file *f;
    r = vd_file_create(a->path, &f, err);
    if (r == 0) {
        r = vd_file_pwrite(f, h, QED_HEADER_LEN + bflen, 0, err);
        if (r == 0)
            r = vd_file_truncate(f, cs * (1 + ts), err);   /* header + empty L1 */
        r = vd_file_create_finish(f, r, err);
    }
    free(h);
    return r;
}

static void qed_details(vd_image *img, vd_kv_fn fn, void *ctx)
{
    struct qed_state *s = img->priv;
    char v[32];
    snprintf(v, sizeof v, "%u", s->cluster_size);
    fn(ctx, "cluster_size", v);
    snprintf(v, sizeof v, "%u", s->table_size);
    fn(ctx, "table_size", v);
    snprintf(v, sizeof v, "%u", s->header_size);
    fn(ctx, "header_size", v);
    snprintf(v, sizeof v, "0x%llx", (unsigned long long)s->features);
    fn(ctx, "features", v);
    fn(ctx, "need_check", (s->features & QED_F_NEED_CHECK) && !s->flag_set ? "yes" : "no");
}

/* Allocated data is stored plainly in the image file (zero-copy reads). */
static vd_file *qed_data_file(vd_image *img)
{
    return img->file;
}

static const char *const qed_extensions[] = { "qed", NULL };

static const vd_opt_desc qed_create_opts[] = {
    { "cluster_size", "cluster size, a power of two from 4K to 64M (default 64K)" },
    { "table_size", "L1/L2 table size in clusters, a power of two from 1 to 16 (default 4)" },
    { "backing_file", "backing file name (same as -b)" },
    { "backing_fmt", "backing file format; raw is recorded, others are probed" },
    { NULL, NULL },
};

const struct vd_driver vd_qed = {
    .name = "qed",
    .description = "QEMU Enhanced Disk",
    .extensions = qed_extensions,
    .probe = qed_probe,
    .align = 1,
    .whole_clusters = true,
    .open = qed_open,
    .close = qed_close,
    .create = qed_create,
    .create_opts = qed_create_opts,
    .pread = qed_pread,
    .pwrite = qed_pwrite,
    .pwrite_zeroes = qed_pwrite_zeroes,
    .flush = qed_flush,
    .block_status = qed_block_status,
    .data_file = qed_data_file,
    .check = qed_check,
    .details = qed_details,
    .resize = qed_resize,
    .resize_zero_tail = true,
    .set_backing = qed_set_backing,
    .make_empty = qed_make_empty,
    .can_write = VD_CAN_NATIVE,
};
