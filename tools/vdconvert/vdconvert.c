/* vdconvert - convert, inspect and create virtual disk images.
 *
 * main() dispatches on the first word; `vdconvert IN OUT` (no sub-command)
 * is a conversion, as with `qemu-img convert`.  Each sub-command lives in its
 * own file; this one holds the helpers they share.
 */
#include "vdconvert.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int vc_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("vdconvert: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return VC_EXIT_ERR;
}

int vc_fail_err(const vd_error *e)
{
    return vc_fail("%s", e->msg[0] ? e->msg : strerror(e->code ? -e->code : EIO));
}

int vc_usage_error(const char *cmd, const char *what)
{
    return vc_fail("%s: unknown option or missing argument '%s' (see vdconvert %s --help)",
                   cmd, what ? what : "?", cmd);
}

bool vc_parse_size(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return false;
    int sh = 0;
    switch (*end) {
    case 'k': case 'K': sh = 10; end++; break;
    case 'M': sh = 20; end++; break;
    case 'G': sh = 30; end++; break;
    case 'T': sh = 40; end++; break;
    case 'P': sh = 50; end++; break;
    case 'b': case 'B': end++; break;
    default: break;
    }
    if (sh && (*end == 'B' || *end == 'b' || (*end == 'i' && end[1] == 'B'))) 
        end += *end == 'i' ? 2 : 1;
    if (*end || (sh && v > (UINT64_MAX >> sh)))
        return false;
    *out = (uint64_t)v << sh;
    return true;
}

int vc_open(const char *path, const char *fmt, bool readonly, bool allow_host,
            vd_image **out, vd_error *e)
{
    return vd_open(path, &(vd_open_opts){ .format = fmt, .readonly = readonly,
                   .allow_host_paths = allow_host }, out, e);
}

void vc_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
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
};

static int vc_help(FILE *f)
{
    fprintf(f, "usage: vdconvert [convert] [options] IN OUT\n"
               "       vdconvert COMMAND [options] ...   (COMMAND --help for details)\n\n");
    for (size_t i = 0; i < sizeof vc_commands / sizeof vc_commands[0]; i++)
        fprintf(f, "  %-9s %s\n", vc_commands[i].name, vc_commands[i].summary);
    fprintf(f, "\nformats:");
    for (const char *const *n = vd_format_names(); *n; n++)
        fprintf(f, " %s", *n);
    fprintf(f, "\n");
    return f == stdout ? 0 : VC_EXIT_ERR;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return vc_help(stderr);
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help"))
        return vc_help(stdout);
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("vdconvert %s\n", vd_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof vc_commands / sizeof vc_commands[0]; i++)
        if (!strcmp(argv[1], vc_commands[i].name))
            return vc_commands[i].fn(argc - 1, argv + 1);
    return vc_cmd_convert(argc, argv);
}
