/* cmos.c - the MC146818 RTC and its CMOS RAM (index port 0x70, data 0x71),
 * for firmware boots.  SeaBIOS reads the memory size, the CPU count and the
 * boot order from the CMOS bytes qemu defines, and the time of day from the
 * clock; Linux later reads the clock too.
 *
 * The clock is the host's UTC time, read at each access, in BCD or binary
 * and 24- or 12-hour form as register B says; setting it is ignored (the
 * guest's writes to the time registers are dropped: the run is thrown
 * away).  The update-in-progress bit is never set, and no RTC interrupt is
 * ever raised (SeaBIOS and Linux poll it).  The other bytes are plain RAM,
 * but registers C and D are read-only. */
#include "vmm.h"

#include <string.h>
#include <time.h>

#define CMOS_INDEX 0x70
#define CMOS_SIZE 128
enum { RTC_SEC = 0x00, RTC_MIN = 0x02, RTC_HOUR = 0x04, RTC_WDAY = 0x06, RTC_MDAY = 0x07,
       RTC_MONTH = 0x08, RTC_YEAR = 0x09, RTC_REG_A = 0x0a, RTC_REG_B = 0x0b,
       RTC_REG_C = 0x0c, RTC_REG_D = 0x0d, CMOS_FLOPPY = 0x10, CMOS_EQUIPMENT = 0x14,
       CMOS_BASEMEM = 0x15, CMOS_EXTMEM = 0x17, CMOS_EXTMEM_ALT = 0x30, CMOS_CENTURY = 0x32,
       CMOS_MEM_16M = 0x34, CMOS_BOOTFLAG1 = 0x38, CMOS_BOOTFLAG2 = 0x3d, CMOS_MEM_4G = 0x5b,
       CMOS_CPUS = 0x5f };
#define REG_B_24H 0x02
#define REG_B_BINARY 0x04
#define REG_D_VALID 0x80

static struct cmos_state {
    uint8_t index;
    uint8_t ram[CMOS_SIZE];
} cmos;

static uint8_t cmos_clock_value(unsigned v)
{
    return cmos.ram[RTC_REG_B] & REG_B_BINARY ? (uint8_t)v : (uint8_t)((v / 10) << 4 | v % 10);
}

static uint8_t cmos_clock(unsigned reg)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    switch (reg) {
    case RTC_SEC: return cmos_clock_value((unsigned)tm.tm_sec);
    case RTC_MIN: return cmos_clock_value((unsigned)tm.tm_min);
    case RTC_HOUR:
        if (cmos.ram[RTC_REG_B] & REG_B_24H)
            return cmos_clock_value((unsigned)tm.tm_hour);
        /* 12-hour form: 12, 1 ... 11, bit 7 for PM */
        return (uint8_t)(cmos_clock_value((unsigned)(tm.tm_hour % 12 ? tm.tm_hour % 12 : 12)) |
                         (tm.tm_hour >= 12 ? 0x80 : 0));
    case RTC_WDAY: return cmos_clock_value((unsigned)tm.tm_wday + 1);
    case RTC_MDAY: return cmos_clock_value((unsigned)tm.tm_mday);
    case RTC_MONTH: return cmos_clock_value((unsigned)tm.tm_mon + 1);
    case RTC_YEAR: return cmos_clock_value((unsigned)tm.tm_year % 100);
    case CMOS_CENTURY: return cmos_clock_value((unsigned)(tm.tm_year / 100 + 19));
    default: return cmos.ram[reg];   /* the alarm bytes */
    }
}

static bool cmos_is_clock(unsigned reg)
{
    return reg <= RTC_YEAR || reg == CMOS_CENTURY;
}

static void cmos_io(struct vm *vm, void *opaque, uint64_t port, uint8_t *data, unsigned len,
                    bool is_write)
{
    (void)opaque;
    pthread_mutex_lock(&vm->lock);
    for (unsigned i = 0; i < len; i++) {
        if (port + i == CMOS_INDEX) {
            /* bit 7 masks NMIs on a PC: there is no NMI source to mask */
            if (is_write)
                cmos.index = data[i] & (CMOS_SIZE - 1);
            else
                data[i] = 0xff;
            continue;
        }
        unsigned reg = cmos.index;
        if (!is_write) {
            data[i] = cmos_is_clock(reg) ? cmos_clock(reg) : cmos.ram[reg];
        } else if (reg == RTC_REG_A) {
            cmos.ram[reg] = data[i] & 0x7f;          /* UIP is read-only */
        } else if (reg == RTC_REG_C || reg == RTC_REG_D) {
            /* read-only status */
        } else if (!cmos_is_clock(reg) || reg == 1 || reg == 3 || reg == 5) {
            cmos.ram[reg] = data[i];                 /* RAM, and the alarm bytes */
        }
        /* else the time or the date: setting the clock is ignored */
    }
    pthread_mutex_unlock(&vm->lock);
}

static void cmos_put16(unsigned reg, uint64_t v)
{
    if (v > 0xffff)
        v = 0xffff;
    cmos.ram[reg] = (uint8_t)v;
    cmos.ram[reg + 1] = (uint8_t)(v >> 8);
}

/* The memory and machine bytes, laid out as qemu's PC does for SeaBIOS. */
static void cmos_fill(const struct vm *vm)
{
    memset(&cmos, 0, sizeof(cmos));
    cmos.ram[RTC_REG_A] = 0x26;                 /* 32.768 kHz base, 1024 Hz rate */
    cmos.ram[RTC_REG_B] = REG_B_24H;
    cmos.ram[RTC_REG_D] = REG_D_VALID;
    cmos.ram[CMOS_FLOPPY] = 0;                  /* no floppy drives */
    cmos.ram[CMOS_EQUIPMENT] = 0x06;            /* FPU, colour display 80x25 */
    cmos_put16(CMOS_BASEMEM, 640);
    uint64_t ext = vm->low_size > (1ull << 20) ? (vm->low_size >> 10) - 1024 : 0;
    cmos_put16(CMOS_EXTMEM, ext);
    cmos_put16(CMOS_EXTMEM_ALT, ext);
    cmos_put16(CMOS_MEM_16M, vm->low_size > (16ull << 20) ? (vm->low_size - (16ull << 20)) >> 16 : 0);
    uint64_t high = (vm->mem_size - vm->low_size) >> 16;
    cmos.ram[CMOS_MEM_4G] = (uint8_t)high;
    cmos.ram[CMOS_MEM_4G + 1] = (uint8_t)(high >> 8);
    cmos.ram[CMOS_MEM_4G + 2] = (uint8_t)(high >> 16);
    cmos.ram[CMOS_BOOTFLAG1] = 0;               /* boot order: hard disk only */
    cmos.ram[CMOS_BOOTFLAG2] = 0x02;
    cmos.ram[CMOS_CPUS] = (uint8_t)(vm->cfg.cpus - 1);
}

static int cmos_init(struct vm *vm, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    cmos_fill(vm);
    return vm_io_register(vm, CMOS_INDEX, 2, false, cmos_io, NULL);
}

const struct vm_device cmos_device = { .name = "cmos", .init = cmos_init };
