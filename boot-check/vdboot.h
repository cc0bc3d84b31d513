/* vdboot.h - the parts of vdboot above the VMM: options, where the kernel
 * comes from, which accelerator runs it, and the result reported. */
#ifndef VDBOOT_H
#define VDBOOT_H

#include "vmm.h"

#include <stdio.h>

#define VDBOOT_DEFAULT_EXPECT "login: *$"
#define VDBOOT_DEFAULT_TIMEOUT 120
#define VDBOOT_DEFAULT_MEMORY 512
#define VDBOOT_MAX_BOOT_FILE (512ull << 20)
/* --firmware bios under --accel kvm: the build with the serial console
 * mirror (Debian's 128 KiB bios.bin has none) */
#define VDBOOT_SEABIOS "/usr/share/seabios/bios-256k.bin"

#define VDBOOT_MAX_IMAGES 256
#define VDBOOT_MAX_JOBS 64
#define VDBOOT_MAX_NICS 8
#define VDBOOT_MAX_CDROMS 4
#define VDBOOT_MAX_EXTRA_DISKS 4
/* After --timeout, this long for the vCPU threads or qemu to stop before a
 * watchdog ends the process with the timeout outcome anyway. */
#define VDBOOT_WATCHDOG_GRACE 10.0
/* --shutdown acpi: how long the guest has to power off after the press */
#define VDBOOT_SHUTDOWN_WAIT 60.0

struct vdboot_opts {
    const char *image, *format, *kernel, *initrd, *append, *accel, *expect, *console;
    const char **images;       /* every IMAGE argument; `image` is the one booting */
    int n_images, jobs;
    const char *junit;         /* --junit FILE */
    const char *run, *login, *password_file;   /* --run CMD as --login USER */
    const char *firmware;      /* direct (vdboot loads the kernel), bios, uefi, auto */
    const char *disk_bus;      /* virtio, sata, scsi, ide */
    const char *scsi_hba;      /* qemu's SCSI controller (--domain), NULL: virtio-scsi-pci */
    const char *domain;        /* --domain FILE, or NULL */
    /* qemu only: NICs on user networking (model "" = qemu's default) and
     * CD-ROMs (--domain: file or "" for an empty tray, on ide/sata/scsi) */
    const char *nic_models[VDBOOT_MAX_NICS];
    int n_nics;
    const char *cdroms[VDBOOT_MAX_CDROMS], *cdrom_bus[VDBOOT_MAX_CDROMS];
    int n_cdroms;
    /* --domain: its further <disk device='disk'>s, each opened through
     * vdisk like the boot disk and given to qemu as an NBD export */
    const char *extra_disks[VDBOOT_MAX_EXTRA_DISKS], *extra_format[VDBOOT_MAX_EXTRA_DISKS];
    const char *extra_bus[VDBOOT_MAX_EXTRA_DISKS];
    int n_extra;
    bool tap;
    double timeout;
    unsigned long long memory_mib;
    int cpus;
    bool json, verbose;
    bool guest_decompress;     /* kvm: let the kernel decompress itself */
    bool shutdown_acpi;        /* --shutdown acpi: press the power button at the end */
    char password[256];        /* from --password-file */
};

/* Plain data only: with several images each boot runs in a child process
 * that fills its result in shared memory. */
struct vdboot_result {
    enum vm_outcome outcome;
    char image[1024];
    char format[32];
    char firmware[16];         /* "direct": vdboot loads the kernel itself */
    char disk_bus[16];         /* "virtio", or "" without an image */
    char console_path[1024];   /* --console transcript file, or "" */
    char prompt_seen_on[8];    /* "serial" or "vga" (firmware boots under qemu) */
    char reason[1024];
    char accel[16];
    char accel_why[256];
    double seconds, first_byte_seconds;
    char kernel_version[128];
    char kernel_source[512];
    char cmdline[4096];
    char event_line[CON_LINE_MAX];
    char tail[CON_TAIL_LINES * (CON_LINE_MAX + 8)];
    char shutdown[512];        /* --shutdown acpi: what the guest did, or "" */
    char run_command[1024], run_user[64];
    int run_exit_status;       /* -1: the command did not finish */
    char run_output[CON_RUN_OUTPUT_MAX];
    size_t run_output_len;
    bool run_output_truncated;
};

/* The kernel, initrd and command line to boot, wherever they came from. */
struct boot_files {
    struct boot_image bi;
    char cmdline[4096];
    char source[512];          /* "image:/boot/vmlinuz-6.1 (grub.cfg)" or a path */
    char kernel_path[4096];    /* a host file holding the kernel (tcg needs one) */
    char initrd_path[4096];
    char tmpdir[256];          /* where discovered files were written, or "" */
};

/* report.c: text, JSON (one object a line), JUnit XML, TAP */
extern const char *const vdboot_outcome_names[];
extern const int vdboot_outcome_exit[];
void report_text(const struct vdboot_result *r);
void report_json(FILE *f, const struct vdboot_result *r);
int report_junit(const char *path, const struct vdboot_result *rs, int n, double seconds);
void report_tap(FILE *f, const struct vdboot_result *rs, int n);

/* boot.c: --kernel/--initrd or discovery; sets r->outcome = error on failure */
/* domain.c: --domain FILE sets the image, format, bus, memory, vCPUs and
 * firmware of `o` from a libvirt domain; -1 with one line printed. */
int domain_load(const char *path, struct vdboot_opts *o);
/* A qemu NIC model vdboot attaches (virtio-net-pci, e1000, e1000e, rtl8139,
 * vmxnet3, pcnet): the same string, or NULL. */
const char *vdboot_nic_model(const char *qemu_model);
int boot_files_get(const struct vdboot_opts *o, struct boot_files *bf, struct vdboot_result *r);
void boot_files_free(struct boot_files *bf);
int read_whole_file(const char *path, uint8_t **out, size_t *len, char *err, size_t errlen);
void result_error(struct vdboot_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void result_take_console(struct vdboot_result *r, const struct console *c);
/* The outcome of a console event (CON_MATCH, CON_PANIC, CON_DONE) with
 * its reason; VM_RUNNING for none. */
enum vm_outcome result_console_event(const struct console *c, enum con_event ev, char *reason,
                                     size_t rlen);
/* --run: arm the console's session (password read by main.c) */
void result_arm_run(const struct vdboot_opts *o, struct console *c);

/* discover.c: find the kernel in the image's /boot; for --firmware auto,
 * "uefi" when the partition table has an EFI system partition, else "bios" */
const char *discover_firmware(const char *image, const char *format, char *why, size_t whylen);
int discover_boot(const char *image, const char *format, struct boot_files *bf,
                  char *err, size_t errlen);

/* accel.c: --accel kvm|tcg|auto; fills r->accel and r->accel_why */
int accel_choose(const struct vdboot_opts *o, const struct boot_files *bf,
                 struct vdboot_result *r);
/* Why only qemu can run this hardware (a bus not virtio, a NIC, a CD-ROM):
 * true with `why` filled, false when the built-in VMM can. */
bool accel_qemu_only(const struct vdboot_opts *o, char *why, size_t wlen);

/* boot-kvm.c / tcg.c: one boot, result in r */
void run_kvm(const struct vdboot_opts *o, const struct boot_files *bf, struct vdboot_result *r);
void run_tcg(const struct vdboot_opts *o, const struct boot_files *bf, struct vdboot_result *r);

#endif
