/* qmp.c - qemu's machine protocol, as much of it as the qemu path of vdboot
 * needs: why the guest went away.  qemu's exit status is 0 for a guest
 * poweroff and for a guest reset alike (-no-reboot); its SHUTDOWN event
 * says which ("reason": "guest-shutdown", "guest-reset", "guest-panic").
 *
 * The monitor is one end of a socketpair handed to qemu as an open fd, and
 * qemu starts with its CPUs stopped (-S): events are only sent after the
 * capabilities handshake, so vdboot answers the greeting, then lets the
 * guest run with "cont" - no event can be lost before the handshake.
 * qemu is trusted (it is the program vdboot started), but its lines are
 * still parsed defensively: a line too long is dropped, not overflowed. */
#include "qmp.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void qmp_init(struct qmp *q, int fd)
{
    memset(q, 0, sizeof(*q));
    q->fd = fd;
    q->outcome = VM_RUNNING;
}

static void qmp_send(struct qmp *q, const char *cmd)
{
    char line[128];
    int n = snprintf(line, sizeof(line), "{\"execute\": \"%s\"}\n", cmd);
    /* a few bytes on a fresh socket: they fit in its buffer */
    if (write(q->fd, line, (size_t)n) != n)
        q->broken = true;
}

/* The string value of "key" in a JSON line, or false.  qemu writes
 * `"key": "value"` with no escapes in the names and values used here. */
static bool qmp_field(const char *line, const char *key, char *out, size_t outlen)
{
    char pat[40];
    snprintf(pat, sizeof(pat), "\"%s\"", key);
    const char *p = strstr(line, pat);
    if (!p)
        return false;
    p += strlen(pat);
    while (*p == ' ' || *p == ':')
        p++;
    if (*p++ != '"')
        return false;
    size_t n = 0;
    while (*p && *p != '"' && n + 1 < outlen)
        out[n++] = *p++;
    out[n] = 0;
    return *p == '"';
}

static void qmp_line(struct qmp *q, const char *line)
{
    char ev[64], why[64];
    if (q->state == QMP_GREETING) {
        if (strstr(line, "\"QMP\"")) {
            qmp_send(q, "qmp_capabilities");
            q->state = QMP_NEGOTIATING;
        }
        return;
    }
    if (q->state == QMP_NEGOTIATING) {
        if (strstr(line, "\"return\"")) {
            qmp_send(q, "cont");
            q->state = QMP_RUNNING;
        } else if (strstr(line, "\"error\"")) {
            q->broken = true;
        }
        return;
    }
    if (!qmp_field(line, "event", ev, sizeof(ev)))
        return;
    if (!strcmp(ev, "POWERDOWN")) {
        q->powerdown_seen = true;   /* the ACPI power button was pressed */
        return;
    }
    if (!strcmp(ev, "GUEST_PANICKED") && q->outcome == VM_RUNNING) {
        q->outcome = VM_PANIC;
        snprintf(q->why, sizeof(q->why), "guest panicked (qemu's GUEST_PANICKED event)");
        return;
    }
    if (strcmp(ev, "SHUTDOWN") || q->outcome != VM_RUNNING ||
        !qmp_field(line, "reason", why, sizeof(why)))
        return;
    if (!strcmp(why, "guest-shutdown")) {
        q->outcome = VM_POWEROFF;
        snprintf(q->why, sizeof(q->why), "guest powered off (qemu's SHUTDOWN event, reason "
                 "guest-shutdown)");
    } else if (!strcmp(why, "guest-reset")) {
        q->outcome = VM_PANIC;
        snprintf(q->why, sizeof(q->why), "guest reset (a reboot or a triple fault: qemu's "
                 "SHUTDOWN event, reason guest-reset)");
    } else if (!strcmp(why, "guest-panic")) {
        q->outcome = VM_PANIC;
        snprintf(q->why, sizeof(q->why), "guest panicked (qemu's SHUTDOWN event, reason "
                 "guest-panic)");
    }
    /* host-* reasons: vdboot or a signal stopped qemu; its exit says the rest */
}

void qmp_read(struct qmp *q)
{
    ssize_t n = read(q->fd, q->buf + q->len, sizeof(q->buf) - 1 - q->len);
    if (n <= 0) {
        if (n == 0 || (errno != EINTR && errno != EAGAIN))
            q->closed = true;
        return;
    }
    q->len += (size_t)n;
    q->buf[q->len] = 0;
    char *start = q->buf, *nl;
    while ((nl = memchr(start, '\n', q->len - (size_t)(start - q->buf)))) {
        *nl = 0;
        if (!q->overlong)
            qmp_line(q, start);
        q->overlong = false;
        start = nl + 1;
    }
    size_t rest = q->len - (size_t)(start - q->buf);
    if (rest == sizeof(q->buf) - 1) {   /* no newline in a full buffer: skip the line */
        q->overlong = true;
        rest = 0;
    }
    memmove(q->buf, start, rest);
    q->len = rest;
}

void qmp_powerdown(struct qmp *q)
{
    if (q->state == QMP_RUNNING && !q->closed)
        qmp_send(q, "system_powerdown");
}
