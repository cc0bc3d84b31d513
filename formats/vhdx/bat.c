/* bat.c - the VHDX block allocation table and guest I/O.
 *
 * Reading: FULLY_PRESENT blocks come from the file, ZERO and UNMAPPED read as
 * zeroes, NOT_PRESENT and UNDEFINED as the parent (zeroes without one), and a
 * differencing disk's PARTIALLY_PRESENT block per sector from its sector
 * bitmap (bit n of the chunk's 1 MiB bitmap, least significant bit first).
 *
 * Writing: a write to a block that is not FULLY_PRESENT makes it so: a new
 * block is appended (1 MiB aligned) and filled with what the guest saw there
 * before (zeroes, or the parent's data in a differencing disk: copy-on-write
 * of the whole block), or a PARTIALLY_PRESENT block is completed in place.
 * BAT changes stay in memory and go through the log on flush and close. */
#include "vhdx.h"

#include <errno.h>
#include <stdlib.h>

#define VHDX_COPY_PIECE (1u << 20)

static int vhdx_bat_entry_check(struct vhdx_state *s, uint64_t i, uint64_t e, bool bitmap,
                                vd_error *err)
{
    unsigned st = VHDX_BAT_STATE(e);
    uint64_t at = s->bat_off + 8 * i, off = VHDX_BAT_OFF(e);
    uint64_t need = bitmap ? VHDX_MiB : s->block_size, end = 0;
    bool present;
    if (bitmap)
        present = st == VHDX_SB_PRESENT;
    else
        present = st == VHDX_PAYLOAD_FULLY_PRESENT ||
                  (st == VHDX_PAYLOAD_PARTIALLY_PRESENT && s->has_parent);
    if (!present && st != VHDX_PAYLOAD_NOT_PRESENT &&
        (bitmap || (st != VHDX_PAYLOAD_UNDEFINED && st != VHDX_PAYLOAD_ZERO &&
                    st != VHDX_PAYLOAD_UNMAPPED)))
        return vd_set_error(err, -EINVAL, "vhdx: BAT entry %llu at 0x%llx has invalid state %u",
                            (unsigned long long)i, (unsigned long long)at, st);
    if (!present)
        return 0;
    if (off < VHDX_MiB || vd_add_overflow(off, need, &end) || end > s->file_size)
        return vd_set_error(err, -EINVAL,
                            "vhdx: BAT entry %llu at 0x%llx points past end of file "
                            "(block 0x%llx..0x%llx, file 0x%llx)",
                            (unsigned long long)i, (unsigned long long)at,
                            (unsigned long long)off, (unsigned long long)end,
                            (unsigned long long)s->file_size);
    return 0;
}

int vhdx_read_bat(vd_image *img, struct vhdx_state *s, vd_error *err)
{
    s->chunk_ratio = ((uint64_t)1 << 23) * s->lss / s->block_size;
    s->payload_blocks = (img->size + s->block_size - 1) / s->block_size;
    if (s->has_parent)
        s->bat_entries = (s->payload_blocks + s->chunk_ratio - 1) / s->chunk_ratio *
                         (s->chunk_ratio + 1);
    else
        s->bat_entries = s->payload_blocks + (s->payload_blocks - 1) / s->chunk_ratio;
    uint64_t bytes = s->bat_entries * 8;
    if (bytes > s->bat_len || bytes > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EINVAL, "vhdx: BAT of %llu entries does not fit its region "
                            "(0x%llx bytes at 0x%llx)", (unsigned long long)s->bat_entries,
                            (unsigned long long)s->bat_len, (unsigned long long)s->bat_off);
    uint8_t *raw = malloc(bytes);
    s->bat = malloc(bytes);
    s->bat_dirty = calloc((bytes + VHDX_LOG_SECTOR - 1) / VHDX_LOG_SECTOR, 1);
    if (!raw || !s->bat || !s->bat_dirty) {
        free(raw);
        return vd_set_error(err, -ENOMEM, "vhdx: out of memory for a BAT of %llu bytes",
                            (unsigned long long)bytes);
    }
    int r = vhdx_file_read(img, raw, bytes, s->bat_off, err);
    for (uint64_t i = 0; r == 0 && i < s->bat_entries; i++) {
        s->bat[i] = vd_le64(raw + 8 * i);
        r = vhdx_bat_entry_check(s, i, s->bat[i], i % (s->chunk_ratio + 1) == s->chunk_ratio,
                                 err);
    }
    free(raw);
    return r;
}

/* Sector bitmap bits for [in, in+n) of block `blk`, one byte per sector in
 * `bits` (so runs are easy to find). */
static int vhdx_bitmap(vd_image *img, struct vhdx_state *s, uint64_t blk, uint64_t in,
                       uint64_t n, uint8_t **bits, vd_error *err)
{
    uint64_t c = blk / s->chunk_ratio, ei = c * (s->chunk_ratio + 1) + s->chunk_ratio;
    uint64_t e = s->bat[ei];
    if (VHDX_BAT_STATE(e) != VHDX_SB_PRESENT)
        return vd_set_error(err, -EINVAL, "vhdx: block %llu is partially present but its "
                            "sector bitmap (BAT entry %llu at 0x%llx) is not",
                            (unsigned long long)blk, (unsigned long long)ei,
                            (unsigned long long)(s->bat_off + 8 * ei));
    uint64_t first = (blk % s->chunk_ratio) * (s->block_size / s->lss) + in / s->lss;
    uint64_t count = (in + n + s->lss - 1) / s->lss - in / s->lss;
    uint64_t b0 = first / 8, b1 = (first + count - 1) / 8;
    uint8_t *raw = malloc(b1 - b0 + 1);
    *bits = malloc(count);
    if (!raw || !*bits) {
        free(raw);
        return vd_set_error(err, -ENOMEM, "out of memory");
    }
    int r = vhdx_file_read(img, raw, b1 - b0 + 1, VHDX_BAT_OFF(e) + b0, err);
    for (uint64_t k = 0; r == 0 && k < count; k++) {
        uint64_t sidx = first + k;
        (*bits)[k] = (raw[sidx / 8 - b0] >> (sidx % 8)) & 1;
    }
    free(raw);
    return r;
}

int vhdx_partial_runs(vd_image *img, struct vhdx_state *s, uint64_t off, uint64_t n,
                             uint64_t blk, uint64_t in, vhdx_run_fn fn, void *ctx, vd_error *err)
{
    uint8_t *bits = NULL;
    int r = vhdx_bitmap(img, s, blk, in, n, &bits, err);
    if (r < 0)
        return r;
    uint64_t done = 0, k = 0;
    while (r == 0 && done < n) {
        uint64_t run_end = (in / s->lss + k + 1) * s->lss - in;   /* end of sector k */
        uint64_t kk = k + 1;
        while (run_end < n && bits[kk] == bits[k]) {
            run_end += s->lss;
            kk++;
        }
        if (run_end > n)
            run_end = n;
        r = fn(img, off + done, run_end - done, bits[k],
               VHDX_BAT_OFF(s->bat[vhdx_bat_index(s, blk)]) + in + done, ctx, err);
        done = run_end;
        k = kk;
    }
    free(bits);
    return r;
}

struct vhdx_read_ctx {
    uint8_t *base;
    uint64_t base_off;
};

static int vhdx_read_run_at(vd_image *img, uint64_t off, uint64_t n, bool present,
                            uint64_t file_off, void *ctx, vd_error *err)
{
    struct vhdx_read_ctx *c = ctx;
    uint8_t *dst = c->base + (off - c->base_off);
    return present ? vhdx_file_read(img, dst, n, file_off, err)
                   : vd_backing_pread(img, dst, n, off, err);
}

/* The part of a read inside one block. */
static int vhdx_read_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    (void)ctx;
    struct vhdx_state *s = img->priv;
    uint64_t e = s->bat[vhdx_bat_index(s, pt->blk)];
    switch (VHDX_BAT_STATE(e)) {
    case VHDX_PAYLOAD_FULLY_PRESENT:
        return vhdx_file_read(img, pt->p, pt->n, VHDX_BAT_OFF(e) + pt->in, err);
    case VHDX_PAYLOAD_PARTIALLY_PRESENT: {
        struct vhdx_read_ctx c = { pt->p, pt->off };
        return vhdx_partial_runs(img, s, pt->off, pt->n, pt->blk, pt->in, vhdx_read_run_at,
                                 &c, err);
    }
    case VHDX_PAYLOAD_NOT_PRESENT:
    case VHDX_PAYLOAD_UNDEFINED:
        if (s->has_parent)
            return vd_backing_pread(img, pt->p, pt->n, pt->off, err);
        /* fall through */
    default:
        memset(pt->p, 0, pt->n);
        return 0;
    }
}

int vhdx_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err)
{
    struct vhdx_state *s = img->priv;
    return vd_walk(img, buf, off, len, s->block_size, vhdx_read_part, NULL, err);
}

static int vhdx_status_run(vd_image *img, uint64_t off, uint64_t n, bool present,
                           uint64_t file_off, void *ctx, vd_error *err)
{
    (void)img; (void)err;
    return vd_extents_add(ctx, off, n, present ? VD_LAYER_DATA : VD_LAYER_UNALLOC, 0,
                          present ? file_off : VD_NO_OFFSET);
}

/* The block status of the part of a request inside one block. */
static int vhdx_status_part(vd_image *img, struct vd_part *pt, void *ext, vd_error *err)
{
    struct vhdx_state *s = img->priv;
    uint64_t e = s->bat[vhdx_bat_index(s, pt->blk)];
    switch (VHDX_BAT_STATE(e)) {
    case VHDX_PAYLOAD_FULLY_PRESENT:
        return vd_extents_add(ext, pt->off, pt->n, VD_LAYER_DATA, 0, VHDX_BAT_OFF(e) + pt->in);
    case VHDX_PAYLOAD_PARTIALLY_PRESENT:
        return vhdx_partial_runs(img, s, pt->off, pt->n, pt->blk, pt->in, vhdx_status_run, ext,
                                 err);
    case VHDX_PAYLOAD_NOT_PRESENT:
    case VHDX_PAYLOAD_UNDEFINED:
        return vd_extents_add(ext, pt->off, pt->n,
                              s->has_parent ? VD_LAYER_UNALLOC : VD_LAYER_ZERO, 0, VD_NO_OFFSET);
    default:
        return vd_extents_add(ext, pt->off, pt->n, VD_LAYER_ZERO, 0, VD_NO_OFFSET);
    }
}

/* Most blocks one block status call looks at: a call over a huge disk
 * would otherwise walk its whole BAT (up to 32M entries) at once; callers
 * ask again from where the answer ends. */
#define VHDX_STATUS_BLOCKS 16384

int vhdx_block_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                      vd_error *err)
{
    struct vhdx_state *s = img->priv;
    uint64_t most = (uint64_t)VHDX_STATUS_BLOCKS * s->block_size - off % s->block_size;
    return vd_walk(img, NULL, off, len < most ? len : most, s->block_size, vhdx_status_part,
                   ext, err);
}

/* Make block `blk` fully present: a new block at the end of the file (or the
 * partially present one in place) holding what the guest saw, with the
 * guest's new bytes [in, in+n) from `data` laid over it. */
static int vhdx_make_present(vd_image *img, struct vhdx_state *s, uint64_t blk,
                             const uint8_t *data, uint64_t in, uint64_t n, vd_error *err)
{
    uint64_t bi = vhdx_bat_index(s, blk), e = s->bat[bi];
    unsigned st = VHDX_BAT_STATE(e);
    bool partial = st == VHDX_PAYLOAD_PARTIALLY_PRESENT;
    bool from_parent = s->has_parent && (st == VHDX_PAYLOAD_NOT_PRESENT ||
                                         st == VHDX_PAYLOAD_UNDEFINED);
    uint64_t at = partial ? VHDX_BAT_OFF(e) : vd_round_up(s->file_size, VHDX_MiB);
    uint64_t bstart = blk * s->block_size;
    uint64_t guest = img->size - bstart < s->block_size ? img->size - bstart : s->block_size;
    int r = 0;
    if (!partial && (r = vd_file_truncate(img->file, at + s->block_size, err)) < 0)
        return r;
    uint8_t *piece = malloc(VHDX_COPY_PIECE);
    if (!piece)
        return vd_set_error(err, -ENOMEM, "out of memory");
    for (uint64_t p = 0; r == 0 && p < guest; p += VHDX_COPY_PIECE) {
        uint64_t m = guest - p < VHDX_COPY_PIECE ? guest - p : VHDX_COPY_PIECE;
        bool touched = p < in + n && in < p + m;
        if (!partial && !from_parent && !touched)
            continue;              /* zeroes: the new block is a hole */
        if (partial || from_parent)
            r = vhdx_pread(img, piece, m, bstart + p, err);
        else
            memset(piece, 0, m);
        if (r == 0 && touched) {
            uint64_t a = in > p ? in : p, b = in + n < p + m ? in + n : p + m;
            memcpy(piece + (a - p), data + (a - in), b - a);
        }
        if (r == 0)
            r = vd_file_pwrite(img->file, piece, m, at + p, err);
    }
    free(piece);
    if (r < 0)
        return r;
    if (!partial && at + s->block_size > s->file_size)
        s->file_size = at + s->block_size;
    s->bat[bi] = at | VHDX_PAYLOAD_FULLY_PRESENT;
    s->bat_dirty[bi * 8 / VHDX_LOG_SECTOR] = 1;
    return 0;
}

/* The first change of guest data gets new file and data write GUIDs (the
 * spec's rule; a child's parent_linkage then no longer matches, on purpose). */
int vhdx_begin_write(vd_image *img, struct vhdx_state *s, vd_error *err)
{
    if (s->data_guid_fresh)
        return 0;
    uint8_t fg[16], dg[16];
    vhdx_guid_random(fg);
    vhdx_guid_random(dg);
    if (s->next_data_guid_set)      /* the one a child already accepts */
        memcpy(dg, s->next_data_guid, 16);
    int r = vhdx_write_header(img, s, fg, dg, NULL, err);
    if (r == 0)
        s->data_guid_fresh = true;
    return r;
}

/* The part of a write inside one block. */
static int vhdx_write_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    (void)ctx;
    struct vhdx_state *s = img->priv;
    uint64_t e = s->bat[vhdx_bat_index(s, pt->blk)];
    if (VHDX_BAT_STATE(e) == VHDX_PAYLOAD_FULLY_PRESENT)
        return vd_file_pwrite(img->file, pt->p, pt->n, VHDX_BAT_OFF(e) + pt->in, err);
    return vhdx_make_present(img, s, pt->blk, pt->p, pt->in, pt->n, err);
}

int vhdx_pwrite(vd_image *img, const void *buf, size_t len, uint64_t off, vd_error *err)
{
    struct vhdx_state *s = img->priv;
    if (s->crashed)
        return 0;
    int r = vhdx_begin_write(img, s, err);
    if (r == 0)
        r = vd_walk(img, (void *)buf, off, len, s->block_size, vhdx_write_part, NULL, err);
    return r;
}

/* Whether block `blk` reads as zeroes in this layer already. */
static bool vhdx_block_reads_zero(const struct vhdx_state *s, uint64_t blk)
{
    unsigned st = VHDX_BAT_STATE(s->bat[vhdx_bat_index(s, blk)]);
    if (st == VHDX_PAYLOAD_ZERO || st == VHDX_PAYLOAD_UNMAPPED)
        return true;
    return !s->has_parent && (st == VHDX_PAYLOAD_NOT_PRESENT || st == VHDX_PAYLOAD_UNDEFINED);
}

/* Zero the part of a request inside one block; `whole_only` points to the
 * flag below. */
static int vhdx_zero_part(vd_image *img, struct vd_part *pt, void *whole_only, vd_error *err)
{
    struct vhdx_state *s = img->priv;
    uint64_t bi = vhdx_bat_index(s, pt->blk), e = s->bat[bi];
    uint64_t bstart = pt->blk * s->block_size;
    uint64_t guest = img->size - bstart < s->block_size ? img->size - bstart : s->block_size;
    if (vhdx_block_reads_zero(s, pt->blk))
        return 0;
    if (pt->in == 0 && pt->n == guest && !s->leave_allocated) {
        unsigned st = VHDX_BAT_STATE(e);
        int r = 0;
        if (st == VHDX_PAYLOAD_FULLY_PRESENT || st == VHDX_PAYLOAD_PARTIALLY_PRESENT)
            r = vd_file_zero(img->file, VHDX_BAT_OFF(e), s->block_size, err);
        s->bat[bi] = VHDX_PAYLOAD_ZERO;
        s->bat_dirty[bi * 8 / VHDX_LOG_SECTOR] = 1;
        return r;
    }
    if (*(const bool *)whole_only)
        return 0;
    return vd_zero_by_writing(img, pt->off, pt->n, vhdx_pwrite, err);
}

/* Write zeroes: a whole block becomes PAYLOAD_BLOCK_ZERO (its old space is
 * punched out, never reused: blocks are only appended); a block that reads
 * as zeroes is left alone; a part of a block, or any block of a fixed disk
 * (whose blocks stay allocated), is written with zeroes.
 * `whole_only` (discard) skips the partial pieces: discarding is a hint. */
static int vhdx_zero_range(vd_image *img, uint64_t off, uint64_t len, bool whole_only,
                           vd_error *err)
{
    struct vhdx_state *s = img->priv;
    if (s->crashed)
        return 0;
    int r = vhdx_begin_write(img, s, err);
    if (r == 0)
        r = vd_walk(img, NULL, off, len, s->block_size, vhdx_zero_part, &whole_only, err);
    return r;
}

int vhdx_pwrite_zeroes(vd_image *img, uint64_t off, uint64_t len, unsigned flags,
                       vd_error *err)
{
    (void)flags;
    return vhdx_zero_range(img, off, len, false, err);
}

int vhdx_discard(vd_image *img, uint64_t off, uint64_t len, vd_error *err)
{
    return vhdx_zero_range(img, off, len, true, err);
}

/* Write the BAT sectors changed since the last flush through the log. */
int vhdx_bat_flush(vd_image *img, struct vhdx_state *s, vd_error *err)
{
    uint64_t nsec = (s->bat_entries * 8 + VHDX_LOG_SECTOR - 1) / VHDX_LOG_SECTOR, n = 0;
    for (uint64_t i = 0; i < nsec; i++)
        n += s->bat_dirty[i];
    if (!n || s->crashed)
        return 0;
    uint64_t *offs = malloc(n * sizeof *offs);
    uint8_t **secs = calloc(n, sizeof *secs);
    int r = offs && secs ? 0 : vd_set_error(err, -ENOMEM, "out of memory");
    uint64_t k = 0;
    for (uint64_t i = 0; r == 0 && i < nsec; i++) {
        if (!s->bat_dirty[i])
            continue;
        offs[k] = s->bat_off + i * VHDX_LOG_SECTOR;
        if (!(secs[k] = malloc(VHDX_LOG_SECTOR))) {
            r = vd_set_error(err, -ENOMEM, "out of memory");
            break;
        }
        /* the region is at least as long as the table: whole sectors exist */
        r = vhdx_file_read(img, secs[k], VHDX_LOG_SECTOR, offs[k], err);
        for (uint64_t j = 0; r == 0 && j < VHDX_LOG_SECTOR / 8; j++)
            if (i * (VHDX_LOG_SECTOR / 8) + j < s->bat_entries)
                vd_put_le64(secs[k] + 8 * j, s->bat[i * (VHDX_LOG_SECTOR / 8) + j]);
        k++;
    }
    if (r == 0)
        r = vhdx_log_write(img, s, offs, secs, n, err);
    if (r == 0)
        memset(s->bat_dirty, 0, nsec);
    for (uint64_t i = 0; secs && i < n; i++)
        free(secs[i]);
    free(secs);
    free(offs);
    return r;
}
