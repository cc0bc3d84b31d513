/* amend.c - qcow2 options changed in place (qemu-img amend): compat level
 * (0.10 = version 2, 1.1 = version 3), lazy refcounts, refcount width.
 *
 * Steps run in qemu's order: upgrade, refcount width, lazy refcounts,
 * downgrade.  Every value and every reason to refuse a downgrade is checked
 * before the first write.  Crash ordering (docs/flush.md):
 *  - upgrade: snapshot entries get the 16 bytes of extra data version 3
 *    requires (a new snapshot table, switched by one header write; a v2
 *    image may carry them too), then the header cluster is rebuilt as
 *    version 3 and written with one write.
 *  - lazy refcounts: one 8-byte write of the compatible features.  A dirty
 *    image was repaired when it was opened read-write (qcow2_open_rw).
 *  - refcount width: a new refcount table and blocks are written past the
 *    end of everything in use and synced (the old structures still count
 *    those clusters as free); one write inside the first sector switches
 *    the table offset, its size and the refcount order together; then the
 *    old table and blocks are freed.  A crash before the switch leaves
 *    unreferenced clusters past the end, after it leaks the old structures.
 *  - downgrade: zero clusters are expanded (data written before its L2
 *    entry changes; the image reads the same at every step), then the header cluster is
 *    rebuilt as version 2 and written with one write. */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>

const vd_opt_desc qcow2_amend_opts[] = {
    { "compat", "0.10 (or v2) / 1.1 (or v3): the qcow2 version" },
    { "lazy_refcounts", "on/off: postpone refcount updates (needs compat=1.1)" },
    { "refcount_bits", "width of a refcount entry: 1, 2, 4, ... 64 (other than 16 needs compat=1.1)" },
    { NULL, NULL },
};

#define QCOW2_V3_HEADER_WRITTEN 112   /* 104 + compression type, padded (as qemu) */

typedef struct qcow2_amend_req {
    uint32_t version;         /* wanted version */
    int lazy;                 /* -1 unchanged, 0 off, 1 on */
    uint32_t order;           /* wanted refcount order */
    vd_progress_fn progress;
    void *ctx;
    unsigned phase, phases;   /* progress: steps that report, this one */
} qcow2_amend_req;

static void qcow2_amend_progress(qcow2_amend_req *q, uint64_t done, uint64_t total)
{
    if (q->progress && total)
        q->progress(q->ctx, q->phase * 10000 + done * 10000 / total, (uint64_t)q->phases * 10000);
}

static int qcow2_amend_parse(qcow2_state *s, vd_kvlist *kv, qcow2_amend_req *q, vd_error *err)
{
    const char *v = vd_opt_str(kv, "compat");
    q->version = s->version;
    if (v && (!strcmp(v, "0.10") || !strcmp(v, "v2")))
        q->version = 2;
    else if (v && (!strcmp(v, "1.1") || !strcmp(v, "v3")))
        q->version = 3;
    else if (v)
        return vd_set_error(err, -EINVAL, "Unknown compatibility level %s", v);
    q->lazy = -1;
    if ((v = vd_opt_str(kv, "lazy_refcounts"))) {
        if (!strcmp(v, "on") || !strcmp(v, "yes") || !strcmp(v, "true"))
            q->lazy = 1;
        else if (!strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "false"))
            q->lazy = 0;
        else
            return vd_set_error(err, -EINVAL, "Parameter 'lazy_refcounts' expects 'on' or 'off'");
    }
    q->order = s->refcount_order;
    bool width_given = false;
    if ((v = vd_opt_str(kv, "refcount_bits"))) {
        char *end;
        unsigned long long bits = strtoull(v, &end, 0);
        if (end == v || *end || *v == '-')
            return vd_set_error(err, -EINVAL, "Parameter 'refcount_bits' expects a number");
        if (bits == 0 || bits > 64 || (bits & (bits - 1)))
            return vd_set_error(err, -EINVAL,
                                "Refcount width must be a power of two and may not exceed 64 bits");
        q->order = (uint32_t)__builtin_ctzll(bits);
        width_given = true;
    }
    /* qemu-img's reasons, in its order */
    if (q->version < 3 && q->lazy == 1)
        return vd_set_error(err, -EINVAL, "Lazy refcounts only supported with compatibility level "
                            "1.1 and above (use compat=1.1 or greater)");
    if (q->version < 3 && width_given && q->order != 4)
        return vd_set_error(err, -EINVAL, "Refcount widths other than 16 bits require compatibility "
                            "level 1.1 or above (use compat=1.1 or greater)");
    if (q->version < 3 && q->order != 4)
        return vd_set_error(err, -ENOTSUP, "compat=0.10 requires refcount_bits=16");
    return 0;
}

/* Does any L2 table that `l1` (n entries) references hold a compressed
 * cluster? */
static int qcow2_amend_scan(qcow2_state *s, const uint64_t *l1, uint32_t n, bool *comp,
                            vd_error *err)
{
    for (uint32_t i = 0; i < n; i++) {
        int r = qcow2_l2_validate_l1(s, l1[i], i, err);
        uint64_t l2off = l1[i] & QCOW2_OFFSET_MASK;
        if (r < 0)
            return r;
        if (!l2off)
            continue;
        uint8_t *d;
        size_t slot;
        if ((r = vd_mcache_get(&s->l2c, l2off, &d, &slot, true, err)) < 0)
            return r;
        for (uint64_t k = 0; k < s->l2_entries; k++) {
            qcow2_entry e;
            qcow2_decode_l2(s, vd_be64(d + k * s->l2_entry_size), 0, &e);
            *comp |= e.kind == QCOW2_COMPRESSED;
        }
    }
    return 0;
}

/* What a downgrade cannot carry into version 2, checked before any write. */
static int qcow2_amend_downgrade_check(qcow2_state *s, vd_error *err)
{
    if (s->incompat & QCOW2_INCOMPAT_DATA_FILE)
        return vd_set_error(err, -ENOTSUP, "Cannot downgrade an image with a data file");
    uint64_t other = s->incompat & ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_COMPRESS);
    if (other)
        return vd_set_error(err, -ENOTSUP, "Cannot downgrade an image with incompatible features 0x%llx set",
                            (unsigned long long)other);
    bool comp = false;
    int r = qcow2_amend_scan(s, s->l1, s->l1_size, &comp, err);
    for (uint32_t i = 0; r == 0 && i < s->nb_snapshots; i++) {
        uint64_t *l1;
        if ((r = qcow2_l1_load(s, s->snaps[i].l1_off, s->snaps[i].l1_size, &l1, err)) < 0)
            break;
        r = qcow2_amend_scan(s, l1, s->snaps[i].l1_size, &comp, err);
        free(l1);
    }
    if (r == 0 && s->compression == QCOW2_COMPRESS_ZSTD && comp)
        r = vd_set_error(err, -ENOTSUP, "Cannot downgrade an image with zstd compression type and "
                         "existing compressed clusters");
    return r;
}

/* Version 2 has no zero flag: in every L2 table of the active state and of
 * the snapshots, a zero cluster with a host cluster gets zeroes written
 * there; one without becomes unallocated, or, over a backing file, a new
 * cluster of zeroes.  An L2 table is edited where it is (shared ones too:
 * the change keeps every view that uses it), and a new cluster gets the
 * table's refcount.  Data reaches the file before the L2 entry. */
static int qcow2_amend_expand_l2(qcow2_state *s, uint64_t l2off, const uint8_t *zeroes,
                                 vd_error *err)
{
    uint64_t l2rc = 1;
    uint8_t *d;
    size_t slot;
    int r = qcow2_refcount_get(s, l2off >> s->cluster_bits, &l2rc, err);
    for (uint64_t k = 0; r == 0 && k < s->l2_entries; k++) {
        if ((r = vd_mcache_get(&s->l2c, l2off, &d, &slot, true, err)) < 0)
            break;
        uint64_t raw = vd_be64(d + k * 8);
        qcow2_entry e;
        qcow2_decode_l2(s, raw, 0, &e);
        if (e.kind != QCOW2_ZERO)
            continue;
        uint64_t host = e.host, ent = 0;
        if (!host && s->img->backing_file) {
            qcow2_alloc_rewind(s);
            if ((r = qcow2_alloc_clusters(s, 1, &host, err)) == 0 && l2rc > 1)
                r = qcow2_refcount_set(s, host >> s->cluster_bits, l2rc, err);
            if (r == 0)
                ent = host | (l2rc == 1 ? QCOW2_OFLAG_COPIED : 0);
        } else if (host) {
            ent = raw & ~QCOW2_OFLAG_ZERO;
        }
        if (r == 0 && host)
            r = vd_file_pwrite(s->file, zeroes, s->cluster_size, host, err);
        /* the slot may have been reused by the allocation */
        if (r == 0 && (r = vd_mcache_get(&s->l2c, l2off, &d, &slot, true, err)) == 0) {
            vd_put_be64(d + k * 8, ent);
            vd_mcache_mark_dirty(&s->l2c, slot, 0);
        }
    }
    return r;
}

static int qcow2_amend_expand_zero(qcow2_state *s, qcow2_amend_req *q, vd_error *err)
{
    uint8_t *zeroes = calloc(1, s->cluster_size);
    if (!zeroes)
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    int r = 0;
    for (uint32_t t = 0; r == 0 && t <= s->nb_snapshots; t++) {
        uint64_t *l1 = s->l1;
        uint32_t n = s->l1_size;
        qcow2_amend_progress(q, t, s->nb_snapshots + 1);
        if (t < s->nb_snapshots) {
            n = s->snaps[t].l1_size;
            if ((r = qcow2_l1_load(s, s->snaps[t].l1_off, n, &l1, err)) < 0)
                break;
        }
        for (uint32_t i = 0; r == 0 && i < n; i++) {
            if ((r = qcow2_l2_validate_l1(s, l1[i], i, err)) == 0 && (l1[i] & QCOW2_OFFSET_MASK))
                r = qcow2_amend_expand_l2(s, l1[i] & QCOW2_OFFSET_MASK, zeroes, err);
        }
        if (l1 != s->l1)
            free(l1);
    }
    free(zeroes);
    return r == 0 ? qcow2_settle(s, err) : r;
}

/* Rewrite the header cluster as version `version` (one write). */
static int qcow2_amend_header(qcow2_state *s, uint32_t version, vd_error *err)
{
    uint32_t len = version == 3 ? QCOW2_V3_HEADER_WRITTEN : QCOW2_V2_HEADER_LEN;
    uint8_t *h;
    uint64_t wlen;
    int r = qcow2_settle(s, err);
    if (r == 0)
        r = qcow2_header_build(s, len, false, NULL, NULL, &h, &wlen, err);
    if (r < 0)
        return r;
    vd_put_be32(h + QH_VERSION, version);
    if (version == 3) {
        /* nothing v3-only in use yet: no feature bits, 16-bit refcounts,
         * zlib */
        vd_put_be64(h + QH_INCOMPAT, 0);
        vd_put_be64(h + QH_COMPAT, 0);
        vd_put_be64(h + QH_AUTOCLEAR, 0);
        vd_put_be32(h + QH_REFCOUNT_ORDER, 4);
        vd_put_be32(h + QH_HEADER_LEN, len);
        memset(h + QH_COMPRESSION, 0, len - QH_COMPRESSION);
    }
    r = vd_file_pwrite(s->file, h, wlen, 0, err);
    if (r == 0)
        r = vd_file_sync(s->file, err);
    if (r == 0) {
        s->version = version;
        s->header_len = len;
        s->incompat = s->compat = s->autoclear = 0;
        s->compression = QCOW2_COMPRESS_ZLIB;
        s->backing_off = vd_be64(h + QH_BACKING_OFF);
        s->backing_len = vd_be32(h + QH_BACKING_SIZE);
    }
    free(h);
    return r;
}

/* Version 3 wants 16 bytes of extra data per snapshot (VM state size and
 * disk size). */
static int qcow2_amend_snapshot_extra(qcow2_state *s, vd_error *err)
{
    bool need = false;
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        need |= s->snaps[i].extra_len < 16;
    if (!need)
        return 0;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        qcow2_snapshot *sn = &s->snaps[i];
        if (sn->extra_len >= 16)
            continue;
        uint8_t *x = calloc(1, 16);
        if (!x)
            return vd_set_error(err, -ENOMEM, "qcow2: out of memory");
        vd_put_be64(x, sn->vm_state_size);
        vd_put_be64(x + 8, sn->disk_size);
        free(sn->extra);
        sn->extra = x;
        sn->extra_len = 16;
    }
    qcow2_snapshot *copy = malloc(s->nb_snapshots * sizeof *copy);
    if (!copy)
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    memcpy(copy, s->snaps, s->nb_snapshots * sizeof *copy);
    int r = qcow2_snap_table_replace(s, copy, s->nb_snapshots, err);
    return r == 0 ? qcow2_settle(s, err) : r;
}

static int qcow2_amend_lazy(qcow2_state *s, bool on, vd_error *err)
{
    uint64_t compat = on ? s->compat | QCOW2_COMPAT_LAZY : s->compat & ~QCOW2_COMPAT_LAZY;
    if (compat == s->compat)
        return 0;
    int r = qcow2_header_write_u64(s, QH_COMPAT, compat, err);
    if (r == 0)
        r = vd_file_sync(s->file, err);
    if (r == 0)
        s->compat = compat;
    return r;
}

/* Clusters [0, *end) hold every nonzero refcount and the file; fails when
 * one does not fit `order` (qemu-img's message). */
static int qcow2_reorder_scan(qcow2_state *s, uint32_t order, uint64_t *end, vd_error *err)
{
    int64_t fsz = vd_file_size(s->file, err);
    if (fsz < 0)
        return (int)fsz;
    uint64_t max = order == 6 ? UINT64_MAX : (1ull << (1u << order)) - 1;
    *end = vd_round_up((uint64_t)fsz, s->cluster_size) >> s->cluster_bits;
    for (uint64_t bi = 0; bi < s->rt_entries; bi++) {
        if (!(s->rt[bi] & ~0x1ffull))
            continue;
        for (uint64_t c = bi * s->rb_entries; c < (bi + 1) * s->rb_entries; c++) {
            uint64_t v;
            int r = qcow2_refcount_get(s, c, &v, err);
            if (r < 0)
                return r;
            if (v > max)
                return vd_set_error(err, -EINVAL, "Cannot decrease refcount entry width to %u bits: "
                                    "Cluster at offset %#llx has a refcount of %llu", 1u << order,
                                    (unsigned long long)(c << s->cluster_bits), (unsigned long long)v);
            if (v && c >= *end)
                *end = c + 1;
        }
    }
    return 0;
}

/* Replace the refcount structures by ones `order` wide (see the top). */
static int qcow2_refcount_reorder(qcow2_state *s, uint32_t order, qcow2_amend_req *q,
                                  vd_error *err)
{
    uint64_t p = 0, cs = s->cluster_size;
    int r = qcow2_settle(s, err);
    if (r == 0)
        r = qcow2_reorder_scan(s, order, &p, err);
    if (r < 0)
        return r;
    /* Layout past p: the table, then the blocks; they cover themselves. */
    uint64_t rbe = cs * 8 >> order, nb = 0, rtc = 0;
    for (;;) {
        uint64_t t = p + rtc + nb, nnb = (t + rbe - 1) / rbe;
        uint64_t nrtc = vd_round_up(nnb * 8, cs) / cs;
        if (nnb == nb && nrtc == rtc)
            break;
        nb = nnb;
        rtc = nrtc;
    }
    if ((rtc << s->cluster_bits) > VD_MAX_TABLE_BYTES || rtc > UINT32_MAX)
        return vd_set_error(err, -EFBIG, "qcow2: refcount table would exceed %llu bytes",
                            (unsigned long long)VD_MAX_TABLE_BYTES);
    uint64_t entries = (rtc << s->cluster_bits) / 8, t = p + rtc + nb;
    uint64_t *nt = calloc(entries, 8);
    uint8_t *blk = malloc(cs), *raw = malloc(rtc << s->cluster_bits);
    if (!nt || !blk || !raw)
        r = vd_set_error(err, -ENOMEM, "qcow2: out of memory for the new refcount structures");
    for (uint64_t i = 0; r == 0 && i < nb; i++) {
        qcow2_amend_progress(q, i, nb + 2);
        memset(blk, 0, cs);
        for (uint64_t k = 0, c = i * rbe; r == 0 && k < rbe && c < t; k++, c++) {
            uint64_t v = 1;                       /* the new structures */
            if (c < p)
                r = qcow2_refcount_get(s, c, &v, err);
            qcow2_rc_set_packed(blk, k, order, v);
        }
        nt[i] = (p + rtc + i) << s->cluster_bits;
        if (r == 0)
            r = vd_file_pwrite(s->file, blk, cs, nt[i], err);
    }
    for (uint64_t i = 0; r == 0 && i < entries; i++)
        vd_put_be64(raw + i * 8, nt[i]);
    if (r == 0)
        r = vd_file_pwrite(s->file, raw, rtc << s->cluster_bits, p << s->cluster_bits, err);
    if (r == 0)
        r = vd_file_sync(s->file, err);
    /* The switch: table offset and clusters (0x30..0x3b) and the refcount
     * order (0x60), in one write inside the first sector. */
    uint8_t h[QH_HEADER_LEN - QH_RT_OFF];
    if (r == 0)
        r = vd_file_pread(s->file, h, sizeof h, QH_RT_OFF, err);
    if (r == 0) {
        vd_put_be64(h, p << s->cluster_bits);
        vd_put_be32(h + (QH_RT_CLUSTERS - QH_RT_OFF), (uint32_t)rtc);
        vd_put_be32(h + (QH_REFCOUNT_ORDER - QH_RT_OFF), order);
        r = vd_file_pwrite(s->file, h, sizeof h, QH_RT_OFF, err);
    }
    if (r == 0)
        r = vd_file_sync(s->file, err);
    if (r < 0) {
        free(nt);
        free(blk);
        free(raw);
        return r;
    }
    qcow2_amend_progress(q, nb + 1, nb + 2);
    /* The old structures are plain clusters of the new one now: free them. */
    uint64_t *old = s->rt, old_n = s->rt_entries, old_off = s->rt_off;
    uint32_t old_clusters = s->rt_clusters;
    vd_mcache_drop(&s->rbc, UINT64_MAX);
    s->rt = nt;
    s->rt_entries = entries;
    s->rt_off = p << s->cluster_bits;
    s->rt_clusters = (uint32_t)rtc;
    s->refcount_order = order;
    s->refcount_bits = 1u << order;
    s->rb_entries = rbe;
    s->alloc_next = t << s->cluster_bits;
    for (uint64_t i = 0; r == 0 && i < old_n; i++)
        if (old[i] & ~0x1ffull)
            r = qcow2_refcount_update(s, old[i] & ~0x1ffull, cs, -1, err);
    if (r == 0)
        r = qcow2_refcount_update(s, old_off, (uint64_t)old_clusters << s->cluster_bits, -1, err);
    free(old);
    free(blk);
    free(raw);
    return r == 0 ? qcow2_settle(s, err) : r;
}

int qcow2_amend(vd_image *img, vd_kvlist *kv, vd_progress_fn progress, void *ctx, vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    qcow2_amend_req q = { .progress = progress, .ctx = ctx };
    if (s->l1_is_snapshot)
        return vd_set_error(err, -EROFS, "qcow2: a loaded snapshot cannot be amended");
    int r = qcow2_amend_parse(s, kv, &q, err);
    if (r == 0 && q.version < s->version)
        r = qcow2_amend_downgrade_check(s, err);
    if (r < 0)
        return r;
    bool width = q.order != s->refcount_order, down = q.version < s->version;
    q.phases = width + down ? width + down : 1;
    if (q.version > s->version && (r = qcow2_amend_snapshot_extra(s, err)) == 0)
        r = qcow2_amend_header(s, q.version, err);
    if (r == 0 && width) {
        r = qcow2_refcount_reorder(s, q.order, &q, err);
        q.phase++;
    }
    if (r == 0 && q.lazy >= 0 && s->version >= 3)
        r = qcow2_amend_lazy(s, q.lazy, err);
    if (r == 0 && down && (r = qcow2_amend_expand_zero(s, &q, err)) == 0)
        r = qcow2_amend_header(s, q.version, err);
    if (r == 0 && progress)
        progress(ctx, (uint64_t)q.phases * 10000, (uint64_t)q.phases * 10000);
    return r;
}
