/* check.c - consistency check: rebuild every refcount in memory by walking
 * all metadata (header, L1/L2 of the active state and of every snapshot,
 * refcount table and blocks, snapshot table, bitmap directory), then compare
 * with the refcounts on disk.  More on disk than referenced is a leak; less
 * is an error (a cluster could be handed out twice).  Repair sets the on-disk
 * refcount to the computed one.
 *
 * Memory: one 32-bit counter per cluster of the file (capped by
 * VD_MAX_TABLE_BYTES). */
#include "qcow2.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct qcow2_ck {
    qcow2_state *s;
    vd_check_result *res;
    uint32_t *ref;
    uint64_t n;           /* clusters counted */
    uint8_t *l2;          /* one L2 table */
    uint64_t l2_visits;
} qcow2_ck;

/* Bounds that keep a check of a hostile image finite and quick. */
#define QCOW2_CK_MAX_L2_VISITS (1u << 20)

static void qcow2_ck_problem(qcow2_ck *k, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void qcow2_ck_problem(qcow2_ck *k, const char *fmt, ...)
{
    k->res->corruptions++;
    if (k->res->first_problem[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(k->res->first_problem, sizeof k->res->first_problem, fmt, ap);
    va_end(ap);
}

/* Count one reference to every cluster of [off, off+len). */
static void qcow2_ck_inc(qcow2_ck *k, uint64_t off, uint64_t len, const char *what)
{
    if (!len)
        return;
    uint64_t first = off >> k->s->cluster_bits, last;
    uint64_t end;
    if (vd_add_overflow(off, len - 1, &end) || (last = end >> k->s->cluster_bits) >= k->n) {
        qcow2_ck_problem(k, "qcow2: %s at 0x%llx is beyond the end of the file", what,
                         (unsigned long long)off);
        return;
    }
    for (uint64_t c = first; c <= last; c++)
        if (k->ref[c] != UINT32_MAX)
            k->ref[c]++;
}

static void qcow2_ck_l2(qcow2_ck *k, uint64_t l2off, bool active)
{
    qcow2_state *s = k->s;
    vd_error e;
    /* Shared L2 tables are walked once per L1 table that uses them; hostile
     * snapshot tables could make that endless. */
    if (++k->l2_visits > QCOW2_CK_MAX_L2_VISITS) {
        if (k->l2_visits == QCOW2_CK_MAX_L2_VISITS + 1)
            qcow2_ck_problem(k, "qcow2: more than %u L2 table references: check stopped walking",
                             QCOW2_CK_MAX_L2_VISITS);
        return;
    }
    if (vd_file_pread(s->file, k->l2, s->cluster_size, l2off, &e) < 0) {
        qcow2_ck_problem(k, "qcow2: L2 table at 0x%llx unreadable", (unsigned long long)l2off);
        return;
    }
    /* Fragmentation as qemu-img counts it: per L2 table, a data cluster not
     * right after the previous one; compressed clusters always. */
    uint64_t next_contig = 0;
    for (uint64_t i = 0; i < s->l2_entries; i++) {
        qcow2_entry x;
        uint64_t ent = vd_be64(k->l2 + i * s->l2_entry_size);
        qcow2_decode_l2(s, ent, s->extl2 ? vd_be64(k->l2 + i * 16 + 8) : 0, &x);
        uint64_t at = l2off + i * s->l2_entry_size;
        if (x.kind == QCOW2_COMPRESSED) {
            qcow2_ck_inc(k, x.host, x.csize, "compressed cluster");
            if (active) {
                k->res->allocated_clusters++;
                k->res->compressed_clusters++;
                k->res->fragmented_clusters++;
            }
            continue;
        }
        if (s->extl2 && !x.host && x.alloc_bits && !(s->incompat & QCOW2_INCOMPAT_DATA_FILE))
            qcow2_ck_problem(k, "qcow2: L2 entry at 0x%llx: unallocated cluster with subclusters allocated",
                             (unsigned long long)at);
        if (s->extl2 && (x.alloc_bits & x.zero_bits))
            qcow2_ck_problem(k, "qcow2: L2 entry at 0x%llx: subclusters both allocated and zero",
                             (unsigned long long)at);
        if (ent & QCOW2_L2_RESERVED)
            qcow2_ck_problem(k, "qcow2: L2 entry at 0x%llx has reserved bits set (0x%016llx)",
                             (unsigned long long)at, (unsigned long long)ent);
        if (!x.host)
            continue;
        if (qcow2_offset_in_cluster(s, x.host)) {
            qcow2_ck_problem(k, "qcow2: L2 entry at 0x%llx: unaligned cluster 0x%llx",
                             (unsigned long long)at, (unsigned long long)x.host);
            continue;
        }
        if (active && x.kind != QCOW2_ZERO) {
            k->res->allocated_clusters++;
            if (next_contig && x.host != next_contig)
                k->res->fragmented_clusters++;
            next_contig = x.host + s->cluster_size;
        }
        if (!s->data_file)    /* clusters of an external data file have no refcount */
            qcow2_ck_inc(k, x.host, s->cluster_size, "data cluster");
    }
}

static void qcow2_ck_l1(qcow2_ck *k, const uint64_t *l1, uint32_t size, uint64_t l1_off,
                        bool active)
{
    qcow2_state *s = k->s;
    qcow2_ck_inc(k, l1_off, (uint64_t)size * 8, "L1 table");
    for (uint32_t i = 0; i < size; i++) {
        uint64_t off = l1[i] & QCOW2_OFFSET_MASK;
        if (l1[i] & QCOW2_L1_RESERVED)
            qcow2_ck_problem(k, "qcow2: L1 entry %u at 0x%llx has reserved bits set", i,
                             (unsigned long long)(l1_off + i * 8ull));
        if (!off)
            continue;
        if (qcow2_offset_in_cluster(s, off) || (off >> s->cluster_bits) >= k->n) {
            qcow2_ck_problem(k, "qcow2: L1 entry %u at 0x%llx: bad L2 offset 0x%llx", i,
                             (unsigned long long)(l1_off + i * 8ull), (unsigned long long)off);
            continue;
        }
        qcow2_ck_inc(k, off, s->cluster_size, "L2 table");
        qcow2_ck_l2(k, off, active);
    }
}

static void qcow2_ck_snapshots(qcow2_ck *k)
{
    qcow2_state *s = k->s;
    qcow2_ck_inc(k, s->snapshots_off, s->snapshots_bytes, "snapshot table");
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        const qcow2_snapshot *sn = &s->snaps[i];
        uint64_t *l1 = NULL;
        vd_error e;
        if ((uint64_t)sn->l1_size * 8 > VD_MAX_TABLE_BYTES || qcow2_offset_in_cluster(s, sn->l1_off) ||
            qcow2_l1_load(s, sn->l1_off, sn->l1_size, &l1, &e) < 0) {
            qcow2_ck_problem(k, "qcow2: snapshot %s: L1 table at 0x%llx unreadable", sn->id,
                             (unsigned long long)sn->l1_off);
            continue;
        }
        qcow2_ck_l1(k, l1, sn->l1_size, sn->l1_off, false);
        free(l1);
    }
}

/* Persistent bitmaps: directory, bitmap tables, and their data clusters. */
static void qcow2_ck_bitmaps(qcow2_ck *k)
{
    qcow2_state *s = k->s;
    if (!s->bitmaps_off || !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS) ||
        s->bitmaps_size > (1u << 26))
        return;
    qcow2_ck_inc(k, s->bitmaps_off, s->bitmaps_size, "bitmap directory");
    uint8_t *d = malloc(s->bitmaps_size ? s->bitmaps_size : 1);
    vd_error e;
    if (!d || vd_file_pread(s->file, d, s->bitmaps_size, s->bitmaps_off, &e) < 0) {
        free(d);
        return;
    }
    for (uint64_t p = 0, i = 0; i < s->nb_bitmaps && p + 24 <= s->bitmaps_size; i++) {
        uint64_t toff = vd_be64(d + p);
        uint32_t tsize = vd_be32(d + p + 8);
        uint64_t len = 24 + (uint64_t)vd_be16(d + p + 18) + vd_be32(d + p + 20);
        if ((uint64_t)tsize * 8 <= (1u << 26) && toff && !qcow2_offset_in_cluster(s, toff)) {
            uint8_t *t = malloc((size_t)tsize * 8 + 1);
            qcow2_ck_inc(k, toff, (uint64_t)tsize * 8, "bitmap table");
            if (t && vd_file_pread(s->file, t, (size_t)tsize * 8, toff, &e) == 0)
                for (uint32_t j = 0; j < tsize; j++) {
                    uint64_t c = vd_be64(t + j * 8) & QCOW2_OFFSET_MASK;
                    if (c)
                        qcow2_ck_inc(k, c, s->cluster_size, "bitmap data");
                }
            free(t);
        }
        p += vd_round_up(len, 8);
    }
    free(d);
}

static int qcow2_ck_fix(qcow2_ck *k, uint64_t c, uint64_t want, vd_error *err)
{
    int r = qcow2_refcount_set(k->s, c, want, err);
    return r;
}

/* Compare computed with on-disk refcounts; repair as asked. */
static int qcow2_ck_compare(qcow2_ck *k, unsigned flags, vd_error *err)
{
    qcow2_state *s = k->s;
    /* Only the clusters of the file, as qemu-img check: refcounts past its
     * end are harmless (allocation skips them) and a repair allocates new
     * refcount blocks there. */
    for (uint64_t c = 0; c < k->n; c++) {
        uint64_t disk, want = k->ref[c];
        vd_error e;
        if (qcow2_refcount_get(s, c, &disk, &e) < 0) {
            qcow2_ck_problem(k, "%s", e.msg);
            c = (c / s->rb_entries + 1) * s->rb_entries - 1;
            continue;
        }
        if (disk == want)
            continue;
        bool leak = disk > want;
        if (leak)
            k->res->leaks++;
        else
            qcow2_ck_problem(k, "qcow2: cluster 0x%llx has refcount %llu but %llu references",
                             (unsigned long long)(c << s->cluster_bits),
                             (unsigned long long)disk, (unsigned long long)want);
        if (leak ? !(flags & VD_CHECK_REPAIR_LEAKS) : (flags & 2u) == 0)
            continue;
        int r = qcow2_ck_fix(k, c, want, err);
        if (r < 0)
            return r;
        if (leak)
            k->res->leaks_fixed++;
        else
            k->res->corruptions_fixed++;
    }
    return 0;
}

/* The COPIED flag of an active L1/L2 entry says "refcount is exactly 1":
 * writes trust it to write in place.  Compare with the (repaired) on-disk
 * refcounts; -r all corrects the flags. */
static int qcow2_ck_copied_one(qcow2_ck *k, uint64_t host, bool has, const char *what,
                               uint64_t at, bool *fix, unsigned flags, vd_error *err)
{
    uint64_t rc;
    int r = qcow2_refcount_get(k->s, host >> k->s->cluster_bits, &rc, err);
    *fix = false;
    if (r < 0 || has == (rc == 1))
        return r;
    qcow2_ck_problem(k, "qcow2: %s at 0x%llx: COPIED flag %s but refcount %llu", what,
                     (unsigned long long)at, has ? "set" : "clear", (unsigned long long)rc);
    if (flags & 2u) {
        *fix = true;
        k->res->corruptions_fixed++;
    }
    return 0;
}

static int qcow2_ck_copied(qcow2_ck *k, unsigned flags, vd_error *err)
{
    qcow2_state *s = k->s;
    bool fix;
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t l2off = s->l1[i] & QCOW2_OFFSET_MASK, at = s->l1_off + i * 8ull;
        if (!l2off || qcow2_offset_in_cluster(s, l2off) || (l2off >> s->cluster_bits) >= k->n)
            continue;
        int r = qcow2_ck_copied_one(k, l2off, s->l1[i] & QCOW2_OFLAG_COPIED, "L1 entry", at,
                                    &fix, flags, err);
        if (r == 0 && fix) {
            s->l1[i] ^= QCOW2_OFLAG_COPIED;
            r = qcow2_l1_write(s, i, err);
        }
        if (r < 0)
            return r;
        for (uint64_t j = 0; j < s->l2_entries; j++) {
            uint8_t *d;
            size_t slot;
            if ((r = vd_mcache_get(&s->l2c, l2off, &d, &slot, true, err)) < 0)
                return r;
            uint64_t e = vd_be64(d + j * s->l2_entry_size);
            qcow2_entry x;
            qcow2_decode_l2(s, e, 0, &x);
            if (x.kind == QCOW2_COMPRESSED || !x.host || s->data_file ||
                qcow2_offset_in_cluster(s, x.host) || (x.host >> s->cluster_bits) >= k->n)
                continue;
            r = qcow2_ck_copied_one(k, x.host, x.copied, "L2 entry", l2off + j * s->l2_entry_size,
                                    &fix, flags, err);
            if (r < 0)
                return r;
            if (fix) {   /* the slot may have moved: look it up again */
                if ((r = vd_mcache_get(&s->l2c, l2off, &d, &slot, true, err)) < 0)
                    return r;
                vd_put_be64(d + j * s->l2_entry_size, e ^ QCOW2_OFLAG_COPIED);
                vd_mcache_mark_dirty(&s->l2c, slot, 0);
            }
        }
    }
    return 0;
}

static void qcow2_ck_summary(qcow2_ck *k)
{
    qcow2_state *s = k->s;
    k->res->total_clusters = (s->img->size + s->cluster_size - 1) >> s->cluster_bits;
    for (uint64_t c = k->n; c > 0; c--)
        if (k->ref[c - 1]) {
            k->res->image_end_offset = c << s->cluster_bits;
            break;
        }
}

int qcow2_check(vd_image *img, unsigned flags, vd_check_result *res, vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    memset(res, 0, sizeof *res);
    if (s->l1_is_snapshot)
        return vd_set_error(err, -EINVAL, "qcow2: check the image, not a loaded snapshot");
    if (flags && img->readonly)
        return vd_set_error(err, -EROFS, "qcow2: repair needs the image opened read-write");
    int r = img->readonly ? 0 : qcow2_release_pending(s, err);
    if (r == 0 && !img->readonly)
        r = qcow2_meta_flush(s, err);
    int64_t fsz = r ? r : vd_file_size(s->file, err);
    if (fsz < 0)
        return (int)fsz;
    uint64_t end = vd_round_up((uint64_t)fsz, s->cluster_size);
    if (s->alloc_next > end)
        end = s->alloc_next;
    qcow2_ck k = { .s = s, .res = res, .n = end >> s->cluster_bits };
    if (k.n * 4 > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EFBIG, "qcow2: %llu clusters: too many to check in memory",
                            (unsigned long long)k.n);
    k.ref = calloc(k.n ? k.n : 1, 4);
    k.l2 = malloc(s->cluster_size);
    if (!k.ref || !k.l2) {
        free(k.ref);
        free(k.l2);
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory for the check");
    }
    qcow2_ck_inc(&k, 0, s->cluster_size, "header");
    qcow2_ck_l1(&k, s->l1, s->l1_size, s->l1_off, true);
    qcow2_ck_snapshots(&k);
    qcow2_ck_inc(&k, s->rt_off, (uint64_t)s->rt_clusters << s->cluster_bits, "refcount table");
    for (uint64_t i = 0; i < s->rt_entries; i++) {
        if (s->rt[i] & 0x1ff)
            qcow2_ck_problem(&k, "qcow2: refcount table entry %llu has reserved bits set",
                             (unsigned long long)i);
        if (s->rt[i] & ~0x1ffull)
            qcow2_ck_inc(&k, s->rt[i] & ~0x1ffull, s->cluster_size, "refcount block");
    }
    qcow2_ck_bitmaps(&k);
    qcow2_ck_summary(&k);
    if (flags) {
        /* New refcount blocks must not land on clusters the walk found in
         * use but whose on-disk refcount is 0. */
        if (s->alloc_next < end)
            s->alloc_next = end;
    }
    r = qcow2_ck_compare(&k, flags, err);
    if (r == 0)
        r = qcow2_ck_copied(&k, flags, err);
    if (r == 0 && flags)
        r = qcow2_meta_flush(s, err);
    if (r == 0 && flags)
        r = vd_file_sync(s->file, err);
    free(k.ref);
    free(k.l2);
    return r;
}
