/* header.c - qcow2 header and header extensions: probe, parse, validate,
 * and the few in-place field updates the driver makes (refcount table move,
 * dirty bit, autoclear bits).
 *
 * Every field is checked before use: sizes against the file size and
 * VD_MAX_TABLE_BYTES, offsets for alignment, counts for overflow. */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>

int qcow2_probe(const uint8_t *head, size_t len, const uint8_t *tail, size_t tail_len,
                uint64_t file_size)
{
    (void)tail; (void)tail_len; (void)file_size;
    if (len < QCOW2_V2_HEADER_LEN || vd_be32(head) != QCOW2_MAGIC)
        return 0;
    uint32_t v = vd_be32(head + QH_VERSION);
    uint32_t cb = vd_be32(head + QH_CLUSTER_BITS);
    if ((v == 2 || v == 3) && cb >= 9 && cb <= 21)
        return 100;
    return 50;
}

int qcow2_check_table(qcow2_state *s, const char *what, uint64_t off, uint64_t bytes,
                      uint64_t file_size, vd_error *err)
{
    uint64_t end;
    if (off == 0 || qcow2_offset_in_cluster(s, off))
        return vd_set_error(err, -EINVAL, "qcow2: %s offset 0x%llx is not cluster aligned",
                            what, (unsigned long long)off);
    if (bytes > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EFBIG, "qcow2: %s of 0x%llx bytes is too large",
                            what, (unsigned long long)bytes);
    if (vd_add_overflow(off, bytes, &end) || end > file_size)
        return vd_set_error(err, -EINVAL,
                            "qcow2: %s at 0x%llx (0x%llx bytes) beyond end of file (size 0x%llx)",
                            what, (unsigned long long)off, (unsigned long long)bytes,
                            (unsigned long long)file_size);
    return 0;
}

/* The name qemu's feature table gives an incompatible bit, or NULL. */
static const char *qcow2_feature_name(const uint8_t *tab, uint32_t len, int bit,
                                      char *name, size_t cap)
{
    for (uint32_t i = 0; i + 48 <= len; i += 48) {
        if (tab[i] == 0 && tab[i + 1] == bit) {
            size_t n = strnlen((const char *)tab + i + 2, 46);
            if (n >= cap)
                n = cap - 1;
            memcpy(name, tab + i + 2, n);
            name[n] = 0;
            return name;
        }
    }
    return NULL;
}

static int qcow2_ext_string(const uint8_t *p, uint32_t len, char **out, vd_error *err)
{
    free(*out);
    *out = malloc(len + 1);
    if (!*out)
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    memcpy(*out, p, len);
    (*out)[len] = 0;
    if (strlen(*out) != len)
        return vd_set_error(err, -EINVAL, "qcow2: header extension string contains NUL");
    return 0;
}

/* Walk the header extensions in cluster 0 from `start` to `end`. */
static int qcow2_extensions(qcow2_state *s, vd_image *img, const uint8_t *c0,
                            uint64_t start, uint64_t end, const uint8_t **ftab,
                            uint32_t *ftab_len, vd_error *err)
{
    uint64_t p = start;
    while (p + 8 <= end) {
        uint32_t type = vd_be32(c0 + p), len = vd_be32(c0 + p + 4);
        p += 8;
        if (type == QEXT_END)
            return 0;
        if (len > end - p)
            return vd_set_error(err, -EINVAL,
                                "qcow2: header extension 0x%08x at 0x%llx: length %u past the header cluster",
                                type, (unsigned long long)(p - 8), len);
        const uint8_t *d = c0 + p;
        int r = 0;
        switch (type) {
        case QEXT_BACKING_FMT:
            r = qcow2_ext_string(d, len, &img->backing_format, err);
            break;
        case QEXT_DATA_FILE:
            r = qcow2_ext_string(d, len, &s->data_file_name, err);
            break;
        case QEXT_FEATURES:
            *ftab = d;
            *ftab_len = len;
            break;
        case QEXT_BITMAPS:
            if (len >= 24) {
                s->nb_bitmaps = vd_be32(d);
                s->bitmaps_size = vd_be64(d + 8);
                s->bitmaps_off = vd_be64(d + 16);
            }
            break;
        case QEXT_CRYPTO:
            return vd_set_error(err, -ENOTSUP, "qcow2: encrypted images are not supported");
        default:
            break;   /* unknown extensions are optional by definition */
        }
        if (r < 0)
            return r;
        p += vd_round_up(len, 8);
    }
    return 0;
}

static int qcow2_header_features(qcow2_state *s, const uint8_t *ftab, uint32_t ftab_len,
                                 vd_error *err)
{
    uint64_t unknown = s->incompat & ~QCOW2_INCOMPAT_KNOWN;
    if (unknown) {
        int bit = __builtin_ctzll(unknown);
        char name[48];
        const char *n = qcow2_feature_name(ftab, ftab_len, bit, name, sizeof name);
        return vd_set_error(err, -ENOTSUP,
                            "qcow2: unsupported incompatible feature bit %d%s%s%s (header offset 0x48)",
                            bit, n ? " (" : "", n ? n : "", n ? ")" : "");
    }
    if ((s->autoclear & QCOW2_AUTOCLEAR_DATA_RAW) && !(s->incompat & QCOW2_INCOMPAT_DATA_FILE))
        return vd_set_error(err, -EINVAL,
                            "qcow2: data-file-raw bit (autoclear 1, 0x58) set without an external data file");
    if ((s->incompat & QCOW2_INCOMPAT_DATA_FILE) && !s->data_file_name)
        return vd_set_error(err, -EINVAL,
                            "qcow2: external data file bit set but no data file name extension");
    return 0;
}

/* Fields of the first 104 bytes, validated. */
static int qcow2_header_fields(qcow2_state *s, const uint8_t *h, uint64_t file_size,
                               vd_error *err)
{
    s->version = vd_be32(h + QH_VERSION);
    if (s->version != 2 && s->version != 3)
        return vd_set_error(err, -ENOTSUP, "qcow2: version %u at 0x4 is not supported (2 or 3)",
                            s->version);
    s->cluster_bits = vd_be32(h + QH_CLUSTER_BITS);
    if (s->cluster_bits < 9 || s->cluster_bits > 21)
        return vd_set_error(err, -EINVAL, "qcow2: cluster_bits %u at 0x14 out of range 9..21",
                            s->cluster_bits);
    s->cluster_size = 1ull << s->cluster_bits;
    if (vd_be32(h + QH_CRYPT))
        return vd_set_error(err, -ENOTSUP, "qcow2: encrypted images (crypt_method %u) are not supported",
                            vd_be32(h + QH_CRYPT));
    if (s->version == 3) {
        s->incompat = vd_be64(h + QH_INCOMPAT);
        s->compat = vd_be64(h + QH_COMPAT);
        s->autoclear = vd_be64(h + QH_AUTOCLEAR);
        s->refcount_order = vd_be32(h + QH_REFCOUNT_ORDER);
        s->header_len = vd_be32(h + QH_HEADER_LEN);
        if (s->refcount_order > 6)
            return vd_set_error(err, -EINVAL, "qcow2: refcount_order %u at 0x60 out of range 0..6",
                                s->refcount_order);
        if (s->header_len < QCOW2_V3_HEADER_LEN || s->header_len > s->cluster_size)
            return vd_set_error(err, -EINVAL, "qcow2: header_length %u at 0x64 out of range",
                                s->header_len);
    } else {
        s->refcount_order = 4;
        s->header_len = QCOW2_V2_HEADER_LEN;
    }
    s->refcount_bits = 1u << s->refcount_order;
    s->rb_entries = s->cluster_size * 8 / s->refcount_bits;
    s->extl2 = s->incompat & QCOW2_INCOMPAT_EXTL2;
    if (s->extl2 && s->cluster_bits < 14)
        return vd_set_error(err, -EINVAL,
                            "qcow2: extended L2 needs clusters of 16 KiB or more (cluster_bits %u)",
                            s->cluster_bits);
    s->l2_entry_size = s->extl2 ? 16 : 8;
    s->l2_entries = s->cluster_size / s->l2_entry_size;
    s->sc_bits = s->cluster_bits - 5;
    uint64_t size = vd_be64(h + QH_SIZE);
    if (size > VD_MAX_VIRTUAL_SIZE)
        return vd_set_error(err, -EFBIG, "qcow2: virtual size 0x%llx at 0x18 too large",
                            (unsigned long long)size);
    s->img->size = size;
    s->l1_size = vd_be32(h + QH_L1_SIZE);
    s->l1_off = vd_be64(h + QH_L1_OFF);
    uint64_t per_l1 = s->cluster_size * s->l2_entries;
    uint64_t need = (size + per_l1 - 1) / per_l1;
    if (s->l1_size < need)
        return vd_set_error(err, -EINVAL,
                            "qcow2: L1 table size %u at 0x24 too small for virtual size 0x%llx (need %llu)",
                            s->l1_size, (unsigned long long)size, (unsigned long long)need);
    int r;
    if (s->l1_size &&
        (r = qcow2_check_table(s, "L1 table", s->l1_off, (uint64_t)s->l1_size * 8,
                               file_size, err)) < 0)
        return r;
    s->rt_off = vd_be64(h + QH_RT_OFF);
    s->rt_clusters = vd_be32(h + QH_RT_CLUSTERS);
    if (s->rt_clusters == 0)
        return vd_set_error(err, -EINVAL, "qcow2: refcount table has 0 clusters (0x38)");
    if ((r = qcow2_check_table(s, "refcount table", s->rt_off,
                               (uint64_t)s->rt_clusters << s->cluster_bits, file_size, err)) < 0)
        return r;
    s->nb_snapshots = vd_be32(h + QH_NB_SNAPSHOTS);
    s->snapshots_off = vd_be64(h + QH_SNAPSHOTS_OFF);
    if (s->snapshots_off && qcow2_offset_in_cluster(s, s->snapshots_off))
        return vd_set_error(err, -EINVAL, "qcow2: snapshot table offset 0x%llx (0x40) not cluster aligned",
                            (unsigned long long)s->snapshots_off);
    if (s->nb_snapshots > 65536)
        return vd_set_error(err, -EINVAL, "qcow2: %u snapshots at 0x3c: too many", s->nb_snapshots);
    s->compression = QCOW2_COMPRESS_ZLIB;
    if (s->header_len > QH_COMPRESSION)
        s->compression = h[QH_COMPRESSION];
    bool bit = s->incompat & QCOW2_INCOMPAT_COMPRESS;
    if (s->compression > QCOW2_COMPRESS_ZSTD)
        return vd_set_error(err, -ENOTSUP, "qcow2: compression type %d at 0x68 unknown",
                            s->compression);
    if (bit != (s->compression != QCOW2_COMPRESS_ZLIB))
        return vd_set_error(err, -EINVAL,
                            "qcow2: compression type %d at 0x68 disagrees with incompatible bit 3",
                            s->compression);
    return 0;
}

int qcow2_header_read(qcow2_state *s, vd_image *img, vd_error *err)
{
    uint8_t h[QCOW2_V3_HEADER_LEN + 8];
    int64_t fsz = vd_file_size(s->file, err);
    if (fsz < 0)
        return (int)fsz;
    if ((uint64_t)fsz < QCOW2_V2_HEADER_LEN)
        return vd_set_error(err, -EINVAL, "qcow2: file of %lld bytes is shorter than a header",
                            (long long)fsz);
    int r = vd_file_pread_zfill(s->file, h, sizeof h, 0, err);
    if (r < 0)
        return r;
    if (vd_be32(h) != QCOW2_MAGIC)
        return vd_set_error(err, -EINVAL, "qcow2: bad magic at 0x0");
    if ((r = qcow2_header_fields(s, h, (uint64_t)fsz, err)) < 0)
        return r;
    uint8_t *c0 = malloc(s->cluster_size);
    if (!c0)
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    r = vd_file_pread_zfill(s->file, c0, s->cluster_size, 0, err);
    uint64_t boff = vd_be64(h + QH_BACKING_OFF);
    uint32_t blen = vd_be32(h + QH_BACKING_SIZE);
    uint64_t ext_end = s->cluster_size;
    if (r == 0 && boff) {
        /* blen is checked against the cluster size first: with 512-byte
         * clusters, cluster_size - blen would wrap (found by fuzzing). */
        if (blen == 0 || blen > 1023 || blen > s->cluster_size ||
            boff > s->cluster_size - blen || boff < s->header_len)
            r = vd_set_error(err, -EINVAL,
                             "qcow2: backing file name at 0x%llx (%u bytes) outside the header cluster",
                             (unsigned long long)boff, blen);
        else {
            s->backing_off = boff;
            s->backing_len = blen;
            r = qcow2_ext_string(c0 + boff, blen, &img->backing_file, err);
            ext_end = boff;
        }
    }
    const uint8_t *ftab = NULL;
    uint32_t ftab_len = 0;
    if (r == 0)
        r = qcow2_extensions(s, img, c0, s->header_len, ext_end, &ftab, &ftab_len, err);
    if (r == 0)
        r = qcow2_header_features(s, ftab, ftab_len, err);
    free(c0);
    return r;
}

int qcow2_header_write_u64(qcow2_state *s, uint32_t field, uint64_t v, vd_error *err)
{
    uint8_t b[8];
    vd_put_be64(b, v);
    return vd_file_pwrite(s->file, b, 8, field, err);
}

int qcow2_header_write_rt(qcow2_state *s, vd_error *err)
{
    uint8_t b[12];
    vd_put_be64(b, s->rt_off);
    vd_put_be32(b + 8, s->rt_clusters);
    return vd_file_pwrite(s->file, b, 12, QH_RT_OFF, err);
}

int qcow2_header_set_incompat(qcow2_state *s, uint64_t incompat, vd_error *err)
{
    if (s->version < 3)
        return 0;
    int r = qcow2_header_write_u64(s, QH_INCOMPAT, incompat, err);
    if (r == 0)
        s->incompat = incompat;
    return r;
}

/* Copy the header extensions of cluster 0 (from `p` to `end`) into `out`
 * at *o; the backing format's too unless `drop_bfmt`. */
static int qcow2_copy_exts(const uint8_t *c0, uint64_t p, uint64_t end, bool drop_bfmt,
                           uint8_t *out, uint64_t *o, uint64_t cap, vd_error *err)
{
    while (p + 8 <= end) {
        uint32_t type = vd_be32(c0 + p), len = vd_be32(c0 + p + 4);
        if (type == QEXT_END)
            return 0;
        uint64_t total = 8 + vd_round_up(len, 8);
        if (len > end - p - 8 || total > end - p)
            return vd_set_error(err, -EINVAL, "qcow2: header extension at 0x%llx overruns the header",
                                (unsigned long long)p);
        if (type != QEXT_BACKING_FMT || !drop_bfmt) {
            if (*o + total > cap)
                return vd_set_error(err, -ENOSPC, "qcow2: header extensions do not fit the header cluster");
            memcpy(out + *o, c0 + p, total);
            *o += total;
        }
        p += total;
    }
    return 0;
}

int qcow2_header_build(qcow2_state *s, uint32_t hdr_len, bool set_backing, const char *file,
                       const char *fmt, uint8_t **outp, uint64_t *write_len, vd_error *err)
{
    uint64_t cs = s->cluster_size;
    uint8_t *c0 = malloc(cs), *out = calloc(1, cs);
    *outp = NULL;
    if (!c0 || !out) {
        free(c0);
        free(out);
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    }
    int r = vd_file_pread_zfill(s->file, c0, cs, 0, err);
    /* the name as it is to be */
    char *keep = NULL;
    if (!set_backing && s->backing_len) {
        if (!(keep = malloc(s->backing_len + 1)))
            r = vd_set_error(err, -ENOMEM, "qcow2: out of memory");
        else {
            memcpy(keep, c0 + s->backing_off, s->backing_len);
            keep[s->backing_len] = 0;
            file = keep;
        }
    }
    size_t flen = file ? strlen(file) : 0, fmtlen = set_backing && file && fmt ? strlen(fmt) : 0;
    if (r == 0 && flen > 1023)
        r = vd_set_error(err, -EINVAL, "qcow2: backing file name longer than 1023 bytes");
    uint64_t o = hdr_len, old_end = s->backing_off ? s->backing_off + s->backing_len : 0;
    if (r == 0) {
        memcpy(out, c0, hdr_len < s->header_len ? hdr_len : s->header_len);
        r = qcow2_copy_exts(c0, s->header_len, s->backing_off ? s->backing_off : cs, set_backing,
                            out, &o, cs, err);
    }
    if (r == 0 && fmtlen) {
        if (o + 8 + vd_round_up(fmtlen, 8) > cs)
            r = vd_set_error(err, -ENOSPC, "qcow2: backing format does not fit the header cluster");
        else {
            vd_put_be32(out + o, QEXT_BACKING_FMT);
            vd_put_be32(out + o + 4, (uint32_t)fmtlen);
            memcpy(out + o + 8, fmt, fmtlen);
            o += 8 + vd_round_up(fmtlen, 8);
        }
    }
    o += 8;                                   /* end of extensions: zeroes */
    if (r == 0 && o + flen > cs)
        r = vd_set_error(err, -ENOSPC, "qcow2: backing file name does not fit the header cluster");
    if (r == 0) {
        memcpy(out + o, file ? file : "", flen);
        vd_put_be64(out + QH_BACKING_OFF, flen ? o : 0);
        vd_put_be32(out + QH_BACKING_SIZE, (uint32_t)flen);
        uint64_t end = o + flen > old_end ? o + flen : old_end;
        /* a v2 header followed by nothing needs no extension area */
        *write_len = vd_round_up(end, 512) < cs ? vd_round_up(end, 512) : cs;
        *outp = out;
        out = NULL;
    }
    free(keep);
    free(c0);
    free(out);
    return r;
}
