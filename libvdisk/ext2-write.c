/* ext2-write.c - changing an ext2/3/4 file system inside an image: opening
 * it read-write (and what is refused), file contents (write, truncate) and
 * attributes (chmod, chown, utimens), through libext2fs and the io_manager
 * of ext2-vdisk.c; names (create, rename, unlink, ...) are in ext2-names.c.
 * See vdisk-ext2.h ("Changing files"). */
#include "ext2-internal.h"
#include "vd-driver.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <time.h>

/* ---- opening ------------------------------------------------------------- */

/* Feature bits this code writes safely (libext2fs keeps their metadata:
 * checksums, flex_bg, 64bit, htree directories, inline data).  Any other bit
 * refuses writes, named when it is one of these. */
#define E2W_COMPAT_OK (EXT2_FEATURE_COMPAT_DIR_PREALLOC | EXT2_FEATURE_COMPAT_IMAGIC_INODES | \
                       EXT3_FEATURE_COMPAT_HAS_JOURNAL | EXT2_FEATURE_COMPAT_EXT_ATTR |       \
                       EXT2_FEATURE_COMPAT_RESIZE_INODE | EXT2_FEATURE_COMPAT_DIR_INDEX |    \
                       EXT4_FEATURE_COMPAT_STABLE_INODES | EXT4_FEATURE_COMPAT_ORPHAN_FILE)
#define E2W_INCOMPAT_OK (EXT2_FEATURE_INCOMPAT_FILETYPE | EXT2_FEATURE_INCOMPAT_META_BG |    \
                         EXT3_FEATURE_INCOMPAT_EXTENTS | EXT4_FEATURE_INCOMPAT_64BIT |       \
                         EXT4_FEATURE_INCOMPAT_FLEX_BG | EXT4_FEATURE_INCOMPAT_CSUM_SEED |   \
                         EXT4_FEATURE_INCOMPAT_LARGEDIR | EXT4_FEATURE_INCOMPAT_INLINE_DATA)
#define E2W_RO_COMPAT_OK (EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER |                              \
                          EXT2_FEATURE_RO_COMPAT_LARGE_FILE | EXT4_FEATURE_RO_COMPAT_HUGE_FILE | \
                          EXT4_FEATURE_RO_COMPAT_GDT_CSUM | EXT4_FEATURE_RO_COMPAT_DIR_NLINK | \
                          EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE |                               \
                          EXT4_FEATURE_RO_COMPAT_METADATA_CSUM)

static const struct { int set; uint32_t bit; const char *name; } e2w_feature_names[] = {
    { 0, EXT4_FEATURE_COMPAT_FAST_COMMIT, "fast_commit" },
    { 0, EXT4_FEATURE_COMPAT_SPARSE_SUPER2, "sparse_super2" },
    { 0, EXT2_FEATURE_COMPAT_LAZY_BG, "lazy_bg" },
    { 1, EXT2_FEATURE_INCOMPAT_COMPRESSION, "compression" },
    { 1, EXT3_FEATURE_INCOMPAT_JOURNAL_DEV, "journal_dev" },
    { 1, EXT4_FEATURE_INCOMPAT_MMP, "mmp" },
    { 1, EXT4_FEATURE_INCOMPAT_EA_INODE, "ea_inode" },
    { 1, EXT4_FEATURE_INCOMPAT_DIRDATA, "dirdata" },
    { 1, EXT4_FEATURE_INCOMPAT_ENCRYPT, "encrypt" },
    { 1, EXT4_FEATURE_INCOMPAT_CASEFOLD, "casefold" },
    { 2, 0x0004u, "btree_dir" },
    { 2, EXT4_FEATURE_RO_COMPAT_HAS_SNAPSHOT, "snapshot" },
    { 2, EXT4_FEATURE_RO_COMPAT_QUOTA, "quota" },
    { 2, EXT4_FEATURE_RO_COMPAT_BIGALLOC, "bigalloc" },
    { 2, EXT4_FEATURE_RO_COMPAT_REPLICA, "replica" },
    { 2, EXT4_FEATURE_RO_COMPAT_READONLY, "read-only" },
    { 2, EXT4_FEATURE_RO_COMPAT_PROJECT, "project" },
    { 2, EXT4_FEATURE_RO_COMPAT_SHARED_BLOCKS, "shared_blocks" },
    { 2, EXT4_FEATURE_RO_COMPAT_VERITY, "verity" },
};

/* 0, or -EROFS with why this file system must not be written. */
static int e2w_check_writable(ext2_filsys fs, vd_error *err)
{
    struct ext2_super_block *sb = fs->super;
    const char *why = NULL;
    if (ext2fs_has_feature_journal_needs_recovery(sb))
        why = "its journal needs recovery (mount it once in a guest, or e2fsck it)";
    else if (ext2fs_has_feature_orphan_present(sb) || sb->s_last_orphan)
        why = "orphan inodes are pending (mount it once in a guest, or e2fsck it)";
    else if (sb->s_state & EXT2_ERROR_FS)
        why = "errors are recorded in it (run e2fsck)";
    else if (!(sb->s_state & EXT2_VALID_FS))
        why = "it was not cleanly unmounted (run e2fsck)";
    if (why)
        return vd_set_error(err, -EROFS, "ext2: not writable: %s", why);
    uint32_t bad[3] = { sb->s_feature_compat & ~E2W_COMPAT_OK,
                        sb->s_feature_incompat & ~E2W_INCOMPAT_OK,
                        sb->s_feature_ro_compat & ~E2W_RO_COMPAT_OK };
    static const char *const sets[] = { "compat", "incompat", "ro_compat" };
    for (size_t i = 0; i < sizeof e2w_feature_names / sizeof *e2w_feature_names; i++)
        if (bad[e2w_feature_names[i].set] & e2w_feature_names[i].bit)
            return vd_set_error(err, -EROFS, "ext2: not writable: feature %s is not "
                                "written safely here", e2w_feature_names[i].name);
    for (int s = 0; s < 3; s++)
        if (bad[s])
            return vd_set_error(err, -EROFS, "ext2: not writable: unknown %s feature "
                                "0x%x", sets[s], bad[s]);
    return 0;
}

int vd_ext2_open_rw(vd_image *img, uint64_t off, uint64_t len, vd_ext2 **out,
                    vd_error *err)
{
    vd_info info;
    if (vd_get_info(img, &info) == 0 && info.readonly)
        return vd_set_error(err, -EROFS, "ext2: not writable: the image is open read-only");
    int r = e2v_open(img, off, len, true, out, err);
    if (r < 0)
        return r;
    vd_ext2 *x = *out;
    r = e2w_check_writable(x->fs, err);
    errcode_t e = r < 0 ? 0 : ext2fs_read_bitmaps(x->fs);
    if (e)
        r = e2v_fail(err, e, "file system at 0x%llx: bitmaps", (unsigned long long)off);
    if (r < 0) {
        x->rw = false;      /* nothing was changed: close writes nothing */
        vd_ext2_close(x);
        *out = NULL;
    }
    return r;
}

bool vd_ext2_writable(vd_ext2 *x) { return x->rw; }

/* Caller holds the lock: refuse on a read-only handle; before the first
 * change, mark the file system "not clean" on disk, as a kernel mount does. */
int e2w_begin(vd_ext2 *x, vd_error *err)
{
    if (!x->rw)
        return vd_set_error(err, -EROFS, "ext2: the file system is open read-only");
    if (x->broken)
        return vd_set_error(err, -EROFS, "ext2: read-only after a failed change left the "
                            "file system inconsistent; it is marked with errors (e2fsck)");
    if (x->in_use)
        return 0;
    x->fs->super->s_state &= ~EXT2_VALID_FS;
    ext2fs_mark_super_dirty(x->fs);
    errcode_t e = ext2fs_flush(x->fs);
    if (e)
        return e2v_fail(err, e, "marking the file system in use");
    x->in_use = true;
    return 0;
}

int e2v_finish(vd_ext2 *x, vd_error *err)
{
    if (!x->rw || !x->in_use)
        return 0;
    /* after a failed change: "errors", so that e2fsck and the kernel check
     * it; else clean again */
    if (x->broken)
        x->fs->super->s_state |= EXT2_ERROR_FS;
    else
        x->fs->super->s_state |= EXT2_VALID_FS;
    x->fs->super->s_wtime = time(NULL);
    ext2fs_mark_super_dirty(x->fs);
    errcode_t e = ext2fs_flush(x->fs);
    if (e)
        return e2v_fail(err, e, "writing the file system out");
    x->in_use = false;
    return 0;
}

int vd_ext2_flush(vd_ext2 *x, vd_error *err)
{
    if (!x->rw)
        return 0;
    pthread_mutex_lock(&x->lock);
    bool dirty = x->fs->flags & (EXT2_FLAG_DIRTY | EXT2_FLAG_BB_DIRTY | EXT2_FLAG_IB_DIRTY);
    errcode_t e = x->in_use && dirty ? ext2fs_flush(x->fs) : 0;
    pthread_mutex_unlock(&x->lock);
    return e ? e2v_fail(err, e, "flush") : 0;
}

/* ---- inodes -------------------------------------------------------------- */

/* Store a time in an inode: seconds in the base field, nanoseconds and the
 * epoch bits (years past 2038) in the extra field where there is room. */
void e2w_set_time(vd_ext2 *x, struct ext2_inode_large *in, int which,
                         const struct timespec *ts)
{
    static const size_t base_off[] = {
        offsetof(struct ext2_inode_large, i_atime), offsetof(struct ext2_inode_large, i_mtime),
        offsetof(struct ext2_inode_large, i_ctime), offsetof(struct ext2_inode_large, i_crtime) };
    static const size_t extra_off[] = {
        offsetof(struct ext2_inode_large, i_atime_extra),
        offsetof(struct ext2_inode_large, i_mtime_extra),
        offsetof(struct ext2_inode_large, i_ctime_extra),
        offsetof(struct ext2_inode_large, i_crtime_extra) };
    bool extra = e2v_has_extra(x, in, extra_off[which] + 4);
    if (which == E2W_CRTIME && !extra)
        return;
    uint32_t base = (uint32_t)ts->tv_sec;
    memcpy((char *)in + base_off[which], &base, 4);
    if (extra) {
        int64_t epoch = ((int64_t)ts->tv_sec - (int32_t)base) >> 32;
        uint32_t v = ((uint32_t)epoch & EXT4_EPOCH_MASK) | (uint32_t)ts->tv_nsec << 2;
        memcpy((char *)in + extra_off[which], &v, 4);
    }
}

struct timespec e2w_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts;
}

int e2w_write_inode(vd_ext2 *x, uint32_t ino, struct ext2_inode_large *in,
                           vd_error *err)
{
    errcode_t e = ext2fs_write_inode_full(x->fs, ino, (struct ext2_inode *)in, sizeof *in);
    return e ? e2v_fail(err, e, "inode %u: write", ino) : 0;
}

/* Set mtime and ctime of `ino` to now (a directory that gained or lost a
 * name, a file that was written). */
int e2w_touch(vd_ext2 *x, uint32_t ino, vd_error *err)
{
    struct ext2_inode_large in;
    int r = e2v_read_inode(x, ino, &in, err);
    if (r < 0)
        return r;
    struct timespec now = e2w_now();
    e2w_set_time(x, &in, E2W_MTIME, &now);
    e2w_set_time(x, &in, E2W_CTIME, &now);
    return e2w_write_inode(x, ino, &in, err);
}

void e2w_set_owner(struct ext2_inode_large *in, uid_t uid, gid_t gid)
{
    if (uid != (uid_t)-1) {
        in->i_uid = uid & 0xffff;
        ext2fs_set_i_uid_high(*in, uid >> 16);
    }
    if (gid != (gid_t)-1) {
        in->i_gid = gid & 0xffff;
        ext2fs_set_i_gid_high(*in, gid >> 16);
    }
}

static int e2w_free_block(ext2_filsys fs, blk64_t *blk, e2_blkcnt_t cnt, blk64_t ref,
                          int ref_off, void *priv)
{
    (void)cnt; (void)ref; (void)ref_off; (void)priv;
    ext2fs_block_alloc_stats2(fs, *blk, -1);
    return 0;
}

int e2w_free_blocks(vd_ext2 *x, uint32_t ino, struct ext2_inode_large *in, vd_error *err)
{
    if (!ext2fs_inode_has_valid_blocks2(x->fs, (struct ext2_inode *)in))
        return 0;
    errcode_t e = ext2fs_block_iterate3(x->fs, ino, BLOCK_FLAG_READ_ONLY, NULL,
                                        e2w_free_block, NULL);
    if (e) {
        x->broken = true;
        return e2v_fail(err, e, "inode %u: freeing its blocks", ino);
    }
    return 0;
}

/* A regular file emptied (truncate to 0, O_TRUNC): its blocks freed with
 * e2w_free_blocks and an empty block map; caller holds the lock. */
static int e2w_empty_file(vd_ext2 *x, uint32_t ino, vd_error *err)
{
    struct ext2_inode_large in;
    int r = e2v_read_inode(x, ino, &in, err);
    if (r == 0)
        r = e2w_free_blocks(x, ino, &in, err);
    if (r < 0)
        return r;
    memset(in.i_block, 0, sizeof in.i_block);
    in.i_flags &= ~EXT4_EXTENTS_FL;
    in.i_size = in.i_size_high = 0;
    errcode_t e = ext2fs_iblk_set(x->fs, (struct ext2_inode *)&in, 0);
    ext2_extent_handle_t eh;
    if (!e && ext2fs_has_feature_extents(x->fs->super) &&
        !(e = ext2fs_extent_open2(x->fs, ino, (struct ext2_inode *)&in, &eh)))
        ext2fs_extent_free(eh);
    if (e) {
        x->broken = true;
        return e2v_fail(err, e, "inode %u: emptying", ino);
    }
    r = e2w_write_inode(x, ino, &in, err);
    return r < 0 ? r : e2w_touch(x, ino, err);
}

/* ---- contents and attributes --------------------------------------------- */

/* Lock, refuse read-only handles, read the inode. */
static int e2w_enter_ino(vd_ext2 *x, uint32_t ino, struct ext2_inode_large *in,
                         vd_error *err)
{
    pthread_mutex_lock(&x->lock);
    int r = e2w_begin(x, err);
    return r < 0 ? r : e2v_read_inode(x, ino, in, err);
}

/* Write `len` bytes at 0 of a regular file; caller holds the lock. */
static errcode_t e2w_write_at0(vd_ext2 *x, uint32_t ino, const void *buf, size_t len)
{
    ext2_file_t f;
    errcode_t e = ext2fs_file_open(x->fs, ino, EXT2_FILE_WRITE, &f);
    if (e)
        return e;
    unsigned int got = 0;
    e = len ? ext2fs_file_write(f, buf, len, &got) : 0;
    errcode_t ec = ext2fs_file_close(f);
    return e ? e : ec ? ec : got == len ? 0 : EXT2_ET_SHORT_WRITE;
}

/* libext2fs 1.47.0 crashes writing into inline data (a memcpy in
 * ext2fs_file_write), and its own conversion is not public: move the data
 * of an inline file (at most one inode's room) to an ordinary block. */
static int e2w_uninline(vd_ext2 *x, uint32_t ino, const struct ext2_inode_large *in0,
                        vd_error *err)
{
    size_t size = 0;
    char *data = NULL;
    struct ext2_xattr_handle *h = NULL;
    errcode_t e = ext2fs_inline_data_size(x->fs, ino, &size);
    if (!e && !(data = malloc(size + 1)))
        e = EXT2_ET_NO_MEMORY;
    if (!e)
        e = ext2fs_inline_data_get(x->fs, ino, NULL, data, &size);
    if (!e && size > in0->i_size)
        size = in0->i_size;   /* the room is counted, the file may be shorter */
    if (!e)
        e = ext2fs_xattrs_open(x->fs, ino, &h);
    if (!e)
        e = ext2fs_xattrs_read(h);
    if (!e)
        e = ext2fs_xattr_remove(h, "system.data");   /* written at once */
    if (h)
        ext2fs_xattrs_close(&h);
    struct ext2_inode_large in;
    int r = e ? e2v_fail(err, e, "inode %u: inline data", ino) : e2v_read_inode(x, ino, &in, err);
    if (r == 0) {
        in.i_flags &= ~EXT4_INLINE_DATA_FL;
        memset(in.i_block, 0, sizeof in.i_block);
        in.i_size = in.i_size_high = 0;
        ext2_extent_handle_t eh;     /* an empty extent header, as for a new file */
        e = ext2fs_has_feature_extents(x->fs->super)
                ? ext2fs_extent_open2(x->fs, ino, (struct ext2_inode *)&in, &eh) : 0;
        if (e)
            r = e2v_fail(err, e, "inode %u: extent header", ino);
        else if (ext2fs_has_feature_extents(x->fs->super))
            ext2fs_extent_free(eh);
    }
    if (r == 0)
        r = e2w_write_inode(x, ino, &in, err);
    if (r == 0 && (e = e2w_write_at0(x, ino, data, size)))
        r = e2v_fail(err, e, "inode %u: rewriting inline data", ino);
    free(data);
    return r;
}

/* Write or resize (when buf is NULL) a regular file through libext2fs'
 * file API, then set its mtime and ctime; caller holds the lock. */
static int e2w_file_io(vd_ext2 *x, uint32_t ino, const struct ext2_inode_large *in,
                       const void *buf, size_t len, uint64_t off, vd_error *err)
{
    ext2_file_t f;
    errcode_t e = 0;
    if (in->i_flags & EXT4_INLINE_DATA_FL) {
        int r = e2w_uninline(x, ino, in, err);
        if (r < 0)
            return r;
    }
    e = ext2fs_file_open(x->fs, ino, EXT2_FILE_WRITE, &f);
    if (e)
        return e2v_fail(err, e, "inode %u: open", ino);
    size_t done = 0;
    if (!buf) {
        e = ext2fs_file_set_size2(f, off);
    } else {
        e = ext2fs_file_llseek(f, off, EXT2_SEEK_SET, NULL);
        while (!e && done < len) {
            unsigned int want = len - done > (1u << 30) ? (1u << 30) : len - done;
            unsigned int got = 0;
            e = ext2fs_file_write(f, (const char *)buf + done, want, &got);
            done += got;
            if (!e && got == 0)
                e = EXT2_ET_SHORT_WRITE;
        }
    }
    errcode_t ec = ext2fs_file_close(f);
    if (!e)
        e = ec;
    /* out of space leaves a consistent file system (what fit is written);
     * other failures may leave libext2fs' bitmaps half changed */
    if (e && e != EXT2_ET_BLOCK_ALLOC_FAIL && e != EXT2_ET_FILE_TOO_BIG)
        x->broken = true;
    if (e)
        return e2v_fail(err, e, "inode %u: %s at 0x%llx", ino, buf ? "write" : "truncate",
                        (unsigned long long)(off + done));
    return e2w_touch(x, ino, err);
}

ssize_t vd_ext2_pwrite(vd_ext2 *x, uint32_t ino, const void *buf, size_t len,
                       uint64_t off, vd_error *err)
{
    struct ext2_inode_large in;
    int r = e2w_enter_ino(x, ino, &in, err);
    if (r == 0 && !S_ISREG(in.i_mode))
        r = vd_set_error(err, S_ISDIR(in.i_mode) ? -EISDIR : -EINVAL,
                         "ext2: inode %u is not a regular file", ino);
    if (r == 0 && len)
        r = e2w_file_io(x, ino, &in, buf, len, off, err);
    pthread_mutex_unlock(&x->lock);
    return r < 0 ? r : (ssize_t)len;
}

int vd_ext2_truncate(vd_ext2 *x, uint32_t ino, uint64_t size, vd_error *err)
{
    struct ext2_inode_large in;
    int r = e2w_enter_ino(x, ino, &in, err);
    if (r == 0 && !S_ISREG(in.i_mode))
        r = vd_set_error(err, S_ISDIR(in.i_mode) ? -EISDIR : -EINVAL,
                         "ext2: inode %u is not a regular file", ino);
    /* emptying, the common case (O_TRUNC), frees the blocks without
     * ext2fs_punch: in libext2fs 1.47.0 it fails ("Illegal block number",
     * bitmaps half changed) on some extent maps, e.g. one that ends at the
     * file system's last block */
    if (r == 0 && size == 0 && !(in.i_flags & EXT4_INLINE_DATA_FL))
        r = e2w_empty_file(x, ino, err);
    else if (r == 0)
        r = e2w_file_io(x, ino, &in, NULL, 0, size, err);
    pthread_mutex_unlock(&x->lock);
    return r;
}

/* chmod, chown, utimens: change `in`, set ctime, write it back. */
static int e2w_setattr_done(vd_ext2 *x, uint32_t ino, struct ext2_inode_large *in,
                            vd_error *err)
{
    struct timespec now = e2w_now();
    e2w_set_time(x, in, E2W_CTIME, &now);
    int r = e2w_write_inode(x, ino, in, err);
    pthread_mutex_unlock(&x->lock);
    return r;
}

int vd_ext2_chmod(vd_ext2 *x, uint32_t ino, mode_t mode, vd_error *err)
{
    struct ext2_inode_large in;
    int r = e2w_enter_ino(x, ino, &in, err);
    if (r < 0) {
        pthread_mutex_unlock(&x->lock);
        return r;
    }
    in.i_mode = (in.i_mode & S_IFMT) | (mode & 07777);
    return e2w_setattr_done(x, ino, &in, err);
}

int vd_ext2_chown(vd_ext2 *x, uint32_t ino, uid_t uid, gid_t gid, vd_error *err)
{
    struct ext2_inode_large in;
    int r = e2w_enter_ino(x, ino, &in, err);
    if (r < 0) {
        pthread_mutex_unlock(&x->lock);
        return r;
    }
    e2w_set_owner(&in, uid, gid);
    return e2w_setattr_done(x, ino, &in, err);
}

int vd_ext2_utimens(vd_ext2 *x, uint32_t ino, const struct timespec ts[2], vd_error *err)
{
    struct ext2_inode_large in;
    int r = e2w_enter_ino(x, ino, &in, err);
    if (r < 0) {
        pthread_mutex_unlock(&x->lock);
        return r;
    }
    struct timespec now = e2w_now();
    for (int i = 0; i < 2; i++) {
        if (ts[i].tv_nsec == UTIME_OMIT)
            continue;
        e2w_set_time(x, &in, i == 0 ? E2W_ATIME : E2W_MTIME,
                     ts[i].tv_nsec == UTIME_NOW ? &now : &ts[i]);
    }
    return e2w_setattr_done(x, ino, &in, err);
}
