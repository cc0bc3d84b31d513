/* writeback.c - cache modes of an image's files (vd_open_opts.cache).
 *
 * VD_CACHE_EARLY_WRITEBACK: the kernel is asked to start writing data back
 * as soon as a window of it has been written (sync_file_range WRITE), and
 * waits for the window before the previous one to be on the disk
 * (WAIT_BEFORE), so at most about three windows are dirty at any time.  The
 * copy and the disk then work at the same time and the final fdatasync has
 * little left to do.  sync_file_range makes nothing durable by itself (no
 * metadata, no disk cache flush): the flush at the end still does that.
 * VD_CACHE_NO_SYNC: flushes do not call fdatasync (qemu's cache=unsafe).
 * VD_CACHE_SYNC_WRITES: every write is followed by fdatasync
 * (cache=writethrough).
 * VD_CACHE_DIRECT: reads bypass the page cache, as qemu's cache=none does
 * (writes too, in a writable file: direct.c).  O_DIRECT wants the buffer, the offset and
 * the length aligned (statx tells the file's alignment); the drivers read
 * headers, tables and compressed clusters at any offset into any buffer, so
 * such reads go through an aligned bounce buffer covering them.  A file
 * system that refuses O_DIRECT (at open, or later with EINVAL) is read
 * through the page cache instead: the tool says so, as the copy still works. */
#include "vd-driver.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VD_WB_WINDOW (32ull << 20)     /* bytes written per writeback request */
#define VD_DIO_BOUNCE (1u << 20)       /* largest bounce buffer of a direct read */

struct vd_writeback {
    pthread_mutex_t lock;
    uint64_t dirty, lo, hi;            /* the window being filled */
    uint64_t lo1, hi1, lo2, hi2;       /* the two windows handed over before */
};

void vd_file_set_cache(vd_file *f, unsigned cache)
{
    f->cache = cache;
    if ((cache & VD_CACHE_EARLY_WRITEBACK) && !(cache & VD_CACHE_NO_SYNC) && !f->wb) {
        f->wb = calloc(1, sizeof *f->wb);
        if (f->wb)
            pthread_mutex_init(&f->wb->lock, NULL);
        /* no memory: plain writeback, still correct */
    }
}

void vd_file_free_cache(vd_file *f)
{
    vd_file_dio_free(f);
    if (f->wb) {
        pthread_mutex_destroy(&f->wb->lock);
        free(f->wb);
        f->wb = NULL;
    }
}

void vd_file_wrote(vd_file *f, uint64_t off, uint64_t len)
{
    struct vd_writeback *w = f->wb;
    if (!w || !len)
        return;
    pthread_mutex_lock(&w->lock);
    if (!w->dirty || off < w->lo)
        w->lo = off;
    if (!w->dirty || off + len > w->hi)
        w->hi = off + len;
    w->dirty += len;
    if (w->dirty < VD_WB_WINDOW) {
        pthread_mutex_unlock(&w->lock);
        return;
    }
    uint64_t lo = w->lo, hi = w->hi, wlo = w->lo2, whi = w->hi2;
    w->lo2 = w->lo1;
    w->hi2 = w->hi1;
    w->lo1 = lo;
    w->hi1 = hi;
    w->dirty = 0;
    pthread_mutex_unlock(&w->lock);
    /* Errors are ignored: this is only a hint, the final flush reports. */
    if (whi > wlo)
        sync_file_range(f->fd, (off_t)wlo, (off_t)(whi - wlo), SYNC_FILE_RANGE_WAIT_BEFORE);
    sync_file_range(f->fd, (off_t)lo, (off_t)(hi - lo), SYNC_FILE_RANGE_WRITE);
}

void vd_note_write(vd_image *img, uint64_t file_off, uint64_t len)
{
    vd_file *f = img->drv->data_file ? img->drv->data_file(img) : img->file;
    if (f)
        vd_file_wrote(f, file_off, len);
}

int vd_file_set_direct(vd_file *f)
{
    /* Aligned reads would take in bytes outside a window (another member
     * of the archive): a window is read through the page cache. */
    if (f->win)
        return -EINVAL;
    uint32_t align = 4096;       /* what every device and file system takes */
    struct statx sx;
    if (statx(f->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
        (sx.stx_mask & STATX_DIOALIGN)) {
        if (!sx.stx_dio_offset_align)       /* no direct I/O for this file */
            return -EINVAL;
        align = sx.stx_dio_offset_align > sx.stx_dio_mem_align ? sx.stx_dio_offset_align
                                                               : sx.stx_dio_mem_align;
        if (align > VD_DIO_BOUNCE / 2)
            return -EINVAL;
    }
    if (vd_file_dio_init(f) < 0)
        return -EINVAL;
    int fl = fcntl(f->fd, F_GETFL);
    if (fl < 0 || fcntl(f->fd, F_SETFL, fl | O_DIRECT) < 0)
        return -EINVAL;
    __atomic_store_n(&f->dio_align, align, __ATOMIC_RELAXED);
    return 0;
}

/* A direct read was refused (EINVAL: an alignment the file system did not
 * announce): the file is read through the page cache from now on. */
void vd_file_drop_direct(vd_file *f)
{
    int fl = fcntl(f->fd, F_GETFL);
    if (fl >= 0)
        fcntl(f->fd, F_SETFL, fl & ~O_DIRECT);
    __atomic_store_n(&f->dio_align, 0, __ATOMIC_RELAXED);
}

ssize_t vd_file_pread_direct(vd_file *f, void *buf, size_t len, uint64_t off)
{
    uint64_t a = __atomic_load_n(&f->dio_align, __ATOMIC_RELAXED);
    if (a && ((uintptr_t)buf | off) % a == 0 && len >= a) {
        ssize_t r = pread(f->fd, buf, len / a * a, (off_t)off);
        if (r >= 0 || errno != EINVAL)
            return r;
        vd_file_drop_direct(f);
        a = 0;
    }
    if (!a)
        return pread(f->fd, buf, len, (off_t)off);
    /* The aligned range covering [off, off+len), at most VD_DIO_BOUNCE. */
    uint64_t start = off / a * a, head = off - start;
    uint64_t n = (head + len + a - 1) / a * a;
    if (n > VD_DIO_BOUNCE)
        n = VD_DIO_BOUNCE;
    void *b;
    if (posix_memalign(&b, a, n)) {
        errno = ENOMEM;
        return -1;
    }
    ssize_t r = pread(f->fd, b, n, (off_t)start);
    if (r < 0 && errno == EINVAL) {
        free(b);
        vd_file_drop_direct(f);
        return pread(f->fd, buf, len, (off_t)off);
    }
    ssize_t got = 0;
    if (r > (ssize_t)head) {
        got = r - (ssize_t)head < (ssize_t)len ? r - (ssize_t)head : (ssize_t)len;
        memcpy(buf, (char *)b + head, (size_t)got);
    }
    int keep = errno;
    free(b);
    errno = keep;
    return r < 0 ? -1 : got;
}
