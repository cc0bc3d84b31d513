/* vdmount.c - FUSE view of any disk image libvdisk reads.
 *
 *   vdmount [options] IMAGE MOUNTPOINT
 *   vdmount --ls IMAGE [PATH]
 *   vdmount --cat IMAGE PATH
 *
 * The image is opened read-only unless --rw; --overlay puts a temporary
 * qcow2 layer on top (backing = the image) that takes the writes and is
 * dropped at unmount, so the image itself is never opened for writing.
 * The tree is described in view.h, the FUSE side lives in fuse-ops.c. */
#include "vdmount.h"
#include "tool.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct vm_options vm_options;

struct vm_args {
    const char *image, *mountpoint, *format, *keep_overlay, *path;
    bool rw, overlay, debug, foreground, allow_host_paths, ls, cat, force_share;
    char *fuse_opts;        /* -o values joined by commas */
};

static void vm_usage(FILE *f)
{
    fprintf(f,
"usage: vdmount [options] IMAGE MOUNTPOINT\n"
"       vdmount --ls IMAGE [PATH]      list a directory of the tree (no FUSE)\n"
"       vdmount --cat IMAGE PATH       write a file of the tree to stdout\n"
"\n"
"The mount shows: disk, p1, p2, ... (partitions), partitions.json, and\n"
"fs/pN/... (the files of ext2/3/4 partitions; fs/disk/... for an\n"
"unpartitioned disk).  Unmount with: fusermount3 -u MOUNTPOINT\n"
"\n"
"options:\n"
"  -f, --format FMT       image format (default: probed from the content)\n"
"      --rw               open the image read-write: disk, pN and the files of\n"
"                         ext2/3/4 trees under fs/ accept writes\n"
"      --overlay          writes go to a temporary qcow2 layer dropped at unmount\n"
"      --keep-overlay FILE  like --overlay, but the layer is FILE and is kept\n"
"                         (vdconvert commit FILE writes it into the image)\n"
"      --allow-host-paths follow backing files outside the image's folder\n"
"  -U, --force-share      read-only mounts: read the image even while another\n"
"                         process (a running VM) writes it; without it such an\n"
"                         image is refused, as with --rw (qemu's image locks)\n"
"      --page-cache       disk and pN through the kernel page cache (repeated\n"
"                         reads from memory, mmap) instead of direct 1 MiB reads\n"
"  -o OPT[,OPT...]        FUSE mount options (allow_other, ...)\n"
"  -d, --debug            FUSE debug output; stays in the foreground\n"
"      --foreground       do not detach; errors met while serving go to stderr\n"
"  -h, --help             this text\n"
"  -V, --version          print the version\n"
"exit: 0 success, 1 error, 2 usage\n");
}

static int vm_parse(int argc, char **argv, struct vm_args *a)
{
    enum { O_RW = 256, O_OVERLAY, O_KEEP, O_HOST, O_FG, O_LS, O_CAT, O_CACHE };
    static const struct option longopts[] = {
        { "format", required_argument, NULL, 'f' },
        { "rw", no_argument, NULL, O_RW },
        { "overlay", no_argument, NULL, O_OVERLAY },
        { "keep-overlay", required_argument, NULL, O_KEEP },
        { "allow-host-paths", no_argument, NULL, O_HOST },
        { "force-share", no_argument, NULL, 'U' },
        { "page-cache", no_argument, NULL, O_CACHE },
        { "debug", no_argument, NULL, 'd' },
        { "foreground", no_argument, NULL, O_FG },
        { "ls", no_argument, NULL, O_LS },
        { "cat", no_argument, NULL, O_CAT },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    char opt[64];
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:o:dhVU", longopts, NULL)) != -1) {
        switch (c) {
        case 'f': a->format = optarg; break;
        case 'o': {
            char *joined;
            if (asprintf(&joined, "%s%s%s", a->fuse_opts ? a->fuse_opts : "",
                         a->fuse_opts ? "," : "", optarg) < 0)
                return -1;
            free(a->fuse_opts);
            a->fuse_opts = joined;
            break;
        }
        case 'd': a->debug = a->foreground = true; break;
        case 'U': a->force_share = true; break;
        case 'h': vm_usage(stdout); exit(0);
        case 'V': exit(vt_version("vdmount"));
        case O_RW: a->rw = true; break;
        case O_OVERLAY: a->overlay = true; break;
        case O_KEEP: a->overlay = true; a->keep_overlay = optarg; break;
        case O_HOST: a->allow_host_paths = true; break;
        case O_CACHE: vm_options.page_cache = true; break;
        case O_FG: a->foreground = true; break;
        case O_LS: a->ls = true; break;
        case O_CAT: a->cat = true; break;
        default:
            fprintf(stderr, "vdmount: unknown option or missing argument '%s'\n",
                    vt_bad_option(argv[optind - 1], opt, sizeof opt));
            return -1;
        }
    }
    int left = argc - optind;
    if (a->force_share && a->rw) {
        fprintf(stderr, "vdmount: --force-share is for read-only mounts; --rw takes the "
                "image's write lock\n");
        return -1;
    }
    if (a->ls && a->cat) {
        fprintf(stderr, "vdmount: --ls and --cat exclude each other\n");
        return -1;
    }
    if (a->ls || a->cat) {
        if (left < 1 + a->cat || left > 2) {
            fprintf(stderr, "vdmount: expected IMAGE %s\n", a->cat ? "PATH" : "[PATH]");
            return -1;
        }
        a->image = argv[optind];
        a->path = left == 2 ? argv[optind + 1] : "/";
        return 0;
    }
    if (left != 2) {
        fprintf(stderr, "vdmount: expected IMAGE MOUNTPOINT\n");
        return -1;
    }
    a->image = argv[optind];
    a->mountpoint = argv[optind + 1];
    return 0;
}

/* Refuse a missing, busy (already a mount point) or non-empty mount point
 * with a message that says which; FUSE itself would mount over all three. */
static int vm_check_mountpoint(const char *mp)
{
    struct stat st, up;
    if (stat(mp, &st) < 0) {
        if (errno == ENOTCONN)
            fprintf(stderr, "vdmount: mount point %s is busy: a FUSE mount whose "
                    "server is gone (fusermount3 -u %s)\n", mp, mp);
        else
            fprintf(stderr, "vdmount: mount point %s: %s\n", mp, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "vdmount: mount point %s is not a directory\n", mp);
        return -1;
    }
    char *parent;
    if (asprintf(&parent, "%s/..", mp) < 0)
        return -1;
    int r = stat(parent, &up);
    free(parent);
    if (r == 0 && (st.st_dev != up.st_dev || st.st_ino == up.st_ino)) {
        fprintf(stderr, "vdmount: mount point %s is busy: something is already "
                "mounted there\n", mp);
        return -1;
    }
    DIR *d = opendir(mp);
    if (!d) {
        fprintf(stderr, "vdmount: mount point %s: %s\n", mp, strerror(errno));
        return -1;
    }
    struct dirent *e;
    bool empty = true;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            empty = false;
    closedir(d);
    if (!empty) {
        fprintf(stderr, "vdmount: mount point %s is not empty\n", mp);
        return -1;
    }
    return 0;
}

/* --overlay: the image opened read-only as the user asked (format,
 * confinement, -U), under a layer from libvdisk (vd_open_overlay): a
 * temporary qcow2, gone at unmount however the process ends, or the kept
 * --keep-overlay FILE, which names the image relatively. */
static int vm_open_overlay(const struct vm_args *a, vd_image **img, vd_error *err)
{
    vd_image *base;
    vd_open_opts o = { .format = a->format, .readonly = true,
                       .allow_host_paths = a->allow_host_paths,
                       .force_share = a->force_share };
    int r = vd_open(a->image, &o, &base, err);
    if (r < 0)
        return r;
    vd_overlay_opts ov = { .keep_path = a->keep_overlay };
    r = vd_open_overlay(base, &ov, img, err);
    if (r < 0)
        vd_close(base, NULL);
    return r;
}

static int vm_open_image(const struct vm_args *a, vd_image **img, vd_error *err)
{
    if (a->overlay && !a->ls && !a->cat)
        return vm_open_overlay(a, img, err);
    vd_open_opts o = { .format = a->format, .readonly = !a->rw || a->ls || a->cat,
                       .allow_host_paths = a->allow_host_paths,
                       .force_share = a->force_share };
    return vd_open(a->image, &o, img, err);
}

/* Mount, detach (unless --foreground), serve until unmounted or signalled.
 * Returns the exit status. */
static int vm_serve(const struct vm_args *a, struct view *v, const char *argv0)
{
    struct fuse_args fa = FUSE_ARGS_INIT(0, NULL);
    char *opts = NULL;
    int status = 1;
    if (asprintf(&opts, "fsname=vdisk,subtype=vdmount,default_permissions%s%s%s",
                 vm_options.writable ? "" : ",ro", a->fuse_opts ? "," : "",
                 a->fuse_opts ? a->fuse_opts : "") < 0)
        return 1;
    if (fuse_opt_add_arg(&fa, argv0) || fuse_opt_add_arg(&fa, "-o") ||
        fuse_opt_add_arg(&fa, opts) || (a->debug && fuse_opt_add_arg(&fa, "-d"))) {
        free(opts);
        fuse_opt_free_args(&fa);
        return 1;
    }
    free(opts);
    struct fuse *f = fuse_new(&fa, &vm_fuse_ops, sizeof vm_fuse_ops, v);
    fuse_opt_free_args(&fa);
    if (!f)
        return 1;    /* libfuse has printed why (e.g. an unknown -o option) */
    if (fuse_mount(f, a->mountpoint) != 0)
        goto out_destroy;
    struct fuse_session *se = fuse_get_session(f);
    if (fuse_set_signal_handlers(se) != 0)
        goto out_unmount;
    if (a->foreground)
        view_set_log(v, stderr);
    view_report_readonly(v, stderr);
    if (fuse_daemonize(a->foreground) != 0)
        goto out_signals;
    /* fuse_loop_mt: one thread per concurrent request, so reads of the disk
     * and of different files proceed in parallel. */
    status = fuse_loop_mt(f, 0) < 0 ? 1 : 0;
out_signals:
    fuse_remove_signal_handlers(se);
out_unmount:
    fuse_unmount(f);
out_destroy:
    fuse_destroy(f);
    return status;
}

int main(int argc, char **argv)
{
    struct vm_args a = { 0 };
    if (vm_parse(argc, argv, &a) < 0) {
        vm_usage(stderr);
        return 2;
    }
    if (a.rw && a.overlay)
        a.rw = false;   /* the overlay takes the writes; the image stays as is */
    if (a.mountpoint && vm_check_mountpoint(a.mountpoint) < 0)
        return 1;
    vd_image *img;
    vd_error err = { 0 };
    if (vm_open_image(&a, &img, &err) < 0) {
        fprintf(stderr, "vdmount: %s\n", err.msg);
        return 1;
    }
    vm_options.writable = (a.rw || a.overlay) && !a.ls && !a.cat;
    vm_options.disk_size = vd_size(img);
    struct view *v;
    if (view_open(img, vm_options.writable, &v, &err) < 0) {
        fprintf(stderr, "vdmount: %s\n", err.msg);
        vd_close(img, NULL);
        return 1;
    }
    /* an overlay is a deleted file: the synthetic entries get the times and
     * owner of the image the user named */
    view_set_base(v, a.image);
    int status;
    if (a.ls) {
        status = vm_ls(v, a.path);
    } else if (a.cat) {
        status = vm_cat(v, a.path);
    } else {
        if (a.foreground)
            view_report(v, stderr);
        status = vm_serve(&a, v, argv[0]);
    }
    view_close(v);
    if (vd_close(img, &err) < 0) {
        fprintf(stderr, "vdmount: closing: %s\n", err.msg);
        status = 1;
    }
    free(a.fuse_opts);
    return status;
}
