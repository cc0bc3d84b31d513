/* amend.c - `vdconvert amend`: change format options of an image in place
 * (qemu-img amend), through vd_amend.  The image is opened read-write, so
 * it holds the write lock for the whole operation: a running VM's image is
 * refused, never changed under it. */
#include "vdconvert.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char amend_usage[] =
    "usage: vdconvert amend [-f FMT] [-p] [-q] [--force] -o OPTIONS IMG\n"
    "       vdconvert amend -f FMT -o help\n"
    "  Changes format options of IMG in place (its own file; qemu-img amend).\n"
    "  qcow2: compat=0.10|1.1 (v2|v3), lazy_refcounts=on|off,\n"
    "         refcount_bits=1|2|4|8|16|32|64 (other than 16 needs compat=1.1)\n"
    "  Other formats have no amend options.  -o may be given more than once.\n"
    "  -p  progress; -q quiet; --force, -t CACHE: accepted (no effect here)\n"
    "  -U is not accepted: amend writes the image.\n";

struct amend_progress {
    vt_progress *p;
};

/* vd_amend reports its own total; the display counts in ten-thousandths. */
static void amend_progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    struct amend_progress *a = ctx;
    if (total)
        vt_progress_cb(a->p, done * 10000 / total, 10000);
}

static int amend_help(const char *fmt)
{
    const char *h = vd_format_amend_help(fmt);
    if (!h)
        return vc_check_format(fmt);
    if (!*h)
        return vc_fail("Format driver '%s' does not support option amendment", fmt);
    printf("Amend options for '%s':\n", fmt);
    for (const char *l = h, *nl; *l; l = nl + 1) {
        nl = strchr(l, '\n');
        const char *tab = memchr(l, '\t', (size_t)(nl - l));
        printf("  %-22.*s - %.*s\n", (int)(tab - l), l, (int)(nl - tab - 1), tab + 1);
    }
    return 0;
}

int vc_cmd_amend(int argc, char **argv)
{
    const char *fmt = NULL;
    char *opts = NULL;
    bool progress = false, quiet = false, allow = false;
    static const struct option lo[] = {
        { "help", 0, 0, 'h' }, { "allow-host-paths", 0, 0, 'H' }, { "force", 0, 0, 'F' },
        { "force-share", 0, 0, 'U' }, { 0, 0, 0, 0 } };
    int c, rc = 0;
    opterr = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, ":f:o:pqt:hU", lo, NULL)) != -1) {
        switch (c) {
        case 'f': fmt = optarg; break;
        case 'o': {
            /* qemu-img joins repeated -o with commas */
            size_t n = (opts ? strlen(opts) + 1 : 0) + strlen(optarg) + 1;
            char *j = malloc(n);
            if (!j) {
                rc = vc_fail("out of memory");
                break;
            }
            snprintf(j, n, "%s%s%s", opts ? opts : "", opts ? "," : "", optarg);
            free(opts);
            opts = j;
            break;
        }
        case 'p': progress = true; break;
        case 'q': quiet = true; break;
        case 't': case 'F': break;
        case 'H': allow = true; break;
        case 'U': rc = vc_usage("amend", "-U/--force-share is not allowed: amend writes the image"); break;
        case 'h': fputs(amend_usage, stdout); free(opts); return 0;
        default: rc = vc_usage_error("amend", argv[optind - 1]); break;
        }
    }
    if (rc == 0 && opts && !strcmp(opts, "help") && fmt && argc == optind) {
        free(opts);
        return amend_help(fmt);
    }
    if (rc == 0 && argc - optind != 1)
        rc = vc_usage("amend", "expected one image");
    if (rc == 0 && !opts)
        rc = vc_usage("amend", "Must specify options (-o)");
    if (rc == 0 && (rc = vc_check_format(fmt)) == 0 && !strcmp(opts, "help")) {
        const char *f = fmt ? fmt : vd_probe_file(argv[optind], NULL, NULL);
        rc = f ? amend_help(f) : vc_fail("%s: cannot tell its format", argv[optind]);
        free(opts);
        return rc;
    }
    if (rc) {
        free(opts);
        return rc;
    }
    const char *path = argv[optind];
    vd_error e = { 0 };
    vd_image *img;
    if (vc_open(path, fmt, false, allow, &img, &e) < 0) {
        free(opts);
        return vc_fail_err(&e);
    }
    struct amend_progress ap = { vt_progress_new(path, 10000, progress && !quiet) };
    int r = vd_amend(img, opts, amend_progress_cb, &ap, &e);
    vt_progress_end(ap.p, r == 0);
    int r2 = vd_close(img, r < 0 ? NULL : &e);
    free(opts);
    return r < 0 || r2 < 0 ? vc_fail_err(&e) : 0;
}
