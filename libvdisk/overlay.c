/* overlay.c - vd_open_overlay: a writable layer over an opened, read-only
 * chain, so that a guest (vdboot), a mount (vdmount --overlay) or a test can
 * write while the image stays as it is.
 *
 * Two kinds of layer:
 *  - a qcow2 file: temporary (created in $TMPDIR and unlinked as soon as it
 *    is open, so it is gone however the process ends) or kept at a path the
 *    caller names, whose backing reference is written relative to its own
 *    folder (the pair moves together and opens without allow_host_paths
 *    when both share a folder);
 *  - an in-memory layer (driver "overlay-memory" below, not in the
 *    registry): 4 KiB blocks held in a two-level table, nothing on disk.
 * Either way the caller's handle of the base becomes the layer's backing
 * image: the base is not opened a second time, so it keeps the options and
 * the read lock it was opened with, and the layer holds its own file
 * exclusively (vd_open read-write). */
#include "vd-driver.h"
#include "vd-internal.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define VD_MEM_BLOCK 4096u
#define VD_MEM_TABLE 4096u      /* blocks per second-level table: 16 MiB */

struct vd_mem {
    uint8_t ***tables;          /* [n_tables][VD_MEM_TABLE]: a block or NULL */
    uint64_t n_tables;
    uint64_t held;              /* blocks allocated */
};

static uint8_t **vd_mem_table(struct vd_mem *m, uint64_t blk)
{
    return m->tables[blk / VD_MEM_TABLE];
}

static uint8_t *vd_mem_block(struct vd_mem *m, uint64_t blk)
{
    uint8_t **t = vd_mem_table(m, blk);
    return t ? t[blk % VD_MEM_TABLE] : NULL;
}

/* Bytes of block `blk` inside the disk (the last block may be short). */
static size_t vd_mem_block_len(vd_image *img, uint64_t blk)
{
    uint64_t start = blk * VD_MEM_BLOCK;
    return img->size - start < VD_MEM_BLOCK ? (size_t)(img->size - start) : VD_MEM_BLOCK;
}

/* A run of blocks from pt->off that are all held, or all below, read from
 * where they are.  The core hands whole blocks (align), the last one
 * possibly short. */
static int vd_mem_read_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    (void)ctx;
    struct vd_mem *m = img->priv;
    uint64_t blk = pt->off / VD_MEM_BLOCK;
    bool held = vd_mem_block(m, blk) != NULL;
    size_t run = 0;
    while (run < pt->n && (vd_mem_block(m, blk) != NULL) == held) {
        size_t n = vd_mem_block_len(img, blk);
        run += n < pt->n - run ? n : pt->n - run;
        blk++;
    }
    pt->n = run;
    if (!held)
        return vd_backing_pread(img, pt->p, run, pt->off, err);
    for (size_t done = 0; done < run;) {
        uint64_t b = (pt->off + done) / VD_MEM_BLOCK;
        size_t n = vd_mem_block_len(img, b);
        n = n < run - done ? n : run - done;
        memcpy(pt->p + done, vd_mem_block(m, b), n);
        done += n;
    }
    return 0;
}

static int vd_mem_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err)
{
    return vd_walk(img, buf, off, len, 0, vd_mem_read_part, NULL, err);
}

/* One block written, held from now on. */
static int vd_mem_write_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    (void)ctx;
    struct vd_mem *m = img->priv;
    uint8_t ***tp = &m->tables[pt->blk / VD_MEM_TABLE];
    if (!*tp && !(*tp = calloc(VD_MEM_TABLE, sizeof **tp)))
        goto nomem;
    uint8_t **slot = &(*tp)[pt->blk % VD_MEM_TABLE];
    if (!*slot) {
        if (!(*slot = malloc(VD_MEM_BLOCK)))
            goto nomem;
        m->held++;
    }
    memcpy(*slot, pt->p, pt->n);
    return 0;
nomem:
    return vd_set_error(err, -ENOMEM, "in-memory overlay: out of memory writing at 0x%llx "
                        "(%llu MiB held)", (unsigned long long)pt->off,
                        (unsigned long long)(m->held * VD_MEM_BLOCK >> 20));
}

static int vd_mem_pwrite(vd_image *img, const void *buf, size_t len, uint64_t off,
                         vd_error *err)
{
    return vd_walk(img, (void *)buf, off, len, VD_MEM_BLOCK, vd_mem_write_part, NULL, err);
}

/* Discarded blocks are dropped: they read as the base again, which the
 * contract of vd_discard allows, and the memory comes back. */
static int vd_mem_discard(vd_image *img, uint64_t off, uint64_t len, vd_error *err)
{
    (void)err;
    struct vd_mem *m = img->priv;
    for (uint64_t blk = off / VD_MEM_BLOCK; blk * VD_MEM_BLOCK < off + len; blk++) {
        uint8_t **t = vd_mem_table(m, blk);
        if (t && t[blk % VD_MEM_TABLE]) {
            free(t[blk % VD_MEM_TABLE]);
            t[blk % VD_MEM_TABLE] = NULL;
            m->held--;
        }
    }
    return 0;
}

static int vd_mem_status_part(vd_image *img, struct vd_part *pt, void *ext, vd_error *err)
{
    (void)err;
    struct vd_mem *m = img->priv;
    bool held = vd_mem_block(m, pt->blk) != NULL;
    return vd_extents_add(ext, pt->off, pt->n, held ? VD_LAYER_DATA : VD_LAYER_UNALLOC, 0,
                          VD_NO_OFFSET);
}

static int vd_mem_block_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                               vd_error *err)
{
    return vd_walk(img, NULL, off, len, VD_MEM_BLOCK, vd_mem_status_part, ext, err);
}

static int vd_mem_flush(vd_image *img, vd_error *err)
{
    (void)img;
    (void)err;
    return 0;
}

static uint64_t vd_mem_disk_size(vd_image *img)
{
    struct vd_mem *m = img->priv;
    return m->held * VD_MEM_BLOCK;
}

static void vd_mem_close(vd_image *img)
{
    struct vd_mem *m = img->priv;
    for (uint64_t t = 0; t < m->n_tables; t++) {
        for (unsigned i = 0; m->tables[t] && i < VD_MEM_TABLE; i++)
            free(m->tables[t][i]);
        free(m->tables[t]);
    }
    free(m->tables);
    free(m);
    img->priv = NULL;
}

static const struct vd_driver vd_overlay_memory = {
    .name = "overlay-memory",
    .description = "in-memory overlay (vd_open_overlay)",
    .align = VD_MEM_BLOCK,
    .parallel_reads = true,
    .close = vd_mem_close,
    .pread = vd_mem_pread,
    .pwrite = vd_mem_pwrite,
    .discard = vd_mem_discard,
    .flush = vd_mem_flush,
    .block_status = vd_mem_block_status,
    .disk_size = vd_mem_disk_size,
    .can_write = VD_CAN_NATIVE,
};

static int vd_overlay_memory_open(vd_image *base, vd_image **out, vd_error *err)
{
    uint64_t n_tables = (base->size + (uint64_t)VD_MEM_BLOCK * VD_MEM_TABLE - 1) /
                        ((uint64_t)VD_MEM_BLOCK * VD_MEM_TABLE);
    if (n_tables * sizeof(void *) > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EFBIG, "%s: virtual size 0x%llx is too large for an "
                            "in-memory overlay", base->path, (unsigned long long)base->size);
    vd_image *img = vd_image_new();
    struct vd_mem *m = calloc(1, sizeof *m);
    char *path = NULL;
    if (img && m && asprintf(&path, "%s (in-memory overlay)", base->path) < 0)
        path = NULL;
    if (m)
        m->tables = calloc(n_tables ? n_tables : 1, sizeof *m->tables);
    if (!img || !m || !m->tables || !path) {
        if (m)
            free(m->tables);
        free(m);
        free(path);
        vd_image_free(img);
        return vd_set_error(err, -ENOMEM, "out of memory");
    }
    m->n_tables = n_tables;
    img->drv = &vd_overlay_memory;
    img->priv = m;
    img->path = path;
    img->size = base->size;
    img->cluster_size = VD_MEM_BLOCK;
    *out = img;
    return 0;
}

/* `to` (absolute, resolved) as named from the folder `dir` (absolute,
 * resolved): "disk.qcow2", "../images/disk.qcow2".  NULL when out of
 * memory. */
static char *vd_relative_name(const char *dir, const char *to)
{
    if (!strcmp(dir, "/"))
        dir = "";
    /* the longest common run of whole components */
    size_t common = 0;
    for (size_t i = 0;; i++) {
        if ((dir[i] == '/' || !dir[i]) && to[i] == '/')
            common = i;
        if (!dir[i] || dir[i] != to[i])
            break;
    }
    size_t ups = 0;
    for (const char *p = dir + common; *p; p++)
        ups += *p == '/';
    const char *rest = to + common + 1;
    char *rel = malloc(3 * ups + strlen(rest) + 1);
    if (!rel)
        return NULL;
    char *q = rel;
    for (size_t i = 0; i < ups; i++, q += 3)
        memcpy(q, "../", 3);
    strcpy(q, rest);
    return rel;
}

/* The backing reference a kept overlay at `path` stores for `base`:
 * relative to the overlay's folder when both are files; as it is for an
 * NBD URI. */
static int vd_overlay_backing_name(const char *path, vd_image *base, char **out, vd_error *err)
{
    *out = NULL;
    if (vd_is_uri(base->path)) {
        *out = strdup(base->path);
        return *out ? 0 : vd_set_error(err, -ENOMEM, "out of memory");
    }
    char to[PATH_MAX];
    if (!realpath(base->path, to))
        return vd_set_errno(err, -errno, "%s", base->path);
    char *copy = strdup(path);
    if (!copy)
        return vd_set_error(err, -ENOMEM, "out of memory");
    char *dir = realpath(dirname(copy), NULL);
    int r = dir ? 0 : vd_set_errno(err, -errno, "%s: its folder", path);
    free(copy);
    if (r == 0 && !(*out = vd_relative_name(dir, to)))
        r = vd_set_error(err, -ENOMEM, "out of memory");
    free(dir);
    return r;
}

/* Create the qcow2 layer at `path` and open it read-write, without opening
 * its backing reference: `base` becomes its backing image. */
static int vd_overlay_qcow2_at(const char *path, const char *backing_name, vd_image *base,
                               unsigned cache, vd_image **out, vd_error *err)
{
    const struct vd_driver *d = vd_find_driver("qcow2");
    if (!d || !d->create)
        return vd_set_error(err, -ENOTSUP, "an overlay file needs the qcow2 driver, which "
                            "this libvdisk does not have");
    struct stat st;
    if (lstat(path, &st) == 0)
        return vd_set_error(err, -EEXIST, "%s: already exists", path);
    /* The driver's create directly, not vd_create: that would open the
     * backing again by name to learn its size, which the handle says. */
    struct vd_create_args a = { .path = path, .size = base->size,
                                .backing_file = backing_name,
                                .backing_format = base->drv->name, .backing = base };
    int r = d->create(&a, err);
    if (r < 0) {
        vd_error_prefix(err, path);
        return r;
    }
    vd_open_opts o = { .format = "qcow2", .no_backing = true, .cache = cache };
    vd_image *img;
    r = vd_open(path, &o, &img, err);
    if (r < 0) {
        unlink(path);
        return r;
    }
    img->no_backing = false;
    img->backing_path = strdup(base->path);
    if (!img->backing_path) {
        vd_close(img, NULL);
        return vd_set_error(err, -ENOMEM, "out of memory");
    }
    *out = img;
    return 0;
}

static int vd_overlay_qcow2_temp(vd_image *base, const char *tmpdir, vd_image **out,
                                 vd_error *err)
{
    if (!tmpdir || !*tmpdir)
        tmpdir = getenv("TMPDIR");
    if (!tmpdir || !*tmpdir)
        tmpdir = "/tmp";
    char dir[PATH_MAX], path[PATH_MAX + 16];
    if (snprintf(dir, sizeof dir, "%s/vdisk-overlay.XXXXXX", tmpdir) >= (int)sizeof dir)
        return vd_set_error(err, -ENAMETOOLONG, "%s: folder name too long", tmpdir);
    if (!mkdtemp(dir))
        return vd_set_errno(err, -errno, "%s: cannot make a folder for the overlay", tmpdir);
    snprintf(path, sizeof path, "%s/overlay.qcow2", dir);
    /* Nobody reopens a layer that is unlinked at once: the reference is
     * the base's own name.  Its flushes sync nothing (it is thrown away). */
    int r = vd_overlay_qcow2_at(path, base->path, base, VD_CACHE_NO_SYNC, out, err);
    unlink(path);
    rmdir(dir);
    return r;
}

int vd_open_overlay(vd_image *base, const vd_overlay_opts *opts, vd_image **out,
                    vd_error *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = 0;
    }
    *out = NULL;
    if (!base->readonly)
        return vd_set_error(err, -EINVAL, "%s: an overlay's base must be opened read-only",
                            base->path);
    vd_image *img = NULL;
    int r;
    if (opts && opts->in_memory) {
        r = vd_overlay_memory_open(base, &img, err);
    } else if (opts && opts->keep_path) {
        char *name;
        r = vd_overlay_backing_name(opts->keep_path, base, &name, err);
        if (r == 0)
            r = vd_overlay_qcow2_at(opts->keep_path, name, base, 0, &img, err);
        free(name);
    } else {
        r = vd_overlay_qcow2_temp(base, opts ? opts->tmpdir : NULL, &img, err);
    }
    if (r < 0)
        return r;
    img->backing = base;
    for (int depth = 1; base; base = base->backing)
        base->depth = depth++;
    *out = img;
    return 0;
}
