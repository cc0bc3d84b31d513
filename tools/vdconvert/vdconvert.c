/* vdconvert - convert, inspect and create virtual disk images.
 *
 * main() dispatches on the first word; `vdconvert IN OUT` (no sub-command)
 * is a conversion, as with `qemu-img convert`.  Each sub-command lives in its
 * own file; this one holds the helpers they share.
 */
#include "vdconvert.h"
#include "tool.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int vc_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vt_vmessage("vdconvert", fmt, ap);
    va_end(ap);
    return VC_EXIT_ERR;
}

int vc_fail_err(const vd_error *e)
{
    return vc_fail("%s", e->msg[0] ? e->msg : strerror(e->code ? -e->code : EIO));
}

static int vc_run_command(const char *cmd, int argc, char **argv);

/* Print the synopsis of `cmd` (the "usage:" lines of its --help, up to the
 * option descriptions) on stderr.  Each command keeps its text next to its
 * option parsing; it is read back through a pipe rather than copied. */
static void vc_print_synopsis(const char *cmd)
{
    int p[2];
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    if (saved < 0 || pipe(p) < 0) {
        if (saved >= 0)
            close(saved);
        return;
    }
    char buf[8192];
    ssize_t n = 0;
    if (dup2(p[1], STDOUT_FILENO) >= 0) {
        int oi = optind, oe = opterr;
        optind = 0;                    /* glibc: start getopt afresh */
        vc_run_command(cmd, 2, (char *[]){ (char *)cmd, (char *)"--help", NULL });
        fflush(stdout);
        optind = oi;
        opterr = oe;
        dup2(saved, STDOUT_FILENO);
        close(p[1]);
        n = read(p[0], buf, sizeof buf - 1);   /* help texts are < 4 KiB */
    } else {
        close(p[1]);
    }
    close(p[0]);
    close(saved);
    buf[n > 0 ? n : 0] = 0;
    for (char *line = buf, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl)
            break;
        if (line != buf && (line[0] != ' ' || line[strspn(line, " ")] == '-' || nl == line))
            break;             /* first option description or blank line */
        fprintf(stderr, "%.*s\n", (int)(nl - line), line);
    }
}

int vc_usage(const char *cmd, const char *fmt, ...)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "vdconvert %s", cmd);
    va_list ap;
    va_start(ap, fmt);
    vt_vmessage(prefix, fmt, ap);
    va_end(ap);
    vc_print_synopsis(cmd);
    return VC_EXIT_USAGE;
}

int vc_usage_error(const char *cmd, const char *what)
{
    /* `what` is the argument getopt stepped over; for a short option the
     * letter is in optopt (the argument may be a cluster such as "-pX"). */
    char opt[64];
    vt_bad_option(what, opt, sizeof opt);
    return vc_usage(cmd, "unknown option or missing argument '%s'", opt);
}

int vc_common_option(int c, const char *cmd, const char *usage, char **argv, const char **fmt,
                     bool *allow, bool *json)
{
    switch (c) {
    case 'f': *fmt = optarg; return -1;
    case 'H': *allow = true; return -1;
    case 'U': vc_force_share = true; return -1;
    case 'h': fputs(usage, stdout); return 0;
    case 'j':
        if (!json)
            break;
        *json = true;
        return -1;
    case 'o':
        if (!json)
            break;
        if (strcmp(optarg, "json") && strcmp(optarg, "human"))
            return vc_fail("%s: --output=%s: expected json or human", cmd, optarg);
        *json = !strcmp(optarg, "json");
        return -1;
    }
    return vc_usage_error(cmd, argv[optind - 1]);
}

int vc_open_operand(const char *cmd, int argc, char **argv, const char *fmt, bool allow,
                    vd_image **img)
{
    if (argc - optind != 1)
        return vc_usage(cmd, "expected one image");
    vd_error e = { 0 };
    if (vc_open(argv[optind], fmt, true, allow, img, &e) < 0)
        return vc_fail_err(&e);
    return 0;
}

int vc_check_format(const char *fmt)
{
    if (!fmt || vd_format_lookup(fmt))
        return 0;
    fprintf(stderr, "vdconvert: Unknown file format '%s' (formats: ", fmt);
    vt_print_formats(stderr, false);
    fputs(")\n", stderr);
    return VC_EXIT_ERR;
}

int vc_output_format(const char *given, const char *path, const char **fmt)
{
    if (given) {
        const vd_format_desc *d = vd_format_lookup(given);
        if (!d)
            return vc_check_format(given);
        *fmt = d->name;
        return 0;
    }
    *fmt = vd_format_from_extension(path);
    if (*fmt)
        return 0;
    /* An NBD export or a device has no extension to go by: raw, as
     * qemu-img writes without -O. */
    struct stat st;
    if (strstr(path, "://") || (stat(path, &st) == 0 && (S_ISBLK(st.st_mode) ||
                                                          S_ISCHR(st.st_mode)))) {
        *fmt = "raw";
        return 0;
    }
    fprintf(stderr, "vdconvert: %s: cannot tell the output format from the file name; "
            "give it with -O FMT (formats: ", path);
    vt_print_formats(stderr, true);
    fputs(")\n", stderr);
    return VC_EXIT_ERR;
}

bool vc_force_share;

bool vc_backing_needs_format(const char *fmt)
{
    /* Formats whose backing file may be of any format store its format;
     * qemu-img 7.2 refuses to guess it (a raw backing probed as something
     * else is a security hole), so vdconvert does too.  VDI, VHD, VHDX and
     * Parallels parents are of the child's own format: nothing to guess. */
    static const char *const any_backing[] = { "qcow2", "qed", "qcow", "vmdk", NULL };
    for (const char *const *f = any_backing; *f; f++)
        if (fmt && !strcmp(fmt, *f))
            return true;
    return false;
}

int vc_open(const char *path, const char *fmt, bool readonly, bool allow_host,
            vd_image **out, vd_error *e)
{
    if (fmt && !vd_format_lookup(fmt)) {
        char list[256] = "";
        size_t n, used = 0;
        const vd_format_desc *t = vd_formats(&n);
        for (size_t i = 0; i < n && used < sizeof list; i++)
            used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? " " : "",
                                     t[i].name);
        return vd_set_error(e, -EINVAL, "Unknown file format '%s' (formats: %s)", fmt, list);
    }
    int r = vd_open(path, &(vd_open_opts){ .format = fmt, .readonly = readonly,
                    .allow_host_paths = allow_host,
                    .force_share = readonly && vc_force_share }, out, e);
    /* qemu-img warns when it opens a guessed-raw image for writing */
    if (r == 0 && !readonly)
        vt_warn_probed_raw(*out, path);
    return r;
}

bool vc_is_zero(const void *buf, size_t len)
{
    /* The first byte zero and every byte equal to the one after it. */
    const unsigned char *p = buf;
    return !len || (!p[0] && !memcmp(p, p + 1, len - 1));
}

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} vc_commands[] = {
    { "convert", vc_cmd_convert, "convert IN to OUT (any format to any format)" },
    { "info", vc_cmd_info, "show an image's format, sizes, backing chain, snapshots" },
    { "map", vc_cmd_map, "list an image's extents: data/zero, layer, file offset" },
    { "check", vc_cmd_check, "check (and repair) an image's metadata" },
    { "compare", vc_cmd_compare, "compare the guest content of two images" },
    { "create", vc_cmd_create, "create a new image (optionally over a backing file)" },
    { "resize", vc_cmd_resize, "grow (or, with --shrink, shrink) an image" },
    { "measure", vc_cmd_measure, "how large a converted image would be" },
    { "snapshot", vc_cmd_snapshot, "list internal snapshots" },
    { "commit", vc_cmd_commit, "write an overlay's changes into its backing file" },
    { "rebase", vc_cmd_rebase, "change an overlay's backing file" },
    { "amend", vc_cmd_amend, "change format options in place (qcow2 compat, refcounts)" },
    { "dd", vc_cmd_dd, "copy blocks of an image into a new image (qemu-img dd)" },
    { "bench", vc_cmd_bench, "time reads or writes of an image (qemu-img bench)" },
};

/* qemu-img commands vdconvert does not have: named, so that a script using
 * one gets "not supported" instead of an implicit conversion of a file
 * called "bitmap". */
static const char *const vc_unsupported[] = { "bitmap", NULL };

static int vc_help(FILE *f)
{
    fprintf(f, "usage: vdconvert [convert] [options] IN OUT\n"
               "       vdconvert COMMAND [options] ...   (COMMAND --help for details)\n"
               "       vdconvert --version | --help\n\n");
    for (size_t i = 0; i < sizeof vc_commands / sizeof vc_commands[0]; i++)
        fprintf(f, "  %-9s %s\n", vc_commands[i].name, vc_commands[i].summary);
    fprintf(f, "\nformats: ");
    vt_print_formats(f, false);
    fprintf(f, "\nexit: 0 success, 1 error, 2 usage (compare and check: see their --help)\n");
    return f == stdout ? VT_EXIT_OK : VT_EXIT_USAGE;
}

static int vc_run_command(const char *cmd, int argc, char **argv)
{
    for (size_t i = 0; i < sizeof vc_commands / sizeof vc_commands[0]; i++)
        if (!strcmp(cmd, vc_commands[i].name))
            return vc_commands[i].fn(argc, argv);
    return -1;
}

/* Is argv[1] meant as a command?  A word of lower-case letters that is not
 * a file: "infoo" is a mistyped command, "guest.raw" or "disk" (existing)
 * is the IN of an implicit conversion. */
static bool vc_looks_like_command(const char *a)
{
    if (!*a || a[0] == '-' || strspn(a, "abcdefghijklmnopqrstuvwxyz-") != strlen(a))
        return false;
    return access(a, F_OK) != 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return vc_help(stderr);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))
        return vc_help(stdout);
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))
        return vt_version("vdconvert");
    int r = vc_run_command(argv[1], argc - 1, argv + 1);
    if (r >= 0)
        return r;
    for (const char *const *u = vc_unsupported; *u; u++)
        if (!strcmp(argv[1], *u))
            return vc_fail("'%s' is not supported (docs/qemu-img-parity.md lists what is)",
                           argv[1]);
    if (vc_looks_like_command(argv[1])) {
        fprintf(stderr, "vdconvert: unknown command '%s'\n", argv[1]);
        return vc_help(stderr);
    }
    return vc_cmd_convert(argc, argv);
}
