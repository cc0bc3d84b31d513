/* main.c - vdboot: boot a disk image's own kernel on a throw-away overlay
 * and watch its serial console for a login prompt.
 *
 *   vdboot [options] IMAGE          kernel found in the image's /boot
 *   vdboot --kernel K [--initrd I] [--append A] [IMAGE]
 *
 * Outcome and exit code: login 0, panic 1, timeout 2, error 3, check_failed
 * 4 (--run: logged in, the command exited non-zero), poweroff 5 (the guest
 * powered itself off: ACPI S5 in the built-in VMM). */
#include "vdboot.h"

#include "vdisk.h"
#include "tool.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
        "usage: vdboot [options] IMAGE...\n"
        "       vdboot --kernel FILE [--initrd FILE] [--append ARGS] [IMAGE]\n"
        "       vdboot [options] --domain VM.xml\n"
        "Boots the image's own kernel (from /boot in its ext2/3/4 filesystem) on a\n"
        "throw-away overlay and waits for a login prompt on the serial console.\n"
        "  --accel kvm|tcg|auto  built-in KVM VMM, qemu-system-x86_64 TCG, or pick by\n"
        "                        timing a calibration guest on /dev/kvm (default auto;\n"
        "                        tcg for --firmware uefi or a --disk-bus not virtio);\n"
        "                        qemu-kvm: qemu with -accel kvm (for comparisons)\n"
        "  --kernel/--initrd FILE, --append ARGS   boot these instead of the image's\n"
        "  --expect REGEX        prompt to wait for (default '%s')\n"
        "  --timeout SECONDS     give up after this long (default %d)\n"
        "  --memory MIB          guest RAM (default %d)\n"
        "  --cpus N              vCPUs, 1..%d (default 1)\n"
        "  --console FILE        save the console transcript ('-' = stdout)\n"
        "  --format FMT          image format (default: probed)\n"
        "  --guest-decompress    kvm: run the kernel's own decompressor instead of\n"
        "                        loading the vmlinux decompressed on the host\n"
        "  --json                print each result as one JSON object (one a line)\n"
        "  -j, --jobs N          boot up to N images at a time (default 1)\n"
        "  --junit FILE          also write a JUnit XML report, a testcase per image\n"
        "  --tap                 print the results as TAP instead of text\n"
        "  --run CMD             after the prompt, log in and run CMD; its output and exit\n"
        "                        status are reported, non-zero is exit code 4\n"
        "  --login USER          log in as USER (default root)\n"
        "  --firmware direct|bios|uefi|auto   direct (default): vdboot loads the kernel\n"
        "                        from /boot; bios/uefi: qemu (tcg) boots the disk through\n"
        "                        SeaBIOS/OVMF and the disk's own boot loader; auto: uefi\n"
        "                        when the image has an EFI system partition, else bios;\n"
        "                        bios with --accel kvm (or auto on a fast /dev/kvm):\n"
        "                        SeaBIOS in the built-in VMM\n"
        "  --domain VM.xml       boot the disk, bus, memory, vCPUs and firmware (bios,\n"
        "                        or uefi) that this libvirt domain gives the VM, with\n"
        "                        its NICs (user networking), CD-ROMs and further\n"
        "                        disks (qemu)\n"
        "  --disk-bus virtio|sata|scsi|ide   the disk's controller (tcg; the built-in\n"
        "                        VMM has virtio only; default virtio)\n"
        "  --nic none|user|MODEL   a NIC on qemu's user networking (tcg; no host\n"
        "                        access needed): user = qemu's default model, or MODEL\n"
        "                        virtio-net-pci, e1000, e1000e, rtl8139, vmxnet3,\n"
        "                        pcnet (default none)\n"
        "  --password-file FILE  the password, first line of FILE (default: none)\n"
        "  --shutdown kill|acpi  at the end (prompt, --run done, timeout): stop the VM\n"
        "                        (default), or press its ACPI power button and wait\n"
        "                        up to %.0f s for it to power off (field shutdown)\n"
        "  -v, --verbose         report what vdboot does\n"
        "  -V, --version         print the version\n"
        "With several images, --console names a directory (N-IMAGE.log each).\n"
        "exit: 0 login, 1 panic, 2 timeout, 3 error (usage errors too: 2 is a timeout),\n"
        "      4 --run failed, 5 the guest powered off; with several images the highest\n",
        VDBOOT_DEFAULT_EXPECT, VDBOOT_DEFAULT_TIMEOUT, VDBOOT_DEFAULT_MEMORY, VM_MAX_CPUS,
        VDBOOT_SHUTDOWN_WAIT);
}

/* The first line of --password-file, without its newline. */
static int read_password(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return fprintf(stderr, "vdboot: --password-file %s: %s\n", path, strerror(errno)), -1;
    if (!fgets(out, (int)size, f))
        out[0] = 0;
    fclose(f);
    out[strcspn(out, "\r\n")] = 0;
    return 0;
}

static int parse_args(int argc, char **argv, struct vdboot_opts *o)
{
    enum { O_KERNEL = 256, O_INITRD, O_APPEND, O_ACCEL, O_EXPECT, O_TIMEOUT, O_MEMORY,
           O_CPUS, O_CONSOLE, O_FORMAT, O_JSON, O_GUEST_DECOMPRESS, O_JUNIT, O_TAP, O_RUN,
           O_LOGIN, O_PASSWORD_FILE, O_FIRMWARE, O_DISK_BUS, O_DOMAIN, O_SHUTDOWN, O_NIC };
    static const struct option lo[] = {
        { "kernel", 1, 0, O_KERNEL }, { "initrd", 1, 0, O_INITRD }, { "append", 1, 0, O_APPEND },
        { "accel", 1, 0, O_ACCEL }, { "expect", 1, 0, O_EXPECT }, { "timeout", 1, 0, O_TIMEOUT },
        { "memory", 1, 0, O_MEMORY }, { "cpus", 1, 0, O_CPUS }, { "console", 1, 0, O_CONSOLE },
        { "format", 1, 0, O_FORMAT }, { "json", 0, 0, O_JSON }, { "verbose", 0, 0, 'v' },
        { "guest-decompress", 0, 0, O_GUEST_DECOMPRESS }, { "jobs", 1, 0, 'j' },
        { "junit", 1, 0, O_JUNIT }, { "tap", 0, 0, O_TAP }, { "run", 1, 0, O_RUN },
        { "login", 1, 0, O_LOGIN }, { "password-file", 1, 0, O_PASSWORD_FILE },
        { "firmware", 1, 0, O_FIRMWARE }, { "disk-bus", 1, 0, O_DISK_BUS },
        { "domain", 1, 0, O_DOMAIN }, { "shutdown", 1, 0, O_SHUTDOWN }, { "nic", 1, 0, O_NIC },
        { "help", 0, 0, 'h' }, { "version", 0, 0, 'V' }, { 0, 0, 0, 0 },
    };
    *o = (struct vdboot_opts){ .accel = "auto", .expect = VDBOOT_DEFAULT_EXPECT,
                               .timeout = VDBOOT_DEFAULT_TIMEOUT,
                               .memory_mib = VDBOOT_DEFAULT_MEMORY, .cpus = 1, .jobs = 1,
                               .firmware = "direct", .disk_bus = "virtio" };
    int c;
    char *end, opt[64];
    const char *hw_opt = NULL;   /* an option --domain also sets */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":vhVj:", lo, NULL)) != -1) {
        hw_opt = c == O_FORMAT ? "--format" : c == O_MEMORY ? "--memory" : c == O_CPUS ? "--cpus" :
                 c == O_FIRMWARE ? "--firmware" : c == O_DISK_BUS ? "--disk-bus" :
                 c == O_KERNEL ? "--kernel" : c == O_NIC ? "--nic" : hw_opt;
        switch (c) {
        case O_DOMAIN: o->domain = optarg; break;
        case O_KERNEL: o->kernel = optarg; break;
        case O_INITRD: o->initrd = optarg; break;
        case O_APPEND: o->append = optarg; break;
        case O_ACCEL: o->accel = optarg; break;
        case O_EXPECT: o->expect = optarg; break;
        case O_CONSOLE: o->console = optarg; break;
        case O_FORMAT: o->format = optarg; break;
        case O_JSON: o->json = true; break;
        case O_GUEST_DECOMPRESS: o->guest_decompress = true; break;
        case O_JUNIT: o->junit = optarg; break;
        case O_TAP: o->tap = true; break;
        case O_RUN: o->run = optarg; break;
        case O_FIRMWARE: o->firmware = optarg; break;
        case O_DISK_BUS: o->disk_bus = optarg; break;
        case O_LOGIN: o->login = optarg; break;
        case O_NIC:
            o->n_nics = 0;
            if (!strcmp(optarg, "user"))
                o->nic_models[o->n_nics++] = "";
            else if (vdboot_nic_model(optarg))
                o->nic_models[o->n_nics++] = optarg;
            else if (strcmp(optarg, "none"))
                return fprintf(stderr, "vdboot: --nic '%s': want none, user, virtio-net-pci, "
                               "e1000, e1000e, rtl8139, vmxnet3 or pcnet\n", optarg), -1;
            break;
        case O_SHUTDOWN:
            if (strcmp(optarg, "acpi") && strcmp(optarg, "kill"))
                return fprintf(stderr, "vdboot: --shutdown '%s': want acpi or kill\n", optarg), -1;
            o->shutdown_acpi = !strcmp(optarg, "acpi");
            break;
        case O_PASSWORD_FILE: o->password_file = optarg; break;
        case 'v': o->verbose = true; break;
        case 'j':
            o->jobs = (int)strtol(optarg, &end, 10);
            if (*end || o->jobs < 1 || o->jobs > VDBOOT_MAX_JOBS)
                return fprintf(stderr, "vdboot: --jobs '%s': want 1..%d\n", optarg,
                               VDBOOT_MAX_JOBS), -1;
            break;
        case 'h': usage(stdout); exit(0);
        case 'V': exit(vt_version("vdboot"));
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
        default:
            fprintf(stderr, "vdboot: unknown option or missing argument '%s'\n",
                    vt_bad_option(argv[optind - 1], opt, sizeof opt));
            usage(stderr);
            return -1;
        }
    }
    o->images = (const char **)argv + optind;
    o->n_images = argc - optind;
    o->image = o->n_images ? o->images[0] : NULL;
    if (o->domain) {
        /* the domain says which disk and hardware: nothing may contradict it */
        if (o->n_images || hw_opt)
            return fprintf(stderr, "vdboot: --domain gives the disk, its format and bus, memory, "
                           "vCPUs, firmware and NICs: no %s%s\n", o->n_images ? "IMAGE " : "",
                           o->n_images ? o->images[0] : hw_opt), -1;
        if (domain_load(o->domain, o) < 0)
            return -1;
    }
    if (o->n_images > VDBOOT_MAX_IMAGES)
        return fprintf(stderr, "vdboot: at most %d images a run\n", VDBOOT_MAX_IMAGES), -1;
    if (!o->image && !o->kernel) {
        fprintf(stderr, "vdboot: expected IMAGE (or --kernel FILE)\n");
        usage(stderr);
        return -1;
    }
    if (o->run && (strlen(o->run) > 2048 || strchr(o->run, '\n')))
        return fprintf(stderr, "vdboot: --run: want one line of at most 2048 bytes\n"), -1;
    if (o->login && (!*o->login || strlen(o->login) > 32 || strpbrk(o->login, " \t\n")))
        return fprintf(stderr, "vdboot: --login '%s': want a user name\n", o->login), -1;
    if (o->password_file && read_password(o->password_file, o->password, sizeof(o->password)) < 0)
        return -1;
    if (strcmp(o->firmware, "direct") && strcmp(o->firmware, "bios") &&
        strcmp(o->firmware, "uefi") && strcmp(o->firmware, "auto"))
        return fprintf(stderr, "vdboot: --firmware '%s': want direct, bios, uefi or auto\n",
                       o->firmware), -1;
    if (strcmp(o->firmware, "direct") && (!o->image || o->kernel))
        return fprintf(stderr, "vdboot: --firmware %s boots an IMAGE through its own boot "
                       "loader: give an image and no --kernel\n", o->firmware), -1;
    if (strcmp(o->disk_bus, "virtio") && strcmp(o->disk_bus, "sata") &&
        strcmp(o->disk_bus, "scsi") && strcmp(o->disk_bus, "ide"))
        return fprintf(stderr, "vdboot: --disk-bus '%s': want virtio, sata, scsi or ide\n",
                       o->disk_bus), -1;
    if (o->json && o->tap)
        return fprintf(stderr, "vdboot: --json and --tap both write to stdout: pick one\n"), -1;
    if (o->n_images > 1 && o->console && !strcmp(o->console, "-"))
        return fprintf(stderr, "vdboot: --console - takes one image; give a directory\n"), -1;
    if (strcmp(o->accel, "kvm") && strcmp(o->accel, "tcg") && strcmp(o->accel, "auto") &&
        strcmp(o->accel, "qemu-kvm"))
        return fprintf(stderr, "vdboot: --accel '%s': want kvm, tcg, qemu-kvm or auto\n",
                       o->accel), -1;
    return 0;
}

/* ---- the watchdog: --timeout holds whatever the guest does ----
 * vm_run and tcg_watch end the boot at the deadline, but their cleanup
 * waits for the vCPU threads (or qemu) to stop.  A vCPU thread that never
 * comes back from KVM_RUN (an L1 host starved or stuck under nested
 * virtualization, a device handler blocked) would hold the process forever,
 * which is what happened with --cpus 2 on a one-CPU L1.  So a separate
 * thread ends the process VDBOOT_WATCHDOG_GRACE seconds after the deadline
 * with the timeout outcome, whatever the other threads do. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool armed, started;
    struct timespec when;      /* CLOCK_MONOTONIC */
    double timeout, extra;     /* --timeout; --shutdown acpi's wait after it */
    struct vdboot_result *r;
    void (*fire)(struct vdboot_result *r);   /* reports and _exit()s */
} wd = { .lock = PTHREAD_MUTEX_INITIALIZER };

static void *watchdog_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&wd.lock);
    for (;;) {
        while (!wd.armed)
            pthread_cond_wait(&wd.cond, &wd.lock);
        if (pthread_cond_timedwait(&wd.cond, &wd.lock, &wd.when) == ETIMEDOUT && wd.armed)
            break;
    }
    /* A copy: the stuck thread may still be writing the original. */
    static struct vdboot_result copy;
    copy = *wd.r;
    copy.outcome = VM_TIMEOUT;
    copy.seconds = wd.timeout + wd.extra + VDBOOT_WATCHDOG_GRACE;
    snprintf(copy.reason, sizeof(copy.reason), "no match within %.0f s%s, and the guest's "
             "threads did not stop within %.0f s after that (ended by vdboot's watchdog)",
             wd.timeout, wd.extra > 0 ? " and the --shutdown acpi wait" : "",
             VDBOOT_WATCHDOG_GRACE);
    wd.fire(&copy);
    _exit(vdboot_outcome_exit[VM_TIMEOUT]);
}

/* Armed for --timeout, plus --shutdown acpi's wait for the guest. */
static void watchdog_arm(struct vdboot_result *r, const struct vdboot_opts *o,
                         void (*fire)(struct vdboot_result *r))
{
    double timeout = o->timeout, extra = o->shutdown_acpi ? VDBOOT_SHUTDOWN_WAIT : 0;
    pthread_mutex_lock(&wd.lock);
    if (!wd.started) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&wd.cond, &ca);
        pthread_t t;
        wd.started = pthread_create(&t, NULL, watchdog_thread, NULL) == 0;
        if (wd.started)
            pthread_detach(t);
    }
    clock_gettime(CLOCK_MONOTONIC, &wd.when);
    double s = timeout + extra + VDBOOT_WATCHDOG_GRACE;
    wd.when.tv_sec += (time_t)s;
    wd.when.tv_nsec += (long)((s - (double)(time_t)s) * 1e9);
    if (wd.when.tv_nsec >= 1000000000) {
        wd.when.tv_sec++;
        wd.when.tv_nsec -= 1000000000;
    }
    wd.timeout = timeout;
    wd.extra = extra;
    wd.r = r;
    wd.fire = fire;
    wd.armed = true;
    pthread_cond_broadcast(&wd.cond);
    pthread_mutex_unlock(&wd.lock);
}

static void watchdog_disarm(void)
{
    pthread_mutex_lock(&wd.lock);
    wd.armed = false;
    pthread_cond_broadcast(&wd.cond);
    pthread_mutex_unlock(&wd.lock);
}

/* ---- one image ---- */
/* --firmware bios|uefi|auto: the disk boots through its own boot code;
 * there is no kernel to find.  qemu runs it, or with --accel kvm (or auto
 * on a fast /dev/kvm) the built-in VMM runs SeaBIOS (bios, virtio only). */
static void boot_firmware(const struct vdboot_opts *o, struct vdboot_result *r,
                          void (*fire)(struct vdboot_result *r))
{
    struct vdboot_opts fo = *o;
    char why[256];
    if (!strcmp(o->firmware, "auto")) {
        fo.firmware = discover_firmware(o->image, o->format, why, sizeof(why));
        if (!fo.firmware) {
            result_error(r, "%s", why);
            return;
        }
    }
    snprintf(r->firmware, sizeof(r->firmware), "%s", fo.firmware);
    snprintf(r->kernel_source, sizeof(r->kernel_source), "the image's boot loader via %s%s%s%s",
             !strcmp(fo.firmware, "uefi") ? "OVMF" : "SeaBIOS",
             !strcmp(o->firmware, "auto") ? " (--firmware auto: " : "",
             !strcmp(o->firmware, "auto") ? why : "", !strcmp(o->firmware, "auto") ? ")" : "");
    /* auto: the built-in VMM when /dev/kvm is fast, as for a direct boot,
     * unless the firmware or disk bus is one only qemu has */
    if (accel_choose(&fo, NULL, r) < 0)
        return;
    if (!strcmp(r->accel, "kvm")) {
        if (strcmp(fo.firmware, "bios")) {
            result_error(r, "--firmware %s needs --accel tcg: the built-in VMM runs SeaBIOS "
                         "(--firmware bios) but no UEFI firmware", fo.firmware);
            return;
        }
        if (accel_qemu_only(o, why, sizeof(why))) {
            result_error(r, "%s; use --accel tcg", why);
            return;
        }
        if (strcmp(o->accel, "auto"))
            snprintf(r->accel_why, sizeof(r->accel_why), "--accel kvm: SeaBIOS in the built-in VMM");
        struct boot_files bf;
        memset(&bf, 0, sizeof(bf));
        watchdog_arm(r, o, fire);
        run_kvm(&fo, &bf, r);
        watchdog_disarm();
        return;
    }
    if (strcmp(o->accel, "auto"))
        snprintf(r->accel_why, sizeof(r->accel_why), "--firmware %s runs under qemu", fo.firmware);
    struct boot_files bf;
    memset(&bf, 0, sizeof(bf));
    watchdog_arm(r, o, fire);
    run_tcg(&fo, &bf, r);
    watchdog_disarm();
}

/* Where the prompt was seen: the VGA screen (tcg.c says so) or the serial
 * console, the only one direct boots watch. */
static void boot_note_prompt(struct vdboot_result *r)
{
    if ((r->outcome == VM_LOGIN || r->outcome == VM_CHECK_FAILED) && !r->prompt_seen_on[0])
        snprintf(r->prompt_seen_on, sizeof(r->prompt_seen_on), "serial");
}

/* ---- one image ---- */
static void boot_one(const struct vdboot_opts *o, struct vdboot_result *r,
                     void (*fire)(struct vdboot_result *r))
{
    struct boot_files bf;
    r->first_byte_seconds = -1;
    r->run_exit_status = -1;
    snprintf(r->firmware, sizeof(r->firmware), "direct");
    if (o->image) {
        snprintf(r->image, sizeof(r->image), "%s", o->image);
        snprintf(r->disk_bus, sizeof(r->disk_bus), "%s", o->disk_bus);
        vd_error ve = { 0 };
        const char *fmt = o->format ? o->format : vd_probe_file(o->image, NULL, &ve);
        snprintf(r->format, sizeof(r->format), "%s", fmt ? fmt : "");
    }
    if (o->console && strcmp(o->console, "-"))
        snprintf(r->console_path, sizeof(r->console_path), "%s", o->console);
    if (strcmp(o->firmware, "direct")) {
        boot_firmware(o, r, fire);
        boot_note_prompt(r);
        return;
    }
    if (boot_files_get(o, &bf, r) == 0) {
        snprintf(r->cmdline, sizeof(r->cmdline), "%s", bf.cmdline);
        snprintf(r->kernel_source, sizeof(r->kernel_source), "%s", bf.source);
        bzimage_read_version(bf.bi.kernel, bf.bi.kernel_len, r->kernel_version,
                             sizeof(r->kernel_version));
        if (accel_choose(o, &bf, r) == 0) {
            char why[256];
            if (strcmp(r->accel, "kvm") == 0 && accel_qemu_only(o, why, sizeof(why))) {
                result_error(r, "%s; use --accel tcg", why);
            } else {
                watchdog_arm(r, o, fire);
                if (strcmp(r->accel, "kvm") == 0)
                    run_kvm(o, &bf, r);
                else
                    run_tcg(o, &bf, r);
                watchdog_disarm();
            }
        }
        boot_files_free(&bf);
    }
    boot_note_prompt(r);
}

/* ---- reports ---- */
static const struct vdboot_opts *g_opts;
static double g_t0;

static void report_one(const struct vdboot_result *r)
{
    if (g_opts->json)
        report_json(stdout, r);
    else if (!g_opts->tap)
        report_text(r);
    fflush(stdout);
}

static void report_all(const struct vdboot_result *rs, int n)
{
    if (g_opts->tap)
        report_tap(stdout, rs, n);
    fflush(stdout);
    if (g_opts->junit && report_junit(g_opts->junit, rs, n, con_now() - g_t0) < 0)
        fprintf(stderr, "vdboot: --junit %s: %s\n", g_opts->junit, strerror(errno));
}

/* The watchdog of a one-image run reports like the run would have. */
static void fire_single(struct vdboot_result *r)
{
    report_one(r);
    report_all(r, 1);
}

/* In a child of a several-image run, the parent reports. */
static struct vdboot_result *g_child_slot;
static void fire_child(struct vdboot_result *r)
{
    *g_child_slot = *r;
}

/* Where image i's transcript goes with several images: DIR/N-BASENAME.log */
static void child_console(const struct vdboot_opts *o, int i, char *buf, size_t size)
{
    const char *base = strrchr(o->images[i], '/');
    base = base ? base + 1 : o->images[i];
    snprintf(buf, size, "%s/%d-%s.log", o->console, i + 1, base);
}

/* Several images: each boot in a child process (the VMM's devices are
 * per-process state), at most o->jobs at a time; results in shared memory.
 * The parent ends a child that outlives every deadline of its own. */
static int run_many(const struct vdboot_opts *o, struct vdboot_result *rs)
{
    int n = o->n_images, next = 0, running = 0;
    pid_t pid[VDBOOT_MAX_IMAGES];
    double t_start[VDBOOT_MAX_IMAGES];
    bool done[VDBOOT_MAX_IMAGES] = { false };
    /* discovery + calibration + boot + the watchdog's grace, with room */
    double limit = o->timeout + VDBOOT_WATCHDOG_GRACE + 120 +
                   (o->shutdown_acpi ? VDBOOT_SHUTDOWN_WAIT : 0);
    char console[4200];
    while (next < n || running > 0) {
        while (running < o->jobs && next < n) {
            int i = next++;
            snprintf(rs[i].image, sizeof(rs[i].image), "%s", o->images[i]);
            fflush(stdout);
            fflush(stderr);
            pid[i] = fork();
            if (pid[i] == 0) {
                struct vdboot_opts co = *o;
                co.image = o->images[i];
                if (o->console) {
                    child_console(o, i, console, sizeof(console));
                    co.console = console;
                }
                g_child_slot = &rs[i];
                boot_one(&co, &rs[i], fire_child);
                _exit(0);
            }
            if (pid[i] < 0) {
                result_error(&rs[i], "cannot start a process for %s: %s", o->images[i],
                             strerror(errno));
                done[i] = true;
                report_one(&rs[i]);
                continue;
            }
            t_start[i] = con_now();
            running++;
        }
        int status;
        pid_t w = waitpid(-1, &status, WNOHANG);
        if (w == 0) {
            for (int i = 0; i < next; i++)
                if (!done[i] && pid[i] > 0 && con_now() - t_start[i] > limit)
                    kill(pid[i], SIGKILL);
            usleep(50 * 1000);
            continue;
        }
        if (w < 0)
            break;
        for (int i = 0; i < next; i++) {
            if (done[i] || pid[i] != w)
                continue;
            done[i] = true;
            running--;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || rs[i].outcome == VM_RUNNING) {
                if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
                    rs[i].outcome = VM_TIMEOUT,
                    snprintf(rs[i].reason, sizeof(rs[i].reason),
                             "the boot did not end within %.0f s; vdboot killed it", limit);
                else if (WIFSIGNALED(status))
                    result_error(&rs[i], "vdboot's process for this image died of signal %d",
                                 WTERMSIG(status));
                else if (WIFEXITED(status) && WEXITSTATUS(status) == 2)
                    ;   /* the child's watchdog: the slot holds its report */
                else if (rs[i].outcome == VM_RUNNING)
                    result_error(&rs[i], "vdboot's process for this image ended without a result");
            }
            report_one(&rs[i]);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct vdboot_opts o;
    if (parse_args(argc, argv, &o) < 0)
        return 3;
    g_opts = &o;
    g_t0 = con_now();
    signal(SIGPIPE, SIG_IGN);   /* qemu may exit while --run types into its stdin */
    int n = o.n_images ? o.n_images : 1;
    struct vdboot_result *rs = mmap(NULL, sizeof(*rs) * (size_t)n, PROT_READ | PROT_WRITE,
                                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (rs == MAP_FAILED)
        return fprintf(stderr, "vdboot: out of memory\n"), 3;
    if (n == 1) {
        boot_one(&o, &rs[0], fire_single);
        report_one(&rs[0]);
    } else {
        run_many(&o, rs);
    }
    report_all(rs, n);
    int code = 0;
    for (int i = 0; i < n; i++)
        if (vdboot_outcome_exit[rs[i].outcome] > code)
            code = vdboot_outcome_exit[rs[i].outcome];
    munmap(rs, sizeof(*rs) * (size_t)n);
    return code;
}
