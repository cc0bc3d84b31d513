/* main.c - vdboot: boot a disk image's own kernel on a throw-away overlay
 * and watch its serial console for a login prompt.
 *
 *   vdboot [options] IMAGE          kernel found in the image's /boot
 *   vdboot --kernel K [--initrd I] [--append A] [IMAGE]
 *
 * Outcome and exit code: login 0, panic 1, timeout 2, error 3. */
#include "vdboot.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const outcome_names[] = { "running", "login", "panic", "timeout", "error" };
static const int outcome_exit[] = { 3, 0, 1, 2, 3 };

static void usage(FILE *f)
{
    fprintf(f,
        "usage: vdboot [options] IMAGE\n"
        "       vdboot --kernel FILE [--initrd FILE] [--append ARGS] [IMAGE]\n"
        "Boots the image's own kernel (from /boot in its ext2/3/4 filesystem) on a\n"
        "throw-away overlay and waits for a login prompt on the serial console.\n"
        "  --accel kvm|tcg|auto  built-in KVM VMM, qemu-system-x86_64 TCG, or pick by\n"
        "                        timing a calibration guest on /dev/kvm (default auto)\n"
        "  --kernel/--initrd FILE, --append ARGS   boot these instead of the image's\n"
        "  --expect REGEX        prompt to wait for (default '%s')\n"
        "  --timeout SECONDS     give up after this long (default %d)\n"
        "  --memory MIB          guest RAM (default %d)\n"
        "  --cpus N              vCPUs, 1..%d (default 1)\n"
        "  --console FILE        save the console transcript ('-' = stdout)\n"
        "  --format FMT          image format (default: probed)\n"
        "  --guest-decompress    kvm: run the kernel's own decompressor instead of\n"
        "                        loading the vmlinux decompressed on the host\n"
        "  --json                print the result as one JSON object\n"
        "  -v, --verbose         report what vdboot does\n"
        "exit: 0 login, 1 panic, 2 timeout, 3 error\n",
        VDBOOT_DEFAULT_EXPECT, VDBOOT_DEFAULT_TIMEOUT, VDBOOT_DEFAULT_MEMORY, VM_MAX_CPUS);
}

static int parse_args(int argc, char **argv, struct vdboot_opts *o)
{
    enum { O_KERNEL = 256, O_INITRD, O_APPEND, O_ACCEL, O_EXPECT, O_TIMEOUT, O_MEMORY,
           O_CPUS, O_CONSOLE, O_FORMAT, O_JSON, O_GUEST_DECOMPRESS };
    static const struct option lo[] = {
        { "kernel", 1, 0, O_KERNEL }, { "initrd", 1, 0, O_INITRD }, { "append", 1, 0, O_APPEND },
        { "accel", 1, 0, O_ACCEL }, { "expect", 1, 0, O_EXPECT }, { "timeout", 1, 0, O_TIMEOUT },
        { "memory", 1, 0, O_MEMORY }, { "cpus", 1, 0, O_CPUS }, { "console", 1, 0, O_CONSOLE },
        { "format", 1, 0, O_FORMAT }, { "json", 0, 0, O_JSON }, { "verbose", 0, 0, 'v' },
        { "guest-decompress", 0, 0, O_GUEST_DECOMPRESS },
        { "help", 0, 0, 'h' }, { 0, 0, 0, 0 },
    };
    *o = (struct vdboot_opts){ .accel = "auto", .expect = VDBOOT_DEFAULT_EXPECT,
                               .timeout = VDBOOT_DEFAULT_TIMEOUT,
                               .memory_mib = VDBOOT_DEFAULT_MEMORY, .cpus = 1 };
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "vh", lo, NULL)) != -1) {
        switch (c) {
        case O_KERNEL: o->kernel = optarg; break;
        case O_INITRD: o->initrd = optarg; break;
        case O_APPEND: o->append = optarg; break;
        case O_ACCEL: o->accel = optarg; break;
        case O_EXPECT: o->expect = optarg; break;
        case O_CONSOLE: o->console = optarg; break;
        case O_FORMAT: o->format = optarg; break;
        case O_JSON: o->json = true; break;
        case O_GUEST_DECOMPRESS: o->guest_decompress = true; break;
        case 'v': o->verbose = true; break;
        case 'h': usage(stdout); exit(0);
        case O_TIMEOUT:
            o->timeout = strtod(optarg, &end);
            if (*end || !(o->timeout > 0) || o->timeout > 86400)
                return fprintf(stderr, "vdboot: --timeout '%s': want seconds > 0\n", optarg), -1;
            break;
        case O_MEMORY:
            o->memory_mib = strtoull(optarg, &end, 10);
            if (*end || o->memory_mib < 16 || o->memory_mib > (1u << 20))
                return fprintf(stderr, "vdboot: --memory '%s': want 16..1048576 MiB\n", optarg), -1;
            break;
        case O_CPUS:
            o->cpus = (int)strtol(optarg, &end, 10);
            if (*end || o->cpus < 1 || o->cpus > VM_MAX_CPUS)
                return fprintf(stderr, "vdboot: --cpus '%s': want 1..%d\n", optarg, VM_MAX_CPUS), -1;
            break;
        default: usage(stderr); return -1;
        }
    }
    if (optind < argc)
        o->image = argv[optind++];
    if (optind < argc || (!o->image && !o->kernel)) {
        usage(stderr);
        return -1;
    }
    if (strcmp(o->accel, "kvm") && strcmp(o->accel, "tcg") && strcmp(o->accel, "auto"))
        return fprintf(stderr, "vdboot: --accel '%s': want kvm, tcg or auto\n", o->accel), -1;
    return 0;
}

static void json_str(FILE *f, const char *s)
{
    if (!s) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void report(const struct vdboot_opts *o, const struct vdboot_result *r)
{
    const char *name = outcome_names[r->outcome];
    if (o->json) {
        printf("{\"outcome\": \"%s\", \"exit_code\": %d, \"accelerator\": ", name,
               outcome_exit[r->outcome]);
        json_str(stdout, r->accel[0] ? r->accel : NULL);
        printf(", \"accelerator_reason\": ");
        json_str(stdout, r->accel_why[0] ? r->accel_why : NULL);
        printf(", \"seconds\": %.3f, \"first_output_seconds\": ", r->seconds);
        if (r->first_byte_seconds >= 0)
            printf("%.3f", r->first_byte_seconds);
        else
            printf("null");
        printf(", \"kernel_version\": ");
        json_str(stdout, r->kernel_version[0] ? r->kernel_version : NULL);
        printf(", \"kernel\": ");
        json_str(stdout, r->kernel_source[0] ? r->kernel_source : NULL);
        printf(", \"cmdline\": ");
        json_str(stdout, r->cmdline);
        printf(", \"reason\": ");
        json_str(stdout, r->reason);
        printf(", \"matched\": ");
        json_str(stdout, r->outcome == VM_LOGIN ? r->event_line : NULL);
        printf(", \"console\": ");
        json_str(stdout, o->console && strcmp(o->console, "-") ? o->console : NULL);
        printf("}\n");
        return;
    }
    FILE *f = r->outcome == VM_LOGIN ? stdout : stderr;
    fprintf(f, "vdboot: %s after %.2f s (%s%s%s): %s\n", name, r->seconds,
            r->accel[0] ? r->accel : "no accelerator",
            r->kernel_version[0] ? ", kernel " : "", r->kernel_version, r->reason);
    if (r->outcome == VM_PANIC || r->outcome == VM_TIMEOUT) {
        fprintf(f, "vdboot: last console lines:\n%s", r->tail);
    }
}

int main(int argc, char **argv)
{
    struct vdboot_opts o;
    if (parse_args(argc, argv, &o) < 0)
        return 3;
    struct vdboot_result *r = calloc(1, sizeof(*r));
    struct boot_files bf;
    if (!r)
        return 3;
    r->first_byte_seconds = -1;
    if (boot_files_get(&o, &bf, r) == 0) {
        snprintf(r->cmdline, sizeof(r->cmdline), "%s", bf.cmdline);
        snprintf(r->kernel_source, sizeof(r->kernel_source), "%s", bf.source);
        bzimage_read_version(bf.bi.kernel, bf.bi.kernel_len, r->kernel_version,
                             sizeof(r->kernel_version));
        if (accel_choose(&o, &bf, r) == 0) {
            if (strcmp(r->accel, "kvm") == 0)
                run_kvm(&o, &bf, r);
            else
                run_tcg(&o, &bf, r);
        }
        boot_files_free(&bf);
    }
    report(&o, r);
    int code = outcome_exit[r->outcome];
    free(r);
    return code;
}
