/* probe.c - the probe kernel: a freestanding 64-bit program booted through
 * the Linux boot protocol, that exercises every device a Linux guest needs
 * from vdboot in a few hundred thousand instructions:
 *
 *   probe: cmdline <the command line from boot_params>
 *   probe: pci 00:01.0 1af4:1001 class 010000
 *   probe: virtio-blk 00:01.0 io 0xc000 capacity 131072 sectors
 *   probe: sectors 0+64 crc32 0x1234abcd
 *   probe: acpi XSDT FACP APIC, \_S5 0, checksums ok
 *   probe: pm timer at 0x608 advances
 *   probe: cpus 2 of 2 (madt 2, mptable 2)
 *   probe login:
 *
 * Command line knobs (for tests of the VMM's outcome detection):
 *   probe.sectors=START+COUNT   what to read and checksum (default 0+64)
 *   probe.write=N               then write sector N and read it back
 *   probe.fault=triple|halt|panic|spin|poweroff  end in a triple fault, a
 *                               `cli; hlt`, a Linux-style panic message and
 *                               a spin, a spin with interrupts off (no exit
 *                               to the VMM ever), or an ACPI S5 poweroff.
 *   probe.button                at the prompt, enable the ACPI power button
 *                               and poll PM1_STS; when it is pressed, say
 *                               so, clear it and power off (ACPI S5). */
#include <stddef.h>
#include <stdint.h>

#define COM1 0x3f8
#define PCI_ADDR 0xcf8
#define PCI_DATA 0xcfc
#define LAPIC_BASE 0xfee00000ul
#define AP_TRAMPOLINE 0x8000ul      /* SIPI vector 0x08 */
#define AP_COUNTER 0x8100ul

/* boot_params offsets (Documentation/arch/x86/zero-page.rst) */
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_CMD_LINE_PTR 0x228

/* legacy virtio-pci registers (virtio 0.9.5 / 1.0 "legacy interface") */
#define VIRTIO_HOST_FEATURES 0x00
#define VIRTIO_GUEST_FEATURES 0x04
#define VIRTIO_QUEUE_PFN 0x08
#define VIRTIO_QUEUE_NUM 0x0c
#define VIRTIO_QUEUE_SEL 0x0e
#define VIRTIO_QUEUE_NOTIFY 0x10
#define VIRTIO_STATUS 0x12
#define VIRTIO_ISR 0x13
#define VIRTIO_BLK_CAPACITY 0x14
#define VIRTIO_ST_ACK 1
#define VIRTIO_ST_DRIVER 2
#define VIRTIO_ST_DRIVER_OK 4
#define VIRTQ_MAX 1024
#define VRING_F_NEXT 1
#define VRING_F_WRITE 2

static inline void outb(uint16_t p, uint8_t v) { __asm__ volatile("outb %0, %1" :: "a"(v), "Nd"(p)); }
static inline void outw(uint16_t p, uint16_t v) { __asm__ volatile("outw %0, %1" :: "a"(v), "Nd"(p)); }
static inline void outl(uint16_t p, uint32_t v) { __asm__ volatile("outl %0, %1" :: "a"(v), "Nd"(p)); }
static inline uint8_t inb(uint16_t p) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint16_t inw(uint16_t p) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline uint32_t inl(uint16_t p) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(p)); return v; }
static inline void mb(void) { __asm__ volatile("mfence" ::: "memory"); }
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

/* ---- console ----------------------------------------------------------- */

static void con_init(void)
{
    outb(COM1 + 1, 0x00);   /* no interrupts: the probe polls */
    outb(COM1 + 3, 0x80);   /* DLAB */
    outb(COM1 + 0, 0x01);   /* 115200 */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);   /* 8N1 */
    outb(COM1 + 2, 0x07);   /* FIFO on, cleared */
    outb(COM1 + 4, 0x03);   /* DTR RTS */
}

static void con_putc(char c)
{
    int spins = 100000;
    while (!(inb(COM1 + 5) & 0x20) && --spins)
        cpu_relax();
    outb(COM1, (uint8_t)c);
}

static void con_puts(const char *s)
{
    for (; *s; s++) {
        if (*s == '\n')
            con_putc('\r');
        con_putc(*s);
    }
}

static void con_hex(uint64_t v, int digits)
{
    char b[17];
    for (int i = digits - 1; i >= 0; i--, v >>= 4)
        b[i] = "0123456789abcdef"[v & 15];
    b[digits] = 0;
    con_puts(b);
}

static void con_dec(uint64_t v)
{
    char b[21];
    int i = 20;
    b[i] = 0;
    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    con_puts(b + i);
}

/* ---- small libc -------------------------------------------------------- */

void *memset(void *d, int c, size_t n)
{
    unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *p = a, *q = b;
    for (; n--; p++, q++)
        if (*p != *q)
            return *p - *q;
    return 0;
}

static size_t str_len(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static int str_starts(const char *s, const char *pfx)
{
    while (*pfx)
        if (*s++ != *pfx++)
            return 0;
    return 1;
}

/* Value of `key=` in the command line, or NULL; ends at a space. */
static const char *cmdline_get(const char *cmd, const char *key)
{
    for (const char *p = cmd; p && *p; p++) {
        if ((p == cmd || p[-1] == ' ') && str_starts(p, key))
            return p + str_len(key);
    }
    return NULL;
}

static uint64_t parse_num(const char **s)
{
    uint64_t v = 0;
    while (**s >= '0' && **s <= '9')
        v = v * 10 + (uint64_t)(*(*s)++ - '0');
    return v;
}

/* ---- crc32 (IEEE, as zlib's crc32) ------------------------------------- */

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc_update(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n--)
        crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- PCI --------------------------------------------------------------- */

static uint32_t pci_read(unsigned bdf, unsigned reg)
{
    outl(PCI_ADDR, 0x80000000u | (bdf << 8) | (reg & 0xfc));
    return inl(PCI_DATA);
}

static void pci_write(unsigned bdf, unsigned reg, uint32_t v)
{
    outl(PCI_ADDR, 0x80000000u | (bdf << 8) | (reg & 0xfc));
    outl(PCI_DATA, v);
}

/* Lists bus 0 and returns the devfn of the first legacy virtio-blk, or -1. */
static int pci_scan(void)
{
    int blk = -1;
    for (unsigned devfn = 0; devfn < 256; devfn++) {
        uint32_t id = pci_read(devfn, 0);
        if ((id & 0xffff) == 0xffff) {
            if ((devfn & 7) == 0)
                devfn += 7;     /* no function 0: no device */
            continue;
        }
        uint32_t cls = pci_read(devfn, 8) >> 8;
        con_puts("probe: pci 00:");
        con_hex(devfn >> 3, 2);
        con_puts(".");
        con_hex(devfn & 7, 1);
        con_puts(" ");
        con_hex(id & 0xffff, 4);
        con_puts(":");
        con_hex(id >> 16, 4);
        con_puts(" class ");
        con_hex(cls, 6);
        con_puts("\n");
        uint32_t sub = pci_read(devfn, 0x2c) >> 16;
        if (blk < 0 && (id & 0xffff) == 0x1af4 && (id >> 16) >= 0x1000 &&
            (id >> 16) <= 0x103f && sub == 2)
            blk = (int)devfn;
        uint32_t hdr = pci_read(devfn, 0x0c) >> 16;
        if ((devfn & 7) == 0 && !(hdr & 0x80))
            devfn += 7;         /* single-function device */
    }
    return blk;
}

/* ---- virtio-blk (legacy interface, polled) ----------------------------- */

struct vring_desc { uint64_t addr; uint32_t len; uint16_t flags, next; };
struct blk_req { uint32_t type, reserved; uint64_t sector; };

static uint8_t vq_mem[3 * 16384 + 8192] __attribute__((aligned(4096)));
static uint8_t blk_buf[512 * 128] __attribute__((aligned(4096)));
static struct blk_req req;
static volatile uint8_t req_status;

static struct {
    uint16_t io, num, last_used, avail_idx;
    struct vring_desc *desc;
    volatile uint16_t *avail;     /* flags, idx, ring[] */
    volatile uint16_t *used;      /* flags, idx, {u32 id, u32 len}[] */
} vq;

static int blk_init(int devfn)
{
    uint32_t bar0 = pci_read((unsigned)devfn, 0x10);
    if (!(bar0 & 1)) {
        con_puts("probe: virtio-blk BAR0 is not I/O\n");
        return -1;
    }
    pci_write((unsigned)devfn, 0x04, pci_read((unsigned)devfn, 0x04) | 0x5); /* I/O + bus master */
    vq.io = (uint16_t)(bar0 & ~3u);
    outb(vq.io + VIRTIO_STATUS, 0);
    outb(vq.io + VIRTIO_STATUS, VIRTIO_ST_ACK | VIRTIO_ST_DRIVER);
    outl(vq.io + VIRTIO_GUEST_FEATURES, 0);
    outw(vq.io + VIRTIO_QUEUE_SEL, 0);
    vq.num = inw(vq.io + VIRTIO_QUEUE_NUM);
    if (vq.num == 0 || vq.num > VIRTQ_MAX || (vq.num & (vq.num - 1))) {
        con_puts("probe: virtio-blk queue size unusable\n");
        return -1;
    }
    /* legacy layout: descriptors, avail ring, then used ring 4 KiB aligned */
    uint64_t base = (uint64_t)(uintptr_t)vq_mem;
    uint64_t used = (base + 16u * vq.num + 6u + 2u * vq.num + 4095) & ~4095ull;
    memset(vq_mem, 0, sizeof(vq_mem));
    vq.desc = (struct vring_desc *)base;
    vq.avail = (volatile uint16_t *)(base + 16u * vq.num);
    vq.used = (volatile uint16_t *)used;
    outl(vq.io + VIRTIO_QUEUE_PFN, (uint32_t)(base >> 12));
    outb(vq.io + VIRTIO_STATUS, VIRTIO_ST_ACK | VIRTIO_ST_DRIVER | VIRTIO_ST_DRIVER_OK);
    return 0;
}

static int blk_io(uint32_t type, uint64_t sector, void *buf, uint32_t count)
{
    uint16_t dflags = type == 0 ? VRING_F_NEXT | VRING_F_WRITE : VRING_F_NEXT;
    req.type = type;   /* VIRTIO_BLK_T_IN 0, _OUT 1 */
    req.reserved = 0;
    req.sector = sector;
    req_status = 0xff;
    vq.desc[0] = (struct vring_desc){ (uintptr_t)&req, sizeof(req), VRING_F_NEXT, 1 };
    vq.desc[1] = (struct vring_desc){ (uintptr_t)buf, count * 512, dflags, 2 };
    vq.desc[2] = (struct vring_desc){ (uintptr_t)&req_status, 1, VRING_F_WRITE, 0 };
    vq.avail[2 + (vq.avail_idx % vq.num)] = 0;
    mb();
    vq.avail[1] = ++vq.avail_idx;
    mb();
    outw(vq.io + VIRTIO_QUEUE_NOTIFY, 0);
    for (uint32_t spins = 0; vq.used[1] == vq.last_used; spins++) {
        if (spins > 50000000u) {
            con_puts("probe: virtio-blk request timed out\n");
            return -1;
        }
        cpu_relax();
    }
    vq.last_used++;
    (void)inb(vq.io + VIRTIO_ISR);  /* acknowledge the interrupt line */
    if (req_status != 0) {
        con_puts("probe: virtio-blk request failed, status ");
        con_dec(req_status);
        con_puts("\n");
        return -1;
    }
    return 0;
}

static int blk_read(uint64_t sector, void *buf, uint32_t count)
{
    return blk_io(0, sector, buf, count);
}

/* probe.write=N: write a pattern to sector N, read it back (the write goes
 * to vdboot's overlay; the image must not change). */
static void blk_write_test(const char *cmd)
{
    const char *s = cmdline_get(cmd, "probe.write=");
    if (!s)
        return;
    uint64_t sector = parse_num(&s);
    for (int i = 0; i < 512; i++)
        blk_buf[i] = (uint8_t)(0x5a ^ i);
    if (blk_io(1, sector, blk_buf, 1) < 0)
        return;
    memset(blk_buf, 0, 512);
    if (blk_read(sector, blk_buf, 1) < 0)
        return;
    int ok = 1;
    for (int i = 0; i < 512; i++)
        ok &= blk_buf[i] == (uint8_t)(0x5a ^ i);
    con_puts("probe: wrote sector ");
    con_dec(sector);
    con_puts(ok ? ", read back ok\n" : ", read back WRONG\n");
}

static void blk_probe(int devfn, const char *cmd)
{
    uint64_t start = 0, count = 64;
    const char *s = cmdline_get(cmd, "probe.sectors=");
    if (s) {
        start = parse_num(&s);
        if (*s == '+') {
            s++;
            count = parse_num(&s);
        }
    }
    if (blk_init(devfn) < 0)
        return;
    uint64_t cap = (uint64_t)inl(vq.io + VIRTIO_BLK_CAPACITY) |
                   (uint64_t)inl(vq.io + VIRTIO_BLK_CAPACITY + 4) << 32;
    con_puts("probe: virtio-blk 00:");
    con_hex((unsigned)devfn >> 3, 2);
    con_puts(".");
    con_hex((unsigned)devfn & 7, 1);
    con_puts(" io 0x");
    con_hex(vq.io, 4);
    con_puts(" capacity ");
    con_dec(cap);
    con_puts(" sectors\n");
    if (start > cap || count > cap - start) {
        con_puts("probe: sectors out of range\n");
        return;
    }
    uint32_t crc = 0;
    for (uint64_t done = 0; done < count;) {
        uint32_t n = count - done > 128 ? 128 : (uint32_t)(count - done);
        if (blk_read(start + done, blk_buf, n) < 0)
            return;
        crc = crc_update(crc, blk_buf, n * 512u);
        done += n;
    }
    blk_write_test(cmd);
    con_puts("probe: sectors ");
    con_dec(start);
    con_puts("+");
    con_dec(count);
    con_puts(" crc32 0x");
    con_hex(crc, 8);
    con_puts("\n");
}

/* ---- ACPI: RSDP -> XSDT (or RSDT) -> MADT, FADT -> DSDT's \_S5 --------- */

static struct {
    unsigned cpus;          /* enabled Local APIC entries in the MADT */
    unsigned tables, bad;   /* tables seen, tables with a wrong checksum */
    uint16_t pm1a_cnt;      /* from the FADT */
    uint16_t pm1a_evt, pm_tmr;
    int s5_typ;             /* SLP_TYPa of \_S5, or -1 */
    char sigs[40];          /* the signatures found, in order */
} acpi = { .s5_typ = -1 };

static uint8_t sum8(const uint8_t *p, size_t n)
{
    uint8_t s = 0;
    while (n--)
        s = (uint8_t)(s + *p++);
    return s;
}

static uint32_t le32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t le64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static const uint8_t *acpi_rsdp(void)
{
    for (uint64_t a = 0xe0000; a < 0x100000; a += 16) {
        const uint8_t *p = (const uint8_t *)a;
        if (memcmp(p, "RSD PTR ", 8) == 0 && sum8(p, 20) == 0 &&
            (p[15] < 2 || sum8(p, 36) == 0))
            return p;
    }
    return NULL;
}

/* A table below 4 GiB (the probe's identity map) with a sane length; a
 * wrong checksum is counted, the table still read. */
static const uint8_t *acpi_table(uint64_t addr)
{
    if (!addr || addr >= (4ull << 30) - 0x10000)
        return NULL;
    const uint8_t *t = (const uint8_t *)(uintptr_t)addr;
    uint32_t len = le32(t + 4);
    if (len < 36 || len > 0x10000)
        return NULL;
    acpi.tables++;
    if (sum8(t, len) != 0)
        acpi.bad++;
    return t;
}

static void acpi_madt(const uint8_t *t)
{
    uint32_t len = le32(t + 4);
    for (uint32_t o = 44; o + 2 <= len && t[o + 1] >= 2; o += t[o + 1]) {
        if (t[o] == 0 && t[o + 1] >= 8 && (le32(t + o + 4) & 1))
            acpi.cpus++;            /* Processor Local APIC, enabled */
        else if (t[o] == 9 && t[o + 1] >= 16 && (le32(t + o + 8) & 1))
            acpi.cpus++;            /* Processor Local x2APIC, enabled */
    }
}

/* \_S5: NameOp "_S5_" PackageOp PkgLength NumElements SLP_TYPa ... */
static void acpi_dsdt_s5(const uint8_t *t)
{
    uint32_t len = le32(t + 4);
    for (uint32_t o = 36; o + 12 <= len; o++) {
        if (memcmp(t + o, "_S5_", 4) != 0 || t[o + 4] != 0x12)
            continue;
        uint32_t e = o + 5 + 1 + (t[o + 5] >> 6) + 1;   /* past PkgLength, NumElements */
        if (e + 2 > len)
            return;
        if (t[e] == 0x00 || t[e] == 0x01)
            acpi.s5_typ = t[e];                 /* ZeroOp, OneOp */
        else if (t[e] == 0x0a)
            acpi.s5_typ = t[e + 1];             /* BytePrefix */
        return;
    }
}

static void acpi_fadt(const uint8_t *t)
{
    uint32_t len = le32(t + 4);
    acpi.pm1a_cnt = (uint16_t)le32(t + 64);
    acpi.pm1a_evt = (uint16_t)le32(t + 56);
    acpi.pm_tmr = (uint16_t)le32(t + 76);
    uint64_t dsdt = len >= 148 && le64(t + 140) ? le64(t + 140) : le32(t + 40);
    const uint8_t *d = acpi_table(dsdt);
    if (d && memcmp(d, "DSDT", 4) == 0)
        acpi_dsdt_s5(d);
}

static void acpi_scan(void)
{
    const uint8_t *rsdp = acpi_rsdp();
    if (!rsdp)
        return;
    int x = rsdp[15] >= 2 && le64(rsdp + 24);
    const uint8_t *root = acpi_table(x ? le64(rsdp + 24) : le32(rsdp + 16));
    if (!root)
        return;
    size_t n = 0;
    memcpy(acpi.sigs + n, root, 4), n += 4;
    uint32_t len = le32(root + 4), step = x ? 8 : 4;
    for (uint32_t o = 36; o + step <= len; o += step) {
        const uint8_t *t = acpi_table(x ? le64(root + o) : le32(root + o));
        if (!t)
            continue;
        if (n + 5 < sizeof(acpi.sigs)) {
            acpi.sigs[n++] = ' ';
            memcpy(acpi.sigs + n, t, 4), n += 4;
        }
        if (memcmp(t, "APIC", 4) == 0)
            acpi_madt(t);
        else if (memcmp(t, "FACP", 4) == 0)
            acpi_fadt(t);
    }
}

static void acpi_report(void)
{
    con_puts("probe: acpi ");
    if (!acpi.tables) {
        con_puts("none\n");
        return;
    }
    con_puts(acpi.sigs);
    con_puts(", \\_S5 ");
    if (acpi.s5_typ >= 0)
        con_dec((uint64_t)acpi.s5_typ);
    else
        con_puts("missing");
    con_puts(acpi.bad ? ", checksums BAD\n" : ", checksums ok\n");
}

/* probe.fault=poweroff: what Linux's ACPI poweroff does, SLP_TYPa of \_S5
 * then SLP_EN into PM1a_CNT. */
static void acpi_poweroff(void)
{
    if (acpi.pm1a_cnt && acpi.s5_typ >= 0) {
        con_puts("probe: powering off (ACPI S5)\n");
        outw(acpi.pm1a_cnt, (uint16_t)(acpi.s5_typ << 10));
        outw(acpi.pm1a_cnt, (uint16_t)(acpi.s5_typ << 10 | 0x2000));
    }
    con_puts("probe: ACPI poweroff did not power off\n");
    for (;;)
        __asm__ volatile("cli; hlt");
}

/* ---- CPUs: MP table, then INIT-SIPI-SIPI ------------------------------- */

static const uint8_t *mp_find(uint64_t base, uint64_t len)
{
    for (uint64_t a = base; a + 16 <= base + len; a += 16) {
        const uint8_t *p = (const uint8_t *)a;
        if (p[0] == '_' && p[1] == 'M' && p[2] == 'P' && p[3] == '_') {
            uint8_t sum = 0;
            for (int i = 0; i < 16; i++)
                sum = (uint8_t)(sum + p[i]);
            if (sum == 0)
                return p;
        }
    }
    return NULL;
}

/* Processor entries in the MP configuration table, or 0 without one. */
static unsigned mp_count_cpus(void)
{
    const uint8_t *fp = mp_find(0x9fc00, 0x400);
    if (!fp)
        fp = mp_find(0xf0000, 0x10000);
    if (!fp)
        return 0;
    uint32_t cfg;
    memcpy(&cfg, fp + 4, 4);
    const uint8_t *t = (const uint8_t *)(uintptr_t)cfg;
    if (!cfg || t[0] != 'P' || t[1] != 'C' || t[2] != 'M' || t[3] != 'P')
        return 0;
    uint16_t len, entries;
    memcpy(&len, t + 4, 2);
    memcpy(&entries, t + 34, 2);
    const uint8_t *e = t + 44, *end = t + len;
    unsigned cpus = 0;
    for (unsigned i = 0; i < entries && e < end; i++) {
        if (e[0] == 0) {
            if (e[3] & 1)   /* enabled */
                cpus++;
            e += 20;
        } else {
            e += 8;
        }
    }
    return cpus;
}

extern const uint8_t ap_tramp_start[], ap_tramp_end[];

static void lapic_write(unsigned reg, uint32_t v)
{
    *(volatile uint32_t *)(LAPIC_BASE + reg) = v;
}

static void lapic_wait_icr(void)
{
    for (int i = 0; i < 100000 && (*(volatile uint32_t *)(LAPIC_BASE + 0x300) & 0x1000); i++)
        cpu_relax();
}

/* Starts every other CPU in real mode at AP_TRAMPOLINE, where each one
 * increments AP_COUNTER and halts.  Returns how many CPUs run, self included. */
static unsigned cpus_start(unsigned expected)
{
    volatile uint16_t *counter = (volatile uint16_t *)AP_COUNTER;
    memcpy((void *)AP_TRAMPOLINE, ap_tramp_start, (size_t)(ap_tramp_end - ap_tramp_start));
    *counter = 0;
    mb();
    if (expected > 1) {
        lapic_write(0xf0, 0x1ff);           /* spurious vector, APIC enabled */
        lapic_write(0x310, 0);
        lapic_write(0x300, 0x000c4500);     /* INIT, all excluding self */
        lapic_wait_icr();
        for (int k = 0; k < 2; k++) {
            lapic_write(0x310, 0);
            lapic_write(0x300, 0x000c4600 | (AP_TRAMPOLINE >> 12)); /* SIPI */
            lapic_wait_icr();
        }
        for (uint32_t spins = 0; *counter + 1u < expected && spins < 2000000u; spins++)
            cpu_relax();
    }
    return *counter + 1u;
}

/* ---- int3 self-test ---------------------------------------------------- */

/* Linux runs int3 early (its self-test, text patching); a nested software
 * KVM cannot, unless the VMM raises the #BP itself.  Check that the trap
 * arrives once and returns to the next instruction. */
extern void probe_bp_handler(void);
volatile uint64_t probe_bp_count;
static uint64_t idt[2 * 256] __attribute__((aligned(16)));

static void int3_selftest(void)
{
    uint64_t h = (uint64_t)(uintptr_t)probe_bp_handler;
    uint16_t cs;
    __asm__ volatile("mov %%cs, %0" : "=r"(cs));
    /* 64-bit interrupt gate: offset, selector, present | DPL3 | type 0xe */
    idt[2 * 3] = (h & 0xffff) | ((uint64_t)cs << 16) | (0xeeull << 40) |
                 ((h >> 16) & 0xffff) << 48;
    idt[2 * 3 + 1] = h >> 32;
    struct __attribute__((packed)) { uint16_t limit; uint64_t base; } d = {
        sizeof(idt) - 1, (uint64_t)(uintptr_t)idt };
    __asm__ volatile("lidt %0" :: "m"(d));
    int after = 0;
    __asm__ volatile("int3; movl $1, %0" : "=r"(after) :: "memory");
    con_puts(probe_bp_count == 1 && after == 1 ? "probe: int3 trap ok\n"
                                               : "probe: int3 trap FAILED\n");
}

/* What CPUID tells this guest: the VMM hides what a nested KVM cannot run. */
static void cpuid_report(void)
{
    uint32_t a, b, c, d, b7, c7, d7;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b7), "=c"(c7), "=d"(d7) : "a"(7), "c"(0));
    con_puts("probe: cpuid 1 ecx 0x");
    con_hex(c, 8);
    con_puts(" edx 0x");
    con_hex(d, 8);
    con_puts(" 7 ebx 0x");
    con_hex(b7, 8);
    con_puts(c & (1u << 26) ? " xsave" : " no-xsave");
    con_puts(c & (1u << 13) ? " cx16\n" : " no-cx16\n");
}

/* The PM timer: two reads a while apart differ, and stay in 24 bits. */
static void acpi_pm_timer_report(void)
{
    if (!acpi.pm_tmr) {
        con_puts("probe: no pm timer\n");
        return;
    }
    uint32_t a = inl(acpi.pm_tmr), b = a;
    for (unsigned i = 0; i < 10000000 && b == a; i++)
        b = inl(acpi.pm_tmr);
    con_puts("probe: pm timer at 0x");
    con_hex(acpi.pm_tmr, 3);
    con_puts(b != a && a < (1u << 24) && b < (1u << 24) ? " advances\n" : " BROKEN\n");
}

/* probe.button: the fixed power button, polled (the probe takes no
 * interrupts: its IDT is empty) */
static void acpi_wait_button(void)
{
    if (!acpi.pm1a_evt) {
        con_puts("probe: no PM1a event block\n");
        return;
    }
    outw(acpi.pm1a_evt + 2, 0x0100);          /* PWRBTN_EN */
    while (!(inw(acpi.pm1a_evt) & 0x0100))
        cpu_relax();
    outw(acpi.pm1a_evt, 0x0100);              /* write 1 to clear */
    con_puts("probe: power button pressed (PM1_STS after clearing 0x");
    con_hex(inw(acpi.pm1a_evt), 4);
    con_puts(")\n");
    acpi_poweroff();
}

/* ---- faults on request ------------------------------------------------- */

static void do_fault(const char *what)
{
    if (str_starts(what, "triple")) {
        con_puts("probe: triple fault requested\n");
        struct __attribute__((packed)) { uint16_t limit; uint64_t base; } idt = { 0, 0 };
        __asm__ volatile("lidt %0; int3" :: "m"(idt));
    } else if (str_starts(what, "halt")) {
        con_puts("probe: halting with interrupts off\n");
        for (;;)
            __asm__ volatile("cli; hlt");
    } else if (str_starts(what, "spin")) {
        /* never exits to the VMM: only a kick ends KVM_RUN */
        con_puts("probe: spinning with interrupts off\n");
        __asm__ volatile("cli; 1: jmp 1b");
    } else if (str_starts(what, "poweroff")) {
        acpi_scan();
        acpi_poweroff();
    } else if (str_starts(what, "panic")) {
        con_puts("Kernel panic - not syncing: probe.fault=panic\n");
        for (;;)
            cpu_relax();
    }
}

void probe_main(const uint8_t *boot_params)
{
    uint32_t lo, hi;
    memcpy(&lo, boot_params + BP_CMD_LINE_PTR, 4);
    memcpy(&hi, boot_params + BP_EXT_CMD_LINE_PTR, 4);
    const char *cmd = (const char *)(uintptr_t)((uint64_t)hi << 32 | lo);

    con_init();
    crc_init();
    con_puts("probe: vdisk probe kernel 1\n");
    con_puts("probe: cmdline ");
    con_puts(cmd ? cmd : "");
    con_puts("\n");
    const char *fault = cmd ? cmdline_get(cmd, "probe.fault=") : NULL;
    if (fault)
        do_fault(fault);

    int3_selftest();
    cpuid_report();
    int blk = pci_scan();
    if (blk >= 0)
        blk_probe(blk, cmd ? cmd : "");
    else
        con_puts("probe: no virtio-blk device\n");

    acpi_scan();
    acpi_report();
    acpi_pm_timer_report();
    unsigned mp = mp_count_cpus();
    unsigned listed = acpi.cpus ? acpi.cpus : mp;
    unsigned running = cpus_start(listed);
    con_puts("probe: cpus ");
    con_dec(running);
    con_puts(" of ");
    con_dec(listed ? listed : 1);
    con_puts(" (madt ");
    con_dec(acpi.cpus);
    con_puts(", mptable ");
    con_dec(mp);
    con_puts(")\n");
    con_puts("probe login: ");
    if (cmd && cmdline_get(cmd, "probe.button"))
        acpi_wait_button();
    /* Idle like a guest at its prompt: interrupts on (a halted CPU with
     * interrupts off is how the VMM recognises a dead guest), every legacy
     * IRQ masked at the PIC so that no vector reaches the empty IDT. */
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    for (;;)
        __asm__ volatile("sti; hlt");
}
