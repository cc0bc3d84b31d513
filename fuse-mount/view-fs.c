/* view-fs.c - changing the ext2/3/4 file trees under fs/: paths of the view
 * become (file system, directory inode, name) for the calls of
 * vdisk-ext2.h.  Every change claims its partition for file-tree writes
 * (view_claim), after which its raw bytes are no longer writable. */
#include "view-int.h"

#include <errno.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>

/* The file tree a node lives in, claimed for writing; -EROFS when it is not
 * a writable file tree. */
static int view_fs_of(struct view *v, const struct view_node *n, struct view_part **out)
{
    struct view_part *vp = n->kind == VIEW_FS ? view_part_of(v, n->part) : NULL;
    if (!vp || !view_writable(v, n))
        return -EROFS;
    if (view_claim(v, vp, VIEW_CLAIM_FS) < 0)
        return -EROFS;
    *out = vp;
    return 0;
}

/* Split `path` into its directory (resolved, claimed) and last name. */
static int view_parent(struct view *v, const char *path, struct view_node *dir,
                       struct view_part **vp, const char **name)
{
    const char *slash = strrchr(path, '/');
    *name = slash ? slash + 1 : path;
    size_t dlen = slash ? (size_t)(slash - path) : 0;
    char *d = strndup(path, dlen);
    if (!d)
        return -ENOMEM;
    int r = view_resolve(v, d, dir);
    free(d);
    if (r < 0)
        return r;
    if (!**name || !strcmp(*name, ".") || !strcmp(*name, ".."))
        return -EINVAL;
    return view_fs_of(v, dir, vp);
}

/* Log the error of a call that failed for a reason worth telling (not a
 * plain "exists" or "not empty" that the caller expects). */
static int view_done(struct view *v, int r, const vd_error *e)
{
    if (r < 0 && r != -EEXIST && r != -ENOTEMPTY && r != -ENOENT && r != -EISDIR &&
        r != -ENOTDIR && r != -EINVAL)
        view_log(v, e);
    return r < 0 ? r : 0;
}

/* The calls of vdisk-ext2.h that change one name in a directory or one
 * inode, and their arguments: every such change of the view goes through
 * view_change_at or view_change_node, which resolve, claim, call and log. */
enum view_op { VIEW_OP_CREATE, VIEW_OP_MKDIR, VIEW_OP_SYMLINK, VIEW_OP_UNLINK, VIEW_OP_RMDIR,
               VIEW_OP_TRUNCATE, VIEW_OP_CHMOD, VIEW_OP_CHOWN, VIEW_OP_UTIMENS };
struct view_change {
    enum view_op op;
    mode_t mode;
    dev_t rdev;
    uid_t uid;
    gid_t gid;
    const char *target;             /* symlink */
    uint64_t size;                  /* truncate */
    const struct timespec *ts;      /* utimens */
};

/* Make change `c` in file system `fs`: to `name` in directory `ino` (create,
 * mkdir, symlink, unlink, rmdir; a new inode in *made) or to inode `ino`. */
static int view_apply(vd_ext2 *fs, uint32_t ino, const char *name, const struct view_change *c,
                      uint32_t *made, vd_error *e)
{
    switch (c->op) {
    case VIEW_OP_CREATE:
        return vd_ext2_create(fs, ino, name, c->mode, c->rdev, c->uid, c->gid, made, e);
    case VIEW_OP_MKDIR: return vd_ext2_mkdir(fs, ino, name, c->mode, c->uid, c->gid, made, e);
    case VIEW_OP_SYMLINK:
        return vd_ext2_symlink(fs, ino, name, c->target, c->uid, c->gid, made, e);
    case VIEW_OP_UNLINK: return vd_ext2_unlink(fs, ino, name, e);
    case VIEW_OP_RMDIR: return vd_ext2_rmdir(fs, ino, name, e);
    case VIEW_OP_TRUNCATE: return vd_ext2_truncate(fs, ino, c->size, e);
    case VIEW_OP_CHMOD: return vd_ext2_chmod(fs, ino, c->mode, e);
    case VIEW_OP_CHOWN: return vd_ext2_chown(fs, ino, c->uid, c->gid, e);
    case VIEW_OP_UTIMENS: return vd_ext2_utimens(fs, ino, c->ts, e);
    }
    return -EINVAL;
}

/* A change to the last name of `path`; a new node in *out (may be NULL). */
static int view_change_at(struct view *v, const char *path, const struct view_change *c,
                          struct view_node *out)
{
    struct view_node dir;
    struct view_part *vp;
    const char *name;
    int r = view_parent(v, path, &dir, &vp, &name);
    if (r < 0)
        return r;
    vd_error e = { 0 };
    uint32_t ino = 0;
    r = view_apply(vp->fs, dir.ino, name, c, &ino, &e);
    if (r == 0 && out)
        *out = (struct view_node){ VIEW_FS, dir.part, ino };
    return view_done(v, r, &e);
}

/* A change to the inode of node `n`. */
static int view_change_node(struct view *v, const struct view_node *n,
                            const struct view_change *c)
{
    struct view_part *vp;
    int r = view_fs_of(v, n, &vp);
    if (r < 0)
        return r;
    vd_error e = { 0 };
    return view_done(v, view_apply(vp->fs, n->ino, NULL, c, NULL, &e), &e);
}

int view_mknod(struct view *v, const char *path, mode_t mode, dev_t rdev, uid_t uid,
               gid_t gid, struct view_node *out)
{
    const struct view_change c = { .op = VIEW_OP_CREATE, .mode = mode, .rdev = rdev,
                                   .uid = uid, .gid = gid };
    return view_change_at(v, path, &c, out);
}

int view_mkdir(struct view *v, const char *path, mode_t mode, uid_t uid, gid_t gid)
{
    const struct view_change c = { .op = VIEW_OP_MKDIR, .mode = mode, .uid = uid, .gid = gid };
    return view_change_at(v, path, &c, NULL);
}

int view_symlink(struct view *v, const char *target, const char *path, uid_t uid,
                 gid_t gid)
{
    const struct view_change c = { .op = VIEW_OP_SYMLINK, .target = target, .uid = uid,
                                   .gid = gid };
    return view_change_at(v, path, &c, NULL);
}

int view_unlink(struct view *v, const char *path)
{
    const struct view_change c = { .op = VIEW_OP_UNLINK };
    return view_change_at(v, path, &c, NULL);
}

int view_rmdir(struct view *v, const char *path)
{
    const struct view_change c = { .op = VIEW_OP_RMDIR };
    return view_change_at(v, path, &c, NULL);
}

int view_truncate(struct view *v, const struct view_node *n, uint64_t size)
{
    const struct view_change c = { .op = VIEW_OP_TRUNCATE, .size = size };
    return view_change_node(v, n, &c);
}

int view_chmod(struct view *v, const struct view_node *n, mode_t mode)
{
    const struct view_change c = { .op = VIEW_OP_CHMOD, .mode = mode };
    return view_change_node(v, n, &c);
}

int view_chown(struct view *v, const struct view_node *n, uid_t uid, gid_t gid)
{
    const struct view_change c = { .op = VIEW_OP_CHOWN, .uid = uid, .gid = gid };
    return view_change_node(v, n, &c);
}

int view_utimens(struct view *v, const struct view_node *n, const struct timespec ts[2])
{
    const struct view_change c = { .op = VIEW_OP_UTIMENS, .ts = ts };
    return view_change_node(v, n, &c);
}

int view_link(struct view *v, const char *from, const char *to)
{
    struct view_node src, dir;
    struct view_part *vp;
    const char *name;
    int r = view_resolve(v, from, &src);
    if (r < 0)
        return r;
    r = view_parent(v, to, &dir, &vp, &name);
    if (r < 0)
        return r;
    if (src.kind != VIEW_FS || src.part != dir.part)
        return -EXDEV;
    vd_error e = { 0 };
    return view_done(v, vd_ext2_link(vp->fs, src.ino, dir.ino, name, &e), &e);
}

int view_rename(struct view *v, const char *from, const char *to, unsigned flags)
{
    struct view_node fdir, tdir;
    struct view_part *fvp, *tvp;
    const char *fname, *tname;
    if (flags & ~(unsigned)RENAME_NOREPLACE)
        return -EINVAL;       /* RENAME_EXCHANGE, RENAME_WHITEOUT */
    int r = view_parent(v, from, &fdir, &fvp, &fname);
    if (r < 0)
        return r;
    r = view_parent(v, to, &tdir, &tvp, &tname);
    if (r < 0)
        return r;
    if (fvp != tvp)
        return -EXDEV;
    vd_error e = { 0 };
    r = vd_ext2_rename(fvp->fs, fdir.ino, fname, tdir.ino, tname,
                       flags & RENAME_NOREPLACE ? VD_EXT2_NOREPLACE : 0, &e);
    return view_done(v, r, &e);
}
