/* inplace.c - the in-place operations of VHDX: resize, a new parent link
 * (rebase, and the relink after a commit), emptying (commit), and the step
 * a commit takes before it writes into a VHDX parent.
 *
 * Every change of the metadata region and of the BAT goes through the log
 * (vhdx_log_write: the entry is made durable, then the sectors are written
 * in place and made durable), and the log is marked empty right after, so
 * the image is clean again when the operation returns.  A change that fits
 * one log entry (all of these, unless a BAT of more than ~1 MiB changes) is
 * atomic: a crash leaves the old metadata or a log that any read-write open
 * (ours or qemu's) replays into the new.  Before the first change the header
 * gets a new FileWriteGuid, and a new DataWriteGuid when the guest view may
 * change (resize, another parent).
 *
 * A differencing disk's parent_linkage must be its parent's DataWriteGuid,
 * and a commit writing into the parent changes that GUID.  So before the
 * commit's first write, vhdx_prepare_commit picks the parent's next
 * DataWriteGuid and stores it in the child as parent_linkage2 (the current
 * one stays parent_linkage): the child opens with the parent before, during
 * and after the commit; the relink afterwards keeps only the new one. */
#include "vhdx.h"

#include <errno.h>
#include <stdlib.h>

/* 4 KiB sectors to write through the log, in order. */
struct vhdx_edit {
    uint64_t *offs;
    uint8_t **secs;
    size_t n;
};

static void vhdx_edit_free(struct vhdx_edit *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->secs[i]);
    free(e->secs);
    free(e->offs);
}

/* The sectors of `now` (an edited copy of the file's [off, off+len),
 * 4 KiB aligned) that differ from `was`. */
static int vhdx_edit_diff(struct vhdx_edit *e, uint64_t off, const uint8_t *was,
                          const uint8_t *now, size_t len, vd_error *err)
{
    for (size_t p = 0; p < len; p += VHDX_LOG_SECTOR) {
        if (!memcmp(was + p, now + p, VHDX_LOG_SECTOR))
            continue;
        uint64_t *no = realloc(e->offs, (e->n + 1) * sizeof *no);
        if (no)
            e->offs = no;
        uint8_t **ns = no ? realloc(e->secs, (e->n + 1) * sizeof *ns) : NULL;
        if (ns)
            e->secs = ns;
        uint8_t *sec = ns ? malloc(VHDX_LOG_SECTOR) : NULL;
        if (!sec)
            return vd_set_error(err, -ENOMEM, "out of memory");
        memcpy(sec, now + p, VHDX_LOG_SECTOR);
        e->offs[e->n] = off + p;
        e->secs[e->n++] = sec;
    }
    return 0;
}

static int vhdx_edit_commit(vd_image *img, struct vhdx_state *s, struct vhdx_edit *e,
                            vd_error *err)
{
    int r = vhdx_log_write(img, s, e->offs, e->secs, e->n, err);
    return r < 0 ? r : vhdx_log_close(img, s, err);
}

/* The end of an edit: committed as one log entry when r is 0; the edit and
 * the metadata copies (vhdx_meta_load; NULL when none) are freed either
 * way.  Returns r or the commit's error. */
static int vhdx_edit_finish(vd_image *img, struct vhdx_state *s, struct vhdx_edit *e,
                            uint8_t *was, uint8_t *now, int r, vd_error *err)
{
    if (r == 0)
        r = vhdx_edit_commit(img, s, e, err);
    vhdx_edit_free(e);
    free(was);
    free(now);
    return r;
}

/* The metadata region as the file holds it (`was`) and a copy to edit. */
static int vhdx_meta_load(vd_image *img, struct vhdx_state *s, uint8_t **was, uint8_t **now,
                          vd_error *err)
{
    *was = malloc(s->meta_len);
    *now = malloc(s->meta_len);
    int r = *was && *now ? vhdx_file_read(img, *was, s->meta_len, s->meta_off, err)
                         : vd_set_error(err, -ENOMEM, "out of memory");
    if (r == 0)
        memcpy(*now, *was, s->meta_len);
    return r;
}

/* The metadata table entry with this GUID (NULL: none). */
static uint8_t *vhdx_meta_entry(uint8_t *m, const char *guid)
{
    uint8_t g[16];
    vhdx_guid_parse(guid, g);
    uint32_t n = vd_le16(m + 10);
    for (uint32_t i = 0; i < n; i++)
        if (!memcmp(m + 32 + 32 * (size_t)i, g, 16))
            return m + 32 + 32 * (size_t)i;
    return NULL;
}

/* The BAT edited: `bat` of `n` entries over the file's [0, upto) entries
 * (those past n become 0). */
static int vhdx_edit_bat(vd_image *img, struct vhdx_state *s, struct vhdx_edit *e,
                         const uint64_t *bat, uint64_t n, uint64_t upto, vd_error *err)
{
    size_t len = (size_t)vd_round_up((n > upto ? n : upto) * 8, VHDX_LOG_SECTOR);
    uint8_t *was = malloc(len), *now = malloc(len);
    int r = was && now ? vhdx_file_read(img, was, len, s->bat_off, err)
                       : vd_set_error(err, -ENOMEM, "out of memory");
    if (r == 0) {
        memcpy(now, was, len);
        for (uint64_t i = 0; i < len / 8; i++)
            if (i < n || i < upto)
                vd_put_le64(now + 8 * i, i < n ? bat[i] : 0);
        r = vhdx_edit_diff(e, s->bat_off, was, now, len, err);
    }
    free(was);
    free(now);
    return r;
}

static uint64_t vhdx_entries_for(const struct vhdx_state *s, uint64_t blocks)
{
    return s->has_parent ? (blocks + s->chunk_ratio - 1) / s->chunk_ratio * (s->chunk_ratio + 1)
                         : blocks + (blocks - 1) / s->chunk_ratio;
}

static bool vhdx_is_bitmap(const struct vhdx_state *s, uint64_t i)
{
    return i % (s->chunk_ratio + 1) == s->chunk_ratio;
}

/* Take `bat` (n entries) as the in-memory table. */
static int vhdx_adopt_bat(struct vhdx_state *s, uint64_t *bat, uint64_t n, vd_error *err)
{
    uint8_t *dirty = calloc((n * 8 + VHDX_LOG_SECTOR - 1) / VHDX_LOG_SECTOR, 1);
    if (!dirty) {
        free(bat);
        return vd_set_error(err, -ENOMEM, "out of memory");
    }
    free(s->bat);
    free(s->bat_dirty);
    s->bat = bat;
    s->bat_dirty = dirty;
    s->bat_entries = n;
    return 0;
}

/* ---- resize ------------------------------------------------------------- */

/* The BAT `bat` (n entries) written whole at `off`, a new region past the
 * end of the file that nothing names yet. */
static int vhdx_write_bat_at(vd_image *img, const uint64_t *bat, uint64_t n, uint64_t off,
                             vd_error *err)
{
    uint8_t *buf = malloc(VHDX_MiB);
    int r = buf ? 0 : vd_set_error(err, -ENOMEM, "out of memory");
    for (uint64_t i = 0; r == 0 && i < n; i += VHDX_MiB / 8) {
        uint64_t k = n - i < VHDX_MiB / 8 ? n - i : VHDX_MiB / 8;
        for (uint64_t j = 0; j < k; j++)
            vd_put_le64(buf + 8 * j, bat[i + j]);
        r = vd_file_pwrite(img->file, buf, k * 8, off + 8 * i, err);
    }
    free(buf);
    return r;
}

/* Both region tables naming the BAT region at `off` (`len` bytes): the
 * sectors that change, for the log entry that also sets the new size.  The
 * tables sit in the header section but locate nothing the log needs, so
 * the log can carry them; vdisk and qemu read them after the replay. */
static int vhdx_edit_regions(vd_image *img, struct vhdx_edit *e, uint64_t off, uint64_t len,
                             vd_error *err)
{
    uint8_t *was[2] = { malloc(VHDX_RT_SIZE), malloc(VHDX_RT_SIZE) }, *now = malloc(VHDX_RT_SIZE);
    static const uint64_t at[2] = { VHDX_RT1_OFF, VHDX_RT2_OFF };
    int r = was[0] && was[1] && now ? 0 : vd_set_error(err, -ENOMEM, "out of memory");
    int valid = -1;
    for (int k = 0; r == 0 && k < 2; k++) {
        r = vhdx_file_read(img, was[k], VHDX_RT_SIZE, at[k], err);
        if (r == 0 && valid < 0 && !memcmp(was[k], "regi", 4) &&
            vd_le32(was[k] + 4) == vhdx_struct_crc(was[k], VHDX_RT_SIZE, 4))
            valid = k;
    }
    if (r == 0 && valid < 0)
        r = vd_set_error(err, -EINVAL, "vhdx: no valid region table at 0x30000 or 0x40000");
    uint8_t g[16];
    vhdx_guid_parse(VHDX_GUID_BAT, g);
    uint8_t *ent = NULL;
    if (r == 0) {
        memcpy(now, was[valid], VHDX_RT_SIZE);
        uint32_t cnt = vd_le32(now + 8);
        for (uint32_t i = 0; i < cnt && i < VHDX_MAX_ENTRIES; i++)
            if (!memcmp(now + 16 + 32 * (size_t)i, g, 16))
                ent = now + 16 + 32 * (size_t)i;
        if (!ent)
            r = vd_set_error(err, -EINVAL, "vhdx: the region table at 0x%llx has no BAT entry",
                             (unsigned long long)at[valid]);
    }
    if (r == 0) {
        vd_put_le64(ent + 16, off);
        vd_put_le32(ent + 24, (uint32_t)len);
        vd_put_le32(now + 4, vhdx_struct_crc(now, VHDX_RT_SIZE, 4));
    }
    for (int k = 0; r == 0 && k < 2; k++)
        r = vhdx_edit_diff(e, at[k], was[k], now, VHDX_RT_SIZE, err);
    free(was[0]);
    free(was[1]);
    free(now);
    return r;
}

/* Grow: the BAT gains entries (NOT_PRESENT; a fixed disk's new blocks, and
 * a differencing disk's sector bitmaps of new chunks, are appended to the
 * file, sparse, before any metadata names them), logged before the new
 * size.  A BAT that outgrows its region is written whole into a larger
 * region appended to the file (synced), and the same log entry that sets
 * the size points both region tables at it; the old region is left
 * unreferenced.  Shrink: the size first, then the entries of blocks
 * past the end are cleared; their space stays in the file, unreferenced.
 * Both usually fit one log entry, and are then one atomic step. */
int vhdx_resize(vd_image *img, uint64_t size, vd_error *err)
{
    struct vhdx_state *s = img->priv;
    if (size % s->lss || size > (64ull << 40))
        return vd_set_error(err, -EINVAL, "vhdx: new size %llu is not a multiple of the logical "
                            "sector size %u, or over 64 TiB", (unsigned long long)size, s->lss);
    uint64_t blocks = (size + s->block_size - 1) / s->block_size;
    uint64_t n = vhdx_entries_for(s, blocks), old_n = s->bat_entries;
    /* Past the BAT region's room: a larger region at the end of the file. */
    uint64_t at = vd_round_up(s->file_size, VHDX_MiB), new_bat = 0;
    uint64_t new_len = vd_round_up(n * 8, VHDX_MiB);
    if (n * 8 > s->bat_len && new_len > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -ENOTSUP, "vhdx: %llu bytes need a BAT of %llu entries, over "
                            "what vdisk opens; use a larger block_size",
                            (unsigned long long)size, (unsigned long long)n);
    if (n * 8 > s->bat_len) {
        new_bat = at;
        at += new_len;
    }
    uint64_t *bat = calloc(n > old_n ? n : old_n, 8);
    if (!bat)
        return vd_set_error(err, -ENOMEM, "out of memory");
    uint64_t alloc_end = at;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t b = i - i / (s->chunk_ratio + 1);          /* payload block number */
        if (vhdx_is_bitmap(s, i) && i < old_n) {
            bat[i] = s->bat[i];
        } else if (vhdx_is_bitmap(s, i) && s->has_parent) {
            /* a new chunk of a differencing disk: its sector bitmap, all
             * clear (a hole), as create makes them (libvhdi reads it) */
            bat[i] = alloc_end | VHDX_SB_PRESENT;
            alloc_end += VHDX_MiB;
        } else if (vhdx_is_bitmap(s, i)) {
            bat[i] = 0;
        }
        else if (b < blocks && i < old_n)
            bat[i] = s->bat[i];
        else if (b < blocks && s->leave_allocated) {
            bat[i] = alloc_end | VHDX_PAYLOAD_FULLY_PRESENT;
            alloc_end += s->block_size;
        }
    }
    uint8_t *was = NULL, *now = NULL;
    struct vhdx_edit e = { 0 };
    int r = vhdx_begin_write(img, s, err);
    if (r == 0 && alloc_end > vd_round_up(s->file_size, VHDX_MiB)) {  /* the new space first */
        r = vd_file_truncate(img->file, alloc_end, err);
        if (r == 0 && new_bat)
            r = vhdx_write_bat_at(img, bat, n, new_bat, err);
        if (r == 0)
            r = vd_file_sync(img->file, err);
        if (r == 0)
            s->file_size = alloc_end;
    }
    if (r == 0)
        r = vhdx_meta_load(img, s, &was, &now, err);
    uint8_t *ent = r == 0 ? vhdx_meta_entry(now, VHDX_GUID_VDISK_SIZE) : NULL;
    if (r == 0 && !ent)
        r = vd_set_error(err, -EINVAL, "vhdx: no virtual disk size item in the metadata "
                         "table at 0x%llx", (unsigned long long)s->meta_off);
    if (r == 0) {
        vd_put_le64(now + vd_le32(ent + 16), size);
        /* grow: the table before the size; shrink: the size first */
        if (size < img->size)
            r = vhdx_edit_diff(&e, s->meta_off, was, now, s->meta_len, err);
        if (r == 0 && new_bat)                      /* written whole above */
            r = vhdx_edit_regions(img, &e, new_bat, new_len, err);
        else if (r == 0)
            r = vhdx_edit_bat(img, s, &e, bat, n, old_n, err);
        if (r == 0 && size > img->size)
            r = vhdx_edit_diff(&e, s->meta_off, was, now, s->meta_len, err);
    }
    r = vhdx_edit_finish(img, s, &e, was, now, r, err);
    if (r < 0) {
        free(bat);
        return r;
    }
    if (new_bat) {
        s->bat_off = new_bat;
        s->bat_len = new_len;
    }
    img->size = size;
    s->payload_blocks = blocks;
    return vhdx_adopt_bat(s, bat, n, err);
}

/* ---- parent link -------------------------------------------------------- */

/* The DataWriteGuid of the VHDX `name` names (from img's folder). */
static int vhdx_parent_guid(vd_image *img, const char *name, uint8_t *g, vd_error *err)
{
    vd_file *pf;
    int r = vd_file_open_beneath(img->path, name, img->allow_host_paths, true, false, &pf, err);
    if (r < 0)
        return r;
    struct vhdx_state *ps = calloc(1, sizeof *ps);
    r = ps ? vhdx_read_headers(pf, ps, err) : vd_set_error(err, -ENOMEM, "out of memory");
    vd_file_close(pf);
    if (r == 0)
        memcpy(g, ps->hdr + VHDX_H_DATA_GUID, 16);
    else if (ps)
        r = vd_set_error(err, r, "vhdx: parent %s is not a VHDX (no valid header at 0x10000 "
                         "or 0x20000)", name);
    free(ps);
    return r;
}

/* A new locator item: parent_linkage `g`, parent_linkage2 `g2` if given;
 * then relative_path = `path` if given, else the current locator's path
 * entries (`old`, `olen` bytes, checked at open). */
static int vhdx_locator_new(const uint8_t *old, uint32_t olen, const char *path,
                            const uint8_t *g, const uint8_t *g2, uint8_t **out, uint32_t *len,
                            vd_error *err)
{
    char l1[40], l2[40];
    unsigned n = 0, max = 3 + (old ? vd_le16(old + 18) : 0);
    const char *(*kv)[2] = calloc(max, sizeof *kv);
    char **own = calloc(2 * (size_t)max, sizeof *own);
    size_t cap = 4096;
    int r = kv && own ? 0 : vd_set_error(err, -ENOMEM, "out of memory");
    vhdx_linkage_format(g, l1);
    if (r == 0) {
        kv[n][0] = "parent_linkage";
        kv[n++][1] = l1;
    }
    if (r == 0 && g2) {
        vhdx_linkage_format(g2, l2);
        kv[n][0] = "parent_linkage2";
        kv[n++][1] = l2;
    }
    if (r == 0 && path) {
        if (!(own[0] = vhdx_win_relpath(path)))
            r = vd_set_error(err, -ENOMEM, "out of memory");
        kv[n][0] = "relative_path";
        kv[n++][1] = own[0];
        cap += 4 * strlen(path);
    }
    for (unsigned i = 0; r == 0 && !path && i < max - 3; i++) {
        const uint8_t *e = old + 20 + 12 * (size_t)i;
        r = vhdx_locator_text(old, vd_le32(e), vd_le16(e + 8), &own[2 * i], 0, i, "key", err);
        if (r == 0)
            r = vhdx_locator_text(old, vd_le32(e + 4), vd_le16(e + 10), &own[2 * i + 1], 0, i,
                                  "value", err);
        if (r == 0 && strcmp(own[2 * i], "parent_linkage") &&
            strcmp(own[2 * i], "parent_linkage2")) {
            kv[n][0] = own[2 * i];
            kv[n++][1] = own[2 * i + 1];
        }
    }
    cap += 2 * (size_t)olen;
    uint8_t *loc = r == 0 ? malloc(cap) : NULL;
    if (r == 0 && !loc)
        r = vd_set_error(err, -ENOMEM, "out of memory");
    if (r == 0)
        r = vhdx_locator_build(kv, n, loc, cap, len, err);
    for (unsigned i = 0; own && i < 2 * max; i++)
        free(own[i]);
    free(own);
    free(kv);
    if (r < 0)
        free(loc);
    else
        *out = loc;
    return r;
}

/* Put the locator item into the metadata copy `m`: where the old one was
 * if it fits, else after the last item. */
static int vhdx_meta_put_locator(struct vhdx_state *s, uint8_t *m, uint8_t *ent,
                                 const uint8_t *loc, uint32_t len, vd_error *err)
{
    uint32_t off = vd_le32(ent + 16), olen = vd_le32(ent + 20);
    memset(m + off, 0, olen);
    if (len > olen) {
        uint64_t end = 64 << 10;
        uint32_t n = vd_le16(m + 10);
        for (uint32_t i = 0; i < n; i++) {
            const uint8_t *x = m + 32 + 32 * (size_t)i;
            if (x != ent && vd_le32(x + 20) && vd_le32(x + 16) + (uint64_t)vd_le32(x + 20) > end)
                end = vd_le32(x + 16) + (uint64_t)vd_le32(x + 20);
        }
        end = vd_round_up(end, 8);
        if (end + len > s->meta_len)
            return vd_set_error(err, -ENOSPC, "vhdx: a parent locator of %u bytes does not fit "
                                "the metadata region at 0x%llx", len,
                                (unsigned long long)s->meta_off);
        off = (uint32_t)end;
    }
    memcpy(m + off, loc, len);
    vd_put_le32(ent + 16, off);
    vd_put_le32(ent + 20, len);
    return 0;
}

/* Store a locator with linkage g (and g2) and `path` (NULL: keep the
 * paths) through the log. */
static int vhdx_relink(vd_image *img, struct vhdx_state *s, const char *path, const uint8_t *g,
                       const uint8_t *g2, vd_error *err)
{
    uint8_t *was = NULL, *now = NULL, *loc = NULL;
    uint32_t len = 0;
    struct vhdx_edit e = { 0 };
    int r = vhdx_meta_load(img, s, &was, &now, err);
    uint8_t *ent = r == 0 ? vhdx_meta_entry(now, VHDX_GUID_PARENT) : NULL;
    if (r == 0 && !ent)
        r = vd_set_error(err, -EINVAL, "vhdx: no parent locator in the metadata table at 0x%llx",
                         (unsigned long long)s->meta_off);
    if (r == 0)
        r = vhdx_locator_new(now + vd_le32(ent + 16), vd_le32(ent + 20), path, g, g2, &loc,
                             &len, err);
    if (r == 0)
        r = vhdx_meta_put_locator(s, now, ent, loc, len, err);
    if (r == 0)
        r = vhdx_edit_diff(&e, s->meta_off, was, now, s->meta_len, err);
    r = vhdx_edit_finish(img, s, &e, was, now, r, err);
    free(loc);
    if (r == 0) {
        char l[40];
        vhdx_linkage_format(g, l);
        free(s->parent_linkage2);
        s->parent_linkage2 = NULL;
        free(s->parent_linkage);
        if (!(s->parent_linkage = strdup(l)))
            r = vd_set_error(err, -ENOMEM, "out of memory");
    }
    return r;
}

/* The sectors of a partially present block that this layer does not hold
 * get what the guest reads there now, written into the block's own space
 * (no metadata names those sectors yet, so the guest view stays). */
static int vhdx_fill_run(vd_image *img, uint64_t off, uint64_t n, bool present,
                         uint64_t file_off, void *ctx, vd_error *err)
{
    uint8_t *buf = ctx;
    int r = 0;
    for (uint64_t p = 0; r == 0 && !present && p < n; p += VHDX_MiB) {
        uint64_t m = n - p < VHDX_MiB ? n - p : VHDX_MiB;
        r = vd_backing_pread(img, buf, m, off + p, err);
        if (r == 0)
            r = vd_file_pwrite(img->file, buf, m, file_off + p, err);
    }
    return r;
}

/* Complete every partially present block in place (entry i of `bat`
 * becomes FULLY_PRESENT at the same offset), then sync: the sectors it
 * lacked read as the parent's (zeroes when opened without the parent,
 * for rebase -u). */
static int vhdx_complete_partial(vd_image *img, struct vhdx_state *s, uint64_t *bat,
                                 vd_error *err)
{
    uint8_t *buf = NULL;
    int r = 0;
    bool any = false;
    for (uint64_t i = 0; r == 0 && i < s->bat_entries; i++) {
        if (vhdx_is_bitmap(s, i) || VHDX_BAT_STATE(s->bat[i]) != VHDX_PAYLOAD_PARTIALLY_PRESENT)
            continue;
        uint64_t blk = i - i / (s->chunk_ratio + 1), start = blk * s->block_size;
        uint64_t guest = img->size - start < s->block_size ? img->size - start : s->block_size;
        if (!buf && !(buf = malloc(VHDX_MiB))) {
            r = vd_set_error(err, -ENOMEM, "out of memory");
            break;
        }
        r = vhdx_partial_runs(img, s, start, guest, blk, 0, vhdx_fill_run, buf, err);
        bat[i] = VHDX_BAT_OFF(s->bat[i]) | VHDX_PAYLOAD_FULLY_PRESENT;
        any = true;
    }
    free(buf);
    return r == 0 && any ? vd_file_sync(img->file, err) : r;
}

/* A differencing disk becomes a dynamic one: partially present blocks are
 * completed in place first (synced); then one log entry (if the change
 * fits; else in this order) clears the sector bitmap entries (their space
 * left unreferenced) and marks those blocks fully present, and the
 * metadata drops the parent flag and locator. */
static int vhdx_drop_parent(vd_image *img, struct vhdx_state *s, vd_error *err)
{
    bool was_diff = s->has_parent;
    s->has_parent = false;
    uint64_t n = vhdx_entries_for(s, s->payload_blocks);
    s->has_parent = was_diff;
    uint64_t *bat = calloc(s->bat_entries, 8);
    uint8_t *was = NULL, *now = NULL;
    struct vhdx_edit e = { 0 };
    int r = bat ? 0 : vd_set_error(err, -ENOMEM, "out of memory");
    for (uint64_t i = 0; r == 0 && i < n; i++)
        bat[i] = vhdx_is_bitmap(s, i) ? 0 : s->bat[i];
    if (r == 0)
        r = vhdx_complete_partial(img, s, bat, err);
    if (r == 0)
        r = vhdx_edit_bat(img, s, &e, bat, n, s->bat_entries, err);
    if (r == 0)
        r = vhdx_meta_load(img, s, &was, &now, err);
    uint8_t *fp = r == 0 ? vhdx_meta_entry(now, VHDX_GUID_FILE_PARAMS) : NULL;
    uint8_t *pl = r == 0 ? vhdx_meta_entry(now, VHDX_GUID_PARENT) : NULL;
    if (r == 0 && fp) {
        uint8_t *item = now + vd_le32(fp + 16);
        vd_put_le32(item + 4, vd_le32(item + 4) & ~2u);
    }
    if (r == 0 && pl) {                     /* the entry and its item go */
        uint32_t cnt = vd_le16(now + 10);
        memset(now + vd_le32(pl + 16), 0, vd_le32(pl + 20));
        uint8_t *last = now + 32 + 32 * (size_t)(cnt - 1);
        memmove(pl, pl + 32, (size_t)(last - pl));
        memset(last, 0, 32);
        vd_put_le16(now + 10, (uint16_t)(cnt - 1));
    }
    if (r == 0)
        r = vhdx_edit_diff(&e, s->meta_off, was, now, s->meta_len, err);
    r = vhdx_edit_finish(img, s, &e, was, now, r, err);
    if (r < 0) {
        free(bat);
        return r;
    }
    s->has_parent = false;
    free(s->parent_linkage);
    free(s->parent_linkage2);
    s->parent_linkage = s->parent_linkage2 = NULL;
    return vhdx_adopt_bat(s, bat, n, err);
}

/* A dynamic disk becomes a differencing one over the VHDX `file` (whose
 * DataWriteGuid is `g`).  The layout allows it in place: the BAT keeps its
 * interleaving and needs at most the last chunk's bitmap entry more.
 * Sector bitmap blocks (all clear, holes) are appended first and synced;
 * then one log entry sets the BAT, the has-parent flag and a new parent
 * locator item.  Blocks this layer does not hold show the parent after;
 * opened with the (absent) chain, as a safe rebase opens it, they become
 * ZERO blocks instead, so the guest view stays zeroes there.  A BAT region
 * without room for the extra entry is replaced as a grow replaces it: the
 * whole BAT written into a larger region appended to the file (with the
 * bitmap blocks, synced), and both region tables pointed at it in the same
 * log entry; the old region is left unreferenced.  A fixed disk (its
 * blocks must stay allocated) is rewritten (-ENOSYS). */
static uint64_t vhdx_diff_entries(struct vhdx_state *s)
{
    s->has_parent = true;
    uint64_t n = vhdx_entries_for(s, s->payload_blocks);
    s->has_parent = false;
    return n;
}

static int vhdx_can_gain_parent(struct vhdx_state *s, vd_error *err)
{
    if (s->leave_allocated)
        return vd_set_error(err, -ENOSYS, "vhdx: a fixed disk cannot get a parent in place");
    uint64_t n = vhdx_diff_entries(s);
    if (n * 8 > s->bat_len && vd_round_up(n * 8, VHDX_MiB) > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -ENOTSUP, "vhdx: a BAT of %llu entries is over what vdisk opens",
                            (unsigned long long)n);
    return 0;
}

static int vhdx_gain_parent(vd_image *img, struct vhdx_state *s, const char *file,
                            const uint8_t *g, vd_error *err)
{
    uint64_t n = vhdx_diff_entries(s), old_n = s->bat_entries;
    bool keep_view = !img->no_backing;
    uint64_t *bat = calloc(n, 8);
    /* no room for the last chunk's bitmap entry: a larger region first */
    uint64_t at = vd_round_up(s->file_size, VHDX_MiB), new_bat = 0;
    uint64_t new_len = vd_round_up(n * 8, VHDX_MiB);
    if (n * 8 > s->bat_len) {
        new_bat = at;
        at += new_len;
    }
    uint64_t alloc_end = at;
    for (uint64_t i = 0; bat && i < n; i++) {
        uint64_t e = i < old_n ? s->bat[i] : 0;
        unsigned st = VHDX_BAT_STATE(e);
        if (vhdx_is_bitmap(s, i)) {
            e = alloc_end | VHDX_SB_PRESENT;
            alloc_end += VHDX_MiB;
        } else if (keep_view && i - i / (s->chunk_ratio + 1) < s->payload_blocks &&
                   (st == VHDX_PAYLOAD_NOT_PRESENT || st == VHDX_PAYLOAD_UNDEFINED)) {
            e = VHDX_PAYLOAD_ZERO;
        }
        bat[i] = e;
    }
    uint8_t *was = NULL, *now = NULL, *loc = NULL;
    uint32_t len = 0;
    struct vhdx_edit e = { 0 };
    int r = bat ? vd_file_truncate(img->file, alloc_end, err)
                : vd_set_error(err, -ENOMEM, "out of memory");
    if (r == 0 && new_bat)
        r = vhdx_write_bat_at(img, bat, n, new_bat, err);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0) {
        s->file_size = alloc_end;
        r = vhdx_meta_load(img, s, &was, &now, err);
    }
    uint8_t *fp = r == 0 ? vhdx_meta_entry(now, VHDX_GUID_FILE_PARAMS) : NULL;
    uint32_t cnt = r == 0 ? vd_le16(now + 10) : 0;
    if (r == 0 && (!fp || vhdx_meta_entry(now, VHDX_GUID_PARENT) ||
                   32 + 32 * (uint64_t)(cnt + 1) > VHDX_META_TABLE_SIZE))
        r = vd_set_error(err, -EINVAL, "vhdx: the metadata table at 0x%llx has no file "
                         "parameters, a parent locator already, or no free entry",
                         (unsigned long long)s->meta_off);
    if (r == 0)
        r = vhdx_locator_new(NULL, 0, file, g, NULL, &loc, &len, err);
    if (r == 0) {
        uint8_t *item = now + vd_le32(fp + 16), *ent = now + 32 + 32 * (size_t)cnt;
        vd_put_le32(item + 4, vd_le32(item + 4) | 2u);
        memset(ent, 0, 32);
        vhdx_guid_parse(VHDX_GUID_PARENT, ent);
        vd_put_le32(ent + 24, 4);                       /* required */
        vd_put_le16(now + 10, (uint16_t)(cnt + 1));
        r = vhdx_meta_put_locator(s, now, ent, loc, len, err);
    }
    if (r == 0 && new_bat)                          /* written whole above */
        r = vhdx_edit_regions(img, &e, new_bat, new_len, err);
    else if (r == 0)
        r = vhdx_edit_bat(img, s, &e, bat, n, old_n, err);
    if (r == 0)
        r = vhdx_edit_diff(&e, s->meta_off, was, now, s->meta_len, err);
    r = vhdx_edit_finish(img, s, &e, was, now, r, err);
    free(loc);
    if (r == 0 && new_bat) {
        s->bat_off = new_bat;
        s->bat_len = new_len;
    }
    char l[40];
    vhdx_linkage_format(g, l);
    if (r == 0 && !(s->parent_linkage = strdup(l)))
        r = vd_set_error(err, -ENOMEM, "out of memory");
    if (r < 0) {
        free(bat);
        return r;
    }
    s->has_parent = true;
    return vhdx_adopt_bat(s, bat, n, err);
}

int vhdx_set_backing(vd_image *img, const char *file, const char *fmt, vd_error *err)
{
    struct vhdx_state *s = img->priv;
    if (!s->has_parent && !file)
        return 0;
    if (fmt && strcmp(fmt, "vhdx"))
        return vd_set_error(err, -ENOTSUP, "vhdx: the parent of a differencing VHDX must be a "
                            "VHDX, not %s", fmt);
    /* The same parent (the relink after a commit): only the linkage
     * changes, the path entries stay; the guest view is the same. */
    bool same = file && img->backing_file && !strcmp(file, img->backing_file);
    uint8_t g[16], fg[16], dg[16];
    int r = file ? vhdx_parent_guid(img, file, g, err) : 0;
    if (r == 0 && !s->has_parent)
        r = vhdx_can_gain_parent(s, err);
    if (r < 0)
        return r;
    vhdx_guid_random(fg);
    vhdx_guid_random(dg);
    bool new_data = !same && !s->data_guid_fresh;
    r = vhdx_write_header(img, s, fg, new_data ? dg : NULL, NULL, err);
    if (r == 0 && new_data)
        s->data_guid_fresh = true;
    if (r == 0 && !s->has_parent)
        r = vhdx_gain_parent(img, s, file, g, err);
    else if (r == 0)
        r = file ? vhdx_relink(img, s, same ? NULL : file, g, NULL, err)
                 : vhdx_drop_parent(img, s, err);
    return r;
}

/* Before a commit writes `base` (img's parent, read-write): img accepts
 * the parent's current DataWriteGuid and the one its first write will set. */
int vhdx_prepare_commit(vd_image *img, vd_image *base, vd_error *err)
{
    struct vhdx_state *s = img->priv;
    if (!s->has_parent || base->drv != img->drv)
        return 0;
    struct vhdx_state *bs = base->priv;
    uint8_t next[16], fg[16];
    vhdx_guid_random(next);
    vhdx_guid_random(fg);
    bool fresh = bs->data_guid_fresh;   /* already written: its GUID stays */
    int r = vhdx_write_header(img, s, fg, NULL, NULL, err);
    if (r == 0)
        r = vhdx_relink(img, s, NULL, bs->hdr + VHDX_H_DATA_GUID, fresh ? NULL : next, err);
    if (r == 0 && !fresh) {
        memcpy(bs->next_data_guid, next, 16);
        bs->next_data_guid_set = true;
    }
    return r;
}

/* ---- emptying ----------------------------------------------------------- */

/* Every payload entry becomes NOT_PRESENT (reads fall through to the
 * parent) through the log; sector bitmaps that a partially present block
 * used are zeroed after; then the file is cut after the last region or
 * bitmap block still referenced. */
int vhdx_make_empty(vd_image *img, vd_error *err)
{
    struct vhdx_state *s = img->priv;
    uint64_t *bat = malloc(s->bat_entries * 8);
    if (!bat)
        return vd_set_error(err, -ENOMEM, "out of memory");
    bool partial = false;
    uint64_t keep = s->log_off + s->log_len;
    if (s->meta_off + s->meta_len > keep)
        keep = s->meta_off + s->meta_len;
    if (s->bat_off + s->bat_len > keep)
        keep = s->bat_off + s->bat_len;
    for (uint64_t i = 0; i < s->bat_entries; i++) {
        bool bm = vhdx_is_bitmap(s, i);
        partial |= !bm && VHDX_BAT_STATE(s->bat[i]) == VHDX_PAYLOAD_PARTIALLY_PRESENT;
        bat[i] = bm ? s->bat[i] : VHDX_PAYLOAD_NOT_PRESENT;
        if (bm && VHDX_BAT_STATE(bat[i]) == VHDX_SB_PRESENT &&
            VHDX_BAT_OFF(bat[i]) + VHDX_MiB > keep)
            keep = VHDX_BAT_OFF(bat[i]) + VHDX_MiB;
    }
    uint8_t fg[16];
    vhdx_guid_random(fg);
    struct vhdx_edit e = { 0 };
    int r = vhdx_write_header(img, s, fg, NULL, NULL, err);
    if (r == 0)
        r = vhdx_edit_bat(img, s, &e, bat, s->bat_entries, s->bat_entries, err);
    r = vhdx_edit_finish(img, s, &e, NULL, NULL, r, err);
    for (uint64_t i = 0; r == 0 && partial && i < s->bat_entries; i++)
        if (vhdx_is_bitmap(s, i) && VHDX_BAT_STATE(bat[i]) == VHDX_SB_PRESENT)
            r = vd_file_zero(img->file, VHDX_BAT_OFF(bat[i]), VHDX_MiB, err);
    if (r == 0 && keep < s->file_size) {
        r = vd_file_truncate(img->file, keep, err);
        if (r == 0)
            r = vd_file_sync(img->file, err);
        if (r == 0)
            s->file_size = keep;
    }
    if (r < 0) {
        free(bat);
        return r;
    }
    memcpy(s->bat, bat, s->bat_entries * 8);
    free(bat);
    return 0;
}
