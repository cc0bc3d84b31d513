/* ports.c - the legacy PC ports a guest touches that vdboot deliberately
 * does not model, listed so that each one is a decision, not an accident
 * (reads return all ones or zero as noted, writes are dropped).  The PIC
 * (0x20, 0xa0, 0x4d0), the PIT (0x40-0x43) and port 0x61 are in the kernel's
 * irqchip.  Two writes here do matter: the reset requests (0xcf9 is in pci.c). */
#include "vmm.h"

#include <string.h>

struct ignored_ports { uint16_t base, len; uint8_t read_value; const char *why; };

static const struct ignored_ports ports_ignored[] = {
    { 0x0060, 1, 0x00, "i8042 data: no keyboard" },
    { 0x0070, 2, 0x00, "CMOS/RTC: reads 0 (valid BCD, update-in-progress clear)" },
    { 0x0080, 1, 0xff, "POST code / I/O delay" },
    { 0x0087, 1, 0xff, "DMA page register (probed by floppy)" },
    { 0x00ed, 1, 0xff, "I/O delay port" },
    { 0x00f0, 16, 0xff, "math coprocessor (FERR#)" },
    { 0x0170, 8, 0xff, "secondary IDE: no disk" },
    { 0x01f0, 8, 0xff, "primary IDE: no disk" },
    { 0x0278, 3, 0xff, "LPT2" },
    { 0x02e8, 8, 0xff, "COM4: absent" },
    { 0x02f8, 8, 0xff, "COM2: absent" },
    { 0x0376, 1, 0xff, "secondary IDE control" },
    { 0x0378, 3, 0xff, "LPT1" },
    { 0x03b0, 48, 0xff, "VGA: no display (the console is serial)" },
    { 0x03e8, 8, 0xff, "COM3: absent" },
    { 0x03f0, 6, 0xff, "floppy controller: absent" },
    { 0x03f6, 1, 0xff, "primary IDE control" },
    { 0x03f7, 1, 0xff, "floppy digital input" },
    { 0x0510, 12, 0xff, "qemu fw_cfg: not qemu" },
};

#define RESET_PORT_92 0x92       /* system control port A: bit 0 = reset */
#define RESET_PORT_KBC 0x64      /* i8042 command 0xfe = pulse reset line */

static void ports_ignored_io(struct vm *vm, void *opaque, uint64_t addr,
                             uint8_t *data, unsigned len, bool is_write)
{
    (void)vm; (void)addr;
    const struct ignored_ports *p = opaque;
    if (!is_write)
        memset(data, p->read_value, len);
}

static void ports_reset_io(struct vm *vm, void *opaque, uint64_t addr,
                           uint8_t *data, unsigned len, bool is_write)
{
    (void)opaque; (void)len;
    if (!is_write) {
        /* i8042 status: nothing to read, input buffer empty */
        data[0] = 0;
        return;
    }
    if ((addr == RESET_PORT_92 && (data[0] & 1)) ||
        (addr == RESET_PORT_KBC && data[0] == 0xfe))
        vm_finish(vm, VM_PANIC, "guest reset (write 0x%02x to port 0x%llx) before the prompt "
                  "(last line: %s)", data[0], (unsigned long long)addr, console_last_line(vm->con));
}

static int ports_init(struct vm *vm, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    for (size_t i = 0; i < sizeof(ports_ignored) / sizeof(ports_ignored[0]); i++)
        if (vm_io_register(vm, ports_ignored[i].base, ports_ignored[i].len, false,
                           ports_ignored_io, (void *)&ports_ignored[i]) < 0)
            return -1;
    if (vm_io_register(vm, RESET_PORT_92, 1, false, ports_reset_io, NULL) < 0 ||
        vm_io_register(vm, RESET_PORT_KBC, 1, false, ports_reset_io, NULL) < 0)
        return -1;
    return 0;
}

const struct vm_device ports_device = { .name = "ports", .init = ports_init };
