/* chain.c - sub-commands that work on backing chains: commit, rebase,
 * snapshot; and vc_rewrite, the fallback they (and resize) share.
 *
 * commit, rebase and resize work in place through vd_resize, vd_set_backing
 * and vd_make_empty (inplace.c).  A format without the in-place operation
 * (-ENOSYS) is rewritten instead: a new image of the same format and layout
 * (vd_create_options_like) is made as a new output (tmpout.c: a hidden
 * name in the same folder, or final names in a hidden folder), filled by
 * the copy engine, and renamed over the old one; the old image stays
 * intact until that rename. */
#include "vdconvert.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct chain_target {
    const char *backing, *bfmt;
    bool only_top;
    bool copy;
};

static struct chain_target chain_plan(vd_image *img, const char *nb, const char *nbf,
                                      enum vc_rewrite_mode mode)
{
    struct chain_target t = { .copy = mode != VC_REWRITE_EMPTY };
    vd_info i;
    vd_get_info(img, &i);
    if (mode == VC_REWRITE_KEEP_BACKING || mode == VC_REWRITE_EMPTY) {
        t.backing = i.backing_file;
        t.bfmt = i.backing_format;
    } else {
        t.backing = nb && *nb ? nb : NULL;
        t.bfmt = t.backing ? nbf : NULL;
    }
    t.only_top = mode == VC_REWRITE_KEEP_BACKING || mode == VC_REWRITE_UNSAFE;
    return t;
}

/* Fill the new image `out` from `img` according to the plan. */
static int chain_fill(vd_image *img, vd_image *out, const struct chain_target *t,
                      uint64_t size, vd_error *e)
{
    uint64_t old = vd_size(img);
    vd_copy_opts c = {
        .size = old < size ? old : size, .sparse_size = 4096,
        .threads = vt_cpus(), .only_top = t->only_top,
        .compare = t->only_top ? NULL : vd_backing(out), .target_is_zeroed = !vd_backing(out),
    };
    int r = vd_copy(img, out, &c, e);
    /* Grown overlay: the new tail must read as zeroes, not as the backing. */
    vd_image *b = vd_backing(out);
    if (r == 0 && b && size > old && vd_size(b) > old) {
        uint64_t end = vd_size(b) < size ? vd_size(b) : size;
        r = vd_pwrite_zeroes(out, old, end - old, 0, e);
    }
    return r;
}

int vc_rewrite(const char *path, const char *fmt, uint64_t size, const char *new_backing,
               const char *new_bfmt, enum vc_rewrite_mode mode, bool allow, vd_error *e)
{
    vd_image *img, *out = NULL;
    /* Modes that copy only the image's own layer do not read its backing:
     * a VHDX overlay whose base a commit has just written no longer matches
     * its parent linkage, and this rewrite is what relinks it. */
    bool own = mode != VC_REWRITE_SAFE;
    int r = vd_open(path, &(vd_open_opts){ .format = fmt, .readonly = true, .no_backing = own,
                    .allow_host_paths = allow }, &img, e);
    if (r < 0)
        return r;
    if (vd_list_snapshots(img, NULL, 0) > 0) {
        vd_close(img, NULL);
        return vd_set_error(e, -ENOTSUP, "%s: has internal snapshots, which rewriting the "
                            "image would lose", path);
    }
    char opts[1024];
    if (vd_create_options_like(img, NULL, VD_LIKE_LAYOUT, opts, sizeof opts, NULL) < 0)
        opts[0] = 0;    /* as before: a layout that does not fit is not kept */
    struct chain_target t = chain_plan(img, new_backing, new_bfmt, mode);
    vd_create_opts co = { .format = vd_format_name(img), .size = size,
                          .options = opts[0] ? opts : NULL, .backing_file = t.backing,
                          .backing_format = t.bfmt, .allow_host_paths = allow,
                          .final_path = path };
    const char *tmp = vc_tmp_begin(path, vd_format_name(img), e);
    r = tmp ? vd_create(tmp, &co, e) : e ? e->code : -EINVAL;
    if (r == 0)
        r = vd_open(tmp, &(vd_open_opts){ .format = vd_format_name(img), .final_path = path,
                    .allow_host_paths = allow }, &out, e);
    if (r == 0 && t.copy)
        r = chain_fill(img, out, &t, size, e);
    if (out) {
        int r2 = vd_close(out, r < 0 ? NULL : e);
        if (r == 0)
            r = r2;
    }
    vd_close(img, NULL);
    if (r == 0)
        r = vc_tmp_commit(path, e);
    if (r < 0) {
        vc_tmp_user_names(e, path);
        vc_tmp_abort();
    }
    return r;
}

/* ---- commit ----------------------------------------------------------------- */

static const char commit_usage[] =
    "usage: vdconvert commit [-f FMT] [-b BASE] [-d] [-p] [-q] [--allow-host-paths] IMG\n"
    "  Writes IMG's own data into its backing file; then IMG is emptied\n"
    "  (unless -d), so the chain shows the same content.\n"
    "  -b BASE  commit into BASE, a deeper image of IMG's chain (named as IMG's\n"
    "           chain stores it, or a path from IMG's folder): BASE receives the\n"
    "           data of IMG and of every image between them; IMG is not emptied\n"
    "           and the images between are left as they are (as qemu-img 7.2)\n"
    "  -r RATE, -t CACHE are accepted and ignored\n";

/* Copy the data the top `layers` layers of top's chain hold into `below`
 * (the layer under them); `link` is the layer whose backing `below` is. */
static int commit_into_base(vd_image *top, vd_image *below, int layers, vd_image *link,
                            bool progress, bool allow, vd_error *e)
{
    vd_image *base;
    /* The base keeps its content id (VMDK CID): a new one would need the
     * delta's parentCID rewritten too, a second file no write order can
     * change at the same moment; the chain's guest view does not change. */
    int r = vd_open(vd_filename(below), &(vd_open_opts){ .format = vd_format_name(below),
                    .allow_host_paths = allow, .keep_content_id = true }, &base, e);
    if (r < 0)
        return r;
    if (vd_size(base) < vd_size(top)) {
        vd_close(base, NULL);
        return vd_set_error(e, -EINVAL, "%s: backing file is smaller than %s; resize it "
                            "first", vd_filename(below), vd_filename(top));
    }
    /* A format that links the overlay to its base's content (VHDX) makes
     * the overlay accept the base as it will be once written, first. */
    if (vd_inplace_ops(link) & VD_INPLACE_PREPARE_COMMIT) {
        vd_image *rw;
        r = vd_open(vd_filename(link), &(vd_open_opts){ .format = vd_format_name(link),
                    .no_backing = true, .allow_host_paths = allow }, &rw, e);
        if (r == 0) {
            r = vd_prepare_commit(rw, base, e);
            int r2 = vd_close(rw, r < 0 ? NULL : e);
            r = r < 0 ? r : r2;
        }
        if (r < 0) {
            vd_close(base, NULL);
            return r;
        }
    }
    char label[512];
    snprintf(label, sizeof label, "%s -> %s", vd_filename(top), vd_filename(below));
    vt_progress *prog = vt_progress_new(label, vd_size(top), progress);
    vd_copy_opts c = {
        .size = vd_size(top), .sparse_size = 4096,
        .threads = vt_cpus(), .only_top = true, .top_layers = layers,
        .progress = vt_progress_cb, .progress_ctx = prog,
    };
    r = vd_copy(top, base, &c, e);
    vt_progress_end(prog, r == 0);
    int r2 = vd_close(base, r < 0 ? NULL : e);
    return r < 0 ? r : r2;
}

/* The layer of top's chain that -b names, and its depth (qemu-img matches
 * the name as the chain stores it, or the file it names from the top
 * image's folder). */
static int commit_find_base(vd_image *top, const char *path, const char *name, vd_image **out,
                            int *depth, vd_error *e)
{
    char *p = vc_backing_path(path, name);
    struct stat want, st;
    bool have = p && stat(p, &want) == 0;
    free(p);
    int d = 1;
    for (vd_image *l = vd_backing(top); l; l = vd_backing(l), d++) {
        if (have && stat(vd_filename(l), &st) == 0 && st.st_dev == want.st_dev &&
            st.st_ino == want.st_ino) {
            *out = l;
            *depth = d;
            return 0;
        }
    }
    return vd_set_error(e, -ENOENT, "Did not find '%s' in the backing chain of '%s'", name, path);
}

/* The layer at `depth` of top's chain (0: top). */
static vd_image *commit_layer(vd_image *top, int depth)
{
    while (depth-- > 0 && top)
        top = vd_backing(top);
    return top;
}

int vc_cmd_commit(int argc, char **argv)
{
    const char *fmt = NULL, *bname = NULL;
    bool keep = false, progress = false, quiet = false, allow = false;
    static const struct option lo[] = {
        { "help", 0, 0, 'h' }, { "allow-host-paths", 0, 0, 'H' }, { 0, 0, 0, 0 } };
    int c, done;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:b:dpqht:r:", lo, NULL)) != -1) {
        switch (c) {
        case 'b': bname = optarg; break;
        case 'd': keep = true; break;
        case 'p': progress = true; break;
        case 'q': quiet = true; break;
        case 't': case 'r': break;
        default:
            done = vc_common_option(c, "commit", commit_usage, argv, &fmt, &allow, NULL);
            if (done >= 0)
                return done;
        }
    }
    vd_image *top;
    if ((done = vc_open_operand("commit", argc, argv, fmt, allow, &top)))
        return done;
    const char *path = argv[optind];
    vd_error e = { 0 };
    char *tf = strdup(vd_format_name(top)), *above = NULL, *above_fmt = NULL;
    uint64_t size = vd_size(top);
    vd_image *below = vd_backing(top);
    int depth = 1, r = tf ? 0 : -ENOMEM;
    if (r == 0 && bname)
        r = commit_find_base(top, path, bname, &below, &depth, &e);
    else if (r == 0 && !below)
        r = vd_set_error(&e, -EINVAL, "%s: has no backing file to commit into", path);
    vd_image *link = top;
    if (r == 0 && bname) {
        /* qemu-img: with -b the top stays as it is; the image right above
         * the base gets its link refreshed (VMDK parentCID, VHDX GUID) */
        keep = true;
        link = commit_layer(top, depth - 1);
        above = strdup(depth > 1 ? vd_filename(link) : path);
        above_fmt = strdup(vd_format_name(link));
        if (!above || !above_fmt)
            r = -ENOMEM;
    }
    if (r == 0)
        r = commit_into_base(top, below, depth, link, progress && !quiet, allow, &e);
    vd_close(top, NULL);
    const char *fpath = above ? above : path, *ffmt = above ? above_fmt : tf;
    if (r == 0) {
        r = vc_commit_finish(fpath, ffmt, keep, allow, &e);
        if (r == -ENOSYS)       /* not in place: rewrite the overlay */
            r = vc_rewrite(fpath, ffmt, size, NULL, NULL,
                           keep ? VC_REWRITE_KEEP_BACKING : VC_REWRITE_EMPTY, allow, &e);
    }
    free(tf);
    free(above);
    free(above_fmt);
    if (r < 0)
        return vc_fail_err(&e);
    if (!quiet)
        printf("Image committed.\n");
    return 0;
}

/* ---- rebase ----------------------------------------------------------------- */

static const char rebase_usage[] =
    "usage: vdconvert rebase [-f FMT] [-u] [-p] [-q] [--allow-host-paths]\n"
    "                        -b BACKING [-F FMT] IMG\n"
    "  Safe mode (default): IMG keeps its guest content over the new backing file.\n"
    "  -u: only the reference changes (IMG's own data is kept as it is).\n"
    "  -b \"\" removes the backing file.\n";

int vc_cmd_rebase(int argc, char **argv)
{
    const char *fmt = NULL, *nb = NULL, *nbf = NULL;
    bool unsafe = false, quiet = false, allow = false;
    static const struct option lo[] = {
        { "help", 0, 0, 'h' }, { "allow-host-paths", 0, 0, 'H' }, { 0, 0, 0, 0 } };
    int c, done;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:b:F:upqht:T:", lo, NULL)) != -1) {
        switch (c) {
        case 'b': nb = optarg; break;
        case 'F': nbf = optarg; break;
        case 'u': unsafe = true; break;
        case 'q': quiet = true; break;
        case 'p': case 't': case 'T': break;
        default:
            done = vc_common_option(c, "rebase", rebase_usage, argv, &fmt, &allow, NULL);
            if (done >= 0)
                return done;
        }
    }
    if (!nb)
        return vc_usage("rebase", "-b BACKING is required (-b \"\" removes the backing file)");
    if (argc - optind != 1)
        return vc_usage("rebase", "expected one image");
    const char *path = argv[optind];
    vd_error e = { 0 };
    /* qemu-img 7.2: a new backing file needs its format named (-F) */
    const char *ifmt = fmt ? fmt : vd_probe_file(path, NULL, NULL);
    if (*nb && !nbf && vc_backing_needs_format(ifmt))
        return vc_fail("%s: Could not change the backing file to '%s': backing format must "
                       "be specified (give it with -F FMT)", path, nb);
    int r = vc_rebase_inplace(path, fmt, nb, nbf, unsafe, allow, &e);
    if (r == -ENOSYS) {      /* no in-place reference change: rewrite */
        vd_image *img;
        e = (vd_error){ 0 };
        if (vc_open(path, fmt, true, allow, &img, &e) < 0)
            return vc_fail_err(&e);
        char *f = strdup(vd_format_name(img));
        uint64_t size = vd_size(img);
        vd_close(img, NULL);
        r = f ? vc_rewrite(path, f, size, nb, nbf,
                           unsafe ? VC_REWRITE_UNSAFE : VC_REWRITE_SAFE, allow, &e)
              : -ENOMEM;
        free(f);
    }
    (void)quiet;
    return r < 0 ? vc_fail_err(&e) : 0;
}

/* ---- snapshot ----------------------------------------------------------------- */

static const char snapshot_usage[] =
    "usage: vdconvert snapshot [-f FMT] [-l | -c NAME | -a NAME | -d NAME] IMG\n"
    "  -l       list the internal snapshots (qcow2)\n"
    "  -c NAME  create snapshot NAME of the current disk state\n"
    "  -a SNAP  apply snapshot SNAP (id or name): the disk returns to it and\n"
    "           what was written since is lost\n"
    "  -d SNAP  delete snapshot SNAP (id or name), freeing what only it used\n"
    "  -f FMT   image format (default: probed)\n"
    "  -U       with -l: list even while another process writes IMG\n";

int vc_cmd_snapshot(int argc, char **argv)
{
    const char *fmt = NULL, *name = NULL;
    int op = 0;
    bool allow = false;
    static const struct option lo[] = {
        VC_COMMON_LONG_OPTIONS, { 0, 0, 0, 0 } };
    int c, done;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:lc:a:d:qhU", lo, NULL)) != -1) {
        switch (c) {
        case 'l': op = 'l'; break;
        case 'c': case 'a': case 'd': op = c; name = optarg; break;
        case 'q': break;
        default:
            done = vc_common_option(c, "snapshot", snapshot_usage, argv, &fmt, &allow, NULL);
            if (done >= 0)
                return done;
        }
    }
    if (argc - optind != 1 || !op)
        return vc_fail("snapshot: expected -l, -c, -a or -d and one image "
                       "(see vdconvert snapshot --help)");
    vd_error e = { 0 };
    vd_image *img;
    if (vc_open(argv[optind], fmt, op == 'l', allow, &img, &e) < 0)
        return vc_fail_err(&e);
    int rc = 0;
    if (op != 'l') {
        enum vd_snapshot_op sop = op == 'c' ? VD_SNAPSHOT_CREATE
                                  : op == 'a' ? VD_SNAPSHOT_APPLY : VD_SNAPSHOT_DELETE;
        int r = vd_snapshot(img, sop, name, &e);
        int r2 = vd_close(img, r < 0 ? NULL : &e);
        return r < 0 || r2 < 0 ? vc_fail_err(&e) : 0;
    } else {
        int n = vd_list_snapshots(img, NULL, 0);
        vd_snapshot_info *s = n > 0 ? calloc((size_t)n, sizeof *s) : NULL;
        if (n > 0 && s && vd_list_snapshots(img, s, (size_t)n) >= 0) {
            vc_print_snapshots(s, n);
        } else if (n < 0) {
            rc = vc_fail("snapshot: %s: listing snapshots failed: %s", argv[optind],
                         strerror(-n));
        }
        free(s);
    }
    vd_close(img, NULL);
    return rc;
}
