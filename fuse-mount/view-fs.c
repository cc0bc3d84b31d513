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

int view_mknod(struct view *v, const char *path, mode_t mode, dev_t rdev, uid_t uid,
               gid_t gid, struct view_node *out)
{
    struct view_node dir;
    struct view_part *vp;
    const char *name;
    int r = view_parent(v, path, &dir, &vp, &name);
    if (r < 0)
        return r;
    vd_error e = { 0 };
    uint32_t ino = 0;
    r = vd_ext2_create(vp->fs, dir.ino, name, mode, rdev, uid, gid, &ino, &e);
    if (r == 0 && out)
        *out = (struct view_node){ VIEW_FS, dir.part, ino };
    return view_done(v, r, &e);
}

int view_mkdir(struct view *v, const char *path, mode_t mode, uid_t uid, gid_t gid)
{
    struct view_node dir;
    struct view_part *vp;
    const char *name;
    int r = view_parent(v, path, &dir, &vp, &name);
    if (r < 0)
        return r;
    vd_error e = { 0 };
    uint32_t ino;
    return view_done(v, vd_ext2_mkdir(vp->fs, dir.ino, name, mode, uid, gid, &ino, &e), &e);
}

int view_symlink(struct view *v, const char *target, const char *path, uid_t uid,
                 gid_t gid)
{
    struct view_node dir;
    struct view_part *vp;
    const char *name;
    int r = view_parent(v, path, &dir, &vp, &name);
    if (r < 0)
        return r;
    vd_error e = { 0 };
    uint32_t ino;
    return view_done(v, vd_ext2_symlink(vp->fs, dir.ino, name, target, uid, gid, &ino, &e),
                     &e);
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

int view_unlink(struct view *v, const char *path)
{
    struct view_node dir;
    struct view_part *vp;
    const char *name;
    int r = view_parent(v, path, &dir, &vp, &name);
    if (r < 0)
        return r;
    vd_error e = { 0 };
    return view_done(v, vd_ext2_unlink(vp->fs, dir.ino, name, &e), &e);
}

int view_rmdir(struct view *v, const char *path)
{
    struct view_node dir;
    struct view_part *vp;
    const char *name;
    int r = view_parent(v, path, &dir, &vp, &name);
    if (r < 0)
        return r;
    vd_error e = { 0 };
    return view_done(v, vd_ext2_rmdir(vp->fs, dir.ino, name, &e), &e);
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

int view_truncate(struct view *v, const struct view_node *n, uint64_t size)
{
    struct view_part *vp;
    int r = view_fs_of(v, n, &vp);
    if (r < 0)
        return r;
    vd_error e = { 0 };
    return view_done(v, vd_ext2_truncate(vp->fs, n->ino, size, &e), &e);
}

int view_chmod(struct view *v, const struct view_node *n, mode_t mode)
{
    struct view_part *vp;
    int r = view_fs_of(v, n, &vp);
    if (r < 0)
        return r;
    vd_error e = { 0 };
    return view_done(v, vd_ext2_chmod(vp->fs, n->ino, mode, &e), &e);
}

int view_chown(struct view *v, const struct view_node *n, uid_t uid, gid_t gid)
{
    struct view_part *vp;
    int r = view_fs_of(v, n, &vp);
    if (r < 0)
        return r;
    vd_error e = { 0 };
    return view_done(v, vd_ext2_chown(vp->fs, n->ino, uid, gid, &e), &e);
}

int view_utimens(struct view *v, const struct view_node *n, const struct timespec ts[2])
{
    struct view_part *vp;
    int r = view_fs_of(v, n, &vp);
    if (r < 0)
        return r;
    vd_error e = { 0 };
    return view_done(v, vd_ext2_utimens(vp->fs, n->ino, ts, &e), &e);
}
