/* debugcon.c - qemu's debug console port 0x402, where SeaBIOS writes its
 * log ("Running on QEMU (i440fx)", "found virtio-blk at 00:01.0", "Booting
 * from Hard Disk...").  A read returns 0xe9, the answer SeaBIOS checks
 * before it uses the port.  The log is printed with -v, line by line, and
 * its last line is kept to say where a firmware boot stopped. */
#include "vmm.h"

#include <stdio.h>
#include <string.h>

#define DEBUGCON_PORT 0x402
#define DEBUGCON_READBACK 0xe9
#define DEBUGCON_LINE 200

static struct debugcon_state {
    char line[DEBUGCON_LINE + 1];      /* the line being written */
    char last[DEBUGCON_LINE + 1];      /* the last complete, non-empty one */
    size_t len;
} dbg;

const char *debugcon_last_line(void)
{
    return dbg.last;
}

static void debugcon_io(struct vm *vm, void *opaque, uint64_t port, uint8_t *data, unsigned len,
                        bool is_write)
{
    (void)opaque; (void)port;
    if (!is_write) {
        memset(data, DEBUGCON_READBACK, len);
        return;
    }
    pthread_mutex_lock(&vm->lock);
    for (unsigned i = 0; i < len; i++) {
        uint8_t c = data[i];
        if (c == '\n') {
            dbg.line[dbg.len] = 0;
            if (dbg.len) {
                memcpy(dbg.last, dbg.line, dbg.len + 1);
                if (vm->cfg.verbose)
                    fprintf(stderr, "vdboot: firmware: %s\n", dbg.line);
            }
            dbg.len = 0;
        } else if (c >= 0x20 && c < 0x7f && dbg.len < DEBUGCON_LINE) {
            dbg.line[dbg.len++] = (char)c;   /* a longer line is cut, control bytes dropped */
        }
    }
    pthread_mutex_unlock(&vm->lock);
}

static int debugcon_init(struct vm *vm, char *err, size_t errlen)
{
    (void)err; (void)errlen;
    memset(&dbg, 0, sizeof(dbg));
    return vm_io_register(vm, DEBUGCON_PORT, 1, false, debugcon_io, NULL);
}

const struct vm_device debugcon_device = { .name = "debugcon", .init = debugcon_init };
