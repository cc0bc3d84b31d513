/* vhdx.c - VHDX (Hyper-V): the driver table, probe, open/close, flush,
 * check and details.  See vhdx.h for the layout and where each part lives.
 *
 * Opening replays a dirty log first (into the file when writable; into an
 * in-memory view when read-only, leaving the file untouched), then reads the
 * region table, metadata and BAT as the log left them.  A differencing disk's
 * parent must carry the DataWriteGuid its parent_linkage names. */
#include "vhdx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

static int vhdx_probe(const uint8_t *head, size_t len, const uint8_t *tail, size_t tail_len,
                      uint64_t file_size)
{
    (void)tail; (void)tail_len; (void)file_size;
    return len >= 8 && !memcmp(head, "vhdxfile", 8) ? 100 : 0;
}

static void vhdx_close(vd_image *img)
{
    struct vhdx_state *s = img->priv;
    if (!s)
        return;
    vhdx_patches_free(s);
    free(s->bat);
    free(s->bat_dirty);
    free(s->parent_linkage);
    free(s->parent_linkage2);
    free(s);
    img->priv = NULL;
}

static bool vhdx_linkage_matches(const char *want, const uint8_t *guid)
{
    char g[37];
    if (!want)
        return false;
    vhdx_guid_format(guid, g);
    if (*want == '{')
        want++;
    return !strncasecmp(want, g, 36) && (want[36] == 0 || want[36] == '}');
}

/* The parent's current DataWriteGuid must be the child's parent_linkage (or
 * parent_linkage2).  A parent we cannot open is left to the core's error. */
static int vhdx_check_parent(vd_image *img, struct vhdx_state *s, vd_error *err)
{
    vd_file *pf;
    if (vd_file_open_related(img, img->backing_file, true, &pf, NULL) < 0)
        return 0;
    struct vhdx_state *ps = calloc(1, sizeof *ps);
    int r = ps ? vhdx_read_headers(pf, ps, err) : vd_set_error(err, -ENOMEM, "out of memory");
    vd_file_close(pf);
    if (r == 0 && !vhdx_linkage_matches(s->parent_linkage, ps->hdr + VHDX_H_DATA_GUID) &&
        !vhdx_linkage_matches(s->parent_linkage2, ps->hdr + VHDX_H_DATA_GUID)) {
        char g[37];
        vhdx_guid_format(ps->hdr + VHDX_H_DATA_GUID, g);
        r = vd_set_error(err, -EINVAL, "vhdx: parent_linkage %s does not match the data write "
                         "GUID {%s} of parent '%s'", s->parent_linkage, g, img->backing_file);
    }
    free(ps);
    return r;
}

static int vhdx_open(vd_image *img, vd_error *err)
{
    struct vhdx_state *s = calloc(1, sizeof *s);
    if (!s)
        return vd_set_error(err, -ENOMEM, "out of memory");
    img->priv = s;
    uint8_t id[8];
    int64_t fsize = vd_file_size(img->file, err);
    int r = fsize < 0 ? (int)fsize : 0;
    if (r == 0) {
        s->file_size = (uint64_t)fsize;
        r = vd_file_pread_zfill(img->file, id, sizeof id, 0, err);
    }
    if (r == 0 && memcmp(id, "vhdxfile", 8))
        r = vd_set_error(err, -EINVAL, "vhdx: no file identifier 'vhdxfile' at 0x0");
    if (r == 0 && s->file_size < 2 * VHDX_MiB)
        r = vd_set_error(err, -EINVAL, "vhdx: file of %llu bytes is too small",
                         (unsigned long long)s->file_size);
    if (r == 0)
        r = vhdx_read_headers(img->file, s, err);
    if (r == 0)
        r = vhdx_log_replay(img, s, err);
    if (r == 0)
        r = vhdx_read_regions(img, s, err);
    if (r == 0)
        r = vhdx_read_metadata(img, s, err);
    if (r == 0)
        r = vhdx_read_bat(img, s, err);
    /* Opened without its chain (vdconvert relinking an overlay whose base
     * a commit wrote), the link is not checked. */
    if (r == 0 && s->has_parent && !img->no_backing)
        r = vhdx_check_parent(img, s, err);
    if (r < 0) {
        free(img->backing_file);
        free(img->backing_format);
        img->backing_file = img->backing_format = NULL;
        vhdx_close(img);
        return r;
    }
    img->cluster_size = s->block_size;
    img->dirty = s->replayed;
    return 0;
}

/* BAT changes through the log, then the log is marked empty again: after a
 * flush the image is clean, as if closed. */
static int vhdx_flush(vd_image *img, vd_error *err)
{
    struct vhdx_state *s = img->priv;
    if (s->crashed)
        return 0;
    int r = vhdx_bat_flush(img, s, err);
    if (r == 0)
        r = vhdx_log_close(img, s, err);
    return r == 0 ? vd_file_sync(img->file, err) : r;
}

static int vhdx_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Allocated blocks must not overlap each other or the log, metadata and
 * BAT regions. */
static int vhdx_check(vd_image *img, unsigned flags, vd_check_result *res, vd_error *err)
{
    struct vhdx_state *s = img->priv;
    memset(res, 0, sizeof *res);
    res->image_end_offset = s->file_size;
    res->total_clusters = s->payload_blocks;
    uint64_t *v = malloc((s->bat_entries + 3) * sizeof *v);
    if (!v)
        return vd_set_error(err, -ENOMEM, "out of memory");
    size_t n = 0;
    for (uint64_t i = 0; i < s->bat_entries; i++) {
        unsigned st = VHDX_BAT_STATE(s->bat[i]);
        bool bitmap = i % (s->chunk_ratio + 1) == s->chunk_ratio;
        if (!bitmap && (st == VHDX_PAYLOAD_FULLY_PRESENT || st == VHDX_PAYLOAD_PARTIALLY_PRESENT))
            res->allocated_clusters++;
        if (!bitmap && st >= VHDX_PAYLOAD_FULLY_PRESENT)
            v[n++] = VHDX_BAT_OFF(s->bat[i]);
    }
    qsort(v, n, sizeof *v, vhdx_cmp_u64);
    for (size_t i = 0; i < n; i++) {
        uint64_t a = v[i], b = a + s->block_size;
        bool bad = (i + 1 < n && v[i + 1] < b) ||
                   (a < s->log_off + s->log_len && s->log_off < b) ||
                   (a < s->meta_off + s->meta_len && s->meta_off < b) ||
                   (a < s->bat_off + s->bat_len && s->bat_off < b);
        if (bad && !res->corruptions++)
            snprintf(res->first_problem, sizeof res->first_problem,
                     "vhdx: block at 0x%llx overlaps another block or a region",
                     (unsigned long long)a);
        if (i && v[i] != v[i - 1] + s->block_size)
            res->fragmented_clusters++;
    }
    free(v);
    /* A dirty log is metadata the file does not hold yet.  Read-only, it
     * was replayed in memory only: report it as qemu-img does (a problem
     * that `check -r all` repairs).  Opened for a repair, the open replayed
     * it into the file: report it repaired. */
    if (s->replayed && img->readonly) {
        if (!res->corruptions++)
            snprintf(res->first_problem, sizeof res->first_problem,
                     "vhdx: the log at 0x%llx holds metadata changes not yet in the file "
                     "(replayed in memory only); check -r all writes them",
                     (unsigned long long)s->log_off);
    } else if (s->replayed && flags) {
        res->corruptions_fixed++;
        s->replayed = false;           /* reported once; the file holds it now */
    }
    return 0;
}

static void vhdx_details(vd_image *img, vd_kv_fn fn, void *ctx)
{
    struct vhdx_state *s = img->priv;
    char buf[64];
    fn(ctx, "subformat", s->has_parent ? "differencing" : s->leave_allocated ? "fixed"
                                                                              : "dynamic");
    snprintf(buf, sizeof buf, "%u", s->block_size);
    fn(ctx, "block-size", buf);
    snprintf(buf, sizeof buf, "%u", s->lss);
    fn(ctx, "logical-sector-size", buf);
    snprintf(buf, sizeof buf, "%u", s->pss);
    fn(ctx, "physical-sector-size", buf);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)s->log_len);
    fn(ctx, "log-size", buf);
    if (s->replayed)
        fn(ctx, "log", img->readonly ? "replayed in memory (file unchanged)"
                                     : "replayed into the file");
    if (s->parent_linkage)
        fn(ctx, "parent-linkage", s->parent_linkage);
}

/* Allocated data is stored plainly in the image file (zero-copy reads),
 * except when a dirty log was replayed into memory for a read-only open:
 * the file then is not what the image reads. */
static vd_file *vhdx_data_file(vd_image *img)
{
    struct vhdx_state *s = img->priv;
    return img->readonly && s->replayed ? NULL : img->file;
}

static const char *const vhdx_extensions[] = { "vhdx", "avhdx", NULL };

static const vd_opt_desc vhdx_create_opts[] = {
    { "subformat", "dynamic (default) or fixed" },
    { "block_size", "payload block size, 1M..256M, power of two (default 32M; 2M for "
                    "differencing)" },
    { "logical_sector_size", "512 (default) or 4096" },
    { "log_size", "log size, a multiple of 1M (default 1M)" },
    { NULL, NULL },
};

const struct vd_driver vd_vhdx = {
    .name = "vhdx",
    .description = "Microsoft Hyper-V VHDX",
    .extensions = vhdx_extensions,
    .probe = vhdx_probe,
    .align = 512,
    .parallel_reads = false,
    .open = vhdx_open,
    .close = vhdx_close,
    .create = vhdx_create,
    .create_opts = vhdx_create_opts,
    .pread = vhdx_pread,
    .pwrite = vhdx_pwrite,
    .pwrite_zeroes = vhdx_pwrite_zeroes,
    .discard = vhdx_discard,
    .flush = vhdx_flush,
    .block_status = vhdx_block_status,
    .data_file = vhdx_data_file,
    .check = vhdx_check,
    .details = vhdx_details,
    .resize = vhdx_resize,
    .resize_zero_tail = true,
    .set_backing = vhdx_set_backing,
    .make_empty = vhdx_make_empty,
    .prepare_commit = vhdx_prepare_commit,
    .can_write = VD_CAN_NATIVE,
};
