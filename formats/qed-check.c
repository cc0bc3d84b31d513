/* qed-check.c - the QED consistency check (qemu-img check's invariants from
 * qed_spec.rst): every cluster referenced at most once, every table and
 * data offset cluster aligned and inside the file, unreferenced clusters
 * counted as leaks.  Repair drops bad entries (the range then reads from the
 * backing file, as qemu does) and clears QED_F_NEED_CHECK. */
#include "qed.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

struct qed_check_ctx {
    vd_image *img;
    vd_check_result *res;
    uint8_t *used;          /* one bit per whole cluster of the file */
    uint64_t nclusters;
    uint64_t file_size;
    bool repair;
};

static void qed_problem(vd_check_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void qed_problem(vd_check_result *res, const char *fmt, ...)
{
    if (res->first_problem[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->first_problem, sizeof res->first_problem, fmt, ap);
    va_end(ap);
}

/* Mark the clusters of [off, off+bytes) used; false if one already was. */
static bool qed_mark_used(struct qed_check_ctx *c, uint64_t off, uint64_t bytes)
{
    struct qed_state *s = c->img->priv;
    bool fresh = true;
    for (uint64_t i = off / s->cluster_size; i < (off + bytes) / s->cluster_size; i++) {
        if (i >= c->nclusters)
            break;                    /* a partial last cluster */
        if (c->used[i / 8] & (1u << (i % 8)))
            fresh = false;
        c->used[i / 8] |= (uint8_t)(1u << (i % 8));
    }
    return fresh;
}

/* Zero a bad table entry on disk (repair) or just count it. */
static int qed_check_drop(struct qed_check_ctx *c, uint64_t entry_off, vd_error *err)
{
    c->res->corruptions++;
    if (!c->repair)
        return 0;
    uint8_t z[8] = { 0 };
    int r = vd_file_pwrite(c->img->file, z, 8, entry_off, err);
    if (r == 0)
        c->res->corruptions_fixed++;
    return r;
}

static int qed_check_l2(struct qed_check_ctx *c, uint64_t l2_off, uint64_t *prev,
                        vd_error *err)
{
    struct qed_state *s = c->img->priv;
    uint8_t *t = malloc(s->table_bytes);
    if (!t)
        return vd_set_error(err, -ENOMEM, "qed: out of memory for an L2 table");
    int r = vd_file_pread(c->img->file, t, s->table_bytes, l2_off, err);
    for (uint64_t j = 0; r == 0 && j < s->table_entries; j++) {
        uint64_t e = vd_le64(t + j * 8);
        if (e <= QED_ZERO_ENTRY)
            continue;
        /* A cluster the file does not hold whole is bad, as qemu judges it
         * (its file size is rounded down to a cluster): after a power
         * loss, a new cluster's entry may reach the disk before all of it. */
        if ((e & (s->cluster_size - 1)) || e < s->data_start || e >= c->file_size ||
            c->file_size - e < s->cluster_size) {
            qed_problem(c->res, "qed: L2 entry %llu at 0x%llx: bad data cluster offset 0x%llx",
                        (unsigned long long)j, (unsigned long long)(l2_off + j * 8),
                        (unsigned long long)e);
            r = qed_check_drop(c, l2_off + j * 8, err);
            continue;
        }
        if (!qed_mark_used(c, e, s->cluster_size)) {
            qed_problem(c->res, "qed: L2 entry %llu at 0x%llx: cluster 0x%llx is used twice",
                        (unsigned long long)j, (unsigned long long)(l2_off + j * 8),
                        (unsigned long long)e);
            c->res->corruptions++;
            continue;
        }
        c->res->allocated_clusters++;
        if (*prev && e != *prev + s->cluster_size)
            c->res->fragmented_clusters++;
        *prev = e;
    }
    free(t);
    return r;
}

static int qed_check_l1(struct qed_check_ctx *c, const uint8_t *l1, vd_error *err)
{
    struct qed_state *s = c->img->priv;
    uint64_t prev = 0;
    for (uint64_t i = 0; i < s->table_entries; i++) {
        uint64_t e = vd_le64(l1 + i * 8);
        uint64_t at = s->l1_off + i * 8;
        int r = 0;
        if (!e)
            continue;
        if (!qed_table_ok(s, e, c->file_size)) {
            qed_problem(c->res, "qed: L1 entry %llu at 0x%llx: bad L2 table offset 0x%llx",
                        (unsigned long long)i, (unsigned long long)at, (unsigned long long)e);
            r = qed_check_drop(c, at, err);
            if (c->repair && i < s->l1_n)
                s->l1[i] = 0;
        } else if (!qed_mark_used(c, e, s->table_bytes)) {
            qed_problem(c->res, "qed: L1 entry %llu at 0x%llx: L2 table 0x%llx overlaps "
                        "other metadata or data", (unsigned long long)i,
                        (unsigned long long)at, (unsigned long long)e);
            c->res->corruptions++;
        } else {
            r = qed_check_l2(c, e, &prev, err);
        }
        if (r < 0)
            return r;
    }
    return 0;
}

int qed_check(vd_image *img, unsigned flags, vd_check_result *res, vd_error *err)
{
    struct qed_state *s = img->priv;
    int r = qed_cache_writeback(img, err);
    if (r < 0)
        return r;
    r = qed_cache_reset(img, err);    /* repair may rewrite tables under the cache */
    if (r < 0)
        return r;
    int64_t fsize = vd_file_size(img->file, err);
    if (fsize < 0)
        return (int)fsize;
    struct qed_check_ctx c = {
        .img = img, .res = res, .file_size = (uint64_t)fsize,
        .nclusters = (uint64_t)fsize / s->cluster_size,
        .repair = (flags & VD_CHECK_REPAIR_ALL) && !img->readonly,
    };
    if (c.nclusters / 8 + 1 > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EFBIG, "qed: file too large to check (%llu clusters)",
                            (unsigned long long)c.nclusters);
    c.used = calloc(1, c.nclusters / 8 + 1);
    uint8_t *l1 = malloc(s->table_bytes);
    if (!c.used || !l1) {
        r = vd_set_error(err, -ENOMEM, "qed: out of memory for the check");
        goto out;
    }
    qed_mark_used(&c, 0, s->data_start);
    qed_mark_used(&c, s->l1_off, s->table_bytes);
    if ((r = vd_file_pread(img->file, l1, s->table_bytes, s->l1_off, err)) < 0 ||
        (r = qed_check_l1(&c, l1, err)) < 0)
        goto out;
    for (uint64_t i = s->header_size; i < c.nclusters; i++)
        if (!(c.used[i / 8] & (1u << (i % 8))))
            res->leaks++;
    if (res->leaks)
        qed_problem(res, "qed: %llu leaked clusters", (unsigned long long)res->leaks);
    res->total_clusters = (s->image_size + s->cluster_size - 1) / s->cluster_size;
    res->image_end_offset = (uint64_t)fsize;
    if (c.repair && res->corruptions == res->corruptions_fixed &&
        (s->features & QED_F_NEED_CHECK) && !s->flag_set) {
        s->features &= ~QED_F_NEED_CHECK;
        if ((r = qed_write_features(img, err)) == 0)
            r = vd_file_sync(img->file, err);
    }
out:
    free(c.used);
    free(l1);
    return r;
}
