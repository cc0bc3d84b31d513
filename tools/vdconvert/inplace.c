/* inplace.c - rebase, rebase -u and the emptying step of commit on the
 * image's own file, through vd_set_backing / vd_make_empty.  The image
 * keeps its inode (mode, owner, xattrs, hard links) and a process holding
 * it open keeps seeing the same file.
 *
 * Safe rebase order: first the clusters whose content differs between the
 * old and the new backing are copied into the image (its guest view does
 * not change: it shows the same bytes from its own layer), synced; then
 * the reference is switched with one metadata write.  A crash before the
 * switch leaves the old chain with the same view; after it, the new one. */
#include "vdconvert.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

char *vc_backing_path(const char *img, const char *name)
{
    const char *slash = strrchr(img, '/');
    size_t n = strlen(name) + (slash ? (size_t)(slash - img) + 2 : 1);
    char *p = malloc(n);
    if (p && name[0] != '/' && slash)
        snprintf(p, n, "%.*s/%s", (int)(slash - img), img, name);
    else if (p)
        snprintf(p, n, "%s", name);
    return p;
}

/* Copy into `img` (read-write, old chain open) every unit of guest data
 * not held by img itself whose content under `nb` (NULL: zeroes) differs. */
static int vc_rebase_copy(vd_image *img, vd_image *nb, vd_error *e)
{
    vd_info i;
    vd_get_info(img, &i);
    uint64_t unit = i.cluster_size ? i.cluster_size : 65536, size = vd_size(img);
    uint64_t nsize = nb ? vd_size(nb) : 0;
    size_t chunk = unit > (1u << 20) ? unit : (1u << 20) / unit * unit;
    uint8_t *a = malloc(chunk), *b = malloc(chunk);
    vd_extents ext;
    vd_extents_init(&ext);
    int r = a && b ? 0 : vd_set_error(e, -ENOMEM, "rebase: out of memory");
    for (uint64_t off = 0; r == 0 && off < size;) {
        uint64_t len = size - off < chunk ? size - off : chunk;
        vd_extents_clear(&ext);
        if ((r = vd_block_status(img, off, len, &ext, e)) < 0)
            break;
        const vd_extent *x = &ext.v[0];
        uint64_t n = x->len < len ? x->len : len;
        if (x->depth == 0) {         /* the image's own data stays */
            off += n;
            continue;
        }
        /* whole units around [off, off+n) */
        uint64_t s0 = off / unit * unit, e0 = (off + n + unit - 1) / unit * unit;
        if (e0 > size)
            e0 = size;
        if (e0 - s0 > chunk)
            e0 = s0 + chunk;
        size_t l = (size_t)(e0 - s0);
        if ((r = vd_pread(img, a, l, s0, e)) < 0)
            break;
        memset(b, 0, l);
        if (nb && s0 < nsize &&
            (r = vd_pread(nb, b, (size_t)((e0 < nsize ? e0 : nsize) - s0), s0, e)) < 0)
            break;
        for (size_t u = 0; r == 0 && u < l; u += unit) {
            size_t m = l - u < unit ? l - u : (size_t)unit;
            if (!memcmp(a + u, b + u, m))
                continue;
            if (vc_is_zero(a + u, m))
                r = vd_pwrite_zeroes(img, s0 + u, m, 0, e);
            else
                r = vd_pwrite(img, a + u, m, s0 + u, e);
        }
        off = e0 > off + n ? e0 : off + n;
    }
    vd_extents_free(&ext);
    free(a);
    free(b);
    return r;
}

int vc_rebase_inplace(const char *path, const char *fmt, const char *nb, const char *nbf,
                      bool unsafe, bool allow, vd_error *e)
{
    vd_image *img, *nimg = NULL;
    int r = vd_open(path, &(vd_open_opts){ .format = fmt, .no_backing = unsafe,
                    .allow_host_paths = allow }, &img, e);
    if (r < 0)
        return r;
    if (!(vd_inplace_ops(img) & VD_INPLACE_SET_BACKING)) {
        vd_close(img, NULL);
        return vd_set_error(e, -ENOSYS, "%s: no in-place backing change", path);
    }
    if (nb && !*nb)
        nb = NULL;
    if (!unsafe && nb) {
        char *p = vc_backing_path(path, nb);
        r = p ? vc_open(p, nbf, true, allow, &nimg, e) : vd_set_error(e, -ENOMEM, "out of memory");
        free(p);
    }
    if (r == 0 && !unsafe)
        r = vc_rebase_copy(img, nimg, e);
    if (r == 0)
        r = vd_flush(img, e);
    if (r == 0)
        r = vd_set_backing(img, nb, nb ? nbf : NULL, e);
    if (nimg)
        vd_close(nimg, NULL);
    int r2 = vd_close(img, r < 0 ? NULL : e);
    return r < 0 ? r : r2;
}

int vc_commit_finish(const char *path, const char *fmt, bool keep, bool allow, vd_error *e)
{
    vd_image *img;
    int r = vd_open(path, &(vd_open_opts){ .format = fmt, .no_backing = true,
                    .allow_host_paths = allow }, &img, e);
    if (r < 0)
        return r;
    unsigned ops = vd_inplace_ops(img);
    vd_info i;
    vd_get_info(img, &i);
    /* Without the operation, the caller rewrites the overlay emptied. */
    if (!keep && !(ops & VD_INPLACE_MAKE_EMPTY)) {
        vd_close(img, NULL);
        return vd_set_error(e, -ENOSYS, "%s: no in-place emptying or relinking", path);
    }
    /* The base was written: formats that link a delta to its parent's
     * content (VMDK parentCID, VHDX parent_linkage) store the new link. */
    char *bf = i.backing_file ? strdup(i.backing_file) : NULL;
    char *bfmt = i.backing_format ? strdup(i.backing_format) : NULL;
    if ((ops & VD_INPLACE_SET_BACKING) && bf)
        r = vd_set_backing(img, bf, bfmt, e);
    if (r == 0 && !keep)
        r = vd_make_empty(img, e);
    free(bf);
    free(bfmt);
    int r2 = vd_close(img, r < 0 ? NULL : e);
    return r < 0 ? r : r2;
}
