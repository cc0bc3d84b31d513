/* disk.h - the guest's disk: the image opened read-only through libvdisk,
 * under a throw-away overlay (vd_open_overlay: a temporary qcow2, unlinked
 * at once) that takes every guest write.  The image file is never opened
 * for writing, so it cannot change. */
#ifndef VDBOOT_DISK_H
#define VDBOOT_DISK_H

#include <stdint.h>
#include <stddef.h>

#include "vdisk.h"

struct disk {
    vd_image *img;             /* the overlay; its backing is the image */
    uint64_t size;
};

int disk_open(struct disk *dk, const char *path, const char *format, char *err,
              size_t errlen);
void disk_close(struct disk *dk);
/* vd_pread / vd_pwrite with the message in err[errlen]. */
int disk_read(struct disk *dk, void *buf, size_t len, uint64_t off, char *err, size_t errlen);
int disk_write(struct disk *dk, const void *buf, size_t len, uint64_t off, char *err,
               size_t errlen);

#endif
