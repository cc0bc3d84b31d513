/* qmp.h - the qemu path's monitor client (qmp.c): the guest's poweroff,
 * reset or panic from qemu's events, and the ACPI power button. */
#ifndef VDBOOT_QMP_H
#define VDBOOT_QMP_H

#include "vmm.h"

enum qmp_state { QMP_GREETING = 0, QMP_NEGOTIATING, QMP_RUNNING };

struct qmp {
    int fd;                    /* vdboot's end of the socketpair */
    enum qmp_state state;
    bool closed, broken, overlong;
    bool powerdown_seen;       /* qemu pressed the power button */
    enum vm_outcome outcome;   /* VM_RUNNING until a SHUTDOWN/GUEST_PANICKED */
    char why[200];
    char buf[4096];
    size_t len;
};

void qmp_init(struct qmp *q, int fd);
/* Call when fd is readable: answers the handshake, records events. */
void qmp_read(struct qmp *q);
/* Presses the guest's ACPI power button (system_powerdown). */
void qmp_powerdown(struct qmp *q);

#endif
