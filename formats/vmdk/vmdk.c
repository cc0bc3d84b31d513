/* vmdk.c - the VMDK driver table: probing, opening (descriptor -> extents,
 * parent link and CID check), I/O dispatched to extents, block status,
 * flush, CID update on the first write, info.
 *
 * Subformats read: monolithicSparse, monolithicFlat, twoGbMaxExtentSparse,
 * twoGbMaxExtentFlat, streamOptimized, vmfs, vmfsThin, custom descriptors
 * mixing FLAT/VMFS/SPARSE/ZERO extents, and delta disks (parentCID +
 * parentFileNameHint) whose parent the core opens as the backing image.
 * Refused with a message naming the type: vmfsSparse (COWD), seSparse, raw
 * device maps and physical devices. */
#include "vmdk.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

extern const struct vd_driver vd_vmdk;

static int vmdk_probe(const uint8_t *head, size_t len, const uint8_t *tail,
                      size_t tail_len, uint64_t file_size)
{
    (void)tail; (void)tail_len; (void)file_size;
    if (len >= 4 && (vd_le32(head) == VMDK_MAGIC || vd_le32(head) == VMDK_COWD_MAGIC))
        return 100;
    if (len >= 8 && vd_le64(head) == VMDK_SESPARSE_MAGIC)
        return 100;                /* a bare ESXi seSparse extent */
    if (vmdk_desc_probe(head, len))
        return 100;
    return 0;
}

static void vmdk_close(vd_image *img)
{
    struct vmdk *v = img->priv;
    if (!v)
        return;
    if (v->stream)
        vmdk_stream_free(v->stream);
    for (size_t i = 0; i < v->n_ext; i++) {
        vmdk_sparse_close(&v->ext[i]);
        vmdk_sesparse_close(&v->ext[i]);
        if (v->ext[i].own_file)
            vd_file_close(v->ext[i].file);
        free(v->ext[i].name);
    }
    free(v->ext);
    vmdk_desc_free(&v->desc);
    free(v);
    img->priv = NULL;
}

/* Open the sparse extent in `e->file` from its header. */
static int vmdk_open_sparse_file(vd_image *img, struct vmdk_extent *e, bool *fresh_stream,
                                 struct vmdk_header *hout, vd_error *err)
{
    uint8_t b[VMDK_SECTOR];
    int64_t fsize = vd_file_size(e->file, err);
    if (fsize < 0)
        return (int)fsize;
    if (fsize < (int64_t)VMDK_SECTOR)
        return vd_set_error(err, -EINVAL, "vmdk: %s: sparse extent shorter than its header",
                            e->file->path);
    int r = vd_file_pread(e->file, b, sizeof b, 0, err);
    if (r < 0)
        return r;
    if (vd_le32(b) == VMDK_COWD_MAGIC)
        return vd_set_error(err, -ENOTSUP, "vmdk: %s: vmfsSparse (COWD) extents are not "
                            "supported", e->file->path);
    if (vd_le64(b) == VMDK_SESPARSE_MAGIC)
        return vd_set_error(err, -ENOTSUP, "vmdk: %s: seSparse extents (createType "
                            "seSparse) are not supported", e->file->path);
    struct vmdk_header h;
    r = vmdk_header_parse(b, &h, e->file->path, (uint64_t)fsize, err);
    if (r < 0)
        return r;
    *hout = h;
    /* A streamOptimized file we just created has only its header and
     * descriptor: it is written sequentially, not opened as a sparse file
     * (read-only, it is an empty disk). */
    if (h.gd_off == VMDK_GD_AT_END && (h.flags & VMDK_FLAG_COMPRESSED) &&
        (uint64_t)fsize <= h.overhead * VMDK_SECTOR) {
        *fresh_stream = true;
        return 0;
    }
    /* An empty finished stream (`vdconvert create`): the first marker after
     * the header is the grain directory's, so no grain was ever written;
     * opened read-write it is written again from the start. */
    if (h.gd_off == VMDK_GD_AT_END && (h.flags & VMDK_FLAG_COMPRESSED) && !img->readonly &&
        (uint64_t)fsize > h.overhead * VMDK_SECTOR) {
        uint8_t m[16];
        r = vd_file_pread(e->file, m, sizeof m, h.overhead * VMDK_SECTOR, err);
        if (r < 0)
            return r;
        if (vd_le32(m + 8) == 0 && vd_le32(m + 12) == VMDK_MARKER_GD) {
            *fresh_stream = true;
            return 0;
        }
    }
    return vmdk_sparse_open(e, &h, err);
}

static int vmdk_add_extent(struct vmdk *v, struct vmdk_extent **out, vd_error *err)
{
    if (v->n_ext >= VMDK_MAX_EXTENTS)
        return vd_set_error(err, -EINVAL, "vmdk: more than %u extents", VMDK_MAX_EXTENTS);
    struct vmdk_extent *n = realloc(v->ext, (v->n_ext + 1) * sizeof *n);
    if (!n)
        return vd_set_error(err, -ENOMEM, "out of memory");
    v->ext = n;
    *out = &v->ext[v->n_ext++];
    memset(*out, 0, sizeof **out);
    return 0;
}

static const char *const vmdk_refused_types[] = {
    "vmfsSparse", "vmfsRDM", "vmfsRaw", "vmfsRawDeviceMap",
    "vmfsPassthroughRawDeviceMap", "fullDevice", "partitionedDevice", NULL,
};

/* One extent line of a separate descriptor. */
int vmdk_open_desc_extent(vd_image *img, struct vmdk *v,
                                 const struct vmdk_desc_extent *d, uint64_t start,
                                 vd_error *err)
{
    const char *t = d->type;
    bool flat = !strcmp(t, "FLAT") || !strcmp(t, "VMFS");
    if (strcmp(d->access, "RW") && strcmp(d->access, "RDONLY"))
        return vd_set_error(err, -ENOTSUP, "vmdk: extent access %s is not supported",
                            d->access);
    if (!flat && strcmp(t, "ZERO") && strcmp(t, "SPARSE") && strcmp(t, "SESPARSE"))
        return vd_set_error(err, -ENOTSUP, "vmdk: %s extents (createType %s) are not "
                            "supported", t, v->desc.create_type);
    struct vmdk_extent *e = NULL;   /* set on success (gcc -O3 cannot see it) */
    int r = vmdk_add_extent(v, &e, err);
    if (r < 0)
        return r;
    e->start = start;
    e->sectors = d->sectors;
    e->readonly = img->readonly || !strcmp(d->access, "RDONLY");
    if (!strcmp(t, "ZERO")) {
        e->type = VMDK_EXT_ZERO;
        return 0;
    }
    if (!d->name)
        return vd_set_error(err, -EINVAL, "vmdk: %s extent without a file name", t);
    e->name = strdup(d->name);
    if (!e->name)
        return vd_set_error(err, -ENOMEM, "out of memory");
    r = vd_file_open_related(img, d->name, e->readonly, &e->file, err);
    if (r < 0)
        return r;
    e->own_file = true;
    if (flat) {
        e->type = VMDK_EXT_FLAT;
        e->flat_off = d->offset * VMDK_SECTOR;
        return 0;
    }
    if (!strcmp(t, "SESPARSE")) {
        e->type = VMDK_EXT_SESPARSE;
        uint64_t want = e->sectors;
        r = vmdk_sesparse_open(e, err);
        if (r == 0 && e->sectors != want)
            r = vd_set_error(err, -EINVAL, "vmdk: %s: seSparse capacity %" PRIu64 " sectors, "
                             "descriptor says %" PRIu64, e->file->path, e->sectors, want);
        return r;
    }
    e->type = VMDK_EXT_SPARSE;
    bool fresh = false;
    struct vmdk_header h;
    r = vmdk_open_sparse_file(img, e, &fresh, &h, err);
    if (r == 0 && fresh)
        r = vd_set_error(err, -EINVAL, "vmdk: %s: streamOptimized extent has no grain "
                         "directory yet", e->file->path);
    return r;
}

static int vmdk_open_descriptor_file(vd_image *img, struct vmdk *v, uint64_t fsize,
                                     vd_error *err)
{
    if (fsize > VMDK_MAX_DESC_BYTES)
        return vd_set_error(err, -EINVAL, "vmdk: descriptor file of %" PRIu64 " bytes is "
                            "larger than %u", fsize, VMDK_MAX_DESC_BYTES);
    char *text = malloc(fsize + 1);
    if (!text)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vd_file_pread(img->file, text, fsize, 0, err);
    if (r == 0)
        r = vmdk_desc_parse(&v->desc, text, fsize, "descriptor", err);
    free(text);
    if (r < 0)
        return r;
    for (const char *const *p = vmdk_refused_types; *p; p++)
        if (!strcmp(v->desc.create_type, *p))
            return vd_set_error(err, -ENOTSUP, "vmdk: createType %s is not supported",
                                *p);
    if (!v->desc.n_ext)
        return vd_set_error(err, -EINVAL, "vmdk: descriptor lists no extents");
    uint64_t start = 0;
    for (size_t i = 0; i < v->desc.n_ext; i++) {
        r = vmdk_open_desc_extent(img, v, &v->desc.ext[i], start, err);
        if (r < 0)
            return r;
        if (vd_add_overflow(start, v->desc.ext[i].sectors, &start) ||
            start > VD_MAX_VIRTUAL_SIZE / VMDK_SECTOR)
            return vd_set_error(err, -EINVAL, "vmdk: descriptor extents add up to more "
                                "than the largest supported disk");
    }
    img->size = start * VMDK_SECTOR;
    return 0;
}

/* A file that starts with a sparse header: one extent, itself.  Its
 * embedded descriptor may name another file; like VMware and qemu we ignore
 * the name (monolithic files are often renamed). */
static int vmdk_open_monolithic(vd_image *img, struct vmdk *v, vd_error *err)
{
    struct vmdk_extent *e = NULL;   /* set on success (gcc -O3 cannot see it) */
    int r = vmdk_add_extent(v, &e, err);
    if (r < 0)
        return r;
    e->type = VMDK_EXT_SPARSE;
    e->file = img->file;
    e->readonly = img->readonly;
    uint8_t m[8];
    r = vd_file_pread(img->file, m, sizeof m, 0, err);
    if (r < 0)
        return r;
    if (vd_le64(m) == VMDK_SESPARSE_MAGIC) {
        /* a bare seSparse extent (its descriptor lost or not given) */
        e->type = VMDK_EXT_SESPARSE;
        r = vmdk_sesparse_open(e, err);
        img->size = e->sectors * VMDK_SECTOR;
        img->cluster_size = 4096;
        return r;
    }
    bool fresh = false;
    struct vmdk_header h;
    r = vmdk_open_sparse_file(img, e, &fresh, &h, err);
    if (r < 0)
        return r;
    e->sectors = h.capacity;
    img->size = h.capacity * VMDK_SECTOR;
    img->cluster_size = (uint32_t)(h.grain * VMDK_SECTOR);
    if (h.desc_off && h.desc_size) {
        uint64_t n = h.desc_size * VMDK_SECTOR;
        char *text = malloc(n + 1);
        if (!text)
            return vd_set_error(err, -ENOMEM, "out of memory");
        r = vd_file_pread_zfill(img->file, text, n, h.desc_off * VMDK_SECTOR, err);
        if (r == 0)
            r = vmdk_desc_parse(&v->desc, text, n, "embedded descriptor", err);
        free(text);
        if (r < 0)
            return r;
        v->desc_embedded = true;
        v->desc_off = h.desc_off * VMDK_SECTOR;
        v->desc_room = n;
    }
    if (fresh)
        return vmdk_stream_begin(img, e, &h, err);
    return 0;
}

/* A delta disk: the parent (named by parentFileNameHint) is the backing
 * file, opened by the core. */
static int vmdk_open_parent(vd_image *img, struct vmdk *v, vd_error *err)
{
    if (v->desc.parent_cid == 0xffffffffu || !v->desc.parent_hint)
        return 0;
    img->backing_file = strdup(v->desc.parent_hint);
    img->backing_format = strdup("vmdk");
    if (!img->backing_file || !img->backing_format)
        return vd_set_error(err, -ENOMEM, "out of memory");
    return 0;
}

/* The parent's CID must be the one this delta was made against, or the
 * parent changed since and the delta's grains no longer fit it.  Checked
 * on first I/O (like qemu), once the core has opened the parent, so that
 * opening without the backing chain (info, rebase, rewriting a delta after
 * a commit) still works. */
static int vmdk_check_parent(vd_image *img, struct vmdk *v, vd_error *err)
{
    if (__atomic_load_n(&v->parent_checked, __ATOMIC_ACQUIRE))
        return 0;
    vd_image *b = img->backing;
    if (b && b->drv == &vd_vmdk && v->desc.parent_cid != 0xffffffffu) {
        const struct vmdk *pv = b->priv;
        if (pv->desc.has_cid && pv->desc.cid != v->desc.parent_cid)
            return vd_set_error(err, -EINVAL, "vmdk: parentCID %08" PRIx32 " does not match "
                                "the CID %08" PRIx32 " of parent %s (the parent changed "
                                "since this delta was made)", v->desc.parent_cid,
                                pv->desc.cid, b->path);
    }
    __atomic_store_n(&v->parent_checked, true, __ATOMIC_RELEASE);
    return 0;
}

/* Messages about the main file name it once: the core prefixes the path,
 * so "vmdk: PATH: " from the extent code becomes "vmdk: ". */
static int vmdk_err_self(vd_image *img, vd_error *err, int r)
{
    if (r >= 0 || !err)
        return r;
    size_t pl = strlen(img->path);
    if (!strncmp(err->msg, "vmdk: ", 6) && !strncmp(err->msg + 6, img->path, pl) &&
        !strncmp(err->msg + 6 + pl, ": ", 2))
        memmove(err->msg + 6, err->msg + 8 + pl, strlen(err->msg + 8 + pl) + 1);
    return r;
}

static int vmdk_open(vd_image *img, vd_error *err)
{
    struct vmdk *v = calloc(1, sizeof *v);
    if (!v)
        return vd_set_error(err, -ENOMEM, "out of memory");
    img->priv = v;
    v->desc.parent_cid = 0xffffffffu;      /* until a descriptor says otherwise */
    uint8_t head[8] = { 0 };
    int64_t fsize = vd_file_size(img->file, err);
    int r = fsize < 0 ? (int)fsize : 0;
    if (r == 0 && fsize >= 8)
        r = vd_file_pread(img->file, head, 8, 0, err);
    if (r == 0) {
        if (vd_le32(head) == VMDK_MAGIC || vd_le32(head) == VMDK_COWD_MAGIC ||
            vd_le64(head) == VMDK_SESPARSE_MAGIC)
            r = vmdk_open_monolithic(img, v, err);
        else
            r = vmdk_open_descriptor_file(img, v, (uint64_t)fsize, err);
    }
    if (r == 0)
        r = vmdk_open_parent(img, v, err);
    for (size_t i = 0; r == 0 && !img->cluster_size && i < v->n_ext; i++)
        if (v->ext[i].sp)
            img->cluster_size = vmdk_sparse_grain_bytes(&v->ext[i]);
    if (r < 0)
        vmdk_close(img);
    return vmdk_err_self(img, err, r);
}

/* The extent holding guest byte `off` (binary search on start sectors). */
static struct vmdk_extent *vmdk_find_extent(struct vmdk *v, uint64_t off)
{
    uint64_t sec = off / VMDK_SECTOR;
    size_t lo = 0, hi = v->n_ext;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        struct vmdk_extent *e = &v->ext[mid];
        if (sec < e->start)
            hi = mid;
        else if (sec >= e->start + e->sectors)
            lo = mid + 1;
        else
            return e;
    }
    return NULL;
}

/* The extent *e holding guest byte `off`, the bytes *n of [off, off+len)
 * that fall in it and off's place *rel in it; -EIO when no extent does. */
static int vmdk_piece(struct vmdk *v, uint64_t off, uint64_t len, struct vmdk_extent **e,
                      uint64_t *n, uint64_t *rel, vd_error *err)
{
    *e = vmdk_find_extent(v, off);
    if (!*e)
        return vd_set_error(err, -EIO, "vmdk: no extent holds offset 0x%" PRIx64, off);
    uint64_t end = ((*e)->start + (*e)->sectors) * VMDK_SECTOR;
    *n = end - off < len ? end - off : len;
    *rel = off - (*e)->start * VMDK_SECTOR;
    return 0;
}

/* The part of a read inside one extent. */
static int vmdk_read_part(vd_image *img, struct vd_part *pt, void *v, vd_error *err)
{
    struct vmdk_extent *e;
    uint64_t rel;
    int r = vmdk_piece(v, pt->off, pt->n, &e, &pt->n, &rel, err);
    if (r < 0)
        return r;
    if (e->type == VMDK_EXT_ZERO) {
        memset(pt->p, 0, pt->n);
        return 0;
    }
    if (e->type == VMDK_EXT_FLAT)
        return vd_file_pread_zfill(e->file, pt->p, pt->n, e->flat_off + rel, err);
    if (e->type == VMDK_EXT_SESPARSE)
        return vmdk_sesparse_pread(img, e, pt->p, pt->n, rel, pt->off, err);
    return vmdk_sparse_pread(img, e, pt->p, pt->n, rel, pt->off, err);
}

static int vmdk_do_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err)
{
    struct vmdk *v = img->priv;
    if (v->stream)
        return vmdk_stream_pread(img, buf, len, off, err);
    int cr = vmdk_check_parent(img, v, err);
    if (cr < 0)
        return cr;
    return vd_walk(img, buf, off, len, 0, vmdk_read_part, v, err);
}

/* Write the descriptor back (after a CID or parent change).  A descriptor
 * file shorter than `old_len` is padded with line ends up to it and not
 * truncated: one write, and no old line survives past the new text. */
int vmdk_write_descriptor(vd_image *img, struct vmdk *v, size_t old_len, vd_error *err)
{
    struct vmdk_desc *d = &v->desc;
    if (!v->desc_embedded) {
        if (d->len >= old_len)
            return vd_file_pwrite(img->file, d->text, d->len, 0, err);
        char *b = malloc(old_len);
        if (!b)
            return vd_set_error(err, -ENOMEM, "out of memory");
        memcpy(b, d->text, d->len);
        memset(b + d->len, '\n', old_len - d->len);
        int r = vd_file_pwrite(img->file, b, old_len, 0, err);
        free(b);
        return r;
    }
    if (d->len > v->desc_room)
        return vd_set_error(err, -ENOSPC, "vmdk: descriptor no longer fits its %" PRIu64
                            " bytes at 0x%" PRIx64, v->desc_room, v->desc_off);
    uint8_t *b = calloc(1, v->desc_room);
    if (!b)
        return vd_set_error(err, -ENOMEM, "out of memory");
    memcpy(b, d->text, d->len);
    int r = vd_file_pwrite(img->file, b, v->desc_room, v->desc_off, err);
    free(b);
    return r;
}

/* The first write after open gives the disk a new content ID, so that
 * deltas made against the old content see that their parent changed. */
static int vmdk_touch_cid(vd_image *img, struct vmdk *v, vd_error *err)
{
    if (v->cid_updated || !v->desc.has_cid || img->keep_content_id)
        return 0;
    uint32_t cid;
    do
        cid = vmdk_new_cid();
    while (cid == v->desc.cid || cid == 0xffffffffu);
    size_t old_len = v->desc.len;
    if (vmdk_desc_set_cid(&v->desc, cid) < 0)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vmdk_write_descriptor(img, v, old_len, err);
    if (r == 0)
        v->cid_updated = true;
    return r;
}

/* The part of a write inside one extent. */
static int vmdk_write_part(vd_image *img, struct vd_part *pt, void *v, vd_error *err)
{
    struct vmdk_extent *e;
    uint64_t rel;
    int r = vmdk_piece(v, pt->off, pt->n, &e, &pt->n, &rel, err);
    if (r < 0)
        return r;
    if (e->readonly || e->type == VMDK_EXT_ZERO || e->type == VMDK_EXT_SESPARSE)
        return vd_set_error(err, -EROFS, "vmdk: extent %s at sector 0x%" PRIx64
                            " is read-only", e->name ? e->name : "ZERO", e->start);
    if (e->type == VMDK_EXT_FLAT)
        return vd_file_pwrite(e->file, pt->p, pt->n, e->flat_off + rel, err);
    return vmdk_sparse_pwrite(img, e, pt->p, pt->n, rel, pt->off, err);
}

static int vmdk_do_pwrite(vd_image *img, const void *buf, size_t len, uint64_t off,
                       vd_error *err)
{
    struct vmdk *v = img->priv;
    if (v->stream)
        return vmdk_stream_pwrite(img, buf, len, off, err);
    int r = vmdk_check_parent(img, v, err);
    if (r == 0)
        r = vmdk_touch_cid(img, v, err);
    if (r < 0)
        return r;
    return vd_walk(img, (void *)buf, off, len, 0, vmdk_write_part, v, err);
}

static int vmdk_do_flush(vd_image *img, vd_error *err)
{
    struct vmdk *v = img->priv;
    int r = 0;
    if (v->stream)
        r = vmdk_stream_finish(img, err);
    for (size_t i = 0; r == 0 && i < v->n_ext; i++)
        if (v->ext[i].sp && !v->ext[i].readonly)
            r = vmdk_sparse_flush(&v->ext[i], err);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    for (size_t i = 0; r == 0 && i < v->n_ext; i++)
        if (v->ext[i].own_file && !v->ext[i].readonly)
            r = vd_file_sync(v->ext[i].file, err);
    return r;
}

/* Holes of a flat extent file read as zeroes: found with SEEK_DATA/HOLE so
 * that converting a mostly empty flat disk skips them. */
static int vmdk_flat_status(struct vmdk_extent *e, uint64_t off, uint64_t n, uint64_t rel,
                            vd_extents *ext)
{
    uint64_t foff = e->flat_off + rel;
    int64_t data = vd_file_seek(e->file, foff, SEEK_DATA);
    if (data < 0 && errno == ENXIO)            /* hole up to end of file */
        return vd_extents_add(ext, off, n, VD_LAYER_ZERO, 0, VD_NO_OFFSET);
    if (data < 0)
        return vd_extents_add(ext, off, n, VD_LAYER_DATA, 0, foff);
    if ((uint64_t)data > foff) {
        uint64_t h = (uint64_t)data - foff < n ? (uint64_t)data - foff : n;
        return vd_extents_add(ext, off, h, VD_LAYER_ZERO, 0, VD_NO_OFFSET);
    }
    int64_t hole = vd_file_seek(e->file, foff, SEEK_HOLE);
    uint64_t d = n;
    if (hole > (int64_t)foff && (uint64_t)hole - foff < n)
        d = (uint64_t)hole - foff;
    return vd_extents_add(ext, off, d, VD_LAYER_DATA, 0, foff);
}

static int vmdk_do_block_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                             vd_error *err)
{
    struct vmdk *v = img->priv;
    if (v->stream)
        return vmdk_stream_status(img, off, len, ext, err);
    int cr = vmdk_check_parent(img, v, err);
    if (cr < 0)
        return cr;
    struct vmdk_extent *e;
    uint64_t n, rel;
    if ((cr = vmdk_piece(v, off, len, &e, &n, &rel, err)) < 0)
        return cr;
    if (e->type == VMDK_EXT_ZERO)
        return vd_extents_add(ext, off, n, VD_LAYER_ZERO, 0, VD_NO_OFFSET);
    if (e->type == VMDK_EXT_FLAT)
        return vmdk_flat_status(e, off, n, rel, ext);
    if (e->type == VMDK_EXT_SESPARSE)
        return vmdk_sesparse_status(e, rel, n, off, ext, err);
    return vmdk_sparse_status(e, rel, n, off, ext, err);
}

static int vmdk_check(vd_image *img, unsigned flags, vd_check_result *res, vd_error *err)
{
    struct vmdk *v = img->priv;
    /* Repair: only leftover extent files (leaks) go; what the sparse check
     * finds stays counted, unrepaired. */
    for (size_t i = 0; i < v->n_ext; i++) {
        if (v->ext[i].sp) {
            int r = vmdk_sparse_check(&v->ext[i], res, err);
            if (r < 0)
                return r;
        }
    }
    return vmdk_leftover_extents(img, v, flags & VD_CHECK_REPAIR_LEAKS, res, err);
}

static void vmdk_details(vd_image *img, vd_kv_fn fn, void *ctx)
{
    struct vmdk *v = img->priv;
    char b[64];
    if (v->desc.create_type)
        fn(ctx, "create-type", v->desc.create_type);
    if (v->desc.has_cid) {
        snprintf(b, sizeof b, "%08" PRIx32, v->desc.cid);
        fn(ctx, "cid", b);
    }
    snprintf(b, sizeof b, "%08" PRIx32, v->desc.parent_cid);
    fn(ctx, "parent-cid", b);
    if (v->desc.adapter)
        fn(ctx, "adapter-type", v->desc.adapter);
    if (v->desc.hwversion)
        fn(ctx, "hwversion", v->desc.hwversion);
    snprintf(b, sizeof b, "%zu", v->n_ext);
    fn(ctx, "extents", b);
    for (size_t i = 0; i < v->n_ext; i++)
        if (v->ext[i].name)
            fn(ctx, "extent-file", v->ext[i].name);
}

static uint64_t vmdk_disk_size(vd_image *img)
{
    struct vmdk *v = img->priv;
    uint64_t n = vd_file_allocated(img->file);
    for (size_t i = 0; i < v->n_ext; i++)
        if (v->ext[i].own_file)
            n += vd_file_allocated(v->ext[i].file);
    return n;
}

static int vmdk_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err)
{
    return vmdk_err_self(img, err, vmdk_do_pread(img, buf, len, off, err));
}

static int vmdk_pwrite(vd_image *img, const void *buf, size_t len, uint64_t off,
                       vd_error *err)
{
    return vmdk_err_self(img, err, vmdk_do_pwrite(img, buf, len, off, err));
}

static int vmdk_block_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                             vd_error *err)
{
    return vmdk_err_self(img, err, vmdk_do_block_status(img, off, len, ext, err));
}

static int vmdk_flush(vd_image *img, vd_error *err)
{
    return vmdk_err_self(img, err, vmdk_do_flush(img, err));
}

static const char *const vmdk_extensions[] = { "vmdk", NULL };

const struct vd_driver vd_vmdk = {
    .name = "vmdk",
    .description = "VMware virtual disk (VMDK): sparse, flat, split, streamOptimized, deltas",
    .extensions = vmdk_extensions,
    .probe = vmdk_probe,
    .align = VMDK_SECTOR,
    .parallel_reads = true,
    .whole_clusters = true,
    .open = vmdk_open,
    .close = vmdk_close,
    .create = vmdk_create,
    .create_opts = vmdk_create_opts,
    .pread = vmdk_pread,
    .pwrite = vmdk_pwrite,
    .flush = vmdk_flush,
    .block_status = vmdk_block_status,
    .check = vmdk_check,
    .details = vmdk_details,
    .disk_size = vmdk_disk_size,
    .resize = vmdk_resize,
    .set_backing = vmdk_set_backing,
    .make_empty = vmdk_make_empty,
    .can_write = VD_CAN_NATIVE,
};
