/* mptable.c - the Intel MultiProcessor Specification 1.4 tables that tell a
 * guest without ACPI how many CPUs it has, where the IOAPIC is and how
 * interrupts are wired: ISA IRQ n -> IOAPIC pin n, PCI slot s INTA -> the
 * pin of its ISA IRQ (vm_pci_slot_irq), which then has no ISA entry.  Written at VM_MPTABLE (the last KiB of base memory, one of the
 * places Linux scans), which the e820 map marks reserved. */
#include "vmm.h"

#include <stdio.h>
#include <string.h>

#define MP_LAPIC_ADDR 0xfee00000u
#define MP_IOAPIC_ADDR 0xfec00000u
#define MP_SPEC_REV 4
#define MP_ENTRY_CPU 0
#define MP_ENTRY_BUS 1
#define MP_ENTRY_IOAPIC 2
#define MP_ENTRY_IOINT 3
#define MP_ENTRY_LINT 4
#define MP_CPU_ENABLED 1
#define MP_CPU_BSP 2
#define MP_BUS_PCI 0
#define MP_BUS_ISA 1
#define MP_IRQ_FLAGS_CONFORM 0      /* polarity/trigger as the bus defines */
#define MP_PCI_SLOTS VM_PCI_MAX_SLOTS
#define MP_TABLE_MAX 1024

static void mp_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void mp_put32(uint8_t *p, uint32_t v) { mp_put16(p, (uint16_t)v); mp_put16(p + 2, (uint16_t)(v >> 16)); }

static uint8_t mp_checksum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    while (n--)
        s = (uint8_t)(s + *p++);
    return (uint8_t)(0 - s);
}

static uint8_t *mp_ioint(uint8_t *e, uint8_t type, uint8_t bus, uint8_t bus_irq,
                         uint8_t ioapic, uint8_t pin)
{
    e[0] = type;
    e[1] = 0;                      /* INT: vectored */
    mp_put16(e + 2, MP_IRQ_FLAGS_CONFORM);
    e[4] = bus;
    e[5] = bus_irq;
    e[6] = ioapic;
    e[7] = pin;
    return e + 8;
}

int mptable_write(struct vm *vm, char *err, size_t errlen)
{
    uint8_t *fp = vm_guest_ptr(vm, VM_MPTABLE, MP_TABLE_MAX);
    if (!fp) {
        snprintf(err, errlen, "no guest memory for the MP table");
        return -1;
    }
    memset(fp, 0, MP_TABLE_MAX);
    uint8_t *t = fp + 16, *e = t + 44;
    uint16_t count = 0;
    uint8_t ioapic_id = (uint8_t)vm->cfg.cpus;

    for (int i = 0; i < vm->cfg.cpus; i++, count++) {
        e[0] = MP_ENTRY_CPU;
        e[1] = (uint8_t)i;          /* LAPIC id = vCPU index (cpuid.c agrees) */
        e[2] = 0x14;                /* LAPIC version */
        e[3] = MP_CPU_ENABLED | (i == 0 ? MP_CPU_BSP : 0);
        mp_put32(e + 4, 0x600);     /* family 6 signature */
        mp_put32(e + 8, 0x201);     /* FPU, APIC */
        e += 20;
    }
    e[0] = MP_ENTRY_BUS; e[1] = MP_BUS_PCI; memcpy(e + 2, "PCI   ", 6); e += 8; count++;
    e[0] = MP_ENTRY_BUS; e[1] = MP_BUS_ISA; memcpy(e + 2, "ISA   ", 6); e += 8; count++;
    e[0] = MP_ENTRY_IOAPIC;
    e[1] = ioapic_id;
    e[2] = 0x11;                    /* IOAPIC version */
    e[3] = 1;                       /* enabled */
    mp_put32(e + 4, MP_IOAPIC_ADDR);
    e += 8; count++;
    bool pci_owned[16] = { false };
    for (int slot = 0; slot < MP_PCI_SLOTS; slot++)
        pci_owned[vm_pci_slot_irq(slot)] = vm_pci_slot_irq(slot) != 0;
    for (uint8_t irq = 0; irq < 16; irq++)
        if (!pci_owned[irq]) {
            e = mp_ioint(e, MP_ENTRY_IOINT, MP_BUS_ISA, irq, ioapic_id, irq);
            count++;
        }
    for (int slot = 0; slot < MP_PCI_SLOTS; slot++)
        if (vm_pci_slot_irq(slot)) {
            e = mp_ioint(e, MP_ENTRY_IOINT, MP_BUS_PCI, (uint8_t)(slot << 2), ioapic_id,
                         (uint8_t)vm_pci_slot_irq(slot));
            count++;
        }
    /* LINT0 = ExtINT (the PIC, virtual wire), LINT1 = NMI, on every LAPIC */
    e = mp_ioint(e, MP_ENTRY_LINT, MP_BUS_ISA, 0, 0xff, 0); e[-7] = 3; count++;
    e = mp_ioint(e, MP_ENTRY_LINT, MP_BUS_ISA, 0, 0xff, 1); e[-7] = 1; count++;

    uint16_t len = (uint16_t)(e - t);
    memcpy(t, "PCMP", 4);
    mp_put16(t + 4, len);
    t[6] = MP_SPEC_REV;
    memcpy(t + 8, "VDISK   ", 8);
    memcpy(t + 16, "VDBOOT      ", 12);
    mp_put16(t + 34, count);
    mp_put32(t + 36, MP_LAPIC_ADDR);
    t[7] = mp_checksum(t, len);

    memcpy(fp, "_MP_", 4);
    mp_put32(fp + 4, (uint32_t)(VM_MPTABLE + 16));
    fp[8] = 1;                      /* length in 16-byte units */
    fp[9] = MP_SPEC_REV;
    fp[10] = mp_checksum(fp, 16);
    return 0;
}
