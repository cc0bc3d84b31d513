/* serial.c - a 16550A UART on COM1 (0x3f8, IRQ 4): the guest's console.
 *
 * Output is instant (the transmitter is always empty), so the THR-empty
 * interrupt is raised whenever the guest enables it or writes a byte, and
 * cleared when the guest reads IIR, as on the real chip; the 8250 driver's
 * interrupt-driven transmit and getty both rely on that.  Loopback mode
 * reflects MCR into MSR so that the driver's UART probe passes.
 *
 * Input (--run typing at the console) comes from the console's input queue:
 * while bytes wait, LSR says data ready and, with IER's receive interrupt
 * on, IIR reports it (it outranks THR-empty, as on the chip); each RBR read
 * takes one byte.  The queue is filled by console_feed under the same lock,
 * so the interrupt is raised in the same exit that printed the prompt. */
#include "vdboot.h"

#include <string.h>

#define COM1_BASE 0x3f8
#define COM1_IRQ 4

enum { UART_RX_TX = 0, UART_IER = 1, UART_IIR_FCR = 2, UART_LCR = 3, UART_MCR = 4,
       UART_LSR = 5, UART_MSR = 6, UART_SCR = 7 };
#define IER_RDI 0x01
#define IER_THRI 0x02
#define IIR_RDI 0x04
#define LSR_DR 0x01
#define IIR_NO_INT 0x01
#define IIR_THRI 0x02
#define IIR_FIFO_ON 0xc0
#define FCR_FIFO_ENABLE 0x01
#define LCR_DLAB 0x80
#define LSR_THRE_TEMT 0x60
#define MCR_LOOP 0x10
#define MSR_DCD_DSR_CTS 0xb0

static struct serial_state {
    uint8_t ier, lcr, mcr, scr, fcr, dll, dlm;
    bool thr_pending;     /* THR-empty interrupt waiting for an IIR read */
    int irq_level;
} uart;

static void serial_update_irq(struct vm *vm)
{
    bool rx = !(uart.mcr & MCR_LOOP) && console_input_pending(vm->con);
    int level = ((uart.ier & IER_THRI) && uart.thr_pending) || ((uart.ier & IER_RDI) && rx);
    if (level != uart.irq_level) {
        uart.irq_level = level;
        vm_irq_line(vm, COM1_IRQ, level);
    }
}

/* Feeds the console; an event is reported by serial_io after it drops the
 * device lock (vm_finish takes the same lock). */
static enum con_event serial_tx(struct vm *vm, uint8_t b)
{
    if (uart.mcr & MCR_LOOP)
        return CON_NONE;  /* loopback: the byte goes nowhere we watch */
    return console_feed(vm->con, b);
}

static uint8_t serial_msr(void)
{
    if (!(uart.mcr & MCR_LOOP))
        return MSR_DCD_DSR_CTS;
    /* loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD */
    return (uint8_t)(((uart.mcr & 0x01) << 5) | ((uart.mcr & 0x02) << 3) |
                     ((uart.mcr & 0x04) << 4) | ((uart.mcr & 0x08) << 4));
}

static uint8_t serial_read(struct vm *vm, unsigned reg)
{
    bool dlab = uart.lcr & LCR_DLAB;
    bool rx = !(uart.mcr & MCR_LOOP) && console_input_pending(vm->con);
    switch (reg) {
    case UART_RX_TX: {
        if (dlab)
            return uart.dll;
        int b = rx ? console_input(vm->con) : -1;
        return b < 0 ? 0 : (uint8_t)b;
    }
    case UART_IER: return dlab ? uart.dlm : uart.ier;
    case UART_IIR_FCR: {
        uint8_t fifo = (uart.fcr & FCR_FIFO_ENABLE) ? IIR_FIFO_ON : 0;
        if ((uart.ier & IER_RDI) && rx)
            return fifo | IIR_RDI;
        if ((uart.ier & IER_THRI) && uart.thr_pending) {
            uart.thr_pending = false;   /* reading IIR acknowledges THRI */
            return fifo | IIR_THRI;
        }
        return fifo | IIR_NO_INT;
    }
    case UART_LCR: return uart.lcr;
    case UART_MCR: return uart.mcr;
    case UART_LSR: return LSR_THRE_TEMT | (rx ? LSR_DR : 0);
    case UART_MSR: return serial_msr();
    default: return uart.scr;
    }
}

static enum con_event serial_write(struct vm *vm, unsigned reg, uint8_t v)
{
    bool dlab = uart.lcr & LCR_DLAB;
    enum con_event ev = CON_NONE;
    switch (reg) {
    case UART_RX_TX:
        if (dlab) {
            uart.dll = v;
        } else {
            ev = serial_tx(vm, v);
            uart.thr_pending = true;
        }
        break;
    case UART_IER:
        if (dlab) {
            uart.dlm = v;
        } else {
            if ((v & IER_THRI) && !(uart.ier & IER_THRI))
                uart.thr_pending = true;
            uart.ier = v & 0x0f;
        }
        break;
    case UART_IIR_FCR: uart.fcr = v; break;
    case UART_LCR: uart.lcr = v; break;
    case UART_MCR: uart.mcr = v & 0x1f; break;
    case UART_SCR: uart.scr = v; break;
    default: break;   /* LSR, MSR are read-only */
    }
    return ev;
}

static void serial_io(struct vm *vm, void *opaque, uint64_t addr, uint8_t *data,
                      unsigned len, bool is_write)
{
    (void)opaque;
    enum con_event ev = CON_NONE;
    pthread_mutex_lock(&vm->lock);
    for (unsigned i = 0; i < len; i++) {
        unsigned reg = (unsigned)(addr - COM1_BASE + i) & 7;
        if (is_write) {
            enum con_event e = serial_write(vm, reg, data[i]);
            if (ev == CON_NONE)
                ev = e;
        } else {
            data[i] = serial_read(vm, reg);
        }
    }
    serial_update_irq(vm);
    pthread_mutex_unlock(&vm->lock);
    char reason[512];
    enum vm_outcome o = result_console_event(vm->con, ev, reason, sizeof(reason));
    if (o != VM_RUNNING)
        vm_finish(vm, o, "%s", reason);
}

static int serial_init(struct vm *vm, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    memset(&uart, 0, sizeof(uart));
    return vm_io_register(vm, COM1_BASE, 8, false, serial_io, NULL);
}

const struct vm_device serial_device = { .name = "serial", .init = serial_init };
