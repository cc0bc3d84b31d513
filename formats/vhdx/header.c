/* header.c - VHDX headers, region table and metadata region, with the
 * CRC-32C and GUID helpers they need. */
#include "vhdx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

/* ---- CRC-32C (Castagnoli, reflected 0x82f63b78) ------------------------ */

/* Table-driven, or the SSE4.2 crc32 instruction (the same CRC, 8 bytes per
 * step) where the CPU has it: every open checksums 128 KiB of region
 * tables, and the log and each BAT/metadata update are checksummed too. */
static uint32_t vhdx_crc_table[256];
static bool vhdx_crc_hw;
static pthread_once_t vhdx_crc_once = PTHREAD_ONCE_INIT;

static void vhdx_crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        vhdx_crc_table[i] = c;
    }
#if defined(__x86_64__)
    vhdx_crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__)
__attribute__((target("sse4.2")))
static uint32_t vhdx_crc_update_hw(uint32_t crc, const uint8_t *p, size_t len)
{
    uint64_t c = crc;
    for (; len >= 8; p += 8, len -= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
    }
    crc = (uint32_t)c;
    for (; len; len--)
        crc = __builtin_ia32_crc32qi(crc, *p++);
    return crc;
}
#endif

static uint32_t vhdx_crc_update(uint32_t crc, const uint8_t *p, size_t len)
{
#if defined(__x86_64__)
    if (vhdx_crc_hw)
        return vhdx_crc_update_hw(crc, p, len);
#endif
    while (len--)
        crc = vhdx_crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

uint32_t vhdx_crc32c(const void *buf, size_t len)
{
    pthread_once(&vhdx_crc_once, vhdx_crc_init);
    return ~vhdx_crc_update(~0u, buf, len);
}

uint32_t vhdx_struct_crc(const uint8_t *buf, size_t len, size_t csum_off)
{
    static const uint8_t zero[4];
    pthread_once(&vhdx_crc_once, vhdx_crc_init);
    uint32_t c = vhdx_crc_update(~0u, buf, csum_off);
    c = vhdx_crc_update(c, zero, 4);
    return ~vhdx_crc_update(c, buf + csum_off + 4, len - csum_off - 4);
}

/* ---- GUIDs (first three fields little-endian on disk) ------------------- */

void vhdx_guid_format(const uint8_t *g, char *out)
{
    vd_uuid_format(g, VD_UUID_MIXED | VD_UUID_UPPER, out);
}

bool vhdx_guid_parse(const char *str, uint8_t *g)
{
    return vd_uuid_parse(str, VD_UUID_MIXED, g) == 0;
}

static bool vhdx_guid_is(const uint8_t *g, const char *str)
{
    char s[37];
    vhdx_guid_format(g, s);
    return !strcmp(s, str);
}

void vhdx_guid_random(uint8_t *g)
{
    if (vd_uuid_random(g, VD_UUID_MIXED) < 0) {    /* no entropy: still unique here */
        uint64_t t = (uint64_t)time(NULL) ^ (uint64_t)clock(), a = (uint64_t)(uintptr_t)g;
        memcpy(g, &t, 8);
        memcpy(g + 8, &a, 8);
    }
}

bool vhdx_guid_is_zero(const uint8_t *g)
{
    return vd_is_zero(g, 16);
}

/* ---- headers ------------------------------------------------------------ */

static bool vhdx_header_valid(const uint8_t *h)
{
    return !memcmp(h, "head", 4) &&
           vd_le32(h + VHDX_H_CSUM) == vhdx_struct_crc(h, VHDX_HEADER_SIZE, VHDX_H_CSUM);
}

int vhdx_read_headers(vd_file *f, struct vhdx_state *s, vd_error *err)
{
    uint8_t h[2][VHDX_HEADER_SIZE];
    int r = vd_file_pread_zfill(f, h[0], VHDX_HEADER_SIZE, VHDX_HEADER1_OFF, err);
    if (r == 0)
        r = vd_file_pread_zfill(f, h[1], VHDX_HEADER_SIZE, VHDX_HEADER2_OFF, err);
    if (r < 0)
        return r;
    bool v0 = vhdx_header_valid(h[0]), v1 = vhdx_header_valid(h[1]);
    if (!v0 && !v1)
        return vd_set_error(err, -EINVAL,
                            "vhdx: no valid header at 0x10000 or 0x20000 (signature or CRC-32C)");
    int slot = !v0 ? 1 : !v1 ? 0 : vd_le64(h[1] + VHDX_H_SEQ) > vd_le64(h[0] + VHDX_H_SEQ);
    memcpy(s->hdr, h[slot], VHDX_HEADER_SIZE);
    s->hdr_slot = slot;
    uint64_t hoff = slot ? VHDX_HEADER2_OFF : VHDX_HEADER1_OFF;
    if (vd_le16(s->hdr + VHDX_H_VERSION) != 1)
        return vd_set_error(err, -ENOTSUP, "vhdx: header version %u at 0x%llx (expected 1)",
                            vd_le16(s->hdr + VHDX_H_VERSION),
                            (unsigned long long)(hoff + VHDX_H_VERSION));
    s->log_off = vd_le64(s->hdr + VHDX_H_LOG_OFF);
    s->log_len = vd_le32(s->hdr + VHDX_H_LOG_LEN);
    if (s->log_off % VHDX_MiB || s->log_len % VHDX_MiB || s->log_off < VHDX_MiB ||
        s->log_len > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EINVAL,
                            "vhdx: log at 0x%llx of 0x%llx bytes (header at 0x%llx) is not "
                            "1 MiB aligned or too big",
                            (unsigned long long)s->log_off, (unsigned long long)s->log_len,
                            (unsigned long long)hoff);
    return 0;
}

int vhdx_write_header(vd_image *img, struct vhdx_state *s, const uint8_t *file_guid,
                      const uint8_t *data_guid, const uint8_t *log_guid, vd_error *err)
{
    uint8_t h[VHDX_HEADER_SIZE];
    memcpy(h, s->hdr, sizeof h);
    vd_put_le64(h + VHDX_H_SEQ, vd_le64(h + VHDX_H_SEQ) + 1);
    if (file_guid)
        memcpy(h + VHDX_H_FILE_GUID, file_guid, 16);
    if (data_guid)
        memcpy(h + VHDX_H_DATA_GUID, data_guid, 16);
    if (log_guid)
        memcpy(h + VHDX_H_LOG_GUID, log_guid, 16);
    vd_put_le32(h + VHDX_H_CSUM, vhdx_struct_crc(h, sizeof h, VHDX_H_CSUM));
    int slot = !s->hdr_slot;
    int r = vd_file_pwrite(img->file, h, sizeof h, slot ? VHDX_HEADER2_OFF : VHDX_HEADER1_OFF,
                           err);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0) {
        memcpy(s->hdr, h, sizeof h);
        s->hdr_slot = slot;
    }
    return r;
}

/* ---- region table -------------------------------------------------------- */

static int vhdx_region(struct vhdx_state *s, const uint8_t *e, uint64_t at, uint64_t *off,
                       uint64_t *len, vd_error *err)
{
    *off = vd_le64(e + 16);
    *len = vd_le32(e + 24);
    uint64_t end;
    if (*off % VHDX_MiB || *off < VHDX_MiB || !*len || *len % VHDX_MiB ||
        vd_add_overflow(*off, *len, &end) || end > s->file_size)
        return vd_set_error(err, -EINVAL,
                            "vhdx: region entry at 0x%llx: 0x%llx bytes at 0x%llx are not "
                            "1 MiB aligned or past end of file (0x%llx)",
                            (unsigned long long)at, (unsigned long long)*len,
                            (unsigned long long)*off, (unsigned long long)s->file_size);
    return 0;
}

int vhdx_read_regions(vd_image *img, struct vhdx_state *s, vd_error *err)
{
    uint8_t *rt = malloc(VHDX_RT_SIZE);
    if (!rt)
        return vd_set_error(err, -ENOMEM, "out of memory");
    uint64_t at = VHDX_RT1_OFF;
    int r = vhdx_file_read(img, rt, VHDX_RT_SIZE, at, err);
    if (r == 0 && (memcmp(rt, "regi", 4) ||
                   vd_le32(rt + 4) != vhdx_struct_crc(rt, VHDX_RT_SIZE, 4))) {
        at = VHDX_RT2_OFF;
        r = vhdx_file_read(img, rt, VHDX_RT_SIZE, at, err);
        if (r == 0 && (memcmp(rt, "regi", 4) ||
                       vd_le32(rt + 4) != vhdx_struct_crc(rt, VHDX_RT_SIZE, 4)))
            r = vd_set_error(err, -EINVAL, "vhdx: no valid region table at 0x30000 or "
                             "0x40000 (signature or CRC-32C)");
    }
    uint32_t n = r == 0 ? vd_le32(rt + 8) : 0;
    if (r == 0 && n > VHDX_MAX_ENTRIES)
        r = vd_set_error(err, -EINVAL, "vhdx: region table at 0x%llx has %u entries",
                         (unsigned long long)at, n);
    for (uint32_t i = 0; r == 0 && i < n; i++) {
        const uint8_t *e = rt + 16 + 32 * (size_t)i;
        uint64_t eat = at + 16 + 32 * (uint64_t)i;
        if (vhdx_guid_is(e, VHDX_GUID_BAT))
            r = vhdx_region(s, e, eat, &s->bat_off, &s->bat_len, err);
        else if (vhdx_guid_is(e, VHDX_GUID_META))
            r = vhdx_region(s, e, eat, &s->meta_off, &s->meta_len, err);
        else if (vd_le32(e + 28) & 1)
            r = vd_set_error(err, -ENOTSUP, "vhdx: unknown required region at 0x%llx",
                             (unsigned long long)eat);
    }
    free(rt);
    if (r == 0 && (!s->bat_len || !s->meta_len))
        r = vd_set_error(err, -EINVAL, "vhdx: region table at 0x%llx lacks the %s region",
                         (unsigned long long)at, s->bat_len ? "metadata" : "BAT");
    if (r == 0 && s->meta_len < VHDX_META_TABLE_SIZE)
        r = vd_set_error(err, -EINVAL, "vhdx: metadata region of 0x%llx bytes is too small",
                         (unsigned long long)s->meta_len);
    return r;
}

/* ---- metadata ------------------------------------------------------------ */

static void vhdx_normalize_path(char *p)
{
    for (char *q = p; *q; q++)
        if (*q == '\\')
            *q = '/';
    if (((p[0] | 0x20) >= 'a' && (p[0] | 0x20) <= 'z') && p[1] == ':') {
        /* A Windows drive path: the parent travels with the child, so look
         * for its file name next to it. */
        char *base = strrchr(p, '/');
        const char *from = base ? base + 1 : p + 2;
        memmove(p, from, strlen(from) + 1);
    }
    while (p[0] == '.' && p[1] == '/')
        memmove(p, p + 2, strlen(p + 2) + 1);
}

static bool vhdx_path_exists(vd_image *img, const char *name)
{
    return vd_related_exists(img, name);
}

/* Entry i's key or value: `bytes` of UTF-16LE at `off` in the locator at
 * file offset `at`. */
int vhdx_locator_text(const uint8_t *loc, uint64_t off, uint64_t bytes, char **out, uint64_t at,
                      uint32_t i, const char *what, vd_error *err)
{
    size_t bad;
    int r = vd_utf16_decode(loc + off, bytes, 0, out, &bad);
    if (r == -EILSEQ)
        return vd_set_error(err, -EINVAL, "vhdx: parent locator entry %u at 0x%llx: %s at "
                            "0x%llx is not UTF-16 (byte %zu%s)", i,
                            (unsigned long long)(at + 20 + 12 * (uint64_t)i), what,
                            (unsigned long long)(at + off), bad,
                            bytes % 2 ? ", odd length" : ", unpaired surrogate");
    return r < 0 ? vd_set_error(err, r, "out of memory") : 0;
}

/* The VHDX parent locator: key/value UTF-16LE strings.  The parent is the
 * first of relative_path, volume_path, absolute_win32_path that names an
 * existing file (else the first present, so the error names it). */
static int vhdx_parse_parent(vd_image *img, struct vhdx_state *s, const uint8_t *p,
                             uint32_t len, uint64_t at, vd_error *err)
{
    static const char *const keys[] = { "relative_path", "volume_path", "absolute_win32_path" };
    char *paths[3] = { 0 };
    if (len < 20)
        return vd_set_error(err, -EINVAL, "vhdx: parent locator at 0x%llx too short",
                            (unsigned long long)at);
    uint32_t n = vd_le16(p + 18);
    if (20 + 12 * (uint64_t)n > len)
        return vd_set_error(err, -EINVAL, "vhdx: parent locator at 0x%llx: %u entries do not fit",
                            (unsigned long long)at, n);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = p + 20 + 12 * (size_t)i;
        uint64_t ko = vd_le32(e), vo = vd_le32(e + 4), kl = vd_le16(e + 8), vl = vd_le16(e + 10);
        if (ko + kl > len || vo + vl > len)
            return vd_set_error(err, -EINVAL,
                                "vhdx: parent locator entry %u at 0x%llx points outside it", i,
                                (unsigned long long)(at + 20 + 12 * i));
        char *k = NULL, *v = NULL;
        int r = vhdx_locator_text(p, ko, kl, &k, at, i, "key", err);
        if (r == 0)
            r = vhdx_locator_text(p, vo, vl, &v, at, i, "value", err);
        if (r < 0) {
            free(k);
            return r;
        }
        char **slot = NULL;
        if (!strcmp(k, "parent_linkage"))
            slot = &s->parent_linkage;
        else if (!strcmp(k, "parent_linkage2"))
            slot = &s->parent_linkage2;
        for (int j = 0; j < 3; j++)
            if (!strcmp(k, keys[j]))
                slot = &paths[j];
        if (slot && !*slot && *v) {
            *slot = v;
            v = NULL;
        }
        free(k);
        free(v);
    }
    for (int j = 0; j < 3; j++)
        if (paths[j])
            vhdx_normalize_path(paths[j]);
    for (int j = 0; j < 3 && !img->backing_file; j++)
        if (paths[j] && *paths[j] && vhdx_path_exists(img, paths[j])) {
            img->backing_file = paths[j];
            paths[j] = NULL;
        }
    for (int j = 0; j < 3 && !img->backing_file; j++)
        if (paths[j] && *paths[j]) {
            img->backing_file = paths[j];
            paths[j] = NULL;
        }
    for (int j = 0; j < 3; j++)
        free(paths[j]);
    if (!img->backing_file || !s->parent_linkage)
        return vd_set_error(err, -EINVAL, "vhdx: parent locator at 0x%llx has no %s",
                            (unsigned long long)at,
                            s->parent_linkage ? "parent path" : "parent_linkage");
    img->backing_format = strdup("vhdx");
    return img->backing_format ? 0 : vd_set_error(err, -ENOMEM, "out of memory");
}

/* "{guid}" in lower case, as Hyper-V writes parent_linkage (libvhdi
 * parses only that). */
void vhdx_linkage_format(const uint8_t *g, char *out)
{
    char t[37];
    vhdx_guid_format(g, t);
    for (char *q = t; *q; q++)
        if (*q >= 'A' && *q <= 'F')
            *q = (char)(*q - 'A' + 'a');
    snprintf(out, 40, "{%s}", t);
}

/* A relative path as a locator stores it: backslashes, ".\" in front. */
char *vhdx_win_relpath(const char *path)
{
    char *rel = malloc(strlen(path) + 3), *o = rel;
    if (!rel)
        return NULL;
    if (path[0] != '/' && path[0] != '.') {
        *o++ = '.';
        *o++ = '\\';
    }
    for (const char *q = path; *q; q++)
        *o++ = *q == '/' ? '\\' : *q;
    *o = 0;
    return rel;
}

int vhdx_locator_build(const char *const (*kv)[2], unsigned n, uint8_t *out, size_t cap,
                       uint32_t *len, vd_error *err)
{
    uint32_t at = 20 + 12 * n;
    if (cap < at || n > 0xffff)
        return vd_set_error(err, -EINVAL, "vhdx: parent locator too long");
    memset(out, 0, cap);
    vhdx_guid_parse(VHDX_GUID_LOCATOR_TYPE, out);
    vd_put_le16(out + 18, (uint16_t)n);
    for (unsigned i = 0; i < n; i++) {
        uint8_t *e = out + 20 + 12 * i;
        for (int k = 0; k < 2; k++) {
            size_t used, bad;
            int r = vd_utf16_encode(kv[i][k], out + at, cap - at, 0, &used, &bad);
            if (r == -EILSEQ)
                return vd_set_error(err, -EINVAL, "vhdx: parent locator %s '%s' is not UTF-8 "
                                    "(byte %zu)", kv[i][0], kv[i][k], bad);
            if (r < 0 || used > 0xffff)
                return vd_set_error(err, -EINVAL, "vhdx: parent path too long");
            vd_put_le32(e + 4 * k, at);
            vd_put_le16(e + 8 + 2 * k, (uint16_t)used);
            at += (uint32_t)used;
        }
    }
    *len = at;
    return 0;
}

/* One metadata item: the known ones are parsed, an unknown required one is
 * an error (the spec: do not open what you do not understand). */
static int vhdx_meta_item(vd_image *img, struct vhdx_state *s, const uint8_t *e,
                          const uint8_t *item, uint32_t len, uint64_t at, vd_error *err)
{
    bool required = vd_le32(e + 24) & 4;
    if (vhdx_guid_is(e, VHDX_GUID_FILE_PARAMS) && len >= 8) {
        s->block_size = vd_le32(item);
        s->leave_allocated = vd_le32(item + 4) & 1;
        s->has_parent = vd_le32(item + 4) & 2;
    } else if (vhdx_guid_is(e, VHDX_GUID_VDISK_SIZE) && len >= 8) {
        img->size = vd_le64(item);
    } else if (vhdx_guid_is(e, VHDX_GUID_LSS) && len >= 4) {
        s->lss = vd_le32(item);
    } else if (vhdx_guid_is(e, VHDX_GUID_PSS) && len >= 4) {
        s->pss = vd_le32(item);
    } else if (vhdx_guid_is(e, VHDX_GUID_PAGE83) && len >= 16) {
        memcpy(s->page83, item, 16);
    } else if (vhdx_guid_is(e, VHDX_GUID_PARENT)) {
        return vhdx_parse_parent(img, s, item, len, at, err);
    } else if (required) {
        char g[37];
        vhdx_guid_format(e, g);
        return vd_set_error(err, -ENOTSUP, "vhdx: unknown required metadata item %s at 0x%llx",
                            g, (unsigned long long)at);
    }
    return 0;
}

static int vhdx_check_metadata(vd_image *img, struct vhdx_state *s, vd_error *err)
{
    if (!vd_is_pow2(s->block_size) || s->block_size < VHDX_MiB || s->block_size > 256 * VHDX_MiB)
        return vd_set_error(err, -EINVAL, "vhdx: block size %u in the metadata region at "
                            "0x%llx is not a power of two from 1 to 256 MiB",
                            s->block_size, (unsigned long long)s->meta_off);
    if (s->lss != 512 && s->lss != 4096)
        return vd_set_error(err, -EINVAL, "vhdx: logical sector size %u (metadata at 0x%llx)",
                            s->lss, (unsigned long long)s->meta_off);
    if (s->pss != 512 && s->pss != 4096)
        return vd_set_error(err, -EINVAL, "vhdx: physical sector size %u (metadata at 0x%llx)",
                            s->pss, (unsigned long long)s->meta_off);
    /* 64 TiB is the format's limit. */
    if (!img->size || img->size > (64ull << 40) || img->size % s->lss)
        return vd_set_error(err, -EINVAL, "vhdx: virtual disk size %llu (metadata at 0x%llx) "
                            "is 0, over 64 TiB or not a multiple of the sector size",
                            (unsigned long long)img->size, (unsigned long long)s->meta_off);
    if (s->has_parent && !img->backing_file)
        return vd_set_error(err, -EINVAL, "vhdx: differencing disk without a parent locator");
    return 0;
}

int vhdx_read_metadata(vd_image *img, struct vhdx_state *s, vd_error *err)
{
    uint8_t *m = malloc(s->meta_len);
    if (!m)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vhdx_file_read(img, m, s->meta_len, s->meta_off, err);
    if (r == 0 && memcmp(m, "metadata", 8))
        r = vd_set_error(err, -EINVAL, "vhdx: no metadata table signature at 0x%llx",
                         (unsigned long long)s->meta_off);
    uint32_t n = r == 0 ? vd_le16(m + 10) : 0;
    if (r == 0 && n > VHDX_MAX_ENTRIES)
        r = vd_set_error(err, -EINVAL, "vhdx: metadata table at 0x%llx has %u entries",
                         (unsigned long long)s->meta_off, n);
    for (uint32_t i = 0; r == 0 && i < n; i++) {
        const uint8_t *e = m + 32 + 32 * (size_t)i;
        uint64_t off = vd_le32(e + 16), len = vd_le32(e + 20);
        uint64_t at = s->meta_off + 32 + 32 * (uint64_t)i;
        if (len && (off < VHDX_META_TABLE_SIZE || off + len > s->meta_len))
            r = vd_set_error(err, -EINVAL, "vhdx: metadata entry %u at 0x%llx: item of %llu "
                             "bytes at +0x%llx is outside the metadata region", i,
                             (unsigned long long)at, (unsigned long long)len,
                             (unsigned long long)off);
        else
            r = vhdx_meta_item(img, s, e, m + off, (uint32_t)len, s->meta_off + off, err);
    }
    free(m);
    return r < 0 ? r : vhdx_check_metadata(img, s, err);
}
