/* disk.h - the guest's disk: an image opened read-only through libvdisk,
 * under a throw-away overlay that takes every guest write.  The image file
 * is never opened for writing, so it cannot change. */
#ifndef VDBOOT_DISK_H
#define VDBOOT_DISK_H

#include <stdint.h>
#include <stddef.h>

#include "vdisk.h"

struct disk {
    vd_image *img;
    uint64_t size;
    int overlay_fd;            /* unlinked temporary file, sparse */
    uint8_t *written;          /* bitmap: 4 KiB blocks held by the overlay */
    uint64_t writes;           /* guest write requests taken */
};

int disk_open(struct disk *dk, const char *path, const char *format, char *err,
              size_t errlen);
void disk_close(struct disk *dk);
int disk_read(struct disk *dk, void *buf, size_t len, uint64_t off, char *err, size_t errlen);
int disk_write(struct disk *dk, const void *buf, size_t len, uint64_t off, char *err,
               size_t errlen);

#endif
