/* create.c - new qcow2 images.
 *
 * Layout, as qemu-img lays it out: cluster 0 header (+ extensions + backing
 * name), then the refcount table, the refcount blocks, the L1 table, and with
 * preallocation=metadata every L2 table followed by the (sparse) data
 * clusters they point at.  The sizes of the refcount structures depend on the
 * total, which includes them: computed to a fixed point. */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

const vd_opt_desc qcow2_create_opts[] = {
    { "compat", "0.10 (qcow2 v2) or 1.1 (v3, default)" },
    { "cluster_size", "512 .. 2M, a power of two (default 64K)" },
    { "refcount_bits", "1, 2, 4, 8, 16 (default), 32 or 64 (v3 only unless 16)" },
    { "lazy_refcounts", "on/off: mark the image lazy-refcounts capable (v3)" },
    { "compression_type", "zlib (default) or zstd (v3) for compressed clusters" },
    { "extended_l2", "on/off: 32 subclusters per cluster (v3, clusters >= 16K)" },
    { "preallocation", "off (default) or metadata (all L2 tables and data clusters)" },
    { "backing_file", "backing file name to store (usually given with -b)" },
    { "backing_fmt", "format of the backing file to store (usually -F)" },
    { NULL, NULL },
};

typedef struct qcow2_layout {
    uint64_t cs;
    uint32_t cbits, order;
    uint64_t rb_entries, l2_entries;
    uint64_t l1_size, l1c, rtc, nrb, nl2, ndata, total;
    uint64_t rt_at, rb_at, l1_at, l2_at, data_at;   /* cluster indexes */
} qcow2_layout;

static int qcow2_layout_compute(qcow2_layout *L, uint64_t size, bool prealloc, vd_error *err)
{
    uint64_t per_l1 = L->cs * L->l2_entries;
    L->l1_size = (size + per_l1 - 1) / per_l1;
    if (L->l1_size * 8 > VD_MAX_TABLE_BYTES || L->l1_size > UINT32_MAX)
        return vd_set_error(err, -EFBIG, "qcow2: L1 table for 0x%llx bytes would be too large",
                            (unsigned long long)size);
    L->l1c = L->l1_size ? vd_round_up(L->l1_size * 8, L->cs) / L->cs : 1;
    L->nl2 = prealloc ? L->l1_size : 0;
    L->ndata = prealloc ? (size + L->cs - 1) / L->cs : 0;
    L->nrb = 1;
    L->rtc = 1;
    for (;;) {
        L->total = 1 + L->rtc + L->nrb + L->l1c + L->nl2 + L->ndata;
        uint64_t nrb = (L->total + L->rb_entries - 1) / L->rb_entries;
        uint64_t rtc = vd_round_up(nrb * 8, L->cs) / L->cs;
        if (nrb == L->nrb && rtc == L->rtc)
            break;
        L->nrb = nrb > L->nrb ? nrb : L->nrb;
        L->rtc = rtc > L->rtc ? rtc : L->rtc;
    }
    if (L->rtc * L->cs > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EFBIG, "qcow2: refcount table would be too large");
    L->rt_at = 1;
    L->rb_at = L->rt_at + L->rtc;
    L->l1_at = L->rb_at + L->nrb;
    L->l2_at = L->l1_at + L->l1c;
    L->data_at = L->l2_at + L->nl2;
    return 0;
}

typedef struct qcow2_create_params {
    bool v3, lazy, extl2, prealloc;
    uint64_t cs;
    uint32_t order;
    int compression;
    const char *backing, *backing_fmt;
} qcow2_create_params;

static int qcow2_create_parse(const struct vd_create_args *a, qcow2_create_params *p,
                              vd_error *err)
{
    const char *compat = vd_opt_str(a->opts, "compat");
    const char *ct = vd_opt_str(a->opts, "compression_type");
    const char *pre = vd_opt_str(a->opts, "preallocation");
    uint64_t rb;
    int r;
    memset(p, 0, sizeof *p);
    p->v3 = true;
    if (compat && (!strcmp(compat, "0.10") || !strcmp(compat, "v2")))
        p->v3 = false;
    else if (compat && strcmp(compat, "1.1") && strcmp(compat, "v3"))
        return vd_set_error(err, -EINVAL, "qcow2: compat=%s: expected 0.10 or 1.1", compat);
    if ((r = vd_opt_size(a->opts, "cluster_size", 65536, &p->cs, err)) < 0 ||
        (r = vd_opt_uint(a->opts, "refcount_bits", 16, &rb, err)) < 0 ||
        (r = vd_opt_bool(a->opts, "lazy_refcounts", false, &p->lazy, err)) < 0 ||
        (r = vd_opt_bool(a->opts, "extended_l2", false, &p->extl2, err)) < 0)
        return r;
    if (!vd_is_pow2(p->cs) || p->cs < 512 || p->cs > (2u << 20))
        return vd_set_error(err, -EINVAL, "qcow2: cluster_size %llu: a power of two from 512 to 2M",
                            (unsigned long long)p->cs);
    if (!vd_is_pow2(rb) || rb > 64)
        return vd_set_error(err, -EINVAL, "qcow2: refcount_bits %llu: a power of two up to 64",
                            (unsigned long long)rb);
    p->order = (uint32_t)__builtin_ctzll(rb);
    p->compression = QCOW2_COMPRESS_ZLIB;
    if (ct && !strcmp(ct, "zstd"))
        p->compression = QCOW2_COMPRESS_ZSTD;
    else if (ct && strcmp(ct, "zlib"))
        return vd_set_error(err, -EINVAL, "qcow2: compression_type=%s: expected zlib or zstd", ct);
    if (pre && !strcmp(pre, "metadata"))
        p->prealloc = true;
    else if (pre && strcmp(pre, "off"))
        return vd_set_error(err, -EINVAL, "qcow2: preallocation=%s: expected off or metadata", pre);
    if (!p->v3 && (rb != 16 || p->lazy || p->extl2 || p->compression))
        return vd_set_error(err, -EINVAL,
                            "qcow2: refcount_bits other than 16, lazy_refcounts, extended_l2 and zstd need compat=1.1");
    if (p->extl2 && p->cs < 16384)
        return vd_set_error(err, -EINVAL, "qcow2: extended_l2 needs cluster_size of 16K or more");
    p->backing = a->backing_file ? a->backing_file : vd_opt_str(a->opts, "backing_file");
    p->backing_fmt = vd_opt_str(a->opts, "backing_fmt");
    if (!p->backing_fmt)
        p->backing_fmt = a->backing_format;
    if (p->backing && (!*p->backing || strlen(p->backing) > 1023))
        return vd_set_error(err, -EINVAL, "qcow2: backing file name must be 1..1023 bytes");
    return 0;
}

/* Cluster 0: header, extensions, backing file name. */
static int qcow2_create_header(const qcow2_create_params *p, const qcow2_layout *L,
                               uint64_t size, uint8_t *c0, vd_error *err)
{
    uint32_t hlen = p->v3 ? 112 : QCOW2_V2_HEADER_LEN;
    vd_put_be32(c0, QCOW2_MAGIC);
    vd_put_be32(c0 + QH_VERSION, p->v3 ? 3 : 2);
    vd_put_be32(c0 + QH_CLUSTER_BITS, L->cbits);
    vd_put_be64(c0 + QH_SIZE, size);
    vd_put_be32(c0 + QH_L1_SIZE, (uint32_t)L->l1_size);
    vd_put_be64(c0 + QH_L1_OFF, L->l1_at * L->cs);
    vd_put_be64(c0 + QH_RT_OFF, L->rt_at * L->cs);
    vd_put_be32(c0 + QH_RT_CLUSTERS, (uint32_t)L->rtc);
    if (p->v3) {
        uint64_t inc = (p->compression ? QCOW2_INCOMPAT_COMPRESS : 0) |
                       (p->extl2 ? QCOW2_INCOMPAT_EXTL2 : 0);
        vd_put_be64(c0 + QH_INCOMPAT, inc);
        vd_put_be64(c0 + QH_COMPAT, p->lazy ? QCOW2_COMPAT_LAZY : 0);
        vd_put_be32(c0 + QH_REFCOUNT_ORDER, L->order);
        vd_put_be32(c0 + QH_HEADER_LEN, hlen);
        c0[QH_COMPRESSION] = (uint8_t)p->compression;
    }
    uint64_t pos = hlen;
    if (p->backing_fmt && p->backing) {
        size_t n = strlen(p->backing_fmt);
        if (pos + 16 + vd_round_up(n, 8) > L->cs)
            return vd_set_error(err, -EINVAL, "qcow2: backing format name does not fit the header");
        vd_put_be32(c0 + pos, QEXT_BACKING_FMT);
        vd_put_be32(c0 + pos + 4, (uint32_t)n);
        memcpy(c0 + pos + 8, p->backing_fmt, n);
        pos += 8 + vd_round_up(n, 8);
    }
    pos += 8;   /* end-of-extensions marker: zeroes */
    if (p->backing) {
        size_t n = strlen(p->backing);
        if (pos + n > L->cs)
            return vd_set_error(err, -EINVAL, "qcow2: backing file name does not fit a %llu-byte cluster",
                                (unsigned long long)L->cs);
        memcpy(c0 + pos, p->backing, n);
        vd_put_be64(c0 + QH_BACKING_OFF, pos);
        vd_put_be32(c0 + QH_BACKING_SIZE, (uint32_t)n);
    }
    return 0;
}

/* Refcount table, blocks (refcount 1 for clusters 0..total-1), L1 and the
 * preallocated L2 tables, written one cluster at a time. */
static int qcow2_create_tables(vd_file *f, const qcow2_create_params *p, const qcow2_layout *L,
                               uint8_t *buf, vd_error *err)
{
    int r = 0;
    uint64_t cs = L->cs, per = cs / 8;
    for (uint64_t c = 0; r == 0 && c < L->rtc; c++) {
        memset(buf, 0, cs);
        for (uint64_t i = 0; i < per && c * per + i < L->nrb; i++)
            vd_put_be64(buf + i * 8, (L->rb_at + c * per + i) * cs);
        r = vd_file_pwrite(f, buf, cs, (L->rt_at + c) * cs, err);
    }
    for (uint64_t b = 0; r == 0 && b < L->nrb; b++) {
        memset(buf, 0, cs);
        for (uint64_t i = 0; i < L->rb_entries && b * L->rb_entries + i < L->total; i++)
            qcow2_rc_set_packed(buf, i, L->order, 1);
        r = vd_file_pwrite(f, buf, cs, (L->rb_at + b) * cs, err);
    }
    for (uint64_t c = 0; r == 0 && c < L->l1c; c++) {
        memset(buf, 0, cs);
        for (uint64_t i = 0; p->prealloc && i < per && c * per + i < L->l1_size; i++)
            vd_put_be64(buf + i * 8, ((L->l2_at + c * per + i) * cs) | QCOW2_OFLAG_COPIED);
        r = vd_file_pwrite(f, buf, cs, (L->l1_at + c) * cs, err);
    }
    uint32_t es = p->extl2 ? 16 : 8;
    for (uint64_t t = 0; r == 0 && t < L->nl2; t++) {
        memset(buf, 0, cs);
        for (uint64_t i = 0; i < L->l2_entries; i++) {
            uint64_t g = t * L->l2_entries + i;
            if (g >= L->ndata)
                break;
            vd_put_be64(buf + i * es, ((L->data_at + g) * cs) | QCOW2_OFLAG_COPIED);
            if (p->extl2)   /* allocated subclusters of a sparse file read zero */
                vd_put_be64(buf + i * es + 8, UINT32_MAX);
        }
        r = vd_file_pwrite(f, buf, cs, (L->l2_at + t) * cs, err);
    }
    return r;
}

int qcow2_create(const struct vd_create_args *a, vd_error *err)
{
    qcow2_create_params p;
    int r = qcow2_create_parse(a, &p, err);
    if (r < 0)
        return r;
    uint64_t size = vd_round_up(a->size, 512);
    if (size > VD_MAX_VIRTUAL_SIZE)
        return vd_set_error(err, -EFBIG, "qcow2: size 0x%llx too large", (unsigned long long)size);
    qcow2_layout L = { .cs = p.cs, .cbits = (uint32_t)__builtin_ctzll(p.cs), .order = p.order };
    L.rb_entries = p.cs * 8 >> p.order;
    L.l2_entries = p.cs / (p.extl2 ? 16 : 8);
    if ((r = qcow2_layout_compute(&L, size, p.prealloc, err)) < 0)
        return r;
    uint8_t *buf = calloc(1, p.cs);
    if (!buf)
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    if ((r = qcow2_create_header(&p, &L, size, buf, err)) < 0) {
        free(buf);
        return r;
    }
    vd_file *f;
    if ((r = vd_file_create(a->path, &f, err)) < 0) {
        free(buf);
        return r;
    }
    r = vd_file_pwrite(f, buf, p.cs, 0, err);
    if (r == 0)
        r = qcow2_create_tables(f, &p, &L, buf, err);
    if (r == 0)
        r = vd_file_truncate(f, L.total * p.cs, err);
    free(buf);
    return vd_file_create_finish(f, r, err);
}
