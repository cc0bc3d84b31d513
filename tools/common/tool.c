/* tool.c - helpers shared by the command-line tools (see tool.h). */
#include "tool.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int vt_version(const char *prog)
{
    printf("%s (vdisk) %s\n", prog, vd_version());
    return VT_EXIT_OK;
}

void vt_vmessage(const char *prefix, const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: ", prefix);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

int vt_usage_error(const char *prog, const char *usage, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vt_vmessage(prog, fmt, ap);
    va_end(ap);
    if (usage)
        fputs(usage, stderr);
    return VT_EXIT_USAGE;
}

const char *vt_bad_option(const char *last, char *buf, size_t n)
{
    /* A short option letter is in optopt; a long option's text is the
     * argument getopt just stepped over (`last`, argv[optind - 1]). */
    if (optopt && !(last && last[0] == '-' && last[1] == '-'))
        snprintf(buf, n, "-%c", optopt);
    else if (last)
        snprintf(buf, n, "%.*s", (int)strcspn(last, "="), last);
    else
        snprintf(buf, n, "?");
    return buf;
}

void vt_print_formats(FILE *f, bool creatable_only)
{
    size_t n;
    const vd_format_desc *t = vd_formats(&n);
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (creatable_only && !t[i].can_create)
            continue;
        fprintf(f, "%s%s", first ? "" : " ", t[i].name);
        first = false;
    }
}

bool vt_replaceable(const char *path)
{
    struct stat st;
    return stat(path, &st) < 0 || S_ISREG(st.st_mode);
}

int vt_resolve_dir(const char *path, char *out, size_t n)
{
    char d1[PATH_MAX], d2[PATH_MAX];
    snprintf(d1, sizeof d1, "%s", path);
    snprintf(d2, sizeof d2, "%s", path);
    char *dir = realpath(dirname(d1), NULL);
    if (!dir)
        return -errno;
    const char *base = basename(d2);
    int w = snprintf(out, n, "%s/%s", strcmp(dir, "/") ? dir : "", base);
    free(dir);
    return w < 0 || (size_t)w >= n ? -ENAMETOOLONG : 0;
}

int vt_resolve_out(const char *path, char *out, size_t n, char *why, size_t whyn)
{
    struct stat st;
    if (strlen(path) >= n) {
        snprintf(why, whyn, "%.200s...: path too long", path);
        return -ENAMETOOLONG;
    }
    if (lstat(path, &st) < 0 || !S_ISLNK(st.st_mode)) {
        snprintf(out, n, "%s", path);
        return 0;
    }
    /* Followed one link at a time (as the kernel's 40 hops), each target
     * read relative to the folder its link lives in, the folder resolved
     * at every hop, so that a missing last name (a dangling link, which
     * realpath refuses) still gives where the file is to be made. */
    char cur[PATH_MAX], next[PATH_MAX], tgt[PATH_MAX];
    snprintf(cur, sizeof cur, "%s", path);
    for (int hop = 0; hop <= 40; hop++) {
        int r = vt_resolve_dir(cur, next, sizeof next);
        if (r < 0) {
            if (r == -ENOENT)
                snprintf(why, whyn, "%s: a symbolic link to %s, whose folder does not exist",
                         path, cur);
            else
                snprintf(why, whyn, "%s: a symbolic link to %s: %s", path, cur, strerror(-r));
            return r;
        }
        bool absent = lstat(next, &st) < 0;
        if (absent && errno != ENOENT) {
            r = -errno;
            snprintf(why, whyn, "%s: a symbolic link to %s: %s", path, next, strerror(-r));
            return r;
        }
        if (absent || !S_ISLNK(st.st_mode)) {
            if (strlen(next) >= n) {
                snprintf(why, whyn, "%s: a symbolic link to a path too long", path);
                return -ENAMETOOLONG;
            }
            snprintf(out, n, "%s", next);
            return 0;
        }
        ssize_t l = readlink(next, tgt, sizeof tgt - 1);
        if (l <= 0) {
            r = l < 0 ? -errno : -EINVAL;
            snprintf(why, whyn, "%s: a symbolic link to %s: %s", path, next, strerror(-r));
            return r;
        }
        tgt[l] = 0;
        if (tgt[0] == '/') {
            snprintf(cur, sizeof cur, "%s", tgt);
        } else {
            char *slash = strrchr(next, '/');
            *slash = 0;
            int w = snprintf(cur, sizeof cur, "%s/%s", next, tgt);
            if (w < 0 || (size_t)w >= sizeof cur) {
                snprintf(why, whyn, "%s: a symbolic link: path too long", path);
                return -ENAMETOOLONG;
            }
        }
    }
    snprintf(why, whyn, "%s: a symbolic link that loops (more than 40 links followed)", path);
    return -ELOOP;
}

void vt_warn_probed_raw(vd_image *img, const char *path)
{
    vd_info i;
    vd_get_info(img, &i);
    if (!i.probed_raw)
        return;
    fprintf(stderr, "WARNING: Image format was not specified for '%s' and probing "
            "guessed raw.\n         Automatically detecting the format is dangerous for "
            "raw images, write operations on block 0 will be restricted.\n         Specify "
            "the 'raw' format explicitly to remove the restrictions.\n", path);
}

int vt_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
