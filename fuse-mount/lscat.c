/* lscat.c - `vdmount --ls IMAGE [PATH]` and `vdmount --cat IMAGE PATH`: the
 * mount's tree without FUSE, for scripts and machines without /dev/fuse.
 * PATH is a path inside the mount ("fs/p1/etc", "partitions.json", "p2"). */
#include "vdmount.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <time.h>

static void vm_mode_text(mode_t m, char out[11])
{
    const char *types = "?pc?d?b?-?l?s???";
    out[0] = types[(m & S_IFMT) >> 12];
    const char *rwx = "rwxrwxrwx";
    for (int i = 0; i < 9; i++)
        out[1 + i] = (m & (0400 >> i)) ? rwx[i] : '-';
    if (m & S_ISUID) out[3] = (m & S_IXUSR) ? 's' : 'S';
    if (m & S_ISGID) out[6] = (m & S_IXGRP) ? 's' : 'S';
    if (m & S_ISVTX) out[9] = (m & S_IXOTH) ? 't' : 'T';
    out[10] = 0;
}

static void vm_ls_line(struct view *v, const struct view_node *n, const struct stat *st,
                       const char *name)
{
    char mode[11], when[32];
    struct tm tm;
    time_t t = st->st_mtim.tv_sec;
    vm_mode_text(st->st_mode, mode);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M", gmtime_r(&t, &tm) ? &tm : NULL);
    if (S_ISCHR(st->st_mode) || S_ISBLK(st->st_mode))
        printf("%s %3lu %5u %5u %6u, %5u %s %s", mode, (unsigned long)st->st_nlink,
               st->st_uid, st->st_gid, major(st->st_rdev), minor(st->st_rdev), when, name);
    else
        printf("%s %3lu %5u %5u %12lld %s %s", mode, (unsigned long)st->st_nlink,
               st->st_uid, st->st_gid, (long long)st->st_size, when, name);
    char target[4097];
    if (S_ISLNK(st->st_mode) && view_readlink(v, n, target, sizeof target) == 0)
        printf(" -> %s", target);
    putchar('\n');
}

struct vm_names {
    char **v;
    size_t n, cap;
};

static int vm_names_add(void *ctx, const char *name, const struct stat *st)
{
    (void)st;
    struct vm_names *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **nv = realloc(l->v, cap * sizeof *nv);
        if (!nv)
            return -ENOMEM;
        l->v = nv;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(name)))
        return -ENOMEM;
    l->n++;
    return 0;
}

static int vm_name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Resolve a command-line path.  Besides paths of the mount's tree
 * ("fs/p1/etc"), two short forms are accepted: "p1/etc" (a path inside
 * partition 1's file system) and "/etc" (inside the first file system found),
 * when they name nothing in the tree itself.  `*shown` is what was resolved. */
static int vm_resolve(struct view *v, const char *path, struct view_node *n,
                      char **shown)
{
    *shown = strdup(path);
    if (!*shown)
        return -ENOMEM;
    int r = view_resolve(v, path, n);
    if (r != -ENOENT)
        return r;
    const char *p = path + strspn(path, "/");
    size_t len = strcspn(p, "/");
    char *alt = NULL;
    if ((p[len] == '/' && len > 1 && p[0] == 'p') || !strncmp(p, "disk/", 5)) {
        if (asprintf(&alt, "fs/%s", p) < 0)
            return -ENOMEM;
    } else if (view_first_fs(v) && strncmp(p, "fs/", 3)) {
        if (asprintf(&alt, "fs/%s/%s", view_first_fs(v), p) < 0)
            return -ENOMEM;
    } else {
        return r;
    }
    int r2 = view_resolve(v, alt, n);
    if (r2 == 0) {
        free(*shown);
        *shown = alt;
        return 0;
    }
    free(alt);
    return r2 == -ENOENT ? r : r2;
}

int vm_ls(struct view *v, const char *arg)
{
    struct view_node n;
    struct stat st;
    char *path;
    int r = vm_resolve(v, arg, &n, &path);
    if (r == 0)
        r = view_stat(v, &n, &st);
    if (r < 0) {
        fprintf(stderr, "vdmount: %s: %s\n", arg, strerror(-r));
        free(path);
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        vm_ls_line(v, &n, &st, arg);
        free(path);
        return 0;
    }
    struct vm_names l = { 0 };
    r = view_readdir(v, &n, vm_names_add, &l);
    int status = 0;
    if (r < 0) {
        fprintf(stderr, "vdmount: %s: %s\n", path, strerror(-r));
        status = 1;
    }
    qsort(l.v, l.n, sizeof *l.v, vm_name_cmp);
    for (size_t i = 0; i < l.n; i++) {
        char *child;
        struct view_node cn;
        if (asprintf(&child, "%s/%s", path, l.v[i]) < 0) {
            status = 1;
            break;
        }
        r = view_resolve(v, child, &cn);
        if (r == 0)
            r = view_stat(v, &cn, &st);
        if (r < 0) {
            printf("?????????? %s (%s)\n", l.v[i], strerror(-r));
            status = 1;
        } else {
            vm_ls_line(v, &cn, &st, l.v[i]);
        }
        free(child);
    }
    for (size_t i = 0; i < l.n; i++)
        free(l.v[i]);
    free(l.v);
    free(path);
    return status;
}

int vm_cat(struct view *v, const char *path)
{
    struct view_node n;
    struct stat st;
    char *shown = NULL;
    int r = vm_resolve(v, path, &n, &shown);
    free(shown);
    if (r == 0)
        r = view_stat(v, &n, &st);
    if (r == 0 && S_ISDIR(st.st_mode))
        r = -EISDIR;
    if (r == 0 && S_ISLNK(st.st_mode)) {
        char target[4097];
        r = view_readlink(v, &n, target, sizeof target);
        if (r == 0) {
            fprintf(stderr, "vdmount: %s is a symbolic link to %s\n", path, target);
            return 1;
        }
    }
    if (r == 0 && !S_ISREG(st.st_mode))
        r = -EINVAL;
    if (r < 0) {
        fprintf(stderr, "vdmount: %s: %s\n", path, strerror(-r));
        return 1;
    }
    size_t chunk = 1 << 20;
    char *buf = malloc(chunk);
    if (!buf) {
        fprintf(stderr, "vdmount: out of memory\n");
        return 1;
    }
    uint64_t off = 0;
    for (;;) {
        ssize_t k = view_read(v, &n, buf, chunk, off);
        if (k < 0) {
            fprintf(stderr, "vdmount: %s: read at %llu: %s\n", path,
                    (unsigned long long)off, strerror((int)-k));
            free(buf);
            return 1;
        }
        if (k == 0)
            break;
        if (fwrite(buf, 1, k, stdout) != (size_t)k) {
            fprintf(stderr, "vdmount: writing to stdout: %s\n", strerror(errno));
            free(buf);
            return 1;
        }
        off += k;
    }
    free(buf);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "vdmount: writing to stdout: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}
