/* parallels.c - Parallels HDD expanding images (.hds, .hdd) and the entry
 * point for .hdd bundle folders (parallels-xml.c).
 *
 * An expanding image is a 64-byte header, a BAT (catalog) of 32-bit entries
 * right after it, and data clusters.  Two signatures exist: the original
 * "WithoutFreeSpace" (v1), whose BAT entries count 512-byte sectors and
 * whose size field is 32 bits wide, and "WithouFreSpacExt" (v2), whose BAT
 * entries count clusters and whose size is 64 bits.  A zero entry is an
 * unallocated cluster (reads as zeroes).  The in-use field holds "Ynot"
 * while a writer has the image open: such an image was not closed cleanly,
 * so we open it read-only only.  A writer sets it on open and clears it on
 * close, as Parallels and qemu do.
 *
 * A "Plain" image is raw data; it only exists inside a bundle, where
 * DiskDescriptor.xml says so (alone it probes as raw).
 *
 * We create v2 expanding images (cluster_size option, default 1 MiB), the
 * layout qemu-img writes. */
#include "parallels.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define PRL_MAGIC_V1 "WithoutFreeSpace"
#define PRL_MAGIC_V2 "WithouFreSpacExt"
#define PRL_HEADER_SIZE 64u
#define PRL_VERSION 2u
#define PRL_DEFAULT_CLUSTER (1u << 20)
#define PRL_MAX_CLUSTER (256u << 20)   /* a write allocates one in memory */

enum {
    PRL_O_MAGIC = 0, PRL_O_VERSION = 16, PRL_O_HEADS = 20, PRL_O_CYLS = 24,
    PRL_O_TRACKS = 28, PRL_O_BAT_ENTRIES = 32, PRL_O_NB_SECTORS = 36,
    PRL_O_INUSE = 44, PRL_O_DATA_OFF = 48, PRL_O_FLAGS = 52, PRL_O_EXT_OFF = 56,
};

struct parallels_state {
    struct parallels_file pf;
    struct parallels_bundle *bundle;   /* when opened through DiskDescriptor.xml */
    bool marked_inuse;
    bool needs_repair;    /* opened read-write with the in-use flag already set */
    /* BAT entries of new clusters not yet written: [bat_lo, bat_hi).  They
     * reach the file at the next flush, after a sync of the clusters they
     * name (a disk's cache could keep an entry written with its data and lose
     * the data: an entry past the end of the file, an image that no longer
     * opens). */
    uint32_t bat_lo, bat_hi;
};

static int parallels_probe(const uint8_t *head, size_t len, const uint8_t *tail,
                           size_t tail_len, uint64_t file_size)
{
    (void)tail; (void)tail_len; (void)file_size;
    if (len >= PRL_HEADER_SIZE && (!memcmp(head, PRL_MAGIC_V1, 16) ||
                                   !memcmp(head, PRL_MAGIC_V2, 16)))
        return vd_le32(head + PRL_O_VERSION) == PRL_VERSION ? 100 : 50;
    return parallels_xml_probe(head, len) ? 100 : 0;
}

/* ---- one image file ---------------------------------------------------- */

static int parallels_check_header(struct parallels_file *pf, const uint8_t *h, vd_error *err)
{
    uint32_t tracks = vd_le32(h + PRL_O_TRACKS);
    uint64_t sectors = vd_le64(h + PRL_O_NB_SECTORS);
    pf->ext_magic = !memcmp(h, PRL_MAGIC_V2, 16);
    if (memcmp(h, PRL_MAGIC_V1, 16) && !pf->ext_magic)
        return vd_set_error(err, -EINVAL, "parallels: no WithoutFreeSpace/WithouFreSpacExt "
                            "signature at 0x0");
    pf->version = vd_le32(h + PRL_O_VERSION);
    if (pf->version != PRL_VERSION)
        return vd_set_error(err, -ENOTSUP, "parallels: version %u at 0x%x is not 2",
                            pf->version, PRL_O_VERSION);
    if (tracks == 0 || (uint64_t)tracks * 512 > PRL_MAX_CLUSTER)
        return vd_set_error(err, -EINVAL, "parallels: cluster of %u sectors at 0x%x: expected "
                            "1..%u", tracks, PRL_O_TRACKS, PRL_MAX_CLUSTER / 512);
    if (!pf->ext_magic)
        sectors &= 0xffffffffu;    /* v1 stores 32 bits; the rest is other data */
    if (sectors > VD_MAX_VIRTUAL_SIZE / 512)
        return vd_set_error(err, -EFBIG, "parallels: %llu sectors at 0x%x is too large",
                            (unsigned long long)sectors, PRL_O_NB_SECTORS);
    pf->bat_entries = vd_le32(h + PRL_O_BAT_ENTRIES);
    if ((uint64_t)pf->bat_entries * 4 > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EFBIG, "parallels: %u BAT entries at 0x%x: BAT larger than "
                            "%llu bytes", pf->bat_entries, PRL_O_BAT_ENTRIES,
                            (unsigned long long)VD_MAX_TABLE_BYTES);
    pf->size = sectors * 512;
    pf->cluster_size = (uint64_t)tracks * 512;
    pf->unit = pf->ext_magic ? pf->cluster_size : 512;
    pf->heads = vd_le32(h + PRL_O_HEADS);
    pf->cylinders = vd_le32(h + PRL_O_CYLS);
    pf->inuse = vd_le32(h + PRL_O_INUSE);
    pf->data_off = vd_le32(h + PRL_O_DATA_OFF);
    pf->flags = vd_le32(h + PRL_O_FLAGS);
    pf->ext_off = vd_le64(h + PRL_O_EXT_OFF);
    if (PRL_HEADER_SIZE + (uint64_t)pf->bat_entries * 4 > pf->file_size)
        return vd_set_error(err, -EINVAL, "parallels: BAT of %u entries at 0x40 runs past end "
                            "of file (size 0x%llx)", pf->bat_entries,
                            (unsigned long long)pf->file_size);
    return 0;
}

/* Check every BAT entry and find where new clusters can go. */
static int parallels_check_bat(struct parallels_file *pf, vd_error *err)
{
    uint64_t bat_end = PRL_HEADER_SIZE + (uint64_t)pf->bat_entries * 4;
    uint64_t end = pf->file_size > bat_end ? pf->file_size : bat_end;
    if ((uint64_t)pf->data_off * 512 > end)
        end = (uint64_t)pf->data_off * 512;
    for (uint32_t i = 0; i < pf->bat_entries; i++) {
        uint32_t e = le32toh(pf->bat[i]);
        pf->bat[i] = e;
        if (!e)
            continue;
        uint64_t off = (uint64_t)e * pf->unit;
        if (off < bat_end || off >= pf->file_size)
            return vd_set_error(err, -EINVAL, "parallels: BAT entry %u at 0x%llx points %s "
                                "(0x%llx, file size 0x%llx)", i,
                                (unsigned long long)(PRL_HEADER_SIZE + (uint64_t)i * 4),
                                off < bat_end ? "into the header/BAT" : "past end of file",
                                (unsigned long long)off, (unsigned long long)pf->file_size);
        if (off + pf->cluster_size > end)
            end = off + pf->cluster_size;
    }
    pf->next_alloc = vd_round_up(end, pf->unit);
    return 0;
}

int parallels_file_load(struct parallels_file *pf, vd_file *f, vd_error *err)
{
    uint8_t h[PRL_HEADER_SIZE];
    memset(pf, 0, sizeof *pf);
    pf->file = f;
    int64_t fsize = vd_file_size(f, err);
    if (fsize < 0)
        return (int)fsize;
    pf->file_size = (uint64_t)fsize;
    if (pf->file_size < PRL_HEADER_SIZE)
        return vd_set_error(err, -EINVAL, "parallels: file of %llu bytes is too short for a "
                            "header", (unsigned long long)pf->file_size);
    int r = vd_file_pread(f, h, sizeof h, 0, err);
    if (r < 0 || (r = parallels_check_header(pf, h, err)) < 0)
        return r;
    size_t bytes = (size_t)pf->bat_entries * 4;
    pf->bat = malloc(bytes ? bytes : 1);
    if (!pf->bat)
        return vd_set_error(err, -ENOMEM, "parallels: out of memory for a %zu-byte BAT", bytes);
    if ((r = vd_file_pread(f, pf->bat, bytes, PRL_HEADER_SIZE, err)) < 0)
        return r;
    return parallels_check_bat(pf, err);
}

void parallels_file_free(struct parallels_file *pf)
{
    free(pf->bat);
    pf->bat = NULL;
}

uint64_t parallels_file_lookup(const struct parallels_file *pf, uint64_t off, uint64_t *avail)
{
    uint64_t idx = off / pf->cluster_size, in = off % pf->cluster_size;
    *avail = pf->cluster_size - in;
    if (idx >= pf->bat_entries || !pf->bat[idx])
        return 0;
    return (uint64_t)pf->bat[idx] * pf->unit + in;
}

/* ---- driver: open/close ------------------------------------------------ */

static int parallels_set_inuse(vd_image *img, struct parallels_state *s, uint32_t v,
                               vd_error *err)
{
    uint8_t le[4];
    vd_put_le32(le, v);
    int r = vd_file_pwrite(img->file, le, 4, PRL_O_INUSE, err);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0)
        s->pf.inuse = v;
    return r;
}

static void parallels_close(vd_image *img)
{
    struct parallels_state *s = img->priv;
    if (!s)
        return;
    if (s->marked_inuse && s->bat_hi <= s->bat_lo)
        parallels_set_inuse(img, s, 0, NULL);   /* a clean close */
    parallels_file_free(&s->pf);
    if (s->bundle)
        parallels_bundle_free(s->bundle);
    free(s);
    img->priv = NULL;
}

static int parallels_open(vd_image *img, vd_error *err)
{
    uint8_t head[1024];
    struct parallels_state *s = calloc(1, sizeof *s);
    if (!s)
        return vd_set_error(err, -ENOMEM, "out of memory");
    img->priv = s;
    int r = vd_file_pread_zfill(img->file, head, sizeof head, 0, err);
    if (r == 0 && parallels_xml_probe(head, sizeof head)) {
        if (!img->readonly)
            r = vd_set_error(err, -EROFS, "parallels: .hdd bundles (DiskDescriptor.xml) are "
                             "read-only in vdisk; open read-only");
        else
            r = parallels_bundle_open(img, NULL, &s->bundle, err);
    } else if (r == 0 && (r = parallels_file_load(&s->pf, img->file, err)) == 0) {
        img->size = s->pf.size;
        img->cluster_size = (uint32_t)s->pf.cluster_size;
        img->dirty = s->pf.inuse == PARALLELS_INUSE_MAGIC;
        /* A crashed writer leaves the in-use flag set.  Read-write opens are
         * allowed so that `vdconvert check -r all` can repair it, but writes
         * are refused until then. */
        if (img->dirty && !img->readonly)
            s->needs_repair = true;
        else if (!img->readonly && (r = parallels_set_inuse(img, s, PARALLELS_INUSE_MAGIC,
                                                            err)) == 0)
            s->marked_inuse = true;
    }
    if (r < 0)
        parallels_close(img);
    return r;
}

/* ---- driver: I/O ------------------------------------------------------- */

/* What the bytes at `off` are: a run of clusters stored one after the
 * other, or of clusters the file does not hold. */
static int parallels_map(vd_image *img, uint64_t off, uint64_t max, struct vd_map *m,
                         vd_error *err)
{
    (void)err;
    struct parallels_state *s = img->priv;
    uint64_t avail;
    m->file_off = parallels_file_lookup(&s->pf, off, &avail);
    m->n = avail < max ? avail : max;
    m->kind = m->file_off ? VD_MAP_DATA : VD_MAP_BACKING;
    return 0;
}

static const struct vd_mapper parallels_mapper = { .map = parallels_map };

static int parallels_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err)
{
    struct parallels_state *s = img->priv;
    if (s->bundle)
        return parallels_bundle_pread(img, s->bundle, buf, len, off, err);
    return vd_map_pread(img, buf, len, off, &parallels_mapper, err);
}

/* A new cluster for guest cluster `idx`, holding `data` at `in`. */
static int parallels_allocate(vd_image *img, struct parallels_state *s, uint64_t idx,
                              uint64_t in, const void *data, size_t len, vd_error *err)
{
    struct parallels_file *pf = &s->pf;
    uint64_t at = pf->next_alloc, unit_idx = at / pf->unit;
    if (idx >= pf->bat_entries || unit_idx > UINT32_MAX)
        return vd_set_error(err, -ENOSPC, "parallels: cluster %llu cannot be mapped (BAT of %u "
                            "entries, next offset 0x%llx)", (unsigned long long)idx,
                            pf->bat_entries, (unsigned long long)at);
    uint8_t *c = calloc(1, pf->cluster_size);
    if (!c)
        return vd_set_error(err, -ENOMEM, "parallels: out of memory for a cluster");
    uint64_t gstart = idx * pf->cluster_size;
    uint64_t gend = gstart + pf->cluster_size > img->size ? img->size : gstart + pf->cluster_size;
    int r = 0;
    if (len < gend - gstart)
        r = vd_backing_pread(img, c, (size_t)(gend - gstart), gstart, err);
    memcpy(c + in, data, len);
    if (r == 0)
        r = vd_file_pwrite(img->file, c, pf->cluster_size, at, err);
    free(c);
    if (r < 0)
        return r;
    pf->bat[idx] = (uint32_t)unit_idx;
    if (s->bat_hi <= s->bat_lo)
        s->bat_lo = s->bat_hi = (uint32_t)idx;
    if (idx < s->bat_lo)
        s->bat_lo = (uint32_t)idx;
    if (idx >= s->bat_hi)
        s->bat_hi = (uint32_t)idx + 1;
    pf->next_alloc = at + vd_round_up(pf->cluster_size, pf->unit);
    if (pf->next_alloc > pf->file_size)
        pf->file_size = pf->next_alloc;
    return 0;
}

/* A run of stored clusters written in place, or one new cluster. */
static int parallels_write_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    (void)ctx;
    struct parallels_state *s = img->priv;
    uint64_t avail;
    uint64_t foff = parallels_file_lookup(&s->pf, pt->off, &avail);
    if (avail < pt->n)
        pt->n = avail;
    if (foff)
        return vd_file_pwrite(img->file, pt->p, pt->n, foff, err);
    return parallels_allocate(img, s, pt->off / s->pf.cluster_size,
                              pt->off % s->pf.cluster_size, pt->p, pt->n, err);
}

static int parallels_pwrite(vd_image *img, const void *buf, size_t len, uint64_t off,
                            vd_error *err)
{
    struct parallels_state *s = img->priv;
    if (s->needs_repair)
        return vd_set_error(err, -EBUSY, "parallels: image was not closed cleanly (in-use "
                            "flag at 0x%x); repair it first with `vdconvert check -r all`",
                            PRL_O_INUSE);
    return vd_walk(img, (void *)buf, off, len, 0, parallels_write_part, NULL, err);
}

/* New clusters synced, then the BAT entries naming them, synced. */
static int parallels_flush(vd_image *img, vd_error *err)
{
    struct parallels_state *s = img->priv;
    int r = vd_file_sync(img->file, err);
    if (r < 0 || s->bat_hi <= s->bat_lo)
        return r;
    uint32_t n = s->bat_hi - s->bat_lo;
    uint8_t *le = malloc((size_t)n * 4);
    if (!le)
        return vd_set_error(err, -ENOMEM, "parallels: out of memory for the BAT");
    for (uint32_t i = 0; i < n; i++)
        vd_put_le32(le + (size_t)i * 4, s->pf.bat[s->bat_lo + i]);
    r = vd_file_pwrite(img->file, le, (size_t)n * 4, PRL_HEADER_SIZE + (uint64_t)s->bat_lo * 4,
                       err);
    free(le);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0)
        s->bat_lo = s->bat_hi = 0;
    return r;
}

static int parallels_block_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                                  vd_error *err)
{
    struct parallels_state *s = img->priv;
    if (s->bundle)
        return parallels_bundle_block_status(img, s->bundle, off, len, ext, err);
    uint64_t end = off + len;
    /* Answer at most this many clusters per call (the core asks again): a
     * header claiming terabytes of small clusters must not cost a minute. */
    unsigned budget = 65536;
    while (off < end && budget--) {
        uint64_t avail;
        uint64_t foff = parallels_file_lookup(&s->pf, off, &avail);
        if (off / s->pf.cluster_size >= s->pf.bat_entries)
            avail = end - off;     /* past the BAT: nothing is mapped there */
        uint64_t n = avail < end - off ? avail : end - off;
        int r = foff ? vd_extents_add(ext, off, n, VD_LAYER_DATA, 0, foff)
                     : vd_extents_add(ext, off, n, VD_LAYER_UNALLOC, 0, VD_NO_OFFSET);
        if (r < 0)
            return r;
        off += n;
    }
    return 0;
}

/* End of what the header and BAT reference: anything after it is leaked
 * (a cluster written by a writer that died before its BAT entry). */
static uint64_t parallels_used_end(const struct parallels_file *pf)
{
    /* A format extension (dirty bitmaps) references clusters of its own that
     * we do not parse: all of the file is in use then, never truncated.
     * (qemu 7.2 does not know extensions and calls them leaks.) */
    if (pf->ext_off)
        return pf->file_size;
    uint64_t end = PRL_HEADER_SIZE + (uint64_t)pf->bat_entries * 4;
    if ((uint64_t)pf->data_off * 512 > end)
        end = (uint64_t)pf->data_off * 512;
    for (uint32_t i = 0; i < pf->bat_entries; i++)
        if (pf->bat[i] && (uint64_t)pf->bat[i] * pf->unit + pf->cluster_size > end)
            end = (uint64_t)pf->bat[i] * pf->unit + pf->cluster_size;
    return end;
}

/* Leaks at the end of the file, and the in-use flag of a crashed writer;
 * both repairable. */
static int parallels_check_repairable(vd_image *img, struct parallels_state *s, unsigned flags,
                                      vd_check_result *res, vd_error *err)
{
    struct parallels_file *pf = &s->pf;
    uint64_t used = vd_round_up(parallels_used_end(pf), pf->unit);
    if (pf->file_size > used) {
        uint64_t n = (pf->file_size - used + pf->cluster_size - 1) / pf->cluster_size;
        res->leaks += n;
        if (flags & VD_CHECK_REPAIR_LEAKS) {
            int r = vd_file_truncate(img->file, used, err);
            if (r < 0)
                return r;
            pf->file_size = pf->next_alloc = used;
            res->leaks_fixed += n;
        }
    }
    if (pf->inuse == PARALLELS_INUSE_MAGIC && (s->needs_repair || img->readonly)) {
        if (!res->corruptions++)
            snprintf(res->first_problem, sizeof res->first_problem,
                     "image was not closed cleanly (in-use flag at 0x%x)", PRL_O_INUSE);
        if ((flags & VD_CHECK_REPAIR_ALL) == VD_CHECK_REPAIR_ALL && s->needs_repair) {
            int r = parallels_set_inuse(img, s, 0, err);
            if (r < 0)
                return r;
            s->needs_repair = false;
            img->dirty = false;
            res->corruptions_fixed++;
            /* from now on a normal writer: flagged while open, cleared on close */
            if ((r = parallels_set_inuse(img, s, PARALLELS_INUSE_MAGIC, err)) < 0)
                return r;
            s->marked_inuse = true;
        }
    }
    return 0;
}

static int parallels_check(vd_image *img, unsigned flags, vd_check_result *res, vd_error *err)
{
    struct parallels_state *s = img->priv;
    if (s->bundle)
        return -ENOTSUP;
    int r = parallels_check_repairable(img, s, flags, res, err);
    if (r < 0)
        return r;
    const struct parallels_file *pf = &s->pf;
    uint64_t allocated = 0;
    for (uint32_t i = 0; i < pf->bat_entries; i++)
        allocated += pf->bat[i] != 0;
    uint64_t need = (pf->size + pf->cluster_size - 1) / pf->cluster_size;
    if (need > pf->bat_entries && !res->corruptions++)
        snprintf(res->first_problem, sizeof res->first_problem,
                 "BAT has %u entries, the disk needs %llu", pf->bat_entries,
                 (unsigned long long)need);
    /* A format extension (dirty bitmaps, in 512-byte sectors) we do not
     * read, but one that cannot be there is a damaged header. */
    if (pf->ext_off && pf->ext_off >= pf->file_size / 512 && !res->corruptions++)
        snprintf(res->first_problem, sizeof res->first_problem,
                 "format extension offset 0x%llx at 0x%x is past end of file (size 0x%llx)",
                 (unsigned long long)pf->ext_off * 512, PRL_O_EXT_OFF,
                 (unsigned long long)pf->file_size);
    res->allocated_clusters = allocated;
    res->total_clusters = pf->bat_entries;
    res->image_end_offset = pf->next_alloc;
    return 0;
}

static void parallels_details(vd_image *img, vd_kv_fn fn, void *ctx)
{
    struct parallels_state *s = img->priv;
    if (s->bundle) {
        parallels_bundle_details(s->bundle, fn, ctx);
        return;
    }
    char v[32];
    fn(ctx, "signature", s->pf.ext_magic ? PRL_MAGIC_V2 : PRL_MAGIC_V1);
    snprintf(v, sizeof v, "%llu", (unsigned long long)s->pf.cluster_size);
    fn(ctx, "cluster-size", v);
    fn(ctx, "in-use", s->pf.inuse == PARALLELS_INUSE_MAGIC ? "yes" : "no");
    if (s->pf.ext_off) {
        snprintf(v, sizeof v, "0x%llx", (unsigned long long)s->pf.ext_off * 512);
        fn(ctx, "format-extension", v);
    }
}

static int parallels_list_snapshots(vd_image *img, vd_snapshot_info *out, size_t max)
{
    struct parallels_state *s = img->priv;
    return s->bundle ? parallels_bundle_list_snapshots(s->bundle, out, max) : 0;
}

/* Serve the state of bundle snapshot `name` (its GUID) instead. */
static int parallels_load_snapshot(vd_image *img, const char *name, vd_error *err)
{
    struct parallels_state *s = img->priv;
    struct parallels_bundle *b;
    if (!s->bundle)
        return vd_set_error(err, -ENOTSUP, "parallels: an image file has no snapshots; "
                            "open its .hdd bundle");
    int r = parallels_bundle_open(img, name, &b, err);
    if (r < 0)
        return r;
    parallels_bundle_free(s->bundle);
    s->bundle = b;
    return 0;
}

/* The descriptor's own size plus every file of a bundle. */
static uint64_t parallels_disk_size(vd_image *img)
{
    struct parallels_state *s = img->priv;
    uint64_t own = vd_file_allocated(img->file);
    return s->bundle ? own + parallels_bundle_disk_size(s->bundle) : own;
}

/* ---- create ------------------------------------------------------------ */

static int parallels_create(const struct vd_create_args *a, vd_error *err)
{
    uint64_t cluster;
    int r = vd_opt_size(a->opts, "cluster_size", PRL_DEFAULT_CLUSTER, &cluster, err);
    if (r < 0)
        return r;
    if (a->backing_file)
        return vd_set_error(err, -EINVAL, "parallels: an image file cannot name a backing file");
    if (cluster < 512 || cluster % 512 || cluster > PRL_MAX_CLUSTER)
        return vd_set_error(err, -EINVAL, "parallels: cluster_size %llu: expected a multiple "
                            "of 512 up to %u", (unsigned long long)cluster, PRL_MAX_CLUSTER);
    uint64_t sectors = (a->size + 511) / 512;
    uint64_t clusters = (sectors * 512 + cluster - 1) / cluster;
    uint64_t data_off = vd_round_up(PRL_HEADER_SIZE + clusters * 4, cluster);
    if (a->size > VD_MAX_VIRTUAL_SIZE || clusters * 4 > VD_MAX_TABLE_BYTES ||
        data_off / 512 > UINT32_MAX || (sectors / 512 / 32 + 1) > UINT32_MAX)
        return vd_set_error(err, -EFBIG, "parallels: size %llu with %llu-byte clusters is too "
                            "large", (unsigned long long)a->size, (unsigned long long)cluster);
    uint8_t h[PRL_HEADER_SIZE] = { 0 };
    memcpy(h + PRL_O_MAGIC, PRL_MAGIC_V2, 16);
    vd_put_le32(h + PRL_O_VERSION, PRL_VERSION);
    vd_put_le32(h + PRL_O_HEADS, 16);
    vd_put_le32(h + PRL_O_CYLS, (uint32_t)(sectors / 16 / 32));
    vd_put_le32(h + PRL_O_TRACKS, (uint32_t)(cluster / 512));
    vd_put_le32(h + PRL_O_BAT_ENTRIES, (uint32_t)clusters);
    vd_put_le64(h + PRL_O_NB_SECTORS, sectors);
    vd_put_le32(h + PRL_O_DATA_OFF, (uint32_t)(data_off / 512));
    vd_file *f;
    if ((r = vd_file_create(a->path, &f, err)) < 0)
        return r;
    /* The BAT is all zeroes: truncating to data_off writes it. */
    if ((r = vd_file_truncate(f, data_off, err)) == 0)
        r = vd_file_pwrite(f, h, sizeof h, 0, err);
    return vd_file_create_finish(f, r, err);
}

static const char *const parallels_extensions[] = { "hds", "hdd", "parallels", NULL };

static const vd_opt_desc parallels_create_opts[] = {
    { "cluster_size", "cluster size, a multiple of 512 (default 1M)" },
    { NULL, NULL },
};

const struct vd_driver vd_parallels = {
    .name = "parallels",
    .description = "Parallels HDD (expanding image or .hdd bundle)",
    .extensions = parallels_extensions,
    .probe = parallels_probe,
    .align = 512,
    .parallel_reads = true,
    .whole_clusters = true,
    .open = parallels_open,
    .close = parallels_close,
    .create = parallels_create,
    .create_opts = parallels_create_opts,
    .pread = parallels_pread,
    .pwrite = parallels_pwrite,
    .flush = parallels_flush,
    .block_status = parallels_block_status,
    .check = parallels_check,
    .details = parallels_details,
    .disk_size = parallels_disk_size,
    .list_snapshots = parallels_list_snapshots,
    .load_snapshot = parallels_load_snapshot,
    .can_write = VD_CAN_NATIVE,
};
