/* disk.c - the guest's disk (disk.h): libvdisk's overlay over the image,
 * with vdboot's error convention (a message in a caller's buffer). */
#include "disk.h"

#include <stdio.h>
#include <string.h>

int disk_open(struct disk *dk, const char *path, const char *format, char *err,
              size_t errlen)
{
    memset(dk, 0, sizeof(*dk));
    vd_error ve = { 0 };
    vd_image *base;
    vd_open_opts o = { .format = format, .readonly = true };
    if (vd_open(path, &o, &base, &ve) < 0) {
        snprintf(err, errlen, "%s", ve.msg);
        return -1;
    }
    if (vd_open_overlay(base, NULL, &dk->img, &ve) < 0) {
        snprintf(err, errlen, "%s", ve.msg);
        vd_close(base, NULL);
        return -1;
    }
    dk->size = vd_size(dk->img);
    return 0;
}

void disk_close(struct disk *dk)
{
    if (dk->img)
        vd_close(dk->img, NULL);
    memset(dk, 0, sizeof(*dk));
}

int disk_read(struct disk *dk, void *buf, size_t len, uint64_t off, char *err, size_t errlen)
{
    vd_error ve = { 0 };
    if (vd_pread(dk->img, buf, len, off, &ve) < 0) {
        snprintf(err, errlen, "%s", ve.msg);
        return -1;
    }
    return 0;
}

int disk_write(struct disk *dk, const void *buf, size_t len, uint64_t off, char *err,
               size_t errlen)
{
    vd_error ve = { 0 };
    if (vd_pwrite(dk->img, buf, len, off, &ve) < 0) {
        snprintf(err, errlen, "%s", ve.msg);
        return -1;
    }
    return 0;
}
