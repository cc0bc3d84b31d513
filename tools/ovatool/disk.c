/* disk.c - converting one disk with libvdisk for import and export:
 * block-status driven (holes never read, zero ranges never written), in
 * increasing offset order (streamOptimized VMDK needs that), into a file
 * created under a temporary name and renamed when complete. */
#include "ovatool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DISK_CHUNK (4u << 20)
#define DISK_ZERO_BLOCK 65536u

/* Write `n` bytes at `off` unless a 64 KiB-aligned piece is all zero. */
static int disk_write_nonzero(vd_image *out, const char *buf, size_t n, uint64_t off,
                              vd_error *e)
{
    for (size_t q = 0; q < n;) {
        size_t m = n - q < DISK_ZERO_BLOCK ? n - q : DISK_ZERO_BLOCK;
        bool zero = true;
        for (size_t i = 0; i < m; i++)
            if (buf[q + i]) {
                zero = false;
                break;
            }
        if (!zero) {
            int r = vd_pwrite(out, buf + q, m, off + q, e);
            if (r < 0)
                return r;
        }
        q += m;
    }
    return 0;
}

static int disk_copy(vd_image *in, vd_image *out, const char *label, bool progress,
                     uint64_t *populated, vd_error *e)
{
    uint64_t data = 0;
    uint64_t size = vd_size(in), off = 0;
    char *buf = malloc(DISK_CHUNK);
    vd_extents ext;
    vd_extents_init(&ext);
    int r = buf ? 0 : -ENOMEM;
    int last_pct = -1;
    while (off < size && r == 0) {
        vd_extents_clear(&ext);
        uint64_t want = size - off < (256ull << 20) ? size - off : (256ull << 20);
        if ((r = vd_block_status(in, off, want, &ext, e)) < 0 || !ext.n)
            break;
        for (size_t i = 0; i < ext.n && r == 0; i++) {
            const vd_extent *x = &ext.v[i];
            if (x->flags & VD_EXT_ZERO)
                continue;
            data += x->len;
            for (uint64_t p = x->off; p < x->off + x->len && r == 0;) {
                size_t n = x->off + x->len - p < DISK_CHUNK ? (size_t)(x->off + x->len - p)
                                                          : DISK_CHUNK;
                r = vd_pread(in, buf, n, p, e);
                if (r == 0)
                    r = disk_write_nonzero(out, buf, n, p, e);
                p += n;
            }
        }
        off = ext.v[ext.n - 1].off + ext.v[ext.n - 1].len;
        int pct = size ? (int)(off * 100 / size) : 100;
        if (progress && pct != last_pct) {
            fprintf(stderr, "\r%s: %3d%%", label, pct);
            last_pct = pct;
        }
    }
    if (progress)
        fprintf(stderr, "\n");
    if (populated)
        *populated = data;
    vd_extents_free(&ext);
    free(buf);
    return r;
}

int disk_convert(const char *src, const char *src_fmt, const char *dst, const char *fmt,
                 const char *options, uint64_t min_size, bool progress,
                 struct disk_stats *stats, char *err, size_t errlen)
{
    uint64_t populated = 0;
    vd_error e = { 0 };
    vd_image *in = NULL, *out = NULL;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp%d", dst, (int)getpid());
    int r = vd_open(src, &(vd_open_opts){ .readonly = true, .format = src_fmt }, &in, &e);
    if (r == 0 && vd_size(in) > min_size)
        min_size = vd_size(in);
    if (r == 0)
        r = vd_create(tmp, &(vd_create_opts){ .format = fmt, .size = min_size,
                                              .options = options }, &e);
    if (r == 0)
        r = vd_open(tmp, &(vd_open_opts){ .format = fmt }, &out, &e);
    if (r == 0)
        r = disk_copy(in, out, dst, progress, &populated, &e);
    if (r == 0 && stats)
        *stats = (struct disk_stats){ .capacity = vd_size(in), .populated = populated };
    if (out) {
        int r2 = vd_close(out, r ? NULL : &e);
        if (!r)
            r = r2;
    }
    if (in)
        vd_close(in, NULL);
    if (r == 0 && rename(tmp, dst) < 0) {
        r = -errno;
        snprintf(e.msg, sizeof e.msg, "%s: rename: %s", dst, strerror(errno));
    }
    if (r < 0) {
        unlink(tmp);
        snprintf(err, errlen, "%s", e.msg);
    }
    return r;
}
