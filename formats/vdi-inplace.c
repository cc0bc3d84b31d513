/* vdi-inplace.c - the in-place metadata operations of VDI: growing inside
 * the room the block map has, the parent link of a differencing image, and
 * emptying one after a commit.
 *
 * Crash ordering (docs/flush.md):
 *  - grow: the map entries of the new blocks (free) are written and synced
 *    first, in the room between the map and the data, which the old size
 *    does not use; then disk size and block count with one header write.
 *    Past the room, or a fixed image, or a version 0 header: the caller is
 *    told (-ENOSYS, and vdconvert rewrites the image).  Shrinking is not done
 *    in place either (a block freed in the middle would be handed out again
 *    while its index is still in use).
 *  - parent link: the parent's creation and modification UUIDs (the link a
 *    VDI has: it finds the parent by UUID in its folder) in one write.
 *  - make empty: the block map rewritten all-free and synced, then the
 *    allocated count, then the file cut at the start of the data. */
#include "vdi.h"

#include <errno.h>
#include <stdlib.h>

int vdi_resize(vd_image *img, uint64_t size, vd_error *err)
{
    struct vdi_state *s = img->priv;
    uint64_t nb = (size + s->block_size - 1) / s->block_size;
    uint64_t room = (s->off_data - s->off_blocks) / 4;
    if (s->version >> 16 == 0 || s->type == VDI_TYPE_FIXED || size < s->disk_size)
        return vd_set_error(err, -ENOSYS, "vdi: %s cannot be resized in place",
                            size < s->disk_size ? "shrinking" :
                            s->type == VDI_TYPE_FIXED ? "a fixed image" : "a version 0 image");
    if (nb > room || nb > UINT32_MAX)
        return vd_set_error(err, -ENOTSUP, "vdi: cannot grow past %llu bytes in place: the "
                            "block map has room for %llu blocks of %u bytes before the data",
                            (unsigned long long)(room * s->block_size),
                            (unsigned long long)room, s->block_size);
    uint32_t *bmap = realloc(s->bmap, nb * 4);
    if (!bmap)
        return vd_set_error(err, -ENOMEM, "out of memory");
    s->bmap = bmap;
    size_t add = (size_t)(nb - s->n_blocks);
    int r = 0;
    if (add) {
        uint8_t *f = malloc(add * 4);
        if (!f)
            return vd_set_error(err, -ENOMEM, "out of memory");
        memset(f, 0xff, add * 4);                    /* VDI_BLOCK_FREE */
        r = vd_file_pwrite(img->file, f, add * 4, s->off_blocks + 4ull * s->n_blocks, err);
        free(f);
        if (r == 0)
            r = vd_file_sync(img->file, err);
    }
    if (r < 0)
        return r;
    uint8_t h[20];          /* disk size, block size, block extra, blocks */
    vd_put_le64(h, size);
    vd_put_le32(h + 8, s->block_size);
    vd_put_le32(h + 12, s->block_extra);
    vd_put_le32(h + 16, (uint32_t)nb);
    if ((r = vd_file_pwrite(img->file, h, sizeof h, VDI_O_DISK_SIZE, err)) == 0 &&
        (r = vd_file_sync(img->file, err)) == 0) {
        for (uint64_t i = s->n_blocks; i < nb; i++)
            s->bmap[i] = VDI_BLOCK_FREE;
        s->n_blocks = (uint32_t)nb;
        s->disk_size = size;
        img->size = size;
    }
    return r;
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
    char *path;
    int r = vd_resolve_related(img->path, file, img->allow_host_paths, &path, err);
    if (r < 0)
        return r;
    vd_file *pf;
    uint8_t ph[512];
    r = vd_file_open(path, true, &pf, err);
    if (r == 0) {
        r = vd_file_pread_zfill(pf, ph, sizeof ph, 0, err);
        vd_file_close(pf);
    }
    if (r == 0 && (vd_le32(ph + VDI_O_MAGIC) != VDI_MAGIC || vd_le32(ph + VDI_O_VERSION) >> 16 != 1))
        r = vd_set_error(err, -EINVAL, "vdi: parent %s is not a VDI 1.x image", path);
    free(path);
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
