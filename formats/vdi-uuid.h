/* vdi-uuid.h - UUIDs as VirtualBox stores them (RTUUID: the first three
 * fields little-endian, the last eight bytes as they are), formatted and
 * parsed in the usual 8-4-4-4-12 text form, and freshly made (version 4). */
#ifndef VDI_UUID_H
#define VDI_UUID_H

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

static inline bool vdi_uuid_is_null(const uint8_t u[16])
{
    static const uint8_t zero[16];
    return memcmp(u, zero, 16) == 0;
}

/* out: at least 37 bytes. */
static inline void vdi_uuid_format(const uint8_t u[16], char *out)
{
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             u[3], u[2], u[1], u[0], u[5], u[4], u[7], u[6],
             u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

static inline int vdi_uuid_hex(int c)
{
    return isdigit(c) ? c - '0' : isxdigit(c) ? (tolower(c) - 'a' + 10) : -1;
}

/* Accepts "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", optionally in braces. */
static inline int vdi_uuid_parse(const char *s, uint8_t u[16])
{
    /* byte order of the text's 16 bytes within RTUUID */
    static const uint8_t pos[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
    bool brace = *s == '{';
    s += brace;
    for (int i = 0; i < 16; i++) {
        if ((i == 4 || i == 6 || i == 8 || i == 10) && *s++ != '-')
            return -EINVAL;
        int hi = vdi_uuid_hex((unsigned char)s[0]);
        int lo = hi < 0 ? -1 : vdi_uuid_hex((unsigned char)s[1]);
        if (lo < 0)
            return -EINVAL;
        u[pos[i]] = (uint8_t)(hi << 4 | lo);
        s += 2;
    }
    if (brace && *s++ != '}')
        return -EINVAL;
    return *s ? -EINVAL : 0;
}

/* A random (version 4) UUID.  Returns 0 or -errno. */
static inline int vdi_uuid_random(uint8_t u[16])
{
    size_t got = 0;
    while (got < 16) {
        ssize_t n = getrandom(u + got, 16 - got, 0);
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n > 0)
            got += (size_t)n;
    }
    u[7] = (uint8_t)((u[7] & 0x0f) | 0x40);   /* version: high nibble of field 3 */
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);   /* RFC 4122 variant */
    return 0;
}

#endif /* VDI_UUID_H */
