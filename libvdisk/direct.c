/* direct.c - writes to a file opened with O_DIRECT (VD_CACHE_DIRECT on a
 * writable image: qemu's cache=none and directsync).
 *
 * O_DIRECT takes only writes whose offset, length and buffer are aligned.
 * Image data mostly is (whole clusters from the copy engine's aligned
 * buffers); metadata is not: a qcow2 L2 entry or refcount is 2-8 bytes, a
 * VDI map entry 4, a VHD sector bitmap 512 and its data starts 512 bytes
 * after it, and compressed clusters are packed at byte granularity.  So:
 *  - an aligned write (offset and length in whole blocks, the buffer
 *    aligned) goes straight to the file;
 *  - any other write reads the aligned blocks around it that it only partly
 *    covers, puts its bytes in, and writes the blocks back, all under one
 *    lock per file: two such writes into one block (two compressed clusters
 *    sharing a sector, a table entry beside another) would otherwise each
 *    write back the block as it was before the other;
 *  - a block that reaches past the end of the file is written through the
 *    page cache instead (a second descriptor without O_DIRECT), with exactly
 *    the caller's bytes: a whole block would make the file longer than the
 *    format says (a VHD's footer must be its last 512 bytes).  The kernel
 *    keeps the two views coherent: a direct read or write of a range first
 *    writes back and drops its cached pages.
 * An aligned write needs no lock: a write it could race with touches the
 * same bytes, which no caller does.  A block is at least a page, so a page
 * written through the cache is never shared with a direct write of other
 * bytes. */
#include "vd-driver.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VD_DIO_CHUNK (1u << 20)        /* most bytes read-modify-written at once */

struct vd_dio {
    pthread_mutex_t lock;              /* held by every write that is not aligned */
    int cached_fd;                     /* the file without O_DIRECT, or -1 */
    char *bounce;                      /* VD_DIO_CHUNK aligned bytes (under lock),
                                          kept: a new one per write was an mmap,
                                          page faults and a munmap each time */
};

int vd_file_dio_init(vd_file *f)
{
    if (f->readonly || f->dio)
        return 0;
    struct vd_dio *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    pthread_mutex_init(&d->lock, NULL);
    d->cached_fd = -1;
    f->dio = d;
    return 0;
}

void vd_file_dio_free(vd_file *f)
{
    if (!f->dio)
        return;
    if (f->dio->cached_fd >= 0)
        close(f->dio->cached_fd);
    free(f->dio->bounce);
    pthread_mutex_destroy(&f->dio->lock);
    free(f->dio);
    f->dio = NULL;
}

static int dio_pwrite_all(int fd, const char *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Read [off, off+len) into p; bytes past the end of the file are zeroes. */
static int dio_pread_all(int fd, char *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0) {
            memset(p, 0, len);
            return 0;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* Bytes at or past the last whole block of the file: through the page
 * cache, exactly as given (lock held). */
static int dio_write_cached(vd_file *f, const char *p, size_t len, uint64_t off)
{
    struct vd_dio *d = f->dio;
    if (d->cached_fd < 0) {
        char name[64];
        snprintf(name, sizeof name, "/proc/self/fd/%d", f->fd);
        d->cached_fd = open(name, O_WRONLY | O_CLOEXEC);
        if (d->cached_fd < 0)
            d->cached_fd = open(f->path, O_WRONLY | O_CLOEXEC);
        if (d->cached_fd < 0)
            return -errno;
    }
    return dio_pwrite_all(d->cached_fd, p, len, off);
}

/* The part of [off, off+len) in one block that it covers only partly
 * (lock held): read the block, copy in, write it back; or, for a block
 * that is not wholly inside the file, the bytes through the page cache. */
static int dio_partial(vd_file *f, char *bounce, uint64_t b, uint64_t whole, const char *p,
                       size_t len, uint64_t off)
{
    uint64_t start = off / b * b;
    if (start >= whole)
        return dio_write_cached(f, p, len, off);
    int r = dio_pread_all(f->fd, bounce, (size_t)b, start);
    if (r < 0)
        return r;
    memcpy(bounce + (off - start), p, len);
    return dio_pwrite_all(f->fd, bounce, (size_t)b, start);
}

/* A write that is not aligned, in offset, length or buffer: the blocks it
 * covers whole go straight to the file (from an aligned copy when the
 * buffer is not aligned), the others through dio_partial. */
static int dio_write_unaligned(vd_file *f, uint64_t b, uint64_t mem, const char *p, size_t len,
                               uint64_t off)
{
    struct vd_dio *d = f->dio;
    size_t cap = VD_DIO_CHUNK / b * b;
    int r = 0;
    struct stat st;
    pthread_mutex_lock(&d->lock);
    if (!d->bounce && posix_memalign((void **)&d->bounce, (size_t)b, cap))
        r = -ENOMEM;
    char *bounce = d->bounce;
    if (r == 0 && fstat(f->fd, &st) < 0)
        r = -errno;
    /* Blocks below this lie wholly inside the file.  Other writes only
     * make the file longer, so a block taken for one past the end may be
     * inside by now: written through the page cache, it is still right. */
    uint64_t whole = r < 0 ? 0 : (uint64_t)st.st_size / b * b;
    while (r == 0 && len) {
        size_t n;
        if (off % b || len < b) {
            n = (size_t)(b - off % b);
            if (n > len)
                n = len;
            r = dio_partial(f, bounce, b, whole, p, n, off);
        } else {
            n = len / b * b < cap ? (size_t)(len / b * b) : cap;
            if ((uintptr_t)p % mem == 0) {
                r = dio_pwrite_all(f->fd, p, n, off);
            } else {
                memcpy(bounce, p, n);
                r = dio_pwrite_all(f->fd, bounce, n, off);
            }
        }
        if (r == -EINVAL)            /* an alignment the file system did not announce */
            break;
        p += n;
        off += n;
        len -= n;
    }
    pthread_mutex_unlock(&d->lock);
    if (r == -EINVAL) {
        vd_file_drop_direct(f);
        r = dio_pwrite_all(f->fd, p, len, off);
    }
    return r;
}

int vd_file_pwrite_direct(vd_file *f, const void *buf, size_t len, uint64_t off)
{
    uint64_t b = __atomic_load_n(&f->dio_align, __ATOMIC_RELAXED);
    if (!b || !f->dio)
        return dio_pwrite_all(f->fd, buf, len, off);
    uint64_t mem = b;
    if (b < 4096)
        b = 4096;
    if ((off | len) % b == 0 && (uintptr_t)buf % mem == 0) {
        int r = dio_pwrite_all(f->fd, buf, len, off);
        if (r != -EINVAL)
            return r;
        vd_file_drop_direct(f);
        return dio_pwrite_all(f->fd, buf, len, off);
    }
    return dio_write_unaligned(f, b, mem, buf, len, off);
}
