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
 *    the header write then also carries the allocated count.  Over a
 *    larger parent, the new blocks it covers are written as zero blocks,
 *    so the grown range never shows the parent's bytes.  Past the
 *    map's room, or a version 0 header: refused with the reason.
 *  - shrink: the header (size, block count, allocated count) first; then
 *    each block that stays but holds a slot at or past the new count is
 *    moved into a slot a dropped block freed: its data copied there and
 *    synced, then its one map entry switched and synced (the count never
 *    changes, so every step leaves an image vdisk and qemu check clean);
 *    then the file cut after the last slot counted.  Refused with the
 *    reason when a block that stays holds a slot at or past the new block
 *    count (no header could be written first).
 *  - parent link: the parent's creation and modification UUIDs (the link a
 *    VDI has: it finds the parent by UUID in its folder) in one write.
 *  - make empty: the block map rewritten all-free and synced, then the
 *    allocated count, then the file cut at the start of the data. */
#include "vdi.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* Shrinking drops the blocks past the new end; VDI numbers the data of its
 * blocks densely (a new block takes index cBlocksAllocated), so after the
 * header write that drops them the blocks that stay must hold the lowest
 * slots.  Those that do not (their slot at or past the count they leave,
 * `keep`) are moved into slots the dropped ones free, one at a time
 * (vdi_compact).  What cannot be done in place: a block that stays holding
 * a slot at or past the new block count, which vdisk and qemu refuse to
 * open once the count is written.  *keep, 0 or -ENOTSUP with the reason. */
static int vdi_shrink_count(const struct vdi_state *s, uint64_t nb, uint32_t *keep,
                            vd_error *err)
{
    uint32_t dropped = 0;
    for (uint64_t i = nb; i < s->n_blocks; i++)
        dropped += s->bmap[i] < VDI_BLOCK_ZERO;
    *keep = s->n_alloc >= dropped ? s->n_alloc - dropped : 0;
    for (uint64_t i = 0; i < nb; i++) {
        uint32_t e = s->bmap[i];
        if (e < VDI_BLOCK_ZERO && e >= nb)
            return vd_set_error(err, -ENOTSUP, "vdi: cannot shrink in place: block %llu, "
                                "which stays, holds data slot %u, past the %llu blocks left "
                                "(the header would then point past its block count)",
                                (unsigned long long)i, e, (unsigned long long)nb);
    }
    return 0;
}

/* After a shrink's header write: every block that stays with a slot at or
 * past `keep` gets a free slot below it.  Per block: its data copied into
 * the free slot (which no entry references), synced; then its one map
 * entry switched (a 4-byte write: old slot or new), synced.  The count
 * never changes: the image is consistent for vdisk and qemu before and
 * after each step.  The caller cuts the file after `keep` slots. */
static int vdi_compact(vd_image *img, struct vdi_state *s, uint64_t nb, uint32_t keep,
                       vd_error *err)
{
    uint64_t slot = (uint64_t)s->block_size + s->block_extra;
    uint8_t *used = calloc(keep ? keep : 1, 1), *buf = NULL;
    if (!used)
        return vd_set_error(err, -ENOMEM, "out of memory");
    for (uint64_t i = 0; i < nb; i++)
        if (s->bmap[i] < keep)
            used[s->bmap[i]] = 1;
    uint32_t free_slot = 0;
    int r = 0;
    for (uint64_t i = 0; r == 0 && i < nb; i++) {
        uint32_t e = s->bmap[i];
        if (e >= VDI_BLOCK_ZERO || e < keep)
            continue;
        while (free_slot < keep && used[free_slot])
            free_slot++;
        if (free_slot >= keep) {
            r = vd_set_error(err, -EIO, "vdi: no free slot below %u for block %llu", keep,
                             (unsigned long long)i);
            break;
        }
        if (!buf && !(buf = malloc(slot < (1u << 20) ? slot : (1u << 20)))) {
            r = vd_set_error(err, -ENOMEM, "out of memory");
            break;
        }
        uint64_t from = s->off_data + (uint64_t)e * slot, to = s->off_data + free_slot * slot;
        for (uint64_t p = 0; r == 0 && p < slot; p += 1u << 20) {
            size_t n = slot - p < (1u << 20) ? (size_t)(slot - p) : 1u << 20;
            r = vd_file_pread_zfill(img->file, buf, n, from + p, err);
            if (r == 0)
                r = vd_file_pwrite(img->file, buf, n, to + p, err);
        }
        if (r == 0)
            r = vd_file_sync(img->file, err);
        uint8_t le[4];
        vd_put_le32(le, free_slot);
        if (r == 0)
            r = vd_file_pwrite(img->file, le, 4, s->off_blocks + 4 * i, err);
        if (r == 0)
            r = vd_file_sync(img->file, err);
        if (r == 0) {
            s->bmap[i] = free_slot;
            used[free_slot] = 1;
        }
    }
    free(buf);
    free(used);
    return r;
}

/* A shrink killed during its compaction leaves blocks holding slots at or
 * past the allocated count: vdisk gives new blocks slots past every one in
 * use, but VirtualBox and qemu give a new block the slot numbered by the
 * count, one such a block still holds.  Counted as leaks (nothing is lost
 * yet), named; repairing leaks finishes the compaction and cuts the file. */
int vdi_check_compaction(vd_image *img, struct vdi_state *s, unsigned flags,
                         vd_check_result *res, vd_error *err)
{
    uint32_t high = 0, first = 0;
    for (uint32_t i = 0; i < s->n_blocks; i++)
        if (s->bmap[i] < VDI_BLOCK_ZERO && s->bmap[i] >= s->n_alloc && !high++)
            first = i;
    if (!high)
        return 0;
    if (!res->leaks && !res->corruptions)
        snprintf(res->first_problem, sizeof res->first_problem,
                 "vdi: block %u holds data slot %u, at or past the allocated count %u (a "
                 "shrink's compaction was interrupted): another tool would give that slot to a "
                 "new block; check -r leaks moves it", first, s->bmap[first], s->n_alloc);
    res->leaks += high;
    if (!(flags & VD_CHECK_REPAIR_LEAKS) || img->readonly)
        return 0;
    uint64_t slot = (uint64_t)s->block_size + s->block_extra;
    int r = vdi_compact(img, s, s->n_blocks, s->n_alloc, err);
    if (r == 0)
        r = vd_file_truncate(img->file, s->off_data + (uint64_t)s->n_alloc * slot, err);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0) {
        s->file_size = s->off_data + (uint64_t)s->n_alloc * slot;
        s->next_index = s->n_alloc;
        res->leaks_fixed += high;
    }
    return r;
}

/* The map entry of new block `i` of a growing dynamic image: a zero
 * block where a parent of `psize` bytes would show through, else free. */
static uint32_t vdi_new_entry(const struct vdi_state *s, uint64_t i, uint64_t psize)
{
    return i * s->block_size < psize ? VDI_BLOCK_ZERO : VDI_BLOCK_FREE;
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
    /* over a larger parent, the new blocks it covers are zero blocks from
     * the start, so the range never shows the parent's bytes */
    uint64_t psize = img->backing && size > img->size ? img->backing->size : 0;
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
            vd_put_le32(f + 4 * i, fixed ? alloc + (uint32_t)i
                                         : vdi_new_entry(s, s->n_blocks + i, psize));
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
    /* shrunk: the blocks that stay move below the count, then the slots
     * past it go */
    if (r == 0 && nb < s->n_blocks)
        r = vdi_compact(img, s, nb, alloc, err);
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
        s->bmap[i] = fixed ? alloc + (uint32_t)(i - s->n_blocks) : vdi_new_entry(s, i, psize);
    if (fixed && add)
        s->file_size = s->off_data + (uint64_t)new_alloc * slot;
    if (nb < s->n_blocks || s->next_index < new_alloc)
        s->next_index = new_alloc;      /* (a shrink left no slot at or above it) */
    s->n_blocks = (uint32_t)nb;
    s->n_alloc = new_alloc;
    s->disk_size = size;
    bool hid = psize > img->size && !fixed;
    img->size = size;
    return hid;
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
