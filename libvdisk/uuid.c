/* uuid.c - the one UUID formatter, parser and generator of the library.
 * Formats store the 16 bytes in one of two orders: RFC 4122's (big-endian
 * fields: ext2/4, VHD, QED...) or Microsoft's GUID layout, which VirtualBox's
 * RTUUID shares (the first three fields little-endian: GPT, VHDX, VDI).
 * Text is always the usual 8-4-4-4-12 form. */
#include "vd-driver.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <sys/random.h>

/* Where the n-th byte of the text form is kept in each layout. */
static const uint8_t vd_uuid_pos[2][16] = {
    { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 },
    { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 },
};

void vd_uuid_format(const uint8_t u[16], unsigned flags, char out[37])
{
    const uint8_t *pos = vd_uuid_pos[(flags & VD_UUID_MIXED) != 0];
    const char *digits = (flags & VD_UUID_UPPER) ? "0123456789ABCDEF" : "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = digits[u[pos[i]] >> 4];
        *o++ = digits[u[pos[i]] & 15];
    }
    *o = 0;
}

static int vd_uuid_hex(int c)
{
    return isdigit(c) ? c - '0' : isxdigit(c) ? tolower(c) - 'a' + 10 : -1;
}

int vd_uuid_parse(const char *s, unsigned flags, uint8_t u[16])
{
    const uint8_t *pos = vd_uuid_pos[(flags & VD_UUID_MIXED) != 0];
    uint8_t v[16];
    bool brace = *s == '{';
    s += brace;
    for (int i = 0; i < 16; i++) {
        if ((i == 4 || i == 6 || i == 8 || i == 10) && *s++ != '-')
            return -EINVAL;
        int hi = vd_uuid_hex((unsigned char)s[0]);
        int lo = hi < 0 ? -1 : vd_uuid_hex((unsigned char)s[1]);
        if (lo < 0)
            return -EINVAL;
        v[pos[i]] = (uint8_t)(hi << 4 | lo);
        s += 2;
    }
    if ((brace && *s++ != '}') || *s)
        return -EINVAL;
    memcpy(u, v, 16);
    return 0;
}

int vd_uuid_random(uint8_t u[16], unsigned flags)
{
    size_t got = 0;
    while (got < 16) {
        ssize_t n = getrandom(u + got, 16 - got, 0);
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n > 0)
            got += (size_t)n;
    }
    size_t ver = (flags & VD_UUID_MIXED) ? 7 : 6;    /* high byte of field 3 */
    u[ver] = (uint8_t)((u[ver] & 0x0f) | 0x40);      /* version 4 */
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);          /* RFC 4122 variant */
    return 0;
}
