/* kvm.c - the VM core: /dev/kvm setup, guest memory, vCPUs in 64-bit mode,
 * the I/O dispatch table and the vCPU exit loop.
 *
 * The irqchip (PIC, IOAPIC, LAPICs) and the PIT live in the kernel
 * (KVM_CREATE_IRQCHIP/PIT2), so HLT, timers and SIPIs never reach us; a
 * vCPU exits to this loop only for port I/O and MMIO to our devices, for a
 * triple fault (KVM_EXIT_SHUTDOWN) and for reset/poweroff. */
#include "vmm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define KVM_TSS_ADDR 0xfffbd000ul
#define KVM_IDMAP_ADDR 0xfffbc000ul
#define VM_KICK_SIGNAL SIGUSR1
#define HALT_CHECKS_DEAD 3     /* 3 checks, 100 ms apart */

static void kvm_kick_handler(int sig) { (void)sig; }

bool vm_finish(struct vm *vm, enum vm_outcome o, const char *fmt, ...)
{
    bool first = false;
    pthread_mutex_lock(&vm->lock);
    bool end = o == VM_LOGIN || o == VM_CHECK_FAILED || o == VM_TIMEOUT;
    if (vm->outcome == VM_RUNNING && vm->cfg.shutdown_wait > 0 && vm->end_phase == 0 && end) {
        /* --shutdown acpi: keep the end, let vm_run press the button */
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(vm->end_reason, sizeof(vm->end_reason), fmt, ap);
        va_end(ap);
        vm->end_outcome = o;
        vm->end_phase = 1;
        first = true;
        pthread_cond_broadcast(&vm->done_cond);
    } else if (vm->outcome == VM_RUNNING && vm->end_phase > 0 && o != VM_TIMEOUT && end) {
        /* after the press only the guest's going away ends the run */
    } else if (vm->outcome == VM_RUNNING) {
        first = true;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(vm->reason, sizeof(vm->reason), fmt, ap);
        va_end(ap);
        vm->outcome = o;
        pthread_cond_broadcast(&vm->done_cond);
    }
    pthread_mutex_unlock(&vm->lock);
    return first;
}

void *vm_guest_ptr(struct vm *vm, uint64_t gpa, uint64_t len)
{
    if (len > vm->mem_size)
        return NULL;
    if (gpa < vm->low_size && len <= vm->low_size - gpa)
        return vm->mem + gpa;
    if (gpa >= VM_HIGH_BASE && gpa - VM_HIGH_BASE < vm->mem_size - vm->low_size &&
        len <= vm->mem_size - vm->low_size - (gpa - VM_HIGH_BASE))
        return vm->mem + vm->low_size + (gpa - VM_HIGH_BASE);
    return NULL;
}

int vm_io_register(struct vm *vm, uint64_t base, uint64_t len, bool mmio,
                   vm_io_fn fn, void *opaque)
{
    if (vm->n_io >= (int)(sizeof(vm->io) / sizeof(vm->io[0])))
        return -1;
    vm->io[vm->n_io++] = (struct vm_io_range){ base, len, mmio, fn, opaque };
    return 0;
}

void vm_irq_line(struct vm *vm, int irq, int level)
{
    struct kvm_irq_level l = { .irq = (uint32_t)irq, .level = (uint32_t)level };
    ioctl(vm->fd, KVM_IRQ_LINE, &l);
}

static void kvm_dispatch(struct vm *vm, uint64_t addr, uint8_t *data,
                         unsigned len, bool is_write, bool mmio)
{
    for (int i = 0; i < vm->n_io; i++) {
        struct vm_io_range *r = &vm->io[i];
        if (r->mmio == mmio && addr >= r->base && addr - r->base < r->len) {
            r->fn(vm, r->opaque, addr, data, len, is_write);
            return;
        }
    }
    /* Nothing there: reads float high, like an empty bus. */
    if (!is_write)
        memset(data, 0xff, len);
    __atomic_add_fetch(&vm->unhandled_io, 1, __ATOMIC_RELAXED);
    if (vm->cfg.verbose)
        fprintf(stderr, "vdboot: unhandled %s %s 0x%llx len %u\n",
                mmio ? "mmio" : "port", is_write ? "write" : "read",
                (unsigned long long)addr, len);
}

static int kvm_mem_setup(struct vm *vm, char *err, size_t errlen)
{
    vm->mem_size = vm->cfg.mem_bytes;
    vm->low_size = vm->mem_size < VM_LOW_END ? vm->mem_size : VM_LOW_END;
    vm->mem = mmap(NULL, vm->mem_size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (vm->mem == MAP_FAILED) {
        vm->mem = NULL;
        snprintf(err, errlen, "cannot map %llu MiB of guest memory: %s",
                 (unsigned long long)(vm->mem_size >> 20), strerror(errno));
        return -1;
    }
    madvise(vm->mem, vm->mem_size, MADV_MERGEABLE);
    struct kvm_userspace_memory_region r = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = vm->low_size,
        .userspace_addr = (uintptr_t)vm->mem,
    };
    if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
        goto fail;
    if (vm->mem_size > vm->low_size) {
        r.slot = 1;
        r.guest_phys_addr = VM_HIGH_BASE;
        r.memory_size = vm->mem_size - vm->low_size;
        r.userspace_addr = (uintptr_t)(vm->mem + vm->low_size);
        if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
            goto fail;
    }
    return 0;
fail:
    snprintf(err, errlen, "KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
    return -1;
}

static int kvm_vcpu_create(struct vm *vm, int id, char *err, size_t errlen)
{
    struct vcpu *c = &vm->cpu[id];
    c->vm = vm;
    c->id = id;
    c->fd = ioctl(vm->fd, KVM_CREATE_VCPU, (unsigned long)id);
    if (c->fd < 0) {
        snprintf(err, errlen, "KVM_CREATE_VCPU %d: %s", id, strerror(errno));
        return -1;
    }
    c->run = mmap(NULL, (size_t)vm->run_size, PROT_READ | PROT_WRITE,
                  MAP_SHARED, c->fd, 0);
    if (c->run == MAP_FAILED) {
        c->run = NULL;
        snprintf(err, errlen, "mmap kvm_run of vCPU %d: %s", id, strerror(errno));
        return -1;
    }
    return cpuid_setup(vm, c, err, errlen);
}

int vm_create(struct vm *vm, const struct vm_config *cfg, struct console *con,
              char *err, size_t errlen)
{
    memset(vm, 0, sizeof(*vm));
    vm->cfg = *cfg;
    vm->con = con;
    vm->kvm_fd = vm->fd = -1;
    pthread_mutex_init(&vm->lock, NULL);
    pthread_cond_init(&vm->done_cond, NULL);
    for (int i = 0; i < VM_MAX_CPUS; i++)
        vm->cpu[i].fd = -1;
    vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0) {
        snprintf(err, errlen, "/dev/kvm: %s", strerror(errno));
        return -1;
    }
    if (ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
        snprintf(err, errlen, "/dev/kvm: unexpected KVM API version");
        return -1;
    }
    vm->fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    vm->run_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (vm->fd < 0 || vm->run_size <= 0) {
        snprintf(err, errlen, "KVM_CREATE_VM: %s", strerror(errno));
        return -1;
    }
    struct kvm_pit_config pit = { .flags = 0 };
    uint64_t idmap = KVM_IDMAP_ADDR;
    if (ioctl(vm->fd, KVM_SET_TSS_ADDR, KVM_TSS_ADDR) < 0 ||
        ioctl(vm->fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0 ||
        ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0) < 0 ||
        ioctl(vm->fd, KVM_CREATE_PIT2, &pit) < 0) {
        snprintf(err, errlen, "KVM irqchip/PIT setup: %s", strerror(errno));
        return -1;
    }
    if (kvm_mem_setup(vm, err, errlen) < 0)
        return -1;
    for (int i = 0; i < cfg->cpus; i++)
        if (kvm_vcpu_create(vm, i, err, errlen) < 0)
            return -1;
    return 0;
}

void vm_destroy(struct vm *vm)
{
    for (int i = 0; i < VM_MAX_CPUS; i++) {
        if (vm->cpu[i].run)
            munmap(vm->cpu[i].run, (size_t)vm->run_size);
        if (vm->cpu[i].fd >= 0)
            close(vm->cpu[i].fd);
    }
    if (vm->mem)
        munmap(vm->mem, vm->mem_size);
    if (vm->rom)
        munmap(vm->rom, vm->rom_size);
    if (vm->fd >= 0)
        close(vm->fd);
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
    pthread_mutex_destroy(&vm->lock);
    pthread_cond_destroy(&vm->done_cond);
}

static void kvm_seg(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code64)
{
    *s = (struct kvm_segment){
        .base = 0, .limit = 0xffffffff, .selector = sel, .type = type,
        .present = 1, .dpl = 0, .db = code64 ? 0 : 1, .s = 1,
        .l = code64 ? 1 : 0, .g = 1,
    };
}

/* The boot protocol's 64-bit entry: long mode, paging on with an identity
 * map of the low 4 GiB, __BOOT_CS=0x10 / __BOOT_DS=0x18, %rsi = zero page. */
int vm_setup_bsp(struct vm *vm, uint64_t entry, uint64_t boot_params,
                 char *err, size_t errlen)
{
    uint64_t *gdt = vm_guest_ptr(vm, VM_GDT_ADDR, 5 * 8);
    uint64_t *pt = vm_guest_ptr(vm, VM_PML4, 6 * 4096);
    if (!gdt || !pt) {
        snprintf(err, errlen, "guest memory too small for the boot page tables");
        return -1;
    }
    gdt[0] = gdt[1] = 0;
    gdt[2] = 0x00af9b000000ffffull;   /* 0x10: 64-bit code */
    gdt[3] = 0x00cf93000000ffffull;   /* 0x18: data */
    gdt[4] = 0;
    memset(pt, 0, 6 * 4096);
    pt[0] = (VM_PML4 + 0x1000) | 3;                       /* PML4 -> PDPT */
    for (int i = 0; i < 4; i++)
        pt[512 + i] = (VM_PML4 + 0x2000 + 0x1000ul * i) | 3; /* PDPT -> PDs */
    for (uint64_t i = 0; i < 4 * 512; i++)
        pt[1024 + i] = (i << 21) | 0x83;                  /* 2 MiB pages */

    struct kvm_sregs s;
    struct vcpu *c = &vm->cpu[0];
    if (ioctl(c->fd, KVM_GET_SREGS, &s) < 0)
        goto fail;
    kvm_seg(&s.cs, 0x10, 0xb, true);
    kvm_seg(&s.ds, 0x18, 0x3, false);
    s.es = s.fs = s.gs = s.ss = s.ds;
    s.gdt.base = VM_GDT_ADDR;
    s.gdt.limit = 5 * 8 - 1;
    s.cr0 = 0x80050033;   /* PG WP NE ET MP PE */
    s.cr3 = VM_PML4;
    s.cr4 = 0x20;         /* PAE */
    s.efer = 0x500;       /* LME LMA */
    if (ioctl(c->fd, KVM_SET_SREGS, &s) < 0)
        goto fail;
    struct kvm_regs r = { .rip = entry, .rsi = boot_params, .rflags = 2 };
    if (ioctl(c->fd, KVM_SET_REGS, &r) < 0)
        goto fail;
    return 0;
fail:
    snprintf(err, errlen, "setting vCPU 0 registers: %s", strerror(errno));
    return -1;
}

/* Asked by the main thread: is this vCPU halted with interrupts off?  Such
 * a CPU can only be woken by an NMI or INIT, which nobody will send: the
 * guest has stopped for good (a probe's `cli; hlt`, a kernel's halt loop). */
static void kvm_check_halt(struct vcpu *c)
{
    struct kvm_mp_state mp;
    struct kvm_regs r;
    c->check_halt = 0;
    if (ioctl(c->fd, KVM_GET_MP_STATE, &mp) < 0 || ioctl(c->fd, KVM_GET_REGS, &r) < 0)
        return;
    c->last_rip = r.rip;
    c->last_mp_state = mp.mp_state;
    if (mp.mp_state == KVM_MP_STATE_HALTED && !(r.rflags & 0x200)) {
        if (++c->halted_checks >= HALT_CHECKS_DEAD)
            vm_finish(c->vm, VM_PANIC, "CPU %d halted with interrupts disabled at rip 0x%llx",
                      c->id, (unsigned long long)r.rip);
    } else {
        c->halted_checks = 0;
    }
}

static void kvm_exit_io(struct vcpu *c)
{
    struct kvm_run *run = c->run;
    uint8_t *p = (uint8_t *)run + run->io.data_offset;
    for (uint32_t i = 0; i < run->io.count; i++, p += run->io.size)
        kvm_dispatch(c->vm, run->io.port, p, run->io.size,
                     run->io.direction == KVM_EXIT_IO_OUT, false);
}

/* The byte at the guest's rip, through its page tables. */
static int kvm_code_byte(struct vcpu *c, uint64_t rip)
{
    struct kvm_translation t = { .linear_address = rip };
    if (ioctl(c->fd, KVM_TRANSLATE, &t) < 0 || !t.valid)
        return -1;
    uint8_t *p = vm_guest_ptr(c->vm, t.physical_address, 1);
    return p ? *p : -1;
}

/* A nested software KVM (kvm_pvm) reports an emulation failure for int3
 * instead of raising #BP; Linux executes int3 in its boot self-tests and
 * text patching.  Do what the CPU would: #BP is a trap, so the saved rip
 * is the next instruction.  Returns 0 when injected. */
static int kvm_inject_int3(struct vcpu *c, struct kvm_regs *r)
{
    if (kvm_code_byte(c, r->rip) != 0xcc)
        return -1;
    struct kvm_vcpu_events ev;
    if (ioctl(c->fd, KVM_GET_VCPU_EVENTS, &ev) < 0)
        return -1;
    r->rip += 1;
    if (ioctl(c->fd, KVM_SET_REGS, r) < 0)
        return -1;
    ev.exception.injected = 1;
    ev.exception.nr = 3;
    ev.exception.has_error_code = 0;
    ev.exception.error_code = 0;
    ev.flags = 0;
    return ioctl(c->fd, KVM_SET_VCPU_EVENTS, &ev) < 0 ? -1 : 0;
}

/* kvm_pvm also fails on fwait (9b), which Linux runs after fninit.  With
 * no unmasked x87 exception pending (the guest just initialised the FPU,
 * and a fault there would be a #MF the nested KVM cannot deliver anyway) it
 * is a no-op: step over it. */
static int kvm_skip_fwait(struct vcpu *c, struct kvm_regs *r)
{
    if (kvm_code_byte(c, r->rip) != 0x9b)
        return -1;
    r->rip += 1;
    return ioctl(c->fd, KVM_SET_REGS, r) < 0 ? -1 : 0;
}

static void kvm_exit_internal(struct vcpu *c)
{
    struct kvm_regs r;
    ioctl(c->fd, KVM_GET_REGS, &r);
    if (c->run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION && kvm_inject_int3(c, &r) == 0) {
        c->int3_injected++;
        return;
    }
    if (c->run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION && kvm_skip_fwait(c, &r) == 0) {
        c->fwait_skipped++;
        return;
    }
    const char *what = c->run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
                           ? "instruction emulation failed" : "internal error";
    char bytes[40] = "";
    for (int i = 0, n = 0; i < 8; i++) {
        int b = kvm_code_byte(c, r.rip + (uint64_t)i);
        if (b < 0)
            break;
        n += snprintf(bytes + n, sizeof(bytes) - (size_t)n, " %02x", b);
    }
    vm_finish(c->vm, VM_ERROR, "KVM %s (suberror %u) on CPU %d at rip 0x%llx (bytes%s)",
              what, c->run->internal.suberror, c->id, (unsigned long long)r.rip,
              bytes[0] ? bytes : " unreadable");
}

/* A triple fault: the CPU's state at the fault says which of the guest's
 * tables (IDT, GDT, page tables, stack) was bad, so it goes in the reason. */
static void kvm_exit_shutdown(struct vcpu *c)
{
    struct kvm_regs r;
    struct kvm_sregs s;
    if (ioctl(c->fd, KVM_GET_REGS, &r) < 0 || ioctl(c->fd, KVM_GET_SREGS, &s) < 0) {
        vm_finish(c->vm, VM_PANIC, "triple fault on CPU %d (KVM_EXIT_SHUTDOWN)", c->id);
        return;
    }
    vm_finish(c->vm, VM_PANIC, "triple fault on CPU %d (KVM_EXIT_SHUTDOWN): rip 0x%llx "
              "rsp 0x%llx rflags 0x%llx cs 0x%x cr0 0x%llx cr2 0x%llx cr3 0x%llx cr4 0x%llx "
              "efer 0x%llx idt 0x%llx/0x%x gdt 0x%llx/0x%x tr 0x%x (last line: %s)", c->id,
              (unsigned long long)r.rip, (unsigned long long)r.rsp,
              (unsigned long long)r.rflags, s.cs.selector, (unsigned long long)s.cr0,
              (unsigned long long)s.cr2, (unsigned long long)s.cr3, (unsigned long long)s.cr4,
              (unsigned long long)s.efer, (unsigned long long)s.idt.base, s.idt.limit,
              (unsigned long long)s.gdt.base, s.gdt.limit, s.tr.selector,
              console_last_line(c->vm->con));
}

/* The vCPU loop: one thread per vCPU, until an outcome is set. */
static void *kvm_vcpu_thread(void *arg)
{
    struct vcpu *c = arg;
    struct vm *vm = c->vm;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, VM_KICK_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);

    /* Fault injection for the watchdog test (main.c): VDBOOT_TEST_WEDGE=vcpu
     * makes vCPU 0 stop answering kicks after its first exit, as a thread
     * stuck in the kernel would. */
    const char *wedge = getenv("VDBOOT_TEST_WEDGE");
    bool wedged = c->id == 0 && wedge && !strcmp(wedge, "vcpu");
    while (vm->outcome == VM_RUNNING) {
        int rc = ioctl(c->fd, KVM_RUN, 0);
        if (wedged) {
            pthread_sigmask(SIG_BLOCK, &set, NULL);
            for (;;)
                pause();
        }
        if (rc < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                c->run->immediate_exit = 0;
                if (c->check_halt)
                    kvm_check_halt(c);
                continue;
            }
            vm_finish(vm, VM_ERROR, "KVM_RUN on CPU %d: %s", c->id, strerror(errno));
            break;
        }
        c->halted_checks = 0;
        c->exits++;
        struct kvm_run *run = c->run;
        switch (run->exit_reason) {
        case KVM_EXIT_IO:
            kvm_exit_io(c);
            break;
        case KVM_EXIT_MMIO:
            kvm_dispatch(vm, run->mmio.phys_addr, run->mmio.data, run->mmio.len,
                         run->mmio.is_write, true);
            break;
        case KVM_EXIT_HLT:
            /* only without an in-kernel LAPIC; we always have one */
            break;
        case KVM_EXIT_SHUTDOWN:
            kvm_exit_shutdown(c);
            break;
        case KVM_EXIT_SYSTEM_EVENT:
            if (run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN)
                vm_finish(vm, VM_POWEROFF, "guest powered off (KVM system event)");
            else
                vm_finish(vm, VM_PANIC, "guest reset before the prompt (KVM system event %u)",
                          run->system_event.type);
            break;
        case KVM_EXIT_INTERNAL_ERROR:
            kvm_exit_internal(c);
            break;
        case KVM_EXIT_FAIL_ENTRY:
            vm_finish(vm, VM_ERROR, "KVM could not enter CPU %d (hardware reason 0x%llx)",
                      c->id, (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
            break;
        case KVM_EXIT_INTR:
            break;
        default:
            vm_finish(vm, VM_ERROR, "unexpected KVM exit %u on CPU %d", run->exit_reason, c->id);
            break;
        }
    }
    return NULL;
}

static void kvm_kick(struct vcpu *c)
{
    if (!c->started)
        return;
    c->run->immediate_exit = 1;
    pthread_kill(c->thread, VM_KICK_SIGNAL);
}

enum vm_outcome vm_run(struct vm *vm, double timeout_s)
{
    struct sigaction sa = { .sa_handler = kvm_kick_handler };
    sigemptyset(&sa.sa_mask);
    sigaction(VM_KICK_SIGNAL, &sa, NULL);   /* no SA_RESTART: KVM_RUN returns EINTR */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, VM_KICK_SIGNAL);
    pthread_sigmask(SIG_BLOCK, &set, &old);  /* only vCPU threads take it */

    for (int i = 0; i < vm->cfg.cpus; i++) {
        if (pthread_create(&vm->cpu[i].thread, NULL, kvm_vcpu_thread, &vm->cpu[i]) != 0) {
            vm_finish(vm, VM_ERROR, "cannot start the thread of vCPU %d", i);
            break;
        }
        vm->cpu[i].started = true;
    }
    double deadline = con_now() + timeout_s, next_report = con_now() + 10;
    pthread_mutex_lock(&vm->lock);
    while (vm->outcome == VM_RUNNING) {
        double now = con_now();
        if (vm->end_phase == 1) {
            vm->end_phase = 2;
            vm->t_pressed = now;
            deadline = now + vm->cfg.shutdown_wait;
            pthread_mutex_unlock(&vm->lock);
            acpi_power_button(vm);
            pthread_mutex_lock(&vm->lock);
            continue;
        }
        if (now >= deadline) {
            pthread_mutex_unlock(&vm->lock);
            if (vm->end_phase)
                vm_finish(vm, VM_TIMEOUT, "no poweroff within %.0f s", vm->cfg.shutdown_wait);
            else
                vm_finish(vm, VM_TIMEOUT, "no match within %.0f s", timeout_s);
            pthread_mutex_lock(&vm->lock);
            if (vm->end_phase == 1)
                continue;   /* --shutdown acpi: the timeout presses the button first */
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000 * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&vm->done_cond, &vm->lock, &ts);
        if (vm->poll && vm->outcome == VM_RUNNING) {
            pthread_mutex_unlock(&vm->lock);   /* the hook may end the run */
            vm->poll(vm);
            pthread_mutex_lock(&vm->lock);
        }
        if (vm->cfg.verbose && now >= next_report) {
            /* a slow guest shows where it is: rip, halted or not, console */
            struct vcpu *b = &vm->cpu[0];
            fprintf(stderr, "vdboot: %.0f s: CPU 0 at rip 0x%llx%s, %llu exits, %llu console bytes, "
                    "%llu int3 injected, %llu fwait skipped\n", now - (deadline - timeout_s),
                    (unsigned long long)b->last_rip,
                    b->last_mp_state == KVM_MP_STATE_HALTED ? " (halted)" : "",
                    (unsigned long long)b->exits,
                    (unsigned long long)vm->con->bytes, (unsigned long long)b->int3_injected,
                    (unsigned long long)b->fwait_skipped);
            next_report = now + 10;
        }
        if (vm->outcome == VM_RUNNING && vm->cpu[0].started) {
            vm->cpu[0].check_halt = 1;
            kvm_kick(&vm->cpu[0]);
        }
    }
    pthread_mutex_unlock(&vm->lock);
    for (int i = 0; i < vm->cfg.cpus; i++)
        kvm_kick(&vm->cpu[i]);
    for (int i = 0; i < vm->cfg.cpus; i++) {
        if (!vm->cpu[i].started)
            continue;
        /* A vCPU parked in wait-for-SIPI sleeps in KVM_RUN; keep kicking. */
        struct timespec ts;
        for (;;) {
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 20 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            if (pthread_timedjoin_np(vm->cpu[i].thread, NULL, &ts) == 0)
                break;
            kvm_kick(&vm->cpu[i]);
        }
        vm->cpu[i].started = false;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return (enum vm_outcome)vm->outcome;
}
