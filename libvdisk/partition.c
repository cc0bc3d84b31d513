/* partition.c - MBR (with logical partitions) and GPT partition tables.
 *
 * Everything read here is untrusted: entries are range-checked against the
 * disk, the chain of extended boot records is bounded and loop-checked, GPT
 * headers and entry arrays are CRC-checked and their sizes capped before any
 * allocation.  Damage that still leaves a usable table is reported in
 * t->warning; damage that leaves nothing trustworthy is an error.
 */
#include "vd-driver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

#define PT_MBR_SECTOR      512u
#define PT_MBR_TABLE       0x1be
#define PT_MBR_SIGNATURE   0x1fe
#define PT_MBR_DISK_SIG    0x1b8
#define PT_MBR_ENTRY_SIZE  16
#define PT_MAX_LOGICAL     256   /* EBR chain limit: a loop cannot hang us */
#define PT_MAX_PARTITIONS  4096

#define GPT_HDR_SIG           0
#define GPT_HDR_SIZE          12
#define GPT_HDR_CRC           16
#define GPT_HDR_MY_LBA        24
#define GPT_HDR_ALT_LBA       32
#define GPT_HDR_FIRST_USABLE  40
#define GPT_HDR_LAST_USABLE   48
#define GPT_HDR_DISK_GUID     56
#define GPT_HDR_ENTRIES_LBA   72
#define GPT_HDR_NUM_ENTRIES   80
#define GPT_HDR_ENTRY_SIZE    84
#define GPT_HDR_ENTRIES_CRC   88
#define GPT_HDR_MIN_SIZE      92
/* The spec allows more, but no tool writes more than a few hundred entries;
 * a larger array is treated as damage rather than allocated. */
#define GPT_MAX_ENTRY_BYTES   (4u << 20)

#define GPT_ENT_TYPE   0
#define GPT_ENT_GUID   16
#define GPT_ENT_FIRST  32
#define GPT_ENT_LAST   40
#define GPT_ENT_ATTRS  48
#define GPT_ENT_NAME   56
#define GPT_ENT_NAME_UNITS 36

static void pt_warn(vd_partition_table *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void pt_warn(vd_partition_table *t, const char *fmt, ...)
{
    if (t->warning[0])
        return;     /* keep the first problem: later ones often follow from it */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->warning, sizeof t->warning, fmt, ap);
    va_end(ap);
}

void vd_partition_table_free(vd_partition_table *t)
{
    if (!t)
        return;
    free(t->v);
    t->v = NULL;
    t->n = 0;
}

/* Append a partition, clipping it to the disk.  Returns 0, 1 when skipped,
 * or -ENOMEM. */
static int pt_add(vd_partition_table *t, const vd_partition *p, uint64_t disk_size,
                  const char *what, uint64_t where)
{
    vd_partition q = *p;
    if (q.start >= disk_size) {
        pt_warn(t, "%s: partition %u at 0x%llx starts past end of disk "
                "(start 0x%llx, disk 0x%llx), skipped", what, q.index,
                (unsigned long long)where, (unsigned long long)q.start,
                (unsigned long long)disk_size);
        return 1;
    }
    if (q.length > disk_size - q.start) {
        pt_warn(t, "%s: partition %u at 0x%llx extends past end of disk "
                "(end 0x%llx, disk 0x%llx), truncated", what, q.index,
                (unsigned long long)where,
                (unsigned long long)(q.start + q.length), /* may wrap: text only */
                (unsigned long long)disk_size);
        q.length = disk_size - q.start;
    }
    if (t->n >= PT_MAX_PARTITIONS)
        return 1;
    if (t->n % 16 == 0) {
        vd_partition *nv = realloc(t->v, (t->n + 16) * sizeof *nv);
        if (!nv)
            return -ENOMEM;
        t->v = nv;
    }
    t->v[t->n++] = q;
    return 0;
}

static bool pt_mbr_is_extended(uint8_t type)
{
    return type == 0x05 || type == 0x0f || type == 0x85;
}

/* A sector is an MBR/EBR when it carries 0x55aa and every boot flag is 0 or
 * 0x80 (a FAT or NTFS boot sector also ends in 0x55aa, but its "entries" are
 * code and fail this test). */
static bool pt_mbr_valid(const uint8_t *s)
{
    if (s[PT_MBR_SIGNATURE] != 0x55 || s[PT_MBR_SIGNATURE + 1] != 0xaa)
        return false;
    for (int i = 0; i < 4; i++) {
        uint8_t f = s[PT_MBR_TABLE + i * PT_MBR_ENTRY_SIZE];
        if (f != 0 && f != 0x80)
            return false;
    }
    return true;
}

static void pt_mbr_entry(const uint8_t *s, int slot, uint8_t *flag, uint8_t *type,
                         uint64_t *lba, uint64_t *count)
{
    const uint8_t *e = s + PT_MBR_TABLE + slot * PT_MBR_ENTRY_SIZE;
    *flag = e[0];
    *type = e[4];
    *lba = vd_le32(e + 8);
    *count = vd_le32(e + 12);
}

/* Walk the chain of extended boot records of one extended partition.
 * EBR n holds the logical partition (relative to that EBR) and a link to
 * EBR n+1 (relative to the start of the extended partition). */
static int pt_mbr_logicals(vd_image *img, vd_partition_table *t, uint64_t ext_lba,
                           uint64_t ext_count, unsigned *next_index, vd_error *err)
{
    uint64_t disk = vd_size(img);
    uint64_t visited[PT_MAX_LOGICAL];
    uint64_t ebr = ext_lba;
    uint8_t s[PT_MBR_SECTOR];
    for (int n = 0; n < PT_MAX_LOGICAL; n++) {
        uint64_t off = ebr * PT_MBR_SECTOR;
        for (int i = 0; i < n; i++) {
            if (visited[i] == ebr) {
                pt_warn(t, "mbr: extended boot record chain loops back to 0x%llx",
                        (unsigned long long)off);
                return 0;
            }
        }
        visited[n] = ebr;
        if (off + PT_MBR_SECTOR > disk) {
            pt_warn(t, "mbr: extended boot record at 0x%llx past end of disk",
                    (unsigned long long)off);
            return 0;
        }
        int r = vd_pread(img, s, sizeof s, off, err);
        if (r < 0)
            return r;
        if (!pt_mbr_valid(s)) {
            pt_warn(t, "mbr: extended boot record at 0x%llx has no valid signature",
                    (unsigned long long)off);
            return 0;
        }
        uint8_t flag, type;
        uint64_t lba, count;
        pt_mbr_entry(s, 0, &flag, &type, &lba, &count);
        if (type && count) {
            vd_partition p = { .index = (*next_index)++, .logical = true,
                               .bootable = flag == 0x80, .mbr_type = type,
                               .start = (ebr + lba) * PT_MBR_SECTOR,
                               .length = count * PT_MBR_SECTOR };
            r = pt_add(t, &p, disk, "mbr", off + PT_MBR_TABLE);
            if (r < 0)
                return vd_set_error(err, r, "out of memory");
        }
        pt_mbr_entry(s, 1, &flag, &type, &lba, &count);
        if (!pt_mbr_is_extended(type) || lba == 0)
            return 0;
        if (lba >= ext_count) {
            pt_warn(t, "mbr: extended boot record at 0x%llx links outside the "
                    "extended partition (0x%llx)", (unsigned long long)off,
                    (unsigned long long)(lba * PT_MBR_SECTOR));
            return 0;
        }
        ebr = ext_lba + lba;
    }
    pt_warn(t, "mbr: more than %d logical partitions, rest ignored", PT_MAX_LOGICAL);
    return 0;
}

static int pt_mbr_parse(vd_image *img, const uint8_t *s, vd_partition_table *t,
                        vd_error *err)
{
    uint64_t disk = vd_size(img);
    t->scheme = VD_PT_MBR;
    t->sector_size = PT_MBR_SECTOR;
    t->mbr_signature = vd_le32(s + PT_MBR_DISK_SIG);
    unsigned next_logical = 5;
    for (int i = 0; i < 4; i++) {
        uint8_t flag, type;
        uint64_t lba, count;
        pt_mbr_entry(s, i, &flag, &type, &lba, &count);
        if (!type || !count)
            continue;
        vd_partition p = { .index = i + 1, .bootable = flag == 0x80,
                           .mbr_type = type, .extended = pt_mbr_is_extended(type),
                           .start = lba * PT_MBR_SECTOR,
                           .length = count * PT_MBR_SECTOR };
        int r = pt_add(t, &p, disk, "mbr", PT_MBR_TABLE + i * PT_MBR_ENTRY_SIZE);
        if (r < 0)
            return vd_set_error(err, r, "out of memory");
        if (r == 0 && p.extended) {
            r = pt_mbr_logicals(img, t, lba, count, &next_logical, err);
            if (r < 0)
                return r;
        }
    }
    return 0;
}

/* ---- GPT ------------------------------------------------------------------ */

/* GUIDs are stored with the first three fields little-endian. */
static void pt_guid_text(const uint8_t *g, char out[37])
{
    vd_uuid_format(g, VD_UUID_MIXED, out);
}

/* The entry's UTF-16LE name as UTF-8 into out[outsz] (a name that is not
 * UTF-16 is shown empty, with a warning: the partition itself is fine). */
static int pt_gpt_name(vd_partition_table *t, const uint8_t *e, uint32_t i, uint64_t where,
                       char *out, size_t outsz)
{
    char *name;
    size_t bad;
    int r = vd_utf16_decode(e + GPT_ENT_NAME, 2 * GPT_ENT_NAME_UNITS, 0, &name, &bad);
    if (r == -ENOMEM)
        return r;
    if (r < 0) {
        pt_warn(t, "gpt: entry %u at 0x%llx: name is not UTF-16 (unpaired surrogate at byte "
                "%zu), shown empty", i + 1, (unsigned long long)where, bad);
        out[0] = 0;
        return 0;
    }
    /* 36 units make at most 108 bytes: out (148) holds any name. */
    snprintf(out, outsz, "%s", name);
    free(name);
    return 0;
}

struct pt_gpt {
    uint8_t *entries;        /* malloc'd entry array */
    uint32_t num, esize;
    uint8_t disk_guid[16];
};

/* Validate the GPT header in `h` (one sector of `ss` bytes, found at LBA
 * `lba`) and load its entry array.  On failure `why` says what was wrong. */
static int pt_gpt_load(vd_image *img, uint8_t *h, uint32_t ss, uint64_t lba,
                       struct pt_gpt *g, char *why, size_t whysz, vd_error *err)
{
    uint64_t disk = vd_size(img);
    uint64_t sectors = disk / ss;
    uint64_t hoff = lba * ss;
    if (memcmp(h + GPT_HDR_SIG, "EFI PART", 8) != 0) {
        snprintf(why, whysz, "no signature at 0x%llx", (unsigned long long)hoff);
        return -EINVAL;
    }
    uint32_t hsize = vd_le32(h + GPT_HDR_SIZE);
    if (hsize < GPT_HDR_MIN_SIZE || hsize > ss) {
        snprintf(why, whysz, "header size %u at 0x%llx out of range", hsize,
                 (unsigned long long)(hoff + GPT_HDR_SIZE));
        return -EINVAL;
    }
    uint32_t want = vd_le32(h + GPT_HDR_CRC);
    vd_put_le32(h + GPT_HDR_CRC, 0);
    uint32_t got = crc32(0, h, hsize);
    vd_put_le32(h + GPT_HDR_CRC, want);
    if (got != want) {
        snprintf(why, whysz, "header CRC at 0x%llx is 0x%08x, computed 0x%08x",
                 (unsigned long long)(hoff + GPT_HDR_CRC), want, got);
        return -EINVAL;
    }
    if (vd_le64(h + GPT_HDR_MY_LBA) != lba) {
        snprintf(why, whysz, "header at 0x%llx names its own LBA as %llu",
                 (unsigned long long)hoff,
                 (unsigned long long)vd_le64(h + GPT_HDR_MY_LBA));
        return -EINVAL;
    }
    uint64_t elba = vd_le64(h + GPT_HDR_ENTRIES_LBA);
    uint32_t num = vd_le32(h + GPT_HDR_NUM_ENTRIES);
    uint32_t esize = vd_le32(h + GPT_HDR_ENTRY_SIZE);
    uint64_t bytes;
    if (esize < 128 || esize % 8 || vd_mul_overflow(num, esize, &bytes) ||
        bytes > GPT_MAX_ENTRY_BYTES) {
        snprintf(why, whysz, "entry array of %u x %u bytes (header 0x%llx) invalid",
                 num, esize, (unsigned long long)(hoff + GPT_HDR_NUM_ENTRIES));
        return -EINVAL;
    }
    uint64_t eoff, eend;
    if (elba >= sectors || vd_mul_overflow(elba, ss, &eoff) ||
        vd_add_overflow(eoff, bytes, &eend) || eend > disk) {
        snprintf(why, whysz, "entry array at LBA %llu (header 0x%llx) past end of disk",
                 (unsigned long long)elba,
                 (unsigned long long)(hoff + GPT_HDR_ENTRIES_LBA));
        return -EINVAL;
    }
    uint8_t *e = malloc(bytes ? bytes : 1);
    if (!e)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vd_pread(img, e, bytes, eoff, err);
    if (r < 0) {
        free(e);
        return r == -EINVAL ? -EIO : r;   /* keep -EINVAL meaning "damaged" */
    }
    uint32_t ecrc = crc32(0, e, bytes);
    if (ecrc != vd_le32(h + GPT_HDR_ENTRIES_CRC)) {
        snprintf(why, whysz, "entry array CRC at 0x%llx is 0x%08x, computed 0x%08x",
                 (unsigned long long)(hoff + GPT_HDR_ENTRIES_CRC),
                 vd_le32(h + GPT_HDR_ENTRIES_CRC), ecrc);
        free(e);
        return -EINVAL;
    }
    g->entries = e;
    g->num = num;
    g->esize = esize;
    memcpy(g->disk_guid, h + GPT_HDR_DISK_GUID, 16);
    return 0;
}

static int pt_gpt_entries(vd_partition_table *t, const struct pt_gpt *g, uint32_t ss,
                          uint64_t disk, uint64_t array_off)
{
    static const uint8_t zero[16];
    for (uint32_t i = 0; i < g->num; i++) {
        const uint8_t *e = g->entries + (size_t)i * g->esize;
        if (!memcmp(e + GPT_ENT_TYPE, zero, 16))
            continue;
        uint64_t first = vd_le64(e + GPT_ENT_FIRST), last = vd_le64(e + GPT_ENT_LAST);
        uint64_t where = array_off + (uint64_t)i * g->esize;
        uint64_t start, end;
        if (last < first || vd_mul_overflow(first, ss, &start) ||
            vd_mul_overflow(last - first + 1, ss, &end)) {
            pt_warn(t, "gpt: entry %u at 0x%llx has first LBA %llu after last %llu, "
                    "skipped", i + 1, (unsigned long long)where,
                    (unsigned long long)first, (unsigned long long)last);
            continue;
        }
        vd_partition p = { .index = i + 1, .start = start, .length = end,
                           .gpt_attrs = vd_le64(e + GPT_ENT_ATTRS) };
        pt_guid_text(e + GPT_ENT_TYPE, p.type_guid);
        pt_guid_text(e + GPT_ENT_GUID, p.part_guid);
        if (pt_gpt_name(t, e, i, where, p.name, sizeof p.name) < 0 ||
            pt_add(t, &p, disk, "gpt", where) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* Try the primary header at LBA 1, then the backup at the last LBA. */
static int pt_gpt_parse(vd_image *img, uint32_t ss, vd_partition_table *t,
                        vd_error *err)
{
    uint64_t disk = vd_size(img);
    uint64_t sectors = disk / ss;
    uint8_t *h = malloc(ss);
    if (!h)
        return vd_set_error(err, -ENOMEM, "out of memory");
    struct pt_gpt g = { 0 };
    char why1[200] = "", why2[200] = "disk too small for a backup header";
    uint64_t hlba = 1;
    int r = vd_pread(img, h, ss, ss, err);
    if (r == 0)
        r = pt_gpt_load(img, h, ss, 1, &g, why1, sizeof why1, err);
    if (r == -EINVAL && sectors > 2) {
        hlba = sectors - 1;
        r = vd_pread(img, h, ss, hlba * ss, err);
        if (r == 0)
            r = pt_gpt_load(img, h, ss, hlba, &g, why2, sizeof why2, err);
        if (r == 0) {
            t->gpt_backup_used = true;
            pt_warn(t, "gpt: primary header damaged (%s), using the backup", why1);
        }
    }
    if (r == -EINVAL)
        vd_set_error(err, r, "gpt: primary header: %s; backup header: %s", why1, why2);
    if (r == 0) {
        t->scheme = VD_PT_GPT;
        t->sector_size = ss;
        pt_guid_text(g.disk_guid, t->disk_guid);
        uint64_t aoff = vd_le64(h + GPT_HDR_ENTRIES_LBA) * ss;
        if (pt_gpt_entries(t, &g, ss, disk, aoff) < 0)
            r = vd_set_error(err, -ENOMEM, "out of memory");
    }
    free(g.entries);
    free(h);
    return r;
}

/* A GPT disk may use 4 KiB logical sectors: then the header sits at 4096
 * (and the backup in the last 4 KiB).  The primary's signature decides; if it
 * is gone, the backup's does. */
static uint32_t pt_gpt_sector_size(vd_image *img)
{
    uint8_t sig[8];
    uint32_t sizes[] = { 512, 4096 };
    uint64_t disk = vd_size(img);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 2; i++) {
            uint64_t ss = sizes[i];
            if (disk < 3 * ss)
                continue;
            uint64_t at = pass == 0 ? ss : (disk / ss - 1) * ss;
            if (vd_pread(img, sig, 8, at, NULL) == 0 && !memcmp(sig, "EFI PART", 8))
                return ss;
        }
    }
    return 512;
}

int vd_partition_list(vd_image *img, vd_partition_table *t, vd_error *err)
{
    memset(t, 0, sizeof *t);
    t->sector_size = PT_MBR_SECTOR;
    if (vd_size(img) < PT_MBR_SECTOR)
        return 0;
    uint8_t s[PT_MBR_SECTOR];
    int r = vd_pread(img, s, sizeof s, 0, err);
    if (r < 0)
        return r;
    if (!pt_mbr_valid(s))
        return 0;
    bool protective = false;
    for (int i = 0; i < 4; i++)
        if (s[PT_MBR_TABLE + i * PT_MBR_ENTRY_SIZE + 4] == 0xee)
            protective = true;
    if (protective)
        r = pt_gpt_parse(img, pt_gpt_sector_size(img), t, err);
    else
        r = pt_mbr_parse(img, s, t, err);
    if (r < 0) {
        vd_partition_table_free(t);
        t->scheme = VD_PT_NONE;
    }
    return r;
}
