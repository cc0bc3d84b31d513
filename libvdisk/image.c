/* image.c - opening, probing, the backing chain, creating, info. */
#include "vd-driver.h"
#include "vd-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* A backing chain deeper than this is refused: it is either hostile or a
 * loop the inode check missed (e.g. through different mounts). */
#define VD_MAX_CHAIN_DEPTH 64
#define VD_PROBE_HEAD 65536
#define VD_PROBE_TAIL 1024

void vd_error_prefix(vd_error *err, const char *path)
{
    if (!err || !path)
        return;
    char epath[VD_ERROR_MAX];      /* as the message holds it: escaped */
    size_t pl = vd_escape_ctl(epath, sizeof epath, path);
    if (!strncmp(err->msg, epath, pl))
        return;
    char tmp[2 * VD_ERROR_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s: %s", epath, err->msg);
    snprintf(err->msg, sizeof err->msg, "%.*s", VD_ERROR_MAX - 1, tmp);
}

/* If `path` is a folder (a Parallels .hdd bundle), the image is its
 * DiskDescriptor.xml.  Returns a malloc'd path. */
static char *vd_image_main_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        size_t n = strlen(path) + sizeof "/DiskDescriptor.xml";
        char *p = malloc(n);
        if (p)
            snprintf(p, n, "%s/DiskDescriptor.xml", path);
        return p;
    }
    return strdup(path);
}

static const struct vd_driver *vd_probe_fd(vd_file *f, int *best_score, vd_error *err)
{
    uint8_t *head = calloc(1, VD_PROBE_HEAD);
    uint8_t tail[VD_PROBE_TAIL];
    if (!head) {
        vd_set_error(err, -ENOMEM, "out of memory");
        return NULL;
    }
    int64_t size = vd_file_size(f, err);
    if (size < 0) {
        free(head);
        return NULL;
    }
    size_t hlen = (uint64_t)size < VD_PROBE_HEAD ? (size_t)size : VD_PROBE_HEAD;
    size_t tlen = (uint64_t)size < VD_PROBE_TAIL ? (size_t)size : VD_PROBE_TAIL;
    if (vd_file_pread(f, head, hlen, 0, err) < 0 ||
        vd_file_pread(f, tail, tlen, (uint64_t)size - tlen, err) < 0) {
        free(head);
        return NULL;
    }
    const struct vd_driver *best = NULL;
    int best_s = 0;
    for (size_t i = 0; vd_drivers[i]; i++) {
        if (!vd_drivers[i]->probe)
            continue;
        int s = vd_drivers[i]->probe(head, hlen, tail, tlen, (uint64_t)size);
        if (s > best_s) {
            best_s = s;
            best = vd_drivers[i];
        }
    }
    free(head);
    if (best_score)
        *best_score = best_s;
    if (!best)
        vd_set_error(err, -EINVAL, "%s: unknown image format", f->path);
    return best;
}

const char *vd_probe_file(const char *path, int *score, vd_error *err)
{
    char *main_path = vd_image_main_path(path);
    if (!main_path)
        return NULL;
    vd_file *f;
    const struct vd_driver *d = NULL;
    if (vd_file_open(main_path, true, &f, err) == 0) {
        d = vd_probe_fd(f, score, err);
        vd_file_close(f);
    }
    free(main_path);
    return d ? d->name : NULL;
}

vd_image *vd_image_new(void)
{
    vd_image *img = calloc(1, sizeof *img);
    if (!img)
        return NULL;
    /* Writer-preferring: with glibc's default a stream of readers starves
     * writers (seen: 2 writes in 2 s against 8 reading threads).  The core
     * never takes an image's lock recursively, which this kind requires. */
    pthread_rwlockattr_t la;
    pthread_rwlockattr_init(&la);
    pthread_rwlockattr_setkind_np(&la, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&img->lock, &la);
    pthread_rwlockattr_destroy(&la);
    return img;
}

void vd_image_free(vd_image *img)
{
    if (!img)
        return;
    if (img->drv && img->priv && img->drv->close)
        img->drv->close(img);
    vd_file_close(img->file);
    free(img->path);
    free(img->backing_file);
    free(img->backing_format);
    free(img->backing_path);
    free(img->file_ids);
    pthread_rwlock_destroy(&img->lock);
    free(img);
}

int vd_image_note_file(vd_image *img, vd_file *f)
{
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return 0;
    for (size_t i = 0; i < img->n_file_ids; i++)
        if (img->file_ids[i].dev == st.st_dev && img->file_ids[i].ino == st.st_ino)
            return 0;
    if (VD_ARRAY_RESERVE(img->file_ids, img->cap_file_ids, img->n_file_ids + 1) < 0)
        return -ENOMEM;
    img->file_ids[img->n_file_ids].dev = st.st_dev;
    img->file_ids[img->n_file_ids++].ino = st.st_ino;
    return 0;
}

bool vd_reads_direct(vd_image *img)
{
    if (!img)
        return false;
    for (; img; img = img->backing)
        if (img->file && (!img->direct || img->direct_refused ||
                          !__atomic_load_n(&img->file->dio_align, __ATOMIC_RELAXED)))
            return false;
    return true;
}

bool vd_image_uses_file(vd_image *img, const char *path)
{
    struct stat st;
    if (!path || vd_is_uri(path) || stat(path, &st) < 0)
        return false;
    for (; img; img = img->backing)
        for (size_t i = 0; i < img->n_file_ids; i++)
            if (img->file_ids[i].dev == st.st_dev && img->file_ids[i].ino == st.st_ino)
                return true;
    return false;
}

/* Is (dev, ino) of `path` already in the chain above? */
static bool vd_chain_has_file(vd_image *const *chain, int n, vd_file *f)
{
    struct stat a, b;
    if (fstat(f->fd, &a) < 0)
        return false;
    for (int i = 0; i < n; i++)
        if (chain[i]->file && fstat(chain[i]->file->fd, &b) == 0 && a.st_dev == b.st_dev &&
            a.st_ino == b.st_ino)
            return true;
    return false;
}

static int vd_open_layer(const char *path, vd_file *pre, const vd_open_opts *o,
                         bool readonly, const char *format, vd_image *const *chain,
                         int depth, vd_image **out, vd_error *err);

/* Open the file a reference names, beneath the referring image's folder
 * (file.c), or an NBD URI. */
static int vd_open_ref(const char *base_path, const char *name, bool allow_host_paths,
                       char **path, vd_file **file, vd_error *err)
{
    *file = NULL;
    if (vd_is_uri(name))
        return vd_resolve_related(base_path, name, allow_host_paths, path, err);
    int r = vd_file_open_beneath(base_path, name, allow_host_paths, true, true, file, err);
    if (r == 0 && !(*path = strdup((*file)->path))) {
        vd_file_close(*file);
        r = vd_set_error(err, -ENOMEM, "out of memory");
    }
    return r;
}

int vd_open_related(const char *base_path, const char *name, const vd_open_opts *o,
                    vd_image **out, vd_error *err)
{
    char *path;
    vd_file *f;
    *out = NULL;
    int r = vd_open_ref(base_path, name, o && o->allow_host_paths, &path, &f, err);
    if (r < 0)
        return r;
    bool ro = (o && o->readonly) || (o && o->snapshot);
    r = vd_open_layer(path, f, o, ro, o ? o->format : NULL, NULL, 0, out, err);
    free(path);
    return r;
}

static int vd_open_backing(vd_image *img, const vd_open_opts *o,
                           vd_image *const *chain, vd_error *err)
{
    char *bpath;
    vd_file *bf;
    /* A top image made in a temporary folder names its backing from the
     * folder it is going to. */
    const char *from = img->depth == 0 && o && o->final_path ? o->final_path : img->path;
    int r = vd_open_ref(from, img->backing_file, img->allow_host_paths, &bpath, &bf, err);
    if (r < 0)
        return r;
    img->backing_path = bpath;
    const char *fmt = (o && o->backing_format && img->depth == 0)
                          ? o->backing_format : img->backing_format;
    /* A format we do not know by name is probed (qemu accepts e.g. "file"). */
    if (fmt && !vd_find_driver(fmt))
        fmt = NULL;
    vd_image *b;
    r = vd_open_layer(bpath, bf, o, true, fmt, chain, img->depth + 1, &b, err);
    if (r < 0) {
        if (err && r != -ELOOP) {
            char tmp[VD_ERROR_MAX + 16];
            snprintf(tmp, sizeof tmp, "backing file: %s", err->msg);
            snprintf(err->msg, sizeof err->msg, "%.*s", VD_ERROR_MAX - 1, tmp);
        }
        return r;
    }
    img->backing = b;
    return 0;
}

/* `pre`: the layer's file, already opened beneath the folder of the image
 * that names it (owned from here on), or NULL to open `path`. */
static int vd_open_layer(const char *path, vd_file *pre, const vd_open_opts *o,
                         bool readonly, const char *format, vd_image *const *chain,
                         int depth, vd_image **out, vd_error *err)
{
    /* The reason first: every level above adds only the top file's name
     * (see the -ELOOP case below), so a long chain cannot push it out. */
    if (depth >= VD_MAX_CHAIN_DEPTH) {
        vd_file_close(pre);
        return vd_set_error(err, -ELOOP, "backing chain deeper than %d files (%s is file %d)",
                            VD_MAX_CHAIN_DEPTH, path, depth + 1);
    }
    vd_image *img = vd_image_new();
    if (!img) {
        vd_file_close(pre);
        return vd_set_error(err, -ENOMEM, "out of memory");
    }
    img->depth = depth;
    img->readonly = readonly;
    img->allow_host_paths = o && o->allow_host_paths;
    img->no_backing = o && o->no_backing;
    img->force_share = o && o->force_share;
    img->cache = o && !readonly ? o->cache & ~VD_CACHE_DIRECT : 0;
    img->direct = o && (o->cache & VD_CACHE_DIRECT);
    img->keep_content_id = depth == 0 && o && o->keep_content_id;
    int r = -ENOMEM;
    if (vd_is_uri(path)) {
        img->path = strdup(path);
        img->drv = vd_find_driver("nbd");
        if (!img->path)
            goto fail;
        if (!img->drv) {
            r = vd_set_error(err, -ENOTSUP, "%s: NBD URIs need libvdisk built with libnbd", path);
            goto fail;
        }
        goto open_driver;
    }
    if (pre) {
        img->file = pre;
        img->path = strdup(pre->path);
    } else {
        img->path = vd_image_main_path(path);
    }
    if (!img->path)
        goto fail;
    if (!pre && (r = vd_file_open(img->path, readonly, &img->file, err)) < 0)
        goto fail;
    if (depth == 0 && o && o->window_length) {
        r = vd_file_set_window(img->file, o->window_name, o->window_offset, o->window_length,
                               err);
        if (r < 0)
            goto fail;
        free(img->path);
        if (!(img->path = strdup(img->file->path))) {
            r = vd_set_error(err, -ENOMEM, "out of memory");
            goto fail;
        }
    }
    vd_file_set_cache(img->file, img->cache);
    if (img->direct && vd_file_set_direct(img->file) < 0)
        img->direct_refused = true;
    if (vd_chain_has_file(chain, depth, img->file)) {
        r = vd_set_error(err, -ELOOP, "%s: backing chain loops back to this file",
                         img->path);
        goto fail;
    }
    r = vd_file_lock(img->file, !readonly, img->force_share, err);
    if (r == 0)
        r = vd_image_note_file(img, img->file);
    if (r < 0)
        goto fail;
    if (format) {
        img->drv = vd_find_driver(format);
        if (!img->drv) {
            r = vd_set_error(err, -EINVAL, "unknown format '%s'", format);
            goto fail;
        }
    } else {
        int score = 0;
        img->drv = vd_probe_fd(img->file, &score, err);
        if (!img->drv) {
            r = err ? err->code : -EINVAL;
            goto fail;
        }
        /* raw claims every file with the lowest score: nothing else matched */
        img->probed_raw = !strcmp(img->drv->name, "raw") && score <= 1;
    }
    if (!readonly && img->drv->can_write == VD_CAN_NONE) {
        r = vd_set_error(err, -EROFS, "%s: format %s is read-only in vdisk",
                         img->path, img->drv->name);
        goto fail;
    }
open_driver:
    r = img->drv->open(img, err);
    if (r < 0) {
        img->priv = NULL;    /* a failed open cleans up after itself */
        vd_error_prefix(err, img->path);
        goto fail;
    }
    if (depth == 0 && o && o->snapshot) {
        if (!img->drv->load_snapshot) {
            r = vd_set_error(err, -ENOTSUP, "%s: format %s has no internal snapshots",
                             img->path, img->drv->name);
            goto fail;
        }
        if (!readonly) {
            r = vd_set_error(err, -EROFS, "%s: snapshots are opened read-only",
                             img->path);
            goto fail;
        }
        r = img->drv->load_snapshot(img, o->snapshot, err);
        if (r < 0) {
            vd_error_prefix(err, img->path);
            goto fail;
        }
    }
    if (img->size > VD_MAX_VIRTUAL_SIZE) {
        r = vd_set_error(err, -EFBIG, "%s: virtual size 0x%llx too large", img->path,
                         (unsigned long long)img->size);
        goto fail;
    }
    if (img->backing_file && !(o && o->no_backing) && img->file && img->file->win) {
        r = vd_set_error(err, -EPERM, "%s: has a backing file ('%s'), which an image read "
                         "from a window of a file (an archive member) cannot open",
                         img->path, img->backing_file);
        goto fail;
    }
    if (img->backing_file && !(o && o->no_backing)) {
        vd_image *nchain[VD_MAX_CHAIN_DEPTH];
        for (int i = 0; i < depth; i++)
            nchain[i] = chain[i];
        nchain[depth] = img;
        r = vd_open_backing(img, o, nchain, err);
        if (r < 0) {
            /* A too deep or looping chain: named once, by its top file. */
            if (r != -ELOOP || depth == 0)
                vd_error_prefix(err, img->path);
            goto fail;
        }
    }
    *out = img;
    return 0;
fail:
    vd_image_free(img);
    return r;
}

int vd_open(const char *path, const vd_open_opts *opts, vd_image **out,
            vd_error *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = 0;
    }
    *out = NULL;
    if (opts && !opts->window_length && opts->window_offset)
        return vd_set_error(err, -EINVAL, "%s: window offset 0x%llx without a length", path,
                            (unsigned long long)opts->window_offset);
    if (opts && opts->window_length && vd_is_uri(path))
        return vd_set_error(err, -EINVAL, "%s: a window needs a file", path);
    /* A window is read in place, never written. */
    bool ro = (opts && opts->readonly) || (opts && opts->snapshot) ||
              (opts && opts->window_length);
    return vd_open_layer(path, NULL, opts, ro, opts ? opts->format : NULL, NULL, 0, out, err);
}

int vd_close(vd_image *img, vd_error *err)
{
    int ret = 0;
    while (img) {
        vd_image *below = img->backing;
        if (!img->readonly) {
            int r = vd_flush(img, err);
            if (r < 0 && !ret)
                ret = r;
        }
        vd_image_free(img);
        img = below;
    }
    return ret;
}

static bool vd_path_exists(const char *p)
{
    struct stat st;
    return lstat(p, &st) == 0;
}

int vd_create(const char *path, const vd_create_opts *o, vd_error *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = 0;
    }
    const struct vd_driver *d = vd_find_driver(o->format);
    if (!d)
        return vd_set_error(err, -EINVAL, "unknown format '%s'", o->format ? o->format : "(none)");
    if (!d->create)
        return vd_set_error(err, -ENOTSUP, "format %s: creating images is not supported", d->name);
    if (vd_is_uri(path))
        return vd_set_error(err, -EEXIST, "%s: an NBD export already exists: write to it "
                            "as an existing target (vdconvert -n)", path);
    if (vd_path_exists(path))
        return vd_set_error(err, -EEXIST, "%s: already exists", path);

    vd_kvlist *kv = NULL;
    vd_image *backing = NULL;
    int r = vd_kvlist_parse(o->options, &kv, err);
    if (r < 0)
        return r;
    uint64_t size = o->size;
    if (o->backing_file) {
        /* Only its size and format are read, so a running VM's base does
         * not stop us (as with qemu-img create -b). */
        vd_open_opts bo = { .readonly = true, .format = o->backing_format,
                            .allow_host_paths = o->allow_host_paths,
                            .force_share = true };
        r = vd_open_related(o->final_path ? o->final_path : path, o->backing_file, &bo,
                            &backing, err);
        if (r < 0)
            goto out;
        if (!size)
            size = backing->size;
    }
    struct vd_create_args a = {
        .path = path, .size = size, .backing_file = o->backing_file,
        .backing_format = o->backing_format ? o->backing_format
                          : (backing ? backing->drv->name : NULL),
        .backing = backing, .opts = kv,
    };
    vd_file_create_unsynced(o->no_sync);
    r = d->create(&a, err);
    vd_file_create_unsynced(false);
    if (r == 0) {
        const char *unused = vd_kvlist_unused(kv);
        if (unused) {
            r = vd_set_error(err, -EINVAL, "format %s: unknown option '%s' (see -o help)",
                             d->name, unused);
            unlink(path);
        }
    } else {
        vd_error_prefix(err, path);
    }
out:
    if (backing)
        vd_close(backing, NULL);
    vd_kvlist_free(kv);
    return r;
}

int vd_get_info(vd_image *img, vd_info *info)
{
    memset(info, 0, sizeof *info);
    info->format = img->drv->name;
    info->filename = img->path;
    info->virtual_size = img->size;
    info->disk_size = img->drv->disk_size ? img->drv->disk_size(img)
                      : img->file ? vd_file_allocated(img->file) : 0;
    info->cluster_size = img->cluster_size;
    info->backing_file = img->backing_file;
    info->backing_format = img->backing_format;
    info->backing_path = img->backing_path;
    info->readonly = img->readonly;
    info->dirty = img->dirty;
    info->probed_raw = img->probed_raw;
    int n = vd_list_snapshots(img, NULL, 0);
    info->n_snapshots = n > 0 ? (size_t)n : 0;
    return 0;
}

void vd_get_format_details(vd_image *img, vd_kv_fn fn, void *ctx)
{
    if (img->drv->details)
        img->drv->details(img, fn, ctx);
}

int vd_list_snapshots(vd_image *img, vd_snapshot_info *out, size_t max)
{
    if (!img->drv->list_snapshots)
        return 0;
    for (size_t i = 0; out && i < max; i++)
        out[i].icount = UINT64_MAX;      /* drivers that know it set it */
    return img->drv->list_snapshots(img, out, max);
}

int vd_snapshot(vd_image *img, enum vd_snapshot_op op, const char *name, vd_error *err)
{
    if (!img->drv->snapshot)
        return vd_set_error(err, -ENOTSUP, "%s: format %s has no internal snapshots",
                            img->path, img->drv->name);
    if (img->readonly)
        return vd_set_error(err, -EROFS, "%s: opened read-only", img->path);
    if (!name || !*name || strlen(name) > 255)
        return vd_set_error(err, -EINVAL, "%s: a snapshot name must have 1 to 255 bytes",
                            img->path);
    pthread_rwlock_wrlock(&img->lock);
    int r = img->drv->snapshot(img, op, name, err);
    pthread_rwlock_unlock(&img->lock);
    if (r < 0)
        vd_error_prefix(err, img->path);
    return r < 0 ? r : 0;
}

int vd_check(vd_image *img, unsigned flags, vd_check_result *res, vd_error *err)
{
    memset(res, 0, sizeof *res);
    if (!img->drv->check)
        return vd_set_error(err, -ENOTSUP, "%s: format %s has no consistency check",
                            img->path, img->drv->name);
    if (flags && img->readonly)
        return vd_set_error(err, -EROFS, "%s: repair needs the image opened read-write",
                            img->path);
    pthread_rwlock_wrlock(&img->lock);
    int r = img->drv->check(img, flags, res, err);
    pthread_rwlock_unlock(&img->lock);
    if (r < 0)
        vd_error_prefix(err, img->path);
    return r;
}

vd_image *vd_backing(vd_image *img) { return img->backing; }
uint64_t vd_size(vd_image *img) { return img->size; }
const char *vd_format_name(vd_image *img) { return img->drv->name; }
const char *vd_filename(vd_image *img) { return img->path; }

static const char *vd_format_opts_help(const char *format, bool amend)
{
    static __thread char buf[4096];
    const struct vd_driver *d = vd_find_driver(format);
    buf[0] = 0;
    if (!d)
        return NULL;
    size_t n = 0;
    for (const vd_opt_desc *od = amend ? d->amend_opts : d->create_opts; od && od->name; od++) {
        int w = snprintf(buf + n, sizeof buf - n, "%s\t%s\n", od->name, od->help);
        if (w < 0 || (size_t)w >= sizeof buf - n)
            break;
        n += (size_t)w;
    }
    return buf;
}

const char *vd_format_create_help(const char *format)
{
    return vd_format_opts_help(format, false);
}

const char *vd_format_amend_help(const char *format)
{
    return vd_format_opts_help(format, true);
}
