/* check.c - `vdconvert check` and `vdconvert compare`, with qemu-img's exit
 * codes and messages.
 *
 * check:   0 clean, 1 the check could not run, 2 corruptions, 3 leaks only,
 *          63 the format has no check.
 * compare: 0 identical, 1 different (first differing offset printed),
 *          2 error.
 */
#include "vdconvert.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_EXIT_CORRUPT 2
#define CHECK_EXIT_LEAKS 3
#define CHECK_EXIT_NOTSUP 63
#define COMPARE_EXIT_DIFF 1
#define COMPARE_EXIT_ERR 2
#define COMPARE_CHUNK (1u << 20)

static void check_print_human(const vd_check_result *r)
{
    if (r->corruptions_fixed || r->leaks_fixed)
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %" PRIu64 " leaked clusters\n    %" PRIu64 " corruptions\n\n"
               "Double checking the fixed image now...\n", r->leaks_fixed,
               r->corruptions_fixed);
    if (r->first_problem[0] && (r->corruptions || r->leaks))
        printf("%s\n", r->first_problem);
    if (r->corruptions)
        printf("\n%" PRIu64 " errors were found on the image.\n"
               "Data may be corrupted, or further writes to the image may corrupt it.\n",
               r->corruptions);
    if (r->leaks)
        printf("\n%" PRIu64 " leaked clusters were found on the image.\n"
               "This means waste of disk space, but no harm to data.\n", r->leaks);
    if (!r->corruptions && !r->leaks)
        printf("No errors were found on the image.\n");
    /* qemu-img prints this line only when something is allocated */
    if (r->total_clusters && r->allocated_clusters)
        printf("%" PRIu64 "/%" PRIu64 " = %.2f%% allocated, %.2f%% fragmented, %.2f%% "
               "compressed clusters\n", r->allocated_clusters, r->total_clusters,
               100.0 * (double)r->allocated_clusters / (double)r->total_clusters,
               100.0 * (double)r->fragmented_clusters / (double)r->allocated_clusters,
               100.0 * (double)r->compressed_clusters / (double)r->allocated_clusters);
    if (r->image_end_offset)
        printf("Image end offset: %" PRIu64 "\n", r->image_end_offset);
}

static void check_print_json(const char *file, const char *fmt, const vd_check_result *r)
{
    vt_json_member(stdout, "{\n    ", "filename", file);
    vt_json_member(stdout, ",\n    ", "format", fmt);
    printf(",\n    \"check-errors\": 0,\n    \"corruptions\": %" PRIu64
           ",\n    \"leaks\": %" PRIu64 ",\n    \"corruptions-fixed\": %" PRIu64
           ",\n    \"leaks-fixed\": %" PRIu64, r->corruptions, r->leaks,
           r->corruptions_fixed, r->leaks_fixed);
    if (r->total_clusters)
        printf(",\n    \"allocated-clusters\": %" PRIu64 ",\n    \"total-clusters\": %" PRIu64
               ",\n    \"compressed-clusters\": %" PRIu64 ",\n    \"fragmented-clusters\": %"
               PRIu64, r->allocated_clusters, r->total_clusters, r->compressed_clusters,
               r->fragmented_clusters);
    if (r->image_end_offset)
        printf(",\n    \"image-end-offset\": %" PRIu64, r->image_end_offset);
    if (r->first_problem[0])
        vt_json_member(stdout, ",\n    ", "first-problem", r->first_problem);
    printf("\n}\n");
}

/* After a repair, report what is left as qemu-img does: check again and
 * keep only the repair counts of the first pass. */
static void check_recheck(vd_image *img, vd_check_result *res)
{
    vd_check_result again;
    vd_error e2 = { 0 };
    if (vd_check(img, 0, &again, &e2) < 0) {
        /* The second pass failed: assume the repaired ones are gone. */
        res->leaks -= res->leaks_fixed < res->leaks ? res->leaks_fixed : res->leaks;
        res->corruptions -= res->corruptions_fixed < res->corruptions
                            ? res->corruptions_fixed : res->corruptions;
        return;
    }
    again.leaks_fixed = res->leaks_fixed;
    again.corruptions_fixed = res->corruptions_fixed;
    *res = again;
}

static const char check_usage[] =
    "usage: vdconvert check [-f FMT] [-r leaks|all] [--json] [-q] [-U] [--allow-host-paths] IMG\n"
    "  -r leaks  repair leaked clusters;  -r all  repair everything repairable\n"
    "  -U, --force-share  check IMG even while another process writes it\n"
    "exit: 0 clean, 1 check failed to run (or a usage error), 2 corruptions, 3 leaks,\n"
    "      63 no check for the format\n";

int vc_cmd_check(int argc, char **argv)
{
    bool json = false, quiet = false, allow = false;
    const char *fmt = NULL;
    unsigned flags = 0;
    static const struct option lo[] = {
        { "repair", 1, 0, 'r' }, VC_OUTPUT_LONG_OPTIONS, VC_COMMON_LONG_OPTIONS,
        { 0, 0, 0, 0 } };
    int c, done;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:r:qhU", lo, NULL)) != -1) {
        switch (c) {
        case 'r':
            if (!strcmp(optarg, "leaks"))
                flags = VD_CHECK_REPAIR_LEAKS;
            else if (!strcmp(optarg, "all"))
                flags = VD_CHECK_REPAIR_ALL;
            else
                return vc_fail("check: -r %s: expected leaks or all", optarg);
            break;
        case 'q': quiet = true; break;
        default:
            done = vc_common_option(c, "check", check_usage, argv, &fmt, &allow, &json);
            if (done >= 0)
                return done == VC_EXIT_USAGE ? VC_EXIT_ERR : done;
        }
    }
    if (argc - optind != 1) {
        vc_usage("check", "expected one image");
        return VC_EXIT_ERR;     /* 2 means corruptions here, as in qemu-img */
    }
    vd_error e = { 0 };
    vd_image *img;
    if (vc_open(argv[optind], fmt, flags == 0, allow, &img, &e) < 0)
        return vc_fail_err(&e);
    vd_check_result res;
    int r = vd_check(img, flags, &res, &e);
    int rc = 0;
    if (r == -ENOTSUP) {
        if (!quiet)
            fprintf(stderr, "vdconvert: %s: format %s does not support checks\n",
                    argv[optind], vd_format_name(img));
        rc = CHECK_EXIT_NOTSUP;
    } else if (r < 0) {
        rc = vc_fail_err(&e);
    } else {
        if (res.corruptions_fixed || res.leaks_fixed)
            check_recheck(img, &res);
        if (json)
            check_print_json(argv[optind], vd_format_name(img), &res);
        else if (!quiet)
            check_print_human(&res);
        rc = res.corruptions ? CHECK_EXIT_CORRUPT : res.leaks ? CHECK_EXIT_LEAKS : 0;
    }
    r = vd_close(img, &e);
    if (r < 0 && rc == 0)
        rc = vc_fail_err(&e);
    return rc;
}

/* ---- compare ------------------------------------------------------------ */

struct compare_ctx {
    vd_image *a, *b;
    char *ba, *bb;
    bool strict, quiet;
    bool status_mismatch;       /* -s found different block status (said) */
    vt_progress *prog;
};

/* First offset in [0, n) where the buffers differ, rounded down to the
 * 512-byte sector as qemu-img reports it; n when equal. */
static size_t compare_first_diff(const char *x, const char *y, size_t n)
{
    for (size_t s = 0; s < n; s += 512) {
        size_t m = n - s < 512 ? n - s : 512;
        if (memcmp(x + s, y + s, m))
            return s;
    }
    return n;
}

/* Block status is asked a window at a time and each answer is used to its
 * end: a sparse guest of 128 GiB takes 2048 calls a side, not one per MiB
 * (131072, each with its allocations: 1.9 s of CPU under ASan against 0.08
 * s plain), and a fragmented one is still walked once.  The window bounds
 * the list: 64 MiB of 512-byte extents is 5 MiB of entries. */
#define COMPARE_STATUS_WINDOW (64u << 20)

/* One image's extents, fetched a window at a time. */
struct status_cursor {
    vd_image *img;
    vd_extents ext;
    size_t i;               /* the extent in use */
};

/* The extent that holds `off` (fetching [off, min(end, off + window)) when
 * the last answer is used up); its end is past `off`. */
static int cursor_at(struct status_cursor *k, uint64_t off, uint64_t end,
                     const vd_extent **x, vd_error *e)
{
    while (k->i < k->ext.n && k->ext.v[k->i].off + k->ext.v[k->i].len <= off)
        k->i++;
    if (k->i == k->ext.n) {
        vd_extents_clear(&k->ext);
        k->i = 0;
        uint64_t want = end - off < COMPARE_STATUS_WINDOW ? end - off : COMPARE_STATUS_WINDOW;
        int r = vd_block_status(k->img, off, want, &k->ext, e);
        if (r < 0)
            return r;
        if (!k->ext.n || k->ext.v[0].off > off || k->ext.v[0].off + k->ext.v[0].len <= off)
            return vd_set_error(e, -EIO, "compare: block status made no progress at %" PRIu64,
                                off);
    }
    *x = &k->ext.v[k->i];
    return 0;
}

/* Compare [off, off+len) of both images; *diff receives the first
 * mismatch or UINT64_MAX.  Ranges both report as zero are not read. */
static int compare_range(struct compare_ctx *c, uint64_t off, uint64_t len, uint64_t *diff,
                         vd_error *e)
{
    struct status_cursor ka = { .img = c->a }, kb = { .img = c->b };
    vd_extents_init(&ka.ext);
    vd_extents_init(&kb.ext);
    int r = 0;
    *diff = UINT64_MAX;
    uint64_t end = off + len;
    while (off < end && *diff == UINT64_MAX) {
        const vd_extent *xa, *xb;
        if ((r = cursor_at(&ka, off, end, &xa, e)) < 0 ||
            (r = cursor_at(&kb, off, end, &xb, e)) < 0)
            break;
        uint64_t n = xa->off + xa->len - off;
        if (xb->off + xb->len - off < n)
            n = xb->off + xb->len - off;
        if (end - off < n)
            n = end - off;
        bool za = xa->flags & VD_EXT_ZERO, zb = xb->flags & VD_EXT_ZERO;
        /* qemu-img -s compares the whole block status (data, zero,
         * allocated), not only the content */
        const uint32_t st = VD_EXT_DATA | VD_EXT_ZERO | VD_EXT_HOLE;
        if (c->strict && (xa->flags & st) != (xb->flags & st)) {
            if (!c->quiet)
                printf("Strict mode: Offset %" PRIu64 " block status mismatch!\n", off);
            c->status_mismatch = true;
            *diff = off;
            break;
        }
        if (!(za && zb)) {
            if (n > COMPARE_CHUNK)
                n = COMPARE_CHUNK;      /* the buffers' size */
            if ((r = za ? (memset(c->ba, 0, n), 0) : vd_pread(c->a, c->ba, n, off, e)) < 0 ||
                (r = zb ? (memset(c->bb, 0, n), 0) : vd_pread(c->b, c->bb, n, off, e)) < 0)
                break;
            size_t d = compare_first_diff(c->ba, c->bb, n);
            if (d < n)
                *diff = off + d;
        }
        vt_progress_add(c->prog, n);
        off += n;
    }
    vd_extents_free(&ka.ext);
    vd_extents_free(&kb.ext);
    return r;
}

/* The part of the larger image past the smaller one must read as zeroes. */
static int compare_tail(struct compare_ctx *c, vd_image *big, uint64_t from, uint64_t *diff,
                        vd_error *e)
{
    uint64_t size = vd_size(big);
    *diff = UINT64_MAX;
    struct status_cursor k = { .img = big };
    vd_extents_init(&k.ext);
    int r = 0;
    for (uint64_t off = from; off < size && *diff == UINT64_MAX;) {
        const vd_extent *x;
        if ((r = cursor_at(&k, off, size, &x, e)) < 0)
            break;
        uint64_t n = x->off + x->len - off;
        if (size - off < n)
            n = size - off;
        if (!(x->flags & VD_EXT_ZERO)) {
            if (n > COMPARE_CHUNK)
                n = COMPARE_CHUNK;
            if ((r = vd_pread(big, c->ba, n, off, e)) < 0)
                break;
            memset(c->bb, 0, n);
            size_t d = compare_first_diff(c->ba, c->bb, n);
            if (d < n)
                *diff = off + d;
        }
        off += n;
    }
    vd_extents_free(&k.ext);
    return r;
}

static int compare_run(struct compare_ctx *c, vd_error *e)
{
    uint64_t sa = vd_size(c->a), sb = vd_size(c->b), common = sa < sb ? sa : sb, diff;
    if (sa != sb) {
        if (c->strict) {
            if (!c->quiet)
                printf("Strict mode: Image size mismatch!\n");
            return COMPARE_EXIT_DIFF;
        }
        if (!c->quiet)
            printf("Warning: Image size mismatch!\n");
    }
    int r = compare_range(c, 0, common, &diff, e);
    if (r == 0 && diff == UINT64_MAX && sa != sb)
        r = compare_tail(c, sa > sb ? c->a : c->b, common, &diff, e);
    if (r < 0)
        return -1;
    if (diff != UINT64_MAX) {
        if (!c->quiet && !c->status_mismatch)
            printf("Content mismatch at offset %" PRIu64 "!\n", diff);
        return COMPARE_EXIT_DIFF;
    }
    if (!c->quiet)
        printf("Images are identical.\n");
    return 0;
}

static const char compare_usage[] =
    "usage: vdconvert compare [-f FMT] [-F FMT] [-s] [-p] [-q] [-U] [--allow-host-paths] A B\n"
    "  -s  strict: sizes and allocation must match too\n"
    "  -U, --force-share  read A and B even while another process writes them\n"
    "exit: 0 identical, 1 different, 2 error\n";

int vc_cmd_compare(int argc, char **argv)
{
    const char *fa = NULL, *fb = NULL;
    bool allow = false, progress = false;
    struct compare_ctx c = { 0 };
    static const struct option lo[] = {
        VC_COMMON_LONG_OPTIONS, { 0, 0, 0, 0 } };
    int ch, done;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":f:F:spqhU", lo, NULL)) != -1) {
        switch (ch) {
        case 'F': fb = optarg; break;
        case 's': c.strict = true; break;
        case 'p': progress = true; break;
        case 'q': c.quiet = true; break;
        default:
            done = vc_common_option(ch, "compare", compare_usage, argv, &fa, &allow, NULL);
            if (done >= 0)
                return done == VC_EXIT_USAGE ? COMPARE_EXIT_ERR : done;
        }
    }
    if (argc - optind != 2) {
        vc_usage("compare", "expected two images");
        return COMPARE_EXIT_ERR;
    }
    vd_error e = { 0 };
    int rc = COMPARE_EXIT_ERR;
    if (vc_open(argv[optind], fa, true, allow, &c.a, &e) < 0) {
        vc_fail_err(&e);
        return rc;
    }
    if (vc_open(argv[optind + 1], fb, true, allow, &c.b, &e) < 0) {
        vc_fail_err(&e);
        vd_close(c.a, NULL);
        return rc;
    }
    c.ba = malloc(COMPARE_CHUNK);
    c.bb = malloc(COMPARE_CHUNK);
    char label[512];
    snprintf(label, sizeof label, "%s <-> %s", argv[optind], argv[optind + 1]);
    c.prog = vt_progress_new(label, vd_size(c.a) < vd_size(c.b) ? vd_size(c.a) : vd_size(c.b),
                             progress && !c.quiet);
    if (!c.ba || !c.bb)
        vc_fail("compare: out of memory");
    else if ((rc = compare_run(&c, &e)) < 0) {
        vc_fail_err(&e);
        rc = COMPARE_EXIT_ERR;
    }
    vt_progress_end(c.prog, rc == 0);
    free(c.ba);
    free(c.bb);
    vd_close(c.a, NULL);
    vd_close(c.b, NULL);
    return rc;
}
