/* ext2-io.c - libext2fs' I/O over libvdisk: an io_manager whose block reads
 * (and writes, on a read-write handle) are vd_pread()/vd_pwrite() calls on a
 * byte range of an image, never past its end.
 */
#include "ext2-internal.h"
#include "vd-driver.h"   /* checked arithmetic */

#include <stdlib.h>
#include <string.h>

/* The byte range an io_channel reads (and writes, when rw). */
struct e2v_range {
    vd_image *img;
    uint64_t off, len;
    bool rw;
};

/* ext2fs_open2() calls the manager's open() synchronously in the calling
 * thread; the range to use is handed over in this thread-local variable
 * rather than encoded into the name string. */
static __thread struct e2v_range *e2v_pending;

static errcode_t e2v_io_open(const char *name, int flags, io_channel *channel);

static errcode_t e2v_io_close(io_channel ch)
{
    if (--ch->refcount > 0)
        return 0;
    free(ch->private_data);
    free(ch->name);
    free(ch);
    return 0;
}

static errcode_t e2v_io_set_blksize(io_channel ch, int blksize)
{
    if (blksize <= 0)
        return EXT2_ET_INVALID_ARGUMENT;
    ch->block_size = blksize;
    return 0;
}

/* The byte offset and size in the range of `count` blocks at `block` (count
 * < 0 means -count bytes); false when they leave the range. */
static bool e2v_io_span(io_channel ch, unsigned long long block, int count,
                        uint64_t *off, uint64_t *size)
{
    struct e2v_range *r = ch->private_data;
    uint64_t end;
    *size = count < 0 ? (uint64_t)-(int64_t)count : (uint64_t)count * (uint64_t)ch->block_size;
    return !vd_mul_overflow(block, ch->block_size, off) &&
           !vd_add_overflow(*off, *size, &end) && end <= r->len;
}

static errcode_t e2v_io_read_blk64(io_channel ch, unsigned long long block, int count,
                                   void *data)
{
    struct e2v_range *r = ch->private_data;
    uint64_t off, size;
    if (!e2v_io_span(ch, block, count, &off, &size)) {
        /* A corrupt block pointer past the file system's range: fail the read
         * (zero-filled) instead of reading the partition after it. */
        memset(data, 0, size);
        return EXT2_ET_SHORT_READ;
    }
    if (vd_pread(r->img, data, size, r->off + off, NULL) < 0)
        return EIO;
    return 0;
}

static errcode_t e2v_io_read_blk(io_channel ch, unsigned long block, int count,
                                 void *data)
{
    return e2v_io_read_blk64(ch, block, count, data);
}

static errcode_t e2v_io_write_blk64(io_channel ch, unsigned long long block,
                                    int count, const void *data)
{
    struct e2v_range *r = ch->private_data;
    uint64_t off, size;
    if (!r->rw)
        return EROFS;
    if (!e2v_io_span(ch, block, count, &off, &size))
        return EXT2_ET_SHORT_WRITE;   /* never write past the file system's range */
    if (vd_pwrite(r->img, data, size, r->off + off, NULL) < 0)
        return EIO;
    return 0;
}

static errcode_t e2v_io_write_blk(io_channel ch, unsigned long block, int count,
                                  const void *data)
{
    return e2v_io_write_blk64(ch, block, count, data);
}

/* ext2fs_flush() ends with this.  Nothing to do: its writes are already
 * vd_pwrite()s on the image; making them durable (vd_flush) is the
 * caller's choice, on fsync, not on every close. */
static errcode_t e2v_io_flush(io_channel ch)
{
    (void)ch;
    return 0;
}

static errcode_t e2v_io_set_option(io_channel ch, const char *option, const char *arg)
{
    (void)ch; (void)option; (void)arg;
    return EXT2_ET_INVALID_ARGUMENT;
}

static struct struct_io_manager e2v_io_manager = {
    .magic = EXT2_ET_MAGIC_IO_MANAGER,
    .name = "libvdisk I/O manager",
    .open = e2v_io_open,
    .close = e2v_io_close,
    .set_blksize = e2v_io_set_blksize,
    .read_blk = e2v_io_read_blk,
    .write_blk = e2v_io_write_blk,
    .flush = e2v_io_flush,
    .set_option = e2v_io_set_option,
    .read_blk64 = e2v_io_read_blk64,
    .write_blk64 = e2v_io_write_blk64,
};

static errcode_t e2v_io_open(const char *name, int flags, io_channel *channel)
{
    if (!e2v_pending || ((flags & IO_FLAG_RW) && !e2v_pending->rw))
        return EXT2_ET_BAD_DEVICE_NAME;
    io_channel ch = calloc(1, sizeof *ch);
    struct e2v_range *r = malloc(sizeof *r);
    char *n = strdup(name ? name : "vdisk");
    if (!ch || !r || !n) {
        free(ch);
        free(r);
        free(n);
        return EXT2_ET_NO_MEMORY;
    }
    *r = *e2v_pending;
    ch->magic = EXT2_ET_MAGIC_IO_CHANNEL;
    ch->manager = &e2v_io_manager;
    ch->name = n;
    ch->block_size = 1024;
    ch->refcount = 1;
    ch->private_data = r;
    *channel = ch;
    return 0;
}

errcode_t e2v_io_fs_open(const char *name, vd_image *img, uint64_t off, uint64_t len, bool rw,
                         ext2_filsys *fs)
{
    struct e2v_range r = { img, off, len, rw };
    e2v_pending = &r;
    errcode_t e = ext2fs_open2(name, NULL, EXT2_FLAG_64BITS | (rw ? EXT2_FLAG_RW : 0), 0, 0,
                               &e2v_io_manager, fs);
    e2v_pending = NULL;
    return e;
}
