/* view.c - the tree vdmount shows: disk, partitions, partitions.json and the
 * ext2/3/4 file trees inside them.  See view.h. */
#include "view-int.h"
#include "tool.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void view_set_log(struct view *v, FILE *log) { v->log = log; }

int view_error(vd_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

void view_log(struct view *v, const vd_error *err)
{
    if (!v->log || !err->msg[0])
        return;
    pthread_mutex_lock(&v->log_lock);
    fprintf(v->log, "vdmount: %s\n", err->msg);
    fflush(v->log);
    pthread_mutex_unlock(&v->log_lock);
}

/* ---- partitions.json ----------------------------------------------------- */

static void view_json_fs(FILE *f, const struct view_part *vp)
{
    vt_json_member(f, ",\n      ", "filesystem", vp->fs ? vd_ext2_type(vp->fs) : NULL);
    if (vp->fs) {
        vt_json_member(f, ", ", "label", vd_ext2_label(vp->fs));
        vt_json_member(f, ", ", "uuid", vd_ext2_uuid(vp->fs));
    }
    if (vp->fs_error[0])
        vt_json_member(f, ",\n      ", "filesystem_error", vp->fs_error);
}

static int view_build_json(struct view *v)
{
    static const char *const schemes[] = { "none", "mbr", "gpt" };
    FILE *f = open_memstream(&v->json, &v->json_len);
    if (!f)
        return -ENOMEM;
    fprintf(f, "{\n  \"disk_size\": %" PRIu64 ",\n  \"scheme\": \"%s\",\n"
            "  \"sector_size\": %u,\n", vd_size(v->img), schemes[v->pt.scheme],
            v->pt.sector_size);
    if (v->pt.scheme == VD_PT_MBR)
        fprintf(f, "  \"disk_signature\": \"0x%08x\",\n", v->pt.mbr_signature);
    if (v->pt.scheme == VD_PT_GPT) {
        vt_json_member(f, "  ", "disk_guid", v->pt.disk_guid);
        fprintf(f, ",\n  \"gpt_backup_used\": %s,\n",
                v->pt.gpt_backup_used ? "true" : "false");
    }
    if (v->pt_error[0] || v->pt.warning[0]) {
        vt_json_member(f, "  ", "error", v->pt_error[0] ? v->pt_error : v->pt.warning);
        fputs(",\n", f);
    }
    if (v->whole.fs || v->whole.fs_error[0]) {
        fputs("  \"whole_disk\": {\n      \"file\": \"disk\"", f);
        view_json_fs(f, &v->whole);
        fputs("\n  },\n", f);
    }
    fputs("  \"partitions\": [", f);
    for (size_t i = 0; i < v->nparts; i++) {
        const struct view_part *vp = &v->parts[i];
        const vd_partition *p = &vp->p;
        fprintf(f, "%s\n    {\n      \"index\": %u, \"file\": \"%s\", \"start\": %" PRIu64
                ", \"length\": %" PRIu64, i ? "," : "", p->index, vp->name, p->start,
                p->length);
        if (v->pt.scheme == VD_PT_MBR) {
            fprintf(f, ",\n      \"type\": \"0x%02x\", \"bootable\": %s, \"logical\": %s,"
                    " \"extended\": %s", p->mbr_type, p->bootable ? "true" : "false",
                    p->logical ? "true" : "false", p->extended ? "true" : "false");
        } else {
            vt_json_member(f, ",\n      ", "type", p->type_guid);
            vt_json_member(f, ", ", "guid", p->part_guid);
            vt_json_member(f, ", ", "name", p->name);
            fprintf(f, ", \"attributes\": \"0x%016" PRIx64 "\"", p->gpt_attrs);
        }
        view_json_fs(f, vp);
        fputs("\n    }", f);
    }
    fputs(v->nparts ? "\n  ]\n}\n" : "]\n}\n", f);
    return fclose(f) ? -ENOMEM : 0;
}

/* ---- open/close ---------------------------------------------------------- */

static void view_try_fs(struct view *v, struct view_part *vp, uint64_t off, uint64_t len)
{
    if (!vd_ext2_probe(v->img, off, len))
        return;
    vd_error e = { 0 };
    vp->start = off;
    vp->length = len;
    /* A writable mount opens the file tree writable where that is safe;
     * where not, read-only, and says why (view_report_readonly). */
    if (v->rw && vd_ext2_open_rw(v->img, off, len, &vp->fs, &e) == 0)
        return;
    snprintf(vp->ro_reason, sizeof vp->ro_reason, "%s", e.msg);
    if (vd_ext2_open(v->img, off, len, &vp->fs, &e) < 0)
        snprintf(vp->fs_error, sizeof vp->fs_error, "%s", e.msg);
}

int view_open(vd_image *img, bool rw, struct view **out, vd_error *err)
{
    struct view *v = calloc(1, sizeof *v);
    if (!v)
        return view_error(err, -ENOMEM, "out of memory");
    v->img = img;
    v->rw = rw;
    pthread_mutex_init(&v->log_lock, NULL);
    if (stat(vd_filename(img), &v->base) < 0) {
        v->base.st_uid = getuid();
        v->base.st_gid = getgid();
    }
    vd_error e = { 0 };
    if (vd_partition_list(img, &v->pt, &e) < 0)
        snprintf(v->pt_error, sizeof v->pt_error, "%s", e.msg);
    v->parts = calloc(v->pt.n ? v->pt.n : 1, sizeof *v->parts);
    if (!v->parts) {
        view_close(v);
        return view_error(err, -ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < v->pt.n; i++) {
        struct view_part *vp = &v->parts[v->nparts++];
        vp->p = v->pt.v[i];
        snprintf(vp->name, sizeof vp->name, "p%u", vp->p.index);
        if (!vp->p.extended)
            view_try_fs(v, vp, vp->p.start, vp->p.length);
    }
    if (v->pt.scheme == VD_PT_NONE && !v->pt_error[0])
        view_try_fs(v, &v->whole, 0, vd_size(img));
    if (view_build_json(v) < 0) {
        view_close(v);
        return view_error(err, -ENOMEM, "out of memory");
    }
    *out = v;
    return 0;
}

void view_close(struct view *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->nparts; i++)
        vd_ext2_close(v->parts[i].fs);
    vd_ext2_close(v->whole.fs);
    free(v->parts);
    vd_partition_table_free(&v->pt);
    free(v->json);
    pthread_mutex_destroy(&v->log_lock);
    free(v);
}

static void view_report_fs(FILE *f, const char *what, const struct view_part *vp)
{
    if (vp->fs)
        fprintf(f, "  fs/%s: %s, label '%s', uuid %s\n", what, vd_ext2_type(vp->fs),
                vd_ext2_label(vp->fs), vd_ext2_uuid(vp->fs));
    if (vp->fs_error[0])
        fprintf(f, "  fs/%s: not readable: %s\n", what, vp->fs_error);
}

void view_set_base(struct view *v, const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0)
        v->base = st;
}

static void view_report_ro(FILE *f, const char *what, const struct view_part *vp)
{
    if (vp->fs && !vd_ext2_writable(vp->fs))
        fprintf(f, "vdmount: fs/%s stays read-only: %s\n", what, vp->ro_reason);
}

void view_report_readonly(struct view *v, FILE *f)
{
    if (!v->rw)
        return;
    for (size_t i = 0; i < v->nparts; i++)
        view_report_ro(f, v->parts[i].name, &v->parts[i]);
    view_report_ro(f, "disk", &v->whole);
}

void view_report(struct view *v, FILE *f)
{
    static const char *const schemes[] = { "no partition table", "MBR", "GPT" };
    fprintf(f, "%s: %s, %" PRIu64 " bytes, %s\n", vd_filename(v->img),
            vd_format_name(v->img), vd_size(v->img), schemes[v->pt.scheme]);
    if (v->pt_error[0])
        fprintf(f, "  partition table: %s\n", v->pt_error);
    if (v->pt.warning[0])
        fprintf(f, "  partition table: %s\n", v->pt.warning);
    for (size_t i = 0; i < v->nparts; i++) {
        const vd_partition *p = &v->parts[i].p;
        fprintf(f, "  %s: start %" PRIu64 ", %" PRIu64 " bytes%s\n", v->parts[i].name,
                p->start, p->length, p->extended ? " (extended)" : "");
        view_report_fs(f, v->parts[i].name, &v->parts[i]);
    }
    view_report_fs(f, "disk", &v->whole);
}

/* ---- resolving paths ----------------------------------------------------- */

struct view_part *view_part_of(struct view *v, int part)
{
    if (part == -1)
        return &v->whole;
    if (part < 0 || (size_t)part >= v->nparts)
        return NULL;
    return &v->parts[part];
}

/* Find "pN" (or "disk" for the whole-disk file system when `fs`) by name. */
static int view_find_part(struct view *v, const char *name, size_t len, bool fs)
{
    if (fs && len == 4 && !memcmp(name, "disk", 4))
        return v->whole.fs || v->whole.fs_error[0] ? -1 : -2;
    for (size_t i = 0; i < v->nparts; i++) {
        const struct view_part *vp = &v->parts[i];
        if (strlen(vp->name) == len && !memcmp(vp->name, name, len) &&
            (!fs || vp->fs || vp->fs_error[0]))
            return i;
    }
    return -2;
}

const char *view_first_fs(struct view *v)
{
    if (v->whole.fs)
        return "disk";
    for (size_t i = 0; i < v->nparts; i++)
        if (v->parts[i].fs)
            return v->parts[i].name;
    return NULL;
}

int view_resolve(struct view *v, const char *path, struct view_node *n)
{
    *n = (struct view_node){ .kind = VIEW_NONE, .part = -1 };
    while (*path == '/')
        path++;
    size_t len = strcspn(path, "/");
    const char *rest = path + len;
    while (*rest == '/')
        rest++;
    if (len == 0) {
        n->kind = VIEW_ROOT;
        return 0;
    }
    if (len == 4 && !memcmp(path, "disk", 4) && !*rest) {
        n->kind = VIEW_DISK;
        return 0;
    }
    if (!strcmp(path, "partitions.json")) {
        n->kind = VIEW_JSON;
        return 0;
    }
    if (len == 2 && !memcmp(path, "fs", 2)) {
        if (!*rest) {
            n->kind = VIEW_FSDIR;
            return 0;
        }
        size_t plen = strcspn(rest, "/");
        int part = view_find_part(v, rest, plen, true);
        if (part == -2)
            return -ENOENT;
        struct view_part *vp = view_part_of(v, part);
        if (!vp->fs) {
            /* the file system is there but unreadable: its root exists */
            if (rest[plen] && rest[plen + strspn(rest + plen, "/")])
                return -EIO;
            *n = (struct view_node){ VIEW_FS, part, VD_EXT2_ROOT_INO };
            return 0;
        }
        vd_error e = { 0 };
        uint32_t ino;
        int r = vd_ext2_lookup(vp->fs, rest + plen, false, &ino, &e);
        if (r < 0) {
            if (r != -ENOENT && r != -ENOTDIR)
                view_log(v, &e);
            return r;
        }
        *n = (struct view_node){ VIEW_FS, part, ino };
        return 0;
    }
    if (*rest)
        return -ENOENT;
    int part = view_find_part(v, path, len, false);
    if (part < 0)
        return -ENOENT;
    *n = (struct view_node){ VIEW_PART, part, 0 };
    return 0;
}

/* ---- attributes ---------------------------------------------------------- */

static void view_synthetic(struct view *v, struct stat *st, mode_t mode, uint64_t ino,
                           uint64_t size)
{
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_mode = mode;
    st->st_nlink = S_ISDIR(mode) ? 2 : 1;
    st->st_uid = v->base.st_uid;
    st->st_gid = v->base.st_gid;
    st->st_size = size;
    st->st_blocks = (size + 511) / 512;
    st->st_blksize = 4096;
    st->st_atim = v->base.st_atim;
    st->st_mtim = v->base.st_mtim;
    st->st_ctim = v->base.st_ctim;
}

int view_stat(struct view *v, const struct view_node *n, struct stat *st)
{
    mode_t file = S_IFREG | (v->rw ? 0644 : 0444);
    struct view_part *vp;
    switch (n->kind) {
    case VIEW_ROOT:
        view_synthetic(v, st, S_IFDIR | 0555, VIEW_INO_ROOT, 0);
        return 0;
    case VIEW_FSDIR:
        view_synthetic(v, st, S_IFDIR | 0555, VIEW_INO_FSDIR, 0);
        return 0;
    case VIEW_DISK:
        view_synthetic(v, st, file, VIEW_INO_DISK, vd_size(v->img));
        return 0;
    case VIEW_JSON:
        view_synthetic(v, st, S_IFREG | 0444, VIEW_INO_JSON, v->json_len);
        return 0;
    case VIEW_PART:
        vp = view_part_of(v, n->part);
        if (!vp)
            return -ENOENT;
        view_synthetic(v, st, file, VIEW_INO_PART + n->part, vp->p.length);
        return 0;
    case VIEW_FS: {
        vp = view_part_of(v, n->part);
        if (!vp)
            return -ENOENT;
        uint64_t tag = (uint64_t)(n->part == -1 ? VIEW_WHOLE_DISK_FS
                                                : (unsigned)n->part + 1) << 32;
        if (!vp->fs) {
            view_synthetic(v, st, S_IFDIR | 0555, tag | VD_EXT2_ROOT_INO, 0);
            return 0;
        }
        vd_error e = { 0 };
        int r = vd_ext2_stat(vp->fs, n->ino, st, &e);
        if (r < 0) {
            view_log(v, &e);
            return r;
        }
        st->st_ino |= tag;
        return 0;
    }
    default:
        return -ENOENT;
    }
}

/* ---- directories --------------------------------------------------------- */

struct view_fsdir {
    view_dir_fn fn;
    void *ctx;
};

static int view_fsdir_cb(void *ctx, const char *name, uint32_t ino, unsigned char type)
{
    (void)ino; (void)type;
    struct view_fsdir *d = ctx;
    if (!strcmp(name, ".") || !strcmp(name, ".."))
        return 0;
    return d->fn(d->ctx, name, NULL);
}

int view_readdir(struct view *v, const struct view_node *n, view_dir_fn fn, void *ctx)
{
    struct stat st;
    struct view_node c;
    int r = 0;
    switch (n->kind) {
    case VIEW_ROOT:
        c = (struct view_node){ VIEW_DISK, -1, 0 };
        view_stat(v, &c, &st);
        r = fn(ctx, "disk", &st);
        for (size_t i = 0; !r && i < v->nparts; i++) {
            c = (struct view_node){ VIEW_PART, (int)i, 0 };
            view_stat(v, &c, &st);
            r = fn(ctx, v->parts[i].name, &st);
        }
        if (!r) {
            c = (struct view_node){ VIEW_JSON, -1, 0 };
            view_stat(v, &c, &st);
            r = fn(ctx, "partitions.json", &st);
        }
        if (!r) {
            c = (struct view_node){ VIEW_FSDIR, -1, 0 };
            view_stat(v, &c, &st);
            r = fn(ctx, "fs", &st);
        }
        return r < 0 ? r : 0;
    case VIEW_FSDIR:
        /* the stat of each root is not needed here, only a non-zero inode
         * number (the kernel hides entries whose d_ino is 0) */
        if (v->whole.fs || v->whole.fs_error[0]) {
            view_synthetic(v, &st, S_IFDIR | 0555,
                           (uint64_t)VIEW_WHOLE_DISK_FS << 32 | VD_EXT2_ROOT_INO, 0);
            r = fn(ctx, "disk", &st);
        }
        for (size_t i = 0; !r && i < v->nparts; i++) {
            if (v->parts[i].fs || v->parts[i].fs_error[0]) {
                view_synthetic(v, &st, S_IFDIR | 0555,
                               (uint64_t)(i + 1) << 32 | VD_EXT2_ROOT_INO, 0);
                r = fn(ctx, v->parts[i].name, &st);
            }
        }
        return r < 0 ? r : 0;
    case VIEW_FS: {
        struct view_part *vp = view_part_of(v, n->part);
        if (!vp)
            return -ENOENT;
        if (!vp->fs)
            return -EIO;
        struct view_fsdir d = { fn, ctx };
        vd_error e = { 0 };
        r = vd_ext2_readdir(vp->fs, n->ino, view_fsdir_cb, &d, &e);
        if (r < 0 && e.msg[0])
            view_log(v, &e);
        return r < 0 ? r : 0;
    }
    case VIEW_NONE:
        return -ENOENT;
    default:
        return -ENOTDIR;
    }
}

/* ---- contents ------------------------------------------------------------ */

/* The byte range of the image behind a disk or partition node. */
static int view_range(struct view *v, const struct view_node *n, uint64_t *start,
                      uint64_t *len)
{
    if (n->kind == VIEW_DISK) {
        *start = 0;
        *len = vd_size(v->img);
        return 0;
    }
    struct view_part *vp = view_part_of(v, n->part);
    if (n->kind != VIEW_PART || !vp)
        return -EINVAL;
    *start = vp->p.start;
    *len = vp->p.length;
    return 0;
}

ssize_t view_read(struct view *v, const struct view_node *n, void *buf, size_t len,
                  uint64_t off)
{
    vd_error e = { 0 };
    if (n->kind == VIEW_JSON) {
        if (off >= v->json_len)
            return 0;
        size_t k = v->json_len - off < len ? v->json_len - off : len;
        memcpy(buf, v->json + off, k);
        return k;
    }
    if (n->kind == VIEW_FS) {
        struct view_part *vp = view_part_of(v, n->part);
        if (!vp || !vp->fs)
            return -EIO;
        ssize_t r = vd_ext2_pread(vp->fs, n->ino, buf, len, off, &e);
        if (r < 0)
            view_log(v, &e);
        return r;
    }
    uint64_t start, size;
    int r = view_range(v, n, &start, &size);
    if (r < 0)
        return n->kind == VIEW_NONE ? -ENOENT : -EISDIR;
    if (off >= size)
        return 0;
    if (len > size - off)
        len = size - off;
    r = vd_pread(v->img, buf, len, start + off, &e);
    if (r < 0) {
        view_log(v, &e);
        return r;
    }
    return len;
}

bool view_writable(struct view *v, const struct view_node *n)
{
    if (n->kind == VIEW_FS) {
        struct view_part *vp = view_part_of(v, n->part);
        return v->rw && vp && vp->fs && vd_ext2_writable(vp->fs) &&
               view_claim_of(vp) != VIEW_CLAIM_RAW;
    }
    return v->rw && (n->kind == VIEW_DISK ||
                     (n->kind == VIEW_PART && !v->parts[n->part].p.extended));
}

/* Claim `vp` for `want` (see enum view_claim): 0, or -EBUSY when the other
 * kind of write has it. */
int view_claim(struct view *v, struct view_part *vp, enum view_claim want)
{
    int have = VIEW_CLAIM_NONE, r = 0;
    if (!__atomic_compare_exchange_n(&vp->claim, &have, (int)want, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE) && have != (int)want)
        r = -EBUSY;
    if (r < 0) {
        const char *name = vp == &v->whole ? "disk" : vp->name;
        vd_error e = { 0 };
        if (want == VIEW_CLAIM_RAW)
            view_error(&e, r, "%s: raw write refused: its file system was changed "
                       "through fs/%s", name, name);
        else
            view_error(&e, r, "fs/%s: read-only from now on: %s was written as raw "
                       "bytes", name, name);
        view_log(v, &e);
    }
    return r;
}

/* Raw bytes [start, start+len) of the image are about to be written: claim
 * every writable file system they touch. */
static int view_claim_raw(struct view *v, uint64_t start, uint64_t len)
{
    for (size_t i = 0; i <= v->nparts; i++) {
        struct view_part *vp = i < v->nparts ? &v->parts[i] : &v->whole;
        if (!vp->fs || !vd_ext2_writable(vp->fs) || start >= vp->start + vp->length ||
            start + len <= vp->start)
            continue;
        int r = view_claim(v, vp, VIEW_CLAIM_RAW);
        if (r < 0)
            return r;
    }
    return 0;
}

ssize_t view_write(struct view *v, const struct view_node *n, const void *buf,
                   size_t len, uint64_t off)
{
    vd_error e = { 0 };
    if (n->kind == VIEW_FS) {
        struct view_part *vp = view_part_of(v, n->part);
        if (!view_writable(v, n) || view_claim(v, vp, VIEW_CLAIM_FS) < 0)
            return -EROFS;
        ssize_t w = vd_ext2_pwrite(vp->fs, n->ino, buf, len, off, &e);
        if (w < 0)
            view_log(v, &e);
        return w;
    }
    if (!view_writable(v, n))
        return -EROFS;
    uint64_t start, size;
    int r = view_range(v, n, &start, &size);
    if (r < 0)
        return r;
    if (off >= size)
        return len ? -ENOSPC : 0;
    if (len > size - off)
        len = size - off;     /* a short write: the disk does not grow */
    r = view_claim_raw(v, start + off, len);
    if (r < 0)
        return r;
    r = vd_pwrite(v->img, buf, len, start + off, &e);
    if (r < 0) {
        view_log(v, &e);
        return r;
    }
    return len;
}

int view_flush_trees(struct view *v)
{
    vd_error e = { 0 };
    int r = 0;
    for (size_t i = 0; i <= v->nparts && r == 0; i++) {
        struct view_part *vp = i < v->nparts ? &v->parts[i] : &v->whole;
        if (vp->fs && view_claim_of(vp) == VIEW_CLAIM_FS)
            r = vd_ext2_flush(vp->fs, &e);
    }
    if (r < 0)
        view_log(v, &e);
    return r;
}

int view_flush(struct view *v)
{
    if (!v->rw)
        return 0;
    /* the file trees' bitmaps, group descriptors and superblock first */
    int r = view_flush_trees(v);
    if (r < 0)
        return r;
    vd_error e = { 0 };
    r = vd_flush(v->img, &e);
    if (r < 0)
        view_log(v, &e);
    return r;
}

int view_statfs(struct view *v, const struct view_node *n, struct statvfs *sv)
{
    struct view_part *vp = n->kind == VIEW_FS ? view_part_of(v, n->part) : NULL;
    if (!vp || !vp->fs)
        return -ENOENT;
    return vd_ext2_statfs(vp->fs, sv);
}

int view_readlink(struct view *v, const struct view_node *n, char *buf, size_t size)
{
    struct view_part *vp = view_part_of(v, n->part);
    if (n->kind != VIEW_FS || !vp || !vp->fs)
        return -EINVAL;
    vd_error e = { 0 };
    int r = vd_ext2_readlink(vp->fs, n->ino, buf, size, &e);
    if (r < 0 && r != -EINVAL)
        view_log(v, &e);
    return r;
}

ssize_t view_listxattr(struct view *v, const struct view_node *n, char *buf, size_t size)
{
    struct view_part *vp = view_part_of(v, n->part);
    if (n->kind != VIEW_FS || !vp || !vp->fs)
        return 0;
    vd_error e = { 0 };
    ssize_t r = vd_ext2_listxattr(vp->fs, n->ino, buf, size, &e);
    if (r < 0 && r != -ERANGE)
        view_log(v, &e);
    return r;
}

ssize_t view_getxattr(struct view *v, const struct view_node *n, const char *name,
                      void *buf, size_t size)
{
    struct view_part *vp = view_part_of(v, n->part);
    if (n->kind != VIEW_FS || !vp || !vp->fs)
        return -ENODATA;
    vd_error e = { 0 };
    ssize_t r = vd_ext2_getxattr(vp->fs, n->ino, name, buf, size, &e);
    if (r < 0 && r != -ERANGE && r != -ENODATA)
        view_log(v, &e);
    return r;
}
