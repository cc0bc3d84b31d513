/* vdisk-ext2.h - read ext2/ext3/ext4 file systems inside a libvdisk image.
 *
 * libext2fs does the file system work; its block I/O goes through an
 * io_manager whose reads are vd_pread() calls on a byte range of the image (a
 * partition, or the whole disk).  No loop device, no kernel mount, no root.
 * Part of libvdisk when it is built with libext2fs (installed next to vdisk.h
 * then; pkg-config vdisk); used by vdmount and vdboot.
 *
 * vd_ext2_open() opens the file system read-only; vd_ext2_open_rw() opens it
 * read-write when that is safe (see there), for the calls under "Changing
 * files" at the end.  Every function here is thread-safe:
 * libext2fs is not, so each handle serializes its calls with a mutex.  Errors
 * are negative errnos with a one-line message in `err` naming the path or
 * inode: corrupt metadata gives -EIO (or -EUCLEAN for a checksum mismatch)
 * on the files it affects, never a crash.
 */
#ifndef VDISK_EXT2_H
#define VDISK_EXT2_H

#include "vdisk.h"

#include <sys/stat.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vd_ext2 vd_ext2;

#define VD_EXT2_ROOT_INO 2u

/* Whether [off, off+len) of `img` starts with an ext2/3/4 superblock
 * (magic 0xef53 at byte 1080).  Cheap: one small read. */
bool vd_ext2_probe(vd_image *img, uint64_t off, uint64_t len);

/* Open the file system in [off, off+len) of `img` read-only.  `img` must
 * outlive the handle. */
int vd_ext2_open(vd_image *img, uint64_t off, uint64_t len, vd_ext2 **out,
                 vd_error *err);
void vd_ext2_close(vd_ext2 *fs);

/* "ext2", "ext3" (has a journal) or "ext4" (extents, 64bit, flex_bg, ...). */
const char *vd_ext2_type(vd_ext2 *fs);
/* Volume label (may be ""), and UUID as text. */
const char *vd_ext2_label(vd_ext2 *fs);
const char *vd_ext2_uuid(vd_ext2 *fs);

/* Sizes as statvfs(2) gives them: block size, blocks, free blocks (and
 * those free to users, without the reserved ones), inodes, free inodes. */
struct statvfs;
int vd_ext2_statfs(vd_ext2 *fs, struct statvfs *sv);

/* Look up an absolute path ("/etc/hostname"; "" and "/" are the root).
 * Symbolic links in the middle of the path are followed (relative to this
 * file system's root); the last component is followed only when `follow`. */
int vd_ext2_lookup(vd_ext2 *fs, const char *path, bool follow, uint32_t *ino,
                   vd_error *err);

/* stat of an inode: mode and type (device nodes with st_rdev), uid/gid,
 * nlink, size, blocks, atime/mtime/ctime with nanoseconds.  st_ino is the
 * ext2 inode number and st_dev 0. */
int vd_ext2_stat(vd_ext2 *fs, uint32_t ino, struct stat *st, vd_error *err);

/* Read up to `len` bytes at `off` of a regular file (or a symlink's target
 * stored in blocks).  Returns the byte count (short at end of file). */
ssize_t vd_ext2_pread(vd_ext2 *fs, uint32_t ino, void *buf, size_t len,
                      uint64_t off, vd_error *err);

/* Read a whole file named by path (symlinks followed) into a malloc'd buffer
 * (NUL-terminated, `*len` excludes the NUL).  Files larger than `max` bytes
 * are -EFBIG. */
int vd_ext2_read_file(vd_ext2 *fs, const char *path, size_t max, char **buf,
                      size_t *len, vd_error *err);

/* The target of a symbolic link, NUL-terminated (truncated to `size`). */
int vd_ext2_readlink(vd_ext2 *fs, uint32_t ino, char *buf, size_t size,
                     vd_error *err);

/* Call `fn` for each entry of a directory, "." and ".." included.  `type` is
 * a DT_* value (DT_UNKNOWN when the file system does not record it).  A
 * non-zero return from `fn` stops the walk and is returned. */
typedef int (*vd_ext2_dir_fn)(void *ctx, const char *name, uint32_t ino,
                              unsigned char type);
int vd_ext2_readdir(vd_ext2 *fs, uint32_t ino, vd_ext2_dir_fn fn, void *ctx,
                    vd_error *err);

/* Extended attributes, named as Linux names them ("user.x",
 * "security.selinux", "system.posix_acl_access").  listxattr fills `buf` with
 * NUL-separated names; both return the size needed when `size` is 0, -ERANGE
 * when `buf` is too small, getxattr -ENODATA for a missing name. */
ssize_t vd_ext2_listxattr(vd_ext2 *fs, uint32_t ino, char *buf, size_t size,
                          vd_error *err);
ssize_t vd_ext2_getxattr(vd_ext2 *fs, uint32_t ino, const char *name, void *buf,
                         size_t size, vd_error *err);

/* ---- Changing files ------------------------------------------------------
 *
 * Open the file system read-write: libext2fs writes through vd_pwrite() on
 * `img` (which must be open read-write).  Refused with -EROFS and the reason
 * in `err` (the caller may then vd_ext2_open() it read-only) when writing
 * could damage it or lose data: a journal that needs recovery (a guest that
 * crashed or is still running), orphan inodes pending, errors recorded, a
 * file system not cleanly unmounted, or a feature this code does not write
 * safely (quota, bigalloc, mmp, encrypt, casefold, verity, ea_inode, ...).
 * libext2fs writes past the journal, as debugfs and fuse2fs do: fine while
 * the journal is clean, which is what is checked.  From the first change on,
 * the superblock says "not clean" until vd_ext2_close(), which writes the
 * rest out and marks it clean again: a crash in between is seen by e2fsck.
 * Names are given as a directory inode and one name; times are the current
 * time (nanoseconds where the inodes have room). */
int vd_ext2_open_rw(vd_image *img, uint64_t off, uint64_t len, vd_ext2 **out,
                    vd_error *err);
/* Whether the handle came from vd_ext2_open_rw(). */
bool vd_ext2_writable(vd_ext2 *fs);
/* Write the bitmaps, group descriptors and superblock into the image (when
 * changed); vd_flush() on the image then makes them durable. */
int vd_ext2_flush(vd_ext2 *fs, vd_error *err);

/* A new regular file, FIFO, socket or device node (`rdev`) named `name` in
 * directory `dir`; -EEXIST when the name is taken. */
int vd_ext2_create(vd_ext2 *fs, uint32_t dir, const char *name, mode_t mode, dev_t rdev,
                   uid_t uid, gid_t gid, uint32_t *ino, vd_error *err);
int vd_ext2_mkdir(vd_ext2 *fs, uint32_t dir, const char *name, mode_t mode, uid_t uid,
                  gid_t gid, uint32_t *ino, vd_error *err);
int vd_ext2_symlink(vd_ext2 *fs, uint32_t dir, const char *name, const char *target,
                    uid_t uid, gid_t gid, uint32_t *ino, vd_error *err);
/* A hard link to the (non-directory) inode `ino`. */
int vd_ext2_link(vd_ext2 *fs, uint32_t ino, uint32_t dir, const char *name,
                 vd_error *err);
/* Remove a non-directory name (-EISDIR for a directory) / an empty
 * directory (-ENOTEMPTY, -ENOTDIR); the inode is freed with its last link. */
int vd_ext2_unlink(vd_ext2 *fs, uint32_t dir, const char *name, vd_error *err);
int vd_ext2_rmdir(vd_ext2 *fs, uint32_t dir, const char *name, vd_error *err);
/* rename(2): replaces an existing target (a file by a file, an empty
 * directory by a directory); with VD_EXT2_NOREPLACE an existing target is
 * -EEXIST.  Moving a directory into itself is -EINVAL. */
#define VD_EXT2_NOREPLACE 1u
int vd_ext2_rename(vd_ext2 *fs, uint32_t from_dir, const char *from, uint32_t to_dir,
                   const char *to, unsigned flags, vd_error *err);
/* Write into a regular file, growing it as needed; returns `len`. */
ssize_t vd_ext2_pwrite(vd_ext2 *fs, uint32_t ino, const void *buf, size_t len,
                       uint64_t off, vd_error *err);
int vd_ext2_truncate(vd_ext2 *fs, uint32_t ino, uint64_t size, vd_error *err);
/* Permission bits (07777) / owner ((uid_t)-1 or (gid_t)-1: unchanged). */
int vd_ext2_chmod(vd_ext2 *fs, uint32_t ino, mode_t mode, vd_error *err);
int vd_ext2_chown(vd_ext2 *fs, uint32_t ino, uid_t uid, gid_t gid, vd_error *err);
/* Access and modification time, as utimensat(2): UTIME_NOW, UTIME_OMIT. */
int vd_ext2_utimens(vd_ext2 *fs, uint32_t ino, const struct timespec ts[2],
                    vd_error *err);

#ifdef __cplusplus
}
#endif
#endif /* EXT2_VDISK_H */
