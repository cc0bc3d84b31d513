/* ext2-names.c - the names of an ext2/3/4 file system inside an image:
 * create, mknod, mkdir, symlink, link, unlink, rmdir, rename, through
 * libext2fs (ext2-write.c opens it read-write).  See vdisk-ext2.h. */
#include "ext2-internal.h"
#include "vd-driver.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <time.h>

/* ---- helpers ------------------------------------------------------------- */

static int e2w_ftype(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG: return EXT2_FT_REG_FILE;
    case S_IFDIR: return EXT2_FT_DIR;
    case S_IFCHR: return EXT2_FT_CHRDEV;
    case S_IFBLK: return EXT2_FT_BLKDEV;
    case S_IFIFO: return EXT2_FT_FIFO;
    case S_IFSOCK: return EXT2_FT_SOCK;
    case S_IFLNK: return EXT2_FT_SYMLINK;
    default: return EXT2_FT_UNKNOWN;
    }
}

/* The inode `name` in `dir` names (0 when none), checking the name. */
static int e2w_lookup(vd_ext2 *x, uint32_t dir, const char *name, uint32_t *ino,
                      vd_error *err)
{
    size_t n = strlen(name);
    *ino = 0;
    if (n == 0 || strchr(name, '/'))
        return vd_set_error(err, -EINVAL, "ext2: invalid name '%s'", name);
    if (n > EXT2_NAME_LEN)
        return vd_set_error(err, -ENAMETOOLONG, "ext2: name of %zu bytes", n);
    ext2_ino_t i;
    errcode_t e = ext2fs_lookup(x->fs, dir, name, n, NULL, &i);
    if (e == EXT2_ET_FILE_NOT_FOUND)
        return 0;
    if (e)
        return e2v_fail(err, e, "directory inode %u: %s", dir, name);
    *ino = i;
    return 0;
}

/* Add a name, growing the directory by a block when it is full. */
static int e2w_link(vd_ext2 *x, uint32_t dir, const char *name, uint32_t ino, mode_t mode,
                    vd_error *err)
{
    errcode_t e = ext2fs_link(x->fs, dir, name, ino, e2w_ftype(mode));
    if (e == EXT2_ET_DIR_NO_SPACE) {
        e = ext2fs_expand_dir(x->fs, dir);
        if (!e)
            e = ext2fs_link(x->fs, dir, name, ino, e2w_ftype(mode));
    }
    return e ? e2v_fail(err, e, "directory inode %u: add %s", dir, name) : 0;
}

/* Free an inode that has lost its last link: its blocks (e2w_free_blocks),
 * its extended attribute block (shared ones by reference count), then the
 * inode. */
static int e2w_release(vd_ext2 *x, uint32_t ino, struct ext2_inode_large *in,
                       vd_error *err)
{
    int r = e2w_free_blocks(x, ino, in, err);
    if (r < 0)
        return r;
    errcode_t e = ext2fs_free_ext_attr(x->fs, ino, in);
    if (e) {
        x->broken = true;
        return e2v_fail(err, e, "inode %u: free", ino);
    }
    in->i_links_count = 0;
    in->i_dtime = (uint32_t)time(NULL);
    r = e2w_write_inode(x, ino, in, err);
    if (r == 0)
        ext2fs_inode_alloc_stats2(x->fs, ino, -1, LINUX_S_ISDIR(in->i_mode));
    return r;
}

/* One link less; frees the inode with the last one. */
static int e2w_drop_link(vd_ext2 *x, uint32_t ino, vd_error *err)
{
    struct ext2_inode_large in;
    int r = e2v_read_inode(x, ino, &in, err);
    if (r < 0)
        return r;
    if (in.i_links_count > 1) {
        in.i_links_count--;
        struct timespec now = e2w_now();
        e2w_set_time(x, &in, E2W_CTIME, &now);
        return e2w_write_inode(x, ino, &in, err);
    }
    return e2w_release(x, ino, &in, err);
}

/* A directory's link count (its ".." entries of subdirectories): with
 * dir_nlink, 1 stands for "more than 65000". */
static int e2w_dir_nlink(vd_ext2 *x, uint32_t dir, int delta, vd_error *err)
{
    struct ext2_inode_large in;
    int r = e2v_read_inode(x, dir, &in, err);
    if (r < 0)
        return r;
    if (delta > 0 && in.i_links_count >= EXT2_LINK_MAX - 1) {
        if (!ext2fs_has_feature_dir_nlink(x->fs->super))
            return vd_set_error(err, -EMLINK, "ext2: directory inode %u: too many links",
                                dir);
        in.i_links_count = 1;
    } else if (delta > 0 && in.i_links_count > 1) {
        in.i_links_count++;
    } else if (delta < 0 && in.i_links_count > 2) {
        in.i_links_count--;
    }
    return e2w_write_inode(x, dir, &in, err);
}

/* After libext2fs made an inode (mkdir, symlink): mode bits, owner, times. */
static int e2w_adopt(vd_ext2 *x, uint32_t dir, const char *name, mode_t mode, uid_t uid,
                     gid_t gid, uint32_t *ino, vd_error *err)
{
    int r = e2w_lookup(x, dir, name, ino, err);
    if (r == 0 && !*ino)
        r = vd_set_error(err, -EIO, "ext2: %s vanished after it was made", name);
    struct ext2_inode_large in;
    if (r == 0)
        r = e2v_read_inode(x, *ino, &in, err);
    if (r < 0)
        return r;
    if (mode != (mode_t)-1)
        in.i_mode = (in.i_mode & S_IFMT) | (mode & 07777);
    e2w_set_owner(&in, uid, gid);
    struct timespec now = e2w_now();
    for (int t = E2W_ATIME; t <= E2W_CRTIME; t++)
        e2w_set_time(x, &in, t, &now);
    r = e2w_write_inode(x, *ino, &in, err);
    return r < 0 ? r : e2w_touch(x, dir, err);
}

/* ---- names --------------------------------------------------------------- */

/* Lock, refuse read-only handles, and check that `name` is free in `dir`. */
static int e2w_enter_new(vd_ext2 *x, uint32_t dir, const char *name, vd_error *err)
{
    pthread_mutex_lock(&x->lock);
    uint32_t old;
    int r = e2w_begin(x, err);
    if (r == 0)
        r = e2w_lookup(x, dir, name, &old, err);
    if (r == 0 && old)
        r = vd_set_error(err, -EEXIST, "ext2: %s exists", name);
    return r;
}

int vd_ext2_create(vd_ext2 *x, uint32_t dir, const char *name, mode_t mode, dev_t rdev,
                   uid_t uid, gid_t gid, uint32_t *ino, vd_error *err)
{
    int r = e2w_enter_new(x, dir, name, err);
    ext2_ino_t i = 0;
    errcode_t e = r < 0 ? 0 : ext2fs_new_inode(x->fs, dir, mode, NULL, &i);
    if (e)
        r = e2v_fail(err, e, "new inode for %s", name);
    if (r == 0)
        r = e2w_link(x, dir, name, i, mode, err);
    if (r == 0) {
        struct ext2_inode_large in = { 0 };
        in.i_mode = mode;
        in.i_links_count = 1;
        e2w_set_owner(&in, uid, gid);
        if (EXT2_INODE_SIZE(x->fs->super) >= sizeof in)
            in.i_extra_isize = sizeof in - EXT2_GOOD_OLD_INODE_SIZE;
        struct timespec now = e2w_now();
        for (int t = E2W_ATIME; t <= E2W_CRTIME; t++)
            e2w_set_time(x, &in, t, &now);
        if (S_ISCHR(mode) || S_ISBLK(mode)) {
            unsigned ma = major(rdev), mi = minor(rdev);
            in.i_block[1] = (mi & 0xff) | (ma & 0xfff) << 8 | (mi & ~0xffu) << 12;
        } else if (S_ISREG(mode) && ext2fs_has_feature_extents(x->fs->super)) {
            ext2_extent_handle_t h;   /* puts an empty extent header in i_block */
            e = ext2fs_extent_open2(x->fs, i, (struct ext2_inode *)&in, &h);
            if (e)
                r = e2v_fail(err, e, "inode %u: extent header", i);
            else
                ext2fs_extent_free(h);
        }
        /* write_new_inode zeroes the whole on-disk inode (no stale extended
         * attributes of a freed one); the full write adds the extra fields */
        e = r < 0 ? 0 : ext2fs_write_new_inode(x->fs, i, (struct ext2_inode *)&in);
        if (e)
            r = e2v_fail(err, e, "inode %u: write", i);
        if (r == 0)
            r = e2w_write_inode(x, i, &in, err);
        if (r == 0) {
            ext2fs_inode_alloc_stats2(x->fs, i, +1, 0);
            r = e2w_touch(x, dir, err);
        }
    }
    pthread_mutex_unlock(&x->lock);
    if (r == 0)
        *ino = i;
    return r;
}

int vd_ext2_mkdir(vd_ext2 *x, uint32_t dir, const char *name, mode_t mode, uid_t uid,
                  gid_t gid, uint32_t *ino, vd_error *err)
{
    int r = e2w_enter_new(x, dir, name, err);
    if (r == 0) {
        errcode_t e = ext2fs_mkdir(x->fs, dir, 0, name);
        if (e == EXT2_ET_DIR_NO_SPACE) {
            e = ext2fs_expand_dir(x->fs, dir);
            if (!e)
                e = ext2fs_mkdir(x->fs, dir, 0, name);
        }
        r = e ? e2v_fail(err, e, "mkdir %s", name)
              : e2w_adopt(x, dir, name, mode, uid, gid, ino, err);
    }
    pthread_mutex_unlock(&x->lock);
    return r;
}

int vd_ext2_symlink(vd_ext2 *x, uint32_t dir, const char *name, const char *target,
                    uid_t uid, gid_t gid, uint32_t *ino, vd_error *err)
{
    int r = e2w_enter_new(x, dir, name, err);
    if (r == 0 && (!*target || strlen(target) >= x->fs->blocksize))
        r = vd_set_error(err, -ENAMETOOLONG, "ext2: symlink target of %zu bytes",
                         strlen(target));
    if (r == 0) {
        errcode_t e = ext2fs_symlink(x->fs, dir, 0, name, target);
        if (e == EXT2_ET_DIR_NO_SPACE) {
            e = ext2fs_expand_dir(x->fs, dir);
            if (!e)
                e = ext2fs_symlink(x->fs, dir, 0, name, target);
        }
        r = e ? e2v_fail(err, e, "symlink %s", name)
              : e2w_adopt(x, dir, name, (mode_t)-1, uid, gid, ino, err);
    }
    pthread_mutex_unlock(&x->lock);
    return r;
}

int vd_ext2_link(vd_ext2 *x, uint32_t ino, uint32_t dir, const char *name, vd_error *err)
{
    struct ext2_inode_large in;
    int r = e2w_enter_new(x, dir, name, err);
    if (r == 0)
        r = e2v_read_inode(x, ino, &in, err);
    if (r == 0 && S_ISDIR(in.i_mode))
        r = vd_set_error(err, -EPERM, "ext2: hard link to directory inode %u", ino);
    if (r == 0 && in.i_links_count >= EXT2_LINK_MAX)
        r = vd_set_error(err, -EMLINK, "ext2: inode %u: too many links", ino);
    if (r == 0)
        r = e2w_link(x, dir, name, ino, in.i_mode, err);
    if (r == 0) {
        in.i_links_count++;
        struct timespec now = e2w_now();
        e2w_set_time(x, &in, E2W_CTIME, &now);
        r = e2w_write_inode(x, ino, &in, err);
    }
    if (r == 0)
        r = e2w_touch(x, dir, err);
    pthread_mutex_unlock(&x->lock);
    return r;
}

struct e2w_dir_scan {
    int entries;          /* names other than "." and ".." */
    uint32_t new_parent;  /* nonzero: point ".." here */
};

static int e2w_dir_scan_cb(struct ext2_dir_entry *d, int offset, int blocksize,
                           char *buf, void *priv)
{
    (void)offset; (void)blocksize; (void)buf;
    struct e2w_dir_scan *s = priv;
    int n = ext2fs_dirent_name_len(d);
    if (d->inode == 0)
        return 0;
    if (n == 2 && d->name[0] == '.' && d->name[1] == '.') {
        if (s->new_parent) {
            d->inode = s->new_parent;
            return DIRENT_CHANGED | DIRENT_ABORT;
        }
        return 0;
    }
    if (n == 1 && d->name[0] == '.')
        return 0;
    s->entries++;
    return DIRENT_ABORT;
}

/* Count the entries of a directory (0 or 1: "is it empty"), or repoint its
 * ".." to `new_parent`. */
static int e2w_dir_scan(vd_ext2 *x, uint32_t dir, uint32_t new_parent, int *entries,
                        vd_error *err)
{
    struct e2w_dir_scan s = { 0, new_parent };
    errcode_t e = ext2fs_dir_iterate(x->fs, dir, 0, NULL, e2w_dir_scan_cb, &s);
    if (e)
        return e2v_fail(err, e, "directory inode %u", dir);
    if (entries)
        *entries = s.entries;
    return 0;
}

/* Remove the name `name` -> `ino` from `dir` and drop the link (for a
 * directory: free it and take its ".." off `dir`). */
static int e2w_remove(vd_ext2 *x, uint32_t dir, const char *name, uint32_t ino,
                      bool is_dir, vd_error *err)
{
    errcode_t e = ext2fs_unlink(x->fs, dir, name, ino, 0);
    if (e)
        return e2v_fail(err, e, "directory inode %u: remove %s", dir, name);
    int r;
    if (is_dir) {
        struct ext2_inode_large in;
        r = e2v_read_inode(x, ino, &in, err);
        if (r == 0)
            r = e2w_release(x, ino, &in, err);
        if (r == 0)
            r = e2w_dir_nlink(x, dir, -1, err);
    } else {
        r = e2w_drop_link(x, ino, err);
    }
    return r < 0 ? r : e2w_touch(x, dir, err);
}

/* Look up an existing name for unlink/rmdir; fills its inode. */
static int e2w_enter_old(vd_ext2 *x, uint32_t dir, const char *name, uint32_t *ino,
                         struct ext2_inode_large *in, vd_error *err)
{
    pthread_mutex_lock(&x->lock);
    int r = e2w_begin(x, err);
    if (r == 0)
        r = e2w_lookup(x, dir, name, ino, err);
    if (r == 0 && !*ino)
        r = vd_set_error(err, -ENOENT, "ext2: %s: no such file", name);
    if (r == 0)
        r = e2v_read_inode(x, *ino, in, err);
    return r;
}

int vd_ext2_unlink(vd_ext2 *x, uint32_t dir, const char *name, vd_error *err)
{
    uint32_t ino;
    struct ext2_inode_large in;
    int r = e2w_enter_old(x, dir, name, &ino, &in, err);
    if (r == 0 && S_ISDIR(in.i_mode))
        r = vd_set_error(err, -EISDIR, "ext2: %s is a directory", name);
    if (r == 0)
        r = e2w_remove(x, dir, name, ino, false, err);
    pthread_mutex_unlock(&x->lock);
    return r;
}

/* A directory must be empty before it is removed or replaced. */
static int e2w_check_empty(vd_ext2 *x, uint32_t ino, const char *name, vd_error *err)
{
    int n = 0;
    int r = e2w_dir_scan(x, ino, 0, &n, err);
    if (r == 0 && n)
        r = vd_set_error(err, -ENOTEMPTY, "ext2: %s: directory not empty", name);
    return r;
}

int vd_ext2_rmdir(vd_ext2 *x, uint32_t dir, const char *name, vd_error *err)
{
    uint32_t ino;
    struct ext2_inode_large in;
    int r = e2w_enter_old(x, dir, name, &ino, &in, err);
    if (r == 0 && !S_ISDIR(in.i_mode))
        r = vd_set_error(err, -ENOTDIR, "ext2: %s is not a directory", name);
    if (r == 0)
        r = e2w_check_empty(x, ino, name, err);
    if (r == 0)
        r = e2w_remove(x, dir, name, ino, true, err);
    pthread_mutex_unlock(&x->lock);
    return r;
}

/* Whether directory `dir` is `anc` or lies below it (walking ".." up). */
static int e2w_is_below(vd_ext2 *x, uint32_t dir, uint32_t anc, bool *below, vd_error *err)
{
    *below = false;
    for (int depth = 0; depth < 4096; depth++) {
        if (dir == anc) {
            *below = true;
            return 0;
        }
        if (dir == EXT2_ROOT_INO)
            return 0;
        ext2_ino_t up;
        errcode_t e = ext2fs_lookup(x->fs, dir, "..", 2, NULL, &up);
        if (e)
            return e2v_fail(err, e, "directory inode %u: ..", dir);
        dir = up;
    }
    return vd_set_error(err, -ELOOP, "ext2: directory tree deeper than 4096");
}

int vd_ext2_rename(vd_ext2 *x, uint32_t from_dir, const char *from, uint32_t to_dir,
                   const char *to, unsigned flags, vd_error *err)
{
    uint32_t src, dst = 0;
    struct ext2_inode_large sin = { 0 }, din = { 0 };
    int r = e2w_enter_old(x, from_dir, from, &src, &sin, err);
    if (r == 0)
        r = e2w_lookup(x, to_dir, to, &dst, err);
    if (r == 0 && dst == src)
        goto out;                      /* rename(2): the same file, nothing to do */
    if (r == 0 && dst && (flags & VD_EXT2_NOREPLACE))
        r = vd_set_error(err, -EEXIST, "ext2: %s exists", to);
    bool src_dir = S_ISDIR(sin.i_mode), below;
    if (r == 0 && src_dir && (r = e2w_is_below(x, to_dir, src, &below, err)) == 0 && below)
        r = vd_set_error(err, -EINVAL, "ext2: %s: a directory cannot move into itself",
                         from);
    if (r == 0 && dst)
        r = e2v_read_inode(x, dst, &din, err);
    if (r == 0 && dst && S_ISDIR(din.i_mode) && !src_dir)
        r = vd_set_error(err, -EISDIR, "ext2: %s is a directory", to);
    if (r == 0 && dst && !S_ISDIR(din.i_mode) && src_dir)
        r = vd_set_error(err, -ENOTDIR, "ext2: %s is not a directory", to);
    if (r == 0 && dst && src_dir)
        r = e2w_check_empty(x, dst, to, err);
    /* the new name first, then the old one goes: a crash in between leaves
     * two names (e2fsck fixes the count), never none */
    if (r == 0 && dst)
        r = e2w_remove(x, to_dir, to, dst, src_dir, err);
    if (r == 0 && src_dir && from_dir != to_dir)
        r = e2w_dir_nlink(x, to_dir, +1, err);
    if (r == 0)
        r = e2w_link(x, to_dir, to, src, sin.i_mode, err);
    if (r == 0) {
        errcode_t e = ext2fs_unlink(x->fs, from_dir, from, src, 0);
        if (e)
            r = e2v_fail(err, e, "directory inode %u: remove %s", from_dir, from);
    }
    if (r == 0 && src_dir && from_dir != to_dir) {
        r = e2w_dir_scan(x, src, to_dir, NULL, err);
        if (r == 0)
            r = e2w_dir_nlink(x, from_dir, -1, err);
    }
    if (r == 0 && (r = e2v_read_inode(x, src, &sin, err)) == 0) {
        struct timespec now = e2w_now();
        e2w_set_time(x, &sin, E2W_CTIME, &now);
        r = e2w_write_inode(x, src, &sin, err);
    }
    if (r == 0)
        r = e2w_touch(x, from_dir, err);
    if (r == 0 && to_dir != from_dir)
        r = e2w_touch(x, to_dir, err);
out:
    pthread_mutex_unlock(&x->lock);
    return r;
}

