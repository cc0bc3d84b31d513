/* resize.c - growing a VMDK in place (vd_resize), on the disk's own files.
 *
 *  - monolithicSparse: the grain directory fills whole sectors, so it has
 *    room for more grain tables than the disk uses (a 16 MiB disk's one
 *    sector maps 4 GiB).  Inside that room the embedded descriptor's extent
 *    line is written first (readers take the size from the header), then
 *    the header's capacity: one 8-byte write, the commit point.
 *  - a descriptor file (monolithicFlat, twoGbMaxExtentSparse/Flat): the last
 *    extent grows (a flat file is extended, a sparse one inside its room,
 *    up to 2 GiB for a split disk), new extents get their final names
 *    ("disk-s003.vmdk", made and synced first), and the descriptor, which
 *    decides the size, is written last with one write.  A split sparse
 *    disk that needs new extents leaves its last one as it is (its header
 *    capacity would change the size before the descriptor names them).
 *  - over a larger backing file (sparse: a delta disk), what the backing
 *    would show in the grown range reads as zeroes before the size changes:
 *    the rest of the grain holding the old end written with zeroes, then
 *    zero grains (zeroed-grain flag) or grains appended as one hole, before
 *    the capacity write; new extents are made with them.  The driver then
 *    tells the core, which writes no zeroes after the size change.
 * A crash leaves the old or the new size; at worst an extent file that the
 * descriptor does not name yet, holding nothing: `check` reports it as a
 * leak, `check -r leaks` and the next grow remove it (a file there that
 * may hold data stops the grow, named, and is left alone).  Shrinking, streamOptimized and VMFS disks are refused with the
 * reason; nothing is ever rewritten to a new file. */
#include "vmdk.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Append one extent line ("RW 4096 SPARSE "name"" [offset]) to *buf. */
static int vmdk_rs_line(char **buf, size_t *len, const struct vmdk_desc_extent *x)
{
    char *l = NULL;
    int n = !strcmp(x->type, "FLAT") || !strcmp(x->type, "VMFS")
        ? asprintf(&l, "%s %" PRIu64 " %s \"%s\" %" PRIu64 "\n", x->access, x->sectors,
                   x->type, x->name ? x->name : "", x->offset)
        : x->name ? asprintf(&l, "%s %" PRIu64 " %s \"%s\"\n", x->access, x->sectors, x->type,
                             x->name)
        : asprintf(&l, "%s %" PRIu64 " %s\n", x->access, x->sectors, x->type);
    if (n < 0)
        return -ENOMEM;
    char *nb = realloc(*buf, *len + (size_t)n + 1);
    if (!nb) {
        free(l);
        return -ENOMEM;
    }
    memcpy(nb + *len, l, (size_t)n + 1);
    *buf = nb;
    *len += (size_t)n;
    free(l);
    return 0;
}

static bool vmdk_rs_is_extent_line(const char *p, size_t n)
{
    return (n > 3 && !strncmp(p, "RW ", 3)) || (n > 7 && !strncmp(p, "RDONLY ", 7)) ||
           (n > 9 && !strncmp(p, "NOACCESS ", 9));
}

/* The descriptor text with its extent lines replaced by `lines` and the
 * cylinder count for `sectors` (as create.c writes it). */
static char *vmdk_rs_text(const struct vmdk_desc *d, const char *lines, uint64_t sectors)
{
    size_t cap = d->len + strlen(lines) + 64, o = 0;
    char *t = malloc(cap);
    if (!t)
        return NULL;
    bool ide = d->adapter && !strcmp(d->adapter, "ide"), done = false;
    uint64_t cyl = sectors / ((ide ? 16 : 255) * 63ull);
    if (ide && cyl > 16383)
        cyl = 16383;
    for (const char *p = d->text, *end = d->text + d->len; p < end;) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        size_t n = e ? (size_t)(e - p) + 1 : (size_t)(end - p);
        if (vmdk_rs_is_extent_line(p, n)) {
            if (!done)
                o += (size_t)snprintf(t + o, cap - o, "%s", lines);
            done = true;
        } else if (!strncmp(p, "ddb.geometry.cylinders", 22)) {
            o += (size_t)snprintf(t + o, cap - o, "ddb.geometry.cylinders = \"%" PRIu64 "\"\n",
                                  cyl);
        } else {
            memcpy(t + o, p, n);
            o += n;
        }
        p += n;
    }
    t[o] = 0;
    return t;
}

/* Parse `text` and make it the disk's descriptor on disk (one write,
 * synced) and in memory. */
static int vmdk_rs_put_desc(vd_image *img, struct vmdk *v, char *text, vd_error *err)
{
    struct vmdk_desc nd;
    int r = vmdk_desc_parse(&nd, text, strlen(text), img->path, err);
    free(text);
    if (r < 0)
        return r;
    struct vmdk_desc od = v->desc;
    v->desc = nd;
    r = vmdk_write_descriptor(img, v, od.len, err);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r < 0) {
        v->desc = od;
        vmdk_desc_free(&nd);
        return r;
    }
    vmdk_desc_free(&od);
    return 0;
}

/* Over a larger backing file the grown range must read as zeroes before
 * the size shows it.  For sparse extent `e`, growing to `sectors`: the
 * rest of the grain holding its old end written with zeroes (past the
 * capacity, so hidden; the sizes raised meanwhile), and in *zero_to the
 * end (bytes, relative to the extent) of what the backing would show,
 * for vmdk_sparse_grow's zero grains (0: nothing to hide). */
static int vmdk_rs_zero_tail(vd_image *img, struct vmdk_extent *e, uint64_t sectors,
                             uint64_t *zero_to, vd_error *err)
{
    vd_image *bk = img->backing;
    uint64_t old = img->size, base = e->start * VMDK_SECTOR, cap = e->sectors * VMDK_SECTOR;
    *zero_to = 0;
    if (!bk || bk->size <= old || e->type != VMDK_EXT_SPARSE)
        return 0;
    *zero_to = bk->size - base < sectors * VMDK_SECTOR ? bk->size - base : sectors * VMDK_SECTOR;
    uint64_t tail = vd_round_up(cap, vmdk_sparse_grain_bytes(e));
    if (tail == cap)
        return 0;
    uint8_t *z = calloc(1, (size_t)(tail - cap));
    if (!z)
        return vd_set_error(err, -ENOMEM, "out of memory");
    img->size = old + tail - cap;
    e->sectors = tail / VMDK_SECTOR;
    int r = img->drv->pwrite(img, z, (size_t)(tail - cap), old, err);
    img->size = old;
    e->sectors = cap / VMDK_SECTOR;
    free(z);
    return r == 0 ? img->drv->flush(img, err) : r;
}

static int vmdk_rs_monolithic(vd_image *img, struct vmdk *v, uint64_t sectors, vd_error *err)
{
    struct vmdk_extent *e = &v->ext[0];
    int r = vmdk_sparse_grow(e, sectors, true, 0, err);
    if (r < 0)
        return r;
    if (v->desc_embedded && v->desc.n_ext == 1) {
        struct vmdk_desc_extent x = v->desc.ext[0];
        x.sectors = sectors;
        char *lines = NULL, *text;
        size_t len = 0;
        r = vmdk_rs_line(&lines, &len, &x);
        text = r == 0 ? vmdk_rs_text(&v->desc, lines, sectors) : NULL;
        free(lines);
        if (!text)
            return vd_set_error(err, -ENOMEM, "out of memory");
        if ((r = vmdk_rs_put_desc(img, v, text, err)) < 0)
            return r;
    }
    uint64_t zero_to = 0;
    r = vmdk_rs_zero_tail(img, e, sectors, &zero_to, err);
    if (r == 0)
        r = vmdk_sparse_grow(e, sectors, false, zero_to, err);
    return r < 0 ? r : zero_to > 0;
}

/* Grow the last extent of a descriptor file to `sectors` (`zero_to`: as
 * vmdk_sparse_grow's; a flat extent's new bytes are zeroes anyway). */
static int vmdk_rs_grow_last(struct vmdk_extent *e, uint64_t sectors, bool check_only,
                             uint64_t zero_to, vd_error *err)
{
    if (e->type == VMDK_EXT_SPARSE)
        return vmdk_sparse_grow(e, sectors, check_only, zero_to, err);
    int64_t fsize = vd_file_size(e->file, err);
    if (fsize < 0)
        return (int)fsize;
    uint64_t want = e->flat_off + sectors * VMDK_SECTOR;
    if (check_only)
        return 0;
    /* what the file holds past the extent's end (another tool may leave
     * it) must not show: zeroed while the extent does not reach it yet */
    uint64_t old = e->flat_off + e->sectors * VMDK_SECTOR;
    int r = (uint64_t)fsize > old
        ? vd_file_zero(e->file, old, ((uint64_t)fsize < want ? (uint64_t)fsize : want) - old, err)
        : 0;
    if (r == 0 && (uint64_t)fsize < want)
        r = vd_file_truncate(e->file, want, err);
    return r == 0 ? vd_file_sync(e->file, err) : r;
}

/* The new extents' names reach the disk before the descriptor names them. */
static int vmdk_rs_sync_dir(const char *folder, vd_error *err)
{
    int fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0) {
        int r = vd_set_errno(err, -errno, "vmdk: %s: syncing the folder", folder);
        if (fd >= 0)
            close(fd);
        return r;
    }
    close(fd);
    return 0;
}

/* Whether the file at `path`, which no extent line names, holds no data
 * (1) or may (0): a sparse extent whose bytes past its overhead (where
 * grains go; a fresh one is all metadata, or holes over a larger backing
 * file) are holes or zeroes, a flat one of holes and zeroes, an empty
 * file.  What a grow killed before its descriptor write leaves is all of
 * these, so it can go; anything else stays where it is. */
static int vmdk_rs_holds_nothing(const char *path, bool sparse, vd_error *err)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return vd_set_errno(err, -errno, "vmdk: %s", path);
    struct stat st;
    uint8_t b[65536];
    off_t from = 0;
    int r = fstat(fd, &st) < 0 ? vd_set_errno(err, -errno, "vmdk: %s", path)
                               : S_ISREG(st.st_mode) && !st.st_size;
    bool scan = r == 0 && S_ISREG(st.st_mode);
    if (scan && sparse) {
        struct vmdk_header h;
        vd_error ignored;
        scan = pread(fd, b, VMDK_SECTOR, 0) == VMDK_SECTOR &&
               vmdk_header_parse(b, &h, path, (uint64_t)st.st_size, &ignored) == 0;
        from = scan ? (off_t)(h.overhead * VMDK_SECTOR) : 0;
    }
    if (scan) {
        r = 1;
        for (off_t at = from, end; r == 1 && (at = lseek(fd, at, SEEK_DATA)) >= 0; at = end) {
            end = lseek(fd, at, SEEK_HOLE);
            for (ssize_t n = 1; r == 1 && at < end && n > 0; at += n) {
                n = pread(fd, b, end - at < (off_t)sizeof b ? (size_t)(end - at) : sizeof b,
                          at);
                r = n < 0 ? vd_set_errno(err, -errno, "vmdk: %s", path)
                          : vd_is_zero(b, (size_t)n);
            }
        }
    }
    close(fd);
    return r;
}

/* The file a grow names extent `idx` (1-based), as create.c names them. */
static int vmdk_rs_name(const char *path, bool sparse, size_t idx, char *out, size_t cap)
{
    size_t l = strlen(path);
    int stem = (int)(l > 5 && !strcmp(path + l - 5, ".vmdk") ? l - 5 : l);
    int n = snprintf(out, cap, "%.*s-%c%03zu.vmdk", stem, path, sparse ? 's' : 'f', idx);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

int vmdk_leftover_extents(vd_image *img, struct vmdk *v, bool fix, vd_check_result *res,
                          vd_error *err)
{
    if (v->desc_embedded || !v->n_ext || !v->desc.create_type ||
        strncmp(v->desc.create_type, "twoGbMaxExtent", 14))
        return 0;
    bool sparse = v->ext[v->n_ext - 1].type == VMDK_EXT_SPARSE;
    char path[4400];
    struct stat st;
    int r = 0;
    for (size_t i = v->desc.n_ext + 1; r == 0; i++) {
        if (vmdk_rs_name(img->path, sparse, i, path, sizeof path) < 0 || lstat(path, &st) < 0)
            break;
        int empty = vmdk_rs_holds_nothing(path, sparse, err);
        if (empty < 0)
            return empty;
        if (!res->leaks++ && !res->corruptions)
            snprintf(res->first_problem, sizeof res->first_problem,
                     "vmdk: %.200s follows the extent names but the descriptor does not "
                     "name it (a resize was interrupted); it %s",
                     strrchr(path, '/') ? strrchr(path, '/') + 1 : path,
                     empty ? "holds no data" : "may hold data: left alone");
        if (fix && empty) {
            if (unlink(path) < 0)
                r = vd_set_errno(err, -errno, "vmdk: %s: removing it", path);
            else
                res->leaks_fixed++;
        }
    }
    return r;
}

static int vmdk_rs_split(vd_image *img, struct vmdk *v, uint64_t sectors, vd_error *err)
{
    bool split = !strncmp(v->desc.create_type, "twoGbMaxExtent", 14);
    struct vmdk_extent *last = &v->ext[v->n_ext - 1];
    struct vmdk_desc_extent *dl = &v->desc.ext[v->desc.n_ext - 1];
    uint64_t add = sectors - img->size / VMDK_SECTOR;
    uint64_t grow = split ? (last->sectors < VMDK_SPLIT_SECTORS
                             ? VMDK_SPLIT_SECTORS - last->sectors : 0) : add;
    bool sparse = last->type == VMDK_EXT_SPARSE;
    bool zgrain = sparse && vmdk_sparse_zero_grain(last);
    uint64_t bsize = img->backing ? img->backing->size : 0, zero_to = 0;
    /* Readers take a sparse extent's size from its header, so its
     * capacity write changes the disk's size by itself: with new extents
     * to add too, two writes (capacity, descriptor) would have to be one,
     * and a crash between them read as neither size.  The last sparse
     * extent then keeps its size and the new extents take the whole
     * growth: the descriptor write alone switches.  (Grown alone, the
     * capacity write is the switch and the descriptor follows.) */
    if (grow < add && sparse)
        grow = 0;
    if (grow > add)
        grow = add;
    int r = grow ? vmdk_rs_grow_last(last, last->sectors + grow, true, 0, err) : 0;
    if (r < 0)
        return r;
    /* The new descriptor's extent lines: the old ones, the last grown, and
     * the new files named as create.c names them. */
    char *lines = NULL, *dir = strdup(img->path), *base = strdup(img->path);
    size_t len = 0, made = 0;
    char (*paths)[5200] = calloc((add - grow) / VMDK_SPLIT_SECTORS + 2, sizeof *paths);
    if (!dir || !base || !paths) {
        r = vd_set_error(err, -ENOMEM, "out of memory");
        goto out;
    }
    char *stem = basename(base);
    size_t sl = strlen(stem);
    if (sl > 5 && !strcmp(stem + sl - 5, ".vmdk"))
        stem[sl - 5] = 0;
    const char *folder = dirname(dir);
    for (size_t i = 0; r == 0 && i < v->desc.n_ext; i++) {
        struct vmdk_desc_extent x = v->desc.ext[i];
        if (&v->desc.ext[i] == dl)
            x.sectors += grow;
        r = vmdk_rs_line(&lines, &len, &x);
    }
    for (uint64_t left = add - grow; r == 0 && left;) {
        uint64_t n = left < VMDK_SPLIT_SECTORS ? left : VMDK_SPLIT_SECTORS;
        char name[1024];
        if (snprintf(name, sizeof name, "%s-%c%03zu.vmdk", stem, sparse ? 's' : 'f',
                     v->desc.n_ext + made + 1) >= (int)sizeof name || strlen(folder) > 4096) {
            r = vd_set_error(err, -ENAMETOOLONG, "vmdk: %s: name too long", img->path);
            break;
        }
        snprintf(paths[made], sizeof paths[made], "%s/%s", folder, name);
        /* a grow killed before its descriptor write left it: it goes when
         * it holds nothing, else the grow stops there, naming it */
        struct stat st;
        int empty = lstat(paths[made], &st) < 0 ? 0
                    : vmdk_rs_holds_nothing(paths[made], sparse, err);
        if (empty == 0 && !lstat(paths[made], &st))
            r = vd_set_error(err, -EEXIST, "vmdk: %s is not named by %s but may hold data; "
                             "move it away to grow the disk", paths[made], img->path);
        else if (empty == 1 && unlink(paths[made]) < 0)
            r = vd_set_errno(err, -errno, "vmdk: %s: removing it", paths[made]);
        else if (empty < 0)
            r = empty;
        if (r < 0)
            break;
        /* over a larger backing file, what it would show reads as zeroes
         * before the descriptor names the extent (a flat one: zeroes) */
        uint64_t at = img->size + (add - left) * VMDK_SECTOR;
        uint64_t zs = bsize > at ? (bsize - at + VMDK_SECTOR - 1) / VMDK_SECTOR : 0;
        r = sparse ? vmdk_create_sparse(paths[made], n, NULL, zgrain, zs, err)
                   : vmdk_create_flat(paths[made], n, err);
        if (r < 0)
            break;
        made++;
        struct vmdk_desc_extent x = { .sectors = n, .name = name };
        snprintf(x.access, sizeof x.access, "RW");
        snprintf(x.type, sizeof x.type, "%s", sparse ? "SPARSE" : "FLAT");
        r = vmdk_rs_line(&lines, &len, &x);
        left -= n;
    }
    if (r == -ENOMEM)
        r = vd_set_error(err, r, "out of memory");
    if (r == 0 && made)
        r = vmdk_rs_sync_dir(folder, err);
    if (r == 0 && grow)
        r = vmdk_rs_zero_tail(img, last, last->sectors + grow, &zero_to, err);
    if (r == 0 && grow)
        r = vmdk_rs_grow_last(last, last->sectors + grow, false, zero_to, err);
    size_t old_n = v->desc.n_ext;
    if (r == 0) {
        char *text = vmdk_rs_text(&v->desc, lines, sectors);
        r = text ? vmdk_rs_put_desc(img, v, text, err)
                 : vd_set_error(err, -ENOMEM, "out of memory");
    }
    if (r == 0) {
        made = 0;           /* named by the descriptor now: kept */
        uint64_t start = img->size / VMDK_SECTOR;
        for (size_t i = old_n; r == 0 && i < v->desc.n_ext; i++) {
            r = vmdk_open_desc_extent(img, v, &v->desc.ext[i], start, err);
            start += v->desc.ext[i].sectors;
        }
    }
    if (r == 0 && bsize > img->size)
        r = 1;      /* the range the backing covers reads as zeroes already */
out:
    for (size_t i = 0; i < made; i++)
        unlink(paths[i]);
    free(paths);
    free(lines);
    free(dir);
    free(base);
    return r;
}

int vmdk_resize(vd_image *img, uint64_t size, vd_error *err)
{
    struct vmdk *v = img->priv;
    const char *ct = v->desc.create_type ? v->desc.create_type : "monolithicSparse";
    if (size < img->size)
        return vd_set_error(err, -ENOTSUP, "vmdk: a %s disk cannot shrink in place", ct);
    if (size % VMDK_SECTOR)
        return vd_set_error(err, -EINVAL, "vmdk: size %" PRIu64 " is not a multiple of %u "
                            "bytes", size, VMDK_SECTOR);
    bool ok = !v->stream && v->n_ext > 0;
    for (size_t i = 0; ok && i < v->n_ext; i++)
        ok = !v->ext[i].readonly && (v->ext[i].type == VMDK_EXT_SPARSE ||
                                     (v->ext[i].type == VMDK_EXT_FLAT &&
                                      i < v->desc.n_ext && strcmp(v->desc.ext[i].type, "VMFS")));
    if (!ok || (!v->desc_embedded && v->desc.n_ext != v->n_ext) ||
        (v->n_ext > 1 && strncmp(ct, "twoGbMaxExtent", 14)))
        return vd_set_error(err, -ENOTSUP, "vmdk: a %s disk cannot grow in place (only "
                            "hosted sparse, monolithicFlat and twoGbMaxExtent disks can); "
                            "convert it to a new image of the size wanted", ct);
    uint64_t sectors = size / VMDK_SECTOR;
    int r = v->ext[0].file == img->file ? vmdk_rs_monolithic(img, v, sectors, err)
                                        : vmdk_rs_split(img, v, sectors, err);
    if (r >= 0)
        img->size = size;
    return r;
}
