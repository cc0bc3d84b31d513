/* create.c - `vdconvert create`, `resize` and `measure`.
 *
 * resize changes a raw image's file length in place; other formats are
 * rewritten at the new size (same format, backing file and cluster size)
 * through the copy engine and renamed over the original (chain.c), since
 * the drivers have no resize callback.
 */
#include "vdconvert.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char create_usage[] =
    "usage: vdconvert create [-f|-O FMT] [-o OPTS] [-b BACKING [-F FMT]] [-q]\n"
    "                        [--allow-host-paths] IMG [SIZE]\n"
    "  SIZE takes K, M, G, T suffixes; it defaults to the backing file's size.\n"
    "  -F names the backing file's format; qcow2, qed, qcow and vmdk images need it\n"
    "  with -b (as qemu-img 7.2: a guessed backing format is unsafe).\n"
    "  '-o help' lists the format's options.\n";

int vc_cmd_create(int argc, char **argv)
{
    const char *fmt = NULL, *opts = NULL, *backing = NULL, *bfmt = NULL;
    bool allow = false, quiet = false;
    static const struct option lo[] = {
        { "help", 0, 0, 'h' }, { "allow-host-paths", 0, 0, 'H' }, { 0, 0, 0, 0 } };
    int c, done;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:O:o:b:F:quh", lo, NULL)) != -1) {
        switch (c) {
        case 'O': fmt = optarg; break;
        case 'o': opts = optarg; break;
        case 'b': backing = optarg; break;
        case 'F': bfmt = optarg; break;
        case 'q': quiet = true; break;
        case 'u': break;        /* qemu-img's "unsafe": the backing is opened anyway */
        default:
            done = vc_common_option(c, "create", create_usage, argv, &fmt, &allow, NULL);
            if (done >= 0)
                return done;
        }
    }
    if (opts && (!strcmp(opts, "help") || !strcmp(opts, "?"))) {
        if (!fmt && optind < argc)
            fmt = vd_format_from_extension(argv[optind]);
        if (vc_check_format(fmt))
            return VC_EXIT_ERR;
        fmt = fmt ? fmt : "raw";
        printf("Supported options for %s:\n%s", fmt, vd_format_create_help(fmt));
        return 0;
    }
    if (vc_check_format(bfmt) || (optind < argc && vc_output_format(fmt, argv[optind], &fmt)))
        return VC_EXIT_ERR;
    if (argc - optind < 1 || argc - optind > 2)
        return vc_usage("create", "expected IMG [SIZE]");
    uint64_t size = 0;
    if (argc - optind == 2 && !vc_parse_size(argv[optind + 1], &size))
        return vc_fail("create: size '%s': expected a number with an optional K/M/G/T "
                       "suffix", argv[optind + 1]);
    if (!size && !backing)
        return vc_fail("create: a size is needed when there is no backing file");
    if (backing && *backing && !bfmt && vc_backing_needs_format(fmt))
        return vc_fail("%s: Backing file specified without backing format (give it with "
                       "-F FMT)", argv[optind]);
    vd_error e = { 0 };
    vd_create_opts co = { .format = fmt, .size = size, .options = opts,
                          .backing_file = backing, .backing_format = bfmt,
                          .allow_host_paths = allow };
    if (vd_create(argv[optind], &co, &e) < 0)
        return vc_fail_err(&e);
    /* A streamOptimized VMDK is complete only once its grain directory and
     * footer are written (on close); an empty one must still be readable by
     * qemu-img and VMware, so open and close it once. */
    if (!strcmp(fmt, "vmdk") && opts && strstr(opts, "streamOptimized")) {
        vd_image *img;
        if (vd_open(argv[optind], &(vd_open_opts){ .format = fmt }, &img, &e) < 0 ||
            vd_close(img, &e) < 0) {
            unlink(argv[optind]);
            return vc_fail_err(&e);
        }
    }
    if (!size) {          /* taken from the backing file: say which it is */
        vd_image *img;
        if (vd_open(argv[optind], &(vd_open_opts){ .format = fmt, .readonly = true,
                    .no_backing = true }, &img, &e) == 0) {
            size = vd_size(img);
            vd_close(img, NULL);
        }
    }
    if (!quiet)
        printf("Formatting '%s', fmt=%s size=%" PRIu64 "%s%s%s%s\n", argv[optind], fmt, size,
               backing ? " backing_file=" : "", backing ? backing : "",
               bfmt ? " backing_fmt=" : "", bfmt ? bfmt : "");
    return 0;
}

/* ---- resize --------------------------------------------------------------- */

static const char resize_usage[] =
    "usage: vdconvert resize [-f FMT] [--shrink] [-q] [--allow-host-paths] IMG [+|-]SIZE\n"
    "  Shrinking needs --shrink (data past the new end is lost).\n"
    "  The image changes in place (its metadata; the same file).\n";

int vc_cmd_resize(int argc, char **argv)
{
    const char *fmt = NULL;
    bool shrink = false, quiet = false, allow = false;
    static const struct option lo[] = {
        { "shrink", 0, 0, 's' }, { "help", 0, 0, 'h' }, { "allow-host-paths", 0, 0, 'H' },
        { 0, 0, 0, 0 } };
    int c, done;
    opterr = 0;
    /* "-1G" is a size, not an option: stop option parsing at it. */
    while ((c = getopt_long(argc, argv, "+:f:qh", lo, NULL)) != -1) {
        switch (c) {
        case 's': shrink = true; break;
        case 'q': quiet = true; break;
        default:
            done = vc_common_option(c, "resize", resize_usage, argv, &fmt, &allow, NULL);
            if (done >= 0)
                return done;
        }
    }
    if (optind + 1 < argc && !strcmp(argv[optind + 1], "--shrink")) {
        shrink = true;                 /* qemu-img accepts it after IMG too */
        memmove(&argv[optind + 1], &argv[optind + 2], sizeof(char *) * 2);
        argc--;
    }
    if (optind + 2 < argc && !strcmp(argv[optind + 1], "--")) {
        /* IMG -- -SIZE: a negative size after IMG, as qemu-img takes it */
        memmove(&argv[optind + 1], &argv[optind + 2], sizeof(char *) * (size_t)(argc - optind - 2));
        argc--;
    }
    if (argc - optind != 2)
        return vc_usage("resize", "expected IMG and SIZE");
    const char *path = argv[optind], *arg = argv[optind + 1];
    int sign = *arg == '+' ? 1 : *arg == '-' ? -1 : 0;
    uint64_t v;
    if (!vc_parse_size(arg + (sign != 0), &v))
        return vc_fail("resize: size '%s': expected [+|-]N with an optional K/M/G/T suffix",
                       arg);
    vd_error e = { 0 };
    vd_image *img;
    if (vc_open(path, fmt, false, allow, &img, &e) < 0)
        return vc_fail_err(&e);
    uint64_t old = vd_size(img), size = sign > 0 ? old + v : sign < 0 ? old - v : v;
    int r = 0;
    if ((sign > 0 && size < old) || (sign < 0 && v > old) || size == 0)
        r = vd_set_error(&e, -EINVAL, "resize: %s: new size out of range", path);
    else if (size < old && !shrink)
        r = vd_set_error(&e, -EINVAL, "resize: %s: shrinking from %" PRIu64 " to %" PRIu64
                         " bytes loses data; use --shrink if that is meant", path, old, size);
    else if (size != old &&
             (r = vd_resize(img, size, shrink ? VD_RESIZE_SHRINK : 0, &e)) == -ENOSYS) {
        /* the format has no in-place resize yet: rewrite at the new size */
        char *f = strdup(vd_format_name(img));
        vd_close(img, NULL);
        img = NULL;
        r = f ? vc_rewrite(path, f, size, NULL, NULL, VC_REWRITE_KEEP_BACKING, allow, &e)
              : -ENOMEM;
        free(f);
    }
    if (img) {
        int r2 = vd_close(img, r < 0 ? NULL : &e);
        if (r == 0)
            r = r2;
    }
    if (r < 0)
        return vc_fail_err(&e);
    if (!quiet)
        printf("Image resized.\n");
    return 0;
}

/* ---- measure -------------------------------------------------------------- */

/* Bytes of qcow2 metadata for a `vsize` image with `data_clusters` allocated
 * clusters: header, L1, L2 tables for the whole disk (they are allocated as
 * data arrives, so the worst case is counted), and the refcount table and
 * blocks covering all of it (found by iterating to a fixed point, since the
 * refcount structures count themselves). */
static uint64_t measure_qcow2_meta(uint64_t vsize, uint64_t cs, uint64_t data_clusters)
{
    uint64_t entries = (vsize + cs - 1) / cs;
    uint64_t l2 = (entries + cs / 8 - 1) / (cs / 8);
    uint64_t l1 = (l2 * 8 + cs - 1) / cs;
    uint64_t fixed = 1 + l1 + l2 + data_clusters;
    uint64_t per_block = cs * 8 / 16;      /* 16-bit refcounts */
    uint64_t blocks = 0, table = 0;
    for (int i = 0; i < 64; i++) {
        uint64_t nb = (fixed + blocks + table + per_block - 1) / per_block;
        uint64_t nt = (nb * 8 + cs - 1) / cs;
        if (nb == blocks && nt == table)
            break;
        blocks = nb;
        table = nt;
    }
    return (1 + l1 + l2 + blocks + table) * cs;
}

/* Bytes of the source that hold data, counted in `cs`-sized clusters. */
static int measure_allocated(vd_image *img, uint64_t cs, uint64_t *clusters, vd_error *e)
{
    vd_extents ex;
    vd_extents_init(&ex);
    uint64_t size = vd_size(img), last = UINT64_MAX, n = 0;
    int r = 0;
    for (uint64_t off = 0; off < size && r == 0;) {
        vd_extents_clear(&ex);
        if ((r = vd_block_status(img, off, size - off, &ex, e)) < 0)
            break;
        for (size_t i = 0; i < ex.n; i++) {
            const vd_extent *x = &ex.v[i];
            if (!(x->flags & VD_EXT_DATA))
                continue;
            uint64_t a = x->off / cs, b = (x->off + x->len - 1) / cs;
            n += b - a + 1 - (a == last);
            last = b;
        }
        off = ex.v[ex.n - 1].off + ex.v[ex.n - 1].len;
    }
    vd_extents_free(&ex);
    *clusters = n;
    return r;
}

static const char measure_usage[] =
    "usage: vdconvert measure [-O FMT] [-o OPTS] [--output=json] [-f FMT] [-U]\n"
    "                         (--size SIZE | IMG)\n"
    "  -U, --force-share  read IMG even while another process writes it\n"
    "  Output formats: raw, qcow2.\n";

int vc_cmd_measure(int argc, char **argv)
{
    const char *fmt = NULL, *ofmt = "raw", *opts = NULL;
    bool json = false, allow = false;
    uint64_t size = 0;
    static const struct option lo[] = {
        { "size", 1, 0, 'z' }, { "output", 1, 0, 'j' }, VC_COMMON_LONG_OPTIONS,
        { 0, 0, 0, 0 } };
    int c, done;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:O:o:hU", lo, NULL)) != -1) {
        switch (c) {
        case 'O': ofmt = optarg; break;
        case 'o': opts = optarg; break;
        case 'z':
            if (!vc_parse_size(optarg, &size))
                return vc_fail("measure: --size %s: not a size", optarg);
            break;
        case 'j': json = !strcmp(optarg, "json"); break;
        default:
            done = vc_common_option(c, "measure", measure_usage, argv, &fmt, &allow, NULL);
            if (done >= 0)
                return done;
        }
    }
    if ((argc - optind == 1) == (size != 0))
        return vc_fail("measure: give either --size SIZE or one image");
    uint64_t cs = 65536;
    if (opts) {
        const char *p = strstr(opts, "cluster_size=");
        if (p && (!vc_parse_size(strndupa(p + 13, strcspn(p + 13, ",")), &cs) ||
                  (cs & (cs - 1)) || cs < 512 || cs > (2u << 20)))
            return vc_fail("measure: cluster_size must be a power of two from 512 to 2M");
    }
    if (strcmp(ofmt, "raw") && strcmp(ofmt, "qcow2"))
        return vc_fail("measure: output format %s: only raw and qcow2 can be measured", ofmt);
    uint64_t data = 0;
    vd_error e = { 0 };
    if (!size) {
        vd_image *img;
        if (vc_open(argv[optind], fmt, true, allow, &img, &e) < 0)
            return vc_fail_err(&e);
        size = vd_size(img);
        int r = measure_allocated(img, cs, &data, &e);
        vd_close(img, NULL);
        if (r < 0)
            return vc_fail_err(&e);
    }
    uint64_t req, full;
    if (!strcmp(ofmt, "raw")) {
        req = full = size;
    } else {
        uint64_t all = (size + cs - 1) / cs;
        req = measure_qcow2_meta(size, cs, all) + data * cs;
        full = measure_qcow2_meta(size, cs, all) + all * cs;
    }
    if (json)
        printf("{\n    \"required\": %" PRIu64 ",\n    \"fully-allocated\": %" PRIu64 "\n}\n",
               req, full);
    else
        printf("required size: %" PRIu64 "\nfully allocated size: %" PRIu64 "\n", req, full);
    return 0;
}
