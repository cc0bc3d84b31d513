/* fw_cfg.c - qemu's firmware configuration device (selector port 0x510,
 * data port 0x511), the way SeaBIOS learns about the machine it runs on.
 *
 * The guest writes a 16-bit key to the selector and reads the item's bytes
 * one at a time from the data port; reads past an item's end, and of keys
 * we do not define, give 0, as qemu's do.  Only the port interface is
 * offered (the ID says no DMA), and nothing is writable.
 *
 * Items: the "QEMU" signature, the interface ID, -nographic (so SeaBIOS
 * mirrors its screen output to COM1: its banner and "Booting from Hard
 * Disk..." reach the serial console vdboot watches), the CPU counts, and
 * the file directory with its files:
 *   etc/e820          the RAM map (SeaBIOS also finds the sizes in CMOS,
 *                     cmos.c), the last page of low RAM reserved for ACPI
 *   etc/acpi/rsdp     the RSDP of vdboot's own ACPI tables (acpi.c), which
 *                     sit in that reserved page with their final addresses
 *   etc/table-loader  one command: place etc/acpi/rsdp in the F segment,
 *                     where guests look for it (nothing to patch: the
 *                     tables are already where the RSDP says)
 * so a kernel under SeaBIOS finds the same MADT, FADT and DSDT as in a
 * direct boot: its CPUs, the IOAPIC and the PCI interrupt routing. */
#include "vmm.h"

#include <string.h>

#define FW_CFG_PORT 0x510
#define FW_CFG_DATA 0x511
#define FW_CFG_PORTS 12               /* 0x510-0x51b, the DMA address included */

enum { FW_CFG_SIGNATURE = 0x00, FW_CFG_ID = 0x01, FW_CFG_NOGRAPHIC = 0x04,
       FW_CFG_NB_CPUS = 0x05, FW_CFG_MAX_CPUS = 0x0f, FW_CFG_FILE_DIR = 0x19,
       FW_CFG_FILE_FIRST = 0x20 };
#define FW_CFG_ID_TRADITIONAL 1        /* port interface only, no DMA */
#define FW_CFG_NAME_MAX 56
#define E820_RAM 1
#define E820_RESERVED 2
#define E820_ENTRY 20                  /* u64 address, u64 length, u32 type */
#define LOADER_ENTRY 128               /* SeaBIOS's romfile_loader_entry_s */
#define LOADER_ALLOCATE 1
#define LOADER_ZONE_FSEG 2
#define LOADER_FILE_MAX 56

struct fw_cfg_item {
    uint16_t key;
    const char *file;                  /* a name in the directory, or NULL */
    uint8_t *data;
    uint32_t len;
};

static struct fw_cfg_state {
    int current;                       /* index into items[], or -1: none */
    uint32_t offset;
    struct fw_cfg_item items[12];
    int n_items;
    uint8_t signature[4], id[4], nographic[2], nb_cpus[2], max_cpus[2];
    uint8_t e820[3 * E820_ENTRY];
    uint8_t rsdp[VM_ACPI_RSDP_LEN];
    uint8_t loader[LOADER_ENTRY];
    uint8_t dir[4 + 64 * 4];           /* count, then one 64-byte entry a file */
} fwc;

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

static void fw_cfg_add(uint16_t key, const char *file, uint8_t *data, uint32_t len)
{
    if (fwc.n_items < (int)(sizeof(fwc.items) / sizeof(fwc.items[0])))
        fwc.items[fwc.n_items++] = (struct fw_cfg_item){ key, file, data, len };
}

static void fw_cfg_select(uint16_t key)
{
    fwc.current = -1;
    fwc.offset = 0;
    for (int i = 0; i < fwc.n_items; i++)
        if (fwc.items[i].key == key)
            fwc.current = i;
}

static uint8_t fw_cfg_next_byte(void)
{
    if (fwc.current < 0)
        return 0;
    const struct fw_cfg_item *it = &fwc.items[fwc.current];
    if (fwc.offset >= it->len)
        return 0;
    return it->data[fwc.offset++];
}

static void fw_cfg_io(struct vm *vm, void *opaque, uint64_t port, uint8_t *data, unsigned len,
                      bool is_write)
{
    (void)opaque;
    pthread_mutex_lock(&vm->lock);
    if (port == FW_CFG_PORT) {
        /* the selector: a 16-bit write (one byte selects a key < 256) */
        if (is_write)
            fw_cfg_select((uint16_t)(data[0] | (len > 1 ? data[1] << 8 : 0)));
        else
            memset(data, 0, len);
    } else if (port == FW_CFG_DATA && !is_write) {
        for (unsigned i = 0; i < len; i++)
            data[i] = fw_cfg_next_byte();
    } else if (!is_write) {
        memset(data, 0, len);          /* the DMA address registers: no DMA */
    }
    pthread_mutex_unlock(&vm->lock);
}

static void fw_cfg_e820(uint8_t *e, uint64_t addr, uint64_t len, uint32_t type)
{
    put_le(e, addr, 8);
    put_le(e + 8, len, 8);
    put_le(e + 16, type, 4);
}

static int fw_cfg_init(struct vm *vm, char *err, size_t errlen)
{
    memset(&fwc, 0, sizeof(fwc));
    uint64_t acpi_base = vm->low_size - VM_ACPI_AREA;
    if (vm->low_size < (16ull << 20) || acpi_write_at(vm, acpi_base, err, errlen) < 0)
        return -1;
    uint8_t *rsdp = vm_guest_ptr(vm, acpi_base, VM_ACPI_RSDP_LEN);
    memcpy(fwc.rsdp, rsdp, VM_ACPI_RSDP_LEN);
    fwc.current = -1;
    memcpy(fwc.signature, "QEMU", 4);
    put_le(fwc.id, FW_CFG_ID_TRADITIONAL, 4);
    put_le(fwc.nographic, 1, 2);
    put_le(fwc.nb_cpus, (uint64_t)vm->cfg.cpus, 2);
    put_le(fwc.max_cpus, (uint64_t)vm->cfg.cpus, 2);
    fw_cfg_add(FW_CFG_SIGNATURE, NULL, fwc.signature, 4);
    fw_cfg_add(FW_CFG_ID, NULL, fwc.id, 4);
    fw_cfg_add(FW_CFG_NOGRAPHIC, NULL, fwc.nographic, 2);
    fw_cfg_add(FW_CFG_NB_CPUS, NULL, fwc.nb_cpus, 2);
    fw_cfg_add(FW_CFG_MAX_CPUS, NULL, fwc.max_cpus, 2);

    /* etc/e820: low RAM from 0 (SeaBIOS reserves its own pieces of it:
     * the EBDA, 0xe0000-0xfffff), the ACPI page, the RAM above 4 GiB */
    uint32_t n = 2;
    fw_cfg_e820(fwc.e820, 0, acpi_base, E820_RAM);
    fw_cfg_e820(fwc.e820 + E820_ENTRY, acpi_base, VM_ACPI_AREA, E820_RESERVED);
    if (vm->mem_size > vm->low_size)
        fw_cfg_e820(fwc.e820 + E820_ENTRY * n++, VM_HIGH_BASE, vm->mem_size - vm->low_size,
                    E820_RAM);
    fw_cfg_add(FW_CFG_FILE_FIRST, "etc/e820", fwc.e820, n * E820_ENTRY);

    /* the loader's one command: ALLOCATE etc/acpi/rsdp, 16-byte aligned,
     * in the F segment */
    put_le(fwc.loader, LOADER_ALLOCATE, 4);
    strncpy((char *)fwc.loader + 4, "etc/acpi/rsdp", LOADER_FILE_MAX - 1);
    put_le(fwc.loader + 4 + LOADER_FILE_MAX, 16, 4);
    fwc.loader[4 + LOADER_FILE_MAX + 4] = LOADER_ZONE_FSEG;
    fw_cfg_add(FW_CFG_FILE_FIRST + 1, "etc/acpi/rsdp", fwc.rsdp, VM_ACPI_RSDP_LEN);
    fw_cfg_add(FW_CFG_FILE_FIRST + 2, "etc/table-loader", fwc.loader, LOADER_ENTRY);

    /* the directory: big-endian count, then size, key, reserved, name */
    uint32_t files = 0;
    for (int i = 0; i < fwc.n_items; i++) {
        const struct fw_cfg_item *it = &fwc.items[i];
        if (!it->file)
            continue;
        uint8_t *e = fwc.dir + 4 + 64 * files++;
        put_be(e, it->len, 4);
        put_be(e + 4, it->key, 2);
        strncpy((char *)e + 8, it->file, FW_CFG_NAME_MAX - 1);
    }
    put_be(fwc.dir, files, 4);
    fw_cfg_add(FW_CFG_FILE_DIR, NULL, fwc.dir, 4 + 64 * files);
    return vm_io_register(vm, FW_CFG_PORT, FW_CFG_PORTS, false, fw_cfg_io, NULL);
}

const struct vm_device fw_cfg_device = { .name = "fw_cfg", .init = fw_cfg_init };
