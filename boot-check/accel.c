/* accel.c - which accelerator boots the guest.  `auto` times a calibration
 * guest on /dev/kvm: a 64-bit loop of CALIB_LOOPS (40k instructions) between two
 * port writes.  Hardware virtualization runs it in well under a
 * millisecond; a nested software KVM (kvm_pvm here) emulates it at about
 * two million instructions a second.  Slower than CALIB_MAX_SECONDS means a
 * Linux boot would take minutes on KVM, so qemu TCG is the faster choice. */
#include "vdboot.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CALIB_LOOPS 20000u
#define CALIB_MAX_SECONDS 0.005
#define CALIB_CODE 0x100000ul
#define CALIB_PORT_START 0xf4
#define CALIB_PORT_END 0xf5

static double calib_t0, calib_t1;

static void calib_io(struct vm *vm, void *opaque, uint64_t port, uint8_t *data,
                     unsigned len, bool is_write)
{
    (void)opaque; (void)data; (void)len; (void)is_write;
    if (port == CALIB_PORT_START) {
        calib_t0 = con_now();
    } else {
        calib_t1 = con_now();
        vm_finish(vm, VM_LOGIN, "calibration done");
    }
}

/* Seconds the loop took on /dev/kvm, or < 0 with err. */
static double calib_run(char *err, size_t errlen)
{
    static struct vm vm;
    struct console con;
    struct vm_config cfg = { .mem_bytes = 16u << 20, .cpus = 1,
                             .hide_unsafe_cpuid = cpuid_host_is_nested_pvm() };
    static const uint8_t code[] = {
        0xe6, CALIB_PORT_START,             /* out %al, $0xf4 */
        0xb9, CALIB_LOOPS & 0xff, (CALIB_LOOPS >> 8) & 0xff,
        (CALIB_LOOPS >> 16) & 0xff, CALIB_LOOPS >> 24,   /* mov $N, %ecx */
        0xff, 0xc9,                         /* 1: dec %ecx */
        0x75, 0xfc,                         /* jnz 1b */
        0xe6, CALIB_PORT_END,               /* out %al, $0xf5 */
        0xf4,                               /* hlt */
    };
    double secs = -1;
    calib_t0 = calib_t1 = 0;
    if (console_init(&con, "^$", NULL, err, errlen) < 0)
        return -1;
    if (vm_create(&vm, &cfg, &con, err, errlen) == 0 &&
        vm_io_register(&vm, CALIB_PORT_START, 2, false, calib_io, NULL) == 0 &&
        vm_setup_bsp(&vm, CALIB_CODE, 0, err, errlen) == 0) {
        memcpy(vm_guest_ptr(&vm, CALIB_CODE, sizeof(code)), code, sizeof(code));
        if (vm_run(&vm, 5.0) == VM_LOGIN && calib_t1 > calib_t0)
            secs = calib_t1 - calib_t0;
        else
            snprintf(err, errlen, "calibration guest did not finish in 5 s (%.400s)", vm.reason);
    }
    vm_destroy(&vm);
    console_close(&con);
    return secs;
}

static bool accel_have_qemu(void)
{
    const char *path = getenv("PATH");
    char buf[4096];
    for (const char *p = path ? path : "/usr/bin:/bin"; p && *p;) {
        size_t n = strcspn(p, ":");
        snprintf(buf, sizeof(buf), "%.*s/qemu-system-x86_64", (int)n, p);
        if (access(buf, X_OK) == 0)
            return true;
        p += n + (p[n] == ':');
    }
    return false;
}

bool accel_qemu_only(const struct vdboot_opts *o, char *why, size_t wlen)
{
    if (strcmp(o->disk_bus, "virtio"))
        snprintf(why, wlen, "--disk-bus %s: the built-in VMM emulates virtio-blk only",
                 o->disk_bus);
    else if (o->n_nics)
        snprintf(why, wlen, "%s: the built-in VMM has no network card",
                 o->domain ? "the domain's <interface>" : "--nic");
    else if (o->n_cdroms)
        snprintf(why, wlen, "the domain's CD-ROM: the built-in VMM has no CD-ROM drive");
    else if (o->n_extra)
        snprintf(why, wlen, "the domain's second disk: the built-in VMM has one disk");
    else
        return false;
    return true;
}

int accel_choose(const struct vdboot_opts *o, const struct boot_files *bf,
                 struct vdboot_result *r)
{
    (void)bf;
    if (strcmp(o->accel, "auto") != 0) {
        snprintf(r->accel, sizeof(r->accel), "%s", o->accel);
        snprintf(r->accel_why, sizeof(r->accel_why), "--accel %s", o->accel);
        return 0;
    }
    char err[512];
    int fd = -1;
    /* Hardware the built-in VMM lacks is qemu's, whatever /dev/kvm does:
     * no calibration guest is run for it. */
    if (accel_qemu_only(o, r->accel_why, sizeof(r->accel_why))) {
        snprintf(r->accel, sizeof(r->accel), "tcg");
    } else if (!strcmp(o->firmware, "uefi")) {
        snprintf(r->accel, sizeof(r->accel), "tcg");
        snprintf(r->accel_why, sizeof(r->accel_why),
                 "--firmware uefi: the built-in VMM has no UEFI firmware (SeaBIOS only)");
    } else if ((fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)) < 0) {
        if (!accel_have_qemu()) {
            result_error(r, "no accelerator: /dev/kvm cannot be opened and qemu-system-x86_64 "
                         "is not installed");
            return -1;
        }
        snprintf(r->accel, sizeof(r->accel), "tcg");
        snprintf(r->accel_why, sizeof(r->accel_why), "/dev/kvm cannot be opened");
    } else {
        close(fd);
        double s = calib_run(err, sizeof(err));
        bool fast = s >= 0 && s <= CALIB_MAX_SECONDS;
        if (fast || !accel_have_qemu()) {
            snprintf(r->accel, sizeof(r->accel), "kvm");
            snprintf(r->accel_why, sizeof(r->accel_why),
                     "calibration loop of %u iterations took %.4f s on /dev/kvm%s", CALIB_LOOPS,
                     s, fast ? "" : " (slow, but qemu-system-x86_64 is not installed)");
        } else {
            snprintf(r->accel, sizeof(r->accel), "tcg");
            snprintf(r->accel_why, sizeof(r->accel_why),
                     s >= 0 ? "calibration loop of %u iterations took %.3f s on /dev/kvm "
                              "(nested or software KVM: over %.3f s)"
                            : "calibration on /dev/kvm failed (%u, %.0f, %.0f)",
                     CALIB_LOOPS, s, CALIB_MAX_SECONDS);
        }
    }
    if (o->verbose)
        fprintf(stderr, "vdboot: accelerator %s: %s\n", r->accel, r->accel_why);
    return 0;
}
