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
 * (cache=writethrough). */
#include "vd-driver.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define VD_WB_WINDOW (32ull << 20)     /* bytes written per writeback request */

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
