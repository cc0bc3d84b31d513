/* vhd-inplace.c - the in-place metadata operations of VHD differencing
 * disks: a new parent link (rebase) and emptying (commit).
 *
 * Crash ordering (docs/flush.md):
 *  - parent link: the new locators' data goes after the last block, where
 *    the trailing footer was: first the footer is written at the new end of
 *    the file (so the file always ends with a valid footer), then the
 *    locator data over the old footer, synced; then the dynamic header (new
 *    parent UUID, time, name and locators) with one write.  Before it the
 *    old link holds (its locator data is untouched), after it the new one;
 *    the old locator space is left unused.
 *  - make empty: the BAT is rewritten all-unallocated with one write; the
 *    blocks stay in the file, unreferenced (VHD has no free-space map). */
#include "vhd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* The parent's unique id (its footer, or the copy at offset 0), time and
 * real path, from the file the confined open gave (no second open by
 * name). */
static int vhd_ip_parent_id(vd_file *pf, uint8_t uuid[16], uint32_t *time, char **real,
                            vd_error *err)
{
    uint8_t f[VHD_FOOTER_SIZE];
    bool ok = vhd_read_any_footer(pf, f);
    struct stat st;
    *time = fstat(pf->fd, &st) == 0 ? (uint32_t)((int64_t)st.st_mtime - VHD_EPOCH) : 0;
    if (!ok)
        return vd_set_error(err, -EINVAL, "vhd: parent %s is not a VHD (no valid footer)",
                            pf->path);
    memcpy(uuid, f + VHD_F_UUID, 16);
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", pf->fd);
    *real = realpath(link, NULL);
    return 0;
}

int vhd_set_backing(vd_image *img, const char *file, const char *fmt, vd_error *err)
{
    struct vhd_state *s = img->priv;
    if (s->type != VHD_TYPE_DIFF)
        return vd_set_error(err, -ENOTSUP, "vhd: only a differencing disk has a parent "
                            "(this one is %s)", s->type == VHD_TYPE_FIXED ? "fixed" : "dynamic");
    if (!file)      /* -ENOSYS: vdconvert rewrites it as a dynamic disk */
        return vd_set_error(err, -ENOSYS, "vhd: a differencing disk cannot drop its parent "
                            "in place (its type would change)");
    if (fmt && strcmp(fmt, "vhd") && strcmp(fmt, "vpc"))
        return vd_set_error(err, -ENOTSUP, "vhd: the parent of a differencing VHD must be "
                            "a VHD, not %s", fmt);
    char *rel = NULL, *abs = NULL, *real = NULL;
    uint8_t dh[VHD_DYNHDR_SIZE], uuid[16] = { 0 }, *data = NULL;
    size_t cap = 0;
    uint32_t ptime = 0;
    vd_file *pf;
    int r = vd_file_open_beneath(img->path, file, img->allow_host_paths, true, false, &pf,
                                 err);
    if (r == 0) {
        r = vhd_ip_parent_id(pf, uuid, &ptime, &real, err);
        vd_file_close(pf);
    }
    if (r == 0) {
        rel = vhd_windows_path(file, true);
        abs = real ? vhd_windows_path(real, false) : NULL;
        cap = (strlen(file) + (real ? strlen(real) : 0)) * 2 + 2 * VHD_SECTOR + 8;
        data = calloc(1, cap);
        if (!rel || !data)
            r = vd_set_error(err, -ENOMEM, "out of memory");
    }
    uint64_t at = s->next_free, len = 0, space;
    size_t used;
    if (r == 0) {
        memcpy(dh, s->dynhdr, sizeof dh);
        memcpy(dh + VHD_D_PARENT_UUID, uuid, 16);
        vd_put_be32(dh + VHD_D_PARENT_TIME, ptime);
        memset(dh + VHD_D_LOCATORS, 0, VHD_LOCATORS * VHD_LOCATOR_SIZE);
        r = vhd_put_parent_name(dh, file, err);
    }
    if (r == 0)
        r = vhd_fill_locator(dh, 0, 0x57327275, rel, data, cap, at, &used, &len, err); /* W2ru */
    if (r == 0 && abs) {
        r = vhd_fill_locator(dh, 1, 0x57326b75, abs, data + len, cap - len, at + len, &used,
                             &space, err);                                          /* W2ku */
        len += space;
    }
    if (r == 0) {
        vd_put_be32(dh + VHD_D_CHECKSUM, vhd_checksum(dh, sizeof dh, VHD_D_CHECKSUM));
        vd_put_be32(s->footer + VHD_F_CHECKSUM,
                    vhd_checksum(s->footer, VHD_FOOTER_SIZE, VHD_F_CHECKSUM));
        r = vd_file_pwrite(img->file, s->footer, VHD_FOOTER_SIZE, at + len, err);
    }
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0)
        r = vd_file_pwrite(img->file, data, len, at, err);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0)
        r = vd_file_pwrite(img->file, dh, sizeof dh, vd_be64(s->footer + VHD_F_DATA_OFFSET), err);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0) {
        memcpy(s->dynhdr, dh, sizeof dh);
        s->next_free = at + len;
        s->file_size = at + len + VHD_FOOTER_SIZE;
    }
    free(rel);
    free(abs);
    free(real);
    free(data);
    return r;
}

int vhd_make_empty(vd_image *img, vd_error *err)
{
    struct vhd_state *s = img->priv;
    if (s->type != VHD_TYPE_DIFF)
        return vd_set_error(err, -ENOTSUP, "vhd: only a differencing disk can be emptied");
    size_t bytes = (size_t)s->bat_entries * 4;
    uint8_t *b = malloc(bytes ? bytes : 1);
    if (!b)
        return vd_set_error(err, -ENOMEM, "out of memory");
    memset(b, 0xff, bytes);
    int r = vd_file_pwrite(img->file, b, bytes, s->bat_off, err);
    free(b);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0)
        for (uint32_t i = 0; i < s->bat_entries; i++)
            s->bat[i] = VHD_BAT_UNUSED;
    return r;
}
