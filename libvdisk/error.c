/* error.c - error reporting helpers and small utilities shared by drivers. */
#include "vd-driver.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>

size_t vd_escape_ctl(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    if (!cap)
        return 0;
    for (const unsigned char *p = (const unsigned char *)src; *p; p++) {
        char e[5];
        size_t n = 1;
        e[0] = (char)*p;
        if (*p < 0x20 || *p == 0x7f) {
            char c = *p == '\n' ? 'n' : *p == '\r' ? 'r' : *p == '\t' ? 't' : *p == 0x1b ? 'e' : 0;
            n = c ? 2u : 4u;
            if (c)
                snprintf(e, sizeof e, "\\%c", c);
            else
                snprintf(e, sizeof e, "\\x%02x", *p);
        }
        if (o + n >= cap)
            break;        /* never half an escape */
        memcpy(dst + o, e, n);
        o += n;
    }
    dst[o] = 0;
    return o;
}

/* A message is one line whatever the names in it hold: the whole formatted
 * text goes through vd_escape_ctl (format strings have no control
 * characters, so only data is changed). */
static void vd_verror(vd_error *err, int code, const char *fmt, va_list ap,
                      bool add_errno)
{
    if (!err)
        return;
    err->code = code;
    char tmp[VD_ERROR_MAX];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    if (add_errno && n >= 0 && (size_t)n < sizeof tmp)
        snprintf(tmp + n, sizeof tmp - (size_t)n, ": %s",
                 strerror(code < 0 ? -code : code));
    vd_escape_ctl(err->msg, sizeof err->msg, tmp);
}

int vd_set_error(vd_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vd_verror(err, code, fmt, ap, false);
    va_end(ap);
    return code;
}

int vd_set_errno(vd_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vd_verror(err, code, fmt, ap, true);
    va_end(ap);
    return code;
}

bool vd_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    /* Check the first 16 bytes byte-wise, then compare the buffer with itself
     * shifted by 16: if the head is zero and buf[i] == buf[i+16] for all i,
     * everything is zero.  memcmp is vectorized in glibc. */
    size_t head = len < 16 ? len : 16;
    for (size_t i = 0; i < head; i++)
        if (p[i])
            return false;
    if (len <= 16)
        return true;
    return memcmp(p, p + 16, len - 16) == 0;
}

/* A random 64 KiB cluster measures 7.997 bits per byte; text and code stay
 * far below.  Between them are already-compressed files: in a tar of
 * /usr/lib, the 64 KiB clusters at 7.9 bits or more (19 % of them) deflate
 * to 96.8 % of their size with qemu's 4 KiB window yet take 18 % of the
 * deflate time, so they are stored plain too (output 0.7 % larger).  The
 * whole buffer is counted, so a compressible part cannot hide from a
 * sample.  (A buffer that repeats a random block would compress and is
 * stored plain: larger, never wrong.) */
#define VD_INCOMPRESSIBLE_BITS 7.9

bool vd_looks_incompressible(const void *buf, size_t len)
{
    if (len < 4096)
        return false;
    const unsigned char *p = buf;
    /* Four histograms, one per byte of every 4: with one, a run of equal
     * bytes makes each increment wait for the one before (a store and a
     * reload of the same counter).  Counting 512 MiB of bench/run.sh's
     * image in 64 KiB pieces took 0.72 s instead of 2.03 s; it was 20 % of
     * the samples of raw -> streamOptimized. */
    uint32_t hist[4][256];
    memset(hist, 0, sizeof hist);
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        hist[0][p[i]]++;
        hist[1][p[i + 1]]++;
        hist[2][p[i + 2]]++;
        hist[3][p[i + 3]]++;
    }
    for (; i < len; i++)
        hist[0][p[i]]++;
    double h = 0;
    for (int b = 0; b < 256; b++)
        if ((hist[0][b] += hist[1][b] + hist[2][b] + hist[3][b])) {
            double q = (double)hist[0][b] / (double)len;
            h -= q * log2(q);
        }
    return h >= VD_INCOMPRESSIBLE_BITS;
}

const char *vd_version(void)
{
    return "0.1.0";
}
