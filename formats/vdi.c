/* vdi.c - VirtualBox Disk Image (VDI).
 *
 * Layout (all little-endian): a 72-byte pre-header (64 bytes of signature
 * text, magic 0xbeda107f, version), then the header proper.  Version 1.x
 * headers name the block map and data offsets; version 0 headers place the
 * block map right after themselves and the data right after the map.  The
 * block map has one 32-bit entry per block: a block index into the data area,
 * 0xffffffff (free: not here, read the parent or zeroes) or 0xfffffffe (a
 * block of zeroes).
 *
 * Subformats: dynamic (type 1), static/fixed (type 2, every block allocated
 * up front) and differencing (type 4).  A differencing image does not name
 * its parent by file: it carries the parent's creation UUID ("link" UUID),
 * and VirtualBox finds the parent in its media registry.  We find it by
 * scanning the *.vdi files in the child's folder for that UUID and hand the
 * file name to the core as backing_file.  Undo images (type 3) are refused.
 *
 * What we write: version 1.1, header size 400, the VirtualBox signature text,
 * 1 MiB blocks, a legacy and an LCHS geometry with 512-byte sectors, a fresh
 * random creation and modification UUID (or -o uuid= for migrations), and
 * for differencing images the parent's creation and modification UUIDs. */
#include "vdi.h"
#include "vdi-uuid.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>

extern const struct vd_driver vd_vdi;

static int vdi_probe(const uint8_t *head, size_t len, const uint8_t *tail,
                     size_t tail_len, uint64_t file_size)
{
    (void)tail; (void)tail_len; (void)file_size;
    if (len < VDI_PREHEADER_SIZE + 8 || vd_le32(head + VDI_O_MAGIC) != VDI_MAGIC)
        return 0;
    uint32_t major = vd_le32(head + VDI_O_VERSION) >> 16;
    return major <= 1 ? 100 : 50;
}

/* ---- header ----------------------------------------------------------- */

/* Where the fields both header versions have sit (offsets from the start
 * of the file); 0: the version has no such field. */
struct vdi_layout {
    uint16_t type, disk_size, block_size, block_extra, blocks, allocated;
    uint16_t uuid_create, uuid_modify, uuid_link, uuid_parent;
};

static const struct vdi_layout vdi_layout_v0 = {
    .type = VDI0_O_TYPE, .disk_size = VDI0_O_DISK_SIZE, .block_size = VDI0_O_BLOCK_SIZE,
    .blocks = VDI0_O_BLOCKS, .allocated = VDI0_O_ALLOCATED,
    .uuid_create = VDI0_O_UUID_CREATE, .uuid_modify = VDI0_O_UUID_MODIFY,
    .uuid_link = VDI0_O_UUID_LINK,
};

static const struct vdi_layout vdi_layout_v1 = {
    .type = VDI_O_TYPE, .disk_size = VDI_O_DISK_SIZE, .block_size = VDI_O_BLOCK_SIZE,
    .block_extra = VDI_O_BLOCK_EXTRA, .blocks = VDI_O_BLOCKS, .allocated = VDI_O_ALLOCATED,
    .uuid_create = VDI_O_UUID_CREATE, .uuid_modify = VDI_O_UUID_MODIFY,
    .uuid_link = VDI_O_UUID_LINK, .uuid_parent = VDI_O_UUID_PARENT,
};

static const struct vdi_layout *vdi_layout(uint32_t major)
{
    return major == 0 ? &vdi_layout_v0 : &vdi_layout_v1;
}

static void vdi_parse_fields(struct vdi_state *s, const uint8_t *h, const struct vdi_layout *l)
{
    s->type = vd_le32(h + l->type);
    s->disk_size = vd_le64(h + l->disk_size);
    s->block_size = vd_le32(h + l->block_size);
    s->block_extra = l->block_extra ? vd_le32(h + l->block_extra) : 0;
    s->n_blocks = vd_le32(h + l->blocks);
    s->n_alloc = vd_le32(h + l->allocated);
    s->alloc_at = l->allocated;
    memcpy(s->uuid_create, h + l->uuid_create, 16);
    memcpy(s->uuid_modify, h + l->uuid_modify, 16);
    memcpy(s->uuid_link, h + l->uuid_link, 16);
    if (l->uuid_parent)
        memcpy(s->uuid_parent, h + l->uuid_parent, 16);
}

static int vdi_parse_v0(struct vdi_state *s, const uint8_t *h)
{
    vdi_parse_fields(s, h, &vdi_layout_v0);
    s->off_blocks = VDI_PREHEADER_SIZE + VDI_HEADER0_SIZE;
    s->off_data = s->off_blocks + (uint64_t)s->n_blocks * 4;
    return 0;
}

static int vdi_parse_v1(struct vdi_state *s, const uint8_t *h, vd_error *err)
{
    uint32_t hsize = vd_le32(h + VDI_O_HDR_SIZE);
    if (hsize < VDI_HEADER1_SIZE || hsize > 4096)
        return vd_set_error(err, -EINVAL, "vdi: header size %u at 0x%x: expected 384..4096",
                            hsize, VDI_O_HDR_SIZE);
    vdi_parse_fields(s, h, &vdi_layout_v1);
    s->off_blocks = vd_le32(h + VDI_O_OFF_BLOCKS);
    s->off_data = vd_le32(h + VDI_O_OFF_DATA);
    if (s->off_blocks < VDI_PREHEADER_SIZE + (uint64_t)hsize)
        return vd_set_error(err, -EINVAL, "vdi: block map offset 0x%llx at 0x%x overlaps the header",
                            (unsigned long long)s->off_blocks, VDI_O_OFF_BLOCKS);
    return 0;
}

/* Everything the header says, checked against itself and the file size. */
static int vdi_check_header(struct vdi_state *s, vd_error *err)
{
    uint64_t span, map_end;
    if (s->type < VDI_TYPE_NORMAL || s->type > VDI_TYPE_DIFF)
        return vd_set_error(err, -EINVAL, "vdi: image type %u at 0x%x is not 1..4",
                            s->type, VDI_O_TYPE);
    if (s->type == VDI_TYPE_UNDO)
        return vd_set_error(err, -ENOTSUP, "vdi: undo images (type 3) are not supported");
    if (!vd_is_pow2(s->block_size) || s->block_size < 512 || s->block_size > VDI_MAX_BLOCK)
        return vd_set_error(err, -EINVAL, "vdi: block size %u at 0x%x: expected a power of two "
                            "from 512 to %u", s->block_size, VDI_O_BLOCK_SIZE, VDI_MAX_BLOCK);
    if (s->block_extra % 512 || s->block_extra > VDI_MAX_BLOCK)
        return vd_set_error(err, -EINVAL, "vdi: block extra data size %u at 0x%x is not a "
                            "multiple of 512 up to %u", s->block_extra, VDI_O_BLOCK_EXTRA,
                            VDI_MAX_BLOCK);
    if ((uint64_t)s->n_blocks * 4 > VD_MAX_TABLE_BYTES)
        return vd_set_error(err, -EFBIG, "vdi: block count %u at 0x%x: block map larger than %llu bytes",
                            s->n_blocks, VDI_O_BLOCKS, (unsigned long long)VD_MAX_TABLE_BYTES);
    if (vd_mul_overflow(s->n_blocks, s->block_size, &span) || span < s->disk_size)
        return vd_set_error(err, -EINVAL, "vdi: %u blocks of %u bytes (0x%x) do not cover the "
                            "disk size 0x%llx (0x%x)", s->n_blocks, s->block_size, VDI_O_BLOCKS,
                            (unsigned long long)s->disk_size, VDI_O_DISK_SIZE);
    if (s->disk_size > VD_MAX_VIRTUAL_SIZE)
        return vd_set_error(err, -EFBIG, "vdi: disk size 0x%llx at 0x%x is too large",
                            (unsigned long long)s->disk_size, VDI_O_DISK_SIZE);
    if (s->n_alloc > s->n_blocks)
        return vd_set_error(err, -EINVAL, "vdi: %u allocated blocks (0x%x) but only %u blocks",
                            s->n_alloc, VDI_O_ALLOCATED, s->n_blocks);
    map_end = s->off_blocks + (uint64_t)s->n_blocks * 4;
    if (map_end > s->file_size)
        return vd_set_error(err, -EINVAL, "vdi: block map at 0x%llx (%u entries) runs past end "
                            "of file (size 0x%llx)", (unsigned long long)s->off_blocks,
                            s->n_blocks, (unsigned long long)s->file_size);
    if (s->off_data < map_end && s->n_blocks)
        return vd_set_error(err, -EINVAL, "vdi: data offset 0x%llx at 0x%x overlaps the block "
                            "map (ends at 0x%llx)", (unsigned long long)s->off_data,
                            VDI_O_OFF_DATA, (unsigned long long)map_end);
    if (s->type == VDI_TYPE_DIFF && vdi_uuid_is_null(s->uuid_link))
        return vd_set_error(err, -EINVAL, "vdi: differencing image without a parent UUID (0x%x)",
                            VDI_O_UUID_LINK);
    return 0;
}

static uint64_t vdi_block_file_off(const struct vdi_state *s, uint32_t index)
{
    return s->off_data + (uint64_t)index * (s->block_size + s->block_extra) + s->block_extra;
}

static int vdi_load_bmap(struct vdi_state *s, vd_file *f, vd_error *err)
{
    size_t bytes = (size_t)s->n_blocks * 4;
    s->bmap = malloc(bytes ? bytes : 1);
    if (!s->bmap)
        return vd_set_error(err, -ENOMEM, "vdi: out of memory for a %zu-byte block map", bytes);
    int r = vd_file_pread(f, s->bmap, bytes, s->off_blocks, err);
    if (r < 0)
        return r;
    s->next_index = 0;
    for (uint32_t i = 0; i < s->n_blocks; i++) {
        uint32_t e = le32toh(s->bmap[i]);
        s->bmap[i] = e;
        if (e == VDI_BLOCK_FREE || e == VDI_BLOCK_ZERO)
            continue;
        if (e >= s->n_blocks)
            return vd_set_error(err, -EINVAL, "vdi: block map entry %u at 0x%llx holds index %u, "
                                "not below the block count %u", i,
                                (unsigned long long)(s->off_blocks + (uint64_t)i * 4), e,
                                s->n_blocks);
        if (vdi_block_file_off(s, e) >= s->file_size)
            return vd_set_error(err, -EINVAL, "vdi: block map entry %u at 0x%llx points past end "
                                "of file (0x%llx >= size 0x%llx)", i,
                                (unsigned long long)(s->off_blocks + (uint64_t)i * 4),
                                (unsigned long long)vdi_block_file_off(s, e),
                                (unsigned long long)s->file_size);
        if (e >= s->next_index)
            s->next_index = e + 1;
    }
    /* Never hand out an index below cBlocksAllocated: a header that counts
     * more blocks than the map uses still owns that space. */
    if (s->n_alloc > s->next_index)
        s->next_index = s->n_alloc;
    return 0;
}

/* ---- parent lookup (differencing images) ------------------------------- */

/* Does `path` hold a VDI whose creation UUID is `uuid`? */
static bool vdi_file_has_uuid(const char *path, const uint8_t uuid[16])
{
    uint8_t h[512];
    vd_file *f;
    if (vd_file_open(path, true, &f, NULL) < 0)
        return false;
    int64_t size = vd_file_size(f, NULL);
    bool ok = false;
    if (size >= (int64_t)sizeof h && vd_file_pread(f, h, sizeof h, 0, NULL) == 0 &&
        vd_le32(h + VDI_O_MAGIC) == VDI_MAGIC) {
        uint32_t major = vd_le32(h + VDI_O_VERSION) >> 16;
        const uint8_t *u = h + vdi_layout(major)->uuid_create;
        ok = major <= 1 && memcmp(u, uuid, 16) == 0;
    }
    vd_file_close(f);
    return ok;
}

static bool vdi_name_is_vdi(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && strcasecmp(name + n - 4, ".vdi") == 0;
}

/* Scan the child's folder for the parent; on success set backing_file to its
 * name (relative to the folder, so the core's confinement applies). */
static int vdi_find_parent(vd_image *img, struct vdi_state *s, vd_error *err)
{
    char want[40];
    vdi_uuid_format(s->uuid_link, want);
    if (memcmp(s->uuid_link, s->uuid_create, 16) == 0)
        return vd_set_error(err, -ELOOP, "vdi: parent UUID %s is the image's own UUID", want);
    /* Read from a window (an archive member): no folder of its own to scan. */
    if (img->file->win && img->no_backing)
        return 0;
    if (img->file->win)
        return vd_set_error(err, -EPERM, "vdi: a differencing image read from a window of a "
                            "file (an archive member): its parent %s cannot be looked for", want);
    char *dir = strdup(img->path);
    if (!dir)
        return vd_set_error(err, -ENOMEM, "out of memory");
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[slash == dir ? 1 : 0] = 0;
    const char *folder = slash ? dir : ".";
    DIR *d = opendir(folder);
    if (!d) {
        int r = vd_set_errno(err, -errno, "vdi: looking for parent %s: opendir %s", want, folder);
        free(dir);
        return r;
    }
    struct stat self;
    bool have_self = fstat(img->file->fd, &self) == 0;
    struct dirent *de;
    int seen = 0, r = -ENOENT;
    while ((de = readdir(d)) && seen < VDI_MAX_SCAN) {
        if (!vdi_name_is_vdi(de->d_name))
            continue;
        seen++;
        char path[4096];
        struct stat st;
        if (snprintf(path, sizeof path, "%s/%s", folder, de->d_name) >= (int)sizeof path ||
            stat(path, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (have_self && st.st_dev == self.st_dev && st.st_ino == self.st_ino)
            continue;
        if (!vdi_file_has_uuid(path, s->uuid_link))
            continue;
        img->backing_file = strdup(de->d_name);
        img->backing_format = strdup("vdi");
        r = img->backing_file && img->backing_format ? 0 : -ENOMEM;
        break;
    }
    closedir(d);
    if (r == -ENOENT)
        vd_set_error(err, r, "vdi: differencing image: no parent with UUID %s among the *.vdi "
                     "files in %s", want, folder);
    else if (r == -ENOMEM)
        vd_set_error(err, r, "out of memory");
    free(dir);
    return r;
}

/* ---- open/close -------------------------------------------------------- */

static void vdi_close(vd_image *img)
{
    struct vdi_state *s = img->priv;
    if (s) {
        free(s->bmap);
        free(s->unsynced);
        free(s->blockbuf);
    }
    free(s);
    img->priv = NULL;
}

static int vdi_open(vd_image *img, vd_error *err)
{
    uint8_t h[512];
    struct vdi_state *s = calloc(1, sizeof *s);
    if (!s)
        return vd_set_error(err, -ENOMEM, "out of memory");
    img->priv = s;
    int64_t fsize = vd_file_size(img->file, err);
    int r = (int)fsize;
    if (fsize < 0)
        goto fail;
    s->file_size = (uint64_t)fsize;
    if (fsize < VDI_PREHEADER_SIZE + VDI_HEADER0_SIZE) {
        r = vd_set_error(err, -EINVAL, "vdi: file of %lld bytes is too short for a header",
                         (long long)fsize);
        goto fail;
    }
    if ((r = vd_file_pread_zfill(img->file, h, sizeof h, 0, err)) < 0)
        goto fail;
    if (vd_le32(h + VDI_O_MAGIC) != VDI_MAGIC) {
        r = vd_set_error(err, -EINVAL, "vdi: bad magic 0x%08x at 0x40", vd_le32(h + VDI_O_MAGIC));
        goto fail;
    }
    s->version = vd_le32(h + VDI_O_VERSION);
    if (s->version >> 16 == 0)
        r = vdi_parse_v0(s, h);
    else if (s->version >> 16 == 1)
        r = vdi_parse_v1(s, h, err);
    else
        r = vd_set_error(err, -ENOTSUP, "vdi: unsupported version %u.%u at 0x44",
                         s->version >> 16, s->version & 0xffff);
    if (r < 0 || (r = vdi_check_header(s, err)) < 0 || (r = vdi_load_bmap(s, img->file, err)) < 0)
        goto fail;
    if (s->type == VDI_TYPE_DIFF && (r = vdi_find_parent(img, s, err)) < 0)
        goto fail;
    img->size = s->disk_size;
    img->cluster_size = s->block_size;
    return 0;
fail:
    vdi_close(img);
    return r;
}

/* ---- read/write -------------------------------------------------------- */

/* What the bytes at `off` are, up to the end of their block. */
static int vdi_map(vd_image *img, uint64_t off, uint64_t max, struct vd_map *m, vd_error *err)
{
    (void)err;
    struct vdi_state *s = img->priv;
    uint64_t blk, in;
    m->n = vd_block_piece(off, max, s->block_size, &blk, &in);
    uint32_t e = s->bmap[blk];
    m->kind = e == VDI_BLOCK_FREE ? VD_MAP_BACKING
              : e == VDI_BLOCK_ZERO ? VD_MAP_ZERO : VD_MAP_DATA;
    if (m->kind == VD_MAP_DATA)
        m->file_off = vdi_block_file_off(s, e) + in;
    return 0;
}

static const struct vd_mapper vdi_mapper = { .map = vdi_map };

static int vdi_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err)
{
    return vd_map_pread(img, buf, len, off, &vdi_mapper, err);
}

/* Remember that block `blk`'s map entry must be written at the next flush. */
static int vdi_defer_bmap_entry(struct vdi_state *s, uint32_t blk, vd_error *err)
{
    if (VD_ARRAY_RESERVE(s->unsynced, s->cap_unsynced, s->n_unsynced + 1) < 0)
        return vd_set_error(err, -ENOMEM, "vdi: out of memory");
    s->unsynced[s->n_unsynced++] = blk;
    return 0;
}

/* New blocks' data is synced first, then their map entries and the count
 * (then vdi_flush syncs again). */
static int vdi_write_unsynced(vd_image *img, struct vdi_state *s, vd_error *err)
{
    if (!s->n_unsynced)
        return 0;
    int r = vd_file_sync(img->file, err);
    /* The count first: a crash before the map entries leaves a count above
     * what the map uses (leaked blocks, never handed out twice), not a map
     * that uses more than the count. */
    if (r == 0) {
        uint8_t le[4];
        vd_put_le32(le, s->n_alloc);
        r = vd_file_pwrite(img->file, le, 4, s->alloc_at, err);
    }
    for (size_t i = 0; r == 0 && i < s->n_unsynced; i++) {
        uint8_t le[4];
        uint32_t blk = s->unsynced[i];
        vd_put_le32(le, s->bmap[blk]);
        r = vd_file_pwrite(img->file, le, 4, s->off_blocks + (uint64_t)blk * 4, err);
    }
    if (r == 0)
        s->n_unsynced = 0;
    return r;
}

/* Give block `blk` a data block holding `len` bytes of `data` at `in`, the
 * rest coming from what the block read as before (backing or zeroes). */
static int vdi_allocate(vd_image *img, struct vdi_state *s, uint32_t blk, uint64_t in,
                        const void *data, size_t len, vd_error *err)
{
    if (s->next_index >= s->n_blocks)
        return vd_set_error(err, -ENOSPC, "vdi: no free data block index left for block %u", blk);
    size_t total = s->block_extra + s->block_size;
    /* aligned, so that an O_DIRECT file (VD_CACHE_DIRECT) takes it as it is */
    if (!s->blockbuf && posix_memalign((void **)&s->blockbuf, 4096, total)) {
        s->blockbuf = NULL;
        return vd_set_error(err, -ENOMEM, "vdi: out of memory for a %zu-byte block", total);
    }
    uint8_t *b = s->blockbuf;
    memset(b, 0, total);
    uint64_t gstart = (uint64_t)blk * s->block_size;
    uint64_t gend = gstart + s->block_size > img->size ? img->size : gstart + s->block_size;
    int r = 0;
    if (len < gend - gstart && s->bmap[blk] == VDI_BLOCK_FREE)
        r = vd_backing_pread(img, b + s->block_extra, (size_t)(gend - gstart), gstart, err);
    if (r == 0) {
        memcpy(b + s->block_extra + in, data, len);
        uint32_t idx = s->next_index;
        r = vd_file_pwrite(img->file, b, total, vdi_block_file_off(s, idx) - s->block_extra, err);
        if (r == 0) {
            s->next_index++;
            s->n_alloc++;
            s->bmap[blk] = idx;
            r = vdi_defer_bmap_entry(s, blk, err);
        }
    }
    return r;
}

/* The part of a write inside one block: in place, or a new block. */
static int vdi_write_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    (void)ctx;
    struct vdi_state *s = img->priv;
    uint32_t e = s->bmap[pt->blk];
    if (e == VDI_BLOCK_FREE || e == VDI_BLOCK_ZERO)
        return vdi_allocate(img, s, (uint32_t)pt->blk, pt->in, pt->p, pt->n, err);
    return vd_file_pwrite(img->file, pt->p, pt->n, vdi_block_file_off(s, e) + pt->in, err);
}

static int vdi_pwrite(vd_image *img, const void *buf, size_t len, uint64_t off, vd_error *err)
{
    struct vdi_state *s = img->priv;
    return vd_walk(img, (void *)buf, off, len, s->block_size, vdi_write_part, NULL, err);
}

static int vdi_flush(vd_image *img, vd_error *err)
{
    struct vdi_state *s = img->priv;
    int r = vdi_write_unsynced(img, s, err);
    return r < 0 ? r : vd_file_sync(img->file, err);
}

static int vdi_block_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                            vd_error *err)
{
    (void)err;
    struct vdi_state *s = img->priv;
    uint64_t end = off + len;
    while (off < end) {
        uint32_t blk = (uint32_t)(off / s->block_size);
        uint64_t in = off % s->block_size;
        uint64_t n = s->block_size - in < end - off ? s->block_size - in : end - off;
        uint32_t e = s->bmap[blk];
        int r;
        if (e == VDI_BLOCK_FREE)
            r = vd_extents_add(ext, off, n, VD_LAYER_UNALLOC, 0, VD_NO_OFFSET);
        else if (e == VDI_BLOCK_ZERO)
            r = vd_extents_add(ext, off, n, VD_LAYER_ZERO, 0, VD_NO_OFFSET);
        else
            r = vd_extents_add(ext, off, n, VD_LAYER_DATA, 0, vdi_block_file_off(s, e) + in);
        if (r < 0)
            return r;
        off += n;
    }
    return 0;
}

/* ---- check ------------------------------------------------------------- */

static int vdi_check(vd_image *img, unsigned flags, vd_check_result *res, vd_error *err)
{
    struct vdi_state *s = img->priv;
    uint8_t *used = calloc(s->n_blocks ? s->n_blocks : 1, 1);
    if (!used)
        return vd_set_error(err, -ENOMEM, "out of memory");
    uint32_t allocated = 0;
    for (uint32_t i = 0; i < s->n_blocks; i++) {
        uint32_t e = s->bmap[i];
        if (e == VDI_BLOCK_FREE || e == VDI_BLOCK_ZERO)
            continue;
        allocated++;
        if (used[e]++) {
            if (!res->corruptions++)
                snprintf(res->first_problem, sizeof res->first_problem,
                         "block map entry %u: data block %u is used twice", i, e);
        }
    }
    int r = 0;
    if (allocated != s->n_alloc) {
        /* The count and the map are separate writes, the count first (a
         * crash can keep it alone; a shrink keeps it high while blocks
         * move): a count above the map's is leaked blocks; below it, a
         * corruption.  Repair makes the count the map's; for a leak, the
         * blocks holding slots at or past the map's use move below it
         * first, while the count still covers them (lowered first, it
         * would name a slot in use as the next new block's, for another
         * tool), and the file is cut after them. */
        bool leak = allocated < s->n_alloc;
        if (leak)
            res->leaks++;
        else
            res->corruptions++;
        if (!res->first_problem[0])
            snprintf(res->first_problem, sizeof res->first_problem,
                     "header counts %u allocated blocks, the block map %u", s->n_alloc,
                     allocated);
        unsigned need = leak ? VD_CHECK_REPAIR_LEAKS : VD_CHECK_REPAIR_ALL;
        if ((flags & need) == need && !img->readonly && res->corruptions <= (leak ? 0u : 1u)) {
            uint8_t le[4];
            if (leak)
                r = vdi_compact(img, s, s->n_blocks, allocated, err);
            vd_put_le32(le, allocated);
            if (r == 0 && (r = vd_file_pwrite(img->file, le, 4, s->alloc_at, err)) == 0 &&
                (r = vd_file_sync(img->file, err)) == 0) {
                s->n_alloc = allocated;
                leak ? res->leaks_fixed++ : res->corruptions_fixed++;
            }
            uint64_t end = vdi_block_file_off(s, allocated) - s->block_extra;
            if (r == 0 && leak && end < s->file_size &&
                (r = vd_file_truncate(img->file, end, err)) == 0 &&
                (r = vd_file_sync(img->file, err)) == 0) {
                s->file_size = end;
                s->next_index = allocated;
            }
        }
    }
    if (r == 0 && allocated == s->n_alloc && !res->corruptions)
        r = vdi_check_compaction(img, s, flags, res, err);
    res->allocated_clusters = allocated;
    res->total_clusters = s->n_blocks;
    res->image_end_offset = s->next_index ? vdi_block_file_off(s, s->next_index) - s->block_extra
                                          : s->off_data;
    free(used);
    return r;
}

static void vdi_details(vd_image *img, vd_kv_fn fn, void *ctx)
{
    struct vdi_state *s = img->priv;
    static const char *const types[] = { "?", "dynamic", "static", "undo", "differencing" };
    char v[64];
    snprintf(v, sizeof v, "%u.%u", s->version >> 16, s->version & 0xffff);
    fn(ctx, "version", v);
    fn(ctx, "type", types[s->type]);
    snprintf(v, sizeof v, "%u", s->block_size);
    fn(ctx, "block-size", v);
    snprintf(v, sizeof v, "%u", s->n_alloc);
    fn(ctx, "allocated-blocks", v);
    vdi_uuid_format(s->uuid_create, v);
    fn(ctx, "uuid", v);
    vdi_uuid_format(s->uuid_modify, v);
    fn(ctx, "modification-uuid", v);
    vdi_uuid_format(s->uuid_link, v);
    fn(ctx, "parent-uuid", v);
    vdi_uuid_format(s->uuid_parent, v);
    fn(ctx, "parent-modification-uuid", v);
}

/* ---- create ------------------------------------------------------------ */

/* A CHS geometry the way BIOS-era tools derive it: 16 heads, 63 sectors. */
static void vdi_put_geometry(uint8_t *p, uint64_t size)
{
    uint64_t cyls = size / 512 / (16 * 63);
    if (cyls > 16383)
        cyls = 16383;
    vd_put_le32(p, (uint32_t)cyls);
    vd_put_le32(p + 4, 16);
    vd_put_le32(p + 8, 63);
    vd_put_le32(p + 12, 512);
}

/* The parent of a new differencing image: an open VDI in the same folder. */
static int vdi_create_parent(const struct vd_create_args *a, uint8_t link[16],
                             uint8_t parent_mod[16], vd_error *err)
{
    if (a->backing->drv != &vd_vdi)
        return vd_set_error(err, -EINVAL, "vdi: the parent of a differencing VDI must be a VDI, "
                            "not %s", a->backing->drv->name);
    if (strchr(a->backing_file, '/'))
        return vd_set_error(err, -EINVAL, "vdi: parent '%s' must be in the child's folder (a "
                            "VDI finds its parent by UUID there)", a->backing_file);
    const struct vdi_state *p = a->backing->priv;
    memcpy(link, p->uuid_create, 16);
    memcpy(parent_mod, p->uuid_modify, 16);
    return 0;
}

static int vdi_create(const struct vd_create_args *a, vd_error *err)
{
    bool fixed = false;
    int r = vd_opt_bool(a->opts, "static", false, &fixed, err);
    if (r < 0)
        return r;
    const char *uuid_opt = vd_opt_str(a->opts, "uuid");
    uint64_t size = vd_round_up(a->size, 512);
    if (a->size > VD_MAX_VIRTUAL_SIZE || size / VDI_DEFAULT_BLOCK > 0x3fffffff)
        return vd_set_error(err, -EFBIG, "vdi: size %llu is too large for a VDI",
                            (unsigned long long)a->size);
    if (a->backing && fixed)
        return vd_set_error(err, -EINVAL, "vdi: a differencing image cannot be static");
    uint8_t h[512] = { 0 };
    uint32_t n_blocks = (uint32_t)((size + VDI_DEFAULT_BLOCK - 1) / VDI_DEFAULT_BLOCK);
    /* Data starts 1 MiB aligned, as VirtualBox lays it out (VDI_DATA_ALIGN):
     * blocks then sit on file-system block boundaries, so copy_file_range
     * can share them with a raw source (a reflink on XFS/btrfs). */
    uint64_t map_bytes_used = vd_round_up((uint64_t)n_blocks * 4, 512);
    uint64_t off_data = vd_round_up(512 + map_bytes_used, 1u << 20);
    uint32_t type = a->backing ? VDI_TYPE_DIFF : fixed ? VDI_TYPE_FIXED : VDI_TYPE_NORMAL;
    memcpy(h + VDI_O_TEXT, VDI_SIGNATURE_TEXT, sizeof VDI_SIGNATURE_TEXT - 1);
    vd_put_le32(h + VDI_O_MAGIC, VDI_MAGIC);
    vd_put_le32(h + VDI_O_VERSION, VDI_VERSION_1_1);
    vd_put_le32(h + VDI_O_HDR_SIZE, VDI_HEADER1PLUS_SIZE);
    vd_put_le32(h + VDI_O_TYPE, type);
    vd_put_le32(h + VDI_O_OFF_BLOCKS, 512);
    vd_put_le32(h + VDI_O_OFF_DATA, (uint32_t)off_data);
    vdi_put_geometry(h + VDI_O_CYLS, size);
    vd_put_le64(h + VDI_O_DISK_SIZE, size);
    vd_put_le32(h + VDI_O_BLOCK_SIZE, VDI_DEFAULT_BLOCK);
    vd_put_le32(h + VDI_O_BLOCKS, n_blocks);
    vd_put_le32(h + VDI_O_ALLOCATED, fixed ? n_blocks : 0);
    if (uuid_opt) {
        if (vdi_uuid_parse(uuid_opt, h + VDI_O_UUID_CREATE) < 0)
            return vd_set_error(err, -EINVAL, "vdi: uuid=%s is not a UUID", uuid_opt);
        if (vdi_uuid_is_null(h + VDI_O_UUID_CREATE))   /* VirtualBox refuses those */
            return vd_set_error(err, -EINVAL, "vdi: uuid=%s: the null UUID is not allowed",
                                uuid_opt);
    } else if ((r = vdi_uuid_random(h + VDI_O_UUID_CREATE)) < 0) {
        return vd_set_errno(err, r, "vdi: getrandom");
    }
    if ((r = vdi_uuid_random(h + VDI_O_UUID_MODIFY)) < 0)
        return vd_set_errno(err, r, "vdi: getrandom");
    if (a->backing && (r = vdi_create_parent(a, h + VDI_O_UUID_LINK, h + VDI_O_UUID_PARENT,
                                             err)) < 0)
        return r;
    vdi_put_geometry(h + VDI_O_LCHS, size);

    size_t map_bytes = (size_t)map_bytes_used;   /* the padding up to off_data stays a hole */
    uint8_t *map = malloc(map_bytes ? map_bytes : 1);
    if (!map)
        return vd_set_error(err, -ENOMEM, "out of memory");
    memset(map, 0xff, map_bytes);
    for (uint32_t i = 0; i < n_blocks; i++)
        vd_put_le32(map + (size_t)i * 4, fixed ? i : VDI_BLOCK_FREE);
    vd_file *f;
    r = vd_file_create(a->path, &f, err);
    if (r == 0) {
        if ((r = vd_file_pwrite(f, h, sizeof h, 0, err)) == 0 &&
            (r = vd_file_pwrite(f, map, map_bytes, 512, err)) == 0)
            r = vd_file_truncate(f, off_data + (fixed ? (uint64_t)n_blocks * VDI_DEFAULT_BLOCK
                                                      : 0), err);
        r = vd_file_create_finish(f, r, err);
    }
    free(map);
    return r;
}

/* Allocated data is stored plainly in the image file (zero-copy reads);
 * not with per-block extra data (blocks are then not contiguous). */
static vd_file *vdi_data_file(vd_image *img)
{
    struct vdi_state *s = img->priv;
    return s->block_extra ? NULL : img->file;
}

/* Whole blocks from `off`: a run of allocated blocks that follow each other
 * in the file is reported as it is; otherwise the following blocks that
 * have no data get the next data blocks, in order (so they are contiguous),
 * their map entries written, the file extended over them (holes read as
 * zeroes); the caller writes the data. */
static int vdi_map_for_write(vd_image *img, uint64_t off, uint64_t len, uint64_t *file_off,
                             uint64_t *mapped, vd_error *err)
{
    struct vdi_state *s = img->priv;
    uint32_t blk = (uint32_t)(off / s->block_size);
    bool fresh = s->bmap[blk] == VDI_BLOCK_FREE || s->bmap[blk] == VDI_BLOCK_ZERO;
    uint32_t first = fresh ? s->next_index : s->bmap[blk];
    uint64_t count = 1;
    while (count * s->block_size < len && blk + count < s->n_blocks) {
        uint32_t e = s->bmap[blk + count];
        bool next_fresh = e == VDI_BLOCK_FREE || e == VDI_BLOCK_ZERO;
        if (next_fresh != fresh || (!fresh && e != first + count))
            break;
        count++;
    }
    *file_off = vdi_block_file_off(s, first);
    *mapped = count * s->block_size < len ? count * s->block_size : len;
    if (!fresh)
        return 0;
    if (s->next_index + count > s->n_blocks)
        return vd_set_error(err, -ENOSPC, "vdi: no free data block index left for block %u", blk);
    int64_t have = vd_file_size(img->file, err);
    uint64_t need = vdi_block_file_off(s, first + (uint32_t)count);
    int r = have < 0 ? (int)have : 0;
    if (r == 0 && (uint64_t)have < need)
        r = vd_file_truncate(img->file, need, err);
    for (uint64_t i = 0; r == 0 && i < count; i++) {
        s->bmap[blk + i] = s->next_index++;
        s->n_alloc++;
        r = vdi_defer_bmap_entry(s, blk + (uint32_t)i, err);
    }
    return r;
}

static const char *const vdi_extensions[] = { "vdi", NULL };

static const vd_opt_desc vdi_create_opts[] = {
    { "static", "on: allocate every block up front (a fixed image); off (default): dynamic" },
    { "uuid", "creation UUID to store (keep an image's identity when migrating); default random" },
    { NULL, NULL },
};

const struct vd_driver vd_vdi = {
    .name = "vdi",
    .description = "VirtualBox Disk Image",
    .extensions = vdi_extensions,
    .probe = vdi_probe,
    .align = 512,
    .parallel_reads = true,
    .whole_clusters = true,
    .open = vdi_open,
    .close = vdi_close,
    .create = vdi_create,
    .create_opts = vdi_create_opts,
    .pread = vdi_pread,
    .pwrite = vdi_pwrite,
    .flush = vdi_flush,
    .block_status = vdi_block_status,
    .data_file = vdi_data_file,
    .map_for_write = vdi_map_for_write,
    .check = vdi_check,
    .details = vdi_details,
    .resize = vdi_resize,
    .resize_zero_tail = true,
    .set_backing = vdi_set_backing,
    .make_empty = vdi_make_empty,
    .can_write = VD_CAN_NATIVE,
};
