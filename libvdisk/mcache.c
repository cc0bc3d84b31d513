/* mcache.c - the one cache of on-disk metadata tables (qcow2 L2 tables and
 * refcount blocks, qcow/QED L2 tables, VMDK grain tables): LRU over a fixed
 * number of slots, so that a driver's memory stays bounded however large
 * the image or however hostile its directory (every entry naming one
 * table), with write-back of dirty tables.  A pointer returned by
 * vd_mcache_get is valid until the next get on the same cache (a miss may
 * evict any slot); callers serialize access with their own lock.  Slot
 * buffers are allocated when first needed: most opens (probes, `info`, fuzz
 * inputs) touch a few tables and should not zero megabytes. */
#include "vd-driver.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

int vd_mcache_init(vd_mcache *c, vd_file *f, size_t table_bytes, size_t budget,
                   size_t min_slots, size_t max_slots, const char *what)
{
    size_t n = table_bytes ? budget / table_bytes : 0;
    if (n > max_slots)                /* a miss scans every slot */
        n = max_slots;
    if (n < min_slots)
        n = min_slots;
    memset(c, 0, sizeof *c);
    c->slots = calloc(n ? n : 1, sizeof *c->slots);
    if (!c->slots)
        return -ENOMEM;
    c->file = f;
    c->n = n;
    c->table_bytes = table_bytes;
    c->what = what;
    return 0;
}

void vd_mcache_free(vd_mcache *c)
{
    for (size_t i = 0; c->slots && i < c->used; i++)
        free(c->slots[i].data);
    free(c->slots);
    c->slots = NULL;
    c->n = c->used = 0;
}

static int vd_mcache_write_slot(vd_mcache *c, vd_mcache_slot *sl, vd_error *err)
{
    size_t lo = sl->dirty_lo, n = sl->dirty_hi - sl->dirty_lo;
    int r = vd_file_pwrite(c->file, sl->data + lo, n, sl->off + lo, err);
    if (r == 0 && sl->copy_off)
        r = vd_file_pwrite(c->file, sl->data + lo, n, sl->copy_off + lo, err);
    if (r == 0) {
        sl->dirty = false;
        sl->dirty_lo = sl->dirty_hi = 0;
    }
    return r;
}

int vd_mcache_flush(vd_mcache *c, vd_error *err)
{
    bool any = false;
    for (size_t i = 0; i < c->used; i++)
        any |= c->slots[i].dirty;
    if (!any)
        return 0;
    int r = c->before_write ? c->before_write(c->ctx, err) : 0;
    for (size_t i = 0; r == 0 && i < c->used; i++)
        if (c->slots[i].dirty)
            r = vd_mcache_write_slot(c, &c->slots[i], err);
    return r;
}

static void vd_mcache_hit(vd_mcache *c, size_t i, bool load, uint8_t **data, size_t *slot)
{
    c->slots[i].lru = ++c->tick;
    c->last = i;
    *data = c->slots[i].data;
    *slot = i;
    if (!load)
        memset(*data, 0, c->table_bytes);
}

int vd_mcache_get(vd_mcache *c, uint64_t off, uint8_t **data, size_t *slot, bool load,
                  vd_error *err)
{
    if (c->last < c->used && c->slots[c->last].off == off) {
        vd_mcache_hit(c, c->last, load, data, slot);
        return 0;
    }
    size_t victim = 0;
    for (size_t i = 0; i < c->used; i++) {
        if (c->slots[i].off == off) {
            vd_mcache_hit(c, i, load, data, slot);
            return 0;
        }
        if (c->slots[i].lru < c->slots[victim].lru)
            victim = i;
    }
    if (c->used < c->n) {             /* not full yet: a new slot */
        uint8_t *d = malloc(c->table_bytes);
        if (!d)
            return vd_set_error(err, -ENOMEM, "%s: out of memory for the %s cache",
                                c->file->path, c->what);
        victim = c->used++;
        c->slots[victim] = (vd_mcache_slot){ .data = d };
    }
    vd_mcache_slot *sl = &c->slots[victim];
    /* A dirty victim writes back every dirty table: one before_write (a
     * sync, for VMDK) for all of them, not one per eviction. */
    int r = sl->dirty ? vd_mcache_flush(c, err) : 0;
    if (r < 0)
        return r;
    sl->off = 0;
    sl->copy_off = 0;
    sl->dirty_lo = sl->dirty_hi = 0;
    if (load) {
        r = vd_file_pread(c->file, sl->data, c->table_bytes, off, err);
        if (r < 0)
            return vd_set_error(err, r, "%s: cannot read %s at 0x%" PRIx64 ": %s",
                                c->file->path, c->what, off, err ? err->msg : "");
    } else {
        memset(sl->data, 0, c->table_bytes);
    }
    sl->off = off;
    sl->lru = ++c->tick;
    c->last = victim;
    *data = sl->data;
    *slot = victim;
    return 0;
}

void vd_mcache_mark_dirty(vd_mcache *c, size_t slot, uint64_t copy_off)
{
    c->slots[slot].dirty = true;
    c->slots[slot].copy_off = copy_off;
    c->slots[slot].dirty_lo = 0;
    c->slots[slot].dirty_hi = c->table_bytes;
}

void vd_mcache_mark_dirty_range(vd_mcache *c, size_t slot, size_t lo, size_t hi)
{
    vd_mcache_slot *sl = &c->slots[slot];
    if (!sl->dirty) {
        sl->dirty_lo = lo;
        sl->dirty_hi = hi;
    } else {
        sl->dirty_lo = lo < sl->dirty_lo ? lo : sl->dirty_lo;
        sl->dirty_hi = hi > sl->dirty_hi ? hi : sl->dirty_hi;
    }
    sl->dirty = true;
}

void vd_mcache_drop(vd_mcache *c, uint64_t off)
{
    for (size_t i = 0; i < c->used; i++) {
        if (c->slots[i].off == off || off == UINT64_MAX) {
            c->slots[i].off = 0;
            c->slots[i].dirty = false;
            c->slots[i].dirty_lo = c->slots[i].dirty_hi = 0;
            c->slots[i].lru = 0;
        }
    }
}

int vd_array_reserve(void *arrp, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 2 / elem)
            return -ENOMEM;
        n *= 2;
    }
    void *old;
    memcpy(&old, arrp, sizeof old);   /* arrp is a T **: no aliasing cast */
    void *p = realloc(old, n * elem);
    if (!p)
        return -ENOMEM;
    memcpy(arrp, &p, sizeof p);
    *cap = n;
    return 0;
}
