/* vmm.h - the built-in VMM of vdboot: shared types between the VM core
 * (kvm.c), the devices (one file each) and the boot loader.
 *
 * Guest physical layout (low memory), chosen like kvmtool/Firecracker:
 *   0x0500  GDT                      0x7000  boot_params (zero page)
 *   0x9000  PML4, 0xa000 PDPT, 0xb000-0xefff four PDs: identity map of 4 GiB
 *   0x20000 kernel command line      0x9fc00 MP floating pointer + table
 *   0xe0000 ACPI tables (RSDP first)
 *   0x100000 protected-mode kernel   top of low RAM: initrd
 */
#ifndef VDBOOT_VMM_H
#define VDBOOT_VMM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "console.h"

#define VM_MAX_CPUS 8
#define VM_GDT_ADDR 0x500ul
#define VM_BOOT_PARAMS 0x7000ul
#define VM_PML4 0x9000ul
#define VM_CMDLINE 0x20000ul
#define VM_CMDLINE_MAX 4096ul
#define VM_MPTABLE 0x9fc00ul
#define VM_ACPI 0xe0000ul
#define VM_KERNEL 0x100000ul
#define VM_LOW_END 0xc0000000ull     /* RAM above this moves to 4 GiB */
#define VM_HIGH_BASE 0x100000000ull
/* PCI slot N INTA -> this ISA IRQ: the same GSI drives PIC input and IOAPIC
 * pin N in KVM's default routing, so a kernel without MP/ACPI parsing (the
 * Debian cloud kernel has CONFIG_X86_MPPARSE off) works on the PIC from the
 * config space Interrupt Line, and one with it on the IOAPIC. */
#define VM_PCI_IRQS { 0, 10, 11, 9, 5, 0, 0, 0 }
#define VM_PCI_MAX_SLOTS 8
int vm_pci_slot_irq(int slot);   /* pci.c: 0 = none */

struct vm;

/* One trap signature for port I/O and MMIO: `addr` is the port or the guest
 * physical address, `data` holds `len` bytes (written by the guest, or to
 * be filled on a read). */
typedef void (*vm_io_fn)(struct vm *vm, void *opaque, uint64_t addr,
                         uint8_t *data, unsigned len, bool is_write);

struct vm_io_range {
    uint64_t base, len;
    bool mmio;
    vm_io_fn fn;
    void *opaque;
};

struct vcpu {
    struct vm *vm;
    int id, fd;
    struct kvm_run *run;
    pthread_t thread;
    bool started;
    volatile int check_halt;   /* main thread asks: are you dead-halted? */
    int halted_checks;         /* consecutive checks found halted, IF=0 */
    uint64_t int3_injected;    /* #BP raised for the nested KVM (kvm.c) */
    uint64_t fwait_skipped;    /* fwait stepped over for it */
    uint64_t exits;            /* KVM_RUN returns to the loop (for -v) */
    uint64_t last_rip;         /* sampled by the halt check, for -v */
    uint32_t last_mp_state;
};

/* Why the run ended (see main.c for the exit codes). */
/* VM_CHECK_FAILED: logged in, but the --run command exited non-zero.
 * VM_POWEROFF: the guest powered itself off (ACPI S5) before a match, or
 * while the --run command ran. */
enum vm_outcome { VM_RUNNING = 0, VM_LOGIN, VM_PANIC, VM_TIMEOUT, VM_ERROR, VM_CHECK_FAILED,
                  VM_POWEROFF };

struct vm_config {
    uint64_t mem_bytes;
    int cpus;
    bool verbose;
    bool hide_unsafe_cpuid;    /* hide cx16/xsave (nested kvm_pvm) */
    bool firmware;             /* --firmware bios: SeaBIOS from the reset vector */
    double shutdown_wait;      /* > 0: --shutdown acpi, wait this long */
};

struct vm {
    struct vm_config cfg;
    int kvm_fd, fd;
    uint8_t *mem;
    uint64_t mem_size, low_size;   /* total RAM; RAM below VM_LOW_END */
    int run_size;
    struct vcpu cpu[VM_MAX_CPUS];
    struct vm_io_range io[48];
    int n_io;
    struct console *con;
    pthread_mutex_t lock;          /* devices are serialized by this */
    pthread_cond_t done_cond;
    volatile int outcome;          /* enum vm_outcome; first writer wins */
    char reason[512];
    /* --shutdown acpi: the end (login, --run done, timeout) is kept here,
     * the power button pressed, and the run goes on until the guest powers
     * off or shutdown_wait passes.  Phase 0 running, 1 to press, 2 pressed. */
    int end_phase;
    enum vm_outcome end_outcome;
    char end_reason[512];
    double t_pressed;
    uint64_t unhandled_io;
    void *blk;                     /* the virtio-blk state, if any */
    char boot_note[300];           /* how the kernel was loaded (for -v) */
    bool cpuid_xsave_visible;      /* hiding XSAVE in CPUID did not take */
    bool cpuid_smap_visible;       /* nested kvm_pvm shows SMAP */
    void (*poll)(struct vm *vm);   /* called by vm_run every 100 ms, unlocked */
    uint8_t *rom;                  /* the firmware image below 4 GiB, or NULL */
    uint64_t rom_size;
};

/* ---- kvm.c ---- */
int vm_create(struct vm *vm, const struct vm_config *cfg, struct console *con,
              char *err, size_t errlen);
void vm_destroy(struct vm *vm);
void *vm_guest_ptr(struct vm *vm, uint64_t gpa, uint64_t len);
int vm_io_register(struct vm *vm, uint64_t base, uint64_t len, bool mmio,
                   vm_io_fn fn, void *opaque);
void vm_irq_line(struct vm *vm, int irq, int level);
/* Ends the run with `o` unless it already ended (then false); printf-style
 * reason. */
bool vm_finish(struct vm *vm, enum vm_outcome o, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int vm_setup_bsp(struct vm *vm, uint64_t entry, uint64_t boot_params,
                 char *err, size_t errlen);
/* Runs every vCPU until an outcome or `timeout_s` elapses. */
enum vm_outcome vm_run(struct vm *vm, double timeout_s);

/* ---- cpuid.c ---- */
int cpuid_setup(struct vm *vm, struct vcpu *c, char *err, size_t errlen);
bool cpuid_host_is_nested_pvm(void);

/* ---- bzimage.c ---- */
struct boot_image {
    uint8_t *kernel; size_t kernel_len;
    uint8_t *initrd; size_t initrd_len;
    const char *cmdline;
    char version[128];             /* from the setup header, or "" */
    bool host_decompress;          /* try vmlinux.c before the bzImage entry */
};
/* 0, or -1 with the header field at fault (also for truncated files) */
int bzimage_check(const uint8_t *k, size_t len, char *err, size_t errlen);
int bzimage_read_version(const uint8_t *k, size_t len, char *out, size_t outlen);
int bzimage_load(struct vm *vm, const struct boot_image *bi, uint64_t *entry,
                 char *err, size_t errlen);
/* vmlinux.c: decompress the payload on the host and load the ELF; 0 with
 * the physical entry and end, or -1 with the reason (then boot the bzImage) */
int vmlinux_load(struct vm *vm, const uint8_t *k, size_t klen, size_t setup, uint64_t *entry,
                 uint64_t *end, char *err, size_t errlen);

/* ---- devices: each has init (0 or -1 with err) and exit ---- */
struct vm_device {
    const char *name;
    int (*init)(struct vm *vm, char *err, size_t errlen);
    void (*exit)(struct vm *vm);
};
extern const struct vm_device serial_device, ports_device, pci_device, acpi_device;
/* firmware boots only (registered before ports_device, which lists 0x70
 * and 0x510 as unmodelled for direct boots: the first range wins) */
extern const struct vm_device cmos_device, fw_cfg_device, debugcon_device;

/* firmware.c: maps the BIOS image (SeaBIOS) at the top of 4 GiB, read-only,
 * and its last 128 KiB at 0xe0000-0xfffff; vCPU 0 starts at the reset
 * vector.  0, or -1 with the file and the field at fault. */
int firmware_load(struct vm *vm, const char *path, char *err, size_t errlen);
/* debugcon.c: the last line the firmware wrote to its debug port, or "" */
const char *debugcon_last_line(void);

/* pci.c */
struct pci_dev {
    uint16_t vendor, device, subsys_vendor, subsys_id;
    uint32_t class_code;           /* class << 16 | subclass << 8 | prog-if */
    uint8_t revision;
    uint32_t bar0_size;            /* I/O BAR 0 (0 = none) */
    uint16_t bar0_port;            /* where vdboot places it */
    int slot;                      /* assigned by pci_add */
    vm_io_fn bar0_io;              /* called with the offset in the BAR */
    uint8_t cfg[256];
    void *opaque;
};
int pci_add(struct vm *vm, struct pci_dev *d);
int pci_dev_irq(const struct pci_dev *d);

/* virtio-blk.c: the device backed by a disk (see disk.h) */
struct disk;
int virtio_blk_init(struct vm *vm, struct disk *dk, char *err, size_t errlen);
void virtio_blk_exit(struct vm *vm);

/* mptable.c */
int mptable_write(struct vm *vm, char *err, size_t errlen);

/* acpi.c: the tables at VM_ACPI (RSDP, RSDT, XSDT, FADT, FACS, MADT, DSDT);
 * acpi_device models the PM1 registers (poweroff by ACPI S5) */
int acpi_write(struct vm *vm, char *err, size_t errlen);
/* The same tables at `base` (a firmware boot: fw_cfg.c hands SeaBIOS the
 * RSDP, the rest stays in RAM the e820 map reserves); the RSDP is the
 * first VM_ACPI_RSDP_LEN bytes. */
#define VM_ACPI_AREA 0x1000
#define VM_ACPI_RSDP_LEN 36
int acpi_write_at(struct vm *vm, uint64_t base, char *err, size_t errlen);
/* Presses the fixed-feature power button: PWRBTN_STS, and the SCI if the
 * guest enabled it (thread-safe). */
void acpi_power_button(struct vm *vm);

#endif
