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
 *  - shrink: when every block that stays already holds a slot below the
 *    number of blocks that stay, one header write (size, block count,
 *    allocated count).  Else (vdi_finish_shrink) the order never lets an
 *    entry hold a slot at or past the count, the slot VirtualBox and qemu
 *    give the next new block: the size alone first (the block count and
 *    the count stay, so the dropped blocks, now hidden, still count);
 *    when every entry that must change lies in one 512-byte sector of the
 *    map, the blocks that stay and dropped ones swap slots there, data
 *    first, in one sector write (vdi_swap_in_sector: qemu-img check clean
 *    at every point); else the dropped blocks' entries cleared in one write (the count is now
 *    above the map's use: a leak for vdisk, "allocated blocks mismatch"
 *    for qemu-img check, and no slot can be handed out twice); each block
 *    that stays moved below that number (data copied into a freed slot,
 *    synced, its one entry switched, synced); then block count and count
 *    in one header write; then the file cut.  A resize that finds blocks
 *    counted past its size (such a shrink killed) finishes it first.
 *  - parent link: the parent's creation and modification UUIDs (the link a
 *    VDI has: it finds the parent by UUID in its folder) in one write.
 *  - make empty: the block map rewritten all-free and synced, then the
 *    allocated count, then the file cut at the start of the data. */
#include "vdi.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Shrinking drops the blocks past the new end; VDI numbers the data of its
 * blocks densely (a new block takes index cBlocksAllocated), so the blocks
 * that stay must end up holding the lowest slots: *keep, how many of the
 * first `nb` blocks hold data; *moves, whether one of them holds a slot at
 * or past that (vdi_compact must move it); *past, whether a block at or
 * past `nb` holds data. */
static void vdi_shrink_plan(const struct vdi_state *s, uint64_t nb, uint32_t *keep,
                            bool *moves, bool *past)
{
    uint32_t k = 0;
    for (uint64_t i = 0; i < nb; i++)
        k += s->bmap[i] < VDI_BLOCK_ZERO;
    *keep = k;
    *moves = *past = false;
    for (uint64_t i = 0; i < nb; i++)
        if (s->bmap[i] < VDI_BLOCK_ZERO && s->bmap[i] >= k)
            *moves = true;
    for (uint64_t i = nb; i < s->n_blocks; i++)
        if (s->bmap[i] < VDI_BLOCK_ZERO)
            *past = true;
}

/* Copy the data of slot `from` into slot `to` (not synced); *buf: a
 * buffer of up to 1 MiB, allocated on first use, the caller frees it. */
static int vdi_copy_slot(vd_image *img, const struct vdi_state *s, uint32_t from, uint32_t to,
                         uint8_t **buf, vd_error *err)
{
    uint64_t slot = (uint64_t)s->block_size + s->block_extra;
    if (!*buf && !(*buf = malloc(slot < (1u << 20) ? slot : (1u << 20))))
        return vd_set_error(err, -ENOMEM, "out of memory");
    uint64_t a = s->off_data + (uint64_t)from * slot, b = s->off_data + (uint64_t)to * slot;
    int r = 0;
    for (uint64_t p = 0; r == 0 && p < slot; p += 1u << 20) {
        size_t n = slot - p < (1u << 20) ? (size_t)(slot - p) : 1u << 20;
        r = vd_file_pread_zfill(img->file, *buf, n, a + p, err);
        if (r == 0)
            r = vd_file_pwrite(img->file, *buf, n, b + p, err);
    }
    return r;
}

/* Every block of the first `nb` with a slot at or past `keep` gets a free
 * slot below it.  Per block: its data copied into the free slot (which no
 * entry references), synced; then its one map entry switched (a 4-byte
 * write: old slot or new), synced.  The count is not written here: the
 * callers keep it at or above every slot in use while blocks move (a
 * shrink, vdi_finish_shrink; a leak repair), so no slot in use is ever
 * the one another tool would give a new block.  The caller cuts the file
 * after `keep` slots. */
int vdi_compact(vd_image *img, struct vdi_state *s, uint64_t nb, uint32_t keep,
                vd_error *err)
{
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
        r = vdi_copy_slot(img, s, e, free_slot, &buf, err);
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

/* The one header write that makes a resize take effect, synced: disk size,
 * block size, block extra, block count and allocated count are 24 adjacent
 * bytes, so they change together or not at all. */
static int vdi_write_geometry(vd_image *img, const struct vdi_state *s, uint64_t size,
                              uint64_t nb, uint32_t alloc, vd_error *err)
{
    enum { O = VDI_O_DISK_SIZE };
    uint8_t h[VDI_O_ALLOCATED + 4 - O];
    vd_put_le64(h, size);
    vd_put_le32(h + VDI_O_BLOCK_SIZE - O, s->block_size);
    vd_put_le32(h + VDI_O_BLOCK_EXTRA - O, s->block_extra);
    vd_put_le32(h + VDI_O_BLOCKS - O, (uint32_t)nb);
    vd_put_le32(h + VDI_O_ALLOCATED - O, alloc);
    int r = vd_file_pwrite(img->file, h, sizeof h, VDI_O_DISK_SIZE, err);
    return r < 0 ? r : vd_file_sync(img->file, err);
}

static int vdi_finish_shrink(vd_image *img, struct vdi_state *s, uint64_t nb, uint64_t size,
                             vd_error *err);

/* A shrink killed after its size write and before its last header write
 * leaves blocks past the disk size that still hold data (and count): vdisk
 * finishes that shrink before any resize, but another tool's grow would
 * show them again.  Counted as leaks, named; repairing leaks finishes the
 * shrink. */
static int vdi_check_hidden(vd_image *img, struct vdi_state *s, unsigned flags,
                            vd_check_result *res, vd_error *err)
{
    uint64_t cur = (s->disk_size + s->block_size - 1) / s->block_size;
    uint32_t hidden = 0, first = 0;
    for (uint64_t i = cur; i < s->n_blocks; i++)
        if (s->bmap[i] < VDI_BLOCK_ZERO && !hidden++)
            first = (uint32_t)i;
    if (!hidden)
        return 0;
    if (!res->leaks && !res->corruptions)
        snprintf(res->first_problem, sizeof res->first_problem,
                 "vdi: block %u, past the disk size (%llu bytes), holds data slot %u (a shrink "
                 "was interrupted): another tool's grow would show it again; check -r leaks "
                 "drops it", first, (unsigned long long)s->disk_size, s->bmap[first]);
    res->leaks += hidden;
    if (!(flags & VD_CHECK_REPAIR_LEAKS) || img->readonly)
        return 0;
    int r = vdi_finish_shrink(img, s, cur, s->disk_size, err);
    if (r == 0)
        res->leaks_fixed += hidden;
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
        return vdi_check_hidden(img, s, flags, res, err);
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

/* The compaction of a shrink (the size already written: the dropped
 * blocks are hidden) when every map entry it changes lies in one 512-byte
 * sector of the map, as on any disk of up to 128 blocks: each block that
 * stays but holds a slot at or past `keep` is paired with a dropped block
 * holding a slot below it, its data copied over the dropped one's, synced;
 * then the sector is written once with each pair's slots swapped, synced.
 * The entries the header counts stay a one-to-one use of the slots below
 * the count at every point (qemu-img check: clean, where the general order
 * leaves "allocated blocks mismatch" between its steps), and the dropped
 * blocks end on the top slots, so the header write that follows (block
 * count and count) is clean too.  1: done; 0: the entries span sectors, or
 * the map is not the plain one-to-one use (a killed operation's): the
 * caller takes the general order. */
static int vdi_swap_in_sector(vd_image *img, struct vdi_state *s, uint64_t nb, uint32_t keep,
                              vd_error *err)
{
    uint64_t first = 0, last = 0, high = 0, low = 0;
    for (uint64_t i = 0; i < s->n_blocks; i++) {
        uint32_t e = s->bmap[i];
        bool hi = i < nb && e < VDI_BLOCK_ZERO && e >= keep, lo = i >= nb && e < keep;
        if ((hi || lo) && !(high + low))
            first = i;
        if (hi || lo)
            last = i;
        high += hi;
        low += lo;
    }
    uint64_t sec = (s->off_blocks + 4 * first) & ~511ull;
    if (!high || high != low || ((s->off_blocks + 4 * last) & ~511ull) != sec)
        return 0;
    /* a dropped block's slot that another block also names (a damaged
     * map) is not written over: the general order then */
    uint8_t *used = calloc(keep, 1), b[512], *buf = NULL;
    if (!used)
        return vd_set_error(err, -ENOMEM, "out of memory");
    for (uint64_t i = 0; i < nb; i++)
        if (s->bmap[i] < keep)
            used[s->bmap[i]] = 1;
    bool clash = false;
    for (uint64_t i = nb; i < s->n_blocks; i++)
        if (s->bmap[i] < keep) {
            clash |= used[s->bmap[i]];
            used[s->bmap[i]] = 1;
        }
    free(used);
    if (clash)
        return 0;
    int r = vd_file_pread_zfill(img->file, b, sizeof b, sec, err);
    for (uint64_t x = first, y = first; r == 0 && x < nb; x++) {
        uint32_t e = s->bmap[x];
        if (e >= VDI_BLOCK_ZERO || e < keep)
            continue;
        for (y = y > nb ? y : nb; s->bmap[y] >= keep; y++)
            ;
        r = vdi_copy_slot(img, s, e, s->bmap[y], &buf, err);
        vd_put_le32(b + (s->off_blocks + 4 * x - sec), s->bmap[y]);
        vd_put_le32(b + (s->off_blocks + 4 * y - sec), e);
        y++;
    }
    free(buf);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0)
        r = vd_file_pwrite(img->file, b, sizeof b, sec, err);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r < 0)
        return r;
    for (uint64_t i = first; i <= last; i++)
        s->bmap[i] = vd_le32(b + (s->off_blocks + 4 * i - sec));
    return 1;
}

/* Drop the blocks at and past `nb`, the header's size already hidden them
 * (or going to, `size` written with the block count): see the order at the
 * top.  Leaves the image with `nb` blocks, the ones that stay below the
 * count, and the file cut after them. */
static int vdi_finish_shrink(vd_image *img, struct vdi_state *s, uint64_t nb, uint64_t size,
                             vd_error *err)
{
    uint64_t slot = (uint64_t)s->block_size + s->block_extra;
    uint32_t keep;
    bool moves, past;
    vdi_shrink_plan(s, nb, &keep, &moves, &past);
    int r = moves && past ? vdi_swap_in_sector(img, s, nb, keep, err) : 0;
    if (r < 0)
        return r;
    if (r == 1)
        moves = false;      /* the blocks that stay hold the slots below keep */
    else if (moves && past) {
        /* the count stays: above the map's use, never below a slot in use */
        size_t bytes = (size_t)(s->n_blocks - nb) * 4;
        uint8_t *f = malloc(bytes);
        if (!f)
            return vd_set_error(err, -ENOMEM, "out of memory");
        memset(f, 0xff, bytes);
        r = vd_file_pwrite(img->file, f, bytes, s->off_blocks + 4 * nb, err);
        free(f);
        if (r == 0)
            r = vd_file_sync(img->file, err);
        if (r < 0)
            return r;
        for (uint64_t i = nb; i < s->n_blocks; i++)
            s->bmap[i] = VDI_BLOCK_FREE;
    }
    if (moves && (r = vdi_compact(img, s, nb, keep, err)) < 0)
        return r;
    if ((r = vdi_write_geometry(img, s, size, nb, keep, err)) < 0)
        return r;
    s->n_blocks = (uint32_t)nb;
    s->n_alloc = keep;
    s->next_index = keep;
    s->disk_size = size;
    img->size = size;
    uint64_t end = s->off_data + (uint64_t)keep * slot;
    if (end < s->file_size) {
        r = vd_file_truncate(img->file, end, err);
        if (r == 0)
            r = vd_file_sync(img->file, err);
        if (r == 0)
            s->file_size = end;
    }
    return r;
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
    /* Blocks counted past the size: a shrink killed after its size write.
     * Finished first, so that a grow never shows what it dropped. */
    uint64_t cur = (s->disk_size + s->block_size - 1) / s->block_size;
    int r = cur < s->n_blocks ? vdi_finish_shrink(img, s, cur, s->disk_size, err) : 0;
    if (r < 0)
        return r;
    if (nb < s->n_blocks) {
        uint32_t keep;
        bool moves, past;
        vdi_shrink_plan(s, nb, &keep, &moves, &past);
        if (moves) {        /* the size alone first: the new view */
            uint8_t le[8];
            vd_put_le64(le, size);
            if ((r = vd_file_pwrite(img->file, le, 8, VDI_O_DISK_SIZE, err)) == 0)
                r = vd_file_sync(img->file, err);
            if (r < 0)
                return r;
        }
        return vdi_finish_shrink(img, s, nb, size, err);
    }
    uint32_t alloc = s->n_alloc;
    uint32_t *bmap = realloc(s->bmap, nb * 4);
    if (!bmap)
        return vd_set_error(err, -ENOMEM, "out of memory");
    s->bmap = bmap;
    size_t add = (size_t)(nb - s->n_blocks);
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
    if ((r = vdi_write_geometry(img, s, size, nb, new_alloc, err)) < 0)
        return r;
    for (uint64_t i = s->n_blocks; i < nb; i++)
        s->bmap[i] = fixed ? alloc + (uint32_t)(i - s->n_blocks) : vdi_new_entry(s, i, psize);
    if (fixed && add)
        s->file_size = s->off_data + (uint64_t)new_alloc * slot;
    if (s->next_index < new_alloc)
        s->next_index = new_alloc;
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
