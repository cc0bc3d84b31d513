/* io.c - guest-view I/O: bounds, locking, alignment (head/body/tail with
 * read-modify-write), emulated zeroing, and block status merged across the
 * backing chain. */
#include "vd-driver.h"
#include "vd-internal.h"

#include <errno.h>
#include <stdlib.h>

static int vd_check_range(vd_image *img, uint64_t off, uint64_t len, const char *what,
                          vd_error *err)
{
    uint64_t end;
    if (vd_add_overflow(off, len, &end) || end > img->size)
        return vd_set_error(err, -EINVAL,
                            "%s: %s of 0x%llx bytes at 0x%llx is beyond the virtual size 0x%llx",
                            img->path, what, (unsigned long long)len,
                            (unsigned long long)off, (unsigned long long)img->size);
    return 0;
}

static void vd_lock_read(vd_image *img)
{
    if (img->drv->parallel_reads)
        pthread_rwlock_rdlock(&img->lock);
    else
        pthread_rwlock_wrlock(&img->lock);
}

static void vd_unlock(vd_image *img)
{
    pthread_rwlock_unlock(&img->lock);
}

static uint32_t vd_align(vd_image *img)
{
    return img->drv->align ? img->drv->align : 1;
}

/* One piece of a request [off, off+len), as drivers must see it: either a
 * run of whole aligned blocks (`whole`: the driver is called on it directly;
 * a run may end unaligned at the virtual size, which drivers accept), or
 * the part of one block that the request covers (`whole` false: the block
 * [bstart, bstart+blen), clipped to the virtual size, goes through a bounce
 * buffer and the request's bytes are at `skip`). */
struct vd_piece {
    bool whole;
    size_t len;            /* bytes of the request this piece covers */
    uint64_t bstart;
    size_t blen, skip;
};

static struct vd_piece vd_next_piece(vd_image *img, uint64_t off, size_t len)
{
    uint32_t a = vd_align(img);
    struct vd_piece pc = { .whole = true, .len = len };
    if (off % a == 0 && (len % a == 0 || off + len == img->size))
        return pc;
    if (off % a == 0 && len >= a) {
        pc.len = len / a * a;
        return pc;
    }
    pc.whole = false;
    pc.bstart = off / a * a;
    uint64_t end = pc.bstart + a < img->size ? pc.bstart + a : img->size;
    pc.blen = (size_t)(end - pc.bstart);
    pc.skip = (size_t)(off - pc.bstart);
    pc.len = pc.blen - pc.skip < len ? pc.blen - pc.skip : len;
    return pc;
}

static int vd_driver_pread(vd_image *img, void *buf, size_t len, uint64_t off,
                           vd_error *err)
{
    int r = img->drv->pread(img, buf, len, off, err);
    if (r < 0)
        vd_error_prefix(err, img->path);
    return r < 0 ? r : 0;
}

static int vd_driver_pwrite(vd_image *img, const void *buf, size_t len, uint64_t off,
                            vd_error *err)
{
    int r = img->drv->pwrite(img, buf, len, off, err);
    if (r < 0)
        vd_error_prefix(err, img->path);
    return r < 0 ? r : 0;
}

/* A read or write split into the pieces drivers see (vd_next_piece): whole
 * blocks go to the driver as they are, a partial block through `bounce`
 * (allocated at the first), read for a read, read-modify-written for a
 * write. */
struct vd_aligned_io {
    bool write;
    uint8_t *bounce;
};

static int vd_aligned_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    struct vd_aligned_io *io = ctx;
    struct vd_piece pc = vd_next_piece(img, pt->off, (size_t)pt->n);
    pt->n = pc.len;
    if (pc.whole)
        return io->write ? vd_driver_pwrite(img, pt->p, pc.len, pt->off, err)
                         : vd_driver_pread(img, pt->p, pc.len, pt->off, err);
    if (!io->bounce && !(io->bounce = malloc(vd_align(img))))
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vd_driver_pread(img, io->bounce, pc.blen, pc.bstart, err);
    if (r < 0)
        return r;
    if (!io->write) {
        memcpy(pt->p, io->bounce + pc.skip, pc.len);
        return 0;
    }
    memcpy(io->bounce + pc.skip, pt->p, pc.len);
    return vd_driver_pwrite(img, io->bounce, pc.blen, pc.bstart, err);
}

static int vd_aligned_io(vd_image *img, void *buf, size_t len, uint64_t off, bool write,
                         vd_error *err)
{
    struct vd_aligned_io io = { write, NULL };
    int r = vd_walk(img, buf, off, len, 0, vd_aligned_part, &io, err);
    free(io.bounce);
    return r;
}

/* Read with the lock held. */
static int vd_pread_locked(vd_image *img, void *buf, size_t len, uint64_t off,
                           vd_error *err)
{
    return vd_aligned_io(img, buf, len, off, false, err);
}

int vd_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err)
{
    int r = vd_check_range(img, off, len, "read", err);
    if (r < 0 || !len)
        return r;
    vd_lock_read(img);
    r = vd_pread_locked(img, buf, len, off, err);
    vd_unlock(img);
    return r;
}

int vd_backing_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err)
{
    vd_image *b = img->backing;
    size_t n = 0;
    if (b && off < b->size) {
        n = b->size - off < len ? (size_t)(b->size - off) : len;
        int r = vd_pread(b, buf, n, off, err);
        if (r < 0)
            return r;
    }
    if (n < len)
        memset((char *)buf + n, 0, len - n);
    return 0;
}

static int vd_writable(vd_image *img, vd_error *err)
{
    if (img->readonly)
        return vd_set_error(err, -EROFS, "%s: image is open read-only", img->path);
    if (!img->drv->pwrite)
        return vd_set_error(err, -ENOTSUP, "%s: format %s cannot be written",
                            img->path, img->drv->name);
    return 0;
}

/* Write with the write lock held (vd_walk only reads a write's buffer). */
static int vd_pwrite_locked(vd_image *img, const void *buf, size_t len, uint64_t off,
                            vd_error *err)
{
    return vd_aligned_io(img, (void *)buf, len, off, true, err);
}

int vd_pwrite(vd_image *img, const void *buf, size_t len, uint64_t off, vd_error *err)
{
    int r = vd_writable(img, err);
    if (r < 0)
        return r;
    r = vd_check_range(img, off, len, "write", err);
    if (r < 0 || !len)
        return r;
    pthread_rwlock_wrlock(&img->lock);
    r = vd_pwrite_locked(img, buf, len, off, err);
    pthread_rwlock_unlock(&img->lock);
    return r;
}

int vd_pwrite_zeroes(vd_image *img, uint64_t off, uint64_t len, unsigned flags,
                     vd_error *err)
{
    int r = vd_writable(img, err);
    if (r < 0)
        return r;
    r = vd_check_range(img, off, len, "write-zeroes", err);
    if (r < 0 || !len)
        return r;
    pthread_rwlock_wrlock(&img->lock);
    uint32_t a = vd_align(img);
    if (!img->drv->pwrite_zeroes) {
        r = vd_zero_by_writing(img, off, len, vd_pwrite_locked, err);
        goto out;
    }
    uint64_t end = off + len;
    uint64_t astart = vd_round_up(off, a);
    uint64_t aend = end == img->size ? end : end / a * a;
    if (astart >= aend) {
        r = vd_zero_by_writing(img, off, len, vd_pwrite_locked, err);
        goto out;
    }
    if (astart > off && (r = vd_zero_by_writing(img, off, astart - off, vd_pwrite_locked, err)) < 0)
        goto out;
    r = img->drv->pwrite_zeroes(img, astart, aend - astart, flags, err);
    if (r < 0) {
        vd_error_prefix(err, img->path);
        goto out;
    }
    r = 0;
    if (aend < end)
        r = vd_zero_by_writing(img, aend, end - aend, vd_pwrite_locked, err);
out:
    pthread_rwlock_unlock(&img->lock);
    return r;
}

/* The bytes of the last allocation unit past the guest view, [from, to):
 * the driver is let at them by raising the size to `to` meanwhile (its
 * tables map the whole unit), and only pieces that do not read as zeroes
 * are written, so an unallocated unit stays unallocated. */
int vd_zero_past_end_locked(vd_image *img, uint64_t from, uint64_t to, vd_error *err)
{
    if (from >= to)
        return 0;
    size_t chunk = to - from < (1u << 20) ? (size_t)(to - from) : 1u << 20;   /* 1 MiB pieces */
    uint8_t *buf = malloc(chunk);
    if (!buf)
        return vd_set_error(err, -ENOMEM, "out of memory");
    uint64_t size = img->size;
    img->size = to;
    int r = 0;
    for (uint64_t off = from; r == 0 && off < to; off += chunk) {
        size_t n = to - off < chunk ? (size_t)(to - off) : chunk;
        r = vd_pread_locked(img, buf, n, off, err);
        if (r == 0 && !vd_is_zero(buf, n)) {
            memset(buf, 0, n);
            r = vd_pwrite_locked(img, buf, n, off, err);
        }
    }
    img->size = size;
    free(buf);
    return r;
}

int vd_discard(vd_image *img, uint64_t off, uint64_t len, vd_error *err)
{
    int r = vd_writable(img, err);
    if (r < 0)
        return r;
    r = vd_check_range(img, off, len, "discard", err);
    if (r < 0 || !len || !img->drv->discard)
        return r;
    /* Discard is advisory: only whole aligned blocks are passed on. */
    uint32_t a = vd_align(img);
    uint64_t astart = vd_round_up(off, a);
    uint64_t end = off + len;
    uint64_t aend = end == img->size ? end : end / a * a;
    if (astart >= aend)
        return 0;
    pthread_rwlock_wrlock(&img->lock);
    r = img->drv->discard(img, astart, aend - astart, err);
    pthread_rwlock_unlock(&img->lock);
    if (r < 0)
        vd_error_prefix(err, img->path);
    return r < 0 ? r : 0;
}

int vd_flush(vd_image *img, vd_error *err)
{
    if (img->readonly)
        return 0;
    pthread_rwlock_wrlock(&img->lock);
    int r = img->drv->flush ? img->drv->flush(img, err) : vd_file_sync(img->file, err);
    pthread_rwlock_unlock(&img->lock);
    if (r < 0)
        vd_error_prefix(err, img->path);
    return r < 0 ? r : 0;
}

bool vd_can_compress(vd_image *img)
{
    return img->drv->pwrite_compressed && !img->readonly && img->cluster_size;
}

int vd_pwrite_compressed(vd_image *img, const void *buf, size_t len, uint64_t off,
                         vd_error *err)
{
    int r = vd_writable(img, err);
    if (r < 0)
        return r;
    if (!img->drv->pwrite_compressed || !img->cluster_size)
        return vd_set_error(err, -ENOTSUP, "%s: format %s cannot store compressed data",
                            img->path, img->drv->name);
    r = vd_check_range(img, off, len, "compressed write", err);
    if (r < 0 || !len)
        return r;
    uint32_t unit = img->cluster_size;
    /* A short piece is allowed only in the disk's last cluster (a source a
     * little smaller than the rounded-up target ends there). */
    if (off % unit || (len % unit && off + len <= (img->size - 1) / unit * unit))
        return vd_set_error(err, -EINVAL,
                            "%s: compressed write of 0x%zx bytes at 0x%llx is not whole %u-byte clusters",
                            img->path, len, (unsigned long long)off, unit);
    /* No lock here: the driver compresses unlocked (so that threads compress
     * in parallel) and takes img->lock for writing around its updates. */
    r = img->drv->pwrite_compressed(img, buf, len, off, err);
    if (r < 0)
        vd_error_prefix(err, img->path);
    return r < 0 ? r : 0;
}

int vd_data_fd(vd_image *img, int depth)
{
    while (img && depth-- > 0)
        img = img->backing;
    if (!img || depth != -1 || !img->drv->data_file)
        return -1;
    vd_file *f = img->drv->data_file(img);
    return f && !f->win ? f->fd : -1;   /* a window's offsets are not the fd's */
}

bool vd_can_map_for_write(vd_image *img)
{
    return !img->readonly && img->drv->map_for_write && img->drv->data_file &&
           img->drv->data_file(img);
}

int vd_map_for_write(vd_image *img, uint64_t off, uint64_t len, uint64_t *file_off,
                     uint64_t *mapped, vd_error *err)
{
    int r = vd_writable(img, err);
    if (r < 0)
        return r;
    if (!img->drv->map_for_write || !img->drv->data_file || !img->drv->data_file(img))
        return vd_set_error(err, -ENOTSUP, "%s: format %s cannot map ranges for writing",
                            img->path, img->drv->name);
    r = vd_check_range(img, off, len, "mapped write", err);
    if (r < 0)
        return r;
    uint32_t unit = img->cluster_size ? img->cluster_size : 1;
    if (!len || off % unit || (len % unit && off + len != img->size))
        return vd_set_error(err, -EINVAL,
                            "%s: mapped write of 0x%llx bytes at 0x%llx is not whole %u-byte clusters",
                            img->path, (unsigned long long)len, (unsigned long long)off, unit);
    pthread_rwlock_wrlock(&img->lock);
    r = img->drv->map_for_write(img, off, len, file_off, mapped, err);
    pthread_rwlock_unlock(&img->lock);
    if (r < 0)
        vd_error_prefix(err, img->path);
    else if (!*mapped || *mapped > len)
        r = vd_set_error(err, -EIO, "%s: driver mapped 0x%llx of 0x%llx bytes", img->path,
                         (unsigned long long)*mapped, (unsigned long long)len);
    return r < 0 ? r : 0;
}

/* Most extents one vd_block_status call adds before returning. */
#define VD_STATUS_MAX_EXTENTS 4096

static int vd_block_status_depth(vd_image *img, uint64_t off, uint64_t len,
                                 vd_extents *ext, int depth, vd_error *err);

/* Translate one layer extent into guest-view extents. */
static int vd_status_merge_one(vd_image *img, const vd_extent *le, vd_extents *ext,
                               int depth, vd_error *err)
{
    if (le->flags & VD_LAYER_DATA)
        return vd_extents_add(ext, le->off, le->len,
                              VD_EXT_DATA | (le->flags & VD_EXT_COMPRESSED),
                              depth, le->file_off);
    if (le->flags & VD_LAYER_ZERO)
        return vd_extents_add(ext, le->off, le->len, VD_EXT_ZERO, depth, VD_NO_OFFSET);
    /* Unallocated here: the backing chain answers, or nobody. */
    vd_image *b = img->backing;
    uint64_t off = le->off, len = le->len;
    while (b && off < b->size && len) {
        uint64_t n = b->size - off < len ? b->size - off : len;
        size_t before = ext->n;
        uint64_t covered_end = off;
        int r = vd_block_status_depth(b, off, n, ext, depth + 1, err);
        if (r < 0)
            return r;
        if (ext->n > before)
            covered_end = ext->v[ext->n - 1].off + ext->v[ext->n - 1].len;
        else if (before)
            covered_end = ext->v[before - 1].off + ext->v[before - 1].len;
        if (covered_end <= off)
            return vd_set_error(err, -EIO, "%s: block status made no progress at 0x%llx",
                                b->path, (unsigned long long)off);
        len -= covered_end - off;
        off = covered_end;
    }
    if (len)
        return vd_extents_add(ext, off, len, VD_EXT_ZERO | VD_EXT_HOLE, -1, VD_NO_OFFSET);
    return 0;
}

static int vd_block_status_depth(vd_image *img, uint64_t off, uint64_t len,
                                 vd_extents *ext, int depth, vd_error *err)
{
    vd_extents layer;
    vd_extents_init(&layer);
    int r = 0;
    uint64_t end = off + len;
    size_t start_n = ext->n;
    while (off < end && ext->n - start_n < VD_STATUS_MAX_EXTENTS) {
        vd_extents_clear(&layer);
        if (img->drv->block_status) {
            vd_lock_read(img);
            r = img->drv->block_status(img, off, end - off, &layer, err);
            vd_unlock(img);
            if (r < 0) {
                vd_error_prefix(err, img->path);
                break;
            }
        } else {
            r = vd_extents_add(&layer, off, end - off, VD_LAYER_DATA, 0, VD_NO_OFFSET);
            if (r < 0)
                break;
        }
        if (!layer.n || layer.v[0].off != off) {
            r = vd_set_error(err, -EIO, "%s: driver block status did not start at 0x%llx",
                             img->path, (unsigned long long)off);
            break;
        }
        for (size_t i = 0; i < layer.n && off < end; i++) {
            vd_extent le = layer.v[i];
            if (le.off != off)
                break;
            if (le.off + le.len > end)
                le.len = end - le.off;
            r = vd_status_merge_one(img, &le, ext, depth, err);
            if (r < 0)
                goto out;
            off += le.len;
        }
    }
out:
    vd_extents_free(&layer);
    return r;
}

int vd_block_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                    vd_error *err)
{
    int r = vd_check_range(img, off, len, "block status", err);
    if (r < 0 || !len)
        return r;
    return vd_block_status_depth(img, off, len, ext, 0, err);
}
