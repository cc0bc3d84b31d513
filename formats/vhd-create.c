/* vhd-create.c - creating VHD images: fixed, dynamic, and differencing (when
 * a backing file is given; the parent must be a VHD).
 *
 * Sizes: with force_size=on the virtual size is the size asked (rounded up
 * to a sector), so that e.g. Azure's whole-MiB fixed disks can be made; the
 * creator is then "qem2", the tag qemu (and we) read as "trust the current
 * size".  Without it the size is rounded up to the next whole CHS geometry,
 * as Virtual PC and qemu do, and the creator is "vdsk" (read by its CHS
 * geometry, which then equals the current size).  Past the largest geometry
 * (~127 GiB) the current size is used either way.
 *
 * Layout of a dynamic disk: footer copy at 0, dynamic header at 512, BAT at
 * 1536, for a differencing disk the parent locators' data after the BAT,
 * then the footer.  Blocks are 2 MiB, the spec's and every tool's default. */
#include "vhd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define VHD_BLOCK_SIZE (2u << 20)
#define VHD_BAT_OFF 1536u

struct vhd_create_plan {
    uint64_t size;            /* virtual size */
    uint16_t cyl;
    uint8_t heads, spt;
    const char *creator;
    uint32_t type;
};

/* qemu's rounding: grow the sector count until a geometry covers it. */
static int vhd_plan_size(uint64_t want, bool force, struct vhd_create_plan *p, vd_error *err)
{
    uint64_t sectors = (want + VHD_SECTOR - 1) / VHD_SECTOR;
    if (sectors > VHD_MAX_SECTORS)
        return vd_set_error(err, -EFBIG, "vhd: size %llu exceeds the format's 2040 GiB limit",
                            (unsigned long long)want);
    if (force) {
        vhd_geometry(sectors, &p->cyl, &p->heads, &p->spt);
        p->size = sectors * VHD_SECTOR;
        p->creator = "qem2";
        return 0;
    }
    uint64_t chs = 0;
    uint64_t s = sectors < VHD_MAX_GEOMETRY ? sectors : VHD_MAX_GEOMETRY;
    for (uint64_t i = 0; chs < s; i++) {
        vhd_geometry(s + i, &p->cyl, &p->heads, &p->spt);
        chs = (uint64_t)p->cyl * p->heads * p->spt;
    }
    p->size = (chs == VHD_MAX_GEOMETRY ? sectors : chs) * VHD_SECTOR;
    p->creator = "vdsk";
    return 0;
}

static void vhd_make_uuid(uint8_t *u)
{
    if (getrandom(u, 16, 0) != 16) {
        /* No entropy source: time and address still make it unique enough
         * for a parent link, which is all the id is used for. */
        uint64_t t = (uint64_t)time(NULL), a = (uint64_t)(uintptr_t)u;
        memcpy(u, &t, 8);
        memcpy(u + 8, &a, 8);
    }
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);   /* RFC 4122 version 4 */
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
}

static void vhd_make_footer(uint8_t *f, const struct vhd_create_plan *p, uint64_t data_off)
{
    memset(f, 0, VHD_FOOTER_SIZE);
    memcpy(f + VHD_F_COOKIE, "conectix", 8);
    vd_put_be32(f + VHD_F_FEATURES, 2);          /* "reserved", always set */
    vd_put_be32(f + VHD_F_VERSION, 0x00010000);
    vd_put_be64(f + VHD_F_DATA_OFFSET, data_off);
    vd_put_be32(f + VHD_F_TIMESTAMP, (uint32_t)((int64_t)time(NULL) - VHD_EPOCH));
    memcpy(f + VHD_F_CREATOR_APP, p->creator, 4);
    vd_put_be32(f + VHD_F_CREATOR_VER, 0x00010000);
    memcpy(f + VHD_F_CREATOR_OS, "Wi2k", 4);
    vd_put_be64(f + VHD_F_ORIG_SIZE, p->size);
    vd_put_be64(f + VHD_F_CUR_SIZE, p->size);
    vd_put_be16(f + VHD_F_CYLINDERS, p->cyl);
    f[VHD_F_HEADS] = p->heads;
    f[VHD_F_SPT] = p->spt;
    vd_put_be32(f + VHD_F_TYPE, p->type);
    vhd_make_uuid(f + VHD_F_UUID);
    vd_put_be32(f + VHD_F_CHECKSUM, vhd_checksum(f, VHD_FOOTER_SIZE, VHD_F_CHECKSUM));
}

static int vhd_create_fixed(vd_file *f, const struct vhd_create_plan *p, vd_error *err)
{
    uint8_t footer[VHD_FOOTER_SIZE];
    vhd_make_footer(footer, p, UINT64_MAX);
    int r = vd_file_truncate(f, p->size, err);
    if (r == 0)
        r = vd_file_pwrite(f, footer, sizeof footer, p->size, err);
    return r;
}

/* The parent's file name into the dynamic header's 512-byte UTF-16BE field
 * (NUL-padded; a full field has no NUL). */
int vhd_put_parent_name(uint8_t *dh, const char *path, vd_error *err)
{
    const char *base = strrchr(path, '/');
    size_t used, bad;
    base = base ? base + 1 : path;
    memset(dh + VHD_D_PARENT_NAME, 0, 512);
    int r = vd_utf16_encode(base, dh + VHD_D_PARENT_NAME, 512, VD_UTF16_BE, &used, &bad);
    if (r == -EILSEQ)
        return vd_set_error(err, r, "vhd: parent name '%s' is not UTF-8 (byte %zu)", base, bad);
    if (r < 0)
        return vd_set_error(err, r, "vhd: parent name '%s' is longer than the 512 bytes "
                            "of UTF-16 a VHD holds", base);
    return 0;
}

int vhd_fill_locator(uint8_t *dh, int i, uint32_t code, const char *path, uint8_t *data,
                     size_t cap, uint64_t at, size_t *len, uint64_t *space, vd_error *err)
{
    size_t bad;
    int r = vd_utf16_encode(path, data, cap, 0, len, &bad);
    if (r == -EILSEQ)
        return vd_set_error(err, r, "vhd: parent path '%s' is not UTF-8 (byte %zu)", path, bad);
    if (r < 0)
        return vd_set_error(err, r, "vhd: parent path '%s' does not fit its locator", path);
    *space = vd_round_up(*len ? *len : 1, VHD_SECTOR);
    uint8_t *l = dh + VHD_D_LOCATORS + i * VHD_LOCATOR_SIZE;
    vd_put_be32(l, code);
    vd_put_be32(l + 4, (uint32_t)*space);     /* bytes, as Hyper-V writes it */
    vd_put_be32(l + 8, (uint32_t)*len);
    vd_put_be64(l + 16, at);
    return 0;
}

char *vhd_windows_path(const char *p, bool relative)
{
    size_t n = strlen(p);
    char *w = malloc(n + 3), *o = w;
    if (!w)
        return NULL;
    if (relative && p[0] != '/') {
        *o++ = '.';
        *o++ = '\\';
    }
    for (; *p; p++)
        *o++ = *p == '/' ? '\\' : *p;
    *o = 0;
    return w;
}

/* Fill parent locator `i` with `path` (UTF-16LE) at `*at`; advance `*at`. */
static int vhd_put_locator(vd_file *f, uint8_t *dh, int i, uint32_t code, const char *path,
                           uint64_t *at, vd_error *err)
{
    size_t cap = 2 * strlen(path) + 2, len;     /* UTF-16 takes at most 2 bytes per byte */
    uint64_t space;
    uint8_t *buf = calloc(1, cap);
    if (!buf)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vhd_fill_locator(dh, i, code, path, buf, cap, *at, &len, &space, err);
    if (r == 0)
        r = vd_file_pwrite(f, buf, len, *at, err);
    free(buf);
    *at += space;
    return r;
}

/* The parent link of a differencing disk: UUID and time from the parent,
 * its name, and two locators (relative W2ru, absolute W2ku). */
static int vhd_link_parent(vd_file *f, const struct vd_create_args *a, uint8_t *dh,
                           uint64_t *at, vd_error *err)
{
    uint8_t pf[VHD_FOOTER_SIZE];
    int64_t psize = vd_file_size(a->backing->file, err);
    if (psize < VHD_FOOTER_SIZE)
        return psize < 0 ? (int)psize : vd_set_error(err, -EINVAL, "vhd: parent too small");
    int r = vd_file_pread(a->backing->file, pf, sizeof pf, (uint64_t)psize - sizeof pf, err);
    if (r == 0 && vd_be32(pf + VHD_F_CHECKSUM) != vhd_checksum(pf, sizeof pf, VHD_F_CHECKSUM))
        r = vd_file_pread(a->backing->file, pf, sizeof pf, 0, err);
    if (r < 0)
        return r;
    memcpy(dh + VHD_D_PARENT_UUID, pf + VHD_F_UUID, 16);
    struct stat st;
    if (fstat(a->backing->file->fd, &st) == 0)
        vd_put_be32(dh + VHD_D_PARENT_TIME, (uint32_t)((int64_t)st.st_mtime - VHD_EPOCH));
    r = vhd_put_parent_name(dh, a->backing_file, err);
    if (r < 0)
        return r;
    char *rel = vhd_windows_path(a->backing_file, true);
    /* the absolute locator names the file the confined open found */
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", a->backing->file->fd);
    char *absreal = realpath(link, NULL);
    char *abs = absreal ? vhd_windows_path(absreal, false) : NULL;
    free(absreal);
    if (!rel)
        r = vd_set_error(err, -ENOMEM, "out of memory");
    if (r == 0)
        r = vhd_put_locator(f, dh, 0, 0x57327275, rel, at, err);      /* W2ru */
    if (r == 0 && abs)
        r = vhd_put_locator(f, dh, 1, 0x57326b75, abs, at, err);      /* W2ku */
    free(rel);
    free(abs);
    return r;
}

static int vhd_create_dynamic(vd_file *f, const struct vd_create_args *a,
                              const struct vhd_create_plan *p, vd_error *err)
{
    uint8_t footer[VHD_FOOTER_SIZE], dh[VHD_DYNHDR_SIZE];
    uint64_t entries = (p->size + VHD_BLOCK_SIZE - 1) / VHD_BLOCK_SIZE;
    uint64_t bat_bytes = vd_round_up(entries * 4, VHD_SECTOR);
    uint64_t at = VHD_BAT_OFF + bat_bytes;
    memset(dh, 0, sizeof dh);
    memcpy(dh + VHD_D_COOKIE, "cxsparse", 8);
    vd_put_be64(dh + VHD_D_DATA_OFFSET, UINT64_MAX);
    vd_put_be64(dh + VHD_D_TABLE_OFFSET, VHD_BAT_OFF);
    vd_put_be32(dh + VHD_D_VERSION, 0x00010000);
    vd_put_be32(dh + VHD_D_MAX_ENTRIES, (uint32_t)entries);
    vd_put_be32(dh + VHD_D_BLOCK_SIZE, VHD_BLOCK_SIZE);
    int r = 0;
    if (p->type == VHD_TYPE_DIFF)
        r = vhd_link_parent(f, a, dh, &at, err);
    vd_put_be32(dh + VHD_D_CHECKSUM, vhd_checksum(dh, sizeof dh, VHD_D_CHECKSUM));
    vhd_make_footer(footer, p, VHD_FOOTER_SIZE);
    uint8_t *bat = malloc(bat_bytes);
    if (!bat)
        return vd_set_error(err, -ENOMEM, "out of memory");
    memset(bat, 0xff, bat_bytes);
    if (r == 0)
        r = vd_file_pwrite(f, footer, sizeof footer, 0, err);
    if (r == 0)
        r = vd_file_pwrite(f, dh, sizeof dh, VHD_FOOTER_SIZE, err);
    if (r == 0)
        r = vd_file_pwrite(f, bat, bat_bytes, VHD_BAT_OFF, err);
    if (r == 0)
        r = vd_file_pwrite(f, footer, sizeof footer, at, err);
    free(bat);
    return r;
}

int vhd_create(const struct vd_create_args *a, vd_error *err)
{
    const char *sub = vd_opt_str(a->opts, "subformat");
    bool force = false;
    struct vhd_create_plan p = { .type = VHD_TYPE_DYNAMIC };
    int r = vd_opt_bool(a->opts, "force_size", false, &force, err);
    if (r < 0)
        return r;
    /* "differencing" is what info reports for a disk with a parent; taken
     * back (a rewrite keeps the layout), it means dynamic plus the parent,
     * or plain dynamic when the parent is dropped. */
    if (sub && !strcmp(sub, "fixed"))
        p.type = VHD_TYPE_FIXED;
    else if (sub && strcmp(sub, "dynamic") && strcmp(sub, "differencing"))
        return vd_set_error(err, -EINVAL, "vhd: subformat=%s: expected fixed, dynamic or "
                            "differencing", sub);
    if (a->backing_file) {
        if (p.type == VHD_TYPE_FIXED)
            return vd_set_error(err, -EINVAL, "vhd: a fixed VHD cannot have a backing file");
        if (!a->backing || strcmp(a->backing->drv->name, "vhd"))
            return vd_set_error(err, -EINVAL,
                                "vhd: the parent of a differencing VHD must be a VHD");
        /* A size that CHS rounding turns into the parent's is the same
         * disk: `convert -B base.vhd` of a source whose own conversion made
         * base.vhd asks for the unrounded size. */
        struct vhd_create_plan rounded = { 0 };
        if (a->size != a->backing->size &&
            (vhd_plan_size(a->size, false, &rounded, NULL) < 0 ||
             rounded.size != a->backing->size))
            return vd_set_error(err, -EINVAL,
                                "vhd: a differencing VHD has its parent's size (%llu), not %llu",
                                (unsigned long long)a->backing->size,
                                (unsigned long long)a->size);
        p.type = VHD_TYPE_DIFF;
        force = true;     /* the parent's size is exact already */
    }
    if ((r = vhd_plan_size(a->size, force, &p, err)) < 0)
        return r;
    if (p.type == VHD_TYPE_DIFF)
        p.creator = "qem2";  /* read by its current size, like the parent */
    vd_file *f;
    if ((r = vd_file_create(a->path, &f, err)) < 0)
        return r;
    if (p.type == VHD_TYPE_FIXED)
        r = vhd_create_fixed(f, &p, err);
    else
        r = vhd_create_dynamic(f, a, &p, err);
    return vd_file_create_finish(f, r, err);
}
