/* log.c - the VHDX metadata log: replaying it after an unclean close, and
 * writing our own metadata updates through it.
 *
 * An entry is a 64-byte header ("loge", CRC-32C over the whole entry, length,
 * tail, sequence number, descriptor count, log GUID, flushed and last file
 * offsets), 32-byte descriptors ("desc": one 4 KiB sector whose first 8 and
 * last 4 bytes live in the descriptor; "zero": a range of zeroes), padded to
 * 4 KiB, then one 4 KiB "data" sector per data descriptor.  The active
 * sequence is the chain of valid entries (consecutive sequence numbers, the
 * header's log GUID) ending at the highest sequence number, replayed from the
 * tail its last entry names.
 *
 * Writing: every batch of metadata sectors becomes one entry written at the
 * start of the log and made durable before the sectors are written in place
 * (then made durable too), so the log never holds more than one entry we
 * still need: a crash at any point leaves either the old metadata or a log
 * that redoes the new one.  The header's log GUID is set before the first
 * entry and cleared again at the end of each flush (and so on close).
 *
 * Test hook: with VDISK_VHDX_TEST_CRASH=after-log in the environment, the
 * driver stops writing anything once an entry is durable, as if the process
 * had died there; tests use it to check that qemu and we replay our log.
 * Only the test build of the library (VD_TEST_HOOKS) reads the variable. */
#include "vhdx.h"

#include <errno.h>
#include <stdlib.h>

#define VHDX_LE_SIZE 64u       /* entry header */
#define VHDX_DESC_SIZE 32u

struct vhdx_entry {
    bool valid;
    uint64_t seq;
    uint32_t len, tail;
    int64_t next;              /* slot of the following entry of the chain, -1 none */
    uint64_t end_seq;          /* sequence number at the end of its chain */
    bool end_known;
};

void vhdx_patches_free(struct vhdx_state *s)
{
    for (size_t i = 0; i < s->n_patches; i++)
        free(s->patches[i].data);
    free(s->patches);
    s->patches = NULL;
    s->n_patches = 0;
}

int vhdx_file_read(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err)
{
    struct vhdx_state *s = img->priv;
    if (!s->n_patches)
        return vd_file_pread(img->file, buf, len, off, err);
    int r = vd_file_pread_zfill(img->file, buf, len, off, err);
    /* Later patches win: apply in log order. */
    for (size_t i = 0; r == 0 && i < s->n_patches; i++) {
        const struct vhdx_patch *p = &s->patches[i];
        uint64_t a = p->off > off ? p->off : off;
        uint64_t b = p->off + p->len < off + len ? p->off + p->len : off + len;
        if (a >= b)
            continue;
        if (p->data)
            memcpy((uint8_t *)buf + (a - off), p->data + (a - p->off), b - a);
        else
            memset((uint8_t *)buf + (a - off), 0, b - a);
    }
    return r;
}

/* Copy `len` bytes of the circular log from `off` (wrapping). */
static void vhdx_log_copy(const uint8_t *log, uint64_t log_len, uint64_t off, uint8_t *out,
                          uint64_t len)
{
    uint64_t first = log_len - off < len ? log_len - off : len;
    memcpy(out, log + off, first);
    memcpy(out + first, log, len - first);
}

static uint32_t vhdx_desc_sectors(uint32_t n)
{
    return (uint32_t)((VHDX_LE_SIZE + (uint64_t)VHDX_DESC_SIZE * n + VHDX_LOG_SECTOR - 1) /
                      VHDX_LOG_SECTOR);
}

/* Full validation of the entry at slot offset `off`: header fields, CRC,
 * descriptors and data sector stamps.  `buf` gets the contiguous entry. */
static bool vhdx_entry_check(const struct vhdx_state *s, const uint8_t *log, uint64_t off,
                             uint8_t *buf, struct vhdx_entry *e)
{
    const uint8_t *h = log + off;
    if (memcmp(h, "loge", 4) || memcmp(h + 32, s->hdr + VHDX_H_LOG_GUID, 16))
        return false;
    e->len = vd_le32(h + 8);
    e->tail = vd_le32(h + 12);
    e->seq = vd_le64(h + 16);
    uint32_t n = vd_le32(h + 24);
    if (!e->len || e->len % VHDX_LOG_SECTOR || e->len > s->log_len || e->tail % VHDX_LOG_SECTOR ||
        e->tail >= s->log_len || !e->seq || n > e->len / VHDX_DESC_SIZE)
        return false;
    uint32_t ds = vhdx_desc_sectors(n);
    if (ds > e->len / VHDX_LOG_SECTOR)
        return false;
    vhdx_log_copy(log, s->log_len, off, buf, e->len);
    if (vd_le32(buf + 4) != vhdx_struct_crc(buf, e->len, 4))
        return false;
    uint32_t data = ds;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *d = buf + VHDX_LE_SIZE + VHDX_DESC_SIZE * (size_t)i;
        if (vd_le64(d + 24) != e->seq || vd_le64(d + 16) % VHDX_LOG_SECTOR)
            return false;
        if (!memcmp(d, "zero", 4)) {
            if (vd_le64(d + 8) % VHDX_LOG_SECTOR)
                return false;
            continue;
        }
        if (memcmp(d, "desc", 4) || data >= e->len / VHDX_LOG_SECTOR)
            return false;
        const uint8_t *ds4k = buf + (size_t)data++ * VHDX_LOG_SECTOR;
        if (memcmp(ds4k, "data", 4) || vd_le32(ds4k + 4) != (uint32_t)(e->seq >> 32) ||
            vd_le32(ds4k + 4092) != (uint32_t)e->seq)
            return false;
    }
    return true;
}

/* The sequence number at the end of the chain through slot i (memoized). */
static uint64_t vhdx_chain_end(struct vhdx_entry *t, int64_t i)
{
    int64_t j = i;
    while (!t[j].end_known && t[j].next >= 0)
        j = t[j].next;
    uint64_t end = t[j].end_known ? t[j].end_seq : t[j].seq;
    for (j = i; !t[j].end_known; j = t[j].next) {
        t[j].end_seq = end;
        t[j].end_known = true;
        if (t[j].next < 0)
            break;
    }
    return end;
}

/* Apply one valid entry (contiguous in `buf`) to the file or as patches. */
static int vhdx_entry_apply(vd_image *img, struct vhdx_state *s, const uint8_t *buf,
                            vd_error *err)
{
    uint32_t n = vd_le32(buf + 24), data = vhdx_desc_sectors(n);
    uint8_t sec[VHDX_LOG_SECTOR];
    int r = 0;
    for (uint32_t i = 0; r == 0 && i < n; i++) {
        const uint8_t *d = buf + VHDX_LE_SIZE + VHDX_DESC_SIZE * (size_t)i;
        uint64_t off = vd_le64(d + 16), len = VHDX_LOG_SECTOR, end;
        bool zero = !memcmp(d, "zero", 4);
        if (zero) {
            len = vd_le64(d + 8);
        } else {
            const uint8_t *ds = buf + (size_t)data++ * VHDX_LOG_SECTOR;
            memcpy(sec, d + 8, 8);
            memcpy(sec + 8, ds + 8, VHDX_LOG_SECTOR - 12);
            memcpy(sec + VHDX_LOG_SECTOR - 4, d + 4, 4);
        }
        /* Metadata lives in the first 64 TiB + tables; anything far beyond
         * is not a metadata write. */
        if (vd_add_overflow(off, len, &end) || end > (1ull << 50) || off < VHDX_MiB / 16 * 3)
            return vd_set_error(err, -EINVAL,
                                "vhdx: log descriptor %u (seq %llu) writes 0x%llx bytes at "
                                "0x%llx: outside the metadata area", i,
                                (unsigned long long)vd_le64(buf + 16),
                                (unsigned long long)len, (unsigned long long)off);
        if (!img->readonly) {
            r = zero ? vd_file_zero(img->file, off, len, err)
                     : vd_file_pwrite(img->file, sec, len, off, err);
            continue;
        }
        if (zero && len > VD_MAX_TABLE_BYTES)
            return vd_set_error(err, -EINVAL, "vhdx: log zero descriptor of 0x%llx bytes",
                                (unsigned long long)len);
        struct vhdx_patch *np = realloc(s->patches, (s->n_patches + 1) * sizeof *np);
        if (!np)
            return vd_set_error(err, -ENOMEM, "out of memory");
        s->patches = np;
        np[s->n_patches] = (struct vhdx_patch){ .off = off, .len = len };
        if (!zero && !(np[s->n_patches].data = malloc(len)))
            return vd_set_error(err, -ENOMEM, "out of memory");
        if (!zero)
            memcpy(np[s->n_patches].data, sec, len);
        s->n_patches++;
    }
    return r;
}

/* Replay entries from slot `tail` to the one with sequence `last_seq`. */
static int vhdx_replay_chain(vd_image *img, struct vhdx_state *s, const uint8_t *log,
                             struct vhdx_entry *t, uint64_t tail, uint64_t last_seq,
                             vd_error *err)
{
    uint8_t *buf = malloc(s->log_len);
    if (!buf)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int64_t i = (int64_t)(tail / VHDX_LOG_SECTOR);
    int r = 0;
    uint64_t last_file_off = 0;
    if (!t[i].valid || vhdx_chain_end(t, i) != last_seq)
        r = vd_set_error(err, -EINVAL, "vhdx: log tail 0x%llx (log at 0x%llx) is not the start "
                         "of the sequence ending at %llu", (unsigned long long)tail,
                         (unsigned long long)s->log_off, (unsigned long long)last_seq);
    while (r == 0 && i >= 0) {
        struct vhdx_entry e;
        vhdx_entry_check(s, log, (uint64_t)i * VHDX_LOG_SECTOR, buf, &e);
        uint64_t flushed = vd_le64(buf + 48), lastoff = vd_le64(buf + 56);
        if (flushed > s->file_size)
            r = vd_set_error(err, -EINVAL, "vhdx: log entry %llu: file is 0x%llx bytes, shorter "
                             "than its flushed size 0x%llx", (unsigned long long)e.seq,
                             (unsigned long long)s->file_size, (unsigned long long)flushed);
        if (r == 0)
            r = vhdx_entry_apply(img, s, buf, err);
        if (lastoff > last_file_off)
            last_file_off = lastoff;
        if (e.seq == last_seq)
            break;
        i = t[i].next;
    }
    free(buf);
    if (r == 0 && last_file_off > s->file_size && last_file_off <= (1ull << 50)) {
        if (!img->readonly)
            r = vd_file_truncate(img->file, last_file_off, err);
        s->file_size = last_file_off;
    }
    return r;
}

/* Find the active sequence and replay it: 1 when one was replayed, 0 when
 * the log holds no valid entry. */
static int vhdx_log_scan(vd_image *img, struct vhdx_state *s, const uint8_t *log, vd_error *err)
{
    uint64_t slots = s->log_len / VHDX_LOG_SECTOR;
    struct vhdx_entry *t = calloc(slots, sizeof *t);
    uint8_t *buf = malloc(s->log_len);
    int r = 0;
    if (!t || !buf) {
        r = vd_set_error(err, -ENOMEM, "out of memory");
        goto out;
    }
    for (uint64_t i = 0; i < slots; i++) {
        t[i].valid = vhdx_entry_check(s, log, i * VHDX_LOG_SECTOR, buf, &t[i]);
        t[i].next = -1;
    }
    for (uint64_t i = 0; i < slots; i++) {
        if (!t[i].valid)
            continue;
        uint64_t j = (i + t[i].len / VHDX_LOG_SECTOR) % slots;
        if (t[j].valid && t[j].seq == t[i].seq + 1 && j != i)
            t[i].next = (int64_t)j;
    }
    int64_t best = -1;
    uint64_t best_seq = 0;
    for (uint64_t i = 0; i < slots; i++)
        if (t[i].valid && vhdx_chain_end(t, (int64_t)i) > best_seq) {
            best_seq = t[i].end_seq;
            best = (int64_t)i;
        }
    if (best < 0)   /* nothing valid: no metadata write was pending */
        goto out;
    while (t[best].next >= 0)     /* the last entry names the tail */
        best = t[best].next;
    r = vhdx_replay_chain(img, s, log, t, t[best].tail, best_seq, err);
    s->log_seq = best_seq;
    if (r == 0)
        r = 1;
out:
    free(t);
    free(buf);
    return r;
}

int vhdx_log_replay(vd_image *img, struct vhdx_state *s, vd_error *err)
{
    if (vhdx_guid_is_zero(s->hdr + VHDX_H_LOG_GUID))
        return 0;
    uint64_t end;
    if (!s->log_len || vd_add_overflow(s->log_off, s->log_len, &end) || end > s->file_size)
        return vd_set_error(err, -EINVAL, "vhdx: log at 0x%llx (0x%llx bytes) is past end of file",
                            (unsigned long long)s->log_off, (unsigned long long)s->log_len);
    uint8_t *log = malloc(s->log_len);
    if (!log)
        return vd_set_error(err, -ENOMEM, "out of memory for a log of 0x%llx bytes",
                            (unsigned long long)s->log_len);
    int r = vd_file_pread(img->file, log, s->log_len, s->log_off, err);
    if (r == 0)
        r = vhdx_log_scan(img, s, log, err);
    free(log);
    if (r < 0)
        return r;
    /* A LogGuid with no valid entry under it (a crash between the header
     * naming a new log and the first entry becoming durable) holds nothing
     * to replay: the file is the metadata, as qemu also reads it.  A
     * writable open just clears the GUID. */
    s->replayed = r > 0;
    if (img->readonly)
        return 0;
    static const uint8_t zero[16];
    r = vd_file_sync(img->file, err);
    return r < 0 ? r : vhdx_write_header(img, s, NULL, NULL, zero, err);
}

static bool vhdx_test_crash(void)
{
#ifdef VD_TEST_HOOKS
    const char *v = getenv("VDISK_VHDX_TEST_CRASH");
    return v && !strcmp(v, "after-log");
#else
    return false;
#endif
}

/* Write one entry holding sectors [0, n) at the start of the log. */
static int vhdx_log_entry(vd_image *img, struct vhdx_state *s, const uint64_t *offs,
                          uint8_t *const *sectors, uint32_t n, vd_error *err)
{
    uint32_t ds = vhdx_desc_sectors(n);
    size_t len = ((size_t)ds + n) * VHDX_LOG_SECTOR;
    uint8_t *e = calloc(1, len);
    if (!e)
        return vd_set_error(err, -ENOMEM, "out of memory");
    uint64_t seq = ++s->log_seq;
    int64_t fsize = vd_file_size(img->file, err);
    if (fsize < 0) {
        free(e);
        return (int)fsize;
    }
    memcpy(e, "loge", 4);
    vd_put_le32(e + 8, (uint32_t)len);
    vd_put_le32(e + 12, 0);                         /* tail: this entry */
    vd_put_le64(e + 16, seq);
    vd_put_le32(e + 24, n);
    memcpy(e + 32, s->hdr + VHDX_H_LOG_GUID, 16);
    vd_put_le64(e + 48, (uint64_t)fsize);
    vd_put_le64(e + 56, (uint64_t)fsize);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *d = e + VHDX_LE_SIZE + VHDX_DESC_SIZE * (size_t)i;
        uint8_t *sec = e + ((size_t)ds + i) * VHDX_LOG_SECTOR;
        memcpy(d, "desc", 4);
        memcpy(d + 4, sectors[i] + VHDX_LOG_SECTOR - 4, 4);
        memcpy(d + 8, sectors[i], 8);
        vd_put_le64(d + 16, offs[i]);
        vd_put_le64(d + 24, seq);
        memcpy(sec, "data", 4);
        vd_put_le32(sec + 4, (uint32_t)(seq >> 32));
        memcpy(sec + 8, sectors[i] + 8, VHDX_LOG_SECTOR - 12);
        vd_put_le32(sec + VHDX_LOG_SECTOR - 4, (uint32_t)seq);
    }
    vd_put_le32(e + 4, vhdx_struct_crc(e, len, 4));
    int r = vd_file_pwrite(img->file, e, len, s->log_off, err);
    free(e);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0 && vhdx_test_crash()) {
        s->crashed = true;
        return 0;
    }
    for (uint32_t i = 0; r == 0 && i < n; i++)
        r = vd_file_pwrite(img->file, sectors[i], VHDX_LOG_SECTOR, offs[i], err);
    return r == 0 ? vd_file_sync(img->file, err) : r;
}

int vhdx_log_write(vd_image *img, struct vhdx_state *s, const uint64_t *offs,
                   uint8_t *const *sectors, size_t n, vd_error *err)
{
    if (s->crashed || !n)
        return 0;
    int r = vd_file_sync(img->file, err);    /* payload first, then metadata */
    if (r == 0 && vhdx_guid_is_zero(s->hdr + VHDX_H_LOG_GUID)) {
        uint8_t g[16];
        vhdx_guid_random(g);
        r = vhdx_write_header(img, s, NULL, NULL, g, err);
    }
    /* As many sectors per entry as the log holds. */
    uint64_t slots = s->log_len / VHDX_LOG_SECTOR;
    uint32_t per = 1;
    while (per < 100000 && vhdx_desc_sectors(per + 1) + per + 1 <= slots)
        per++;
    if (r == 0 && vhdx_desc_sectors(1) + 1 > slots)
        r = vd_set_error(err, -EINVAL, "vhdx: log of 0x%llx bytes is too small to write",
                         (unsigned long long)s->log_len);
    for (size_t i = 0; r == 0 && i < n && !s->crashed; i += per) {
        uint32_t k = n - i < per ? (uint32_t)(n - i) : per;
        r = vhdx_log_entry(img, s, offs + i, sectors + i, k, err);
    }
    return r;
}

int vhdx_log_close(vd_image *img, struct vhdx_state *s, vd_error *err)
{
    static const uint8_t zero[16];
    if (img->readonly || s->crashed || vhdx_guid_is_zero(s->hdr + VHDX_H_LOG_GUID))
        return 0;
    return vhdx_write_header(img, s, NULL, NULL, zero, err);
}
