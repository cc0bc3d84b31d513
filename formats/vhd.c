/* vhd.c - VHD (Virtual PC / Hyper-V, qemu's "vpc"): fixed, dynamic and
 * differencing disks.  Open, read, write, block status and check; creating
 * lives in vhd-create.c.
 *
 * The virtual size follows qemu's rule so that both read the same guest view:
 * images made by Virtual PC or old qemu ("vpc ", "qemu", and unknown
 * creators) are as big as their CHS geometry, images from Hyper-V, disk2vhd,
 * XenServer and qemu's force_size ("win ", "d2v ", "tap\0", "CTXS", "qem2")
 * as the footer's current size, and a disk at the largest geometry always
 * uses the current size.
 *
 * Dynamic disks ignore the sector bitmap when reading (as qemu and Virtual PC
 * do: an allocated block holds all its sectors) and write it all-ones when
 * allocating.  Differencing disks use the bitmap: a clear bit means "read the
 * parent"; writes set bits, so no copy-on-write of the rest of a block is
 * needed. */
#include "vhd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* Copy-on-write unit inside a differencing block (see vhd_write_diff_piece). */
#define VHD_PAGE 4096u


/* One's complement of the byte sum, with the checksum field counted as 0. */
uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t csum_off)
{
    uint32_t sum = 0;
    for (size_t i = 0; i < len; i++)
        if (i < csum_off || i >= csum_off + 4)
            sum += buf[i];
    return ~sum;
}

/* The spec's CHS algorithm (appendix "CHS calculation"). */
void vhd_geometry(uint64_t sectors, uint16_t *cyl, uint8_t *heads, uint8_t *spt)
{
    uint64_t cth;
    unsigned h, s;
    if (sectors > VHD_MAX_GEOMETRY)
        sectors = VHD_MAX_GEOMETRY;
    if (sectors >= 65535ull * 16 * 63) {
        s = 255;
        h = 16;
        cth = sectors / s;
    } else {
        s = 17;
        cth = sectors / s;
        h = (unsigned)((cth + 1023) / 1024);
        if (h < 4)
            h = 4;
        if (cth >= h * 1024ull || h > 16) {
            s = 31;
            h = 16;
            cth = sectors / s;
        }
        if (cth >= h * 1024ull) {
            s = 63;
            h = 16;
            cth = sectors / s;
        }
    }
    *cyl = (uint16_t)(cth / h);
    *heads = (uint8_t)h;
    *spt = (uint8_t)s;
}

bool vhd_footer_valid(const uint8_t *f)
{
    return !memcmp(f + VHD_F_COOKIE, "conectix", 8) &&
           vd_be32(f + VHD_F_CHECKSUM) == vhd_checksum(f, VHD_FOOTER_SIZE, VHD_F_CHECKSUM);
}

/* A footer at the end (fixed and dynamic) or its copy at the start (dynamic
 * only) is a full match when its checksum holds. */
static int vhd_probe(const uint8_t *head, size_t len, const uint8_t *tail,
                     size_t tail_len, uint64_t file_size)
{
    (void)file_size;
    const uint8_t *t = tail_len >= VHD_FOOTER_SIZE ? tail + tail_len - VHD_FOOTER_SIZE : NULL;
    if (t && vhd_footer_valid(t))
        return 100;
    if (len >= VHD_FOOTER_SIZE && vhd_footer_valid(head))
        return 100;
    if ((t && !memcmp(t, "conectix", 8)) || (len >= 8 && !memcmp(head, "conectix", 8)))
        return 50;
    return 0;
}

/* qemu's rule, described at the top of the file. */
uint64_t vhd_guest_size(const uint8_t *f)
{
    const char *app = (const char *)f + VHD_F_CREATOR_APP;
    uint64_t chs = (uint64_t)vd_be16(f + VHD_F_CYLINDERS) * f[VHD_F_HEADS] * f[VHD_F_SPT];
    bool use_size = !memcmp(app, "win ", 4) || !memcmp(app, "qem2", 4) ||
                    !memcmp(app, "d2v ", 4) || !memcmp(app, "CTXS", 4) ||
                    !memcmp(app, "tap\0", 4);
    if (use_size || chs == VHD_MAX_GEOMETRY)
        return vd_be64(f + VHD_F_CUR_SIZE) / VHD_SECTOR * VHD_SECTOR;
    return chs * VHD_SECTOR;
}

static int vhd_read_footer(vd_image *img, struct vhd_state *s, vd_error *err)
{
    uint8_t head[VHD_FOOTER_SIZE];
    if (s->file_size < VHD_FOOTER_SIZE)
        return vd_set_error(err, -EINVAL, "vhd: file of %llu bytes is too small for a footer",
                            (unsigned long long)s->file_size);
    uint64_t foff = s->file_size - VHD_FOOTER_SIZE;
    int r = vd_file_pread(img->file, s->footer, VHD_FOOTER_SIZE, foff, err);
    if (r < 0)
        return r;
    if (vhd_footer_valid(s->footer))
        return 0;
    /* The trailing footer is damaged (or a crash cut the file): a dynamic
     * disk keeps a copy at offset 0. */
    r = vd_file_pread(img->file, head, VHD_FOOTER_SIZE, 0, err);
    if (r < 0)
        return r;
    if (vhd_footer_valid(head) && vd_be64(head + VHD_F_DATA_OFFSET) != UINT64_MAX) {
        memcpy(s->footer, head, VHD_FOOTER_SIZE);
        s->footer_from_head = true;
        return 0;
    }
    if (memcmp(s->footer, "conectix", 8))
        return vd_set_error(err, -EINVAL, "vhd: no footer cookie 'conectix' at 0x%llx",
                            (unsigned long long)foff);
    return vd_set_error(err, -EINVAL,
                        "vhd: footer checksum at 0x%llx is 0x%08x, computed 0x%08x",
                        (unsigned long long)(foff + VHD_F_CHECKSUM),
                        vd_be32(s->footer + VHD_F_CHECKSUM),
                        vhd_checksum(s->footer, VHD_FOOTER_SIZE, VHD_F_CHECKSUM));
}

static int vhd_read_dynhdr(vd_image *img, struct vhd_state *s, vd_error *err)
{
    uint64_t off = vd_be64(s->footer + VHD_F_DATA_OFFSET), end;
    if (vd_add_overflow(off, VHD_DYNHDR_SIZE, &end) || end > s->file_size)
        return vd_set_error(err, -EINVAL,
                            "vhd: footer data offset 0x%llx: dynamic header past end of file",
                            (unsigned long long)off);
    int r = vd_file_pread(img->file, s->dynhdr, VHD_DYNHDR_SIZE, off, err);
    if (r < 0)
        return r;
    const uint8_t *d = s->dynhdr;
    if (memcmp(d + VHD_D_COOKIE, "cxsparse", 8))
        return vd_set_error(err, -EINVAL, "vhd: no dynamic header cookie 'cxsparse' at 0x%llx",
                            (unsigned long long)off);
    uint32_t c = vhd_checksum(d, VHD_DYNHDR_SIZE, VHD_D_CHECKSUM);
    if (vd_be32(d + VHD_D_CHECKSUM) != c)
        return vd_set_error(err, -EINVAL,
                            "vhd: dynamic header checksum at 0x%llx is 0x%08x, computed 0x%08x",
                            (unsigned long long)(off + VHD_D_CHECKSUM),
                            vd_be32(d + VHD_D_CHECKSUM), c);
    s->block_size = vd_be32(d + VHD_D_BLOCK_SIZE);
    s->bat_entries = vd_be32(d + VHD_D_MAX_ENTRIES);
    s->bat_off = vd_be64(d + VHD_D_TABLE_OFFSET);
    /* 256 MiB blocks are far beyond what any tool writes (2 MiB is the
     * norm); refusing more keeps bitmap buffers small. */
    if (!vd_is_pow2(s->block_size) || s->block_size < VHD_SECTOR ||
        s->block_size > (256u << 20))
        return vd_set_error(err, -EINVAL, "vhd: block size %u at 0x%llx is invalid",
                            s->block_size, (unsigned long long)(off + VHD_D_BLOCK_SIZE));
    s->bitmap_size = (uint32_t)vd_round_up(s->block_size / VHD_SECTOR / 8, VHD_SECTOR);
    uint64_t bytes = (uint64_t)s->bat_entries * 4, bat_end;
    if (bytes > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EINVAL, "vhd: max table entries %u at 0x%llx is too large",
                            s->bat_entries, (unsigned long long)(off + VHD_D_MAX_ENTRIES));
    if (vd_add_overflow(s->bat_off, bytes, &bat_end) || bat_end > s->file_size)
        return vd_set_error(err, -EINVAL,
                            "vhd: BAT at 0x%llx (%u entries) extends past end of file (0x%llx)",
                            (unsigned long long)s->bat_off, s->bat_entries,
                            (unsigned long long)s->file_size);
    if ((uint64_t)s->bat_entries * s->block_size < img->size)
        return vd_set_error(err, -EINVAL,
                            "vhd: %u blocks of %u bytes cannot hold the virtual size %llu",
                            s->bat_entries, s->block_size, (unsigned long long)img->size);
    s->next_free = vd_round_up(bat_end, VHD_SECTOR);
    if (s->next_free < end)
        s->next_free = vd_round_up(end, VHD_SECTOR);
    return 0;
}

static int vhd_read_bat(vd_image *img, struct vhd_state *s, vd_error *err)
{
    size_t bytes = (size_t)s->bat_entries * 4;
    uint8_t *raw = malloc(bytes ? bytes : 1);
    s->bat = malloc(bytes ? bytes : 1);
    if (!raw || !s->bat) {
        free(raw);
        return vd_set_error(err, -ENOMEM, "vhd: out of memory for a BAT of %zu bytes", bytes);
    }
    int r = vd_file_pread(img->file, raw, bytes, s->bat_off, err);
    uint64_t span = (uint64_t)s->bitmap_size + s->block_size;
    for (uint32_t i = 0; r == 0 && i < s->bat_entries; i++) {
        uint32_t e = vd_be32(raw + 4 * (size_t)i);
        s->bat[i] = e;
        if (e == VHD_BAT_UNUSED)
            continue;
        uint64_t start = (uint64_t)e * VHD_SECTOR, end = start + span;
        if (end > s->file_size)
            r = vd_set_error(err, -EINVAL,
                             "vhd: BAT entry %u at 0x%llx points past end of file "
                             "(block 0x%llx..0x%llx, file 0x%llx)",
                             i, (unsigned long long)(s->bat_off + 4 * (uint64_t)i),
                             (unsigned long long)start, (unsigned long long)end,
                             (unsigned long long)s->file_size);
        else if (start < VHD_FOOTER_SIZE)
            r = vd_set_error(err, -EINVAL, "vhd: BAT entry %u at 0x%llx points into the header",
                             i, (unsigned long long)(s->bat_off + 4 * (uint64_t)i));
        else if (end > s->next_free)
            s->next_free = vd_round_up(end, VHD_SECTOR);
    }
    free(raw);
    return r;
}

/* New blocks go where the trailing footer is (it moves behind them), and
 * never over the parent locators' data, wherever a tool put it. */
static void vhd_account_locators(struct vhd_state *s)
{
    for (int i = 0; i < VHD_LOCATORS; i++) {
        const uint8_t *l = s->dynhdr + VHD_D_LOCATORS + i * VHD_LOCATOR_SIZE;
        uint64_t len = vd_be32(l + 8), space = vd_be32(l + 4), off = vd_be64(l + 16);
        if (!vd_be32(l) || off >= s->file_size)
            continue;
        uint64_t end = off + (space > len ? space : len);
        if (end > s->file_size)
            end = s->file_size;
        if (vd_round_up(end, VHD_SECTOR) > s->next_free)
            s->next_free = vd_round_up(end, VHD_SECTOR);
    }
    if (s->file_size - VHD_FOOTER_SIZE > s->next_free)
        s->next_free = vd_round_up(s->file_size - VHD_FOOTER_SIZE, VHD_SECTOR);
}

static void vhd_close(vd_image *img)
{
    struct vhd_state *s = img->priv;
    if (!s)
        return;
    free(s->bat);
    free(s->unsynced);
    free(s);
    img->priv = NULL;
}

static int vhd_open(vd_image *img, vd_error *err)
{
    struct vhd_state *s = calloc(1, sizeof *s);
    if (!s)
        return vd_set_error(err, -ENOMEM, "out of memory");
    img->priv = s;
    int64_t fsize = vd_file_size(img->file, err);
    int r = fsize < 0 ? (int)fsize : 0;
    if (r == 0) {
        s->file_size = (uint64_t)fsize;
        r = vhd_read_footer(img, s, err);
    }
    if (r < 0)
        goto fail;
    s->type = vd_be32(s->footer + VHD_F_TYPE);
    img->size = vhd_guest_size(s->footer);
    if (img->size > VHD_MAX_GEOMETRY * 16 * VHD_SECTOR) {   /* ~2 PiB: not a VHD */
        r = vd_set_error(err, -EINVAL, "vhd: current size %llu at 0x%x is too large",
                         (unsigned long long)img->size, VHD_F_CUR_SIZE);
        goto fail;
    }
    if (s->type == VHD_TYPE_FIXED) {
        if (img->size > s->file_size - VHD_FOOTER_SIZE && !s->footer_from_head) {
            /* Like qemu: a fixed disk's guest view cannot exceed its data. */
            img->size = s->file_size - VHD_FOOTER_SIZE;
        }
        img->cluster_size = 0;
        return 0;
    }
    if (s->type != VHD_TYPE_DYNAMIC && s->type != VHD_TYPE_DIFF) {
        r = vd_set_error(err, -EINVAL, "vhd: disk type %u at 0x%x is not fixed, dynamic or "
                         "differencing", s->type, VHD_F_TYPE);
        goto fail;
    }
    if ((r = vhd_read_dynhdr(img, s, err)) < 0 || (r = vhd_read_bat(img, s, err)) < 0)
        goto fail;
    img->cluster_size = s->block_size;
    vhd_account_locators(s);
    if (!s->footer_from_head) {
        uint8_t head[VHD_FOOTER_SIZE];
        if ((r = vd_file_pread(img->file, head, sizeof head, 0, err)) < 0)
            goto fail;
        s->head_stale = memcmp(head, s->footer, sizeof head) != 0;
    }
    if (s->type == VHD_TYPE_DIFF &&
        ((r = vhd_find_parent(img, s->dynhdr, s->file_size, err)) < 0 ||
         (r = vhd_check_parent(img, s->dynhdr, vd_be64(s->footer + VHD_F_DATA_OFFSET), err)) < 0))
        goto fail;
    return 0;
fail:
    free(img->backing_file);
    free(img->backing_format);
    img->backing_file = img->backing_format = NULL;
    vhd_close(img);
    return r;
}

static uint64_t vhd_block_data(struct vhd_state *s, uint32_t blk)
{
    return (uint64_t)s->bat[blk] * VHD_SECTOR + s->bitmap_size;
}

static bool vhd_bit(const uint8_t *bm, uint32_t sector)
{
    return bm[sector / 8] & (0x80 >> (sector % 8));
}

/* A run of sectors from `first` that share the same bitmap bit (<= max). */
static uint32_t vhd_run(const uint8_t *bm, uint32_t first, uint32_t max, bool *set)
{
    *set = vhd_bit(bm, first);
    uint32_t n = 1;
    while (n < max && vhd_bit(bm, first + n) == *set)
        n++;
    return n;
}

/* Walk the piece [in_blk, in_blk+n) of differencing block `blk` in runs of
 * sectors that are all in this file or all in the parent (its sector
 * bitmap): fn gets each run's offset in the piece, its length and, when it
 * is in this file, its file offset (else VD_NO_OFFSET). */
typedef int (*vhd_run_fn)(void *ctx, uint64_t done, uint64_t bytes, uint64_t file_off,
                          vd_error *err);

static int vhd_diff_runs(vd_image *img, struct vhd_state *s, uint32_t blk, uint32_t in_blk,
                         uint64_t n, vhd_run_fn fn, void *ctx, vd_error *err)
{
    uint8_t *bm = malloc(s->bitmap_size);
    if (!bm)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vd_file_pread(img->file, bm, s->bitmap_size, (uint64_t)s->bat[blk] * VHD_SECTOR,
                          err);
    uint32_t sec = in_blk / VHD_SECTOR, nsec = (uint32_t)((n + VHD_SECTOR - 1) / VHD_SECTOR);
    uint64_t done = 0;
    while (r == 0 && done < n) {
        bool set;
        uint32_t run = vhd_run(bm, sec, nsec, &set);
        uint64_t bytes = (uint64_t)run * VHD_SECTOR;
        if (bytes > n - done)
            bytes = n - done;
        r = fn(ctx, done, bytes,
               set ? vhd_block_data(s, blk) + (uint64_t)sec * VHD_SECTOR : VD_NO_OFFSET, err);
        done += bytes;
        sec += run;
        nsec -= run;
    }
    free(bm);
    return r;
}

struct vhd_read_ctx {
    vd_image *img;
    uint8_t *buf;
    uint64_t off;
};

static int vhd_read_run(void *ctx, uint64_t done, uint64_t bytes, uint64_t file_off,
                        vd_error *err)
{
    struct vhd_read_ctx *c = ctx;
    if (file_off != VD_NO_OFFSET)
        return vd_file_pread(c->img->file, c->buf + done, bytes, file_off, err);
    return vd_backing_pread(c->img, c->buf + done, bytes, c->off + done, err);
}

/* Read a piece of a differencing block: bitmap-set sectors from this file,
 * clear ones from the parent. */
static int vhd_read_diff_piece(vd_image *img, struct vhd_state *s, uint8_t *buf,
                               uint64_t n, uint64_t off, uint32_t blk, uint32_t in_blk,
                               vd_error *err)
{
    struct vhd_read_ctx c = { img, buf, off };
    return vhd_diff_runs(img, s, blk, in_blk, n, vhd_read_run, &c, err);
}

/* The part of a read inside one block. */
static int vhd_read_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    (void)ctx;
    struct vhd_state *s = img->priv;
    if (s->bat[pt->blk] == VHD_BAT_UNUSED)
        return vd_backing_pread(img, pt->p, pt->n, pt->off, err);
    if (s->type == VHD_TYPE_DIFF)
        return vhd_read_diff_piece(img, s, pt->p, pt->n, pt->off, pt->blk, pt->in, err);
    return vd_file_pread(img->file, pt->p, pt->n, vhd_block_data(s, pt->blk) + pt->in, err);
}

static int vhd_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err)
{
    struct vhd_state *s = img->priv;
    if (s->type == VHD_TYPE_FIXED)
        return vd_file_pread(img->file, buf, len, off, err);
    return vd_walk(img, buf, off, len, s->block_size, vhd_read_part, NULL, err);
}

static int vhd_write_footer(vd_image *img, struct vhd_state *s, uint64_t at, vd_error *err)
{
    vd_put_be32(s->footer + VHD_F_CHECKSUM,
                vhd_checksum(s->footer, VHD_FOOTER_SIZE, VHD_F_CHECKSUM));
    return vd_file_pwrite(img->file, s->footer, VHD_FOOTER_SIZE, at, err);
}

/* Append a block at the end: bitmap (all ones for a dynamic disk, where the
 * bitmap is not consulted; all clear for a differencing one), zero data (a
 * hole), then the footer after it; the BAT entry follows at the next flush
 * (vhd_write_unsynced), so a crash or power loss in between leaves a valid
 * image with a leaked block. */
int vhd_alloc_block(vd_image *img, struct vhd_state *s, uint32_t blk, vd_error *err)
{
    /* The data (after the bitmap) starts on a 4 KiB boundary, as qemu lays
     * it out: file-system blocks then hold whole guest pages, and
     * copy_file_range can share them with a raw file (reflinks). */
    uint64_t start = vd_round_up(s->next_free + s->bitmap_size, 4096) - s->bitmap_size;
    uint64_t end = start + s->bitmap_size + s->block_size;
    if (start / VHD_SECTOR >= VHD_BAT_UNUSED)
        return vd_set_error(err, -EFBIG, "vhd: file would exceed 2 TiB of sectors");
    uint8_t *bm = malloc(s->bitmap_size);
    if (!bm)
        return vd_set_error(err, -ENOMEM, "out of memory");
    memset(bm, s->type == VHD_TYPE_DIFF ? 0 : 0xff, s->bitmap_size);
    int r = 0;
    if (start > s->next_free)     /* the old footer copy in the gap */
        r = vd_file_zero(img->file, s->next_free, start - s->next_free, err);
    if (r == 0)
        r = vd_file_pwrite(img->file, bm, s->bitmap_size, start, err);
    free(bm);
    if (r == 0)
        r = vd_file_zero(img->file, start + s->bitmap_size, s->block_size, err);
    if (r == 0)
        r = vhd_write_footer(img, s, end, err);
    if (r < 0)
        return r;
    if (VD_ARRAY_RESERVE(s->unsynced, s->cap_unsynced, s->n_unsynced + 1) < 0)
        return vd_set_error(err, -ENOMEM, "vhd: %s: out of memory", img->file->path);
    s->unsynced[s->n_unsynced++] = blk;
    s->bat[blk] = (uint32_t)(start / VHD_SECTOR);
    s->next_free = end;
    s->file_size = end + VHD_FOOTER_SIZE;
    return 0;
}

/* Mark sectors [in_blk, in_blk+n) of a differencing block as present. */
int vhd_set_bits(vd_image *img, struct vhd_state *s, uint32_t blk, uint32_t in_blk,
                 uint64_t n, vd_error *err)
{
    uint32_t first = in_blk / VHD_SECTOR, last = (uint32_t)((in_blk + n - 1) / VHD_SECTOR);
    uint32_t b0 = first / 8 / VHD_SECTOR * VHD_SECTOR, b1 = last / 8 / VHD_SECTOR * VHD_SECTOR;
    size_t span = b1 - b0 + VHD_SECTOR;
    uint64_t at = (uint64_t)s->bat[blk] * VHD_SECTOR + b0;
    uint8_t *bm = malloc(span);
    if (!bm)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vd_file_pread(img->file, bm, span, at, err);
    for (uint32_t i = first; r == 0 && i <= last; i++)
        bm[i / 8 - b0] |= (uint8_t)(0x80 >> (i % 8));
    if (r == 0)
        r = vd_file_pwrite(img->file, bm, span, at, err);
    free(bm);
    return r;
}

/* Write into a differencing block.  The bitmap is per sector, but readers
 * such as libvhdi (and Hyper-V's own 4 KiB I/O) treat it in 4 KiB pages, so a
 * write that covers part of a page first copies the rest of the page from
 * the merged view (copy-on-write) and then marks the whole page present. */
static int vhd_write_diff_piece(vd_image *img, struct vhd_state *s, const uint8_t *p,
                                uint64_t n, uint64_t off, uint32_t blk, uint32_t in_blk,
                                vd_error *err)
{
    uint64_t bstart = off - in_blk;
    uint64_t ps = in_blk / VHD_PAGE * VHD_PAGE, pe = vd_round_up(in_blk + n, VHD_PAGE);
    if (pe > s->block_size)
        pe = s->block_size;
    if (bstart + pe > img->size)
        pe = img->size - bstart;
    if (pe < in_blk + n)
        pe = in_blk + n;
    if (ps == in_blk && pe == in_blk + n) {
        int r = vd_file_pwrite(img->file, p, n, vhd_block_data(s, blk) + in_blk, err);
        return r < 0 ? r : vhd_set_bits(img, s, blk, in_blk, n, err);
    }
    uint8_t *buf = malloc(pe - ps);
    if (!buf)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vhd_read_diff_piece(img, s, buf, pe - ps, bstart + ps, blk, (uint32_t)ps, err);
    if (r == 0) {
        memcpy(buf + (in_blk - ps), p, n);
        r = vd_file_pwrite(img->file, buf, pe - ps, vhd_block_data(s, blk) + ps, err);
    }
    if (r == 0)
        r = vhd_set_bits(img, s, blk, (uint32_t)ps, pe - ps, err);
    free(buf);
    return r;
}

/* The part of a write inside one block (allocated first when unused). */
static int vhd_write_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    (void)ctx;
    struct vhd_state *s = img->priv;
    int r = 0;
    if (s->bat[pt->blk] == VHD_BAT_UNUSED)
        r = vhd_alloc_block(img, s, pt->blk, err);
    if (r == 0 && s->type == VHD_TYPE_DIFF)
        r = vhd_write_diff_piece(img, s, pt->p, pt->n, pt->off, pt->blk, pt->in, err);
    else if (r == 0)
        r = vd_file_pwrite(img->file, pt->p, pt->n, vhd_block_data(s, pt->blk) + pt->in, err);
    return r;
}

static int vhd_pwrite(vd_image *img, const void *buf, size_t len, uint64_t off,
                      vd_error *err)
{
    struct vhd_state *s = img->priv;
    if (s->type == VHD_TYPE_FIXED)
        return vd_file_pwrite(img->file, buf, len, off, err);
    return vd_walk(img, (void *)buf, off, len, s->block_size, vhd_write_part, NULL, err);
}

/* Zeroes over the part of a request inside one block, written from a zero
 * block allocated at the first need (*zero). */
static int vhd_zero_part(vd_image *img, struct vd_part *pt, void *zero, vd_error *err)
{
    struct vhd_state *s = img->priv;
    uint8_t **z = zero;
    if (s->type != VHD_TYPE_DIFF && s->bat[pt->blk] == VHD_BAT_UNUSED)
        return 0;
    if (!*z && !(*z = calloc(1, s->block_size)))
        return vd_set_error(err, -ENOMEM, "out of memory");
    return vhd_pwrite(img, *z, pt->n, pt->off, err);
}

/* Write zeroes: an unallocated block of a dynamic disk reads as zeroes
 * already and stays unallocated; everything else (allocated blocks, fixed
 * disks, differencing blocks that would show the parent) is written. */
static int vhd_pwrite_zeroes(vd_image *img, uint64_t off, uint64_t len, unsigned flags,
                             vd_error *err)
{
    (void)flags;
    struct vhd_state *s = img->priv;
    if (s->type == VHD_TYPE_FIXED)
        return vd_file_zero(img->file, off, len, err);
    uint8_t *zero = NULL;
    int r = vd_walk(img, NULL, off, len, s->block_size, vhd_zero_part, &zero, err);
    free(zero);
    return r;
}

/* Sync the new blocks (and the footer after them), then write their BAT
 * entries; vhd_flush syncs again. */
static int vhd_write_unsynced(vd_image *img, struct vhd_state *s, vd_error *err)
{
    if (!s->n_unsynced)
        return 0;
    int r = vd_file_sync(img->file, err);
    for (size_t i = 0; r == 0 && i < s->n_unsynced; i++) {
        uint32_t blk = s->unsynced[i];
        uint8_t e[4];
        vd_put_be32(e, s->bat[blk]);
        r = vd_file_pwrite(img->file, e, 4, s->bat_off + 4 * (uint64_t)blk, err);
    }
    if (r == 0)
        s->n_unsynced = 0;
    return r;
}

static int vhd_flush(vd_image *img, vd_error *err)
{
    struct vhd_state *s = img->priv;
    int r0 = vhd_write_unsynced(img, s, err);
    if (r0 < 0)
        return r0;
    if (s->footer_from_head && !img->readonly) {
        /* Restore the damaged trailing footer from the good copy. */
        int r = vhd_write_footer(img, s, s->next_free, err);
        if (r < 0)
            return r;
        s->footer_from_head = false;
    }
    if (s->head_stale && !img->readonly) {
        int r = vhd_write_footer(img, s, 0, err);
        if (r < 0)
            return r;
        s->head_stale = false;
    }
    return vd_file_sync(img->file, err);
}

struct vhd_status_ctx {
    vd_extents *ext;
    uint64_t off;
};

static int vhd_status_run(void *ctx, uint64_t done, uint64_t bytes, uint64_t file_off,
                          vd_error *err)
{
    struct vhd_status_ctx *c = ctx;
    (void)err;
    return vd_extents_add(c->ext, c->off + done, bytes,
                          file_off != VD_NO_OFFSET ? VD_LAYER_DATA : VD_LAYER_UNALLOC, 0,
                          file_off);
}

/* The block status of the part of a request inside one block. */
static int vhd_status_part(vd_image *img, struct vd_part *pt, void *ext, vd_error *err)
{
    struct vhd_state *s = img->priv;
    if (s->bat[pt->blk] == VHD_BAT_UNUSED)
        return vd_extents_add(ext, pt->off, pt->n, VD_LAYER_UNALLOC, 0, VD_NO_OFFSET);
    if (s->type == VHD_TYPE_DYNAMIC)
        return vd_extents_add(ext, pt->off, pt->n, VD_LAYER_DATA, 0,
                              vhd_block_data(s, pt->blk) + pt->in);
    struct vhd_status_ctx c = { ext, pt->off };
    return vhd_diff_runs(img, s, (uint32_t)pt->blk, (uint32_t)pt->in, pt->n, vhd_status_run,
                         &c, err);
}

static int vhd_block_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                            vd_error *err)
{
    struct vhd_state *s = img->priv;
    if (s->type == VHD_TYPE_FIXED)
        return vd_extents_add(ext, off, len, VD_LAYER_DATA, 0, off);
    return vd_walk(img, NULL, off, len, s->block_size, vhd_status_part, ext, err);
}

/* Blocks overlapping each other or the BAT are corruptions; the guest view
 * does not depend on anything else worth checking. */
static int vhd_check(vd_image *img, unsigned flags, vd_check_result *res, vd_error *err)
{
    struct vhd_state *s = img->priv;
    memset(res, 0, sizeof *res);
    res->image_end_offset = s->file_size;
    if (s->type == VHD_TYPE_FIXED)
        return 0;
    int r = vhd_check_leftovers(img, s, flags, res, err);
    if (r < 0)
        return r;
    uint64_t span = (uint64_t)s->bitmap_size + s->block_size;
    uint64_t bat_end = s->bat_off + 4 * (uint64_t)s->bat_entries;
    uint32_t *order = malloc(sizeof *order * (s->bat_entries ? s->bat_entries : 1));
    if (!order)
        return vd_set_error(err, -ENOMEM, "out of memory");
    size_t n = 0;
    res->total_clusters = s->bat_entries;
    for (uint32_t i = 0; i < s->bat_entries; i++) {
        if (s->bat[i] == VHD_BAT_UNUSED)
            continue;
        uint64_t st = (uint64_t)s->bat[i] * VHD_SECTOR;
        res->allocated_clusters++;
        if (st < bat_end && st + span > s->bat_off && !res->corruptions++)
            snprintf(res->first_problem, sizeof res->first_problem,
                     "vhd: block %u at 0x%llx overlaps the BAT", i, (unsigned long long)st);
        order[n++] = s->bat[i];
    }
    /* Sort the sector numbers (insertion sort is too slow for big BATs). */
    for (size_t gap = n / 2; gap; gap /= 2)
        for (size_t i = gap; i < n; i++)
            for (size_t j = i; j >= gap && order[j - gap] > order[j]; j -= gap) {
                uint32_t t = order[j];
                order[j] = order[j - gap];
                order[j - gap] = t;
            }
    for (size_t i = 1; i < n; i++)
        if ((uint64_t)order[i] * VHD_SECTOR < (uint64_t)order[i - 1] * VHD_SECTOR + span &&
            !res->corruptions++)
            snprintf(res->first_problem, sizeof res->first_problem,
                     "vhd: blocks at sectors 0x%x and 0x%x overlap", order[i - 1], order[i]);
    for (size_t i = 1; i < n; i++)
        if (order[i] != order[i - 1] + span / VHD_SECTOR)
            res->fragmented_clusters++;
    free(order);
    return 0;
}

static void vhd_details(vd_image *img, vd_kv_fn fn, void *ctx)
{
    struct vhd_state *s = img->priv;
    char buf[64];
    fn(ctx, "subformat", s->type == VHD_TYPE_FIXED ? "fixed"
                         : s->type == VHD_TYPE_DYNAMIC ? "dynamic" : "differencing");
    snprintf(buf, sizeof buf, "%.4s", (const char *)s->footer + VHD_F_CREATOR_APP);
    fn(ctx, "creator", buf);
    snprintf(buf, sizeof buf, "%u/%u/%u", vd_be16(s->footer + VHD_F_CYLINDERS),
             s->footer[VHD_F_HEADS], s->footer[VHD_F_SPT]);
    fn(ctx, "chs", buf);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)vd_be64(s->footer + VHD_F_CUR_SIZE));
    fn(ctx, "current-size", buf);
    if (s->type != VHD_TYPE_FIXED) {
        snprintf(buf, sizeof buf, "%u", s->block_size);
        fn(ctx, "block-size", buf);
    }
    if (s->footer_from_head)
        fn(ctx, "footer", "damaged; using the copy at offset 0");
}

/* Allocated data is stored plainly in the image file (zero-copy reads). */
static vd_file *vhd_data_file(vd_image *img)
{
    return img->file;
}

/* One block from `off` (block aligned): allocated if it is not; in a
 * differencing disk its sectors are marked present, since the caller
 * writes the whole range. */
static int vhd_map_for_write(vd_image *img, uint64_t off, uint64_t len, uint64_t *file_off,
                             uint64_t *mapped, vd_error *err)
{
    struct vhd_state *s = img->priv;
    if (s->type == VHD_TYPE_FIXED) {   /* the data is the start of the file */
        *file_off = off;
        *mapped = len;
        return 0;
    }
    uint64_t blk, in_blk;
    uint64_t n = vd_block_piece(off, len, s->block_size, &blk, &in_blk);
    int r = 0;
    if (s->bat[blk] == VHD_BAT_UNUSED)
        r = vhd_alloc_block(img, s, blk, err);
    if (r == 0 && s->type == VHD_TYPE_DIFF)
        r = vhd_set_bits(img, s, blk, in_blk, n, err);
    *file_off = vhd_block_data(s, blk) + in_blk;
    *mapped = n;
    return r;
}

static const char *const vhd_extensions[] = { "vhd", "vpc", NULL };
static const char *const vhd_aliases[] = { "vpc", NULL };

static const vd_opt_desc vhd_create_opts[] = {
    { "subformat", "dynamic (default) or fixed" },
    { "force_size", "on: the virtual size is exactly the size asked (off: rounded up to "
                    "CHS geometry, as Virtual PC and qemu do)" },
    { NULL, NULL },
};

const struct vd_driver vd_vhd = {
    .name = "vhd",
    .description = "Microsoft Virtual Hard Disk (VHD, qemu's vpc)",
    .extensions = vhd_extensions,
    .aliases = vhd_aliases,
    .probe = vhd_probe,
    .align = VHD_SECTOR,
    .parallel_reads = true,
    .open = vhd_open,
    .close = vhd_close,
    .create = vhd_create,
    .create_opts = vhd_create_opts,
    .pread = vhd_pread,
    .pwrite = vhd_pwrite,
    .pwrite_zeroes = vhd_pwrite_zeroes,
    .flush = vhd_flush,
    .block_status = vhd_block_status,
    .data_file = vhd_data_file,
    .map_for_write = vhd_map_for_write,
    .set_backing = vhd_set_backing,
    .make_empty = vhd_make_empty,
    .resize = vhd_resize,
    .resize_clears_tail = true,
    .check = vhd_check,
    .details = vhd_details,
    .can_write = VD_CAN_NATIVE,
};
