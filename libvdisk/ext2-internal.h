/* ext2-internal.h - shared by ext2-io.c (libext2fs' I/O), ext2-vdisk.c
 * (open, lookup, read), ext2-write.c and ext2-names.c (changing files) of
 * libvdisk's ext2/3/4 support; not public. */
#ifndef VD_EXT2_INTERNAL_H
#define VD_EXT2_INTERNAL_H

#include "vdisk-ext2.h"

#include <pthread.h>

#include <ext2fs/ext2_fs.h>
#include <ext2fs/ext2fs.h>

struct vd_ext2 {
    ext2_filsys fs;
    vd_image *img;
    uint64_t off, len;
    pthread_mutex_t lock;   /* libext2fs is not thread-safe */
    char label[EXT2_LABEL_LEN + 1];
    char uuid[37];
    bool rw;                /* opened by vd_ext2_open_rw */
    bool in_use;            /* written since open: the superblock says "not clean" */
    bool broken;            /* a change failed halfway: no more, "errors" at close */
};

/* ext2fs_open2() on the byte range [off, off+len) of img (ext2-io.c), which
 * libext2fs then reads (and writes, when `rw`) through libvdisk. */
errcode_t e2v_io_fs_open(const char *name, vd_image *img, uint64_t off, uint64_t len, bool rw,
                         ext2_filsys *fs);
/* Open the file system (read-write when `rw`), checks and all. */
int e2v_open(vd_image *img, uint64_t off, uint64_t len, bool rw, vd_ext2 **out,
             vd_error *err);
/* A libext2fs error as a negative errno, with "ext2: WHAT: message" in err. */
int e2v_fail(vd_error *err, errcode_t e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Read an inode, its mode checked; caller holds the lock. */
int e2v_read_inode(vd_ext2 *x, uint32_t ino, struct ext2_inode_large *in, vd_error *err);
/* Whether the inode has room for extra fields up to byte `field_end`. */
bool e2v_has_extra(vd_ext2 *x, const struct ext2_inode_large *in, size_t field_end);
/* libext2fs' own file reader; caller holds the lock. */
ssize_t e2v_pread_locked(vd_ext2 *x, uint32_t ino, void *buf, size_t len, uint64_t off,
                         vd_error *err);
/* Mark the file system clean again and write everything out (close time);
 * caller holds the lock. */
int e2v_finish(vd_ext2 *x, vd_error *err);


/* ---- shared by ext2-write.c and ext2-names.c; caller holds the lock ---- */
enum { E2W_ATIME, E2W_MTIME, E2W_CTIME, E2W_CRTIME };
/* Refuse a read-only handle; before the first change mark the file system
 * "not clean" on disk, as a kernel mount does. */
int e2w_begin(vd_ext2 *x, vd_error *err);
struct timespec e2w_now(void);
/* Store a time (seconds, nanoseconds, epoch bits where there is room). */
void e2w_set_time(vd_ext2 *x, struct ext2_inode_large *in, int which,
                  const struct timespec *ts);
int e2w_write_inode(vd_ext2 *x, uint32_t ino, struct ext2_inode_large *in, vd_error *err);
/* mtime and ctime of `ino` to now. */
int e2w_touch(vd_ext2 *x, uint32_t ino, vd_error *err);
/* Mark the blocks of an inode (data and extent tree) free without
 * rewriting its map, as debugfs' rm does. */
int e2w_free_blocks(vd_ext2 *x, uint32_t ino, struct ext2_inode_large *in, vd_error *err);
/* Owner, with the high 16 bits; (uid_t)-1 / (gid_t)-1: unchanged. */
void e2w_set_owner(struct ext2_inode_large *in, uid_t uid, gid_t gid);

#endif
