/* boot-kvm.c - one boot on the built-in VMM: create the VM, start its
 * devices in order (unwound in reverse on failure), load the kernel by the
 * boot protocol, run until the console decides or the clock runs out. */
#include "vdboot.h"
#include "disk.h"
#include "vga.h"

#include <stdio.h>
#include <string.h>

static const struct vm_device *const kvm_devices[] = {
    &ports_device, &serial_device, &pci_device, &acpi_device,
};
/* A firmware boot adds what SeaBIOS reads before the ports it shadows
 * (0x70 and 0x510 are listed as unmodelled in ports.c). */
static const struct vm_device *const kvm_fw_devices[] = {
    &cmos_device, &fw_cfg_device, &debugcon_device,
    &ports_device, &serial_device, &pci_device, &acpi_device,
};
#define N_DEVICES (sizeof(kvm_devices) / sizeof(kvm_devices[0]))
#define N_FW_DEVICES (sizeof(kvm_fw_devices) / sizeof(kvm_fw_devices[0]))

/* A firmware boot's VGA text window (plain RAM here: no VGA is modelled,
 * so what the kernel's vgacon or a getty on tty1 writes stays there), read
 * once a second by vm_run's poll hook and matched like the serial console:
 * a guest whose boot entry names no serial console is seen at its prompt
 * (without --run, which types on the serial console). */
static struct kvm_screen {
    struct vga_screen vga;
    struct console con;
    bool on, seen;             /* watched; the outcome came from it */
} kscr;

static void kvm_screen_poll(struct vm *vm)
{
    static uint8_t cells[VGA_TEXT_BYTES];
    const uint8_t *g = vm_guest_ptr(vm, VGA_TEXT_BASE, VGA_TEXT_BYTES);
    if (!g)
        return;
    memcpy(cells, g, sizeof(cells));   /* a snapshot: the guest writes on */
    char reason[512];
    enum vm_outcome o = result_console_event(&kscr.con, vga_poll_cells(&kscr.vga, cells, &kscr.con),
                                             reason, sizeof(reason));
    if (o != VM_RUNNING && vm_finish(vm, o, "%s on the VGA text console", reason))
        kscr.seen = true;
}

/* On a nested kvm_pvm, what CPUID cannot hide is turned off on the kernel
 * command line: XSAVE ("noxsave") and, with clearcpuid=, the features whose
 * instructions Linux patches in and the nested KVM fails to emulate.  Seen
 * failing here: clac (SMAP, at an exception entry) and popcnt (f3 48 0f b8);
 * the others are the same kind of non-baseline instruction and are cleared
 * as a precaution.  Appended once, reported in --json's cmdline. */
#define PVM_CLEARCPUID "clearcpuid=smap,popcnt,fsgsbase,rdpid,invpcid,pcid,movbe,rdrand," \
                       "rdseed,bmi1,bmi2,adx,sse4_2,aes,pclmulqdq,sha_ni"

static void kvm_boot_extra_args(const struct vm *vm, char *cmd, size_t size)
{
    bool pvm = vm->cfg.hide_unsafe_cpuid;
    const char *add[2] = { vm->cpuid_xsave_visible ? "noxsave" : NULL,
                           pvm ? PVM_CLEARCPUID : NULL };
    for (int i = 0; i < 2; i++) {
        size_t n = strlen(cmd);
        if (add[i] && !strstr(cmd, i == 0 ? "noxsave" : "clearcpuid="))
            snprintf(cmd + n, size - n, "%s%s", n ? " " : "", add[i]);
    }
}

static int kvm_boot_setup(struct vm *vm, const struct vdboot_opts *o, const struct boot_files *bf,
                          struct disk *dk, char *err, size_t errlen)
{
    if (o->image) {
        if (disk_open(dk, o->image, o->format, err, errlen) < 0)
            return -1;
        if (virtio_blk_init(vm, dk, err, errlen) < 0)
            return -1;
    }
    if (vm->cfg.firmware)
        return firmware_load(vm, VDBOOT_SEABIOS, err, errlen);
    uint64_t entry;
    struct boot_image bi = bf->bi;
    bi.host_decompress = !o->guest_decompress;
    /* A nested kvm_pvm cannot run xsave/xrstor and will not hide XSAVE in
     * CPUID: tell Linux not to use it (x86 early parameter "noxsave"). */
    static char cmd[4200];
    snprintf(cmd, sizeof(cmd), "%s", bf->cmdline);
    kvm_boot_extra_args(vm, cmd, sizeof(cmd));
    bi.cmdline = cmd;
    if (mptable_write(vm, err, errlen) < 0 || acpi_write(vm, err, errlen) < 0 ||
        bzimage_load(vm, &bi, &entry, err, errlen) < 0 ||
        vm_setup_bsp(vm, entry, VM_BOOT_PARAMS, err, errlen) < 0)
        return -1;
    return 0;
}

void run_kvm(const struct vdboot_opts *o, const struct boot_files *bf, struct vdboot_result *r)
{
    static struct vm vm;
    struct console con;
    struct disk dk = { 0 };
    char err[1024] = "";
    size_t started = 0;
    struct vm_config cfg = {
        .mem_bytes = (uint64_t)o->memory_mib << 20, .cpus = o->cpus, .verbose = o->verbose,
        .hide_unsafe_cpuid = cpuid_host_is_nested_pvm(),
        .firmware = strcmp(o->firmware, "direct") != 0,
        .shutdown_wait = o->shutdown_acpi ? VDBOOT_SHUTDOWN_WAIT : 0,
    };
    const struct vm_device *const *devices = cfg.firmware ? kvm_fw_devices : kvm_devices;
    size_t n_devices = cfg.firmware ? N_FW_DEVICES : N_DEVICES;
    if (console_init(&con, o->expect, o->console, err, sizeof(err)) < 0) {
        result_error(r, "%s", err);
        return;
    }
    result_arm_run(o, &con);
    if (vm_create(&vm, &cfg, &con, err, sizeof(err)) < 0)
        goto out;
    kscr.on = kscr.seen = false;
    /* not with --run: its login is typed on the serial console, which must
     * be the one that ends the boot */
    if (cfg.firmware && !o->run) {
        if (console_init(&kscr.con, o->expect, NULL, err, sizeof(err)) < 0)
            goto out;
        vga_init_mem(&kscr.vga);
        kscr.on = true;
        vm.poll = kvm_screen_poll;
    }
    for (; started < n_devices; started++)
        if (devices[started]->init(&vm, err, sizeof(err)) < 0) {
            if (!err[0])
                snprintf(err, sizeof(err), "device %s failed to start", devices[started]->name);
            goto out;
        }
    if (kvm_boot_setup(&vm, o, bf, &dk, err, sizeof(err)) < 0)
        goto out;
    if (o->verbose)
        fprintf(stderr, "vdboot: kvm: %d vCPU, %llu MiB, cmdline '%s'%s%s; kernel: %s\n", o->cpus,
                o->memory_mib, bf->cmdline, cfg.hide_unsafe_cpuid ?
                ", cx16/xsave hidden in CPUID (nested kvm_pvm)" : "",
                vm.cpuid_xsave_visible || vm.cpuid_smap_visible ?
                    ", CPUID filtering ignored: noxsave clearcpuid=... appended" : "",
                vm.boot_note);
    if (!cfg.firmware)
        kvm_boot_extra_args(&vm, r->cmdline, sizeof(r->cmdline));  /* what the guest got */
    r->outcome = vm_run(&vm, o->timeout);
    snprintf(r->reason, sizeof(r->reason), "%s", vm.reason);
    /* where the firmware was when nothing matched: its last log line */
    if (cfg.firmware && r->outcome == VM_TIMEOUT && debugcon_last_line()[0]) {
        size_t n = strlen(r->reason);
        snprintf(r->reason + n, sizeof(r->reason) - n, " (firmware's last log line: \"%s\")",
                 debugcon_last_line());
    }
    if (kscr.on && !kscr.seen && kscr.vga.seen_text && r->outcome != VM_LOGIN &&
        r->outcome != VM_CHECK_FAILED) {
        size_t n = strlen(r->reason);
        snprintf(r->reason + n, sizeof(r->reason) - n, " (VGA screen's last line: \"%s\")",
                 console_last_line(&kscr.con));
    }
    if (kscr.seen)
        snprintf(r->prompt_seen_on, sizeof(r->prompt_seen_on), "vga");
    r->seconds = con_now() - con.t_start;
    if (vm.end_phase == 2) {
        /* --shutdown acpi: the run's result is the end it reached; what
         * the guest did with the power button is told beside it */
        if (r->outcome == VM_POWEROFF)
            snprintf(r->shutdown, sizeof(r->shutdown), "acpi: the guest powered off %.2f s "
                     "after vdboot pressed the power button", con_now() - vm.t_pressed);
        else
            snprintf(r->shutdown, sizeof(r->shutdown), "acpi: vdboot pressed the power button; "
                     "%s: %.200s", r->outcome == VM_TIMEOUT ? "the guest did not power off" :
                     "the guest did not power off cleanly", vm.reason);
        r->outcome = vm.end_outcome;
        snprintf(r->reason, sizeof(r->reason), "%s", vm.end_reason);
        r->seconds = vm.t_pressed - con.t_start;
    }
    if (o->verbose && vm.unhandled_io)
        fprintf(stderr, "vdboot: %llu accesses to unmodelled ports/MMIO\n",
                (unsigned long long)vm.unhandled_io);
out:
    if (err[0])
        result_error(r, "%s", err);
    result_take_console(r, kscr.seen ? &kscr.con : &con);
    if (kscr.seen && !r->kernel_version[0] && con.kernel_version[0])
        snprintf(r->kernel_version, sizeof(r->kernel_version), "%s", con.kernel_version);
    if (kscr.on)
        console_close(&kscr.con);
    kscr.on = false;
    virtio_blk_exit(&vm);
    while (started > 0) {
        started--;
        if (devices[started]->exit)
            devices[started]->exit(&vm);
    }
    if (dk.img)
        disk_close(&dk);
    vm_destroy(&vm);
    console_close(&con);
}
