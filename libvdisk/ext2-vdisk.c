/* ext2-vdisk.c - libext2fs over libvdisk (its I/O: ext2-io.c): thread-safe
 * helpers to open a file system in a byte range of an image, and to look
 * up, stat, read and list files.  See vdisk-ext2.h.
 */
#include "ext2-internal.h"
#include "vd-driver.h"   /* checked arithmetic, endian loads, vd_set_error */

#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>

#include <et/com_err.h>

#define E2V_SB_MAGIC_OFF (1024 + 56)
#define E2V_MAX_SYMLINK  4096

/* ---- errors -------------------------------------------------------------- */

static pthread_once_t e2v_et_once = PTHREAD_ONCE_INIT;

static void e2v_et_init(void)
{
    initialize_ext2_error_table();
}

/* Map a libext2fs error to an errno the way the kernel's ext4 does: metadata
 * that fails its checksum is "structure needs cleaning". */
static int e2v_errno(errcode_t e)
{
    if (e > 0 && e < 4096)
        return -(int)e;
    switch (e) {
    case EXT2_ET_NO_MEMORY: return -ENOMEM;
    case EXT2_ET_FILE_NOT_FOUND: return -ENOENT;
    case EXT2_ET_NO_DIRECTORY: return -ENOTDIR;
    case EXT2_ET_SYMLINK_LOOP: return -ELOOP;
    case EXT2_ET_EA_KEY_NOT_FOUND: return -ENODATA;
    case EXT2_ET_BLOCK_ALLOC_FAIL:
    case EXT2_ET_INODE_ALLOC_FAIL:
    case EXT2_ET_DIR_NO_SPACE:
    case EXT2_ET_EA_NO_SPACE:
        return -ENOSPC;
    case EXT2_ET_FILE_TOO_BIG: return -EFBIG;
    case EXT2_ET_DIR_EXISTS:
    case EXT2_ET_FILE_EXISTS:
        return -EEXIST;
    case EXT2_ET_RO_FILSYS: return -EROFS;
    case EXT2_ET_INVALID_ARGUMENT: return -EINVAL;
    case EXT2_ET_INODE_CSUM_INVALID:
    case EXT2_ET_EXTENT_CSUM_INVALID:
    case EXT2_ET_DIR_CSUM_INVALID:
    case EXT2_ET_EXT_ATTR_CSUM_INVALID:
    case EXT2_ET_SB_CSUM_INVALID:
    case EXT2_ET_INODE_BITMAP_CSUM_INVALID:
    case EXT2_ET_BLOCK_BITMAP_CSUM_INVALID:
        return -EUCLEAN;
    default: return -EIO;
    }
}

int e2v_fail(vd_error *err, errcode_t e, const char *fmt, ...)
{
    int code = e2v_errno(e);
    if (err) {
        char what[VD_ERROR_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(what, sizeof what, fmt, ap);
        va_end(ap);
        vd_set_error(err, code, "ext2: %s: %s", what, error_message(e));
    }
    return code;
}

/* ---- open/close ---------------------------------------------------------- */

bool vd_ext2_probe(vd_image *img, uint64_t off, uint64_t len)
{
    uint8_t m[2];
    uint64_t end;
    if (len < 2048 || vd_add_overflow(off, E2V_SB_MAGIC_OFF + 2, &end) ||
        end > vd_size(img))
        return false;
    if (vd_pread(img, m, 2, off + E2V_SB_MAGIC_OFF, NULL) < 0)
        return false;
    return vd_le16(m) == EXT2_SUPER_MAGIC;
}

static void e2v_uuid_text(const uint8_t *u, char out[37])
{
    vd_uuid_format(u, 0, out);
}

/* Check the superblock's geometry against the range before libext2fs sizes
 * its tables from it: a block count larger than the partition is refused (as
 * the kernel does, "block count exceeds size of device"), which also bounds
 * the group descriptor array libext2fs allocates. */
static int e2v_check_geometry(vd_image *img, uint64_t off, uint64_t len, vd_error *err)
{
    uint8_t sb[1024];
    uint64_t sboff = off + 1024;
    if (len < 2048)
        return vd_set_error(err, -EINVAL, "ext2: range at 0x%llx too small for a "
                            "superblock", (unsigned long long)off);
    int r = vd_pread(img, sb, sizeof sb, sboff, err);
    if (r < 0)
        return r;
    uint32_t log = vd_le32(sb + 24);
    if (log > 6)    /* 1 KiB << 6 = 64 KiB, the largest block size */
        return vd_set_error(err, -EUCLEAN, "ext2: superblock at 0x%llx: block size "
                            "1024 << %u out of range", (unsigned long long)sboff, log);
    uint64_t count = vd_le32(sb + 4);
    if (vd_le32(sb + 96) & EXT4_FEATURE_INCOMPAT_64BIT)
        count |= (uint64_t)vd_le32(sb + 0x150) << 32;
    uint64_t bs = 1024ull << log;
    if (count > len / bs)
        return vd_set_error(err, -EUCLEAN, "ext2: superblock at 0x%llx: block count "
                            "%llu exceeds the partition (%llu blocks of %llu bytes)",
                            (unsigned long long)sboff, (unsigned long long)count,
                            (unsigned long long)(len / bs), (unsigned long long)bs);
    return 0;
}

int vd_ext2_open(vd_image *img, uint64_t off, uint64_t len, vd_ext2 **out,
                 vd_error *err)
{
    return e2v_open(img, off, len, false, out, err);
}

int e2v_open(vd_image *img, uint64_t off, uint64_t len, bool rw, vd_ext2 **out,
             vd_error *err)
{
    pthread_once(&e2v_et_once, e2v_et_init);
    *out = NULL;
    uint64_t end;
    if (vd_add_overflow(off, len, &end) || end > vd_size(img))
        return vd_set_error(err, -EINVAL, "ext2: range 0x%llx+0x%llx past end of disk",
                            (unsigned long long)off, (unsigned long long)len);
    int rc = e2v_check_geometry(img, off, len, err);
    if (rc < 0)
        return rc;
    vd_ext2 *x = calloc(1, sizeof *x);
    if (!x)
        return vd_set_error(err, -ENOMEM, "out of memory");
    char name[64];
    snprintf(name, sizeof name, "%s@0x%llx", vd_filename(img), (unsigned long long)off);
    /* ext2fs_open2 cuts the name at '?' and parses the rest as I/O options:
     * an NBD URI ("nbd+unix:///?socket=...") must not get there. */
    for (char *q = name; *q; q++)
        if (*q == '?')
            *q = '_';
    errcode_t e = e2v_io_fs_open(name, img, off, len, rw, &x->fs);
    if (e) {
        free(x);
        return e2v_fail(err, e, "file system at 0x%llx", (unsigned long long)off);
    }
    x->img = img;
    x->off = off;
    x->len = len;
    x->rw = rw;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    /* recursive: a readdir callback may stat the entries it is given */
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&x->lock, &a);
    pthread_mutexattr_destroy(&a);
    memcpy(x->label, x->fs->super->s_volume_name, EXT2_LABEL_LEN);
    x->label[EXT2_LABEL_LEN] = 0;
    e2v_uuid_text(x->fs->super->s_uuid, x->uuid);
    *out = x;
    return 0;
}

void vd_ext2_close(vd_ext2 *x)
{
    if (!x)
        return;
    if (x->rw) {
        pthread_mutex_lock(&x->lock);
        e2v_finish(x, NULL);
        pthread_mutex_unlock(&x->lock);
    }
    ext2fs_close_free(&x->fs);
    pthread_mutex_destroy(&x->lock);
    free(x);
}

const char *vd_ext2_type(vd_ext2 *x)
{
    ext2_filsys fs = x->fs;
    if (ext2fs_has_feature_extents(fs->super) || ext2fs_has_feature_64bit(fs->super) ||
        ext2fs_has_feature_flex_bg(fs->super) || ext2fs_has_feature_huge_file(fs->super) ||
        ext2fs_has_feature_gdt_csum(fs->super) || ext2fs_has_feature_dir_nlink(fs->super) ||
        ext2fs_has_feature_extra_isize(fs->super) ||
        ext2fs_has_feature_metadata_csum(fs->super) ||
        ext2fs_has_feature_inline_data(fs->super))
        return "ext4";
    if (ext2fs_has_feature_journal(fs->super))
        return "ext3";
    return "ext2";
}

int vd_ext2_statfs(vd_ext2 *x, struct statvfs *sv)
{
    memset(sv, 0, sizeof *sv);
    pthread_mutex_lock(&x->lock);
    struct ext2_super_block *sb = x->fs->super;
    uint64_t free = ext2fs_free_blocks_count(sb), reserved = ext2fs_r_blocks_count(sb);
    sv->f_bsize = sv->f_frsize = x->fs->blocksize;
    sv->f_blocks = ext2fs_blocks_count(sb);
    sv->f_bfree = free;
    sv->f_bavail = free > reserved ? free - reserved : 0;
    sv->f_files = sb->s_inodes_count;
    sv->f_ffree = sv->f_favail = sb->s_free_inodes_count;
    sv->f_namemax = EXT2_NAME_LEN;
    pthread_mutex_unlock(&x->lock);
    return 0;
}

const char *vd_ext2_label(vd_ext2 *x) { return x->label; }
const char *vd_ext2_uuid(vd_ext2 *x) { return x->uuid; }

/* ---- lookup and stat ----------------------------------------------------- */

int vd_ext2_lookup(vd_ext2 *x, const char *path, bool follow, uint32_t *ino,
                   vd_error *err)
{
    while (*path == '/')
        path++;
    if (!*path) {
        *ino = EXT2_ROOT_INO;
        return 0;
    }
    ext2_ino_t i;
    pthread_mutex_lock(&x->lock);
    errcode_t e = follow ? ext2fs_namei_follow(x->fs, EXT2_ROOT_INO, EXT2_ROOT_INO, path, &i)
                         : ext2fs_namei(x->fs, EXT2_ROOT_INO, EXT2_ROOT_INO, path, &i);
    pthread_mutex_unlock(&x->lock);
    if (e)
        return e2v_fail(err, e, "/%s", path);
    *ino = i;
    return 0;
}

/* Seconds (with the epoch bits of the extra field) and nanoseconds. */
static void e2v_time(uint32_t base, uint32_t extra, bool has_extra, struct timespec *ts)
{
    ts->tv_sec = (int32_t)base;
    ts->tv_nsec = 0;
    if (has_extra) {
        ts->tv_sec += (int64_t)(extra & 3) << 32;
        ts->tv_nsec = (extra >> 2) % 1000000000u;
    }
}

static bool e2v_mode_valid(uint16_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFCHR: case S_IFBLK:
    case S_IFIFO: case S_IFSOCK:
        return true;
    default:
        return false;
    }
}

/* Read the (large) inode; caller holds the lock. */
int e2v_read_inode(vd_ext2 *x, uint32_t ino, struct ext2_inode_large *in,
                          vd_error *err)
{
    memset(in, 0, sizeof *in);
    errcode_t e = ext2fs_read_inode_full(x->fs, ino, (struct ext2_inode *)in, sizeof *in);
    if (e)
        return e2v_fail(err, e, "inode %u", ino);
    if (!e2v_mode_valid(in->i_mode))
        return vd_set_error(err, -EUCLEAN, "ext2: inode %u has invalid mode 0%o", ino,
                            in->i_mode);
    return 0;
}

/* Whether the inode is large enough to hold `field_end` bytes of extra
 * fields (i_extra_isize is untrusted: it only ever narrows what we read). */
bool e2v_has_extra(vd_ext2 *x, const struct ext2_inode_large *in, size_t field_end)
{
    size_t isz = EXT2_INODE_SIZE(x->fs->super);
    return isz > EXT2_GOOD_OLD_INODE_SIZE &&
           EXT2_GOOD_OLD_INODE_SIZE + (size_t)in->i_extra_isize >= field_end &&
           field_end <= isz;
}

static dev_t e2v_rdev(const struct ext2_inode_large *in)
{
    /* old encoding in i_block[0] (8-bit major/minor), new in i_block[1] */
    uint32_t b0 = in->i_block[0], b1 = in->i_block[1];
    if (b0)
        return makedev((b0 >> 8) & 0xff, b0 & 0xff);
    return makedev((b1 & 0xfff00) >> 8, (b1 & 0xff) | ((b1 >> 12) & 0xfff00));
}

int vd_ext2_stat(vd_ext2 *x, uint32_t ino, struct stat *st, vd_error *err)
{
    struct ext2_inode_large in;
    pthread_mutex_lock(&x->lock);
    int r = e2v_read_inode(x, ino, &in, err);
    blk64_t blocks = r == 0 ? ext2fs_get_stat_i_blocks(x->fs, (struct ext2_inode *)&in) : 0;
    pthread_mutex_unlock(&x->lock);
    if (r < 0)
        return r;
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    st->st_mode = in.i_mode;
    st->st_nlink = in.i_links_count;
    st->st_uid = inode_uid(in);
    st->st_gid = inode_gid(in);
    st->st_size = EXT2_I_SIZE(&in);
    st->st_blocks = blocks;
    st->st_blksize = x->fs->blocksize;
    if (S_ISCHR(in.i_mode) || S_ISBLK(in.i_mode))
        st->st_rdev = e2v_rdev(&in);
    size_t end_m = offsetof(struct ext2_inode_large, i_mtime_extra) + 4;
    size_t end_a = offsetof(struct ext2_inode_large, i_atime_extra) + 4;
    size_t end_c = offsetof(struct ext2_inode_large, i_ctime_extra) + 4;
    e2v_time(in.i_atime, in.i_atime_extra, e2v_has_extra(x, &in, end_a), &st->st_atim);
    e2v_time(in.i_mtime, in.i_mtime_extra, e2v_has_extra(x, &in, end_m), &st->st_mtim);
    e2v_time(in.i_ctime, in.i_ctime_extra, e2v_has_extra(x, &in, end_c), &st->st_ctim);
    return 0;
}

/* ---- file contents ------------------------------------------------------- */

/* Caller holds the lock. */
ssize_t e2v_pread_locked(vd_ext2 *x, uint32_t ino, void *buf, size_t len,
                                uint64_t off, vd_error *err)
{
    ext2_file_t f;
    errcode_t e = ext2fs_file_open(x->fs, ino, 0, &f);
    if (e)
        return e2v_fail(err, e, "inode %u: open", ino);
    size_t done = 0;
    e = ext2fs_file_llseek(f, off, EXT2_SEEK_SET, NULL);
    while (!e && done < len) {
        unsigned int want = len - done > (1u << 30) ? (1u << 30) : len - done;
        unsigned int got = 0;
        e = ext2fs_file_read(f, (char *)buf + done, want, &got);
        done += got;
        if (got == 0)
            break;
    }
    ext2fs_file_close(f);
    if (e)
        return e2v_fail(err, e, "inode %u: read at 0x%llx", ino,
                        (unsigned long long)(off + done));
    return done;
}

/* A run of file blocks: `n` blocks at physical block `phys`, or zeroes
 * (a hole or an unwritten extent) when phys is 0. */
struct e2v_run {
    uint64_t phys;
    uint32_t n;
};

#define E2V_MAP_BLOCKS 256   /* blocks mapped per locked step */

/* Map file blocks [lb, lb+nb) to runs; caller holds the lock. */
static int e2v_map(vd_ext2 *x, uint32_t ino, struct ext2_inode_large *in, uint64_t lb,
                   uint32_t nb, struct e2v_run *runs, int *nruns, vd_error *err)
{
    int nr = 0;
    blk64_t total = ext2fs_blocks_count(x->fs->super);
    for (uint32_t k = 0; k < nb; k++) {
        blk64_t phys = 0;
        int flags = 0;
        errcode_t e = ext2fs_bmap2(x->fs, ino, (struct ext2_inode *)in, NULL, 0, lb + k,
                                   &flags, &phys);
        if (e)
            return e2v_fail(err, e, "inode %u: block %llu", ino,
                            (unsigned long long)(lb + k));
        if (flags & BMAP_RET_UNINIT)
            phys = 0;
        if (phys >= total)
            return vd_set_error(err, -EUCLEAN, "ext2: inode %u: block %llu maps to %llu, "
                                "past the end of the file system (%llu blocks)", ino,
                                (unsigned long long)(lb + k), (unsigned long long)phys,
                                (unsigned long long)total);
        struct e2v_run *last = nr ? &runs[nr - 1] : NULL;
        if (last && ((!last->phys && !phys) || (last->phys && phys == last->phys + last->n)))
            last->n++;
        else
            runs[nr++] = (struct e2v_run){ phys, 1 };
    }
    *nruns = nr;
    return 0;
}

/* Read a regular file by mapping its blocks under the lock and reading the
 * data outside it: contiguous blocks become one vd_pread, and reads of
 * different files (or of the disk) proceed in parallel. */
ssize_t vd_ext2_pread(vd_ext2 *x, uint32_t ino, void *buf, size_t len, uint64_t off,
                      vd_error *err)
{
    struct ext2_inode_large in;
    pthread_mutex_lock(&x->lock);
    int r = e2v_read_inode(x, ino, &in, err);
    if (r == 0 && (!S_ISREG(in.i_mode) || (in.i_flags & EXT4_INLINE_DATA_FL) || x->rw)) {
        /* inline data and symlinks: libext2fs' own file reader; and every
         * file of a writable file system, whose blocks may be freed and
         * reused by a writer once the lock is dropped */
        ssize_t n = e2v_pread_locked(x, ino, buf, len, off, err);
        pthread_mutex_unlock(&x->lock);
        return n;
    }
    pthread_mutex_unlock(&x->lock);
    if (r < 0)
        return r;
    uint64_t size = EXT2_I_SIZE(&in), bs = x->fs->blocksize;
    if (off >= size)
        return 0;
    if (len > size - off)
        len = size - off;
    uint64_t end = off + len, pos = off;
    struct e2v_run runs[E2V_MAP_BLOCKS];
    while (pos < end) {
        uint64_t lb = pos / bs, last = (end - 1) / bs;
        uint32_t nb = last - lb + 1 > E2V_MAP_BLOCKS ? E2V_MAP_BLOCKS : last - lb + 1;
        int nr = 0;
        pthread_mutex_lock(&x->lock);
        r = e2v_map(x, ino, &in, lb, nb, runs, &nr, err);
        pthread_mutex_unlock(&x->lock);
        if (r < 0)
            return r;
        uint64_t blk = lb;
        for (int i = 0; i < nr; i++) {
            uint64_t a = blk * bs > pos ? blk * bs : pos;
            uint64_t b = (blk + runs[i].n) * bs < end ? (blk + runs[i].n) * bs : end;
            char *dst = (char *)buf + (a - off);
            if (!runs[i].phys)
                memset(dst, 0, b - a);
            else if ((r = vd_pread(x->img, dst, b - a,
                                   x->off + runs[i].phys * bs + (a - blk * bs), err)) < 0)
                return r;
            blk += runs[i].n;
        }
        pos = (lb + nb) * bs < end ? (lb + nb) * bs : end;
    }
    return len;
}

int vd_ext2_read_file(vd_ext2 *x, const char *path, size_t max, char **buf,
                      size_t *len, vd_error *err)
{
    uint32_t ino;
    struct stat st;
    *buf = NULL;
    int r = vd_ext2_lookup(x, path, true, &ino, err);
    if (r < 0)
        return r;
    r = vd_ext2_stat(x, ino, &st, err);
    if (r < 0)
        return r;
    if (!S_ISREG(st.st_mode))
        return vd_set_error(err, S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL,
                            "ext2: %s: not a regular file", path);
    if ((uint64_t)st.st_size > max)
        return vd_set_error(err, -EFBIG, "ext2: %s: %lld bytes, more than the %zu allowed",
                            path, (long long)st.st_size, max);
    char *b = malloc(st.st_size + 1);
    if (!b)
        return vd_set_error(err, -ENOMEM, "out of memory");
    ssize_t n = vd_ext2_pread(x, ino, b, st.st_size, 0, err);
    if (n < 0) {
        free(b);
        return n;
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return 0;
}

int vd_ext2_readlink(vd_ext2 *x, uint32_t ino, char *buf, size_t size, vd_error *err)
{
    if (size == 0)
        return vd_set_error(err, -EINVAL, "ext2: readlink into an empty buffer");
    struct ext2_inode_large in;
    pthread_mutex_lock(&x->lock);
    int r = e2v_read_inode(x, ino, &in, err);
    if (r == 0 && !S_ISLNK(in.i_mode))
        r = vd_set_error(err, -EINVAL, "ext2: inode %u is not a symbolic link", ino);
    uint64_t tlen = EXT2_I_SIZE(&in);
    if (r == 0 && (tlen == 0 || tlen > E2V_MAX_SYMLINK))
        r = vd_set_error(err, -EUCLEAN, "ext2: symlink inode %u has length %llu", ino,
                         (unsigned long long)tlen);
    char tmp[E2V_MAX_SYMLINK + 1];
    if (r == 0) {
        if (ext2fs_is_fast_symlink((struct ext2_inode *)&in)) {
            /* target stored in i_block itself (up to 60 bytes) */
            if (tlen > sizeof in.i_block)
                tlen = sizeof in.i_block;
            memcpy(tmp, in.i_block, tlen);
        } else {
            ssize_t n = e2v_pread_locked(x, ino, tmp, tlen, 0, err);
            if (n < 0)
                r = n;
            else
                tlen = n;
        }
    }
    pthread_mutex_unlock(&x->lock);
    if (r < 0)
        return r;
    tmp[tlen] = 0;
    snprintf(buf, size, "%s", tmp);
    return 0;
}

/* ---- directories --------------------------------------------------------- */

struct e2v_dir_ctx {
    vd_ext2_dir_fn fn;
    void *ctx;
    int ret;
};

static unsigned char e2v_dtype(int ft)
{
    switch (ft) {
    case EXT2_FT_REG_FILE: return DT_REG;
    case EXT2_FT_DIR: return DT_DIR;
    case EXT2_FT_CHRDEV: return DT_CHR;
    case EXT2_FT_BLKDEV: return DT_BLK;
    case EXT2_FT_FIFO: return DT_FIFO;
    case EXT2_FT_SOCK: return DT_SOCK;
    case EXT2_FT_SYMLINK: return DT_LNK;
    default: return DT_UNKNOWN;
    }
}

static int e2v_dir_cb(struct ext2_dir_entry *d, int offset, int blocksize, char *buf,
                      void *priv)
{
    (void)offset; (void)blocksize; (void)buf;
    struct e2v_dir_ctx *c = priv;
    char name[EXT2_NAME_LEN + 1];
    int n = ext2fs_dirent_name_len(d);
    if (d->inode == 0 || n == 0)
        return 0;
    memcpy(name, d->name, n);
    name[n] = 0;
    c->ret = c->fn(c->ctx, name, d->inode, e2v_dtype(ext2fs_dirent_file_type(d)));
    return c->ret ? DIRENT_ABORT : 0;
}

int vd_ext2_readdir(vd_ext2 *x, uint32_t ino, vd_ext2_dir_fn fn, void *ctx,
                    vd_error *err)
{
    struct e2v_dir_ctx c = { fn, ctx, 0 };
    pthread_mutex_lock(&x->lock);
    errcode_t e = ext2fs_check_directory(x->fs, ino);
    if (!e)
        e = ext2fs_dir_iterate(x->fs, ino, 0, NULL, e2v_dir_cb, &c);
    pthread_mutex_unlock(&x->lock);
    if (e)
        return e2v_fail(err, e, "directory inode %u", ino);
    return c.ret;
}

/* ---- extended attributes ------------------------------------------------- */

struct e2v_xlist {
    char *buf;
    size_t size, need;
};

/* "system.data" holds inline file data: the kernel does not show it. */
static int e2v_xattr_list_cb(char *name, char *value, size_t value_len, void *data)
{
    (void)value; (void)value_len;
    struct e2v_xlist *l = data;
    if (!strcmp(name, "system.data"))
        return 0;
    size_t n = strlen(name) + 1;
    if (l->buf && l->need + n <= l->size)
        memcpy(l->buf + l->need, name, n);
    l->need += n;
    return 0;
}

static int e2v_xattrs_open(vd_ext2 *x, uint32_t ino, struct ext2_xattr_handle **h,
                           vd_error *err)
{
    errcode_t e = ext2fs_xattrs_open(x->fs, ino, h);
    if (!e) {
        e = ext2fs_xattrs_read(*h);
        if (e)
            ext2fs_xattrs_close(h);
    }
    if (e == EXT2_ET_MISSING_EA_FEATURE) {
        *h = NULL;
        return 0;          /* no xattrs on this file system: an empty list */
    }
    return e ? e2v_fail(err, e, "inode %u: extended attributes", ino) : 0;
}

ssize_t vd_ext2_listxattr(vd_ext2 *x, uint32_t ino, char *buf, size_t size,
                          vd_error *err)
{
    struct ext2_xattr_handle *h;
    struct e2v_xlist l = { size ? buf : NULL, size, 0 };
    pthread_mutex_lock(&x->lock);
    int r = e2v_xattrs_open(x, ino, &h, err);
    if (r == 0 && h) {
        errcode_t e = ext2fs_xattrs_iterate(h, e2v_xattr_list_cb, &l);
        if (e)
            r = e2v_fail(err, e, "inode %u: extended attributes", ino);
        ext2fs_xattrs_close(&h);
    }
    pthread_mutex_unlock(&x->lock);
    if (r < 0)
        return r;
    if (size && l.need > size)
        return -ERANGE;
    return l.need;
}

ssize_t vd_ext2_getxattr(vd_ext2 *x, uint32_t ino, const char *name, void *buf,
                         size_t size, vd_error *err)
{
    struct ext2_xattr_handle *h;
    void *val = NULL;
    size_t vlen = 0;
    ssize_t r;
    if (!strcmp(name, "system.data"))
        return -ENODATA;
    pthread_mutex_lock(&x->lock);
    r = e2v_xattrs_open(x, ino, &h, err);
    if (r == 0 && !h)
        r = -ENODATA;
    if (r == 0) {
        errcode_t e = ext2fs_xattr_get(h, name, &val, &vlen);
        if (e == EXT2_ET_EA_KEY_NOT_FOUND)
            r = -ENODATA;
        else if (e)
            r = e2v_fail(err, e, "inode %u: extended attribute %s", ino, name);
        ext2fs_xattrs_close(&h);
    }
    pthread_mutex_unlock(&x->lock);
    if (r == 0) {
        r = vlen;
        if (size && vlen > size)
            r = -ERANGE;
        else if (size)
            memcpy(buf, val, vlen);
    }
    if (val)
        ext2fs_free_mem(&val);
    return r;
}
