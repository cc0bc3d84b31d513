/* beneath.c - open a reference beneath a folder, following symlinks by
 * hand, for what openat2(RESOLVE_BENEATH) refuses although it stays inside:
 * an absolute name, or a symlink with an absolute target, that leads into
 * the folder (what `vdmount --keep-overlay` used to write, or a link
 * "disk.vmdk -> /vms/a/disk.vmdk" made inside /vms/a).
 *
 * The walk holds a descriptor for each directory on its way (opened
 * O_PATH|O_NOFOLLOW, never by a path the kernel resolves for us) and reads
 * each symlink with readlinkat, so no name can be swapped between a check
 * and the open.  Inside the folder, ".." above it is an escape.  An
 * absolute target is walked from "/" (outside the folder, anything goes)
 * until a directory on the way is the folder itself, by device and inode,
 * not by name; from there on the walk is confined again.  A walk that ends
 * without having entered the folder is an escape (-EXDEV).  At most
 * VD_WALK_LINKS symlinks; the last component is opened with O_NOFOLLOW. */
#include "vd-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VD_WALK_LINKS 40
#define VD_WALK_DEPTH 256

struct vd_walk {
    int dirs[VD_WALK_DEPTH];   /* dirs[0..n-1]: the way down; [n-1] current */
    int n;
    int inside;                /* index of the folder in dirs, -1 outside */
    dev_t root_dev;
    ino_t root_ino;
};

static void vd_walk_reset(struct vd_walk *w)
{
    for (int i = 0; i < w->n; i++)
        close(w->dirs[i]);
    w->n = 0;
    w->inside = -1;
}

/* Push directory `fd` (owned); enters the folder when it is the folder. */
static int vd_walk_push(struct vd_walk *w, int fd)
{
    if (w->n == VD_WALK_DEPTH) {
        close(fd);
        return -ENAMETOOLONG;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int r = -errno;
        close(fd);
        return r;
    }
    w->dirs[w->n++] = fd;
    if (w->inside < 0 && st.st_dev == w->root_dev && st.st_ino == w->root_ino)
        w->inside = w->n - 1;
    return 0;
}

/* Replace the pending path: `target` followed by what was left. */
static char *vd_walk_splice(const char *target, const char *rest)
{
    size_t tl = strlen(target), rl = strlen(rest);
    char *p = malloc(tl + rl + 2);
    if (p && rl) {
        memcpy(p, target, tl);
        p[tl] = '/';
        memcpy(p + tl + 1, rest, rl + 1);
    } else if (p) {
        memcpy(p, target, tl + 1);   /* the link was the last component */
    }
    return p;
}

int vd_open_beneath_walk(int root, const char *name, int flags)
{
    struct vd_walk w = { .n = 0, .inside = -1 };
    struct stat rs;
    if (fstat(root, &rs) < 0)
        return -errno;
    w.root_dev = rs.st_dev;
    w.root_ino = rs.st_ino;
    char *todo = strdup(name);
    if (!todo)
        return -ENOMEM;
    int r = 0, links = 0, fd = -1;
    int d0 = name[0] == '/' ? open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)
                            : fcntl(root, F_DUPFD_CLOEXEC, 0);
    r = d0 < 0 ? -errno : vd_walk_push(&w, d0);
    char *p = todo;
    while (r == 0) {
        while (*p == '/')
            p++;
        if (!*p) {              /* ended on a directory: not a file */
            r = -EISDIR;
            break;
        }
        char *end = strchr(p, '/');
        bool last = !end;
        if (end)
            *end = 0;
        const char *comp = p;
        char *rest = end ? end + 1 : p + strlen(p);
        int cur = w.dirs[w.n - 1];
        if (!strcmp(comp, ".")) {
            r = last ? -EISDIR : 0;
        } else if (!strcmp(comp, "..")) {
            if (w.inside >= 0 && w.n - 1 == w.inside)
                r = -EXDEV;             /* above the folder */
            else if (w.n > 1)
                close(w.dirs[--w.n]);   /* "/.." stays at "/" */
            if (r == 0 && last)
                r = -EISDIR;
        } else {
            int o = last ? (flags | O_NOFOLLOW) : (O_PATH | O_NOFOLLOW | O_CLOEXEC);
            int nfd = openat(cur, comp, o);
            struct stat st;
            bool link = false;
            if (nfd < 0 && last && errno == ELOOP)
                link = true;            /* the file is a symlink */
            else if (nfd < 0)
                r = -errno;
            else if (!last && fstat(nfd, &st) < 0)
                r = -errno;
            else if (!last && S_ISLNK(st.st_mode))
                link = true;
            if (link) {
                char target[4096];
                ssize_t tl = nfd >= 0 ? readlinkat(nfd, "", target, sizeof target - 1)
                                      : readlinkat(cur, comp, target, sizeof target - 1);
                if (nfd >= 0)
                    close(nfd);
                nfd = -1;
                if (tl < 0)
                    r = -errno;
                else if (++links > VD_WALK_LINKS)
                    r = -ELOOP;
                else if (tl == 0)
                    r = -ENOENT;
                if (r == 0) {
                    target[tl] = 0;
                    char *n2 = vd_walk_splice(target, rest);
                    if (!n2) {
                        r = -ENOMEM;
                    } else {
                        free(todo);
                        todo = p = n2;
                        if (target[0] == '/') {   /* re-anchored at "/" */
                            vd_walk_reset(&w);
                            int rd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
                            r = rd < 0 ? -errno : vd_walk_push(&w, rd);
                        }
                    }
                }
                continue;
            }
            if (r < 0) {
                if (nfd >= 0)
                    close(nfd);
                break;
            }
            if (last) {
                fd = nfd;
                break;
            }
            if (!S_ISDIR(st.st_mode)) {
                close(nfd);
                r = -ENOTDIR;
                break;
            }
            r = vd_walk_push(&w, nfd);
        }
        p = rest;
    }
    /* The file must lie in the folder: the walk entered it and stayed. */
    if (r == 0 && w.inside < 0) {
        close(fd);
        r = -EXDEV;
    }
    vd_walk_reset(&w);
    free(todo);
    return r < 0 ? r : fd;
}
