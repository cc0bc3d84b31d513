/* snapshot-write.c - creating, applying and deleting internal snapshots.
 *
 * A snapshot is a copy of the L1 table plus an entry in the snapshot table.
 * Refcounts count references per L1 table: taking a snapshot adds one to
 * every L2 table and every data cluster the active L1 reaches, so the first
 * write after it copies (COPIED flags cleared where a refcount is above 1).
 * Applying adds one to what the snapshot reaches, points the active L1 at
 * the same L2 tables, and drops one from what the old active state reached;
 * deleting drops one from what the snapshot reached.
 *
 * Order, for crash safety: references are added (and on disk) before
 * anything points at them, and dropped only after nothing does, so a crash
 * in between leaves refcounts too high (leaked clusters, which check -r
 * leaks frees), never too low. */
#include "qcow2.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

/* Extra data qemu writes: vm_state_size_large, disk_size, icount. */
#define QCOW2_SNAP_EXTRA 24u

/* Is there room for one more reference to the clusters of [host, +len)? */
static int qcow2_ref_room(qcow2_state *s, uint64_t host, uint64_t len, vd_error *err)
{
    for (uint64_t c = host >> s->cluster_bits; len && c <= (host + len - 1) >> s->cluster_bits;
         c++) {
        uint64_t rc;
        int r = qcow2_refcount_get(s, c, &rc, err);
        if (r < 0)
            return r;
        if (rc >= qcow2_rc_max(s))
            return vd_set_error(err, -EOVERFLOW,
                                "qcow2: cluster 0x%llx has refcount %llu, the most refcount_bits=%u "
                                "can count: no room for another snapshot's reference",
                                (unsigned long long)(c << s->cluster_bits),
                                (unsigned long long)rc, s->refcount_bits);
    }
    return 0;
}

/* Add `delta` to the refcount of what one L2 entry references (delta 0:
 * check that one more reference fits, changing nothing). */
static int qcow2_entry_ref(qcow2_state *s, const qcow2_entry *e, int delta, vd_error *err)
{
    uint64_t len = e->kind == QCOW2_COMPRESSED ? e->csize : e->host ? s->cluster_size : 0;
    if (!len)
        return 0;
    return delta ? qcow2_refcount_update(s, e->host, len, delta, err)
                 : qcow2_ref_room(s, e->host, len, err);
}

static uint64_t qcow2_l2_raw(const qcow2_state *s, const uint8_t *l2, uint64_t i, uint64_t *bm)
{
    *bm = s->extl2 ? vd_be64(l2 + i * 16 + 8) : 0;
    return vd_be64(l2 + i * s->l2_entry_size);
}

enum qcow2_refs_mode { REFS_ADD, REFS_CHECK_ROOM, REFS_FIX_FLAGS };

/* One L2 table: add `delta` to the refcounts of the clusters it references
 * (REFS_ADD), check that each can take one more (REFS_CHECK_ROOM), or set
 * each entry's COPIED flag to "refcount is 1" (REFS_FIX_FLAGS). */
static int qcow2_l2_refs(qcow2_state *s, uint64_t l2off, enum qcow2_refs_mode mode, int delta,
                         uint8_t *copy, vd_error *err)
{
    uint8_t *d;
    size_t slot;
    int r = vd_mcache_get(&s->l2c, l2off, &d, &slot, true, err);
    if (r < 0)
        return r;
    memcpy(copy, d, s->cluster_size);     /* refcount updates may evict it */
    bool changed = false;
    for (uint64_t i = 0; i < s->l2_entries && r == 0; i++) {
        uint64_t bm, raw = qcow2_l2_raw(s, copy, i, &bm);
        qcow2_entry e;
        qcow2_decode_l2(s, raw, bm, &e);
        if (e.kind != QCOW2_COMPRESSED && e.host && qcow2_offset_in_cluster(s, e.host))
            return vd_set_error(err, -EINVAL, "qcow2: L2 entry at 0x%llx points to unaligned "
                                "cluster 0x%llx", (unsigned long long)(l2off + i * s->l2_entry_size),
                                (unsigned long long)e.host);
        if (mode != REFS_FIX_FLAGS &&
            (r = qcow2_entry_ref(s, &e, mode == REFS_ADD ? delta : 0, err)) < 0)
            break;
        if (mode != REFS_FIX_FLAGS || e.kind == QCOW2_COMPRESSED || !e.host)
            continue;
        uint64_t rc;
        if ((r = qcow2_refcount_get(s, e.host >> s->cluster_bits, &rc, err)) < 0)
            break;
        uint64_t want = rc == 1 ? raw | QCOW2_OFLAG_COPIED : raw & ~QCOW2_OFLAG_COPIED;
        if (want != raw) {
            vd_put_be64(copy + i * s->l2_entry_size, want);
            changed = true;
        }
    }
    if (r < 0 || !changed)
        return r;
    if ((r = vd_mcache_get(&s->l2c, l2off, &d, &slot, true, err)) < 0)
        return r;
    memcpy(d, copy, s->cluster_size);
    vd_mcache_mark_dirty(&s->l2c, slot, 0);
    return 0;
}

/* Add `delta` to every L2 table and cluster an L1 table reaches (delta 0:
 * check that each can take one more reference, changing nothing). */
static int qcow2_l1_refs(qcow2_state *s, const uint64_t *l1, uint32_t n, int delta,
                         vd_error *err)
{
    enum qcow2_refs_mode mode = delta ? REFS_ADD : REFS_CHECK_ROOM;
    uint8_t *copy = malloc(s->cluster_size);
    if (!copy)
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    int r = 0;
    for (uint32_t i = 0; i < n && r == 0; i++) {
        uint64_t l2off = l1[i] & QCOW2_OFFSET_MASK;
        if (!l2off)
            continue;
        if (qcow2_offset_in_cluster(s, l2off)) {
            r = vd_set_error(err, -EINVAL, "qcow2: L1 entry %u points to unaligned L2 table 0x%llx",
                             i, (unsigned long long)l2off);
            break;
        }
        if ((r = qcow2_l2_refs(s, l2off, mode, delta, copy, err)) == 0)
            r = delta ? qcow2_refcount_update(s, l2off, s->cluster_size, delta, err)
                      : qcow2_ref_room(s, l2off, s->cluster_size, err);
    }
    free(copy);
    return r;
}

/* Make every COPIED flag of the active state say "refcount is 1". */
static int qcow2_fix_copied(qcow2_state *s, vd_error *err)
{
    uint8_t *copy = malloc(s->cluster_size);
    if (!copy)
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    int r = 0;
    for (uint32_t i = 0; i < s->l1_size && r == 0; i++) {
        uint64_t l2off = s->l1[i] & QCOW2_OFFSET_MASK, rc;
        if (!l2off)
            continue;
        if ((r = qcow2_l2_refs(s, l2off, REFS_FIX_FLAGS, 0, copy, err)) < 0 ||
            (r = qcow2_refcount_get(s, l2off >> s->cluster_bits, &rc, err)) < 0)
            break;
        uint64_t want = rc == 1 ? s->l1[i] | QCOW2_OFLAG_COPIED : s->l1[i] & ~QCOW2_OFLAG_COPIED;
        if (want != s->l1[i]) {
            s->l1[i] = want;
            r = qcow2_l1_write(s, i, err);
        }
    }
    free(copy);
    return r;
}

/* Everything cached on disk, in refcount-then-L2 order, and synced. */
static int qcow2_snap_sync(qcow2_state *s, vd_error *err)
{
    int r = qcow2_meta_flush(s, err);
    return r < 0 ? r : vd_file_sync(s->file, err);
}

static uint64_t qcow2_snap_entry_size(const qcow2_snapshot *sn)
{
    return vd_round_up(40 + (uint64_t)sn->extra_len + strlen(sn->id) + strlen(sn->name), 8);
}

static void qcow2_snap_entry_put(uint8_t *p, const qcow2_snapshot *sn)
{
    size_t id_len = strlen(sn->id), name_len = strlen(sn->name);
    vd_put_be64(p, sn->l1_off);
    vd_put_be32(p + 8, sn->l1_size);
    vd_put_be16(p + 12, (uint16_t)id_len);
    vd_put_be16(p + 14, (uint16_t)name_len);
    vd_put_be32(p + 16, sn->date_sec);
    vd_put_be32(p + 20, sn->date_nsec);
    vd_put_be64(p + 24, sn->vm_clock_nsec);
    vd_put_be32(p + 32, sn->vm_state_size > UINT32_MAX ? 0 : (uint32_t)sn->vm_state_size);
    vd_put_be32(p + 36, sn->extra_len);
    memcpy(p + 40, sn->extra, sn->extra_len);
    memcpy(p + 40 + sn->extra_len, sn->id, id_len);
    memcpy(p + 40 + sn->extra_len + id_len, sn->name, name_len);
}

/* Write `snaps` as a new snapshot table, switch the header to it, free the
 * old table, and make it the image's list (taking ownership of `snaps`). */
int qcow2_snap_table_replace(qcow2_state *s, qcow2_snapshot *snaps, uint32_t n,
                             vd_error *err)
{
    uint64_t bytes = 0, off = 0;
    for (uint32_t i = 0; i < n; i++)
        bytes += qcow2_snap_entry_size(&snaps[i]);
    uint8_t *buf = bytes ? calloc(1, bytes) : NULL;
    int r = 0;
    if (bytes && !buf)
        r = vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    for (uint64_t i = 0, at = 0; r == 0 && i < n; i++) {
        qcow2_snap_entry_put(buf + at, &snaps[i]);
        at += qcow2_snap_entry_size(&snaps[i]);
    }
    uint64_t clusters = vd_round_up(bytes, s->cluster_size) >> s->cluster_bits;
    if (r == 0 && clusters)
        r = qcow2_alloc_clusters(s, clusters, &off, err);
    if (r == 0 && bytes)
        r = vd_file_pwrite(s->file, buf, (size_t)bytes, off, err);
    free(buf);
    if (r == 0)
        r = qcow2_snap_sync(s, err);
    uint8_t h[12];
    vd_put_be32(h, n);
    vd_put_be64(h + 4, off);
    if (r == 0)
        r = vd_file_pwrite(s->file, h, sizeof h, QH_NB_SNAPSHOTS, err);
    if (r == 0)
        r = vd_file_sync(s->file, err);
    if (r < 0) {
        free(snaps);   /* the strings still belong to s->snaps */
        return r;
    }
    uint64_t old_off = s->snapshots_off, old_bytes = s->snapshots_bytes;
    free(s->snaps);    /* entries were moved into `snaps` by the caller */
    s->snaps = snaps;
    s->nb_snapshots = n;
    s->snapshots_off = off;
    s->snapshots_bytes = bytes;
    if (old_off && old_bytes)
        r = qcow2_refcount_update(s, old_off, vd_round_up(old_bytes, s->cluster_size), -1, err);
    return r;
}

static int qcow2_snap_l1_load(qcow2_state *s, const qcow2_snapshot *sn, uint64_t **l1,
                              vd_error *err)
{
    int64_t fsz = vd_file_size(s->file, err);
    if (fsz < 0)
        return (int)fsz;
    int r = sn->l1_size ? qcow2_check_table(s, "snapshot L1 table", sn->l1_off,
                                            (uint64_t)sn->l1_size * 8, (uint64_t)fsz, err) : 0;
    return r < 0 ? r : qcow2_l1_load(s, sn->l1_off, sn->l1_size, l1, err);
}

static int qcow2_snap_create(vd_image *img, qcow2_state *s, const char *name, vd_error *err)
{
    uint64_t next_id = 1;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        unsigned long long v = strtoull(s->snaps[i].id, NULL, 10);
        if (v >= next_id)
            next_id = v + 1;
    }
    qcow2_snapshot sn = { .l1_size = s->l1_size, .disk_size = img->size,
                          .extra_len = QCOW2_SNAP_EXTRA };
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)next_id);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    sn.date_sec = (uint32_t)tv.tv_sec;
    sn.date_nsec = (uint32_t)tv.tv_usec * 1000;
    uint64_t l1_bytes = (uint64_t)s->l1_size * 8;
    uint64_t *l1 = malloc(l1_bytes ? l1_bytes : 8);
    sn.extra = calloc(1, QCOW2_SNAP_EXTRA);
    sn.id = strdup(id);
    sn.name = strdup(name);
    qcow2_snapshot *snaps = calloc(s->nb_snapshots + 1, sizeof *snaps);
    int r = 0;
    if (!l1 || !sn.extra || !sn.id || !sn.name || !snaps)
        r = vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    if (r == 0) {
        vd_put_be64(sn.extra + 8, img->size);
        vd_put_be64(sn.extra + 16, UINT64_MAX);     /* no icount recorded */
        for (uint32_t i = 0; i < s->l1_size; i++)
            vd_put_be64(&l1[i], s->l1[i] & ~QCOW2_OFLAG_COPIED);
        if ((r = qcow2_l1_refs(s, s->l1, s->l1_size, 0, err)) == 0)   /* room? */
            r = qcow2_snap_sync(s, err);
    }
    /* 1. the L1 copy, 2. one more reference to all it reaches, on disk */
    uint64_t clusters = vd_round_up(l1_bytes, s->cluster_size) >> s->cluster_bits;
    if (r == 0 && clusters && (r = qcow2_alloc_clusters(s, clusters, &sn.l1_off, err)) == 0)
        r = vd_file_pwrite(s->file, l1, (size_t)l1_bytes, sn.l1_off, err);
    if (r == 0)
        r = qcow2_l1_refs(s, s->l1, s->l1_size, +1, err);
    if (r == 0)
        r = qcow2_fix_copied(s, err);
    if (r == 0)
        r = qcow2_snap_sync(s, err);
    free(l1);
    /* 3. the table that names it */
    if (r == 0) {
        if (s->nb_snapshots)
            memcpy(snaps, s->snaps, s->nb_snapshots * sizeof *snaps);
        snaps[s->nb_snapshots] = sn;
        r = qcow2_snap_table_replace(s, snaps, s->nb_snapshots + 1, err);
        if (s->snaps == snaps)    /* the new table is in use: sn belongs to it */
            return r < 0 ? r : qcow2_snap_sync(s, err);
        snaps = NULL;             /* freed by qcow2_snap_table_replace */
    }
    free(snaps);
    free(sn.extra);
    free(sn.id);
    free(sn.name);
    return r;
}

/* The active L1 becomes `l1` (n entries): rewritten in place when it fits,
 * else in new clusters the header is switched to. */
static int qcow2_snap_set_active_l1(qcow2_state *s, const uint64_t *l1, uint32_t n,
                                    vd_error *err)
{
    uint32_t size = n > s->l1_size ? n : s->l1_size;
    uint64_t bytes = (uint64_t)size * 8, off = s->l1_off;
    uint64_t *be = calloc(size ? size : 1, 8), *mem = calloc(size ? size : 1, 8);
    int r = 0;
    if (!be || !mem)
        r = vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    for (uint32_t i = 0; r == 0 && i < n; i++) {
        mem[i] = l1[i] & ~QCOW2_OFLAG_COPIED;
        vd_put_be64(&be[i], mem[i]);
    }
    bool moved = size > s->l1_size;
    if (r == 0 && moved)
        r = qcow2_alloc_clusters(s, vd_round_up(bytes, s->cluster_size) >> s->cluster_bits,
                                 &off, err);
    if (r == 0 && bytes)
        r = vd_file_pwrite(s->file, be, (size_t)bytes, off, err);
    if (r == 0 && moved) {
        uint8_t h[12];
        vd_put_be32(h, size);
        vd_put_be64(h + 4, off);
        if ((r = qcow2_snap_sync(s, err)) == 0)
            r = vd_file_pwrite(s->file, h, sizeof h, QH_L1_SIZE, err);
    }
    free(be);
    if (r < 0) {
        free(mem);
        return r;
    }
    uint64_t old_off = s->l1_off, old_bytes = (uint64_t)s->l1_size * 8;
    free(s->l1);
    s->l1 = mem;
    s->l1_size = size;
    s->l1_off = off;
    if (moved && old_bytes)
        r = qcow2_refcount_update(s, old_off, vd_round_up(old_bytes, s->cluster_size), -1, err);
    return r;
}

static int qcow2_snap_apply(vd_image *img, qcow2_state *s, qcow2_snapshot *sn, vd_error *err)
{
    if (sn->disk_size > VD_MAX_VIRTUAL_SIZE)
        return vd_set_error(err, -EFBIG, "qcow2: snapshot '%s' disk size 0x%llx too large",
                            sn->name, (unsigned long long)sn->disk_size);
    uint64_t *snl1 = NULL, *old = NULL;
    uint32_t old_n = s->l1_size;
    int r = qcow2_snap_l1_load(s, sn, &snl1, err);
    if (r == 0 && !(old = malloc((old_n ? old_n : 1) * 8ull)))
        r = vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    if (r == 0) {
        memcpy(old, s->l1, old_n * 8ull);
        if ((r = qcow2_l1_refs(s, snl1, sn->l1_size, 0, err)) == 0)   /* room? */
            r = qcow2_snap_sync(s, err);
    }
    /* 1. what the snapshot reaches gets the active state's reference */
    if (r == 0)
        r = qcow2_l1_refs(s, snl1, sn->l1_size, +1, err);
    if (r == 0)
        r = qcow2_snap_sync(s, err);
    /* 2. the active L1 points there (and the size follows the snapshot) */
    if (r == 0)
        r = qcow2_snap_set_active_l1(s, snl1, sn->l1_size, err);
    if (r == 0 && sn->disk_size != img->size &&
        (r = qcow2_header_write_u64(s, QH_SIZE, sn->disk_size, err)) == 0)
        img->size = sn->disk_size;
    if (r == 0)
        r = vd_file_sync(s->file, err);
    /* 3. what the old active state reached loses its reference */
    if (r == 0)
        r = qcow2_l1_refs(s, old, old_n, -1, err);
    if (r == 0)
        r = qcow2_fix_copied(s, err);
    if (r == 0)
        r = qcow2_snap_sync(s, err);
    free(snl1);
    free(old);
    return r;
}

static int qcow2_snap_delete(qcow2_state *s, qcow2_snapshot *sn, vd_error *err)
{
    uint64_t *snl1 = NULL;
    int r = qcow2_snap_l1_load(s, sn, &snl1, err);
    qcow2_snapshot gone = *sn;
    qcow2_snapshot *snaps = NULL;
    if (r == 0 && !(snaps = calloc(s->nb_snapshots, sizeof *snaps)))
        r = vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    /* 1. the table without it */
    if (r == 0) {
        uint32_t n = 0;
        for (uint32_t i = 0; i < s->nb_snapshots; i++)
            if (&s->snaps[i] != sn)
                snaps[n++] = s->snaps[i];
        r = qcow2_snap_table_replace(s, snaps, n, err);
        if (s->snaps == snaps) {   /* the new table is in use: drop the entry */
            free(gone.id);
            free(gone.name);
            free(gone.extra);
        }
    }
    /* 2. what it reached, and its L1 table, lose its reference */
    if (r == 0)
        r = qcow2_l1_refs(s, snl1, gone.l1_size, -1, err);
    if (r == 0 && gone.l1_size)
        r = qcow2_refcount_update(s, gone.l1_off,
                                  vd_round_up((uint64_t)gone.l1_size * 8, s->cluster_size), -1, err);
    if (r == 0)
        r = qcow2_fix_copied(s, err);
    if (r == 0)
        r = qcow2_snap_sync(s, err);
    free(snl1);
    return r;
}

int qcow2_snapshot_op(vd_image *img, enum vd_snapshot_op op, const char *name,
                      vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    if (s->l1_is_snapshot)
        return vd_set_error(err, -EINVAL, "qcow2: a snapshot is loaded; open the image itself");
    qcow2_snapshot *sn = qcow2_snapshot_find(s, name);
    int r = qcow2_release_pending(s, err);
    if (r < 0)
        return r;
    switch (op) {
    case VD_SNAPSHOT_CREATE:
        if (sn)
            return vd_set_error(err, -EEXIST, "qcow2: a snapshot with id or name '%s' exists",
                                name);
        return qcow2_snap_create(img, s, name, err);
    case VD_SNAPSHOT_APPLY:
    case VD_SNAPSHOT_DELETE:
        if (!sn)
            return vd_set_error(err, -ENOENT, "qcow2: no snapshot with id or name '%s'", name);
        return op == VD_SNAPSHOT_APPLY ? qcow2_snap_apply(img, s, sn, err)
                                       : qcow2_snap_delete(s, sn, err);
    }
    return vd_set_error(err, -EINVAL, "qcow2: unknown snapshot operation %d", (int)op);
}
