/* vdi-uuid.h - UUIDs as VirtualBox stores them (RTUUID: the first three
 * fields little-endian, the last eight bytes as they are), through the
 * library's one UUID helper (libvdisk/uuid.c). */
#ifndef VDI_UUID_H
#define VDI_UUID_H

#include "vd-driver.h"

static inline bool vdi_uuid_is_null(const uint8_t u[16])
{
    return vd_is_zero(u, 16);
}

/* out: at least 37 bytes. */
static inline void vdi_uuid_format(const uint8_t u[16], char *out)
{
    vd_uuid_format(u, VD_UUID_MIXED, out);
}

/* Accepts "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", optionally in braces. */
static inline int vdi_uuid_parse(const char *s, uint8_t u[16])
{
    return vd_uuid_parse(s, VD_UUID_MIXED, u);
}

/* A random (version 4) UUID.  Returns 0 or -errno. */
static inline int vdi_uuid_random(uint8_t u[16])
{
    return vd_uuid_random(u, VD_UUID_MIXED);
}

#endif /* VDI_UUID_H */
