/* pci.c - PCI configuration mechanism #1 (ports 0xcf8/0xcfc) on bus 0:
 * a host bridge at 00:00.0 (Linux's type-1 sanity check looks for one) and
 * the devices added by pci_add, each with one I/O BAR and INTA wired to an
 * ISA IRQ (VM_PCI_IRQS; the MP table and Interrupt Line say which; SeaBIOS's
 * i440FX routing gives slot 1 IRQ 10 as well).  For a firmware boot the
 * host bridge is an i440FX with qemu's subsystem IDs.  BARs are placed by vdboot
 * and may be moved by the guest; sizing writes read back the size mask. */
#include "vmm.h"

#include <string.h>

#define PCI_CONF_ADDR 0xcf8
#define PCI_CONF_DATA 0xcfc
#define PCI_RESET_CTRL 0xcf9      /* PIIX reset control, a byte inside 0xcf8 */
#define PCI_MAX_SLOTS VM_PCI_MAX_SLOTS
#define PCI_IO_BASE 0xc000

#define CFG_VENDOR 0x00
#define CFG_COMMAND 0x04
#define CFG_REVISION 0x08
#define CFG_HEADER_TYPE 0x0e
#define CFG_BAR0 0x10
#define CFG_SUBSYS 0x2c
#define CFG_INT_LINE 0x3c
#define CFG_INT_PIN 0x3d
#define I440FX_VENDOR 0x8086
#define I440FX_DEVICE 0x1237
#define I440FX_PAM0 0x59           /* PAM0-6: shadow RAM attributes, read back */
#define I440FX_PAM6 0x5f

static struct pci_state {
    uint32_t addr;                /* the 0xcf8 register */
    struct pci_dev host;
    struct pci_dev *slot[PCI_MAX_SLOTS];
    int n_slots;
    uint16_t next_io;
} pci;

static void pci_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void pci_put32(uint8_t *p, uint32_t v) { pci_put16(p, (uint16_t)v); pci_put16(p + 2, (uint16_t)(v >> 16)); }

int vm_pci_slot_irq(int slot)
{
    static const int irqs[VM_PCI_MAX_SLOTS] = VM_PCI_IRQS;
    return slot >= 0 && slot < VM_PCI_MAX_SLOTS ? irqs[slot] : 0;
}

int pci_dev_irq(const struct pci_dev *d) { return vm_pci_slot_irq(d->slot); }

static void pci_fill_cfg(struct pci_dev *d)
{
    memset(d->cfg, 0, sizeof(d->cfg));
    pci_put16(d->cfg + CFG_VENDOR, d->vendor);
    pci_put16(d->cfg + CFG_VENDOR + 2, d->device);
    pci_put32(d->cfg + CFG_REVISION, d->class_code << 8 | d->revision);
    pci_put16(d->cfg + CFG_SUBSYS, d->subsys_vendor);
    pci_put16(d->cfg + CFG_SUBSYS + 2, d->subsys_id);
    if (d->bar0_size) {
        pci_put32(d->cfg + CFG_BAR0, (uint32_t)d->bar0_port | 1u);
        pci_put16(d->cfg + CFG_COMMAND, 0x1);   /* I/O decoding on, like firmware leaves it */
        d->cfg[CFG_INT_LINE] = (uint8_t)pci_dev_irq(d);
        d->cfg[CFG_INT_PIN] = 1;                /* INTA */
    }
}

int pci_add(struct vm *vm, struct pci_dev *d)
{
    (void)vm;
    if (pci.n_slots >= PCI_MAX_SLOTS)
        return -1;
    d->slot = pci.n_slots;
    if (d->bar0_size && !vm_pci_slot_irq(pci.n_slots))
        return -1;   /* no IRQ to give it */
    if (d->bar0_size) {
        d->bar0_port = pci.next_io;
        pci.next_io = (uint16_t)(pci.next_io + (d->bar0_size < 0x100 ? 0x100 : d->bar0_size));
    }
    pci_fill_cfg(d);
    pci.slot[pci.n_slots++] = d;
    return 0;
}

static struct pci_dev *pci_selected(unsigned *reg)
{
    if (!(pci.addr & 0x80000000u))
        return NULL;
    unsigned bus = (pci.addr >> 16) & 0xff, dev = (pci.addr >> 11) & 0x1f,
             fn = (pci.addr >> 8) & 7;
    *reg = pci.addr & 0xfc;
    if (bus != 0 || fn != 0 || dev >= (unsigned)pci.n_slots)
        return NULL;
    return pci.slot[dev];
}

/* A config write: BAR0 keeps only its address bits (so that writing all
 * ones reads back the size), the read-only header bytes stay. */
static void pci_cfg_write(struct pci_dev *d, unsigned off, const uint8_t *data, unsigned len)
{
    for (unsigned i = 0; i < len && off + i < 256; i++) {
        unsigned o = off + i;
        if (o == CFG_COMMAND || o == CFG_COMMAND + 1 || o == CFG_INT_LINE || o == 0x0c ||
            o == 0x0d || (o >= CFG_BAR0 && o < CFG_BAR0 + 4) ||
            (d == &pci.host && d->vendor == I440FX_VENDOR && o >= I440FX_PAM0 &&
             o <= I440FX_PAM6))
            d->cfg[o] = data[i];
    }
    if (off < CFG_BAR0 + 4 && off + len > CFG_BAR0) {
        uint32_t bar = (uint32_t)d->cfg[CFG_BAR0] | (uint32_t)d->cfg[CFG_BAR0 + 1] << 8 |
                       (uint32_t)d->cfg[CFG_BAR0 + 2] << 16 | (uint32_t)d->cfg[CFG_BAR0 + 3] << 24;
        /* all 32 address bits read back, as on qemu: SeaBIOS takes the
         * size from the whole register (0xffffffc1 -> 64 bytes) */
        bar = d->bar0_size ? ((bar & ~(d->bar0_size - 1)) | 1u) : 0;
        pci_put32(d->cfg + CFG_BAR0, bar);
        /* a BAR moved past the 64 KiB port space decodes nothing we route */
        if (d->bar0_size)
            d->bar0_port = bar >> 16 ? 0 : (uint16_t)(bar & ~3u);
    }
}

static void pci_io(struct vm *vm, void *opaque, uint64_t port, uint8_t *data,
                   unsigned len, bool is_write)
{
    (void)opaque;
    pthread_mutex_lock(&vm->lock);
    if (port < PCI_CONF_DATA) {
        unsigned sh = (unsigned)(port - PCI_CONF_ADDR) * 8;
        if (is_write && len == 1 && port == PCI_RESET_CTRL && (data[0] & 4)) {
            pthread_mutex_unlock(&vm->lock);
            vm_finish(vm, VM_PANIC, "guest reset (port 0xcf9) before the prompt");
            return;
        }
        for (unsigned i = 0; i < len && sh + i * 8 < 32; i++) {
            unsigned s = sh + i * 8;
            if (is_write)
                pci.addr = (pci.addr & ~(0xffu << s)) | (uint32_t)data[i] << s;
            else
                data[i] = (uint8_t)(pci.addr >> s);
        }
    } else {
        unsigned reg;
        struct pci_dev *d = pci_selected(&reg);
        unsigned off = reg + (unsigned)(port - PCI_CONF_DATA);
        if (!d) {
            if (!is_write)
                memset(data, 0xff, len);
        } else if (is_write) {
            pci_cfg_write(d, off, data, len);
        } else {
            for (unsigned i = 0; i < len; i++)
                data[i] = off + i < 256 ? d->cfg[off + i] : 0xff;
        }
    }
    pthread_mutex_unlock(&vm->lock);
}

/* The I/O window: routes to the device whose BAR0 holds the port, where
 * the guest last put it, if its I/O decoding is on. */
static void pci_window_io(struct vm *vm, void *opaque, uint64_t port, uint8_t *data,
                          unsigned len, bool is_write)
{
    (void)opaque;
    for (int i = 0; i < pci.n_slots; i++) {
        struct pci_dev *d = pci.slot[i];
        if (d->bar0_size && d->bar0_io && (d->cfg[CFG_COMMAND] & 1) &&
            port >= d->bar0_port && port - d->bar0_port < d->bar0_size) {
            d->bar0_io(vm, d->opaque, port - d->bar0_port, data, len, is_write);
            return;
        }
    }
    if (!is_write)
        memset(data, 0xff, len);
}

static int pci_init(struct vm *vm, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    memset(&pci, 0, sizeof(pci));
    pci.next_io = PCI_IO_BASE;
    pci.host = (struct pci_dev){
        .vendor = 0x1b36, .device = 0x0008,   /* Red Hat, generic host bridge */
        .class_code = 0x060000,
    };
    if (vm->cfg.firmware)
        pci.host = (struct pci_dev){
            /* SeaBIOS believes it runs on qemu (and reads fw_cfg) only
             * when 00:00.0 has qemu's subsystem IDs; as an i440FX it also
             * finds the PAM registers it opens shadow RAM with */
            .vendor = I440FX_VENDOR, .device = I440FX_DEVICE, .class_code = 0x060000,
            .revision = 2, .subsys_vendor = 0x1af4, .subsys_id = 0x1100,
        };
    pci_add(vm, &pci.host);
    if (vm_io_register(vm, PCI_CONF_ADDR, 8, false, pci_io, NULL) < 0)
        return -1;
    return vm_io_register(vm, PCI_IO_BASE, 0x10000 - PCI_IO_BASE, false, pci_window_io, NULL);
}

const struct vm_device pci_device = { .name = "pci", .init = pci_init };
