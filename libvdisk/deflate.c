/* deflate.c - one deflate compressor for qcow2 clusters and VMDK grains.
 *
 * Levels (vd_set_compression_level, vdconvert -o compression_level=N; 0 is
 * internal: stored blocks, for data that looks random):
 *   1-3  ISA-L igzip levels 1-3: 5-10x faster than zlib, output 10-12 %
 *        larger on compressible data (measured on 64 KiB clusters of a tar
 *        of /usr/lib: igzip 3 took 1.6 s where zlib 6 took 11.5 s, for
 *        +11 % bytes; on bench/run.sh's mixed image, where 1/8 is random,
 *        +4.8 % in all).
 *   4-9  zlib's levels for a window below 32 KiB (qcow2: qemu inflates with
 *        a 4 KiB window, which libdeflate cannot limit itself to), else
 *        libdeflate's (same format, 2-3x faster than zlib).
 * igzip limits its match distances to 2^hist_bits, so it serves qcow2's
 * 4 KiB window as well.  Inflating stays with libdeflate (format drivers):
 * on the same clusters it inflated in 0.45 s where igzip took 0.60 s and
 * zlib 1.1 s (igzip builds its tables per block). */
#include "vd-driver.h"

#include <errno.h>
#include <pthread.h>
#include <isa-l/igzip_lib.h>
#include <libdeflate.h>
#include <stdlib.h>
#include <zlib.h>

struct vd_deflater {
    int level, window_bits;
    bool zlib_wrap;
    /* one of: */
    uint8_t *isal_buf;                       /* igzip's level buffer */
    uint32_t isal_buf_len;
    z_stream zs;                             /* zlib, window < 32 KiB */
    bool zs_ready;
    struct libdeflate_compressor *ld;        /* libdeflate */
};

int vd_deflate_level(int level, int dflt)
{
    return level >= VD_DEFLATE_MIN_LEVEL && level <= VD_DEFLATE_MAX_LEVEL ? level : dflt;
}

vd_deflater *vd_deflater_new(int level, int window_bits, bool zlib_wrap)
{
    vd_deflater *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->level = level;
    d->window_bits = window_bits;
    d->zlib_wrap = zlib_wrap;
    bool ok;
    if (level == 0) {             /* stored blocks only (for random data) */
        ok = (d->ld = libdeflate_alloc_compressor(0)) != NULL;
    } else if (level <= 3) {
        d->isal_buf_len = level == 1 ? ISAL_DEF_LVL1_DEFAULT
                          : level == 2 ? ISAL_DEF_LVL2_DEFAULT : ISAL_DEF_LVL3_DEFAULT;
        ok = (d->isal_buf = malloc(d->isal_buf_len)) != NULL;
    } else if (window_bits < 15) {
        /* memLevel 8 (zlib's default), not 9: deflateReset clears a hash
         * table of 2^(memLevel + 7) entries for every cluster; at 9 that
         * cost 10 % more time for 0.02 % smaller output. */
        ok = d->zs_ready = deflateInit2(&d->zs, level, Z_DEFLATED,
                                        zlib_wrap ? window_bits : -window_bits, 8,
                                        Z_DEFAULT_STRATEGY) == Z_OK;
    } else {
        ok = (d->ld = libdeflate_alloc_compressor(level)) != NULL;
    }
    if (!ok) {
        vd_deflater_free(d);
        return NULL;
    }
    return d;
}

void vd_deflater_free(vd_deflater *d)
{
    if (!d)
        return;
    free(d->isal_buf);
    if (d->zs_ready)
        deflateEnd(&d->zs);
    if (d->ld)
        libdeflate_free_compressor(d->ld);
    free(d);
}

static size_t vd_deflate_isal(vd_deflater *d, const void *in, size_t len, void *out,
                              size_t cap)
{
    struct isal_zstream s;
    isal_deflate_stateless_init(&s);
    s.level = (uint32_t)d->level;
    s.level_buf = d->isal_buf;
    s.level_buf_size = d->isal_buf_len;
    s.hist_bits = (uint16_t)d->window_bits;
    s.gzip_flag = d->zlib_wrap ? IGZIP_ZLIB : IGZIP_DEFLATE;
    s.end_of_stream = 1;
    s.flush = NO_FLUSH;
    s.next_in = (uint8_t *)in;
    s.avail_in = (uint32_t)len;
    s.next_out = out;
    s.avail_out = (uint32_t)(cap > UINT32_MAX ? UINT32_MAX : cap);
    return isal_deflate_stateless(&s) == COMP_OK ? s.total_out : 0;
}

size_t vd_deflate(vd_deflater *d, const void *in, size_t len, void *out, size_t cap)
{
    if (len > UINT32_MAX)
        return 0;
    if (d->isal_buf)
        return vd_deflate_isal(d, in, len, out, cap);
    if (d->ld)
        return d->zlib_wrap ? libdeflate_zlib_compress(d->ld, in, len, out, cap)
                            : libdeflate_deflate_compress(d->ld, in, len, out, cap);
    if (deflateReset(&d->zs) != Z_OK)
        return 0;
    d->zs.next_in = (Bytef *)in;
    d->zs.avail_in = (uInt)len;
    d->zs.next_out = out;
    d->zs.avail_out = (uInt)(cap > UINT32_MAX ? UINT32_MAX : cap);
    return deflate(&d->zs, Z_FINISH) == Z_STREAM_END ? cap - d->zs.avail_out : 0;
}

int vd_set_compression_level(vd_image *img, int level, vd_error *err)
{
    if (level && (level < VD_DEFLATE_MIN_LEVEL || level > VD_DEFLATE_MAX_LEVEL))
        return vd_set_error(err, -EINVAL, "%s: compression level %d: expected %d to %d "
                            "(1-3 fastest, 9 smallest)", img->path, level,
                            VD_DEFLATE_MIN_LEVEL, VD_DEFLATE_MAX_LEVEL);
    img->compression_level = level;
    return 0;
}

/* libdeflate's decompressor is allocated once per thread (decompressing
 * threads are the callers': a conversion's workers), freed at thread exit;
 * allocating one per cluster cost 25 % of the time of inflating it. */
static pthread_key_t vd_inflate_key;
static pthread_once_t vd_inflate_once = PTHREAD_ONCE_INIT;

static void vd_inflate_free(void *p)
{
    libdeflate_free_decompressor(p);
}

static void vd_inflate_init_key(void)
{
    if (pthread_key_create(&vd_inflate_key, vd_inflate_free) != 0)
        vd_inflate_key = (pthread_key_t)-1;
}

int vd_inflate(const void *in, size_t in_len, void *out, size_t out_len, bool zlib_wrap,
               size_t *got)
{
    pthread_once(&vd_inflate_once, vd_inflate_init_key);
    bool keyed = vd_inflate_key != (pthread_key_t)-1;
    struct libdeflate_decompressor *d = keyed ? pthread_getspecific(vd_inflate_key) : NULL;
    if (!d) {
        if (!(d = libdeflate_alloc_decompressor()))
            return -ENOMEM;
        if (keyed && pthread_setspecific(vd_inflate_key, d) != 0) {
            libdeflate_free_decompressor(d);
            return -ENOMEM;
        }
    }
    size_t used = 0, n = 0;
    enum libdeflate_result r =
        zlib_wrap ? libdeflate_zlib_decompress_ex(d, in, in_len, out, out_len, &used, &n)
                  : libdeflate_deflate_decompress_ex(d, in, in_len, out, out_len, &used, &n);
    if (!keyed)
        libdeflate_free_decompressor(d);
    if (got)
        *got = n;
    return r == LIBDEFLATE_SUCCESS ? 0 : -EIO;
}
