/* l2.c - the two-level map from guest clusters to host clusters: L1 loading,
 * L2 entry decoding (standard, zero, compressed, extended L2 subclusters),
 * lookups through the L2 cache, and entry updates with L2 allocation and
 * copy-on-write of L2 tables shared with snapshots. */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>

void qcow2_decode_l2(const qcow2_state *s, uint64_t e, uint64_t bitmap, qcow2_entry *out)
{
    memset(out, 0, sizeof *out);
    if (e & QCOW2_OFLAG_COMPRESSED) {
        /* Offset in the low x bits, additional 512-byte sectors above. */
        uint32_t x = 62 - (s->cluster_bits - 8);
        uint64_t nsec = ((e >> x) & ((1ull << (s->cluster_bits - 8)) - 1)) + 1;
        out->kind = QCOW2_COMPRESSED;
        out->host = e & ((1ull << x) - 1);
        out->csize = nsec * 512 - (out->host & 511);
        return;
    }
    out->host = e & QCOW2_OFFSET_MASK;
    out->copied = e & QCOW2_OFLAG_COPIED;
    /* With an external data file, guest cluster 0 may live at host offset
     * 0: qemu marks such an entry allocated by the COPIED bit. */
    bool at_zero = !out->host && out->copied && (s->incompat & QCOW2_INCOMPAT_DATA_FILE);
    if (!s->extl2) {
        if (s->version >= 3 && (e & QCOW2_OFLAG_ZERO))
            out->kind = QCOW2_ZERO;
        else
            out->kind = out->host || at_zero ? QCOW2_NORMAL : QCOW2_UNALLOC;
        return;
    }
    out->alloc_bits = (uint32_t)bitmap;
    out->zero_bits = (uint32_t)(bitmap >> 32);
    if (out->alloc_bits == UINT32_MAX)
        out->kind = QCOW2_NORMAL;
    else if (out->zero_bits == UINT32_MAX && !out->alloc_bits)
        out->kind = QCOW2_ZERO;
    else if (!out->alloc_bits && !out->zero_bits)
        out->kind = QCOW2_UNALLOC;
    else
        out->kind = QCOW2_SUBCLUSTERS;
}

int qcow2_l1_load(qcow2_state *s, uint64_t off, uint32_t size, uint64_t **out,
                  vd_error *err)
{
    uint64_t *l1 = calloc(size ? size : 1, 8);
    if (!l1)
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory for L1 table");
    int r = size ? vd_file_pread(s->file, l1, (size_t)size * 8, off, err) : 0;
    if (r < 0) {
        free(l1);
        return r;
    }
    for (uint32_t i = 0; i < size; i++)
        l1[i] = be64toh(l1[i]);
    *out = l1;
    return 0;
}

int qcow2_l2_validate_l1(qcow2_state *s, uint64_t l1e, uint32_t idx, vd_error *err)
{
    uint64_t off = l1e & QCOW2_OFFSET_MASK;
    if (off && qcow2_offset_in_cluster(s, off))
        return vd_set_error(err, -EINVAL,
                            "qcow2: L1 entry %u at 0x%llx points to unaligned L2 table 0x%llx",
                            idx, (unsigned long long)(s->l1_off + (uint64_t)idx * 8),
                            (unsigned long long)off);
    return 0;
}

static int qcow2_entry_validate(qcow2_state *s, const qcow2_entry *e, uint64_t l2off,
                                uint64_t idx, vd_error *err)
{
    uint64_t at = l2off + idx * s->l2_entry_size;
    if (e->kind == QCOW2_COMPRESSED) {
        if (e->host < s->cluster_size)
            return vd_set_error(err, -EINVAL,
                                "qcow2: L2 entry at 0x%llx: compressed data at 0x%llx overlaps the header",
                                (unsigned long long)at, (unsigned long long)e->host);
        if (s->extl2 && (e->alloc_bits || e->zero_bits))
            return 0;   /* qemu ignores the bitmap of compressed entries */
        return 0;
    }
    if (e->host && qcow2_offset_in_cluster(s, e->host))
        return vd_set_error(err, -EINVAL,
                            "qcow2: L2 entry at 0x%llx points to unaligned cluster 0x%llx",
                            (unsigned long long)at, (unsigned long long)e->host);
    if (s->extl2 && (e->alloc_bits & e->zero_bits))
        return vd_set_error(err, -EINVAL,
                            "qcow2: extended L2 entry at 0x%llx: subcluster both allocated and zero",
                            (unsigned long long)at);
    if (s->extl2 && e->alloc_bits && !e->host && !(s->incompat & QCOW2_INCOMPAT_DATA_FILE))
        return vd_set_error(err, -EINVAL,
                            "qcow2: extended L2 entry at 0x%llx: allocated subclusters without a host cluster",
                            (unsigned long long)at);
    return 0;
}

int qcow2_lookup(qcow2_state *s, uint64_t gc, qcow2_entry *out, vd_error *err)
{
    uint64_t l1i = gc / s->l2_entries, idx = gc % s->l2_entries;
    memset(out, 0, sizeof *out);
    if (l1i >= s->l1_size)
        return 0;
    uint64_t l1e = s->l1[l1i];
    int r = qcow2_l2_validate_l1(s, l1e, (uint32_t)l1i, err);
    uint64_t l2off = l1e & QCOW2_OFFSET_MASK;
    if (r < 0 || !l2off)
        return r;
    uint8_t *d;
    size_t slot;
    if ((r = vd_mcache_get(&s->l2c, l2off, &d, &slot, true, err)) < 0)
        return r;
    uint64_t e = vd_be64(d + idx * s->l2_entry_size);
    uint64_t bm = s->extl2 ? vd_be64(d + idx * 16 + 8) : 0;
    qcow2_decode_l2(s, e, bm, out);
    return qcow2_entry_validate(s, out, l2off, idx, err);
}

int qcow2_l1_write(qcow2_state *s, uint64_t l1i, vd_error *err)
{
    uint8_t b[8];
    vd_put_be64(b, s->l1[l1i]);
    return vd_file_pwrite(s->file, b, 8, s->l1_off + l1i * 8, err);
}

/* Give guest L2 index l1i a private L2 table (new, or a copy of a shared
 * one).  Order: refcounts, then the table's contents, synced, then the L1
 * entry; the old table's count drops after that (qcow2_rc_before_write). */
static int qcow2_l2_make_private(qcow2_state *s, uint64_t l1i, vd_error *err)
{
    uint64_t old = s->l1[l1i] & QCOW2_OFFSET_MASK, nl2;
    uint8_t *copy = calloc(1, s->cluster_size);
    if (!copy)
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    uint8_t *d;
    size_t slot;
    int r = 0;
    if (old && (r = vd_mcache_get(&s->l2c, old, &d, &slot, true, err)) == 0)
        memcpy(copy, d, s->cluster_size);
    if (r == 0)
        r = qcow2_alloc_clusters(s, 1, &nl2, err);
    if (r == 0)
        r = vd_mcache_flush(&s->rbc, err);
    if (r == 0)
        r = vd_file_pwrite(s->file, copy, s->cluster_size, nl2, err);
    if (r == 0)
        r = vd_file_sync(s->file, err);
    if (r == 0)
        r = vd_mcache_get(&s->l2c, nl2, &d, &slot, false, err);
    if (r == 0) {
        memcpy(d, copy, s->cluster_size);
        s->l1[l1i] = nl2 | QCOW2_OFLAG_COPIED;
        s->ref_unsynced = qcow2_now(s);
        r = qcow2_l1_write(s, l1i, err);
    }
    free(copy);
    if (r == 0 && old)
        r = qcow2_refcount_update(s, old, s->cluster_size, -1, err);
    return r;
}

int qcow2_l2_set(qcow2_state *s, uint64_t gc, uint64_t entry, uint64_t bitmap,
                 vd_error *err)
{
    uint64_t l1i = gc / s->l2_entries, idx = gc % s->l2_entries;
    if (l1i >= s->l1_size)
        return vd_set_error(err, -EINVAL, "qcow2: guest cluster %llu beyond the L1 table",
                            (unsigned long long)gc);
    int r = qcow2_l2_validate_l1(s, s->l1[l1i], (uint32_t)l1i, err);
    if (r < 0)
        return r;
    uint64_t l1e = s->l1[l1i];
    if (!(l1e & QCOW2_OFFSET_MASK) || !(l1e & QCOW2_OFLAG_COPIED))
        if ((r = qcow2_l2_make_private(s, l1i, err)) < 0)
            return r;
    uint8_t *d;
    size_t slot;
    if ((r = vd_mcache_get(&s->l2c, s->l1[l1i] & QCOW2_OFFSET_MASK, &d, &slot, true,
                             err)) < 0)
        return r;
    vd_put_be64(d + idx * s->l2_entry_size, entry);
    if (s->extl2)
        vd_put_be64(d + idx * 16 + 8, bitmap);
    vd_mcache_mark_dirty(&s->l2c, slot, 0);
    return 0;
}

int qcow2_entry_free(qcow2_state *s, const qcow2_entry *e, vd_error *err)
{
    if (e->kind == QCOW2_COMPRESSED)
        return qcow2_refcount_update(s, e->host, e->csize, -1, err);
    if (e->host)
        return qcow2_refcount_update(s, e->host, s->cluster_size, -1, err);
    return 0;
}

int qcow2_defer_free(qcow2_state *s, const qcow2_entry *e, vd_error *err)
{
    if (e->kind != QCOW2_COMPRESSED && !e->host)
        return 0;
    if (VD_ARRAY_RESERVE(s->pending, s->cappending, s->npending + 1) < 0)
        return vd_set_error(err, -ENOMEM, "qcow2: %s: out of memory", s->file->path);
    s->pending[s->npending++] = *e;
    return 0;
}

int qcow2_release_pending_batch(qcow2_state *s, vd_error *err)
{
    return s->npending >= QCOW2_PENDING_BATCH ? qcow2_release_pending(s, err) : 0;
}

/* L2 tables first (they no longer point at the clusters), then refcounts. */
int qcow2_release_pending(qcow2_state *s, vd_error *err)
{
    if (!s->npending)
        return 0;
    int r = qcow2_meta_flush(s, err);
    for (size_t i = 0; r == 0 && i < s->npending; i++)
        r = qcow2_entry_free(s, &s->pending[i], err);
    s->npending = 0;
    return r;
}
