/* raw.c - the raw format: the file is the disk.
 *
 * Reads and writes go straight to the file; holes are found with
 * SEEK_DATA/SEEK_HOLE so that conversions skip them; write-zeroes punches
 * holes.  Probing gives the lowest non-zero score: raw is what is left when
 * no other format claims the file. */
#include "vd-driver.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

static int raw_probe(const uint8_t *head, size_t len, const uint8_t *tail,
                     size_t tail_len, uint64_t file_size)
{
    (void)head; (void)len; (void)tail; (void)tail_len; (void)file_size;
    return 1;
}

static int raw_open(vd_image *img, vd_error *err)
{
    int64_t size = vd_file_size(img->file, err);
    if (size < 0)
        return (int)size;
    img->size = (uint64_t)size;
    img->priv = img;   /* no state; non-NULL marks "opened" */
    return 0;
}

static void raw_close(vd_image *img)
{
    img->priv = NULL;
}

static int raw_create(const struct vd_create_args *a, vd_error *err)
{
    const char *prealloc = vd_opt_str(a->opts, "preallocation");
    if (a->backing_file)
        return vd_set_error(err, -EINVAL, "raw: a raw image cannot have a backing file");
    if (prealloc && strcmp(prealloc, "off") && strcmp(prealloc, "falloc") &&
        strcmp(prealloc, "full"))
        return vd_set_error(err, -EINVAL, "raw: preallocation=%s: expected off, falloc or full",
                            prealloc);
    vd_file *f;
    int r = vd_file_create(a->path, &f, err);
    if (r < 0)
        return r;
    r = vd_file_truncate(f, a->size, err);
    if (r == 0 && prealloc && strcmp(prealloc, "off")) {
        if (posix_fallocate(f->fd, 0, (off_t)a->size) != 0)
            r = vd_set_errno(err, -errno, "raw: %s: fallocate", a->path);
        /* "full" would write zeroes; fallocated blocks already read as zero. */
    }
    return vd_file_create_finish(f, r, err);
}

static int raw_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err)
{
    /* A file shorter than its recorded size (truncated while open) reads as
     * zeroes past its end, as a sparse file would. */
    return vd_file_pread_zfill(img->file, buf, len, off, err);
}

static int raw_pwrite(vd_image *img, const void *buf, size_t len, uint64_t off,
                      vd_error *err)
{
    return vd_file_pwrite(img->file, buf, len, off, err);
}

static int raw_pwrite_zeroes(vd_image *img, uint64_t off, uint64_t len, unsigned flags,
                             vd_error *err)
{
    (void)flags;
    return vd_file_zero(img->file, off, len, err);
}

static int raw_discard(vd_image *img, uint64_t off, uint64_t len, vd_error *err)
{
    return vd_file_zero(img->file, off, len, err);
}

static int raw_flush(vd_image *img, vd_error *err)
{
    return vd_file_sync(img->file, err);
}

static vd_file *raw_data_file(vd_image *img)
{
    return img->file;
}

/* The file is the disk: guest offset = file offset, nothing to allocate. */
static int raw_map_for_write(vd_image *img, uint64_t off, uint64_t len, uint64_t *file_off,
                             uint64_t *mapped, vd_error *err)
{
    (void)img; (void)err;
    *file_off = off;
    *mapped = len;
    return 0;
}

/* Holes of the host file are ZERO (not UNALLOC: raw has no backing). */
static int raw_block_status(vd_image *img, uint64_t off, uint64_t len,
                            vd_extents *ext, vd_error *err)
{
    (void)err;
    uint64_t end = off + len;
    int64_t data = vd_file_seek(img->file, off, SEEK_DATA);
    if (data < 0 && errno == ENXIO)        /* only a hole till EOF */
        return vd_extents_add(ext, off, len, VD_LAYER_ZERO, 0, VD_NO_OFFSET);
    if (data < 0)                          /* no SEEK_DATA: all data */
        return vd_extents_add(ext, off, len, VD_LAYER_DATA, 0, off);
    if ((uint64_t)data > off) {
        uint64_t hole_end = (uint64_t)data < end ? (uint64_t)data : end;
        return vd_extents_add(ext, off, hole_end - off, VD_LAYER_ZERO, 0, VD_NO_OFFSET);
    }
    int64_t hole = vd_file_seek(img->file, off, SEEK_HOLE);
    uint64_t data_end = hole < 0 || (uint64_t)hole > end ? end : (uint64_t)hole;
    if (data_end <= off)
        data_end = end;
    return vd_extents_add(ext, off, data_end - off, VD_LAYER_DATA, 0, off);
}

static const char *const raw_extensions[] = { "raw", "img", "bin", "iso", NULL };
/* A raw image is its file: resizing sets the length (new space is a hole;
 * one truncate, so a crash shows the old or the new size). */
static int raw_resize(vd_image *img, uint64_t size, vd_error *err)
{
    int r = vd_file_truncate(img->file, size, err);
    if (r == 0)
        r = vd_file_sync(img->file, err);
    if (r == 0)
        img->size = size;
    return r;
}

static const vd_opt_desc raw_create_opts[] = {
    { "preallocation", "off (default, sparse), falloc or full" },
    { NULL, NULL },
};

const struct vd_driver vd_raw = {
    .name = "raw",
    .description = "raw disk image",
    .extensions = raw_extensions,
    .probe = raw_probe,
    .align = 1,
    .parallel_reads = true,
    .open = raw_open,
    .close = raw_close,
    .create = raw_create,
    .create_opts = raw_create_opts,
    .pread = raw_pread,
    .pwrite = raw_pwrite,
    .pwrite_zeroes = raw_pwrite_zeroes,
    .discard = raw_discard,
    .flush = raw_flush,
    .block_status = raw_block_status,
    .data_file = raw_data_file,
    .map_for_write = raw_map_for_write,
    .resize = raw_resize,
    .can_write = VD_CAN_NATIVE,
};
