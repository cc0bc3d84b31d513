/* snapshot.c - the internal snapshot table: parsed at open, listed, and a
 * snapshot's L1 table loaded in place of the active one (read-only view).
 * Creating, applying and deleting snapshots is in snapshot-write.c.
 *
 * Entry layout (qemu docs/interop/qcow2.txt): 40 fixed bytes, extra data
 * (vm_state_size_large, disk_size, icount), id string, name string, padding
 * to 8 bytes. */
#include "qcow2.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

/* qemu's own limits: the whole table and one entry's extra data. */
#define QCOW2_MAX_SNAPSHOTS_BYTES (64u << 20)
#define QCOW2_MAX_SNAPSHOT_EXTRA 1024u

void qcow2_snapshots_free(qcow2_state *s)
{
    for (uint32_t i = 0; s->snaps && i < s->nb_snapshots; i++) {
        free(s->snaps[i].id);
        free(s->snaps[i].name);
        free(s->snaps[i].extra);
    }
    free(s->snaps);
    s->snaps = NULL;
}

static int qcow2_snapshot_one(qcow2_state *s, uint32_t i, uint64_t *pos, uint64_t file_size,
                              vd_error *err)
{
    uint8_t h[40];
    uint64_t at = *pos;
    int r = vd_file_pread(s->file, h, sizeof h, at, err);
    if (r < 0)
        return vd_set_error(err, r, "qcow2: snapshot %u header at 0x%llx past end of file",
                            i, (unsigned long long)at);
    qcow2_snapshot *sn = &s->snaps[i];
    sn->l1_off = vd_be64(h);
    sn->l1_size = vd_be32(h + 8);
    uint32_t id_len = vd_be16(h + 12), name_len = vd_be16(h + 14);
    sn->date_sec = vd_be32(h + 16);
    sn->date_nsec = vd_be32(h + 20);
    sn->vm_clock_nsec = vd_be64(h + 24);
    sn->vm_state_size = vd_be32(h + 32);
    uint32_t extra = vd_be32(h + 36);
    if (extra > QCOW2_MAX_SNAPSHOT_EXTRA)
        return vd_set_error(err, -EINVAL, "qcow2: snapshot %u at 0x%llx: extra data of %u bytes too large",
                            i, (unsigned long long)at, extra);
    uint64_t var = (uint64_t)extra + id_len + name_len;
    uint64_t total = vd_round_up(40 + var, 8);
    /* the last entry's padding may be missing at the end of the file */
    if (at + total - s->snapshots_off > QCOW2_MAX_SNAPSHOTS_BYTES || at + 40 + var > file_size)
        return vd_set_error(err, -EINVAL, "qcow2: snapshot %u at 0x%llx runs past the table or the file",
                            i, (unsigned long long)at);
    uint8_t *v = malloc(var ? var : 1);
    if (!v)
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    r = vd_file_pread(s->file, v, var, at + 40, err);
    sn->disk_size = s->img->size;
    if (r == 0 && extra >= 8)
        sn->vm_state_size = vd_be64(v);
    if (r == 0 && extra >= 16)
        sn->disk_size = vd_be64(v + 8);
    if (r == 0) {
        /* C strings: a NUL inside a stored id or name ends it */
        sn->id = strndup((const char *)v + extra, id_len);
        sn->name = strndup((const char *)v + extra + id_len, name_len);
        sn->extra = malloc(extra ? extra : 1);
        sn->extra_len = extra;
        if (!sn->id || !sn->name || !sn->extra)
            r = vd_set_error(err, -ENOMEM, "qcow2: out of memory");
        else
            memcpy(sn->extra, v, extra);
    }
    free(v);
    *pos = at + total;
    return r;
}

int qcow2_snapshots_read(qcow2_state *s, uint64_t file_size, vd_error *err)
{
    if (!s->nb_snapshots)
        return 0;
    if (qcow2_offset_in_cluster(s, s->snapshots_off) || !s->snapshots_off)
        return vd_set_error(err, -EINVAL, "qcow2: snapshot table offset 0x%llx (0x40) not cluster aligned",
                            (unsigned long long)s->snapshots_off);
    /* Each entry has a 40-byte header: a count the file cannot hold is
     * refused before the array it sizes is allocated. */
    if (s->snapshots_off >= file_size || (uint64_t)s->nb_snapshots * 40 > file_size - s->snapshots_off)
        return vd_set_error(err, -EINVAL, "qcow2: %u snapshots (0x3c) of 40+ bytes do not fit between "
                            "the table at 0x%llx and the end of the file", s->nb_snapshots,
                            (unsigned long long)s->snapshots_off);
    s->snaps = calloc(s->nb_snapshots, sizeof *s->snaps);
    if (!s->snaps)
        return vd_set_error(err, -ENOMEM, "qcow2: out of memory");
    uint64_t pos = s->snapshots_off;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        int r = qcow2_snapshot_one(s, i, &pos, file_size, err);
        if (r < 0)
            return r;
    }
    s->snapshots_bytes = pos - s->snapshots_off;
    return 0;
}

int qcow2_list_snapshots(vd_image *img, vd_snapshot_info *out, size_t max)
{
    qcow2_state *s = qcow2_s(img);
    for (uint32_t i = 0; out && i < s->nb_snapshots && i < max; i++) {
        const qcow2_snapshot *sn = &s->snaps[i];
        vd_snapshot_info *o = &out[i];
        memset(o, 0, sizeof *o);
        snprintf(o->id, sizeof o->id, "%s", sn->id);
        snprintf(o->name, sizeof o->name, "%s", sn->name);
        o->vm_state_size = sn->vm_state_size;
        o->date_sec = sn->date_sec;
        o->date_nsec = sn->date_nsec;
        o->vm_clock_nsec = sn->vm_clock_nsec;
        o->disk_size = sn->disk_size;
        /* icount: third field of the extra data (qemu 5.2+), -1 = none */
        o->icount = sn->extra_len >= 24 ? vd_be64(sn->extra + 16) : UINT64_MAX;
    }
    return (int)s->nb_snapshots;
}

qcow2_snapshot *qcow2_snapshot_find(qcow2_state *s, const char *name)
{
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if (!strcmp(s->snaps[i].id, name))
            return &s->snaps[i];
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if (!strcmp(s->snaps[i].name, name))
            return &s->snaps[i];
    return NULL;
}

int qcow2_load_snapshot(vd_image *img, const char *name, vd_error *err)
{
    qcow2_state *s = qcow2_s(img);
    const qcow2_snapshot *sn = qcow2_snapshot_find(s, name);
    if (!sn)
        return vd_set_error(err, -ENOENT, "qcow2: no snapshot with id or name '%s'", name);
    if (sn->disk_size > VD_MAX_VIRTUAL_SIZE)
        return vd_set_error(err, -EFBIG, "qcow2: snapshot '%s' disk size 0x%llx too large",
                            name, (unsigned long long)sn->disk_size);
    uint64_t per_l1 = s->cluster_size * s->l2_entries;
    if (sn->l1_size < (sn->disk_size + per_l1 - 1) / per_l1)
        return vd_set_error(err, -EINVAL, "qcow2: snapshot '%s': L1 size %u too small for 0x%llx bytes",
                            name, sn->l1_size, (unsigned long long)sn->disk_size);
    int64_t fsz = vd_file_size(s->file, err);
    if (fsz < 0)
        return (int)fsz;
    int r = sn->l1_size ? qcow2_check_table(s, "snapshot L1 table", sn->l1_off,
                                            (uint64_t)sn->l1_size * 8, (uint64_t)fsz, err) : 0;
    uint64_t *l1 = NULL;
    if (r == 0)
        r = qcow2_l1_load(s, sn->l1_off, sn->l1_size, &l1, err);
    if (r < 0)
        return r;
    free(s->l1);
    s->l1 = l1;
    s->l1_size = sn->l1_size;
    s->l1_off = sn->l1_off;
    s->l1_is_snapshot = true;
    img->size = sn->disk_size;
    return 0;
}
