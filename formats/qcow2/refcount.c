/* refcount.c - qcow2 refcounts: packing for every width (1..64 bits),
 * lookups through the refcount table, updates through the refcount block
 * cache, cluster allocation and refcount table growth.
 *
 * Widths below 8 bits pack several entries per byte, lowest bits first; 8..64
 * bit entries are big-endian (qemu docs/interop/qcow2.txt). */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>

/* Most clusters one allocation looks at before giving up. */
#define QCOW2_ALLOC_SCAN_MAX (1ull << 26)

uint64_t qcow2_rc_get_packed(const uint8_t *block, uint64_t idx, uint32_t order)
{
    switch (order) {
    case 3: return block[idx];
    case 4: return vd_be16(block + idx * 2);
    case 5: return vd_be32(block + idx * 4);
    case 6: return vd_be64(block + idx * 8);
    default: {
        uint32_t bits = 1u << order;
        uint64_t bit = idx * bits;
        return (block[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
    }
}

void qcow2_rc_set_packed(uint8_t *block, uint64_t idx, uint32_t order, uint64_t v)
{
    switch (order) {
    case 3: block[idx] = (uint8_t)v; break;
    case 4: vd_put_be16(block + idx * 2, (uint16_t)v); break;
    case 5: vd_put_be32(block + idx * 4, (uint32_t)v); break;
    case 6: vd_put_be64(block + idx * 8, v); break;
    default: {
        uint32_t bits = 1u << order;
        uint64_t bit = idx * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << (bit % 8));
        block[bit / 8] = (uint8_t)((block[bit / 8] & ~mask) | ((v << (bit % 8)) & mask));
    }
    }
}

uint64_t qcow2_rc_max(const qcow2_state *s)
{
    return s->refcount_bits == 64 ? UINT64_MAX : (1ull << s->refcount_bits) - 1;
}

int qcow2_refcount_table_load(qcow2_state *s, uint64_t file_size, vd_error *err)
{
    (void)file_size;
    uint64_t bytes = (uint64_t)s->rt_clusters << s->cluster_bits;
    uint8_t *raw = malloc(bytes);
    s->rt = malloc(bytes);
    if (!raw || !s->rt) {
        free(raw);
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory for the refcount table");
    }
    int r = vd_file_pread(s->file, raw, bytes, s->rt_off, err);
    s->rt_entries = bytes / 8;
    for (uint64_t i = 0; r == 0 && i < s->rt_entries; i++)
        s->rt[i] = vd_be64(raw + i * 8);
    free(raw);
    return r;
}

/* Host offset of refcount block `bi`, validated; 0 when none. */
static int qcow2_rb_offset(qcow2_state *s, uint64_t bi, uint64_t *off, vd_error *err)
{
    *off = 0;
    if (bi >= s->rt_entries)
        return 0;
    uint64_t e = s->rt[bi];
    if (e & 0x1ff || (e && qcow2_offset_in_cluster(s, e)))
        return vd_set_error(err, -EINVAL,
                            "qcow2: refcount table entry %llu at 0x%llx (0x%llx) is not cluster aligned",
                            (unsigned long long)bi, (unsigned long long)(s->rt_off + bi * 8),
                            (unsigned long long)e);
    *off = e;
    return 0;
}

int qcow2_refcount_get(qcow2_state *s, uint64_t cluster, uint64_t *out, vd_error *err)
{
    uint64_t rb;
    *out = 0;
    int r = qcow2_rb_offset(s, cluster / s->rb_entries, &rb, err);
    if (r < 0 || !rb)
        return r;
    uint8_t *d;
    size_t slot;
    if ((r = vd_mcache_get(&s->rbc, rb, &d, &slot, true, err)) < 0)
        return r;
    *out = qcow2_rc_get_packed(d, cluster % s->rb_entries, s->refcount_order);
    return 0;
}

/* Write one refcount table entry to disk (skipped while the table is being
 * replaced: the new table is written whole). */
static int qcow2_rt_entry_write(qcow2_state *s, uint64_t bi, vd_error *err)
{
    if (s->rt_growing)
        return 0;
    s->rc_unsynced = qcow2_now(s);
    uint8_t b[8];
    vd_put_be64(b, s->rt[bi]);
    return vd_file_pwrite(s->file, b, 8, s->rt_off + bi * 8, err);
}

static int qcow2_rt_grow(qcow2_state *s, uint64_t bi, vd_error *err);

/* A new refcount block for index bi.  The table entry is written last: until
 * then a crash leaves the block's cluster leaked, never named by the table
 * while its own refcount still reads 0 on disk (a later allocation, here or
 * in qemu, would hand that cluster out again and overwrite the block).  So
 * the block's count is on disk first: inside the block itself when it
 * covers its own cluster, else in the block covering it, flushed; and
 * synced, or a disk's cache could keep the entry and lose the block. */
static int qcow2_rb_alloc(qcow2_state *s, uint64_t bi, vd_error *err)
{
    uint64_t nb;
    int r = qcow2_alloc_raw(s, 1, &nb, err);
    if (r < 0)
        return r;
    uint64_t nc = nb >> s->cluster_bits;
    bool self = nc / s->rb_entries == bi;
    uint8_t *d;
    size_t slot;
    if ((r = vd_mcache_get(&s->rbc, nb, &d, &slot, false, err)) < 0)
        return r;
    if (self)
        qcow2_rc_set_packed(d, nc % s->rb_entries, s->refcount_order, 1);
    s->rc_unsynced = qcow2_now(s);
    if ((r = vd_file_pwrite(s->file, d, s->cluster_size, nb, err)) < 0)
        return r;
    if (!self && ((r = qcow2_refcount_set(s, nc, 1, err)) < 0 ||
                  (r = vd_mcache_flush(&s->rbc, err)) < 0))
        return r;
    if ((r = qcow2_barrier(s, s->rc_unsynced, err)) < 0)
        return r;
    s->rt[bi] = nb;
    return qcow2_rt_entry_write(s, bi, err);
}

int qcow2_refcount_set(qcow2_state *s, uint64_t cluster, uint64_t v, vd_error *err)
{
    uint64_t bi = cluster / s->rb_entries, rb;
    int r;
    if (v > qcow2_rc_max(s))
        return vd_set_error(err, -EOVERFLOW,
                            "qcow2: refcount of cluster 0x%llx would exceed %u bits",
                            (unsigned long long)(cluster << s->cluster_bits), s->refcount_bits);
    if (bi >= s->rt_entries && (r = qcow2_rt_grow(s, bi, err)) < 0)
        return r;
    if ((r = qcow2_rb_offset(s, bi, &rb, err)) < 0)
        return r;
    if (!rb) {
        if (v == 0)
            return 0;
        if ((r = qcow2_rb_alloc(s, bi, err)) < 0)
            return r;
        rb = s->rt[bi];
    }
    uint8_t *d;
    size_t slot;
    if ((r = vd_mcache_get(&s->rbc, rb, &d, &slot, true, err)) < 0)
        return r;
    qcow2_rc_set_packed(d, cluster % s->rb_entries, s->refcount_order, v);
    vd_mcache_mark_dirty(&s->rbc, slot, 0);
    return 0;
}

int qcow2_refcount_update(qcow2_state *s, uint64_t host, uint64_t len, int delta,
                          vd_error *err)
{
    if (!len)
        return 0;
    uint64_t first = host >> s->cluster_bits, last = (host + len - 1) >> s->cluster_bits;
    for (uint64_t c = first; c <= last; c++) {
        uint64_t v;
        int r = qcow2_refcount_get(s, c, &v, err);
        if (r < 0)
            return r;
        if (delta < 0 && v < (uint64_t)-delta)
            return vd_set_error(err, -EINVAL,
                                "qcow2: refcount of cluster 0x%llx would drop below zero",
                                (unsigned long long)(c << s->cluster_bits));
        v += (uint64_t)(int64_t)delta;
        /* A lower count must not reach the disk before the references
         * already written without it (qcow2_rc_before_write). */
        if (delta < 0 && s->ref_unsynced == qcow2_now(s))
            s->free_unsynced = s->ref_unsynced;
        if ((r = qcow2_refcount_set(s, c, v, err)) < 0)
            return r;
        if (v == 0) {
            uint64_t off = c << s->cluster_bits;
            vd_mcache_drop(&s->l2c, off);
            if (off < s->free_hint)
                s->free_hint = off;    /* reused by the next allocation */
            /* The rewind is held back until the sync, but the forward scan
             * from the cursor would still find this cluster while an L2
             * entry naming it may be on the disk without its removal: new
             * data there would show through it after a power loss.  Skip
             * the cursor past it; the rewind after the sync comes back. */
            if (s->free_unsynced == qcow2_now(s) && off >= s->alloc_next) {
                if (s->alloc_next < s->free_hint)
                    s->free_hint = s->alloc_next;
                s->alloc_next = off + s->cluster_size;
            }
            if (s->comp_end && off < s->comp_end && off + s->cluster_size > s->comp_cur)
                s->comp_cur = s->comp_end = 0;
        }
    }
    return 0;
}

/* Find n contiguous clusters with refcount 0 from the cursor; no refcount is
 * set (the caller does that). */
int qcow2_alloc_raw(qcow2_state *s, uint64_t n, uint64_t *host, vd_error *err)
{
    uint64_t c = s->alloc_next >> s->cluster_bits, run = 0, scanned = 0;
    if (c == 0)
        c = 1;
    while (run < n) {
        uint64_t v;
        /* Hostile refcount blocks can claim every cluster they cover: give
         * up instead of scanning for minutes. */
        if (++scanned > QCOW2_ALLOC_SCAN_MAX)
            return vd_set_error(err, -ENOSPC,
                                "qcow2: no free cluster found in %llu clusters from 0x%llx (refcount blocks claim them all)",
                                (unsigned long long)QCOW2_ALLOC_SCAN_MAX,
                                (unsigned long long)s->alloc_next);
        if (((c + run) << s->cluster_bits) >= VD_MAX_VIRTUAL_SIZE)
            return vd_set_error(err, -ENOSPC, "qcow2: no free cluster below 0x%llx",
                                (unsigned long long)VD_MAX_VIRTUAL_SIZE);
        int r = qcow2_refcount_get(s, c + run, &v, err);
        if (r < 0)
            return r;
        if (v) {
            c += run + 1;
            run = 0;
        } else {
            run++;
        }
    }
    *host = c << s->cluster_bits;
    s->alloc_next = (c + n) << s->cluster_bits;
    return 0;
}

/* Move the cursor back to freed space.  Only at the start of an
 * allocation: while one is being counted, its clusters still read as free. */
void qcow2_alloc_rewind(qcow2_state *s)
{
    /* Not while the references a free dropped may still be on the disk
     * without the drop: new data in such a cluster would show through them
     * after a power loss.  Kept for the first allocation after the sync. */
    if (s->free_unsynced == qcow2_now(s))
        return;
    if (s->free_hint < s->alloc_next)
        s->alloc_next = s->free_hint;
    s->free_hint = UINT64_MAX;
}

int qcow2_alloc_clusters(qcow2_state *s, uint64_t n, uint64_t *host, vd_error *err)
{
    qcow2_alloc_rewind(s);
    int r = qcow2_alloc_raw(s, n, host, err);
    if (r == 0)
        r = qcow2_refcount_update(s, *host, n << s->cluster_bits, 1, err);
    return r;
}

/* Replace the refcount table by a bigger one covering block index `bi` and
 * the new table's own clusters.  The old table stays valid on disk until the
 * header is switched; a crash before that leaks clusters at worst. */
static int qcow2_rt_grow(qcow2_state *s, uint64_t bi, vd_error *err)
{
    if (s->rt_growing)
        return vd_set_error(err, -EINVAL, "qcow2: refcount table growth recursed");
    uint64_t entries = s->rt_entries + s->rt_entries / 2 + 1, clusters = 0;
    if (entries < bi + 1)
        entries = bi + 1;
    for (int i = 0; i < 3; i++) {   /* cover the table itself, settle size */
        clusters = vd_round_up(entries * 8, s->cluster_size) >> s->cluster_bits;
        uint64_t end_cluster = (s->alloc_next >> s->cluster_bits) + clusters + 64;
        uint64_t need = end_cluster / s->rb_entries + 2;
        if (need > entries)
            entries = need;
    }
    clusters = vd_round_up(entries * 8, s->cluster_size) >> s->cluster_bits;
    entries = clusters << s->cluster_bits >> 3;
    if ((clusters << s->cluster_bits) > VD_MAX_TABLE_BYTES || clusters > UINT32_MAX)
        return vd_set_error(err, -EFBIG, "qcow2: refcount table would exceed %llu bytes",
                            (unsigned long long)VD_MAX_TABLE_BYTES);
    uint64_t *nt = calloc(entries, 8);
    uint8_t *raw = malloc(clusters << s->cluster_bits);
    if (!nt || !raw) {
        free(nt);
        free(raw);
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory growing the refcount table");
    }
    memcpy(nt, s->rt, s->rt_entries * 8);
    uint64_t *old = s->rt, old_off = s->rt_off, old_clusters = s->rt_clusters, old_n = s->rt_entries;
    uint64_t p;
    int r = qcow2_alloc_raw(s, clusters, &p, err);
    if (r < 0)
        goto fail;
    s->rt = nt;
    s->rt_entries = entries;
    s->rt_growing = true;
    r = qcow2_refcount_update(s, p, clusters << s->cluster_bits, 1, err);
    s->rt_growing = false;
    if (r == 0)
        r = vd_mcache_flush(&s->rbc, err);
    for (uint64_t i = 0; r == 0 && i < entries; i++)
        vd_put_be64(raw + i * 8, s->rt[i]);
    if (r == 0)
        r = vd_file_pwrite(s->file, raw, clusters << s->cluster_bits, p, err);
    if (r == 0)
        r = vd_file_sync(s->file, err);
    if (r < 0) {
        s->rt = old;
        s->rt_entries = old_n;
        free(nt);
        goto fail;
    }
    s->rt_off = p;
    s->rt_clusters = (uint32_t)clusters;
    free(old);
    free(raw);
    s->rc_unsynced = s->ref_unsynced = qcow2_now(s);
    if ((r = qcow2_header_write_rt(s, err)) < 0)
        return r;
    return qcow2_refcount_update(s, old_off, old_clusters << s->cluster_bits, -1, err);
fail:
    free(raw);
    return r;
}

/* The L2 cache's before-write hook: refcounts reach the disk first, synced
 * when any were written since the last sync. */
int qcow2_rc_flush_before_l2(void *ctx, vd_error *err)
{
    qcow2_state *s = ctx;
    int r = vd_mcache_flush(&s->rbc, err);
    if (r == 0)
        r = qcow2_barrier(s, s->rc_unsynced, err);
    s->ref_unsynced = qcow2_now(s);
    return r;
}

/* The refcount cache's before-write hook: lowered counts follow the
 * removal of the references they counted, synced. */
int qcow2_rc_before_write(void *ctx, vd_error *err)
{
    qcow2_state *s = ctx;
    int r = qcow2_barrier(s, s->free_unsynced, err);
    s->rc_unsynced = qcow2_now(s);
    return r;
}

int qcow2_meta_flush(qcow2_state *s, vd_error *err)
{
    int r = vd_mcache_flush(&s->rbc, err);
    if (r == 0)
        r = vd_mcache_flush(&s->l2c, err);
    return r;
}
