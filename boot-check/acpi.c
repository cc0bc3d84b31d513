/* acpi.c - the ACPI tables of the built-in VMM and the one piece of ACPI
 * hardware behind them, the PM1 register blocks.
 *
 * Tables (ACPI 6.0 layouts), written at VM_ACPI in the BIOS area, which the
 * e820 map marks reserved; the RSDP sits first, on the 16-byte boundary
 * where a guest's scan of 0xe0000-0xfffff finds it:
 *   RSDP -> RSDT (32-bit) and XSDT (64-bit) -> FADT, MADT
 *   FADT -> FACS, DSDT, PM1a event block (0x600), PM1a control (0x604),
 *           PM timer (0x608)
 *   MADT: one Local APIC per vCPU (APIC id = vCPU index, as cpuid.c and
 *         mptable.c say), the IOAPIC, and LINT1 = NMI on every CPU
 *   DSDT: \_SB.PCI0 (PNP0A03) with a _PRT wiring slot N INTA to the GSI
 *         vm_pci_slot_irq(N) (the ISA IRQ of the same number: KVM's default
 *         routing drives IOAPIC pin N from it), and \_S5 = { 0, 0 }
 * A guest that knows ACPI finds its CPUs here without the MP table, and
 * powers off by writing SLP_EN with SLP_TYP 0 to PM1a_CNT: the same
 * value as on qemu's machines, so `outw(0x2000, 0x604)` also works.
 *
 * Hardware: PM1_STS/PM1_EN (status bits are write-1-to-clear; the enable
 * register keeps only the power button's bit) and PM1_CNT (SCI_EN reads 1:
 * no SMI command port, the system is always in ACPI mode).  The power
 * button is the fixed-feature one (FADT flag PWR_BUTTON clear), so a guest
 * finds it without AML.  vdboot presses it (acpi_power_button, for
 * --shutdown acpi): PWRBTN_STS is set, and while a status bit is set with
 * its enable bit the SCI, ISA IRQ 9 (the FADT's SCI_INT), is held asserted
 * on the in-kernel PIC and IOAPIC - a level interrupt, dropped when the
 * guest clears the status (write 1) or the enable.  The PM timer is the
 * 24-bit, 3.579545 MHz counter of ACPI 4.7.3.3, read from the host's
 * monotonic clock, so Linux can use acpi_pm as a clocksource and as the
 * TSC's watchdog.  Every register is decoded byte by byte from the guest's
 * port, width and value, nothing else. */
#include "vmm.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#define ACPI_PM1_EVT 0x600        /* PM1_STS (2 bytes), PM1_EN (2 bytes) */
#define ACPI_PM1_CNT 0x604
#define ACPI_PM_TMR 0x608         /* 4 bytes, read-only */
#define ACPI_PM_TMR_HZ 3579545ull
#define ACPI_SCI_IRQ 9
#define ACPI_S5_SLP_TYP 0
#define PM1_PWRBTN 0x0100         /* PWRBTN_STS / PWRBTN_EN */
#define PM1_WAK_STS 0x8000
#define PM1_CNT_SCI_EN 0x0001
#define PM1_CNT_SLP_EN 0x2000
#define PM1_CNT_SLP_TYP(v) (((v) >> 10) & 7)

/* where each table goes, from VM_ACPI */
#define OFF_RSDP 0x000
#define OFF_RSDT 0x040
#define OFF_XSDT 0x080
#define OFF_FACS 0x0c0            /* 64-byte aligned */
#define OFF_FADT 0x100            /* 276 bytes */
#define OFF_MADT 0x280
#define OFF_DSDT 0x400
#define ACPI_AREA 0x1000

#define FADT_LEN 276
#define FADT_SCI_INT 46
#define FADT_PM1A_EVT 56
#define FADT_PM1A_CNT 64
#define FADT_PM_TMR 76
#define FADT_PM_TMR_LEN 91
#define FADT_PM1_EVT_LEN 88
#define FADT_PM1_CNT_LEN 89
#define FADT_P_LVL2_LAT 96
#define FADT_P_LVL3_LAT 98
#define FADT_IAPC_BOOT_ARCH 109
#define FADT_FLAGS 112
#define FADT_RESET_REG 116
#define FADT_RESET_VALUE 128
#define FADT_MINOR 131
#define FADT_X_FACS 132
#define FADT_X_DSDT 140
#define FADT_X_PM1A_EVT 148
#define FADT_X_PM1A_CNT 172
#define FADT_X_PM_TMR 208
/* FADT flags: WBINVD works, C1 on every CPU, no fixed sleep button (the
 * power button is fixed: its flag stays clear), RESET_REG supported */
#define FADT_F_WBINVD (1u << 0)
#define FADT_F_PROC_C1 (1u << 2)
#define FADT_F_SLP_BUTTON (1u << 5)
#define FADT_F_RESET_REG_SUP (1u << 10)
/* IA-PC boot flags: legacy ISA devices (COM1) present; no i8042, no VGA */
#define IAPC_LEGACY_DEVICES 0x0001
#define IAPC_VGA_NOT_PRESENT 0x0004

#define MADT_LAPIC_ADDR 0xfee00000u
#define MADT_IOAPIC_ADDR 0xfec00000u
#define MADT_PCAT_COMPAT 1        /* dual 8259s present (the kernel's PIC) */

static struct acpi_pm {
    uint16_t sts, en, cnt;
    bool sci;                     /* the level last set on IRQ 9 */
    struct timespec t0;           /* the PM timer's zero */
} pm;

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)v); put32(p + 4, (uint32_t)(v >> 32)); }

static uint8_t acpi_sum(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    while (n--)
        s = (uint8_t)(s + *p++);
    return s;
}

/* The 36-byte header every table but the RSDP and FACS starts with; the
 * checksum is set by acpi_seal once the body is in place. */
static void acpi_header(uint8_t *t, const char sig[4], uint32_t len, uint8_t rev)
{
    memcpy(t, sig, 4);
    put32(t + 4, len);
    t[8] = rev;
    memcpy(t + 10, "VDISK ", 6);        /* OEM id */
    memcpy(t + 16, "VDBOOT  ", 8);      /* OEM table id */
    put32(t + 24, 1);                   /* OEM revision */
    memcpy(t + 28, "VDBT", 4);          /* creator id */
    put32(t + 32, 1);                   /* creator revision */
}

static void acpi_seal(uint8_t *t)
{
    uint32_t len = (uint32_t)t[4] | (uint32_t)t[5] << 8 | (uint32_t)t[6] << 16 |
                   (uint32_t)t[7] << 24;
    t[9] = 0;
    t[9] = (uint8_t)(0 - acpi_sum(t, len));
}

/* A Generic Address Structure for an I/O port register. */
static void acpi_gas_io(uint8_t *g, uint8_t bits, uint8_t access, uint64_t port)
{
    g[0] = 1;          /* system I/O space */
    g[1] = bits;
    g[2] = 0;          /* bit offset */
    g[3] = access;     /* 1 byte, 2 word, 3 dword */
    put64(g + 4, port);
}

/* ---- AML, the DSDT's bytecode: a few opcodes, assembled by hand ---- */
#define AML_ZERO 0x00
#define AML_NAME 0x08
#define AML_BYTE 0x0a
#define AML_DWORD 0x0c
#define AML_SCOPE 0x10
#define AML_PACKAGE 0x12
#define AML_EXT 0x5b
#define AML_EXT_DEVICE 0x82

struct aml { uint8_t *p; size_t len, cap; bool overflow; };

static void aml_bytes(struct aml *a, const void *b, size_t n)
{
    if (a->len + n > a->cap) {
        a->overflow = true;
        return;
    }
    memcpy(a->p + a->len, b, n);
    a->len += n;
}

static void aml_byte(struct aml *a, uint8_t b) { aml_bytes(a, &b, 1); }

/* PkgLength: the length of what follows the opcode, itself included; one
 * byte up to 63, else a lead byte (count of extra bytes in bits 7-6, low
 * nibble in bits 3-0) and the rest 8 bits at a time. */
static void aml_pkglen(struct aml *a, size_t body)
{
    if (body + 1 <= 63) {
        aml_byte(a, (uint8_t)(body + 1));
        return;
    }
    size_t n = body + 2 <= 0xfff ? 2 : body + 3 <= 0xfffff ? 3 : 4;
    size_t total = body + n;
    aml_byte(a, (uint8_t)((n - 1) << 6 | (total & 0xf)));
    for (size_t i = 1; i < n; i++)
        aml_byte(a, (uint8_t)(total >> (4 + 8 * (i - 1))));
}

/* Wraps the bytes written since `mark` as the body of `op` (+ PkgLength). */
static void aml_wrap(struct aml *a, size_t mark, const uint8_t *op, size_t oplen)
{
    uint8_t body[2048];
    size_t blen = a->len - mark;
    if (a->overflow || blen > sizeof(body)) {
        a->overflow = true;
        return;
    }
    memcpy(body, a->p + mark, blen);
    a->len = mark;
    aml_bytes(a, op, oplen);
    aml_pkglen(a, blen);
    aml_bytes(a, body, blen);
}

static void aml_dword(struct aml *a, uint32_t v)
{
    uint8_t b[5] = { AML_DWORD };
    put32(b + 1, v);
    aml_bytes(a, b, 5);
}

/* Package(4) { slot << 16 | 0xffff (any function), pin 0 (INTA), Zero (no
 * link device: the last element is a GSI), gsi } */
static void aml_prt_entry(struct aml *a, int slot, uint8_t gsi)
{
    size_t m = a->len;
    aml_byte(a, 4);
    aml_dword(a, (uint32_t)slot << 16 | 0xffff);
    aml_byte(a, AML_ZERO);
    aml_byte(a, AML_ZERO);
    aml_byte(a, AML_BYTE);
    aml_byte(a, gsi);
    aml_wrap(a, m, (const uint8_t[]){ AML_PACKAGE }, 1);
}

static size_t acpi_dsdt_body(uint8_t *out, size_t cap)
{
    struct aml a = { .p = out, .cap = cap };
    /* Scope (\_SB) { Device (PCI0) { ... } } */
    size_t scope = a.len;
    aml_bytes(&a, "\\_SB_", 5);
    size_t dev = a.len;
    aml_bytes(&a, "PCI0", 4);
    /* Name (_HID, EisaId ("PNP0A03")): PNP compressed to 0x41d0, then 0a03 */
    aml_byte(&a, AML_NAME);
    aml_bytes(&a, "_HID", 4);
    aml_dword(&a, 0x030ad041);
    /* Name (_UID, Zero) */
    aml_byte(&a, AML_NAME);
    aml_bytes(&a, "_UID", 4);
    aml_byte(&a, AML_ZERO);
    /* Name (_PRT, Package () { one entry per slot that has an IRQ }) */
    aml_byte(&a, AML_NAME);
    aml_bytes(&a, "_PRT", 4);
    size_t prt = a.len;
    uint8_t n = 0;
    aml_byte(&a, 0);                    /* NumElements, patched below */
    for (int slot = 0; slot < VM_PCI_MAX_SLOTS; slot++)
        if (vm_pci_slot_irq(slot)) {
            aml_prt_entry(&a, slot, (uint8_t)vm_pci_slot_irq(slot));
            n++;
        }
    if (!a.overflow)
        a.p[prt] = n;
    aml_wrap(&a, prt, (const uint8_t[]){ AML_PACKAGE }, 1);
    aml_wrap(&a, dev, (const uint8_t[]){ AML_EXT, AML_EXT_DEVICE }, 2);
    aml_wrap(&a, scope, (const uint8_t[]){ AML_SCOPE }, 1);
    /* Name (\_S5, Package (4) { SLP_TYPa, SLP_TYPb, 0, 0 }) */
    aml_byte(&a, AML_NAME);
    aml_bytes(&a, "\\_S5_", 5);
    size_t s5 = a.len;
    aml_byte(&a, 4);
    for (int i = 0; i < 2; i++) {
        aml_byte(&a, AML_BYTE);
        aml_byte(&a, ACPI_S5_SLP_TYP);
    }
    aml_byte(&a, AML_ZERO);
    aml_byte(&a, AML_ZERO);
    aml_wrap(&a, s5, (const uint8_t[]){ AML_PACKAGE }, 1);
    return a.overflow ? 0 : a.len;
}

static void acpi_fadt(uint8_t *t, uint64_t base)
{
    acpi_header(t, "FACP", FADT_LEN, 6);
    /* FIRMWARE_CTRL stays 0: X_FIRMWARE_CTRL gives the FACS (ACPI 6.0
     * 5.2.9: not both); DSDT and X_DSDT may both be set */
    put32(t + 40, (uint32_t)(base + OFF_DSDT));
    put16(t + FADT_SCI_INT, ACPI_SCI_IRQ);
    /* SMI_CMD 0: no ACPI enable/disable handshake, always in ACPI mode */
    put32(t + FADT_PM1A_EVT, ACPI_PM1_EVT);
    put32(t + FADT_PM1A_CNT, ACPI_PM1_CNT);
    t[FADT_PM1_EVT_LEN] = 4;
    t[FADT_PM1_CNT_LEN] = 2;
    put32(t + FADT_PM_TMR, ACPI_PM_TMR);
    t[FADT_PM_TMR_LEN] = 4;             /* 24 bits (flag TMR_VAL_EXT clear) */
    /* no GPE blocks: no general-purpose events behind them */
    put16(t + FADT_P_LVL2_LAT, 101);    /* > 100: no C2 */
    put16(t + FADT_P_LVL3_LAT, 1001);   /* > 1000: no C3 */
    put16(t + FADT_IAPC_BOOT_ARCH, IAPC_LEGACY_DEVICES | IAPC_VGA_NOT_PRESENT);
    put32(t + FADT_FLAGS, FADT_F_WBINVD | FADT_F_PROC_C1 | FADT_F_SLP_BUTTON |
                          FADT_F_RESET_REG_SUP);
    acpi_gas_io(t + FADT_RESET_REG, 8, 1, 0xcf9);   /* pci.c: bit 2 resets */
    t[FADT_RESET_VALUE] = 0x06;
    t[FADT_MINOR] = 0;
    put64(t + FADT_X_FACS, base + OFF_FACS);
    put64(t + FADT_X_DSDT, base + OFF_DSDT);
    acpi_gas_io(t + FADT_X_PM1A_EVT, 32, 2, ACPI_PM1_EVT);
    acpi_gas_io(t + FADT_X_PM1A_CNT, 16, 2, ACPI_PM1_CNT);
    acpi_gas_io(t + FADT_X_PM_TMR, 32, 3, ACPI_PM_TMR);
    acpi_seal(t);
}

static uint32_t acpi_madt(uint8_t *t, int cpus)
{
    uint8_t *e = t + 44;
    for (int i = 0; i < cpus; i++, e += 8) {
        e[0] = 0;                       /* Processor Local APIC */
        e[1] = 8;
        e[2] = (uint8_t)i;              /* ACPI processor UID */
        e[3] = (uint8_t)i;              /* APIC id */
        put32(e + 4, 1);                /* enabled */
    }
    e[0] = 1;                           /* I/O APIC */
    e[1] = 12;
    e[2] = (uint8_t)cpus;               /* its id, after the CPUs' (as mptable.c) */
    e[3] = 0;
    put32(e + 4, MADT_IOAPIC_ADDR);
    put32(e + 8, 0);                    /* GSI base: pin n = GSI n */
    e += 12;
    /* No interrupt source overrides: ISA IRQ n is GSI n (KVM's default
     * routing); the SCI gets the spec's default, level and active low. */
    e[0] = 4;                           /* Local APIC NMI */
    e[1] = 6;
    e[2] = 0xff;                        /* every processor */
    put16(e + 3, 0);                    /* conforming polarity/trigger */
    e[5] = 1;                           /* LINT1 */
    e += 6;
    uint32_t len = (uint32_t)(e - t);
    acpi_header(t, "APIC", len, 5);
    put32(t + 36, MADT_LAPIC_ADDR);
    put32(t + 40, MADT_PCAT_COMPAT);
    acpi_seal(t);
    return len;
}

int acpi_write(struct vm *vm, char *err, size_t errlen)
{
    return acpi_write_at(vm, VM_ACPI, err, errlen);
}

int acpi_write_at(struct vm *vm, uint64_t base, char *err, size_t errlen)
{
    uint8_t *b = vm_guest_ptr(vm, base, ACPI_AREA);
    if (!b || vm->cfg.cpus < 1 || vm->cfg.cpus > VM_MAX_CPUS) {
        snprintf(err, errlen, "no guest memory for the ACPI tables");
        return -1;
    }
    memset(b, 0, ACPI_AREA);

    uint8_t *d = b + OFF_DSDT;
    size_t aml = acpi_dsdt_body(d + 36, ACPI_AREA - OFF_DSDT - 36);
    if (!aml) {
        snprintf(err, errlen, "the DSDT does not fit in %u bytes", ACPI_AREA - OFF_DSDT);
        return -1;
    }
    acpi_header(d, "DSDT", (uint32_t)(36 + aml), 2);   /* rev 2: 64-bit integers */
    acpi_seal(d);

    uint8_t *facs = b + OFF_FACS;
    memcpy(facs, "FACS", 4);
    put32(facs + 4, 64);
    facs[32] = 2;                       /* version */

    acpi_fadt(b + OFF_FADT, base);
    acpi_madt(b + OFF_MADT, vm->cfg.cpus);

    uint8_t *rsdt = b + OFF_RSDT, *xsdt = b + OFF_XSDT;
    acpi_header(rsdt, "RSDT", 36 + 2 * 4, 1);
    put32(rsdt + 36, (uint32_t)(base + OFF_FADT));
    put32(rsdt + 40, (uint32_t)(base + OFF_MADT));
    acpi_seal(rsdt);
    acpi_header(xsdt, "XSDT", 36 + 2 * 8, 1);
    put64(xsdt + 36, base + OFF_FADT);
    put64(xsdt + 44, base + OFF_MADT);
    acpi_seal(xsdt);

    uint8_t *rsdp = b + OFF_RSDP;
    memcpy(rsdp, "RSD PTR ", 8);
    memcpy(rsdp + 9, "VDISK ", 6);
    rsdp[15] = 2;                       /* revision: ACPI 2.0+, has the XSDT */
    put32(rsdp + 16, (uint32_t)(base + OFF_RSDT));
    put32(rsdp + 20, 36);
    put64(rsdp + 24, base + OFF_XSDT);
    rsdp[8] = (uint8_t)(0 - acpi_sum(rsdp, 20));        /* the ACPI 1.0 part */
    rsdp[32] = (uint8_t)(0 - acpi_sum(rsdp, 36));       /* all 36 bytes */
    return 0;
}

/* ---- the PM1 registers, the SCI and the PM timer ---- */

/* The SCI follows PM1_STS & PM1_EN; called with vm->lock held. */
static void acpi_sci_update(struct vm *vm)
{
    bool level = (pm.sts & pm.en & PM1_PWRBTN) != 0;
    if (level != pm.sci) {
        pm.sci = level;
        vm_irq_line(vm, ACPI_SCI_IRQ, level);
    }
}

void acpi_power_button(struct vm *vm)
{
    pthread_mutex_lock(&vm->lock);
    pm.sts |= PM1_PWRBTN;
    acpi_sci_update(vm);
    pthread_mutex_unlock(&vm->lock);
}

static void acpi_tmr_io(struct vm *vm, void *opaque, uint64_t port, uint8_t *data,
                        unsigned len, bool is_write)
{
    (void)vm; (void)opaque;
    if (is_write)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    uint64_t ns = (uint64_t)(now.tv_sec - pm.t0.tv_sec) * 1000000000ull +
                  (uint64_t)now.tv_nsec - (uint64_t)pm.t0.tv_nsec;
    /* ticks = ns * 3579545 / 1e9, split so that nothing overflows */
    uint64_t ticks = ns / 1000000000ull * ACPI_PM_TMR_HZ +
                     ns % 1000000000ull * ACPI_PM_TMR_HZ / 1000000000ull;
    uint32_t v = (uint32_t)(ticks & 0xffffff);
    for (unsigned i = 0; i < len; i++) {
        unsigned b = (unsigned)(port - ACPI_PM_TMR) + i;
        data[i] = b < 4 ? (uint8_t)(v >> (8 * b)) : 0xff;
    }
}

/* Byte by byte, whatever width the guest uses: offsets 0-1 PM1_STS,
 * 2-3 PM1_EN, 4-5 PM1_CNT. */
static void acpi_pm_io(struct vm *vm, void *opaque, uint64_t port, uint8_t *data,
                       unsigned len, bool is_write)
{
    (void)opaque;
    bool off = false;
    uint16_t typ = 0;
    char why[CON_LINE_MAX + 200];
    pthread_mutex_lock(&vm->lock);
    for (unsigned i = 0; i < len; i++) {
        unsigned reg = (unsigned)(port - ACPI_PM1_EVT) + i;
        unsigned sh = (reg & 1) * 8;
        uint16_t *r = reg < 2 ? &pm.sts : reg < 4 ? &pm.en : reg < 6 ? &pm.cnt : NULL;
        if (!r) {
            if (!is_write)
                data[i] = 0xff;
            continue;
        }
        if (!is_write) {
            uint16_t v = *r;
            if (r == &pm.cnt)
                v = (uint16_t)((v | PM1_CNT_SCI_EN) & ~PM1_CNT_SLP_EN);
            data[i] = (uint8_t)(v >> sh);
            continue;
        }
        uint16_t v = (uint16_t)(data[i] << sh), mask = (uint16_t)(0xff << sh);
        if (r == &pm.sts) {
            pm.sts &= (uint16_t)~v;     /* write 1 to clear */
        } else if (r == &pm.en) {
            pm.en = (uint16_t)((pm.en & ~mask) | (v & PM1_PWRBTN));
        } else {
            pm.cnt = (uint16_t)((pm.cnt & ~mask) | v);
            if (pm.cnt & PM1_CNT_SLP_EN) {
                off = PM1_CNT_SLP_TYP(pm.cnt) == ACPI_S5_SLP_TYP;
                typ = (uint16_t)PM1_CNT_SLP_TYP(pm.cnt);
                pm.cnt &= (uint16_t)~PM1_CNT_SLP_EN;
                if (!off)
                    pm.sts |= PM1_WAK_STS;      /* "woke up" at once */
            }
        }
    }
    if (is_write)
        acpi_sci_update(vm);
    /* the console is written by other vCPUs under this lock: read it here */
    if (off)
        snprintf(why, sizeof(why), "guest powered off (ACPI S5: SLP_EN with SLP_TYP %u written "
                 "to PM1a_CNT, port 0x%x)%s; last words: %s", typ, ACPI_PM1_CNT,
                 vm->con->run.state >= RUN_SENT ? " while running the --run command" : "",
                 console_last_words(vm->con));
    pthread_mutex_unlock(&vm->lock);
    if (off)
        vm_finish(vm, VM_POWEROFF, "%s", why);
    else if (typ && vm->cfg.verbose)
        fprintf(stderr, "vdboot: guest asked for sleep state SLP_TYP %u, which the DSDT does "
                "not offer: ignored\n", typ);
}

static int acpi_init(struct vm *vm, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    memset(&pm, 0, sizeof(pm));
    clock_gettime(CLOCK_MONOTONIC, &pm.t0);
    if (vm_io_register(vm, ACPI_PM1_EVT, 6, false, acpi_pm_io, NULL) < 0 ||
        vm_io_register(vm, ACPI_PM_TMR, 4, false, acpi_tmr_io, NULL) < 0)
        return -1;
    return 0;
}

const struct vm_device acpi_device = { .name = "acpi", .init = acpi_init };
