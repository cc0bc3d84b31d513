/* convert.c - `vdconvert [convert] IN OUT`: target set-up around the engine.
 *
 * The output is made where tmpout.c says (a hidden name beside OUT, or
 * final names in a hidden folder beside it) and put in place only when
 * everything was written and flushed, so a failed or interrupted
 * conversion leaves nothing behind (and never a half-written OUT).  The
 * input is always opened read-only.
 */
#include "vdconvert.h"
#include "tool.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONVERT_MAX_SPARSE (4u << 20)

/* Open (or create) the target; sets *out and whether it reads as zeroes. */
static int convert_open_target(const struct vc_convert_opts *o, const char *fmt,
                               uint64_t size, vd_image **out, bool *reads_zero, vd_error *e)
{
    if (o->existing) {
        int r = vd_open(o->dst, &(vd_open_opts){ .format = o->dst_fmt, .cache = o->cache,
                        .allow_host_paths = o->allow_host_paths }, out, e);
        if (r < 0)
            return r;
        uint64_t have = vd_size(*out);
        if (have < size) {
            vd_close(*out, NULL);
            *out = NULL;
            return vd_set_error(e, -EINVAL, "%s: target is smaller (%llu bytes) than the "
                                "source (%llu bytes)", o->dst, (unsigned long long)have,
                                (unsigned long long)size);
        }
        *reads_zero = o->target_is_zero;
        return 0;
    }
    const char *tmp = vc_tmp_begin(o->dst, fmt, e);
    if (!tmp)
        return e ? e->code : -EINVAL;
    /* The backing name is relative to OUT, wherever the file is made.  The
     * new file is not synced on its own: under its temporary name it is
     * opened, written and closed, and the close syncs it (unless -t unsafe)
     * before it is renamed to OUT.  (On a loaded ext4 that sync of the
     * empty image waited 125 ms for a journal commit.) */
    vd_create_opts co = { .format = fmt, .size = size, .options = o->options,
                          .backing_file = o->backing, .backing_format = o->backing_fmt,
                          .allow_host_paths = o->allow_host_paths, .final_path = o->dst,
                          .no_sync = true };
    int r = vd_create(tmp, &co, e);
    if (r == 0)
        r = vd_open(tmp, &(vd_open_opts){ .format = fmt, .cache = o->cache,
                    .allow_host_paths = o->allow_host_paths, .final_path = o->dst }, out, e);
    if (r < 0)
        return r;
    *reads_zero = true;
    return 0;
}

static int convert_check_opts(const struct vc_convert_opts *o, const char *fmt, vd_error *e)
{
    if (o->compress && o->existing)
        return vd_set_error(e, -EINVAL, "-c cannot be used with -n (the target exists)");
    if (o->existing && o->backing)
        return vd_set_error(e, -EINVAL, "-B cannot be used with -n (the target exists)");
    if (o->backing && !o->backing_fmt && vc_backing_needs_format(fmt))
        return vd_set_error(e, -EINVAL, "Use of backing file requires explicit backing format "
                            "(give it with -F FMT)");
    if (o->target_is_zero && !o->existing)
        return vd_set_error(e, -EINVAL, "--target-is-zero needs -n");
    if (!o->existing && !vd_format_can_create(fmt))
        return vd_set_error(e, -ENOTSUP, "format %s: creating images is not supported", fmt);
    return 0;
}

/* --keep-uuid: the output carries the input's image UUID (a VirtualBox
 * migration that must keep the disk's identity). */
static int convert_keep_uuid(vd_image *in, const char *fmt, const char *options, char *out,
                             size_t n, vd_error *e)
{
    char uuid[128];
    int r = vd_create_options_like(in, fmt, VD_LIKE_UUID, uuid, sizeof uuid, e);
    if (r < 0) {
        vd_error inner = *e;
        return vd_set_error(e, r, "--keep-uuid: %s", inner.msg);
    }
    if (options && strstr(options, "uuid="))
        return vd_set_error(e, -EINVAL, "--keep-uuid and -o uuid= contradict each other");
    snprintf(out, n, "%s%s%s", options ? options : "", options ? "," : "", uuid);
    return 0;
}

/* -t none|directsync write the target O_DIRECT (the image is opened with
 * VD_CACHE_DIRECT; vd_copy writes a raw target's data through its own
 * O_DIRECT descriptor); where its file system refuses O_DIRECT (ramfs,
 * FUSE without it) the copy writes through the page cache, and the user is
 * told, as for -T. */
static void convert_say_direct_refused(const struct vc_convert_opts *o, vd_image *out)
{
    if (!o->direct || o->quiet)
        return;
    if (!vd_reads_direct(out))
        fprintf(stderr, "vdconvert: %s: its file system does not allow O_DIRECT (-t %s); "
                "writing it through the page cache\n", o->dst, o->dst_cache);
}

int vc_convert(const struct vc_convert_opts *opts, vd_error *e)
{
    struct vc_convert_opts copy = *opts, *o = &copy;
    /* An NBD export ("nbd://host/name") exists already and cannot be made
     * under a temporary name: write into it as with -n. */
    if (strstr(o->dst, "://"))
        o->existing = true;
    const char *fmt = o->dst_fmt ? o->dst_fmt : "raw";
    if (vd_format_lookup(fmt))
        fmt = vd_format_lookup(fmt)->name;
    /* A block device (a USB stick, an LV) is written into, as qemu-img
     * does: renaming a new file over it would replace the device node. */
    struct stat st;
    if (!o->existing && stat(o->dst, &st) == 0 && S_ISBLK(st.st_mode)) {
        if (strcmp(fmt, "raw"))
            return vd_set_error(e, -EINVAL, "%s: a block device takes -O raw, or -n to write "
                                "into the %s image it already holds", o->dst, fmt);
        o->existing = true;
    }
    int r = convert_check_opts(o, fmt, e);
    if (r < 0)
        return r;
    vd_image *in, *out = NULL;
    r = vd_open(o->src, &(vd_open_opts){ .format = o->src_fmt, .readonly = true,
                .snapshot = o->snapshot, .allow_host_paths = o->allow_host_paths,
                .force_share = vc_force_share,
                .cache = o->src_direct ? VD_CACHE_DIRECT : 0 }, &in, e);
    if (r < 0)
        return r;
    if (o->src_direct && !vd_reads_direct(in) && !o->quiet)
        fprintf(stderr, "vdconvert: %s: its file system does not allow O_DIRECT (-T %s); "
                "reading it through the page cache\n", o->src, o->src_cache);
    if (!o->quiet)
        vt_warn_probed_raw(in, o->src);
    char keep_opts[1024];
    if (o->keep_uuid && (r = convert_keep_uuid(in, fmt, o->options, keep_opts,
                                                sizeof keep_opts, e)) < 0) {
        vd_close(in, NULL);
        return r;
    }
    if (o->keep_uuid)
        o->options = keep_opts;
    /* Checked before anything is created: the output replaces (or, with -n,
     * is written into) OUT, which must not be a file the input reads. */
    if (vd_image_uses_file(in, o->dst)) {
        r = vd_set_error(e, -EINVAL, "%s: this is the input %s or one of its files (image, "
                         "extent or backing file); refusing to overwrite an input", o->dst, o->src);
        vd_close(in, NULL);
        return r;
    }
    bool reads_zero = false;
    uint64_t size = vd_size(in);
    r = convert_open_target(o, fmt, size, &out, &reads_zero, e);
    if (r == 0 && o->compression_level)
        r = vd_set_compression_level(out, o->compression_level, e);
    if (r == 0)
        convert_say_direct_refused(o, out);
    if (r == 0) {
        char label[512];           /* the files as the user named them */
        snprintf(label, sizeof label, "%s -> %s", o->src, o->dst);
        vt_progress *prog = vt_progress_new(label, size, o->progress && !o->quiet);
        vd_copy_opts c = {
            .size = size, .threads = o->workers, .sparse_size = o->sparse_size,
            .target_is_zeroed = reads_zero, .compress = o->compress, .direct = o->direct,
            .compare = o->backing ? vd_backing(out) : NULL,
            .allocate = o->sparse_size == 0 && !o->compress,
            /* -l: snapshot data is read through the driver, as before */
            .no_copy_range = o->no_copy_range || o->snapshot,
            .progress = vt_progress_cb, .progress_ctx = prog,
        };
        r = vd_copy(in, out, &c, e);
        vt_progress_end(prog, r == 0);
    }
    if (out) {
        int r2 = vd_close(out, r < 0 ? NULL : e);
        if (r == 0)
            r = r2;
    }
    vd_close(in, NULL);
    if (r == 0 && !o->existing)
        r = vc_tmp_commit(o->dst, e);
    if (r < 0) {
        vc_tmp_user_names(e, o->dst);
        vc_tmp_abort();
    }
    return r;
}

/* ---- command line ------------------------------------------------------ */

static const char convert_usage[] =
    "usage: vdconvert [convert] [-f FMT] [-O FMT] [-o OPTS] [-c] [-B BACKING [-F FMT]]\n"
    "                 [-l SNAPSHOT] [-S SIZE] [-m N] [-n [--target-is-zero]] [-t CACHE] [-T CACHE]\n"
    "                 [-p] [-q] [--allow-host-paths] [--keep-uuid] IN OUT\n"
    "  -f FMT      input format (default: probed from the content)\n"
    "  -O FMT      output format (default: from OUT's extension when it is a\n"
    "              known one; raw for devices and nbd:// URIs)\n"
    "  -o OPTS     output format options key=val,...; '-o help' lists them;\n"
    "              compression_level=N (1-9) for -c and streamOptimized VMDK:\n"
    "              1-3 ISA-L igzip (fastest; 3 the default), 4-9 zlib (9 smallest)\n"
    "  -c          compress the output (formats with compressed clusters)\n"
    "  -B BACKING  make OUT an overlay on BACKING; only differences are written\n"
    "  -F FMT      format of BACKING\n"
    "  -l SNAP     convert internal snapshot SNAP (id or name) of IN\n"
    "  -S SIZE     zero runs of at least SIZE bytes are left unallocated\n"
    "              (default 4k; 0: no zero detection, OUT fully allocated)\n"
    "  -m N        worker threads (default: number of CPUs)\n"
    "  -n          OUT exists: write into it (no creation)\n"
    "  --target-is-zero  with -n: OUT reads as zeroes, skip writing zeroes\n"
    "  -t CACHE    target cache mode, qemu's names: writeback (default: synced\n"
    "              before it is renamed into place, written back as it goes),\n"
    "              unsafe (no sync), none (O_DIRECT), writethrough\n"
    "              and directsync (every write synced)\n"
    "  -T CACHE    source cache mode: none and directsync read IN with O_DIRECT\n"
    "              (bypassing the page cache; the page cache where the file\n"
    "              system refuses, with a message); the others read through it\n"
    "  -p          show progress (bar on a terminal, a line per 10 % otherwise)\n"
    "  -q          quiet\n"
    "  -U, --force-share  read IN even while another process writes it\n"
    "  --allow-host-paths  follow backing/extent references leaving IN's folder\n"
    "  --keep-uuid  OUT keeps IN's image UUID (VDI to VDI migrations)\n"
    "  --no-copy-range  read and write every byte (no copy_file_range/reflink)\n";

static int convert_parse_sparse(const char *s, uint64_t *out)
{
    if (!vc_parse_size(s, out) || *out % 512 || *out > CONVERT_MAX_SPARSE)
        return vc_fail("-S %s: expected a multiple of 512 up to 4M (0 = off)", s);
    return 0;
}

static int convert_options_help(const char *fmt, const char *dst)
{
    if (!fmt && dst)
        fmt = vd_format_from_extension(dst);
    if (!fmt)
        fmt = "raw";
    if (vc_check_format(fmt))
        return VC_EXIT_ERR;
    const char *h = vd_format_create_help(fmt);
    printf("Supported options for %s:\n%s", fmt, h);
    return 0;
}

/* -o compression_level=N is not an image option (it is not stored): take
 * it out of `opts` (rewritten in place) into *level. */
static int convert_take_level(char *opts, int *level)
{
    char *w = opts;
    for (char *p = opts; p && *p;) {
        char *end = p;           /* the next ',' that is not ",," (a comma) */
        while (*end && (*end != ',' || end[1] == ','))
            end += *end == ',' ? 2 : 1;
        char *next = *end ? end + 1 : NULL;
        size_t n = (size_t)(end - p);
        if (!strncmp(p, "compression_level=", 18)) {
            char *e;
            long v = strtol(p + 18, &e, 10);
            if (e != p + n || v < 1 || v > 9)
                return vc_fail("-o compression_level=%.*s: expected 1 to 9 (1-3 fastest, "
                               "ISA-L; 9 smallest)", (int)(n - 18), p + 18);
            *level = (int)v;
        } else {
            if (w != opts)
                *w++ = ',';
            memmove(w, p, n);
            w += n;
        }
        p = next;
    }
    if (opts)
        *w = 0;
    return 0;
}

/* qemu's cache modes.  The default, writeback, is durable: the target is
 * synced before it gets its name, and its data is written back while the
 * copy goes on (VD_CACHE_EARLY_WRITEBACK) so that the sync has little left.
 * unsafe syncs nothing (qemu-img convert's default); none and directsync
 * bypass the page cache (O_DIRECT) for every target format; writethrough
 * and directsync sync every write. */
static int convert_cache_mode(const char *m, unsigned *cache, bool *direct)
{
    static const struct { const char *name; unsigned cache; bool direct; } modes[] = {
        { "writeback", VD_CACHE_EARLY_WRITEBACK, false },
        { "none", VD_CACHE_EARLY_WRITEBACK | VD_CACHE_DIRECT, true },
        { "unsafe", VD_CACHE_NO_SYNC, false },
        { "directsync", VD_CACHE_SYNC_WRITES | VD_CACHE_DIRECT, true },
        { "writethrough", VD_CACHE_SYNC_WRITES, false },
    };
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (!strcmp(m, modes[i].name)) {
            *cache = modes[i].cache;
            *direct = modes[i].direct;
            return 0;
        }
    return -1;
}

int vc_cmd_convert(int argc, char **argv)
{
    struct vc_convert_opts o = { .sparse_size = 4096, .cache = VD_CACHE_EARLY_WRITEBACK,
                                 .workers = vt_cpus() };
    static const struct option lo[] = {
        { "target-is-zero", 0, 0, 'Z' }, { "no-copy-range", 0, 0, 'R' },
        { "keep-uuid", 0, 0, 'K' }, VC_COMMON_LONG_OPTIONS, { 0, 0, 0, 0 } };
    int c, done;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:O:o:cB:F:l:S:m:nt:T:pqhWU", lo, NULL)) != -1) {
        switch (c) {
        case 'O': o.dst_fmt = optarg; break;
        case 'o': o.options = optarg; break;
        case 'c': o.compress = true; break;
        case 'B': o.backing = optarg; break;
        case 'F': o.backing_fmt = optarg; break;
        case 'l':
            o.snapshot = optarg;
            if (!strncmp(optarg, "snapshot.name=", 14) || !strncmp(optarg, "snapshot.id=", 12))
                o.snapshot = strchr(optarg, '=') + 1;
            break;
        case 'S':
            if (convert_parse_sparse(optarg, &o.sparse_size))
                return VC_EXIT_ERR;
            break;
        case 'm': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 64)
                return vc_fail("-m %s: expected a number of workers from 1 to 64", optarg);
            o.workers = (int)v;
            break;
        }
        case 'n': o.existing = true; break;
        case 't':
            if (convert_cache_mode(optarg, &o.cache, &o.direct) < 0)
                return vc_fail("-t %s: expected none, writeback, unsafe, directsync or "
                               "writethrough", optarg);
            o.dst_cache = optarg;
            break;
        case 'T':
            /* for a source only the page cache matters: O_DIRECT or not */
            if (convert_cache_mode(optarg, &(unsigned){ 0 }, &o.src_direct) < 0)
                return vc_fail("-T %s: expected none, writeback, unsafe, directsync or "
                               "writethrough", optarg);
            o.src_cache = optarg;
            break;
        case 'p': o.progress = true; break;
        case 'q': o.quiet = true; break;
        case 'W': break;                      /* qemu-img's out-of-order flag */
        case 'Z': o.target_is_zero = true; break;
        case 'R': o.no_copy_range = true; break;
        case 'K': o.keep_uuid = true; break;
        default:
            done = vc_common_option(c, "convert", convert_usage, argv,
                                    &o.src_fmt, &o.allow_host_paths, NULL);
            if (done >= 0)
                return done;
        }
    }
    if (o.options && (!strcmp(o.options, "help") || !strcmp(o.options, "?")))
        return convert_options_help(o.dst_fmt, optind + 1 < argc ? argv[optind + 1] : NULL);
    if (argc - optind != 2)
        return vc_usage("convert", "expected IN and OUT");
    o.src = argv[optind];
    o.dst = argv[optind + 1];
    if (vc_check_format(o.src_fmt) || vc_check_format(o.dst_fmt) || vc_check_format(o.backing_fmt))
        return VC_EXIT_ERR;
    /* -n writes into OUT as it is: its format is probed when not given */
    if (!o.existing && vc_output_format(o.dst_fmt, o.dst, &o.dst_fmt))
        return VC_EXIT_ERR;
    char *opts = o.options ? strdup(o.options) : NULL;
    if (o.options && !opts)
        return vc_fail("out of memory");
    if (convert_take_level(opts, &o.compression_level)) {
        free(opts);
        return VC_EXIT_ERR;
    }
    o.options = opts && *opts ? opts : NULL;
    vd_error e = { 0 };
    int r = vc_convert(&o, &e);
    free(opts);
    if (r < 0)
        return vc_fail_err(&e);
    return 0;
}
