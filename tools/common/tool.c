/* tool.c - helpers shared by the command-line tools (see tool.h). */
#include "tool.h"

#include <getopt.h>
#include <sched.h>
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
