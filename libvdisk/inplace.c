/* inplace.c - the in-place metadata operations of the public API:
 * vd_resize, vd_set_backing, vd_make_empty, vd_prepare_commit, vd_amend.
 * The core checks the request, flushes, and calls the driver under the
 * image's write lock; the driver orders its own writes (docs/flush.md). */
#include "vd-driver.h"
#include "vd-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int vd_inplace_check(vd_image *img, bool hook, const char *what, vd_error *err)
{
    if (img->readonly)
        return vd_set_error(err, -EROFS, "%s: opened read-only", img->path);
    if (!hook)
        return vd_set_error(err, -ENOSYS, "%s: format %s cannot %s in place", img->path,
                            img->drv->name, what);
    return 0;
}

/* Flush, then run `op` with the image write-locked. */
static int vd_inplace_prepare(vd_image *img, vd_error *err)
{
    int r = img->drv->flush ? img->drv->flush(img, err) : vd_file_sync(img->file, err);
    if (r < 0)
        vd_error_prefix(err, img->path);
    return r;
}

int vd_resize(vd_image *img, uint64_t size, unsigned flags, vd_error *err)
{
    int r = vd_inplace_check(img, img->drv->resize, "be resized", err);
    if (r < 0)
        return r;
    uint64_t old = img->size;
    if (size == old)
        return 0;
    if (size == 0 || size > VD_MAX_VIRTUAL_SIZE)
        return vd_set_error(err, -EINVAL, "%s: new size %llu out of range", img->path,
                            (unsigned long long)size);
    if (size < old && !(flags & VD_RESIZE_SHRINK))
        return vd_set_error(err, -EINVAL, "%s: shrinking from %llu to %llu bytes loses data "
                            "(VD_RESIZE_SHRINK / --shrink)", img->path,
                            (unsigned long long)old, (unsigned long long)size);
    /* The allocation unit holding the end keeps bytes past it: a shrink
     * leaves the rest of that unit in the file, and so may another tool.
     * Zeroing them before the size changes would leave a crash between the
     * two with neither view (the old size, its end zeroed), so the drivers
     * that let the core do it (resize_zero_tail) get: before a grow, the
     * unit's rest past the old size zeroed and synced while still hidden;
     * after a shrink, once the new size rules, the rest past the new end
     * (hidden from then on; the next grow zeroes it again anyway). */
    uint64_t cs = img->drv->resize_zero_tail ? img->cluster_size : 0;
    pthread_rwlock_wrlock(&img->lock);
    r = vd_inplace_prepare(img, err);
    if (r == 0 && cs && size > old && old % cs) {
        r = vd_zero_past_end_locked(img, old, vd_round_up(old, cs), err);
        if (r == 0)
            r = vd_inplace_prepare(img, err);
    }
    bool zeroed = false;
    if (r == 0 && (r = img->drv->resize(img, size, err)) < 0)
        vd_error_prefix(err, img->path);
    if (r > 0) {
        zeroed = true;
        r = 0;
    }
    if (r == 0 && cs && size < old && size % cs)
        r = vd_zero_past_end_locked(img, size, vd_round_up(size, cs), err);
    pthread_rwlock_unlock(&img->lock);
    if (r < 0)
        return r;
    /* Grown over a larger backing image: the new range must read as
     * zeroes, not as what the backing holds there.  Drivers with zero
     * markers did it before the size change (zeroed); for the others it
     * comes after, and a crash in between shows the backing there. */
    vd_image *b = img->backing;
    if (!zeroed && size > old && b && b->size > old) {
        uint64_t end = b->size < size ? b->size : size;
        r = vd_pwrite_zeroes(img, old, end - old, 0, err);
    }
    if (r == 0)
        r = vd_flush(img, err);
    return r;
}

static int vd_strdup_or_null(const char *s, char **out)
{
    *out = NULL;
    if (s && *s && !(*out = strdup(s)))
        return -ENOMEM;
    return 0;
}

int vd_set_backing(vd_image *img, const char *file, const char *fmt, vd_error *err)
{
    int r = vd_inplace_check(img, img->drv->set_backing, "change its backing file", err);
    if (r < 0)
        return r;
    if (file && !*file)
        file = NULL;
    if (!file)
        fmt = NULL;
    if (fmt && !*fmt)
        fmt = NULL;
    char *nf, *nfmt;
    if (vd_strdup_or_null(file, &nf) < 0 || vd_strdup_or_null(fmt, &nfmt) < 0) {
        free(nf);
        return vd_set_error(err, -ENOMEM, "%s: out of memory", img->path);
    }
    pthread_rwlock_wrlock(&img->lock);
    r = vd_inplace_prepare(img, err);
    if (r == 0 && (r = img->drv->set_backing(img, file, fmt, err)) < 0)
        vd_error_prefix(err, img->path);
    if (r == 0) {
        free(img->backing_file);
        free(img->backing_format);
        img->backing_file = nf;
        img->backing_format = nfmt;
        nf = nfmt = NULL;
    }
    pthread_rwlock_unlock(&img->lock);
    free(nf);
    free(nfmt);
    return r;
}

int vd_make_empty(vd_image *img, vd_error *err)
{
    int r = vd_inplace_check(img, img->drv->make_empty, "be emptied", err);
    if (r < 0)
        return r;
    if (!img->backing_file)
        return vd_set_error(err, -EINVAL, "%s: has no backing file; emptying it would lose its data",
                            img->path);
    pthread_rwlock_wrlock(&img->lock);
    r = vd_inplace_prepare(img, err);
    if (r == 0 && (r = img->drv->make_empty(img, err)) < 0)
        vd_error_prefix(err, img->path);
    pthread_rwlock_unlock(&img->lock);
    return r;
}

int vd_prepare_commit(vd_image *img, vd_image *base, vd_error *err)
{
    if (!img->drv->prepare_commit)
        return 0;
    if (img->readonly || base->readonly)
        return vd_set_error(err, -EROFS, "%s: opened read-only",
                            img->readonly ? img->path : base->path);
    /* base is not written yet (the caller's order); its handle is locked
     * too, as its driver state changes */
    pthread_rwlock_wrlock(&img->lock);
    pthread_rwlock_wrlock(&base->lock);
    int r = vd_inplace_prepare(img, err);
    if (r == 0 && (r = img->drv->prepare_commit(img, base, err)) < 0)
        vd_error_prefix(err, img->path);
    pthread_rwlock_unlock(&base->lock);
    pthread_rwlock_unlock(&img->lock);
    return r;
}

unsigned vd_inplace_ops(vd_image *img)
{
    return (img->drv->resize ? VD_INPLACE_RESIZE : 0) |
           (img->drv->set_backing ? VD_INPLACE_SET_BACKING : 0) |
           (img->drv->make_empty ? VD_INPLACE_MAKE_EMPTY : 0) |
           (img->drv->prepare_commit ? VD_INPLACE_PREPARE_COMMIT : 0) |
           (img->drv->amend ? VD_INPLACE_AMEND : 0);
}

int vd_amend(vd_image *img, const char *options, vd_progress_fn progress, void *progress_ctx,
             vd_error *err)
{
    const struct vd_driver *d = img->drv;
    if (!d->amend)
        return vd_set_error(err, -ENOTSUP, "%s: Format driver '%s' does not support option amendment",
                            img->path, d->name);
    if (img->readonly)
        return vd_set_error(err, -EROFS, "%s: opened read-only", img->path);
    vd_kvlist *kv = NULL;
    int r = vd_kvlist_parse(options, &kv, err);
    if (r < 0)
        return r == -ENOMEM ? vd_set_error(err, r, "%s: out of memory", img->path) : r;
    if (!vd_kvlist_any(kv)) {
        vd_kvlist_free(kv);
        return vd_set_error(err, -EINVAL, "Must specify options (-o)");
    }
    /* Every key known before the driver writes anything (qemu-img's
     * messages: a creation-only option is named as such). */
    const char *bad = vd_kvlist_first_not_in(kv, d->amend_opts);
    if (bad) {
        bool create_only = false;
        for (const vd_opt_desc *o = d->create_opts; o && o->name; o++)
            create_only |= !strcmp(o->name, bad);
        r = vd_set_error(err, -EINVAL, "%s: Invalid parameter '%s'%s", img->path, bad,
                         create_only ? ": this option is only supported for image creation" : "");
        vd_kvlist_free(kv);
        return r;
    }
    pthread_rwlock_wrlock(&img->lock);
    r = vd_inplace_prepare(img, err);
    if (r == 0 && (r = d->amend(img, kv, progress, progress_ctx, err)) < 0)
        vd_error_prefix(err, img->path);
    pthread_rwlock_unlock(&img->lock);
    vd_kvlist_free(kv);
    return r;
}
