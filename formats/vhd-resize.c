/* vhd-resize.c - resizing a VHD in place (qemu-img cannot resize a VHD at
 * all, so the order below is our own; docs/flush.md).
 *
 * The new footer: current size, the geometry the spec computes from it,
 * and, when the disk's size follows its CHS geometry (vhd_guest_size) but
 * the new size has no exact geometry, the creator "qem2", which qemu and
 * we read as "the current size is the size" (Hyper-V always does).
 *
 * Fixed disks: the data is the file up to its trailing footer.  Growing:
 * the range between the old size and the new one is zeroed while the old
 * footer hides it; past the data, the old footer is first copied to the new
 * end (the old size still rules), the old footer's sector zeroed, then the
 * footer at the end gets the new size.  Shrinking: the trailing footer
 * gets the new size first, then a footer is written at the new end and the
 * file cut after it.
 *
 * Dynamic and differencing disks: growing past the BAT's entries first
 * makes room for the longer BAT: parent locator data in the way is copied
 * to the end (footer after it first, data synced, then the dynamic header
 * naming it in one write); blocks (and an old trailing footer) in the way
 * are copied to the end of the file, synced, and their entries switched
 * one at a time (a crash leaves the old entry or the new one);
 * then the new entries (unused) are written and synced, the dynamic
 * header's entry count, then (a differencing disk over a larger parent)
 * the new range made this layer's own zeroes (vhd_rs_zero_new), then the
 * footer at the end and its copy at offset 0.  Shrinking: the footers first, then the rest of the block holding the
 * new end is zeroed and the entries of blocks wholly past it are cleared
 * (their space stays in the file, unreferenced).  A crash between the two
 * footers leaves the copy at offset 0 stale: vdisk (like libvhdi, Hyper-V
 * and VirtualBox) reads the end one, qemu the copy; check reports it and a
 * read-write open writes it again.  A crash before the clearing leaves
 * entries past the end (check reports them): a grow first clears whatever
 * lies past the old size, so nothing dropped ever shows again. */
#include "vhd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#define VHD_RS_PIECE (1u << 20)     /* copy unit when a block moves */

static void vhd_rs_footer(const uint8_t *old, uint64_t size, uint8_t *f)
{
    uint16_t c;
    uint8_t h, spt;
    memcpy(f, old, VHD_FOOTER_SIZE);
    vhd_geometry(size / VHD_SECTOR, &c, &h, &spt);
    vd_put_be64(f + VHD_F_CUR_SIZE, size);
    vd_put_be16(f + VHD_F_CYLINDERS, c);
    f[VHD_F_HEADS] = h;
    f[VHD_F_SPT] = spt;
    if (vhd_guest_size(f) != size)
        memcpy(f + VHD_F_CREATOR_APP, "qem2", 4);
    vd_put_be32(f + VHD_F_CHECKSUM, vhd_checksum(f, VHD_FOOTER_SIZE, VHD_F_CHECKSUM));
}

static int vhd_rs_write(vd_image *img, const void *buf, size_t len, uint64_t at, vd_error *err)
{
    int r = vd_file_pwrite(img->file, buf, len, at, err);
    return r < 0 ? r : vd_file_sync(img->file, err);
}

static int vhd_rs_fixed(vd_image *img, struct vhd_state *s, uint64_t size, const uint8_t *nf,
                        vd_error *err)
{
    uint64_t data = s->file_size - VHD_FOOTER_SIZE, end = size < data ? size : data;
    int r = 0;
    if (size > img->size && end > img->size) {      /* hidden by the old size */
        r = vd_file_zero(img->file, img->size, end - img->size, err);
        if (r == 0)
            r = vd_file_sync(img->file, err);
    }
    if (r == 0 && size > data) {
        r = vhd_rs_write(img, s->footer, VHD_FOOTER_SIZE, size, err);
        if (r == 0)
            r = vd_file_zero(img->file, data, VHD_FOOTER_SIZE, err);
        if (r == 0)
            r = vd_file_sync(img->file, err);
        if (r == 0)
            r = vhd_rs_write(img, nf, VHD_FOOTER_SIZE, size, err);
    } else if (r == 0) {
        r = vhd_rs_write(img, nf, VHD_FOOTER_SIZE, data, err);
        if (r == 0 && size < data)
            r = vhd_rs_write(img, nf, VHD_FOOTER_SIZE, size, err);
        if (r == 0 && size < data)
            r = vd_file_truncate(img->file, size + VHD_FOOTER_SIZE, err);
        if (r == 0)
            r = vd_file_sync(img->file, err);
    }
    if (r == 0)
        s->file_size = size + VHD_FOOTER_SIZE;
    return r;
}

/* Parent locator data in [from, need) moves to the end of the file: the
 * footer first goes after where it will end, the data is copied and
 * synced, then the dynamic header naming the new places is written once. */
static int vhd_rs_move_locators(vd_image *img, struct vhd_state *s, uint64_t from,
                                uint64_t need, vd_error *err)
{
    uint8_t dh[VHD_DYNHDR_SIZE];
    memcpy(dh, s->dynhdr, sizeof dh);
    uint64_t at = vd_round_up(s->next_free, VHD_SECTOR), total = 0;
    uint8_t *buf = NULL;
    int r = 0;
    for (int i = 0; r == 0 && i < VHD_LOCATORS; i++) {
        uint8_t *l = dh + VHD_D_LOCATORS + i * VHD_LOCATOR_SIZE;
        uint64_t off = vd_be64(l + 16), space = vd_be32(l + 4), len = vd_be32(l + 8);
        uint64_t n = vd_round_up(space > len ? space : len, VHD_SECTOR);
        if (!vd_be32(l) || !n || off < from || off >= need)
            continue;
        uint8_t *nb = realloc(buf, total + n);
        if (!nb) {
            r = vd_set_error(err, -ENOMEM, "out of memory");
            break;
        }
        buf = nb;
        r = vd_file_pread_zfill(img->file, buf + total, n, off, err);
        vd_put_be64(l + 16, at + total);
        total += n;
    }
    if (r == 0 && total) {
        vd_put_be32(dh + VHD_D_CHECKSUM, vhd_checksum(dh, sizeof dh, VHD_D_CHECKSUM));
        r = vhd_rs_write(img, s->footer, VHD_FOOTER_SIZE, at + total, err);
        if (r == 0)
            r = vhd_rs_write(img, buf, total, at, err);
        if (r == 0)
            r = vhd_rs_write(img, dh, sizeof dh, vd_be64(s->footer + VHD_F_DATA_OFFSET), err);
        if (r == 0) {
            memcpy(s->dynhdr, dh, sizeof dh);
            s->next_free = at + total;
            s->file_size = at + total + VHD_FOOTER_SIZE;
        }
    }
    free(buf);
    return r;
}

/* Copy block i to the end of the file and switch its entry. */
static int vhd_rs_move_block(vd_image *img, struct vhd_state *s, uint32_t i, uint8_t *buf,
                             vd_error *err)
{
    uint64_t span = (uint64_t)s->bitmap_size + s->block_size;
    uint64_t from = (uint64_t)s->bat[i] * VHD_SECTOR;
    uint64_t to = vd_round_up(s->next_free + s->bitmap_size, 4096) - s->bitmap_size;
    if ((to + span) / VHD_SECTOR >= VHD_BAT_UNUSED)
        return vd_set_error(err, -EFBIG, "vhd: file would exceed 2 TiB of sectors");
    /* the file keeps ending with a valid footer */
    int r = vhd_rs_write(img, s->footer, VHD_FOOTER_SIZE, to + span, err);
    if (r == 0 && to > s->next_free)
        r = vd_file_zero(img->file, s->next_free, to - s->next_free, err);
    for (uint64_t p = 0; r == 0 && p < span; p += VHD_RS_PIECE) {
        size_t n = span - p < VHD_RS_PIECE ? (size_t)(span - p) : VHD_RS_PIECE;
        r = vd_file_pread(img->file, buf, n, from + p, err);
        if (r == 0)
            r = vd_file_pwrite(img->file, buf, n, to + p, err);
    }
    if (r == 0)
        r = vd_file_sync(img->file, err);
    uint8_t e[4];
    vd_put_be32(e, (uint32_t)(to / VHD_SECTOR));
    if (r == 0)
        r = vhd_rs_write(img, e, 4, s->bat_off + 4 * (uint64_t)i, err);
    if (r == 0) {
        s->bat[i] = (uint32_t)(to / VHD_SECTOR);
        s->next_free = to + span;
        s->file_size = to + span + VHD_FOOTER_SIZE;
    }
    return r;
}

/* Make the BAT `n` entries long (n > bat_entries). */
static int vhd_rs_grow_bat(vd_image *img, struct vhd_state *s, uint32_t n, vd_error *err)
{
    uint64_t old_end = s->bat_off + 4 * (uint64_t)s->bat_entries;
    uint64_t need = vd_round_up(s->bat_off + 4 * (uint64_t)n, VHD_SECTOR);
    uint64_t dh_off = vd_be64(s->footer + VHD_F_DATA_OFFSET);
    if (dh_off >= old_end && dh_off < need)
        return vd_set_error(err, -ENOTSUP, "vhd: %u BAT entries reach 0x%llx, where the dynamic "
                            "header lies (0x%llx); it is not moved in place", n,
                            (unsigned long long)need, (unsigned long long)dh_off);
    uint32_t *bat = realloc(s->bat, (size_t)n * 4);
    uint8_t *buf = malloc(VHD_RS_PIECE);
    if (bat)
        s->bat = bat;
    int r = bat && buf ? 0 : vd_set_error(err, -ENOMEM, "out of memory");
    if (r == 0)
        r = vhd_rs_move_locators(img, s, old_end, need, err);
    for (uint32_t i = 0; r == 0 && i < s->bat_entries; i++) {
        uint64_t st = (uint64_t)s->bat[i] * VHD_SECTOR;
        if (s->bat[i] != VHD_BAT_UNUSED && st < need && st + s->bitmap_size + s->block_size >
            old_end)
            r = vhd_rs_move_block(img, s, i, buf, err);
    }
    free(buf);
    /* an empty disk's footer right after the BAT moves out of the way */
    if (r == 0 && s->next_free < need) {
        r = vhd_rs_write(img, s->footer, VHD_FOOTER_SIZE, need, err);
        if (r == 0) {
            s->next_free = need;
            s->file_size = need + VHD_FOOTER_SIZE;
        }
    }
    size_t len = (size_t)(n - s->bat_entries) * 4;
    uint8_t *e = r == 0 ? malloc(len) : NULL;
    if (r == 0 && !e)
        r = vd_set_error(err, -ENOMEM, "out of memory");
    if (r == 0) {
        memset(e, 0xff, len);
        r = vhd_rs_write(img, e, len, old_end, err);
    }
    free(e);
    uint8_t dh[VHD_DYNHDR_SIZE];
    memcpy(dh, s->dynhdr, sizeof dh);
    vd_put_be32(dh + VHD_D_MAX_ENTRIES, n);
    vd_put_be32(dh + VHD_D_CHECKSUM, vhd_checksum(dh, sizeof dh, VHD_D_CHECKSUM));
    if (r == 0)
        r = vhd_rs_write(img, dh, sizeof dh, vd_be64(s->footer + VHD_F_DATA_OFFSET), err);
    if (r < 0)
        return r;
    memcpy(s->dynhdr, dh, sizeof dh);
    for (uint32_t i = s->bat_entries; i < n; i++)
        s->bat[i] = VHD_BAT_UNUSED;
    s->bat_entries = n;
    return 0;
}

/* Nothing past `end` may show when the disk grows: the rest of the block
 * holding `end` is zeroed (a differencing disk's sectors there then read
 * as zeroes, or the parent's where their bits are clear, as in a new
 * block) and the entries of blocks wholly past it are cleared, synced.
 * Called with `end` past the guest view: a shrink's new size once its
 * footers are written, or the old size before a grow (which cleans what a
 * shrink stopped after its footers left). */
static int vhd_rs_clear_tail(vd_image *img, struct vhd_state *s, uint64_t end, vd_error *err)
{
    uint64_t part = end / s->block_size, in = end % s->block_size;
    uint64_t first = part + (in != 0), last = first;
    int r = 0;
    bool wrote = false;
    if (in && part < s->bat_entries && s->bat[part] != VHD_BAT_UNUSED) {
        uint64_t data = (uint64_t)s->bat[part] * VHD_SECTOR + s->bitmap_size;
        r = vd_file_zero(img->file, data + in, s->block_size - in, err);
        wrote = true;
    }
    for (uint64_t i = first; i < s->bat_entries; i++)
        if (s->bat[i] != VHD_BAT_UNUSED)
            last = i + 1;
    if (r == 0 && last > first) {
        size_t len = (size_t)(last - first) * 4;
        uint8_t *e = malloc(len);
        if (!e)
            return vd_set_error(err, -ENOMEM, "out of memory");
        memset(e, 0xff, len);
        r = vd_file_pwrite(img->file, e, len, s->bat_off + 4 * first, err);
        free(e);
        for (uint64_t i = first; r == 0 && i < last; i++)
            s->bat[i] = VHD_BAT_UNUSED;
        wrote = true;
    }
    return r == 0 && wrote ? vd_file_sync(img->file, err) : r;
}

/* A differencing disk grown over a larger parent: the new range must read
 * as zeroes, and VHD has no entry meaning that, so it is made this layer's
 * own while the old size still rules: whole blocks appended (their data a
 * hole, the footer with the old size after them) with every sector marked
 * present, the rest of the block holding the old end written with zeroes
 * through the driver; then their BAT entries (the driver's flush, after a
 * sync).  Costs a bitmap sector and 4 BAT bytes per block, not the data. */
static int vhd_rs_zero_new(vd_image *img, struct vhd_state *s, uint64_t size, vd_error *err)
{
    uint64_t old = img->size, psize = img->backing->size, end = psize < size ? psize : size;
    int r = 0;
    img->size = size;           /* (the driver's writes see the new range) */
    for (uint64_t off = old; r == 0 && off < end;) {
        uint32_t blk = (uint32_t)(off / s->block_size);
        uint64_t in = off % s->block_size, n = s->block_size - in;
        if (in == 0 && s->bat[blk] == VHD_BAT_UNUSED) {
            r = vhd_alloc_block(img, s, blk, err);
            if (r == 0)
                r = vhd_set_bits(img, s, blk, 0, s->block_size, err);
        } else {
            r = img->drv->pwrite_zeroes(img, off, n < end - off ? n : end - off, 0, err);
        }
        off += n;
    }
    if (r == 0)
        r = img->drv->flush(img, err);
    img->size = old;
    return r;
}

int vhd_resize(vd_image *img, uint64_t size, vd_error *err)
{
    struct vhd_state *s = img->priv;
    if (size % VHD_SECTOR || size / VHD_SECTOR > VHD_MAX_SECTORS)
        return vd_set_error(err, -EINVAL, "vhd: new size %llu is not a multiple of 512 or over "
                            "2040 GiB", (unsigned long long)size);
    uint8_t nf[VHD_FOOTER_SIZE];
    vhd_rs_footer(s->footer, size, nf);
    int r;
    bool hide = false;
    if (s->type == VHD_TYPE_FIXED) {
        r = vhd_rs_fixed(img, s, size, nf, err);
    } else {
        uint64_t blocks = (size + s->block_size - 1) / s->block_size;
        if (blocks * 4 > VD_MAX_TABLE_BYTES)
            return vd_set_error(err, -EINVAL, "vhd: %llu bytes need a BAT of %llu entries; use "
                                "larger blocks", (unsigned long long)size,
                                (unsigned long long)blocks);
        r = size > img->size ? vhd_rs_clear_tail(img, s, img->size, err) : 0;
        if (r == 0 && blocks > s->bat_entries)
            r = vhd_rs_grow_bat(img, s, (uint32_t)blocks, err);
        hide = s->type == VHD_TYPE_DIFF && img->backing && img->backing->size > img->size &&
               size > img->size;
        if (r == 0 && hide)
            r = vhd_rs_zero_new(img, s, size, err);
        if (r == 0)
            r = vhd_rs_write(img, nf, VHD_FOOTER_SIZE, s->file_size - VHD_FOOTER_SIZE, err);
        if (r == 0)
            r = vhd_rs_write(img, nf, VHD_FOOTER_SIZE, 0, err);
        if (r == 0 && size < img->size)
            r = vhd_rs_clear_tail(img, s, size, err);
    }
    if (r == 0) {
        memcpy(s->footer, nf, sizeof nf);
        img->size = size;
    }
    return r < 0 ? r : hide;
}

static void vhd_leak(vd_check_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void vhd_leak(vd_check_result *res, const char *fmt, ...)
{
    if (!res->leaks++ && !res->corruptions) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(res->first_problem, sizeof res->first_problem, fmt, ap);
        va_end(ap);
    }
}

/* What an interrupted resize leaves, harmless to the guest view and
 * counted as leaks (docs/flush.md): a stale footer copy at offset 0 (the
 * end one rules), and BAT entries of blocks wholly past the end (a shrink
 * stopped after its footers; a grow clears them before it grows).
 * Repairing leaks writes the copy and clears the entries. */
int vhd_check_leftovers(vd_image *img, struct vhd_state *s, unsigned flags,
                               vd_check_result *res, vd_error *err)
{
    bool fix = flags & VD_CHECK_REPAIR_LEAKS;
    uint64_t keep = (img->size + s->block_size - 1) / s->block_size;
    int r = 0;
    vd_put_be32(s->footer + VHD_F_CHECKSUM,
                vhd_checksum(s->footer, VHD_FOOTER_SIZE, VHD_F_CHECKSUM));
    if (s->head_stale) {
        vhd_leak(res, "vhd: the footer copy at offset 0 differs from the footer at 0x%llx "
                 "(a resize was interrupted); qemu reads the copy",
                 (unsigned long long)(s->file_size - VHD_FOOTER_SIZE));
        if (fix && (r = vd_file_pwrite(img->file, s->footer, VHD_FOOTER_SIZE, 0, err)) == 0) {
            s->head_stale = false;
            res->leaks_fixed++;
        }
    }
    uint8_t unused[4];
    vd_put_be32(unused, VHD_BAT_UNUSED);
    for (uint64_t i = keep; r == 0 && i < s->bat_entries; i++) {
        if (s->bat[i] == VHD_BAT_UNUSED)
            continue;
        vhd_leak(res, "vhd: BAT entry %llu at 0x%llx maps a block past the end of the disk",
                 (unsigned long long)i, (unsigned long long)(s->bat_off + 4 * i));
        if (fix && (r = vd_file_pwrite(img->file, unused, 4, s->bat_off + 4 * i, err)) == 0) {
            s->bat[i] = VHD_BAT_UNUSED;
            res->leaks_fixed++;
        }
    }
    return r == 0 && res->leaks_fixed ? vd_file_sync(img->file, err) : r;
}
