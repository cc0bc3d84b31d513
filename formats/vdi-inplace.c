/* vdi-inplace.c - the in-place metadata operations of VDI: growing inside
 * the room the block map has, the parent link of a differencing image, and
 * emptying one after a commit.
 *
 * Crash ordering (docs/flush.md):
 *  - grow: the map entries of the new blocks (free) are written and synced
 *    first, in the room between the map and the data, which the old size
 *    does not use; then disk size and block count with one header write.
 *    A fixed image's new blocks first get their data slots (the file
 *    extended, sparse, and synced) and their map entries point at them;
 *    the header write then also carries the allocated count.  Past the
 *    map's room, or a version 0 header: refused with the reason.
 *  - shrink: the header (size, block count, allocated count) first, then
 *    the file cut after the last slot still counted.  Only when the blocks
 *    dropped hold the highest data slots (always so for a fixed image made
 *    in order); otherwise refused with the reason, since a slot freed in
 *    the middle would be handed out again while its index is in use.
 *  - parent link: the parent's creation and modification UUIDs (the link a
 *    VDI has: it finds the parent by UUID in its folder) in one write.
 *  - make empty: the block map rewritten all-free and synced, then the
 *    allocated count, then the file cut at the start of the data. */
#include "vdi.h"

#include <errno.h>
#include <stdlib.h>

/* Shrinking drops the blocks past the new end; VDI numbers the data of its
 * blocks densely (a new block takes index cBlocksAllocated), so the dropped
 * ones must hold the highest indices, or a later allocation would reuse a
 * slot still in use.  The count they leave, or 0 with the reason. */
static int vdi_shrink_count(const struct vdi_state *s, uint64_t nb, uint32_t *keep,
                            vd_error *err)
{
    uint32_t dropped = 0;
    for (uint64_t i = nb; i < s->n_blocks; i++)
        dropped += s->bmap[i] < VDI_BLOCK_ZERO;
    *keep = s->n_alloc >= dropped ? s->n_alloc - dropped : 0;
    for (uint64_t i = 0; i < s->n_blocks; i++) {
        uint32_t e = s->bmap[i];
        if (e >= VDI_BLOCK_ZERO || (i >= nb) == (e >= *keep))
            continue;
        return vd_set_error(err, -ENOTSUP, "vdi: cannot shrink in place: block %llu %s data "
                            "slot %u, and slots are numbered densely (compacting them is not "
                            "done in place)", (unsigned long long)i,
                            i >= nb ? "past the new end holds" : "that stays holds", e);
    }
    return 0;
}

int vdi_resize(vd_image *img, uint64_t size, vd_error *err)
{
    struct vdi_state *s = img->priv;
    uint64_t nb = (size + s->block_size - 1) / s->block_size;
    uint64_t room = (s->off_data - s->off_blocks) / 4;
    uint64_t slot = (uint64_t)s->block_size + s->block_extra;
    if (s->version >> 16 == 0)
        return vd_set_error(err, -ENOTSUP, "vdi: cannot resize a version 0 image in place "
                            "(its header has another layout; convert it first)");
    if (nb > room || nb > UINT32_MAX)
        return vd_set_error(err, -ENOTSUP, "vdi: cannot grow past %llu bytes in place: the "
                            "block map has room for %llu blocks of %u bytes before the data",
                            (unsigned long long)(room * s->block_size),
                            (unsigned long long)room, s->block_size);
    uint32_t alloc = s->n_alloc;
    int r = nb < s->n_blocks ? vdi_shrink_count(s, nb, &alloc, err) : 0;
    if (r < 0)
        return r;
    uint32_t *bmap = realloc(s->bmap, (nb > s->n_blocks ? nb : s->n_blocks) * 4);
    if (!bmap)
        return vd_set_error(err, -ENOMEM, "out of memory");
    s->bmap = bmap;
    size_t add = nb > s->n_blocks ? (size_t)(nb - s->n_blocks) : 0;
    bool fixed = s->type == VDI_TYPE_FIXED;
    if (add && fixed) {      /* a fixed image's new blocks get data slots */
        r = vd_file_truncate(img->file, s->off_data + (alloc + add) * slot, err);
        if (r == 0)
            r = vd_file_sync(img->file, err);
    }
    if (add && r == 0) {
        uint8_t *f = malloc(add * 4);
        if (!f)
            return vd_set_error(err, -ENOMEM, "out of memory");
        for (size_t i = 0; i < add; i++)
            vd_put_le32(f + 4 * i, fixed ? alloc + (uint32_t)i : VDI_BLOCK_FREE);
        r = vd_file_pwrite(img->file, f, add * 4, s->off_blocks + 4ull * s->n_blocks, err);
        free(f);
        if (r == 0)
            r = vd_file_sync(img->file, err);
    }
    if (r < 0)
        return r;
    uint32_t new_alloc = fixed ? alloc + (uint32_t)add : alloc;
    uint8_t h[24];          /* disk size, block size, block extra, blocks, allocated */
    vd_put_le64(h, size);
    vd_put_le32(h + 8, s->block_size);
    vd_put_le32(h + 12, s->block_extra);
    vd_put_le32(h + 16, (uint32_t)nb);
    vd_put_le32(h + 20, new_alloc);
    if ((r = vd_file_pwrite(img->file, h, sizeof h, VDI_O_DISK_SIZE, err)) == 0)
        r = vd_file_sync(img->file, err);
    /* shrunk: the slots past the count go */
    if (r == 0 && nb < s->n_blocks && s->off_data + (uint64_t)alloc * slot < s->file_size) {
        r = vd_file_truncate(img->file, s->off_data + (uint64_t)alloc * slot, err);
        if (r == 0)
            r = vd_file_sync(img->file, err);
        if (r == 0)
            s->file_size = s->off_data + (uint64_t)alloc * slot;
    }
    if (r < 0)
        return r;
    for (uint64_t i = s->n_blocks; i < nb; i++)
        s->bmap[i] = fixed ? alloc + (uint32_t)(i - s->n_blocks) : VDI_BLOCK_FREE;
    if (fixed && add)
        s->file_size = s->off_data + (uint64_t)new_alloc * slot;
    if (nb < s->n_blocks || s->next_index < new_alloc)
        s->next_index = new_alloc;      /* (a shrink left no slot at or above it) */
    s->n_blocks = (uint32_t)nb;
    s->n_alloc = new_alloc;
    s->disk_size = size;
    img->size = size;
    return 0;
}

int vdi_set_backing(vd_image *img, const char *file, const char *fmt, vd_error *err)
{
    struct vdi_state *s = img->priv;
    if (s->type != VDI_TYPE_DIFF)
        return vd_set_error(err, -ENOTSUP, "vdi: only a differencing image has a parent");
    if (!file)          /* the type would change: vdconvert rewrites it */
        return vd_set_error(err, -ENOSYS, "vdi: a differencing image cannot drop its parent "
                            "in place");
    if (fmt && strcmp(fmt, "vdi"))
        return vd_set_error(err, -ENOTSUP, "vdi: the parent of a differencing VDI must be a "
                            "VDI, not %s", fmt);
    if (strchr(file, '/'))
        return vd_set_error(err, -ENOTSUP, "vdi: a VDI finds its parent by UUID among the "
                            "files of its own folder: '%s' is not there", file);
    /* read through the confined open itself: no second open by name */
    vd_file *pf;
    uint8_t ph[512];
    int r = vd_file_open_beneath(img->path, file, img->allow_host_paths, true, false, &pf,
                                 err);
    if (r == 0) {
        r = vd_file_pread_zfill(pf, ph, sizeof ph, 0, err);
        if (r == 0 && (vd_le32(ph + VDI_O_MAGIC) != VDI_MAGIC ||
                       vd_le32(ph + VDI_O_VERSION) >> 16 != 1))
            r = vd_set_error(err, -EINVAL, "vdi: parent %s is not a VDI 1.x image", pf->path);
        vd_file_close(pf);
    }
    if (r < 0)
        return r;
    uint8_t link[32];
    memcpy(link, ph + VDI_O_UUID_CREATE, 16);
    memcpy(link + 16, ph + VDI_O_UUID_MODIFY, 16);
    if (!memcmp(link, s->uuid_create, 16))
        return vd_set_error(err, -ELOOP, "vdi: %s is this image itself", file);
    if ((r = vd_file_pwrite(img->file, link, sizeof link, VDI_O_UUID_LINK, err)) == 0 &&
        (r = vd_file_sync(img->file, err)) == 0) {
        memcpy(s->uuid_link, link, 16);
        memcpy(s->uuid_parent, link + 16, 16);
    }
    return r;
}

int vdi_make_empty(vd_image *img, vd_error *err)
{
    struct vdi_state *s = img->priv;
    if (s->type != VDI_TYPE_DIFF)
        return vd_set_error(err, -ENOTSUP, "vdi: only a differencing image can be emptied");
    size_t bytes = (size_t)s->n_blocks * 4;
    uint8_t *f = malloc(bytes ? bytes : 1);
    if (!f)
        return vd_set_error(err, -ENOMEM, "out of memory");
    memset(f, 0xff, bytes);
    int r = vd_file_pwrite(img->file, f, bytes, s->off_blocks, err);
    free(f);
    uint8_t z[4] = { 0 };
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0)
        r = vd_file_pwrite(img->file, z, 4, s->alloc_at, err);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0) {
        for (uint32_t i = 0; i < s->n_blocks; i++)
            s->bmap[i] = VDI_BLOCK_FREE;
        s->n_alloc = 0;
        s->next_index = 0;
        r = vd_file_truncate(img->file, s->off_data, err);
    }
    if (r == 0) {
        s->file_size = s->off_data;
        r = vd_file_sync(img->file, err);
    }
    return r;
}
