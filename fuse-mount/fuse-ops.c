/* fuse-ops.c - the FUSE operations of vdmount: a thin layer over view.c.
 *
 * Open files and directories keep their resolved view_node in fi->fh, so
 * reads do not look the path up again.  With --rw or --overlay the bytes of
 * `disk` and `pN` can be written, and the ext2/3/4 file trees under fs/
 * changed (view-fs.c); everything else, and all of it otherwise, is EROFS. */
#include "vdmount.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

static struct view *vm_view(void)
{
    return fuse_get_context()->private_data;
}

/* fi->fh holds the node: kind in bits 56-63, partition + 1 in 32-55, inode
 * in 0-31. */
static uint64_t vm_node_pack(const struct view_node *n)
{
    return (uint64_t)n->kind << 56 | (uint64_t)(uint32_t)(n->part + 1) << 32 | n->ino;
}

static struct view_node vm_node_unpack(uint64_t fh)
{
    struct view_node n;
    n.kind = (enum view_kind)(fh >> 56);
    n.part = (int)((fh >> 32) & 0xffffff) - 1;
    n.ino = (uint32_t)fh;
    return n;
}

/* The node of an open file, or of `path`. */
static int vm_node(const char *path, struct fuse_file_info *fi, struct view_node *n)
{
    if (fi && fi->fh) {
        *n = vm_node_unpack(fi->fh);
        return 0;
    }
    return view_resolve(vm_view(), path, n);
}

static void *vm_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)conn;
    struct view *v = vm_view();
    cfg->use_ino = 1;          /* hard links show one inode number */
    cfg->readdir_ino = 1;
    cfg->nullpath_ok = 1;
    /* Read-only views never change under the kernel: let it cache. */
    bool rw = vm_options.writable;
    cfg->kernel_cache = !rw;
    cfg->entry_timeout = rw ? 1 : 60;
    cfg->attr_timeout = rw ? 1 : 60;
    cfg->negative_timeout = rw ? 1 : 60;
    return v;
}

static int vm_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    struct view_node n;
    int r = vm_node(path, fi, &n);
    return r < 0 ? r : view_stat(vm_view(), &n, st);
}

static int vm_readlink(const char *path, char *buf, size_t size)
{
    struct view_node n;
    int r = view_resolve(vm_view(), path, &n);
    return r < 0 ? r : view_readlink(vm_view(), &n, buf, size);
}

static int vm_open(const char *path, struct fuse_file_info *fi)
{
    struct view_node n;
    int r = view_resolve(vm_view(), path, &n);
    if (r < 0)
        return r;
    if (n.kind == VIEW_ROOT || n.kind == VIEW_FSDIR)
        return -EISDIR;
    if ((fi->flags & O_ACCMODE) != O_RDONLY && !view_writable(vm_view(), &n))
        return -EROFS;
    /* the kernel hands O_TRUNC over with the open (atomic_o_trunc) instead
     * of a truncate call; disks keep their size */
    if ((fi->flags & O_TRUNC) && n.kind == VIEW_FS) {
        r = view_truncate(vm_view(), &n, 0);
        if (r < 0)
            return r;
    }
    fi->fh = vm_node_pack(&n);
    fi->keep_cache = !vm_options.writable;
    /* The block files bypass the page cache by default: the kernel then
     * sends reads of up to 1 MiB (max_pages) straight to libvdisk, where
     * cached reads come in 128 KiB readahead pieces; a 1 GiB qcow2 reads in
     * about half the time (bench/vdmount.sh).  The file trees stay cached. */
    if ((n.kind == VIEW_DISK || n.kind == VIEW_PART) && !vm_options.page_cache)
        fi->direct_io = 1;
    return 0;
}

/* The node a read or write at `off` goes to; -EINVAL for a negative offset. */
static int vm_io_node(const char *path, struct fuse_file_info *fi, off_t off,
                      struct view_node *n)
{
    int r = vm_node(path, fi, n);
    return r < 0 ? r : off < 0 ? -EINVAL : 0;
}

static int vm_read(const char *path, char *buf, size_t size, off_t off,
                   struct fuse_file_info *fi)
{
    struct view_node n;
    int r = vm_io_node(path, fi, off, &n);
    return r < 0 ? r : view_read(vm_view(), &n, buf, size, off);
}

static int vm_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct view_node n;
    int r = vm_io_node(path, fi, off, &n);
    return r < 0 ? r : view_write(vm_view(), &n, buf, size, off);
}

static int vm_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)path; (void)datasync; (void)fi;
    return view_flush(vm_view());
}

/* Files of the trees are truncated; disks do not change size: truncating
 * to the current size (what an O_TRUNC-less shell redirect or `dd` may ask)
 * succeeds, anything else not. */
static int vm_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    struct view_node n;
    struct stat st;
    int r = vm_node(path, fi, &n);
    if (r < 0)
        return r;
    if (n.kind == VIEW_FS)
        return size < 0 ? -EINVAL : view_truncate(vm_view(), &n, size);
    if (!view_writable(vm_view(), &n))
        return -EROFS;
    r = view_stat(vm_view(), &n, &st);
    if (r < 0)
        return r;
    return size == st.st_size ? 0 : -EINVAL;
}

static int vm_opendir(const char *path, struct fuse_file_info *fi)
{
    struct view_node n;
    struct stat st;
    int r = view_resolve(vm_view(), path, &n);
    if (r < 0)
        return r;
    r = view_stat(vm_view(), &n, &st);
    if (r < 0)
        return r;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    fi->fh = vm_node_pack(&n);
    return 0;
}

struct vm_fill {
    void *buf;
    fuse_fill_dir_t filler;
};

static int vm_fill_cb(void *ctx, const char *name, const struct stat *st)
{
    struct vm_fill *f = ctx;
    return f->filler(f->buf, name, st, 0, 0) ? 1 : 0;
}

static int vm_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)off; (void)flags;
    struct view_node n;
    int r = vm_node(path, fi, &n);
    if (r < 0)
        return r;
    filler(buf, ".", NULL, 0, 0);
    filler(buf, "..", NULL, 0, 0);
    struct vm_fill f = { buf, filler };
    return view_readdir(vm_view(), &n, vm_fill_cb, &f);
}

static int vm_release(const char *path, struct fuse_file_info *fi)
{
    (void)path; (void)fi;
    return 0;
}

/* close(2) of a file opened for writing: libext2fs' bitmaps, group
 * descriptors and superblock go into the image, so that a closed file is
 * complete there even if vdmount is killed afterwards; durable (vd_flush)
 * only on fsync, as with a kernel file system. */
static int vm_flush(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    if ((fi->flags & O_ACCMODE) == O_RDONLY)
        return 0;
    return view_flush_trees(vm_view());
}

/* Inside a file tree: its own sizes (df, free space checks); elsewhere the
 * disk's size. */
static int vm_statfs(const char *path, struct statvfs *sv)
{
    struct view_node n;
    if (path && view_resolve(vm_view(), path, &n) == 0 && view_statfs(vm_view(), &n, sv) == 0)
        return 0;
    memset(sv, 0, sizeof *sv);
    sv->f_bsize = sv->f_frsize = 4096;
    sv->f_blocks = vm_options.disk_size / 4096;
    sv->f_namemax = 255;
    return 0;
}

static int vm_getxattr(const char *path, const char *name, char *value, size_t size)
{
    struct view_node n;
    int r = view_resolve(vm_view(), path, &n);
    return r < 0 ? r : view_getxattr(vm_view(), &n, name, value, size);
}

static int vm_listxattr(const char *path, char *list, size_t size)
{
    struct view_node n;
    int r = view_resolve(vm_view(), path, &n);
    return r < 0 ? r : view_listxattr(vm_view(), &n, list, size);
}

/* ---- changing the file trees (view-fs.c) --------------------------------- */

static int vm_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    struct fuse_context *c = fuse_get_context();
    struct view_node n;
    int r = view_mknod(vm_view(), path, S_IFREG | (mode & 07777), 0, c->uid, c->gid, &n);
    if (r < 0)
        return r;
    fi->fh = vm_node_pack(&n);
    return 0;
}

static int vm_mknod(const char *path, mode_t mode, dev_t rdev)
{
    struct fuse_context *c = fuse_get_context();
    return view_mknod(vm_view(), path, mode, rdev, c->uid, c->gid, NULL);
}

static int vm_mkdir(const char *path, mode_t mode)
{
    struct fuse_context *c = fuse_get_context();
    return view_mkdir(vm_view(), path, mode, c->uid, c->gid);
}

static int vm_symlink(const char *target, const char *path)
{
    struct fuse_context *c = fuse_get_context();
    return view_symlink(vm_view(), target, path, c->uid, c->gid);
}

static int vm_link(const char *from, const char *to)
{
    return view_link(vm_view(), from, to);
}

static int vm_unlink(const char *path)
{
    return view_unlink(vm_view(), path);
}

static int vm_rmdir(const char *path)
{
    return view_rmdir(vm_view(), path);
}

static int vm_rename(const char *from, const char *to, unsigned int flags)
{
    return view_rename(vm_view(), from, to, flags);
}

static int vm_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    struct view_node n;
    int r = vm_node(path, fi, &n);
    return r < 0 ? r : view_chmod(vm_view(), &n, mode);
}

static int vm_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    struct view_node n;
    int r = vm_node(path, fi, &n);
    return r < 0 ? r : view_chown(vm_view(), &n, uid, gid);
}

static int vm_utimens(const char *path, const struct timespec tv[2],
                      struct fuse_file_info *fi)
{
    struct view_node n;
    int r = vm_node(path, fi, &n);
    return r < 0 ? r : view_utimens(vm_view(), &n, tv);
}

/* Extended attributes are read, not written. */
static int vm_rofs_setxattr(const char *path, const char *n, const char *v, size_t s, int f)
{ (void)path; (void)n; (void)v; (void)s; (void)f; return -EROFS; }
static int vm_rofs_removexattr(const char *path, const char *n)
{ (void)path; (void)n; return -EROFS; }

const struct fuse_operations vm_fuse_ops = {
    .init = vm_init,
    .getattr = vm_getattr,
    .readlink = vm_readlink,
    .open = vm_open,
    .read = vm_read,
    .write = vm_write,
    .fsync = vm_fsync,
    .truncate = vm_truncate,
    .release = vm_release,
    .flush = vm_flush,
    .opendir = vm_opendir,
    .readdir = vm_readdir,
    .statfs = vm_statfs,
    .getxattr = vm_getxattr,
    .listxattr = vm_listxattr,
    .mkdir = vm_mkdir,
    .unlink = vm_unlink,
    .rmdir = vm_rmdir,
    .symlink = vm_symlink,
    .link = vm_link,
    .rename = vm_rename,
    .mknod = vm_mknod,
    .chmod = vm_chmod,
    .chown = vm_chown,
    .create = vm_create,
    .utimens = vm_utimens,
    .setxattr = vm_rofs_setxattr,
    .removexattr = vm_rofs_removexattr,
};
