/* create.c - creating VMDK images: each subformat's files, its descriptor
 * (new CID, parentCID of a delta's parent, adapter type, hardware version,
 * geometry) and, for sparse extents, the preallocated grain directory, its
 * redundant copy and all grain tables (the layout VMware and qemu use, so
 * that grains only ever need appending).
 *
 * Extent files are named after the descriptor: "disk.vmdk" gets
 * "disk-flat.vmdk", "disk-s001.vmdk", "disk-f001.vmdk" next to it. */
#include "vmdk.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

#define VMDK_GRAIN 128u                  /* sectors: 64 KiB grains */
#define VMDK_GTES 512u
#define VMDK_DESC_SECTORS 20u            /* room for the embedded descriptor */

const vd_opt_desc vmdk_create_opts[] = {
    { "subformat", "monolithicSparse (default), monolithicFlat, twoGbMaxExtentSparse, "
                   "twoGbMaxExtentFlat or streamOptimized" },
    { "adapter_type", "ide (default), lsilogic, buslogic, legacyESX or pvscsi" },
    { "hwversion", "virtual hardware version recorded in the descriptor (default 4)" },
    { "compat6", "on: hardware version 6 (same as hwversion=6)" },
    { "zeroed_grain", "on: sparse extents record zero grains without storing them" },
    { NULL, NULL },
};

uint32_t vmdk_new_cid(void)
{
    uint32_t c = 0;
    if (getrandom(&c, sizeof c, 0) != (ssize_t)sizeof c)
        c = (uint32_t)getpid() * 2654435761u ^ (uint32_t)(uintptr_t)&c;
    if (c == 0xffffffffu || c == 0xfffffffeu)
        c = 0x12345678u;
    return c;
}

struct vmdk_new {
    const char *path;
    uint64_t sectors;
    const char *subformat;
    const char *adapter;
    char hwversion[16];
    bool zeroed_grain;
    uint32_t parent_cid;
    const char *parent_hint;
    char *base;             /* path without ".vmdk": prefix of extent files */
    char *lines;            /* the extent lines of the descriptor */
    size_t lines_len;
};

/* Write a new sparse extent of `sectors`, embedding `desc` if not NULL.
 * The grains covering its first `zero_sectors` read as zeroes, not as a
 * backing file (a grow over a larger one): zero grains with the
 * zeroed-grain flag, else grains of its own after the tables, never
 * written (a hole). */
int vmdk_create_sparse(const char *path, uint64_t sectors, const char *desc,
                       bool zeroed_grain, uint64_t zero_sectors, vd_error *err)
{
    uint64_t grains = (sectors + VMDK_GRAIN - 1) / VMDK_GRAIN;
    uint64_t gt_n = (grains + VMDK_GTES - 1) / VMDK_GTES;
    uint64_t gt_sec = VMDK_GTES * 4 / VMDK_SECTOR;
    uint64_t gd_sec = (gt_n * 4 + VMDK_SECTOR - 1) / VMDK_SECTOR;
    struct vmdk_header h = {
        .version = zeroed_grain ? 2 : 1,
        .flags = VMDK_FLAG_NL_DETECT | VMDK_FLAG_RGD | (zeroed_grain ? VMDK_FLAG_ZERO_GRAIN : 0),
        .capacity = sectors, .grain = VMDK_GRAIN, .gtes = VMDK_GTES,
        .desc_off = desc ? 1 : 0, .desc_size = desc ? VMDK_DESC_SECTORS : 0,
    };
    h.rgd_off = 1 + h.desc_size;
    uint64_t rgt = h.rgd_off + gd_sec;
    h.gd_off = rgt + gt_n * gt_sec;
    uint64_t gt = h.gd_off + gd_sec;
    h.overhead = vd_round_up(gt + gt_n * gt_sec, VMDK_GRAIN);
    uint64_t zg = ((zero_sectors < sectors ? zero_sectors : sectors) + VMDK_GRAIN - 1) /
                  VMDK_GRAIN;
    if (h.overhead + grains * VMDK_GRAIN > UINT32_MAX)
        return vd_set_error(err, -EFBIG, "vmdk: %" PRIu64 " sectors are too many for one "
                            "sparse extent (use twoGbMaxExtentSparse)", sectors);
    if (desc && strlen(desc) > VMDK_DESC_SECTORS * VMDK_SECTOR)
        return vd_set_error(err, -EINVAL, "vmdk: descriptor too long to embed");
    /* the tables start out zero (a hole) unless some grains are set */
    size_t meta = (size_t)((zg ? h.overhead : gt) * VMDK_SECTOR);
    uint8_t *b = calloc(1, meta);
    if (!b)
        return vd_set_error(err, -ENOMEM, "out of memory");
    vmdk_header_encode(&h, b);
    if (desc)
        memcpy(b + VMDK_SECTOR, desc, strlen(desc));
    for (uint64_t i = 0; i < gt_n; i++) {
        vd_put_le32(b + h.rgd_off * VMDK_SECTOR + 4 * i, (uint32_t)(rgt + i * gt_sec));
        vd_put_le32(b + h.gd_off * VMDK_SECTOR + 4 * i, (uint32_t)(gt + i * gt_sec));
    }
    for (uint64_t g = 0; g < zg; g++) {   /* tables in order: entry g of both */
        uint32_t v = zeroed_grain ? VMDK_GTE_ZERO : (uint32_t)(h.overhead + g * VMDK_GRAIN);
        vd_put_le32(b + rgt * VMDK_SECTOR + 4 * g, v);
        vd_put_le32(b + gt * VMDK_SECTOR + 4 * g, v);
    }
    vd_file *f;
    int r = vd_file_create(path, &f, err);
    if (r == 0) {
        r = vd_file_pwrite(f, b, meta, 0, err);
        if (r == 0)
            r = vd_file_truncate(f, (h.overhead + (zeroed_grain ? 0 : zg * VMDK_GRAIN)) *
                                    VMDK_SECTOR, err);
        r = vd_file_create_finish(f, r, err);
    }
    free(b);
    return r;
}

static int vmdk_create_stream(const char *path, uint64_t sectors, const char *desc,
                              vd_error *err)
{
    size_t dlen = strlen(desc);
    struct vmdk_header h = {
        .version = 3,
        .flags = VMDK_FLAG_NL_DETECT | VMDK_FLAG_COMPRESSED | VMDK_FLAG_MARKERS,
        .capacity = sectors, .grain = VMDK_GRAIN, .gtes = VMDK_GTES,
        .desc_off = 1, .desc_size = (dlen + VMDK_SECTOR - 1) / VMDK_SECTOR,
        .gd_off = VMDK_GD_AT_END, .compress = 1,
    };
    h.overhead = vd_round_up(1 + h.desc_size, VMDK_GRAIN);
    uint64_t grains = (sectors + VMDK_GRAIN - 1) / VMDK_GRAIN;
    if ((grains + VMDK_GTES - 1) / VMDK_GTES * 4 > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EFBIG, "vmdk: disk too large for one streamOptimized file");
    size_t meta = (size_t)(h.overhead * VMDK_SECTOR);
    uint8_t *b = calloc(1, meta);
    if (!b)
        return vd_set_error(err, -ENOMEM, "out of memory");
    vmdk_header_encode(&h, b);
    memcpy(b + VMDK_SECTOR, desc, dlen);
    vd_file *f;
    int r = vd_file_create(path, &f, err);
    if (r == 0) {
        r = vd_file_create_finish(f, vd_file_pwrite(f, b, meta, 0, err), err);
    }
    free(b);
    return r;
}

int vmdk_create_flat(const char *path, uint64_t sectors, vd_error *err)
{
    vd_file *f;
    int r = vd_file_create(path, &f, err);
    if (r < 0)
        return r;
    r = vd_file_truncate(f, sectors * VMDK_SECTOR, err);
    if (r == 0)
        r = vd_file_sync(f, err);
    vd_file_close(f);
    return r;
}

static int vmdk_create_add_line(struct vmdk_new *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int vmdk_create_add_line(struct vmdk_new *n, const char *fmt, ...)
{
    char line[4352];
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= sizeof line)
        return -ENAMETOOLONG;
    char *p = realloc(n->lines, n->lines_len + (size_t)w + 1);
    if (!p)
        return -ENOMEM;
    memcpy(p + n->lines_len, line, (size_t)w + 1);
    n->lines = p;
    n->lines_len += (size_t)w;
    return 0;
}

static char *vmdk_create_desc(const struct vmdk_new *n, const char *create_type)
{
    struct vmdk_desc_params p = {
        .cid = vmdk_new_cid(), .parent_cid = n->parent_cid, .create_type = create_type,
        .parent_hint = n->parent_hint, .extent_lines = n->lines, .sectors = n->sectors,
        .adapter = n->adapter, .hwversion = n->hwversion,
    };
    return vmdk_desc_format(&p);
}

/* Write the descriptor file of a multi-file subformat. */
static int vmdk_create_desc_file(const struct vmdk_new *n, const char *create_type,
                                 vd_error *err)
{
    char *d = vmdk_create_desc(n, create_type);
    if (!d)
        return vd_set_error(err, -ENOMEM, "out of memory");
    vd_file *f;
    int r = vd_file_create(n->path, &f, err);
    if (r == 0) {
        r = vd_file_pwrite(f, d, strlen(d), 0, err);
        if (r == 0)
            r = vd_file_sync(f, err);
        vd_file_close(f);
    }
    free(d);
    return r;
}

/* Extent files of a split or flat disk; on failure the ones made are removed. */
static int vmdk_create_extents(struct vmdk_new *n, bool sparse, bool split, vd_error *err)
{
    uint64_t chunk = split ? VMDK_SPLIT_SECTORS : n->sectors;
    uint64_t left = n->sectors;
    unsigned idx = 0;
    int r = 0;
    char path[4096];
    do {
        uint64_t s = left < chunk ? left : chunk;
        idx++;
        if (split)
            snprintf(path, sizeof path, "%s-%c%03u.vmdk", n->base, sparse ? 's' : 'f', idx);
        else
            snprintf(path, sizeof path, "%s-flat.vmdk", n->base);
        r = sparse ? vmdk_create_sparse(path, s, NULL, n->zeroed_grain, 0, err)
                   : vmdk_create_flat(path, s, err);
        if (r == 0)
            r = vmdk_create_add_line(n, sparse ? "RW %" PRIu64 " SPARSE \"%s\"\n"
                                               : "RW %" PRIu64 " FLAT \"%s\" 0\n",
                                     s, strrchr(path, '/') ? strrchr(path, '/') + 1 : path);
        if (r == -ENAMETOOLONG || r == -ENOMEM)
            r = vd_set_error(err, r, "vmdk: extent name too long");
        left -= s;
    } while (r == 0 && left);
    if (r < 0) {
        for (unsigned i = 1; i <= idx; i++) {
            if (split)
                snprintf(path, sizeof path, "%s-%c%03u.vmdk", n->base, sparse ? 's' : 'f', i);
            else
                snprintf(path, sizeof path, "%s-flat.vmdk", n->base);
            unlink(path);
        }
    }
    return r;
}

static int vmdk_create_options(const struct vd_create_args *a, struct vmdk_new *n,
                               vd_error *err)
{
    const char *sub = vd_opt_str(a->opts, "subformat");
    const char *ad = vd_opt_str(a->opts, "adapter_type");
    const char *hw = vd_opt_str(a->opts, "hwversion");
    bool compat6 = false;
    int r = vd_opt_bool(a->opts, "compat6", false, &compat6, err);
    if (r == 0)
        r = vd_opt_bool(a->opts, "zeroed_grain", false, &n->zeroed_grain, err);
    if (r < 0)
        return r;
    n->subformat = sub ? sub : "monolithicSparse";
    static const char *const subs[] = { "monolithicSparse", "monolithicFlat",
        "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized", NULL };
    static const char *const ads[] = { "ide", "lsilogic", "buslogic", "legacyESX",
                                       "pvscsi", NULL };
    bool ok = false;
    for (const char *const *p = subs; *p; p++)
        ok |= !strcmp(*p, n->subformat);
    if (!ok)
        return vd_set_error(err, -EINVAL, "vmdk: subformat=%s: expected monolithicSparse, "
                            "monolithicFlat, twoGbMaxExtentSparse, twoGbMaxExtentFlat or "
                            "streamOptimized", n->subformat);
    n->adapter = ad ? ad : "ide";
    ok = false;
    for (const char *const *p = ads; *p; p++)
        ok |= !strcmp(*p, n->adapter);
    if (!ok)
        return vd_set_error(err, -EINVAL, "vmdk: adapter_type=%s: expected ide, lsilogic, "
                            "buslogic, legacyESX or pvscsi", n->adapter);
    if (hw && compat6)
        return vd_set_error(err, -EINVAL, "vmdk: give hwversion or compat6, not both");
    hw = hw ? hw : compat6 ? "6" : "4";
    size_t hl = strlen(hw);
    for (size_t i = 0; i < hl; i++)
        ok &= isdigit((unsigned char)hw[i]) != 0;
    if (!ok || hl == 0 || hl > 3)
        return vd_set_error(err, -EINVAL, "vmdk: hwversion=%s: expected a number", hw);
    snprintf(n->hwversion, sizeof n->hwversion, "%s", hw);
    if (a->size == 0 || a->size > VD_MAX_VIRTUAL_SIZE)
        return vd_set_error(err, -EINVAL, "vmdk: size %" PRIu64 " is not supported", a->size);
    n->sectors = (a->size + VMDK_SECTOR - 1) / VMDK_SECTOR;
    return 0;
}

/* A delta disk records its parent's CID. */
static int vmdk_create_parent(const struct vd_create_args *a, struct vmdk_new *n,
                              vd_error *err)
{
    n->parent_cid = 0xffffffffu;
    if (!a->backing_file)
        return 0;
    if (strcmp(n->subformat, "monolithicSparse") && strcmp(n->subformat,
                                                            "twoGbMaxExtentSparse"))
        return vd_set_error(err, -EINVAL, "vmdk: a delta disk (backing file) must be "
                            "monolithicSparse or twoGbMaxExtentSparse, not %s",
                            n->subformat);
    if (!a->backing || strcmp(vd_format_name(a->backing), "vmdk"))
        return vd_set_error(err, -EINVAL, "vmdk: the parent of a delta disk must be a "
                            "VMDK image");
    if (strchr(a->backing_file, '"') || strchr(a->backing_file, '\n'))
        return vd_set_error(err, -EINVAL, "vmdk: parent file name cannot hold quotes or "
                            "line breaks");
    n->parent_hint = a->backing_file;
    return vmdk_read_cid_of(vd_filename(a->backing), &n->parent_cid, err);
}

int vmdk_create(const struct vd_create_args *a, vd_error *err)
{
    struct vmdk_new n = { .path = a->path };
    int r = vmdk_create_options(a, &n, err);
    if (r == 0)
        r = vmdk_create_parent(a, &n, err);
    if (r < 0)
        return r;
    size_t pl = strlen(a->path);
    n.base = strdup(a->path);
    if (!n.base)
        return vd_set_error(err, -ENOMEM, "out of memory");
    if (pl > 5 && !strcmp(a->path + pl - 5, ".vmdk"))
        n.base[pl - 5] = 0;
    const char *self = strrchr(a->path, '/') ? strrchr(a->path, '/') + 1 : a->path;
    bool sparse = strstr(n.subformat, "Sparse") != NULL;
    bool stream = !strcmp(n.subformat, "streamOptimized");
    if (!strcmp(n.subformat, "monolithicSparse") || stream) {
        r = vmdk_create_add_line(&n, "RW %" PRIu64 " SPARSE \"%s\"\n", n.sectors, self);
        char *d = r == 0 ? vmdk_create_desc(&n, n.subformat) : NULL;
        if (!d)
            r = vd_set_error(err, -ENOMEM, "vmdk: cannot build the descriptor");
        else if (stream)
            r = vmdk_create_stream(a->path, n.sectors, d, err);
        else
            r = vmdk_create_sparse(a->path, n.sectors, d, n.zeroed_grain, 0, err);
        free(d);
    } else {
        bool split = !strncmp(n.subformat, "twoGb", 5);
        r = vmdk_create_extents(&n, sparse, split, err);
        if (r == 0)
            r = vmdk_create_desc_file(&n, n.subformat, err);
    }
    free(n.base);
    free(n.lines);
    return r;
}
