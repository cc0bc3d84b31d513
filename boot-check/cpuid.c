/* cpuid.c - what the guest sees in CPUID: KVM's supported set, with the
 * APIC topology of each vCPU filled in, the hypervisor bit set, and, on a
 * nested software KVM (kvm_pvm), the instructions it cannot run hidden.
 *
 * kvm_pvm emulates the guest's instructions and fails on cmpxchg16b and
 * xsave/xrstor; a guest only avoids them if CPUID says they are absent.
 * Hiding XSAVE also hides everything built on it (AVX, AVX2, AVX-512), which
 * Linux turns off by itself, but we clear the obvious bits too. */
#include "vmm.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define CPUID_1_ECX_CX16 (1u << 13)
#define CPUID_1_ECX_XSAVE (1u << 26)
#define CPUID_1_ECX_OSXSAVE (1u << 27)
#define CPUID_1_ECX_AVX (1u << 28)
#define CPUID_1_ECX_HYPERVISOR (1u << 31)
#define CPUID_7_EBX_AVX2 (1u << 5)
#define CPUID_7_EBX_SMAP (1u << 20)
#define CPUID_7_EBX_AVX512_MASK 0xdc230000u  /* F DQ IFMA CD BW VL ... */

bool cpuid_host_is_nested_pvm(void)
{
    return access("/sys/module/kvm_pvm", F_OK) == 0;
}

static struct kvm_cpuid2 *cpuid_get_supported(int kvm_fd)
{
    for (int n = 64; n <= 1024; n *= 2) {
        struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + (size_t)n * sizeof(c->entries[0]));
        if (!c)
            return NULL;
        c->nent = (uint32_t)n;
        if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
            return c;
        free(c);
        if (errno != E2BIG)
            return NULL;
    }
    return NULL;
}

static void cpuid_fix_entry(struct vm *vm, struct vcpu *c, struct kvm_cpuid_entry2 *e)
{
    bool hide = vm->cfg.hide_unsafe_cpuid;
    switch (e->function) {
    case 1:
        e->ebx = (e->ebx & 0x0000ffffu) | ((uint32_t)c->id << 24) |
                 ((uint32_t)vm->cfg.cpus << 16);
        e->ecx |= CPUID_1_ECX_HYPERVISOR;
        if (hide)
            e->ecx &= ~(CPUID_1_ECX_CX16 | CPUID_1_ECX_XSAVE | CPUID_1_ECX_OSXSAVE |
                        CPUID_1_ECX_AVX);
        if (vm->cfg.cpus > 1)
            e->edx |= 1u << 28;   /* HTT: the logical count above is valid */
        break;
    case 7:
        if (hide && e->index == 0)
            e->ebx &= ~(CPUID_7_EBX_AVX2 | CPUID_7_EBX_AVX512_MASK);
        break;
    case 0xb:
    case 0x1f:
        e->edx = (uint32_t)c->id;   /* x2APIC id */
        break;
    case 0xd:
        if (hide)
            e->eax = e->ebx = e->ecx = e->edx = 0;
        break;
    default:
        break;
    }
}

int cpuid_setup(struct vm *vm, struct vcpu *c, char *err, size_t errlen)
{
    struct kvm_cpuid2 *cpuid = cpuid_get_supported(vm->kvm_fd);
    if (!cpuid) {
        snprintf(err, errlen, "KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
        return -1;
    }
    for (uint32_t i = 0; i < cpuid->nent; i++)
        cpuid_fix_entry(vm, c, &cpuid->entries[i]);
    int rc = ioctl(c->fd, KVM_SET_CPUID2, cpuid);
    if (rc < 0) {
        free(cpuid);
        snprintf(err, errlen, "KVM_SET_CPUID2 on vCPU %d: %s", c->id, strerror(errno));
        return -1;
    }
    /* kvm_pvm replaces leaf 1 with its own view (XSAVE and AVX still set,
     * only cx16 cleared): read back what the guest will really see, so the
     * boot can ask the kernel itself not to use XSAVE (boot-kvm.c). */
    cpuid->nent = 1024 < cpuid->nent ? 1024 : cpuid->nent;
    if (vm->cfg.hide_unsafe_cpuid && ioctl(c->fd, KVM_GET_CPUID2, cpuid) == 0) {
        for (uint32_t i = 0; i < cpuid->nent; i++) {
            struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
            if (e->function == 1 && (e->ecx & CPUID_1_ECX_XSAVE))
                vm->cpuid_xsave_visible = true;
            /* SMAP makes Linux patch clac/stac into its entry code, which
             * kvm_pvm fails to emulate (seen at an exception entry) */
            if (e->function == 7 && e->index == 0 && (e->ebx & CPUID_7_EBX_SMAP))
                vm->cpuid_smap_visible = true;
        }
    }
    free(cpuid);
    return 0;
}
