/* resize.c - the in-place metadata operations of qcow2: virtual size
 * (grow, shrink), backing reference, and emptying an overlay.
 *
 * Crash ordering (docs/flush.md):
 *  - grow: first the clusters still mapped past the old end (a shrink
 *    killed before its drop) are dropped and synced, as a shrink would;
 *    the core has zeroed the old last cluster's rest (resize_zero_tail).
 *  - grow within the L1 table: one 8-byte header write (the size).
 *  - grow past the L1 table: a new, bigger L1 table is allocated (refcounts
 *    first), filled and synced; then one 24-byte header write switches the
 *    size, L1 size and L1 offset together; then the old table is freed.  A
 *    crash before the switch leaks the new table, after it the old one.
 *  - grow over a larger backing file: the L1 table grown first as above
 *    but with the old size, then the new range made to read as zeroes and
 *    synced, then the size: the range never shows the backing's bytes.
 *    v3 (and extended L2) write zero entries; v2, which has none, maps the
 *    range to clusters of its own past the file's end, never written (a
 *    hole): the file extended, their refcounts, then their L2 entries.
 *  - shrink: the header size is written (and synced) first, then the
 *    clusters past the new end are dropped from their L2 tables and freed
 *    (L2 entries reach the file before the refcounts drop).  A crash after
 *    the header write leaves unreachable clusters, which are leaks at worst.
 *  - backing reference: the header cluster is rebuilt in memory
 *    (qcow2_header_build) and written with one write, as qemu does.
 *  - make empty: every cluster of the active L1 is discarded (L2 entries
 *    first, refcounts after), so a crash leaves a partly emptied overlay
 *    whose guest view is unchanged, since its base holds the same data. */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>

int qcow2_settle(qcow2_state *s, vd_error *err)
{
    int r = qcow2_release_pending(s, err);
    if (r == 0)
        r = qcow2_meta_flush(s, err);
    if (r == 0)
        r = vd_file_sync(s->file, err);
    return r;
}

/* Replace the active L1 table by one of `entries` entries. */
static int qcow2_l1_grow(qcow2_state *s, uint64_t entries, uint64_t size, vd_error *err)
{
    uint64_t bytes = vd_round_up(entries * 8, s->cluster_size), host;
    if (entries * 8 > VD_MAX_TABLE_BYTES || entries > UINT32_MAX)
        return vd_set_error(err, -EFBIG, "qcow2: L1 table of %llu entries for size %llu is too large",
                            (unsigned long long)entries, (unsigned long long)size);
    uint64_t *l1 = calloc(bytes / 8, 8);
    uint8_t *buf = calloc(1, bytes);
    int r = 0;
    if (!l1 || !buf)
        r = vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    if (r == 0)
        r = qcow2_alloc_clusters(s, bytes >> s->cluster_bits, &host, err);
    if (r == 0)
        r = qcow2_settle(s, err);   /* refcounts of the new table first */
    if (r == 0) {
        memcpy(l1, s->l1, (size_t)s->l1_size * 8);
        for (uint64_t i = 0; i < s->l1_size; i++)
            vd_put_be64(buf + i * 8, l1[i]);
        r = vd_file_pwrite(s->file, buf, bytes, host, err);
    }
    if (r == 0)
        r = vd_file_sync(s->file, err);
    if (r == 0) {
        /* size (0x18), crypt_method (0x20, 0), l1_size (0x24), l1_offset
         * (0x28): one write switches them together. */
        uint8_t h[24];
        vd_put_be64(h, size);
        vd_put_be32(h + 8, 0);
        vd_put_be32(h + 12, (uint32_t)entries);
        vd_put_be64(h + 16, host);
        r = vd_file_pwrite(s->file, h, sizeof h, QH_SIZE, err);
    }
    if (r == 0)
        r = vd_file_sync(s->file, err);
    if (r == 0) {
        uint64_t old_off = s->l1_off, old_bytes = vd_round_up((uint64_t)s->l1_size * 8, s->cluster_size);
        free(s->l1);
        s->l1 = l1;
        l1 = NULL;
        s->l1_off = host;
        s->l1_size = (uint32_t)entries;
        s->img->size = size;
        if (old_off && old_bytes)
            r = qcow2_refcount_update(s, old_off, old_bytes, -1, err);
        if (r == 0)
            r = qcow2_settle(s, err);
    }
    free(l1);
    free(buf);
    return r;
}

/* Drop every cluster from guest cluster `first` to the end of the L1. */
static int qcow2_drop_from(qcow2_state *s, uint64_t first, vd_error *err)
{
    int r = 0;
    for (uint64_t l1i = first / s->l2_entries; r == 0 && l1i < s->l1_size; l1i++) {
        if (!(s->l1[l1i] & QCOW2_OFFSET_MASK))
            continue;
        uint64_t gc = l1i * s->l2_entries > first ? l1i * s->l2_entries : first;
        for (; r == 0 && gc < (l1i + 1) * s->l2_entries; gc++)
            r = qcow2_unmap_cluster(s, gc, err);
    }
    if (r == 0)
        r = qcow2_release_pending(s, err);
    return r;
}

/* A grow over a backing file larger than the old size: the new range
 * must read as zeroes, not as the backing's bytes, before the size makes
 * it visible. */
static bool qcow2_grow_hides_backing(qcow2_state *s, uint64_t size)
{
    vd_image *b = s->img->backing;
    return b && b->size > s->img->size && size > s->img->size;
}

/* `n` clusters of their own for v2's new range: past the file's end, so
 * never written and read as zeroes (not freed clusters inside the file,
 * which hold old bytes; hence no rewind).  The file is extended over them
 * first (nothing names them yet: a kill leaves a bare hole at the end),
 * then their refcounts are set and settled (a kill then leaks them).
 * Refcount blocks they need go after them (the cursor is past them). */
static int qcow2_hole_clusters(qcow2_state *s, uint64_t n, uint64_t *host, vd_error *err)
{
    int64_t fsize = vd_file_size(s->file, err);
    if (fsize < 0)
        return (int)fsize;
    uint64_t end = vd_round_up((uint64_t)fsize, s->cluster_size);
    if (s->alloc_next < end)
        s->alloc_next = end;
    int r = qcow2_alloc_raw(s, n, host, err);
    if (r == 0)
        r = vd_file_truncate(s->file, *host + (n << s->cluster_bits), err);
    if (r == 0)
        r = vd_file_sync(s->file, err);
    if (r == 0)
        r = qcow2_refcount_update(s, *host, n << s->cluster_bits, 1, err);
    return r == 0 ? qcow2_settle(s, err) : r;
}

/* Make every cluster from the old size's next cluster boundary (the core
 * zeroed the rest of the one holding it) up to the new size or the
 * backing's end read as zeroes, then settle: refcounts of new L2 tables,
 * tables, L1 entries, synced.  Past the old size nothing maps them yet
 * (the grow dropped what a killed shrink left), so each gets a plain zero
 * entry (v3, extended L2), or for v2 a hole cluster of its own. */
static int qcow2_zero_new_range(qcow2_state *s, uint64_t size, vd_error *err)
{
    uint64_t bsize = s->img->backing->size, end = bsize < size ? bsize : size;
    uint64_t gc = vd_round_up(s->img->size, s->cluster_size) >> s->cluster_bits;
    uint64_t last = vd_round_up(end, s->cluster_size) >> s->cluster_bits, host = 0;
    bool v2 = s->version < 3 && !s->extl2;
    int r = v2 && gc < last ? qcow2_hole_clusters(s, last - gc, &host, err) : 0;
    for (uint64_t i = 0; r == 0 && gc + i < last; i++)
        r = s->extl2 ? qcow2_l2_set(s, gc + i, 0, (uint64_t)UINT32_MAX << 32, err)
            : v2     ? qcow2_l2_set(s, gc + i, (host + (i << s->cluster_bits)) | QCOW2_OFLAG_COPIED,
                                    0, err)
                     : qcow2_l2_set(s, gc + i, QCOW2_OFLAG_ZERO, 0, err);
    return r == 0 ? qcow2_settle(s, err) : r;
}

int qcow2_resize(vd_image *img, uint64_t size, vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    if (s->l1_is_snapshot)
        return vd_set_error(err, -EROFS, "qcow2: a loaded snapshot cannot be resized");
    uint64_t per_l1 = s->cluster_size * s->l2_entries;
    uint64_t need = (size + per_l1 - 1) / per_l1;
    int r = qcow2_settle(s, err);
    if (r < 0)
        return r;
    if (size < img->size) {
        if (s->nb_snapshots)
            return vd_set_error(err, -ENOTSUP,
                                "qcow2: cannot shrink an image with internal snapshots (they keep the old size)");
        if ((r = qcow2_header_write_u64(s, QH_SIZE, size, err)) == 0 &&
            (r = vd_file_sync(s->file, err)) == 0) {
            img->size = size;
            r = qcow2_drop_from(s, vd_round_up(size, s->cluster_size) >> s->cluster_bits, err);
        }
        return r == 0 ? qcow2_settle(s, err) : r;
    }
    /* A shrink killed between its header write and the drop leaves
     * clusters mapped past the end: dropped (and synced) before they show */
    r = qcow2_drop_from(s, vd_round_up(img->size, s->cluster_size) >> s->cluster_bits, err);
    if (r == 0)
        r = qcow2_settle(s, err);
    if (r < 0)
        return r;
    bool hide = qcow2_grow_hides_backing(s, size);
    if (need > s->l1_size && !hide)
        return qcow2_l1_grow(s, need, size, err);
    /* Over a larger backing file: the bigger L1 table first, switched
     * with the old size, then the new range marked zero, then the size */
    if (need > s->l1_size)
        r = qcow2_l1_grow(s, need, img->size, err);
    if (r == 0 && hide)
        r = qcow2_zero_new_range(s, size, err);
    if (r == 0 && (r = qcow2_header_write_u64(s, QH_SIZE, size, err)) == 0 &&
        (r = vd_file_sync(s->file, err)) == 0)
        img->size = size;
    return r < 0 ? r : hide;
}

int qcow2_set_backing(vd_image *img, const char *file, const char *fmt, vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    uint8_t *out = NULL;
    uint64_t len = 0;
    int r = qcow2_settle(s, err);
    if (r == 0)
        r = qcow2_header_build(s, s->header_len, true, file, fmt, &out, &len, err);
    if (r == 0)
        r = vd_file_pwrite(s->file, out, len, 0, err);
    if (r == 0)
        r = vd_file_sync(s->file, err);
    if (r == 0) {
        s->backing_off = vd_be64(out + QH_BACKING_OFF);
        s->backing_len = vd_be32(out + QH_BACKING_SIZE);
    }
    free(out);
    return r;
}

int qcow2_make_empty(vd_image *img, vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    int r = qcow2_drop_from(s, 0, err);
    return r == 0 ? qcow2_settle(s, err) : r;
}
