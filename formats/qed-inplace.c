/* qed-inplace.c - the in-place metadata operations of QED: virtual size,
 * backing reference, emptying an overlay.
 *
 * Crash ordering (docs/flush.md):
 *  - grow: one 8-byte header write (the size; the L1 table is allocated at
 *    its full size at create time, so it bounds the size: past it, -ENOTSUP),
 *    after the clearing named under shrink.  Over a larger backing file,
 *    zero entries for the new range are written and synced before it.
 *  - shrink: the size is written and synced first; then the L2 entries
 *    past the new end and the L1 entries of tables wholly past it are
 *    cleared and synced.  The clusters they held are leaked (QED has no
 *    refcounts; check reports them).  A grow first clears the same past
 *    the old end (a shrink killed before its clearing), synced, so nothing
 *    a shrink dropped comes back.
 *  - backing reference: header and name are contiguous from offset 0 and
 *    written with one write.
 *  - make empty: the L1 table is cleared with one write and synced; then
 *    the file is cut after the header and L1 when nothing else precedes. */
#include "qed.h"

#include <errno.h>
#include <stdlib.h>

static int qed_ip_sync(vd_image *img, vd_error *err)
{
    int r = qed_cache_writeback(img, err);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    return r;
}

/* Clear the entries of L2 table `l1i` from index `from` on, on disk. */
static int qed_ip_clear_l2(vd_image *img, uint64_t l1i, uint64_t from, vd_error *err)
{
    struct qed_state *s = img->priv;
    uint64_t off = s->l1[l1i];
    if (!off || from >= s->table_entries)
        return 0;
    if (off & (s->cluster_size - 1) || off < s->data_start)
        return vd_set_error(err, -EINVAL, "qed: L1 entry %llu (0x%llx) is not a table",
                            (unsigned long long)l1i, (unsigned long long)off);
    size_t n = (size_t)((s->table_entries - from) * 8);
    uint8_t *z = calloc(1, n);
    if (!z)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vd_file_pwrite(img->file, z, n, off + from * 8, err);
    free(z);
    return r;
}

/* Unmap everything past guest byte `end`: the L2 entries past it in the
 * table holding it and the L1 entries from the next table up to `upto`
 * (as stored: past l1_n they are not in memory), synced.  Called past the
 * guest view: after a shrink's size write, or before a grow's. */
static int qed_ip_clear_past(vd_image *img, uint64_t end, uint64_t upto, vd_error *err)
{
    struct qed_state *s = img->priv;
    uint64_t first = vd_round_up(end, s->cluster_size) / s->cluster_size;
    uint64_t keep = (end + s->span - 1) / s->span, l1i = first / s->table_entries;
    int r = 0;
    if (l1i < keep && l1i < s->l1_n)
        r = qed_ip_clear_l2(img, l1i, first % s->table_entries, err);
    if (r < 0 || keep >= upto)
        return r == 0 ? vd_file_sync(img->file, err) : r;
    size_t n = (size_t)((upto - keep) * 8);
    uint8_t *e = malloc(n), z[8] = { 0 };
    if (!e)
        return vd_set_error(err, -ENOMEM, "out of memory");
    r = vd_file_pread(img->file, e, n, s->l1_off + keep * 8, err);
    for (uint64_t i = keep; r == 0 && i < upto; i++) {
        if (!vd_le64(e + (i - keep) * 8))
            continue;
        if ((r = vd_file_pwrite(img->file, z, 8, s->l1_off + i * 8, err)) == 0 && i < s->l1_n)
            s->l1[i] = 0;
    }
    free(e);
    return r == 0 ? vd_file_sync(img->file, err) : r;
}

/* Over a larger backing file: zero entries for the clusters from the old
 * size's next cluster boundary (the core zeroed the rest of the one
 * holding it) to the new size or the backing's end, written (tables, then
 * L1 entries) and synced while the header still holds the old size.  The
 * driver's zero write sees the new size meanwhile, and the old again after
 * (the caller writes the size). */
static int qed_ip_zero_new(vd_image *img, uint64_t size, uint64_t new_n, vd_error *err)
{
    struct qed_state *s = img->priv;
    uint64_t old = s->image_size, old_n = s->l1_n, bsize = img->backing->size;
    uint64_t from = vd_round_up(old, s->cluster_size);
    uint64_t to = vd_round_up(bsize < size ? bsize : size, s->cluster_size);
    if (from >= to)
        return 0;
    s->image_size = img->size = vd_round_up(size, s->cluster_size);
    s->l1_n = new_n;
    int r = qed_cache_reset(img, err);      /* (its slots hold the tables' used entries) */
    if (r == 0)
        r = img->drv->pwrite_zeroes(img, from, to - from, 0, err);
    if (r == 0)
        r = qed_ip_sync(img, err);
    if (r == 0)
        r = qed_cache_reset(img, err);
    s->image_size = img->size = old;
    s->l1_n = old_n;
    return r;
}

int qed_resize(vd_image *img, uint64_t size, vd_error *err)
{
    struct qed_state *s = img->priv;
    if (size % 512)
        return vd_set_error(err, -EINVAL, "qed: size %llu is not a multiple of 512",
                            (unsigned long long)size);
    uint64_t max = s->table_entries * s->table_entries * s->cluster_size;
    if (size > max)
        return vd_set_error(err, -ENOTSUP, "qed: cannot grow past %llu bytes in place: its "
                            "L1 table (%u clusters of %u bytes) maps no more",
                            (unsigned long long)max, s->table_size, s->cluster_size);
    int r = qed_ip_sync(img, err);
    if (r == 0)
        r = qed_cache_reset(img, err);
    uint64_t new_n = (size + s->span - 1) / s->span, old_n = s->l1_n;
    /* growing: whatever a shrink killed before its clearing left past the
     * old end goes first, while still hidden */
    if (r == 0 && size > s->image_size)
        r = qed_ip_clear_past(img, s->image_size, new_n, err);
    if (r < 0)
        return r;
    uint64_t *l1 = realloc(s->l1, (new_n > old_n ? new_n : old_n) * 8);
    if (!l1)
        return vd_set_error(err, -ENOMEM, "out of memory");
    s->l1 = l1;
    for (uint64_t i = old_n; i < new_n; i++)    /* cleared above */
        l1[i] = 0;
    bool hide = img->backing && img->backing->size > s->image_size && size > s->image_size;
    if (hide && (r = qed_ip_zero_new(img, size, new_n, err)) < 0)
        return r;
    uint8_t b[8];
    vd_put_le64(b, size);
    if ((r = vd_file_pwrite(img->file, b, 8, QED_H_SIZE, err)) < 0 ||
        (r = vd_file_sync(img->file, err)) < 0)
        return r;
    bool shrink = size < s->image_size;
    s->image_size = size;
    img->size = size;
    /* shrunk: the new size rules; what lies past it is unmapped now, so a
     * later grow does not bring it back (it would clear it anyway) */
    if (shrink)
        r = qed_ip_clear_past(img, size, old_n, err);
    s->l1_n = new_n;
    if (r == 0)
        r = qed_cache_reset(img, err);      /* tables hold more or fewer entries now */
    return r < 0 ? r : hide;
}

int qed_set_backing(vd_image *img, const char *file, const char *fmt, vd_error *err)
{
    struct qed_state *s = img->priv;
    size_t len = file ? strlen(file) : 0;
    if (len > QED_MAX_BACKING_NAME || QED_HEADER_LEN + len > s->data_start)
        return vd_set_error(err, -ENOSPC, "qed: a backing file name of %zu bytes does not fit "
                            "the %llu header bytes", len, (unsigned long long)s->data_start);
    uint8_t *h = calloc(1, QED_HEADER_LEN + len);
    if (!h)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vd_file_pread(img->file, h, QED_HEADER_LEN, 0, err);
    uint64_t f = s->features & ~(QED_F_BACKING_FILE | QED_F_BACKING_RAW);
    if (len)
        f |= QED_F_BACKING_FILE | (fmt && !strcmp(fmt, "raw") ? QED_F_BACKING_RAW : 0);
    if (r == 0) {
        vd_put_le64(h + QED_H_FEATURES, f);
        vd_put_le32(h + QED_H_BF_OFF, len ? QED_HEADER_LEN : 0);
        vd_put_le32(h + QED_H_BF_LEN, (uint32_t)len);
        memcpy(h + QED_HEADER_LEN, file ? file : "", len);
        r = vd_file_pwrite(img->file, h, QED_HEADER_LEN + len, 0, err);
    }
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0)
        s->features = f;
    free(h);
    return r;
}

int qed_make_empty(vd_image *img, vd_error *err)
{
    struct qed_state *s = img->priv;
    int r = qed_ip_sync(img, err);
    if (r == 0)
        r = qed_cache_reset(img, err);
    if (r < 0)
        return r;
    uint8_t *z = calloc(1, s->table_bytes);
    if (!z)
        return vd_set_error(err, -ENOMEM, "out of memory");
    r = vd_file_pwrite(img->file, z, s->table_bytes, s->l1_off, err);
    free(z);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r < 0)
        return r;
    memset(s->l1, 0, (s->l1_n ? s->l1_n : 1) * 8);
    /* nothing is referenced past the L1 table any more */
    uint64_t end = s->l1_off + s->table_bytes;
    if (end < s->data_start)
        end = s->data_start;
    if (s->l1_off == s->data_start && (r = vd_file_truncate(img->file, end, err)) == 0) {
        s->file_end = end;
        r = vd_file_sync(img->file, err);
    }
    return r;
}
