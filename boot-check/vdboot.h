/* vdboot.h - the parts of vdboot above the VMM: options, where the kernel
 * comes from, which accelerator runs it, and the result reported. */
#ifndef VDBOOT_H
#define VDBOOT_H

#include "vmm.h"

#define VDBOOT_DEFAULT_EXPECT "login: *$"
#define VDBOOT_DEFAULT_TIMEOUT 120
#define VDBOOT_DEFAULT_MEMORY 512
#define VDBOOT_MAX_BOOT_FILE (512ull << 20)

struct vdboot_opts {
    const char *image, *format, *kernel, *initrd, *append, *accel, *expect, *console;
    double timeout;
    unsigned long long memory_mib;
    int cpus;
    bool json, verbose;
    bool guest_decompress;     /* kvm: let the kernel decompress itself */
};

struct vdboot_result {
    enum vm_outcome outcome;
    char reason[1024];
    char accel[8];
    char accel_why[256];
    double seconds, first_byte_seconds;
    char kernel_version[128];
    char kernel_source[512];
    char cmdline[4096];
    char event_line[CON_LINE_MAX];
    char tail[CON_TAIL_LINES * (CON_LINE_MAX + 8)];
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

/* boot.c: --kernel/--initrd or discovery; sets r->outcome = error on failure */
int boot_files_get(const struct vdboot_opts *o, struct boot_files *bf, struct vdboot_result *r);
void boot_files_free(struct boot_files *bf);
int read_whole_file(const char *path, uint8_t **out, size_t *len, char *err, size_t errlen);
void result_error(struct vdboot_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void result_take_console(struct vdboot_result *r, const struct console *c);

/* discover.c: find the kernel in the image's /boot */
int discover_boot(const char *image, const char *format, struct boot_files *bf,
                  char *err, size_t errlen);

/* accel.c: --accel kvm|tcg|auto; fills r->accel and r->accel_why */
int accel_choose(const struct vdboot_opts *o, const struct boot_files *bf,
                 struct vdboot_result *r);

/* boot-kvm.c / tcg.c: one boot, result in r */
void run_kvm(const struct vdboot_opts *o, const struct boot_files *bf, struct vdboot_result *r);
void run_tcg(const struct vdboot_opts *o, const struct boot_files *bf, struct vdboot_result *r);

#endif
