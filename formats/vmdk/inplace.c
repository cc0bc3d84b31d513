/* inplace.c - the in-place metadata operations of VMDK: the parent link of
 * a delta disk (parentFileNameHint and parentCID in the descriptor), and
 * emptying a delta after a commit.  Growing is in resize.c.
 *
 * Crash ordering (docs/flush.md): the descriptor is written with one write
 * (an embedded one into its reserved sectors; a descriptor file padded
 * with blank lines to at least its old length, never truncated, so that no
 * old line survives past the new text).  Emptying clears the grain tables
 * with their grains left unreferenced. */
#include "vmdk.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The descriptor text with parentCID and parentFileNameHint replaced. */
static char *vmdk_ip_text(const struct vmdk_desc *d, uint32_t pcid, const char *hint)
{
    size_t cap = d->len + (hint ? strlen(hint) : 0) + 64, o = 0;
    char *t = malloc(cap);
    if (!t)
        return NULL;
    const char *p = d->text, *end = d->text + d->len;
    bool done = false;
    while (p < end) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        size_t n = e ? (size_t)(e - p) + 1 : (size_t)(end - p);
        bool pc = !strncmp(p, "parentCID", 9), ph = !strncmp(p, "parentFileNameHint", 18);
        if (pc && !done) {
            o += (size_t)snprintf(t + o, cap - o, "parentCID=%08" PRIx32 "\n", pcid);
            if (hint)
                o += (size_t)snprintf(t + o, cap - o, "parentFileNameHint=\"%s\"\n", hint);
            done = true;
        } else if (!pc && !ph) {
            memcpy(t + o, p, n);
            o += n;
        }
        p += n;
    }
    t[o] = 0;
    return t;
}

int vmdk_set_backing(vd_image *img, const char *file, const char *fmt, vd_error *err)
{
    struct vmdk *v = img->priv;
    if (fmt && strcmp(fmt, "vmdk"))
        return vd_set_error(err, -ENOTSUP, "vmdk: the parent of a VMDK delta must be a "
                            "VMDK disk, not %s", fmt);
    if (file && strpbrk(file, "\"\n\r"))
        return vd_set_error(err, -EINVAL, "vmdk: a parent name cannot hold quotes or line ends");
    if (!strstr(v->desc.text, "parentCID"))
        return vd_set_error(err, -ENOTSUP, "vmdk: the descriptor has no parentCID line");
    uint32_t pcid = 0xffffffffu;
    if (file) {
        /* Read through the descriptor the confined open returns: nothing
         * can swap the name between a check and the read. */
        vd_file *pf;
        int r = vd_file_open_beneath(img->path, file, img->allow_host_paths, true, false,
                                     &pf, err);
        if (r == 0) {
            r = vmdk_read_cid_file(pf, &pcid, err);
            vd_file_close(pf);
        }
        if (r < 0)
            return r;
    }
    char *text = vmdk_ip_text(&v->desc, pcid, file);
    if (!text)
        return vd_set_error(err, -ENOMEM, "out of memory");
    if (strlen(text) == v->desc.len && !memcmp(text, v->desc.text, v->desc.len)) {
        free(text);         /* the same link (a commit's relink): no write */
        return 0;
    }
    struct vmdk_desc nd;
    int r = vmdk_desc_parse(&nd, text, strlen(text), img->path, err);
    free(text);
    if (r < 0)
        return r;
    size_t old_len = v->desc.len;
    struct vmdk_desc od = v->desc;
    v->desc = nd;
    r = vmdk_write_descriptor(img, v, old_len, err);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r < 0) {
        v->desc = od;
        vmdk_desc_free(&nd);
    } else {
        vmdk_desc_free(&od);
        v->parent_checked = false;
    }
    return r;
}

int vmdk_make_empty(vd_image *img, vd_error *err)
{
    struct vmdk *v = img->priv;
    for (size_t i = 0; i < v->n_ext; i++)
        if (v->ext[i].type != VMDK_EXT_SPARSE || v->stream || v->ext[i].readonly)
            return vd_set_error(err, -ENOTSUP, "vmdk: only hosted sparse extents can be "
                                "emptied in place (%s has a %s extent)", img->path,
                                v->ext[i].type == VMDK_EXT_FLAT ? "flat" : "read-only");
    int r = 0;
    for (size_t i = 0; r == 0 && i < v->n_ext; i++)
        r = vmdk_sparse_make_empty(&v->ext[i], err);
    return r;
}
