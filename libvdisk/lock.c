/* lock.c - image locks that qemu understands.
 *
 * qemu (block/file-posix.c) marks what each process does with an image file
 * by open-file-description (OFD) read locks on single bytes: byte 100 + bit
 * says "I use permission <bit>", byte 200 + bit says "I do not let anyone
 * else have <bit>".  The bits are 0 consistent read, 1 write, 2 write
 * unchanged, 3 resize.  A process may take a permission only when nobody
 * holds the matching "not shared" byte, and may refuse to share one only
 * when nobody holds its "use" byte.  We take the bytes a qemu file node
 * under a format driver takes (measured with qemu 7.2 in /proc/locks):
 *
 *   writer              use 100,101,103   not shared 201,203
 *   reader              use 100           not shared 201,203
 *   reader, force_share use 100           -
 *
 * so a writer excludes every other writer and every reader that does not
 * force-share, in both directions and against a running qemu.
 *
 * OFD locks belong to an open file description and the kernel does not
 * report a description's own locks back to it.  Several opens of one file
 * in one process (the chain and a commit's base, an NBD server's
 * connections) must not refuse each other, so the process keeps one lock
 * description per inode, holding the union of its users' bytes; only other
 * processes can conflict.  The lock lives as long as one user has the file
 * open, and is released by the kernel when the process dies. */
#include "vd-driver.h"
#include "vd-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define VD_LOCK_USE_BASE    100
#define VD_LOCK_SHARED_BASE 200
#define VD_PERM_BITS 4
enum { VD_PERM_CONSISTENT_READ = 1, VD_PERM_WRITE = 2, VD_PERM_WRITE_UNCHANGED = 4,
       VD_PERM_RESIZE = 8 };
static const char *const vd_perm_names[VD_PERM_BITS] = {
    "consistent read", "write", "write unchanged", "resize"
};

struct vd_lock {
    dev_t dev;
    ino_t ino;
    int fd;                       /* our lock description */
    unsigned users;
    unsigned use[VD_PERM_BITS];   /* users per "use" bit */
    unsigned noshare[VD_PERM_BITS];
    struct vd_lock *next;
};

static pthread_mutex_t vd_locks_mu = PTHREAD_MUTEX_INITIALIZER;
static struct vd_lock *vd_locks;

static int vd_lock_byte(int fd, short type, off_t at)
{
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = at, .l_len = 1 };
    return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* Does another description hold a lock on byte `at`? */
static int vd_lock_taken(int fd, off_t at)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = at, .l_len = 1 };
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
        return -errno;
    return fl.l_type != F_UNLCK;
}

/* Make the description's bytes the union of its users'. */
static int vd_lock_apply(struct vd_lock *l)
{
    for (int i = 0; i < VD_PERM_BITS; i++) {
        int r = vd_lock_byte(l->fd, l->use[i] ? F_RDLCK : F_UNLCK, VD_LOCK_USE_BASE + i);
        if (r == 0)
            r = vd_lock_byte(l->fd, l->noshare[i] ? F_RDLCK : F_UNLCK,
                             VD_LOCK_SHARED_BASE + i);
        if (r < 0)
            return r;
    }
    return 0;
}

static void vd_lock_count(struct vd_lock *l, unsigned perm, unsigned noshare, int d)
{
    for (int i = 0; i < VD_PERM_BITS; i++) {
        if (perm & (1u << i))
            l->use[i] += (unsigned)d;
        if (noshare & (1u << i))
            l->noshare[i] += (unsigned)d;
    }
    l->users += (unsigned)d;
}

/* File systems without OFD locks (some network mounts): no locking, as qemu
 * does with locking=auto. */
static bool vd_lock_unsupported(int r)
{
    return r == -EINVAL || r == -ENOLCK || r == -EOPNOTSUPP || r == -ENOSYS;
}

static void vd_lock_put_locked(struct vd_lock *l)
{
    if (l->users)
        return;
    for (struct vd_lock **p = &vd_locks; *p; p = &(*p)->next)
        if (*p == l) {
            *p = l->next;
            break;
        }
    close(l->fd);
    free(l);
}

int vd_file_lock(vd_file *f, bool write, bool force_share, vd_error *err)
{
    unsigned perm = VD_PERM_CONSISTENT_READ;
    unsigned noshare = VD_PERM_WRITE | VD_PERM_RESIZE;
    if (write)
        perm |= VD_PERM_WRITE | VD_PERM_RESIZE;
    else if (force_share)
        noshare = 0;
    struct stat st;
    if (f->lock || fstat(f->fd, &st) < 0)
        return 0;
    pthread_mutex_lock(&vd_locks_mu);
    struct vd_lock *l = vd_locks;
    while (l && !(l->dev == st.st_dev && l->ino == st.st_ino))
        l = l->next;
    if (!l) {
        l = calloc(1, sizeof *l);
        if (!l) {
            pthread_mutex_unlock(&vd_locks_mu);
            return vd_set_error(err, -ENOMEM, "out of memory");
        }
        l->dev = st.st_dev;
        l->ino = st.st_ino;
        l->fd = fcntl(f->fd, F_DUPFD_CLOEXEC, 0);
        if (l->fd < 0) {
            int e = -errno;
            free(l);
            pthread_mutex_unlock(&vd_locks_mu);
            return vd_set_errno(err, e, "%s: dup for locking", f->path);
        }
        l->next = vd_locks;
        vd_locks = l;
    }
    vd_lock_count(l, perm, noshare, 1);
    /* Take our bytes first, then look at the others': of two processes
     * racing for the same image both may fail, but never both succeed. */
    int r = vd_lock_apply(l), conflict = -1;
    for (int i = 0; r == 0 && conflict < 0 && i < VD_PERM_BITS; i++) {
        int t = 0;
        if (perm & (1u << i))
            t = vd_lock_taken(l->fd, VD_LOCK_SHARED_BASE + i);
        if (t == 0 && (noshare & (1u << i)))
            t = vd_lock_taken(l->fd, VD_LOCK_USE_BASE + i);
        if (t < 0)
            r = t;
        else if (t)
            conflict = i;
    }
    if (r == -EAGAIN || r == -EACCES) {   /* someone holds an exclusive lock */
        conflict = 1;
        r = 0;
    }
    if (r == 0 && conflict < 0) {
        f->lock = l;
        f->lock_perm = (uint8_t)perm;
        f->lock_noshare = (uint8_t)noshare;
        pthread_mutex_unlock(&vd_locks_mu);
        return 0;
    }
    vd_lock_count(l, perm, noshare, -1);
    vd_lock_apply(l);
    vd_lock_put_locked(l);
    pthread_mutex_unlock(&vd_locks_mu);
    if (r < 0 && vd_lock_unsupported(r))
        return 0;
    if (r < 0)
        return vd_set_errno(err, r, "%s: locking", f->path);
    if (write)
        return vd_set_error(err, -EBUSY,
                            "%s: another process is using this image (failed to get "
                            "the \"%s\" lock); nothing written", f->path,
                            vd_perm_names[conflict]);
    return vd_set_error(err, -EBUSY,
                        "%s: another process has this image open for writing (failed to "
                        "get the shared \"%s\" lock); pass -U/--force-share to read "
                        "it anyway", f->path, vd_perm_names[conflict]);
}

void vd_file_unlock(vd_file *f)
{
    struct vd_lock *l = f->lock;
    if (!l)
        return;
    pthread_mutex_lock(&vd_locks_mu);
    vd_lock_count(l, f->lock_perm, f->lock_noshare, -1);
    if (l->users)
        vd_lock_apply(l);
    vd_lock_put_locked(l);
    pthread_mutex_unlock(&vd_locks_mu);
    f->lock = NULL;
}
