/* view.h - the tree vdmount shows, independent of FUSE.
 *
 *   /disk              the guest-visible disk
 *   /p1, /p2, ...      one file per partition (MBR primary, extended and
 *                      logical; GPT), named after the partition number
 *   /partitions.json   the table: index, start, length, type, name, GUIDs,
 *                      file system found
 *   /fs/pN/...         the file tree of each ext2/3/4 partition
 *   /fs/disk/...       ... or of the whole disk when it has no partition table
 *
 * The FUSE front end (vdmount.c) and `vdmount --ls/--cat` both read through
 * this.  All functions return 0 (or a byte count) or a negative errno, and
 * are safe to call from many threads at once.
 */
#ifndef VDMOUNT_VIEW_H
#define VDMOUNT_VIEW_H

#include "vdisk.h"

#include <stdio.h>

#include <sys/stat.h>
#include <sys/types.h>

struct view;

enum view_kind {
    VIEW_NONE, VIEW_ROOT, VIEW_DISK, VIEW_PART, VIEW_JSON, VIEW_FSDIR, VIEW_FS
};

/* A resolved path; small enough to keep in a FUSE file handle. */
struct view_node {
    enum view_kind kind;
    int part;          /* index in the view's partition list; -1 = whole disk */
    uint32_t ino;      /* VIEW_FS: inode in that file system */
};

/* Build the view of an open image: reads the partition table and opens every
 * ext2/3/4 file system found.  Problems with either do not fail the view;
 * they are reported by the affected files and in partitions.json, and
 * printed by view_report().  `rw`: disk and partitions are writable. */
int view_open(vd_image *img, bool rw, struct view **out, vd_error *err);
/* Where to print the errors met while serving (NULL: nowhere). */
void view_set_log(struct view *v, FILE *log);
void view_close(struct view *v);
/* Print what was found (and every problem met) to `f`, one line each. */
void view_report(struct view *v, FILE *f);
/* Writable views: one line per file tree that stays read-only, and why. */
void view_report_readonly(struct view *v, FILE *f);
/* Owner and times of the synthetic entries (disk, pN, ...) from `path`, the
 * image the user named (the view's own image may be a deleted overlay). */
void view_set_base(struct view *v, const char *path);

int view_resolve(struct view *v, const char *path, struct view_node *n);
/* The name under fs/ of the first readable file system ("p1", "disk"), or
 * NULL when there is none. */
const char *view_first_fs(struct view *v);
int view_stat(struct view *v, const struct view_node *n, struct stat *st);

/* Directory listing: `fn` gets each name (not "." or "..") and its stat
 * when cheaply known (else NULL).  Non-zero from `fn` stops the walk. */
typedef int (*view_dir_fn)(void *ctx, const char *name, const struct stat *st);
int view_readdir(struct view *v, const struct view_node *n, view_dir_fn fn, void *ctx);

ssize_t view_read(struct view *v, const struct view_node *n, void *buf, size_t len,
                  uint64_t off);
ssize_t view_write(struct view *v, const struct view_node *n, const void *buf,
                   size_t len, uint64_t off);
/* fsync: the file trees' metadata into the image, then vd_flush. */
int view_flush(struct view *v);
/* Only the file trees' metadata into the image (close of a written file). */
int view_flush_trees(struct view *v);
/* statvfs of the file tree a node lives in; -ENOENT outside the trees. */
struct statvfs;
int view_statfs(struct view *v, const struct view_node *n, struct statvfs *sv);
int view_readlink(struct view *v, const struct view_node *n, char *buf, size_t size);
ssize_t view_listxattr(struct view *v, const struct view_node *n, char *buf, size_t size);
ssize_t view_getxattr(struct view *v, const struct view_node *n, const char *name,
                      void *buf, size_t size);

/* Fill `err` (may be NULL) like libvdisk does and return `code`. */
int view_error(vd_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Whether writes through the node are allowed (disk and pN with --rw or
 * --overlay; files of a writable file tree). */
bool view_writable(struct view *v, const struct view_node *n);

/* Changing the ext2/3/4 file trees (view-fs.c); paths as for view_resolve,
 * names created get the owner `uid`/`gid`.  -EROFS outside a writable
 * file tree, -EXDEV across two of them. */
int view_mknod(struct view *v, const char *path, mode_t mode, dev_t rdev, uid_t uid,
               gid_t gid, struct view_node *out);
int view_mkdir(struct view *v, const char *path, mode_t mode, uid_t uid, gid_t gid);
int view_symlink(struct view *v, const char *target, const char *path, uid_t uid,
                 gid_t gid);
int view_link(struct view *v, const char *from, const char *to);
int view_unlink(struct view *v, const char *path);
int view_rmdir(struct view *v, const char *path);
int view_rename(struct view *v, const char *from, const char *to, unsigned flags);
int view_truncate(struct view *v, const struct view_node *n, uint64_t size);
int view_chmod(struct view *v, const struct view_node *n, mode_t mode);
int view_chown(struct view *v, const struct view_node *n, uid_t uid, gid_t gid);
int view_utimens(struct view *v, const struct view_node *n, const struct timespec ts[2]);

#endif
