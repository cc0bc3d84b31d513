/* disk.c - the throw-away overlay over a read-only image.  Guest writes go
 * to an unlinked temporary file at the same offsets, in 4 KiB blocks (a
 * partial block is completed from the image first); a bitmap says which
 * blocks the overlay holds.  Reads take each run of blocks from wherever it
 * lives. */
#include "disk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DISK_BLOCK 4096u
#define DISK_BITMAP_MAX (64ull << 20)   /* 64 MiB of bitmap = 2 PiB of disk */

static bool disk_held(const struct disk *dk, uint64_t blk)
{
    return dk->written[blk >> 3] & (1u << (blk & 7));
}

int disk_open(struct disk *dk, const char *path, const char *format, char *err,
              size_t errlen)
{
    memset(dk, 0, sizeof(*dk));
    dk->overlay_fd = -1;
    vd_error ve = { 0 };
    vd_open_opts o = { .format = format, .readonly = true };
    if (vd_open(path, &o, &dk->img, &ve) < 0) {
        snprintf(err, errlen, "%s", ve.msg);
        return -1;
    }
    dk->size = vd_size(dk->img);
    uint64_t bits = (dk->size + DISK_BLOCK - 1) / DISK_BLOCK;
    if (bits / 8 + 1 > DISK_BITMAP_MAX) {
        snprintf(err, errlen, "%s: virtual size %llu is too large for the overlay", path,
                 (unsigned long long)dk->size);
        goto fail;
    }
    dk->written = calloc(1, bits / 8 + 1);
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    dk->overlay_fd = open(tmp, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (!dk->written || dk->overlay_fd < 0) {
        snprintf(err, errlen, "cannot create the overlay in %s: %s", tmp, strerror(errno));
        goto fail;
    }
    return 0;
fail:
    disk_close(dk);
    return -1;
}

void disk_close(struct disk *dk)
{
    if (dk->img)
        vd_close(dk->img, NULL);
    if (dk->overlay_fd >= 0)
        close(dk->overlay_fd);
    free(dk->written);
    memset(dk, 0, sizeof(*dk));
    dk->overlay_fd = -1;
}

static int disk_range_ok(struct disk *dk, size_t len, uint64_t off, char *err, size_t errlen)
{
    if (off > dk->size || len > dk->size - off) {
        snprintf(err, errlen, "guest I/O at %llu+%zu past the disk's end %llu",
                 (unsigned long long)off, len, (unsigned long long)dk->size);
        return -1;
    }
    return 0;
}

static int disk_read_base(struct disk *dk, void *buf, size_t len, uint64_t off, char *err,
                          size_t errlen)
{
    vd_error ve = { 0 };
    if (vd_pread(dk->img, buf, len, off, &ve) < 0) {
        snprintf(err, errlen, "%s", ve.msg);
        return -1;
    }
    return 0;
}

static int disk_read_overlay(struct disk *dk, void *buf, size_t len, uint64_t off, char *err,
                             size_t errlen)
{
    ssize_t n = pread(dk->overlay_fd, buf, len, (off_t)off);
    if (n != (ssize_t)len) {
        snprintf(err, errlen, "overlay read at %llu: %s", (unsigned long long)off,
                 n < 0 ? strerror(errno) : "short read");
        return -1;
    }
    return 0;
}

int disk_read(struct disk *dk, void *buf, size_t len, uint64_t off, char *err, size_t errlen)
{
    if (disk_range_ok(dk, len, off, err, errlen) < 0)
        return -1;
    uint8_t *p = buf;
    while (len) {
        /* one run of blocks that all live in the same place */
        uint64_t blk = off / DISK_BLOCK;
        bool held = disk_held(dk, blk);
        size_t run = 0;
        while (run < len && disk_held(dk, (off + run) / DISK_BLOCK) == held) {
            size_t in_blk = DISK_BLOCK - (size_t)((off + run) % DISK_BLOCK);
            run += in_blk < len - run ? in_blk : len - run;
        }
        int rc = held ? disk_read_overlay(dk, p, run, off, err, errlen)
                      : disk_read_base(dk, p, run, off, err, errlen);
        if (rc < 0)
            return -1;
        p += run;
        off += run;
        len -= run;
    }
    return 0;
}

int disk_write(struct disk *dk, const void *buf, size_t len, uint64_t off, char *err,
               size_t errlen)
{
    if (disk_range_ok(dk, len, off, err, errlen) < 0)
        return -1;
    dk->writes++;
    const uint8_t *p = buf;
    uint8_t blockbuf[DISK_BLOCK];
    while (len) {
        uint64_t blk = off / DISK_BLOCK, bstart = blk * DISK_BLOCK;
        size_t in = (size_t)(off - bstart);
        size_t n = DISK_BLOCK - in < len ? DISK_BLOCK - in : len;
        size_t blen = bstart + DISK_BLOCK <= dk->size ? DISK_BLOCK : (size_t)(dk->size - bstart);
        if (!disk_held(dk, blk) && (in || n < blen)) {
            /* partial block: complete it from the image before it moves */
            if (disk_read_base(dk, blockbuf, blen, bstart, err, errlen) < 0)
                return -1;
            memcpy(blockbuf + in, p, n);
            if (pwrite(dk->overlay_fd, blockbuf, blen, (off_t)bstart) != (ssize_t)blen)
                goto io_fail;
        } else if (pwrite(dk->overlay_fd, p, n, (off_t)off) != (ssize_t)n) {
            goto io_fail;
        }
        dk->written[blk >> 3] |= (uint8_t)(1u << (blk & 7));
        p += n;
        off += n;
        len -= n;
    }
    return 0;
io_fail:
    snprintf(err, errlen, "overlay write at %llu: %s", (unsigned long long)off, strerror(errno));
    return -1;
}
