/* utf16.c - UTF-16 <-> UTF-8 for the names formats store as UTF-16: VHD and
 * VHDX parent locators, the VHD parent name, the VHDX creator field, GPT
 * partition names.  One strict converter: a name that is not valid text is
 * reported where it breaks instead of being patched with '?' into a path
 * that names some other file. */
#include "vd-driver.h"

#include <errno.h>
#include <stdlib.h>

static uint32_t vd_utf16_unit(const uint8_t *p, unsigned flags)
{
    return flags & VD_UTF16_BE ? vd_be16(p) : vd_le16(p);
}

static void vd_utf16_put_unit(uint8_t *p, uint32_t u, unsigned flags)
{
    if (flags & VD_UTF16_BE)
        vd_put_be16(p, (uint16_t)u);
    else
        vd_put_le16(p, (uint16_t)u);
}

int vd_utf16_decode(const uint8_t *p, size_t bytes, unsigned flags, char **out, size_t *bad)
{
    *out = NULL;
    if (bytes % 2) {
        if (bad)
            *bad = bytes - 1;
        return -EILSEQ;
    }
    /* Each unit gives at most 3 bytes (a pair, 2 units, gives 4). */
    char *s = malloc(bytes / 2 * 3 + 1), *o = s;
    if (!s)
        return -ENOMEM;
    for (size_t i = 0; i < bytes; i += 2) {
        uint32_t c = vd_utf16_unit(p + i, flags);
        if (!c)
            break;
        if (c >= 0xd800 && c < 0xe000) {
            uint32_t lo = i + 3 < bytes ? vd_utf16_unit(p + i + 2, flags) : 0;
            if (c >= 0xdc00 || lo < 0xdc00 || lo >= 0xe000) {
                free(s);
                if (bad)
                    *bad = i;
                return -EILSEQ;
            }
            c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
            i += 2;
        }
        if (c < 0x80) {
            *o++ = (char)c;
        } else if (c < 0x800) {
            *o++ = (char)(0xc0 | c >> 6);
            *o++ = (char)(0x80 | (c & 0x3f));
        } else if (c < 0x10000) {
            *o++ = (char)(0xe0 | c >> 12);
            *o++ = (char)(0x80 | ((c >> 6) & 0x3f));
            *o++ = (char)(0x80 | (c & 0x3f));
        } else {
            *o++ = (char)(0xf0 | c >> 18);
            *o++ = (char)(0x80 | ((c >> 12) & 0x3f));
            *o++ = (char)(0x80 | ((c >> 6) & 0x3f));
            *o++ = (char)(0x80 | (c & 0x3f));
        }
    }
    *o = 0;
    *out = s;
    return 0;
}

/* The code point of the UTF-8 sequence at s (advancing *len over it), or
 * -1 when it is not one: a stray continuation byte, a truncated sequence,
 * an overlong form, a surrogate or a value past U+10FFFF. */
static int32_t vd_utf8_next(const unsigned char *s, size_t *len)
{
    uint32_t c = s[0];
    int more;
    uint32_t min;
    if (c < 0x80) {
        *len = 1;
        return (int32_t)c;
    }
    if (c >= 0xc2 && c < 0xe0) {
        more = 1, min = 0x80, c &= 0x1f;
    } else if (c >= 0xe0 && c < 0xf0) {
        more = 2, min = 0x800, c &= 0x0f;
    } else if (c >= 0xf0 && c < 0xf5) {
        more = 3, min = 0x10000, c &= 0x07;
    } else {
        return -1;
    }
    for (int k = 1; k <= more; k++) {
        if ((s[k] & 0xc0) != 0x80)      /* also stops at the NUL */
            return -1;
        c = c << 6 | (s[k] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c < 0xe000))
        return -1;
    *len = (size_t)more + 1;
    return (int32_t)c;
}

int vd_utf16_encode(const char *in, uint8_t *out, size_t cap, unsigned flags, size_t *used,
                    size_t *bad)
{
    const unsigned char *s = (const unsigned char *)in;
    size_t n = 0;
    *used = 0;
    for (size_t i = 0; s[i];) {
        size_t len;
        int32_t c = vd_utf8_next(s + i, &len);
        if (c < 0) {
            if (bad)
                *bad = i;
            return -EILSEQ;
        }
        size_t need = c >= 0x10000 ? 4 : 2;
        if (n + need > cap) {
            if (bad)
                *bad = i;
            return -ENOSPC;
        }
        if (c >= 0x10000) {
            vd_utf16_put_unit(out + n, 0xd800 + (((uint32_t)c - 0x10000) >> 10), flags);
            vd_utf16_put_unit(out + n + 2, 0xdc00 + (((uint32_t)c - 0x10000) & 0x3ff), flags);
        } else {
            vd_utf16_put_unit(out + n, (uint32_t)c, flags);
        }
        n += need;
        i += len;
    }
    *used = n;
    return 0;
}
