/* cache.c - a small LRU cache of whole metadata clusters (L2 tables and
 * refcount blocks) with write-back.  A pointer returned by qcow2_cache_get is
 * valid until the next call on the same cache (a miss may evict any slot).
 * Callers hold qcow2_state.lock.  Slot buffers are allocated when first
 * needed: most images touch a few tables, and an open (which every probe,
 * `info` and fuzz input does) should not zero megabytes it never uses. */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>

int qcow2_cache_init(qcow2_cache *c, size_t n, size_t cluster_size, const char *what)
{
    memset(c, 0, sizeof *c);
    c->what = what;
    c->slots = calloc(n, sizeof *c->slots);
    if (!c->slots)
        return -ENOMEM;
    c->n = n;
    c->cluster_size = cluster_size;
    return 0;
}

void qcow2_cache_free(qcow2_cache *c)
{
    for (size_t i = 0; c->slots && i < c->used; i++)
        free(c->slots[i].data);
    free(c->slots);
    c->slots = NULL;
    c->n = c->used = 0;
}

static int qcow2_cache_write_slot(qcow2_state *s, qcow2_cache *c, qcow2_cache_slot *sl,
                                  vd_error *err)
{
    if (!sl->dirty)
        return 0;
    if (c->before_write) {
        int r = c->before_write(s, err);
        if (r < 0)
            return r;
    }
    int r = vd_file_pwrite(s->file, sl->data, s->cluster_size, sl->off, err);
    if (r == 0)
        sl->dirty = false;
    return r;
}

int qcow2_cache_get(qcow2_state *s, qcow2_cache *c, uint64_t off, uint8_t **data,
                    size_t *slot, bool load, vd_error *err)
{
    if (c->last < c->used && c->slots[c->last].off == off) {
        c->slots[c->last].lru = ++c->tick;
        *data = c->slots[c->last].data;
        *slot = c->last;
        if (!load)
            memset(*data, 0, s->cluster_size);
        return 0;
    }
    size_t victim = 0;
    for (size_t i = 0; i < c->used; i++) {
        if (c->slots[i].off == off) {
            c->slots[i].lru = ++c->tick;
            c->last = i;
            *data = c->slots[i].data;
            *slot = i;
            if (!load)
                memset(*data, 0, s->cluster_size);
            return 0;
        }
        if (c->slots[i].lru < c->slots[victim].lru)
            victim = i;
    }
    if (c->used < c->n) {             /* not full yet: a new slot */
        uint8_t *d = malloc(c->cluster_size);
        if (!d)
            return vd_set_error(err, -ENOMEM, "qcow2: out of memory for the %s cache", c->what);
        victim = c->used++;
        c->slots[victim] = (qcow2_cache_slot){ .data = d };
    }
    qcow2_cache_slot *sl = &c->slots[victim];
    int r = qcow2_cache_write_slot(s, c, sl, err);
    if (r < 0)
        return r;
    sl->off = 0;
    if (load) {
        r = vd_file_pread(s->file, sl->data, s->cluster_size, off, err);
        if (r < 0)
            return vd_set_error(err, r, "qcow2: cannot read %s at 0x%llx: %s", c->what,
                                (unsigned long long)off, err ? err->msg : "");
    } else {
        memset(sl->data, 0, s->cluster_size);
    }
    sl->off = off;
    sl->lru = ++c->tick;
    c->last = victim;
    *data = sl->data;
    *slot = victim;
    return 0;
}

void qcow2_cache_mark_dirty(qcow2_cache *c, size_t slot)
{
    c->slots[slot].dirty = true;
}

int qcow2_cache_flush(qcow2_state *s, qcow2_cache *c, vd_error *err)
{
    bool any = false;
    for (size_t i = 0; i < c->used; i++)
        any |= c->slots[i].dirty;
    if (!any)
        return 0;
    if (c->before_write) {
        int r = c->before_write(s, err);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < c->used; i++) {
        qcow2_cache_slot *sl = &c->slots[i];
        if (!sl->dirty)
            continue;
        int r = vd_file_pwrite(s->file, sl->data, s->cluster_size, sl->off, err);
        if (r < 0)
            return r;
        sl->dirty = false;
    }
    return 0;
}

/* Forget a cluster (it was freed); its contents no longer matter. */
void qcow2_cache_drop(qcow2_cache *c, uint64_t off)
{
    for (size_t i = 0; i < c->used; i++) {
        if (c->slots[i].off == off) {
            c->slots[i].off = 0;
            c->slots[i].dirty = false;
            c->slots[i].lru = 0;
        }
    }
}
