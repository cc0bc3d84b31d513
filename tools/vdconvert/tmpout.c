/* tmpout.c - where a new image is made before it replaces OUT.
 *
 * A one-file image is made under a hidden name in OUT's folder
 * (".OUT.vdconvert-PID") and renamed over OUT when it is complete.
 * An image whose files name each other is made in a hidden temporary
 * folder beside OUT (".vdconvert-XXXXXX") under its final names, so that
 * no name written into it is a temporary one; its files are then renamed
 * into OUT's folder, the descriptor last.  That is every VMDK: split and
 * flat ones name their extents, and even a monolithic one names its own
 * file in its embedded descriptor (libvmdk reads that name).
 *
 * A failure (vc_tmp_abort) or a signal that ends the process removes what
 * was made, so nothing is left behind. */
#include "vdconvert.h"
#include "tool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The temporary output, removed by the signal handler too. */
static char tmp_path[8192];
static char tmp_dir[4096];
/* The temporary folder, opened so that the signal handler can list it
 * without opendir (which allocates). */
static int tmp_dir_fd = -1;
/* Where the output goes: OUT, or the file OUT (a symbolic link) leads to
 * (vt_resolve_out), so that the link stays. */
static char final_dst[4096];

static void tmp_on_signal(int sig)
{
    /* Only async-signal-safe calls: unlink, unlinkat, rmdir, and the
     * getdents64 system call on the folder opened beforehand. */
    int saved = errno;
    if (tmp_path[0])
        unlink(tmp_path);
    if (tmp_dir_fd >= 0) {
        char buf[4096] __attribute__((aligned(8)));
        long n;
        lseek(tmp_dir_fd, 0, SEEK_SET);
        while ((n = syscall(SYS_getdents64, tmp_dir_fd, buf, sizeof buf)) > 0) {
            for (long pos = 0; pos < n;) {
                struct linux_dirent64 {
                    uint64_t ino;
                    int64_t off;
                    unsigned short reclen;
                    unsigned char type;
                    char name[];
                } *de = (struct linux_dirent64 *)(buf + pos);
                if (strcmp(de->name, ".") && strcmp(de->name, ".."))
                    unlinkat(tmp_dir_fd, de->name, 0);
                pos += de->reclen;
            }
        }
    }
    if (tmp_dir[0])
        rmdir(tmp_dir);
    errno = saved;
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Every signal that ends the process by default removes the temporary
 * output first: INT, TERM, HUP (a closed terminal), XFSZ (ulimit -f) and
 * PIPE (an NBD server or a pipe gone).  A signal the caller ignores stays
 * ignored: with XFSZ ignored a write past the limit fails with EFBIG and
 * the command ends with a message instead. */
static void tmp_catch_signals(void)
{
    static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGXFSZ, SIGPIPE };
    struct sigaction sa = { .sa_handler = tmp_on_signal }, old;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaddset(&sa.sa_mask, sigs[i]);
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler != SIG_IGN)
            sigaction(sigs[i], &sa, NULL);
}

bool vc_tmp_needs_folder(const char *fmt)
{
    return fmt && !strcmp(fmt, "vmdk");
}

const char *vc_tmp_begin(const char *dst, const char *fmt, vd_error *e)
{
    char why[VD_ERROR_MAX];
    int r = vt_resolve_out(dst, final_dst, sizeof final_dst, why, sizeof why);
    if (r < 0) {
        vd_set_error(e, r, "%s", why);
        return NULL;
    }
    char d1[4096], d2[4096];
    snprintf(d1, sizeof d1, "%s", final_dst);
    snprintf(d2, sizeof d2, "%s", final_dst);
    const char *dir = dirname(d1), *base = basename(d2);
    if (strlen(dir) + strlen(base) + 40 > sizeof tmp_dir) {
        vd_set_error(e, -ENAMETOOLONG, "%s: path too long", dst);
        return NULL;
    }
    /* OUT is replaced by a rename: only a regular file may be. */
    if (!vt_replaceable(final_dst)) {
        vd_set_error(e, -EINVAL, "%s: exists and is not a regular file; refusing to replace "
                     "it", dst);
        return NULL;
    }
    /* A VMDK names its other files relative to its descriptor, and readers
     * look for them beside the path they open: made in the link's target
     * folder, they would not be found through a link in another one. */
    char linked[4096];
    if (vc_tmp_needs_folder(fmt) && strcmp(final_dst, dst) &&
        vt_resolve_dir(dst, linked, sizeof linked) == 0 &&
        strcmp(dirname(linked), dir)) {
        vd_set_error(e, -EINVAL, "%s: a symbolic link into another folder (%s); a %s image's "
                     "files are found beside the path it is opened by: give that path as OUT",
                     dst, final_dst, fmt);
        return NULL;
    }
    tmp_catch_signals();
    if (!vc_tmp_needs_folder(fmt)) {
        snprintf(tmp_path, sizeof tmp_path, "%s/.%s.vdconvert-%d", dir, base, (int)getpid());
        return tmp_path;
    }
    char t[sizeof tmp_dir];
    snprintf(t, sizeof t, "%s/.vdconvert-XXXXXX", dir);
    /* No signal between making the folder and recording it: a ^C in that
     * gap would leave the empty folder behind (the handler knows only what
     * is recorded). */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGPIPE);
    sigprocmask(SIG_BLOCK, &block, &old);
    if (!mkdtemp(t)) {
        int err = errno;
        sigprocmask(SIG_SETMASK, &old, NULL);
        vd_set_errno(e, -err, "%s: cannot make a temporary folder", dir);
        return NULL;
    }
    tmp_dir_fd = open(t, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    memcpy(tmp_dir, t, sizeof t);
    snprintf(tmp_path, sizeof tmp_path, "%s/%s", tmp_dir, base);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return tmp_path;
}

static void tmp_forget(void)
{
    tmp_path[0] = tmp_dir[0] = final_dst[0] = 0;
    if (tmp_dir_fd >= 0)
        close(tmp_dir_fd);
    tmp_dir_fd = -1;
}

static int tmp_commit(const char *user_dst, vd_error *e)
{
    const char *dst = final_dst[0] ? final_dst : user_dst;
    if (!tmp_dir[0]) {
        if (rename(tmp_path, dst) < 0)
            return vd_set_errno(e, -errno, "%s: cannot put the finished output in place", dst);
        tmp_forget();
        return 0;
    }
    char d1[4096];
    snprintf(d1, sizeof d1, "%s", dst);
    const char *dir = dirname(d1);
    DIR *d = opendir(tmp_dir);
    if (!d)
        return vd_set_errno(e, -errno, "%s: cannot list the temporary folder", dst);
    struct dirent *de;
    int r = 0;
    /* The extents first: until the descriptor arrives, OUT is the old
     * image (or absent), never a descriptor naming files not yet there. */
    while (r == 0 && (de = readdir(d))) {
        char from[8192], to[8192];
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") ||
            !strcmp(tmp_path + strlen(tmp_dir) + 1, de->d_name))
            continue;
        snprintf(from, sizeof from, "%s/%s", tmp_dir, de->d_name);
        snprintf(to, sizeof to, "%s/%s", dir, de->d_name);
        if (rename(from, to) < 0)
            r = vd_set_errno(e, -errno, "%s: cannot put the finished output in place", to);
    }
    closedir(d);
    if (r == 0 && rename(tmp_path, dst) < 0)
        r = vd_set_errno(e, -errno, "%s: cannot put the finished output in place", dst);
    if (r == 0) {
        rmdir(tmp_dir);
        tmp_forget();
    }
    return r;
}

int vc_tmp_commit(const char *dst, vd_error *e)
{
    if (!tmp_path[0])
        return 0;
    /* No signal between the renames: they happen all or (on a failure,
     * which the caller cleans up) as far as they got, never cut halfway by
     * a ^C that would then leave renamed extents in OUT's folder. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, &old);
    int r = tmp_commit(dst, e);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return r;
}

void vc_tmp_abort(void)
{
    if (tmp_path[0])
        unlink(tmp_path);
    if (tmp_dir[0]) {
        DIR *d = opendir(tmp_dir);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            char p[8192];
            snprintf(p, sizeof p, "%s/%s", tmp_dir, de->d_name);
            unlink(p);
        }
        if (d)
            closedir(d);
        rmdir(tmp_dir);
    }
    tmp_forget();
}

void vc_tmp_user_names(vd_error *e, const char *dst)
{
    if (!e || !tmp_path[0])
        return;
    char d1[4096];
    snprintf(d1, sizeof d1, "%s", dst);
    const char *dir = dirname(d1);
    const char *from[2] = { tmp_path, tmp_dir[0] ? tmp_dir : NULL };
    const char *to[2] = { dst, dir };
    for (int k = 0; k < 2; k++) {
        if (!from[k])
            continue;
        size_t fl = strlen(from[k]);
        char out[VD_ERROR_MAX];
        size_t o = 0;
        for (const char *p = e->msg; *p && o + 1 < sizeof out;) {
            if (!strncmp(p, from[k], fl)) {
                o += (size_t)snprintf(out + o, sizeof out - o, "%s", to[k]);
                if (o >= sizeof out)
                    o = sizeof out - 1;
                p += fl;
            } else {
                out[o++] = *p++;
            }
        }
        out[o] = 0;
        memcpy(e->msg, out, o + 1);
    }
}
