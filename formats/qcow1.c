/* qcow1.c - QCOW version 1 (qemu's original copy-on-write format), read-only.
 *
 * A 48-byte big-endian header, an L1 table of 64-bit offsets to L2 tables of
 * 2^l2_bits entries, each the file offset of a cluster of 2^cluster_bits
 * bytes.  An entry of 0 is unallocated (read the backing file).  Bit 63 marks
 * a compressed cluster: the bits below the size field hold its file offset,
 * the field above them its byte length, and the data is a raw deflate stream
 * that inflates to exactly one cluster.  AES-encrypted images are refused:
 * the scheme is broken (qemu refuses to create them) and we hold no key.
 * The backing file name is stored without a format, so the core probes it.
 */
#include "vd-driver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

#define QCOW1_MAGIC        0x514649fbu     /* "QFI\xfb" */
#define QCOW1_VERSION      1
#define QCOW1_HEADER_LEN   48
#define QCOW1_COMPRESSED   (1ull << 63)
#define QCOW1_CRYPT_AES    1
#define QCOW1_MAX_BACKING  1023u            /* qemu's limit */
#define QCOW1_L2_CACHE     8

enum {
    QCOW1_H_MAGIC = 0, QCOW1_H_VERSION = 4, QCOW1_H_BF_OFF = 8, QCOW1_H_BF_LEN = 16,
    QCOW1_H_MTIME = 20, QCOW1_H_SIZE = 24, QCOW1_H_CLUSTER_BITS = 32,
    QCOW1_H_L2_BITS = 33, QCOW1_H_CRYPT = 36, QCOW1_H_L1 = 40,
};

/* A cached L2 table as lookups see it: big-endian entries, valid until the
 * next table is asked for. */
struct qcow1_l2 {
    uint64_t off;
    const uint8_t *b;
};

static uint64_t qcow1_e(const struct qcow1_l2 *t, uint64_t i)
{
    return t ? vd_be64(t->b + i * 8) : 0;
}

struct qcow1_state {
    uint32_t cluster_bits, l2_bits, cluster_size;
    uint64_t l2_entries, span;     /* entries per L2, guest bytes per L2 */
    uint64_t offset_mask;          /* compressed entry: offset bits */
    uint64_t l1_off, l1_n, *l1;
    uint64_t file_size;
    vd_mcache l2c;                 /* QCOW1_L2_CACHE tables */
    uint64_t zc_entry;             /* L2 entry of the cluster in zc, 0 none */
    uint8_t *zc, *zin;             /* inflated cluster, compressed input */
};

static int qcow1_probe(const uint8_t *head, size_t len, const uint8_t *tail,
                       size_t tail_len, uint64_t file_size)
{
    (void)tail; (void)tail_len; (void)file_size;
    if (len < QCOW1_HEADER_LEN || vd_be32(head + QCOW1_H_MAGIC) != QCOW1_MAGIC ||
        vd_be32(head + QCOW1_H_VERSION) != QCOW1_VERSION)
        return 0;
    uint8_t cb = head[QCOW1_H_CLUSTER_BITS], lb = head[QCOW1_H_L2_BITS];
    return cb >= 9 && cb <= 16 && lb >= 6 && lb <= 13 ? 100 : 50;
}

/* ---- tables -------------------------------------------------------------- */

/* The L2 table mapping guest offset `off` in *view, *out = view, or
 * *out = NULL when it is unallocated. */
static int qcow1_l2_get(vd_image *img, uint64_t off, struct qcow1_l2 *view,
                        struct qcow1_l2 **out, vd_error *err)
{
    struct qcow1_state *s = img->priv;
    uint64_t i = off / s->span;
    uint64_t l2_off = s->l1[i], end;
    *out = NULL;
    if (!l2_off)
        return 0;
    if (vd_add_overflow(l2_off, s->l2c.table_bytes, &end) || end > s->file_size)
        return vd_set_error(err, -EINVAL, "qcow: L1 entry %llu at 0x%llx: L2 table at 0x%llx "
                            "is past end of file (size 0x%llx)", (unsigned long long)i,
                            (unsigned long long)(s->l1_off + i * 8),
                            (unsigned long long)l2_off, (unsigned long long)s->file_size);
    uint8_t *b;
    size_t slot;
    int r = vd_mcache_get(&s->l2c, l2_off, &b, &slot, true, err);
    if (r < 0)
        return r;
    *view = (struct qcow1_l2){ .off = l2_off, .b = b };
    *out = view;
    return 0;
}

/* The L2 entry for guest offset `off`: *e, 0 when its table is unallocated
 * (*t NULL), at index *idx of table *t (in *view). */
static int qcow1_lookup(vd_image *img, uint64_t off, struct qcow1_l2 *view, struct qcow1_l2 **t,
                        uint64_t *idx, uint64_t *e, vd_error *err)
{
    struct qcow1_state *s = img->priv;
    int r = qcow1_l2_get(img, off, view, t, err);
    *idx = off % s->span >> s->cluster_bits;
    *e = r == 0 ? qcow1_e(*t, *idx) : 0;
    return r;
}

/* Length of the run from entry `idx` that reads the same way: unallocated,
 * or file-contiguous plain clusters (compressed ones are single). */
static uint64_t qcow1_run(const struct qcow1_state *s, const struct qcow1_l2 *t,
                          uint64_t idx, uint64_t in, uint64_t max)
{
    uint64_t e = qcow1_e(t, idx);
    uint64_t len = s->cluster_size - in;
    if (e & QCOW1_COMPRESSED)
        return len < max ? len : max;
    for (uint64_t j = idx + 1; len < max && j < s->l2_entries; j++) {
        uint64_t f = qcow1_e(t, j);
        if (e ? f != e + (j - idx) * s->cluster_size : f != 0)
            break;
        len += s->cluster_size;
    }
    return len < max ? len : max;
}

/* ---- data ---------------------------------------------------------------- */

static int qcow1_inflate(vd_image *img, uint64_t e, uint64_t l2_at, vd_error *err)
{
    struct qcow1_state *s = img->priv;
    if (s->zc_entry == e)
        return 0;
    uint64_t off = e & s->offset_mask;
    uint64_t len = (e >> (63 - s->cluster_bits)) & (s->cluster_size - 1);
    uint64_t end;
    if (vd_add_overflow(off, len, &end) || end > s->file_size)
        return vd_set_error(err, -EINVAL, "qcow: L2 entry at 0x%llx: compressed cluster at "
                            "0x%llx (%llu bytes) is past end of file",
                            (unsigned long long)l2_at, (unsigned long long)off,
                            (unsigned long long)len);
    int r = vd_file_pread(img->file, s->zin, (size_t)len, off, err);
    if (r < 0)
        return r;
    s->zc_entry = 0;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, -12) != Z_OK)       /* raw deflate, 4 KiB window */
        return vd_set_error(err, -ENOMEM, "qcow: inflateInit2 failed");
    z.next_in = s->zin;
    z.avail_in = (uInt)len;
    z.next_out = s->zc;
    z.avail_out = s->cluster_size;
    int zr = inflate(&z, Z_FINISH);
    uint64_t got = z.total_out;
    inflateEnd(&z);
    /* qemu accepts a stream that fills the cluster without an end marker. */
    if ((zr != Z_STREAM_END && zr != Z_BUF_ERROR && zr != Z_OK) || got != s->cluster_size)
        return vd_set_error(err, -EINVAL, "qcow: L2 entry at 0x%llx: compressed cluster at "
                            "0x%llx (%llu bytes) does not inflate to %u bytes",
                            (unsigned long long)l2_at, (unsigned long long)off,
                            (unsigned long long)len, s->cluster_size);
    s->zc_entry = e;
    return 0;
}

static int qcow1_check_plain(const struct qcow1_state *s, uint64_t e, uint64_t l2_at,
                             vd_error *err)
{
    if (e >= s->file_size)
        return vd_set_error(err, -EINVAL, "qcow: L2 entry at 0x%llx points past end of file "
                            "(0x%llx, size 0x%llx)", (unsigned long long)l2_at,
                            (unsigned long long)e, (unsigned long long)s->file_size);
    return 0;
}

/* What the bytes at `off` are: a run of like entries in one L2 table. */
static int qcow1_map(vd_image *img, uint64_t off, uint64_t max, struct vd_map *m,
                     vd_error *err)
{
    struct qcow1_state *s = img->priv;
    struct qcow1_l2 tv, *t;
    uint64_t idx, e;
    int r = qcow1_lookup(img, off, &tv, &t, &idx, &e, err);
    if (r < 0)
        return r;
    m->in = off & (s->cluster_size - 1);
    m->n = qcow1_run(s, t, idx, m->in, max);
    m->entry = e;
    m->entry_at = t ? t->off + idx * 8 : 0;
    m->file_off = e + m->in;
    m->kind = !e ? VD_MAP_BACKING : e & QCOW1_COMPRESSED ? VD_MAP_COMPRESSED : VD_MAP_DATA;
    return m->kind == VD_MAP_DATA ? qcow1_check_plain(s, e, m->entry_at, err) : 0;
}

static int qcow1_read_compressed(vd_image *img, const struct vd_map *m, uint8_t *p,
                                 vd_error *err)
{
    struct qcow1_state *s = img->priv;
    int r = qcow1_inflate(img, m->entry, m->entry_at, err);
    if (r == 0)
        memcpy(p, s->zc + m->in, m->n);
    return r;
}

static const struct vd_mapper qcow1_mapper = { qcow1_map, qcow1_read_compressed };

static int qcow1_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err)
{
    return vd_map_pread(img, buf, len, off, &qcow1_mapper, err);
}

static int qcow1_block_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                              vd_error *err)
{
    struct qcow1_state *s = img->priv;
    return vd_map_block_status(img, off, len, s->span, ext, &qcow1_mapper, err);
}

/* ---- open ---------------------------------------------------------------- */

static int qcow1_parse_header(vd_image *img, struct qcow1_state *s, const uint8_t *h,
                              vd_error *err)
{
    if (vd_be32(h + QCOW1_H_MAGIC) != QCOW1_MAGIC)
        return vd_set_error(err, -EINVAL, "qcow: bad magic at 0x0");
    if (vd_be32(h + QCOW1_H_VERSION) != QCOW1_VERSION)
        return vd_set_error(err, -ENOTSUP, "qcow: version %u at 0x4 is not 1",
                            vd_be32(h + QCOW1_H_VERSION));
    uint32_t crypt = vd_be32(h + QCOW1_H_CRYPT);
    if (crypt == QCOW1_CRYPT_AES)
        return vd_set_error(err, -ENOTSUP, "qcow: image is AES-encrypted (crypt_method 1 at "
                            "0x24); encrypted QCOW images are not supported");
    if (crypt)
        return vd_set_error(err, -EINVAL, "qcow: unknown crypt_method %u at 0x24", crypt);
    s->cluster_bits = h[QCOW1_H_CLUSTER_BITS];
    s->l2_bits = h[QCOW1_H_L2_BITS];
    if (s->cluster_bits < 9 || s->cluster_bits > 16)
        return vd_set_error(err, -EINVAL, "qcow: cluster_bits %u at 0x20 is not 9..16",
                            s->cluster_bits);
    if (s->l2_bits < 6 || s->l2_bits > 13)
        return vd_set_error(err, -EINVAL, "qcow: l2_bits %u at 0x21 is not 6..13",
                            s->l2_bits);
    s->cluster_size = 1u << s->cluster_bits;
    s->l2_entries = 1ull << s->l2_bits;
    s->span = s->l2_entries << s->cluster_bits;
    s->offset_mask = (1ull << (63 - s->cluster_bits)) - 1;
    uint64_t size = vd_be64(h + QCOW1_H_SIZE);
    if (size > VD_MAX_VIRTUAL_SIZE)
        return vd_set_error(err, -EFBIG, "qcow: size 0x%llx at 0x18 is too large",
                            (unsigned long long)size);
    /* qemu counts whole 512-byte sectors; the L1 table covers the full size. */
    img->size = size / 512 * 512;
    img->cluster_size = s->cluster_size;
    s->l1_n = (size + s->span - 1) / s->span;
    s->l1_off = vd_be64(h + QCOW1_H_L1);
    uint64_t end;
    if (s->l1_n * 8 > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EFBIG, "qcow: L1 table of %llu entries exceeds the limit",
                            (unsigned long long)s->l1_n);
    if (vd_add_overflow(s->l1_off, s->l1_n * 8, &end) || end > s->file_size)
        return vd_set_error(err, -EINVAL, "qcow: L1 table at 0x%llx (0x%llx bytes, header "
                            "offset 0x28) is past end of file (size 0x%llx)",
                            (unsigned long long)s->l1_off, (unsigned long long)(s->l1_n * 8),
                            (unsigned long long)s->file_size);
    return 0;
}

static int qcow1_read_backing_name(vd_image *img, struct qcow1_state *s, const uint8_t *h,
                                   vd_error *err)
{
    uint64_t off = vd_be64(h + QCOW1_H_BF_OFF), end;
    uint32_t len = vd_be32(h + QCOW1_H_BF_LEN);
    if (!off || !len)
        return 0;
    if (len > QCOW1_MAX_BACKING || vd_add_overflow(off, len, &end) || end > s->file_size)
        return vd_set_error(err, -EINVAL, "qcow: backing file name at 0x%llx (%u bytes, "
                            "header offset 0x8) is too long or past end of file",
                            (unsigned long long)off, len);
    return vd_file_read_string(img->file, off, len, "qcow: backing file name",
                               &img->backing_file, err);
}

static void qcow1_free(struct qcow1_state *s)
{
    if (!s)
        return;
    vd_mcache_free(&s->l2c);
    free(s->l1);
    free(s->zc);
    free(s->zin);
    free(s);
}

static int qcow1_open(vd_image *img, vd_error *err)
{
    uint8_t h[QCOW1_HEADER_LEN];
    uint64_t fsize;
    int r = vd_file_read_header(img->file, h, sizeof h, "qcow", &fsize, err);
    if (r < 0)
        return r;
    struct qcow1_state *s = calloc(1, sizeof *s);
    if (!s)
        return vd_set_error(err, -ENOMEM, "out of memory");
    img->priv = s;
    s->file_size = fsize;
    if ((r = qcow1_parse_header(img, s, h, err)) < 0 ||
        (r = qcow1_read_backing_name(img, s, h, err)) < 0)
        goto fail;
    s->l1 = malloc(s->l1_n ? s->l1_n * 8 : 1);
    s->zc = malloc(s->cluster_size);
    s->zin = malloc(s->cluster_size);
    if (!s->l1 || !s->zc || !s->zin ||
        vd_mcache_init(&s->l2c, img->file, s->l2_entries * 8, 0, QCOW1_L2_CACHE,
                       QCOW1_L2_CACHE, "L2 table") < 0) {
        r = vd_set_error(err, -ENOMEM, "out of memory");
        goto fail;
    }
    if ((r = vd_file_pread(img->file, s->l1, s->l1_n * 8, s->l1_off, err)) < 0)
        goto fail;
    for (uint64_t i = 0; i < s->l1_n; i++)
        s->l1[i] = vd_be64(&s->l1[i]);
    return 0;
fail:
    qcow1_free(s);
    img->priv = NULL;
    return r;
}

static void qcow1_close(vd_image *img)
{
    qcow1_free(img->priv);
    img->priv = NULL;
}

static void qcow1_details(vd_image *img, vd_kv_fn fn, void *ctx)
{
    struct qcow1_state *s = img->priv;
    char v[32];
    snprintf(v, sizeof v, "%u", s->cluster_size);
    fn(ctx, "cluster_size", v);
    snprintf(v, sizeof v, "%llu", (unsigned long long)s->l2_entries);
    fn(ctx, "l2_entries", v);
}

/* Allocated data is stored plainly in the image file (zero-copy reads). */
static vd_file *qcow1_data_file(vd_image *img)
{
    return img->file;
}

static const char *const qcow1_extensions[] = { "qcow", NULL };

const struct vd_driver vd_qcow1 = {
    .name = "qcow",
    .description = "QEMU copy-on-write v1 (read-only)",
    .extensions = qcow1_extensions,
    .probe = qcow1_probe,
    .align = 1,
    .open = qcow1_open,
    .close = qcow1_close,
    .pread = qcow1_pread,
    .block_status = qcow1_block_status,
    .data_file = qcow1_data_file,
    .details = qcow1_details,
    .can_write = VD_CAN_NONE,
};
