/* main.c - vdboot: boot a disk image's own kernel on a throw-away overlay
 * and watch its serial console for a login prompt.
 *
 *   vdboot [options] IMAGE          kernel found in the image's /boot
 *   vdboot --kernel K [--initrd I] [--append A] [IMAGE]
 *
 * Outcome and exit code: login 0, panic 1, timeout 2, error 3. */
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
        "  --json                print each result as one JSON object (one a line)\n"
        "  -j, --jobs N          boot up to N images at a time (default 1)\n"
        "  --junit FILE          also write a JUnit XML report, a testcase per image\n"
        "  --tap                 print the results as TAP instead of text\n"
        "  -v, --verbose         report what vdboot does\n"
        "  -V, --version         print the version\n"
        "With several images, --console names a directory (N-IMAGE.log each).\n"
        "exit: 0 login, 1 panic, 2 timeout, 3 error (usage errors too: 2 is a timeout);\n"
        "      with several images the highest\n",
        VDBOOT_DEFAULT_EXPECT, VDBOOT_DEFAULT_TIMEOUT, VDBOOT_DEFAULT_MEMORY, VM_MAX_CPUS);
}

static int parse_args(int argc, char **argv, struct vdboot_opts *o)
{
    enum { O_KERNEL = 256, O_INITRD, O_APPEND, O_ACCEL, O_EXPECT, O_TIMEOUT, O_MEMORY,
           O_CPUS, O_CONSOLE, O_FORMAT, O_JSON, O_GUEST_DECOMPRESS, O_JUNIT, O_TAP };
    static const struct option lo[] = {
        { "kernel", 1, 0, O_KERNEL }, { "initrd", 1, 0, O_INITRD }, { "append", 1, 0, O_APPEND },
        { "accel", 1, 0, O_ACCEL }, { "expect", 1, 0, O_EXPECT }, { "timeout", 1, 0, O_TIMEOUT },
        { "memory", 1, 0, O_MEMORY }, { "cpus", 1, 0, O_CPUS }, { "console", 1, 0, O_CONSOLE },
        { "format", 1, 0, O_FORMAT }, { "json", 0, 0, O_JSON }, { "verbose", 0, 0, 'v' },
        { "guest-decompress", 0, 0, O_GUEST_DECOMPRESS }, { "jobs", 1, 0, 'j' },
        { "junit", 1, 0, O_JUNIT }, { "tap", 0, 0, O_TAP },
        { "help", 0, 0, 'h' }, { "version", 0, 0, 'V' }, { 0, 0, 0, 0 },
    };
    *o = (struct vdboot_opts){ .accel = "auto", .expect = VDBOOT_DEFAULT_EXPECT,
                               .timeout = VDBOOT_DEFAULT_TIMEOUT,
                               .memory_mib = VDBOOT_DEFAULT_MEMORY, .cpus = 1, .jobs = 1 };
    int c;
    char *end, opt[64];
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":vhVj:", lo, NULL)) != -1) {
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
        case O_JUNIT: o->junit = optarg; break;
        case O_TAP: o->tap = true; break;
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
    if (o->n_images > VDBOOT_MAX_IMAGES)
        return fprintf(stderr, "vdboot: at most %d images a run\n", VDBOOT_MAX_IMAGES), -1;
    if (!o->image && !o->kernel) {
        fprintf(stderr, "vdboot: expected IMAGE (or --kernel FILE)\n");
        usage(stderr);
        return -1;
    }
    if (o->json && o->tap)
        return fprintf(stderr, "vdboot: --json and --tap both write to stdout: pick one\n"), -1;
    if (o->n_images > 1 && o->console && !strcmp(o->console, "-"))
        return fprintf(stderr, "vdboot: --console - takes one image; give a directory\n"), -1;
    if (strcmp(o->accel, "kvm") && strcmp(o->accel, "tcg") && strcmp(o->accel, "auto"))
        return fprintf(stderr, "vdboot: --accel '%s': want kvm, tcg or auto\n", o->accel), -1;
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
    double timeout;
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
    copy.seconds = wd.timeout + VDBOOT_WATCHDOG_GRACE;
    snprintf(copy.reason, sizeof(copy.reason), "no match within %.0f s, and the guest's "
             "threads did not stop within %.0f s after that (ended by vdboot's watchdog)",
             wd.timeout, VDBOOT_WATCHDOG_GRACE);
    wd.fire(&copy);
    _exit(vdboot_outcome_exit[VM_TIMEOUT]);
}

static void watchdog_arm(struct vdboot_result *r, double timeout,
                         void (*fire)(struct vdboot_result *r))
{
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
    double s = timeout + VDBOOT_WATCHDOG_GRACE;
    wd.when.tv_sec += (time_t)s;
    wd.when.tv_nsec += (long)((s - (double)(time_t)s) * 1e9);
    if (wd.when.tv_nsec >= 1000000000) {
        wd.when.tv_sec++;
        wd.when.tv_nsec -= 1000000000;
    }
    wd.timeout = timeout;
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
static void boot_one(const struct vdboot_opts *o, struct vdboot_result *r,
                     void (*fire)(struct vdboot_result *r))
{
    struct boot_files bf;
    r->first_byte_seconds = -1;
    snprintf(r->firmware, sizeof(r->firmware), "direct");
    if (o->image) {
        snprintf(r->image, sizeof(r->image), "%s", o->image);
        snprintf(r->disk_bus, sizeof(r->disk_bus), "virtio");
        vd_error ve = { 0 };
        const char *fmt = o->format ? o->format : vd_probe_file(o->image, NULL, &ve);
        snprintf(r->format, sizeof(r->format), "%s", fmt ? fmt : "");
    }
    if (o->console && strcmp(o->console, "-"))
        snprintf(r->console_path, sizeof(r->console_path), "%s", o->console);
    if (boot_files_get(o, &bf, r) == 0) {
        snprintf(r->cmdline, sizeof(r->cmdline), "%s", bf.cmdline);
        snprintf(r->kernel_source, sizeof(r->kernel_source), "%s", bf.source);
        bzimage_read_version(bf.bi.kernel, bf.bi.kernel_len, r->kernel_version,
                             sizeof(r->kernel_version));
        if (accel_choose(o, &bf, r) == 0) {
            watchdog_arm(r, o->timeout, fire);
            if (strcmp(r->accel, "kvm") == 0)
                run_kvm(o, &bf, r);
            else
                run_tcg(o, &bf, r);
            watchdog_disarm();
        }
        boot_files_free(&bf);
    }
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
    double limit = o->timeout + VDBOOT_WATCHDOG_GRACE + 120;
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
