/* file.c - host file I/O for drivers: full reads/writes with offsets in the
 * messages, hole punching, and confinement of related files (extents,
 * backing files) to the image's folder. */
#include "vd-driver.h"
#include "vd-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

static int vd_file_wrap(const char *path, int fd, bool readonly, vd_file **out)
{
    vd_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        close(fd);
        return -ENOMEM;
    }
    f->fd = fd;
    f->readonly = readonly;
    *out = f;
    return 0;
}

int vd_file_open(const char *path, bool readonly, vd_file **out, vd_error *err)
{
    int fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0)
        return vd_set_errno(err, -errno, "%s: open", path);
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        return vd_set_error(err, -EISDIR, "%s: is a directory", path);
    }
    return vd_file_wrap(path, fd, readonly, out);
}

/* Set by vd_create for the driver's create (vd_create_opts.no_sync): the
 * files it makes are not synced.  Per thread, as creates on other threads
 * are not concerned. */
static _Thread_local bool vd_create_unsynced;

void vd_file_create_unsynced(bool on)
{
    vd_create_unsynced = on;
}

int vd_file_create(const char *path, vd_file **out, vd_error *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return vd_set_errno(err, -errno, "%s: create", path);
    int r = vd_file_wrap(path, fd, false, out);
    if (r == 0 && vd_create_unsynced)
        (*out)->cache |= VD_CACHE_NO_SYNC;
    return r;
}

int vd_file_set_window(vd_file *f, const char *name, uint64_t off, uint64_t len,
                       vd_error *err)
{
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return vd_set_errno(err, -errno, "%s: fstat", f->path);
    int64_t size = vd_file_size(f, err);
    if (size < 0)
        return (int)size;
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return vd_set_error(err, -EINVAL, "%s: a window needs a regular file or a block "
                            "device", f->path);
    if (!len || off > (uint64_t)size || len > (uint64_t)size - off)
        return vd_set_error(err, -EINVAL, "%s: window of %llu bytes at offset 0x%llx does not "
                            "lie inside the file (%lld bytes)", name ? name : f->path,
                            (unsigned long long)len, (unsigned long long)off, (long long)size);
    if (name) {
        char *p = strdup(name);
        if (!p)
            return vd_set_error(err, -ENOMEM, "out of memory");
        free(f->path);
        f->path = p;
    }
    f->win = true;
    f->win_off = off;
    f->win_len = len;
    return 0;
}

int vd_file_create_finish(vd_file *f, int r, vd_error *err)
{
    if (r == 0)
        r = vd_file_sync(f, err);
    if (r < 0)
        unlink(f->path);
    vd_file_close(f);
    return r;
}

void vd_file_close(vd_file *f)
{
    if (!f)
        return;
    vd_file_unlock(f);
    close(f->fd);
    vd_file_free_cache(f);
    free(f->path);
    free(f);
}

static int vd_file_pread_common(vd_file *f, void *buf, size_t len, uint64_t off,
                                bool zfill, vd_error *err)
{
    char *p = buf;
    if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
        return vd_set_error(err, -EINVAL, "%s: read at offset 0x%llx: offset out of range",
                            f->path, (unsigned long long)off);
    if (f->win) {
        /* The window is the whole file for the reader: what lies past its
         * end (the archive's next member) is never read. */
        if (off >= f->win_len || len > f->win_len - off) {
            size_t in = off >= f->win_len ? 0 : (size_t)(f->win_len - off);
            if (!zfill)
                return vd_set_error(err, -EIO, "%s: read of %zu bytes at 0x%llx is beyond the "
                                    "end of the window (%llu bytes)", f->path, len,
                                    (unsigned long long)off, (unsigned long long)f->win_len);
            memset(p + in, 0, len - in);
            len = in;
        }
        off += f->win_off;
    }
    while (len) {
        ssize_t r = __atomic_load_n(&f->dio_align, __ATOMIC_RELAXED)
                        ? vd_file_pread_direct(f, p, len, off)
                                 : pread(f->fd, p, len, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return vd_set_errno(err, -errno, "%s: pread at 0x%llx", f->path,
                                (unsigned long long)(off - f->win_off));
        }
        if (r == 0) {
            if (zfill) {
                memset(p, 0, len);
                return 0;
            }
            return vd_set_error(err, -EIO, "%s: read of %zu bytes at 0x%llx is beyond end of file",
                                f->path, len, (unsigned long long)(off - f->win_off));
        }
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int vd_file_pread(vd_file *f, void *buf, size_t len, uint64_t off, vd_error *err)
{
    return vd_file_pread_common(f, buf, len, off, false, err);
}

int vd_file_pread_zfill(vd_file *f, void *buf, size_t len, uint64_t off, vd_error *err)
{
    return vd_file_pread_common(f, buf, len, off, true, err);
}

int vd_file_read_header(vd_file *f, void *h, size_t len, const char *fmt, uint64_t *size,
                        vd_error *err)
{
    int64_t fsize = vd_file_size(f, err);
    if (fsize < 0)
        return (int)fsize;
    if ((uint64_t)fsize < len)
        return vd_set_error(err, -EINVAL, "%s: file of %lld bytes is shorter than the header",
                            fmt, (long long)fsize);
    *size = (uint64_t)fsize;
    return vd_file_pread(f, h, len, 0, err);
}

int vd_file_read_string(vd_file *f, uint64_t off, uint32_t len, const char *what, char **out,
                        vd_error *err)
{
    char *name = malloc((size_t)len + 1);
    if (!name)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vd_file_pread(f, name, len, off, err);
    name[len] = 0;
    if (r == 0 && strlen(name) != len)
        r = vd_set_error(err, -EINVAL, "%s at 0x%llx contains a NUL byte", what,
                         (unsigned long long)off);
    if (r < 0) {
        free(name);
        return r;
    }
    *out = name;
    return 0;
}

int vd_file_pwrite(vd_file *f, const void *buf, size_t len, uint64_t off, vd_error *err)
{
    const char *p = buf;
    uint64_t start = off, total = len;
    if (f->readonly)
        return vd_set_error(err, -EROFS, "%s: file is open read-only", f->path);
    vd_wl_record(f, VD_WL_WRITE, off, len, buf);   /* power-loss tests only */
    if (__atomic_load_n(&f->dio_align, __ATOMIC_RELAXED) && f->dio) {
        int r = vd_file_pwrite_direct(f, buf, len, off);
        if (r < 0)
            return vd_set_errno(err, r, "%s: pwrite at 0x%llx", f->path,
                                (unsigned long long)off);
        len = 0;
    }
    while (len) {
        ssize_t r = pwrite(f->fd, p, len, (off_t)off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return vd_set_errno(err, -errno, "%s: pwrite at 0x%llx", f->path,
                                (unsigned long long)off);
        }
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    if ((f->cache & VD_CACHE_SYNC_WRITES) && fdatasync(f->fd) < 0)
        return vd_set_errno(err, -errno, "%s: fdatasync", f->path);
    vd_file_wrote(f, start, total);
    return 0;
}

int vd_file_zero(vd_file *f, uint64_t off, uint64_t len, vd_error *err)
{
    if (f->readonly)
        return vd_set_error(err, -EROFS, "%s: file is open read-only", f->path);
    if (!len)
        return 0;
    int64_t size = vd_file_size(f, err);
    if (size < 0)
        return (int)size;
    /* Past the end of the file: extend by truncating (reads as zeroes). */
    if (off >= (uint64_t)size)
        return vd_file_truncate(f, off + len, err);
    if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  (off_t)off, (off_t)len) == 0) {
        vd_wl_record(f, VD_WL_ZERO, off, len, NULL);
        if (off + len > (uint64_t)size)
            return vd_file_truncate(f, off + len, err);
        return 0;
    }
    if (fallocate(f->fd, FALLOC_FL_ZERO_RANGE, (off_t)off, (off_t)len) == 0) {
        vd_wl_record(f, VD_WL_ZERO, off, len, NULL);
        return 0;
    }
    static const char zeroes[65536];
    while (len) {
        size_t n = len < sizeof zeroes ? (size_t)len : sizeof zeroes;
        int r = vd_file_pwrite(f, zeroes, n, off, err);
        if (r < 0)
            return r;
        off += n;
        len -= n;
    }
    return 0;
}

int vd_file_truncate(vd_file *f, uint64_t size, vd_error *err)
{
    if (f->readonly)
        return vd_set_error(err, -EROFS, "%s: file is open read-only", f->path);
    if (ftruncate(f->fd, (off_t)size) < 0)
        return vd_set_errno(err, -errno, "%s: truncate to 0x%llx", f->path,
                            (unsigned long long)size);
    vd_wl_record(f, VD_WL_TRUNCATE, size, 0, NULL);
    return 0;
}

int vd_file_sync(vd_file *f, vd_error *err)
{
    if (f->readonly || (f->cache & VD_CACHE_NO_SYNC)) {
        f->syncs++;    /* nothing to order: a driver's barrier is met */
        return 0;
    }
    if (fdatasync(f->fd) < 0)
        return vd_set_errno(err, -errno, "%s: fdatasync", f->path);
    vd_wl_record(f, VD_WL_SYNC, 0, 0, NULL);
    f->syncs++;
    return 0;
}

int64_t vd_file_size(vd_file *f, vd_error *err)
{
    if (f->win)
        return (int64_t)f->win_len;
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return vd_set_errno(err, -errno, "%s: fstat", f->path);
    if (S_ISBLK(st.st_mode)) {
        off_t end = lseek(f->fd, 0, SEEK_END);
        if (end < 0)
            return vd_set_errno(err, -errno, "%s: lseek", f->path);
        return end;
    }
    return st.st_size;
}

int64_t vd_file_seek(vd_file *f, uint64_t off, int whence)
{
    if (!f->win)
        return lseek(f->fd, (off_t)off, whence);
    if (off >= f->win_len) {
        errno = ENXIO;
        return -1;
    }
    off_t r = lseek(f->fd, (off_t)(off + f->win_off), whence);
    if (r < 0 && errno == ENXIO)        /* nothing but a hole to the end */
        r = whence == SEEK_HOLE ? (off_t)(f->win_off + f->win_len) : -1;
    if (r < 0)
        return -1;
    if ((uint64_t)r >= f->win_off + f->win_len) {
        if (whence == SEEK_DATA) {
            errno = ENXIO;
            return -1;
        }
        return (int64_t)f->win_len;
    }
    return (int64_t)((uint64_t)r - f->win_off);
}

uint64_t vd_file_allocated(vd_file *f)
{
    if (f->win)
        return f->win_len;
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return 0;
    return (uint64_t)st.st_blocks * 512;
}

bool vd_is_uri(const char *path)
{
    return !strncmp(path, "nbd://", 6) || !strncmp(path, "nbd+unix://", 11) ||
           !strncmp(path, "nbds://", 7) || !strncmp(path, "nbds+unix://", 12);
}

/* Does `name` stay inside its folder, read as text?  Rejects absolute
 * paths and any ".." component that climbs above the start. */
static bool vd_path_confined(const char *name)
{
    if (name[0] == '/')
        return false;
    int depth = 0;
    const char *p = name;
    while (*p) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            if (--depth < 0)
                return false;
        } else if (n && !(n == 1 && p[0] == '.')) {
            depth++;
        }
        p += n;
        if (*p == '/')
            p++;
    }
    return true;
}

static int vd_refuse_escape(const char *base_path, const char *name, vd_error *err)
{
    return vd_set_error(err, -EPERM,
                        "%s: reference to '%s' leaves the image's folder; "
                        "refused (pass --allow-host-paths to trust it)",
                        base_path, name);
}

static int vd_join_related(const char *base_path, const char *name,
                           bool allow_host_paths, char **out, vd_error *err)
{
    if (!name || !*name)
        return vd_set_error(err, -EINVAL, "%s: empty file reference", base_path);
    /* An NBD URI as a backing file (an overlay on a served disk): a network
     * connection an image must not be able to make on its own. */
    if (vd_is_uri(name) && !allow_host_paths)
        return vd_set_error(err, -EPERM, "%s: reference to the NBD export '%s' refused "
                            "(pass --allow-host-paths to trust it)", base_path, name);
    if (name[0] == '/' || vd_is_uri(name)) {
        *out = strdup(name);
        return *out ? 0 : -ENOMEM;
    }
    char *copy = strdup(base_path);
    if (!copy)
        return -ENOMEM;
    const char *dir = dirname(copy);
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (!p) {
        free(copy);
        return -ENOMEM;
    }
    if (!strcmp(dir, "."))
        snprintf(p, n, "%s", name);
    else
        snprintf(p, n, "%s/%s", dir, name);
    free(copy);
    *out = p;
    return 0;
}

/* Without openat2 (kernels before 5.6, or a seccomp filter that hides it):
 * open, then check where the descriptor we got really is. */
static int vd_open_checked(const char *path, int flags, const char *realdir)
{
    int fd = open(path, flags | O_NOCTTY);
    if (fd < 0)
        return -errno;
    char link[64], real[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, real, sizeof real - 1);
    size_t dl = strlen(realdir);
    if (n <= 0 || (size_t)n <= dl || strncmp(real, realdir, dl) ||
        (real[dl] != '/' && dl != 1)) {
        close(fd);
        return -EXDEV;
    }
    return fd;
}

static int vd_openat_beneath(int dfd, const char *rel, int flags)
{
    struct open_how how = { .flags = (uint64_t)flags,
                            .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS };
    long fd = syscall(SYS_openat2, dfd, rel, &how, sizeof how);
    return fd < 0 ? -errno : (int)fd;
}

int vd_file_open_beneath(const char *base_path, const char *name, bool allow_host_paths,
                         bool readonly, bool bundle, vd_file **out, vd_error *err)
{
    char *path;
    int r = vd_join_related(base_path, name, allow_host_paths, &path, err);
    if (r < 0)
        return r;
    if (vd_is_uri(name)) {
        free(path);
        return vd_set_error(err, -EINVAL, "%s: '%s' is an NBD export, not a file",
                            base_path, name);
    }
    /* O_NONBLOCK: a FIFO planted under an extent's name must not hang us. */
    int flags = (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NONBLOCK;
    int fd = -1;
    char *realdir = NULL;
    if (allow_host_paths) {
        fd = open(path, flags);
        r = fd < 0 ? -errno : 0;
    } else {
        /* openat2 resolves every component (symlinks included) beneath the
         * folder: nothing can swap a link between a check and the open. */
        char *copy = strdup(base_path);
        realdir = copy ? realpath(dirname(copy), NULL) : NULL;
        free(copy);
        if (!realdir) {
            r = vd_set_errno(err, -errno, "%s: resolving the image's folder", base_path);
            free(path);
            return r;
        }
        int dfd = open(realdir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
            r = -errno;
        } else {
            /* An absolute name, or a symlink openat2 refuses because its
             * target is absolute: walked by hand (beneath.c), accepted
             * only if it leads into the folder. */
            r = fd = name[0] == '/' ? -EXDEV : vd_openat_beneath(dfd, name, flags);
            if (r == -EXDEV)
                r = fd = vd_open_beneath_walk(dfd, name, flags);
            if (r == -ENOSYS || r == -EPERM)
                r = fd = vd_open_checked(path, flags, realdir);
        }
        if (dfd >= 0)
            close(dfd);
    }
    struct stat st;
    if (r >= 0 && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        /* A Parallels bundle: the image is its DiskDescriptor.xml. */
        int dfd = fd;
        fd = -1;
        r = bundle ? vd_openat_beneath(dfd, "DiskDescriptor.xml", flags) : -EISDIR;
        if (r == -ENOSYS || r == -EPERM)
            r = openat(dfd, "DiskDescriptor.xml", flags | O_NOFOLLOW);
        fd = r;
        close(dfd);
        char *p2 = NULL;
        if (r >= 0 && asprintf(&p2, "%s/DiskDescriptor.xml", path) < 0) {
            close(fd);
            r = -ENOMEM;
        } else if (r >= 0) {
            free(path);
            path = p2;
        }
    }
    free(realdir);
    if (r < 0) {
        if (r == -EXDEV)
            r = vd_refuse_escape(base_path, name, err);
        else if (r == -EISDIR)
            r = vd_set_error(err, r, "%s: is a directory", path);
        else
            r = vd_set_errno(err, r, "%s: open", path);
        free(path);
        return r;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    r = vd_file_wrap(path, fd, readonly, out);
    free(path);
    return r;
}

int vd_resolve_related(const char *base_path, const char *name,
                       bool allow_host_paths, char **out, vd_error *err)
{
    int r = vd_join_related(base_path, name, allow_host_paths, out, err);
    if (r < 0 || allow_host_paths || vd_is_uri(name))
        return r;
    /* Confined: refuse a name that resolves out of the folder (a file that
     * does not exist yet is left to whoever opens it, beneath the folder
     * again). */
    vd_file *f;
    r = vd_file_open_beneath(base_path, name, false, true, true, &f, err);
    if (r == 0)
        vd_file_close(f);
    /* Not there (yet): at least the name itself must stay inside. */
    if (r < 0 && r != -EPERM && !vd_path_confined(name))
        r = vd_refuse_escape(base_path, name, err);
    if (r == -EPERM) {
        free(*out);
        *out = NULL;
        return r;
    }
    if (err) {
        err->code = 0;
        err->msg[0] = 0;
    }
    return 0;
}

/* An image read from a window of a file stands alone: the folder its name
 * would resolve other files in is not the image's. */
static int vd_refuse_from_window(vd_image *img, const char *name, vd_error *err)
{
    return vd_set_error(err, -EPERM, "%s: refers to another file ('%s'), which an image "
                        "read from a window of a file (an archive member) cannot open",
                        img->path, name);
}

bool vd_related_exists(vd_image *img, const char *name)
{
    vd_file *f;
    if (img->file && img->file->win)
        return false;
    if (vd_file_open_beneath(img->path, name, img->allow_host_paths, true, false, &f,
                             NULL) < 0)
        return false;
    vd_file_close(f);
    return true;
}

int vd_file_open_related(vd_image *img, const char *name, bool readonly,
                         vd_file **out, vd_error *err)
{
    if (img->file && img->file->win)
        return vd_refuse_from_window(img, name, err);
    int r = vd_file_open_beneath(img->path, name, img->allow_host_paths, readonly, false,
                                 out, err);
    if (r == 0 && ((r = vd_file_lock(*out, !readonly, img->force_share, err)) < 0 ||
                   (r = vd_image_note_file(img, *out)) < 0)) {
        vd_file_close(*out);
        *out = NULL;
    }
    if (r == 0 && !readonly)
        vd_file_set_cache(*out, img->cache);
    if (r == 0 && img->direct && vd_file_set_direct(*out) < 0)
        img->direct_refused = true;
    return r;
}

/* Can copy_file_range into the file at `fd` share the source's blocks
 * (a reflink) instead of copying them?  Where it cannot (ext4, tmpfs...),
 * the kernel copies the bytes through a pipe, and with zero detection
 * (-S above 0) vd_copy reads every job into its buffer anyway: writing it
 * from there costs less than the kernel's copy, so on such a file system
 * every job takes the ordinary path, unless nothing is to be looked at
 * (-S 0: no read at all).  Measured on ext4 when the zero test still
 * scanned a mapping of the source: raw -> vdi of 512 MiB of data 0.83 s of
 * CPU and 3.96 s against 0.40 s and 2.25 s for the ordinary path; raw ->
 * raw -t unsafe 0.42x of the CPU and 0.75x of the wall time. */
bool vd_fs_shares_blocks(int fd)
{
    struct statfs st;
    if (fd < 0 || fstatfs(fd, &st) < 0)
        return false;
    switch ((unsigned long)st.f_type) {
    case 0x58465342ul:      /* XFS */
    case 0x9123683eul:      /* btrfs */
    case 0xca451a4eul:      /* bcachefs */
    case 0x7461636ful:      /* OCFS2 */
    case 0x6969ul:          /* NFS: server-side copy/clone */
    case 0xfe534d42ul:      /* SMB2/3: server-side copy */
    case 0xff534d42ul:      /* CIFS */
        return true;
    default:
        return false;
    }
}
