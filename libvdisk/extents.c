/* extents.c - the block-status accumulator (like nbdkit_add_extent). */
#include "vd-driver.h"

#include <errno.h>
#include <stdlib.h>

void vd_extents_init(vd_extents *e)
{
    e->v = NULL;
    e->n = e->cap = 0;
}

void vd_extents_free(vd_extents *e)
{
    free(e->v);
    vd_extents_init(e);
}

void vd_extents_clear(vd_extents *e)
{
    e->n = 0;
}

int vd_extents_add(vd_extents *e, uint64_t off, uint64_t len, uint32_t flags,
                   int depth, uint64_t file_off)
{
    if (len == 0)
        return 0;
    if (e->n) {
        vd_extent *last = &e->v[e->n - 1];
        bool contiguous_file =
            (last->file_off == VD_NO_OFFSET && file_off == VD_NO_OFFSET) ||
            (last->file_off != VD_NO_OFFSET && file_off != VD_NO_OFFSET &&
             last->file_off + last->len == file_off);
        if (last->off + last->len == off && last->flags == flags &&
            last->depth == depth && contiguous_file) {
            last->len += len;
            return 0;
        }
    }
    if (VD_ARRAY_RESERVE(e->v, e->cap, e->n + 1) < 0)
        return -ENOMEM;
    e->v[e->n++] = (vd_extent){ .off = off, .len = len, .flags = flags,
                                .depth = depth, .file_off = file_off };
    return 0;
}
