/* tcg.c - the same boot check under qemu-system-x86_64 -accel tcg, for
 * hosts whose /dev/kvm cannot run a Linux guest at speed.  vdboot still
 * chooses the kernel, initrd and command line (or, with --firmware, qemu
 * boots the disk through SeaBIOS or OVMF); qemu gets the disk as an NBD
 * export of vdboot's own read-only view and overlay (nbd-serve.c: any vdisk
 * format, no backing file opened by qemu), on the --disk-bus asked for, and
 * its serial port on pipes: the same console watcher reads qemu's stdout,
 * and what --run types goes to its stdin.  qemu runs with -no-reboot, so a
 * guest reset ends it. */
#include "vdboot.h"
#include "nbd-serve.h"
#include "qmp.h"
#include "vga.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define TCG_MAX_ARGS 112

/* `keep_fd`: qemu's end of the monitor socketpair, left open across exec */
static pid_t tcg_spawn(char **argv, int keep_fd, int *in_fd, int *out_fd, int *err_fd)
{
    int po[2], pe[2], pi[2];
    if (pipe2(po, O_CLOEXEC) < 0)
        return -1;
    if (pipe2(pe, O_CLOEXEC) < 0) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    if (pipe2(pi, O_CLOEXEC) < 0) {
        close(po[0]);
        close(po[1]);
        close(pe[0]);
        close(pe[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pi[0], 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        fcntl(keep_fd, F_SETFD, 0);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    close(pi[0]);
    *out_fd = po[0];
    *err_fd = pe[0];
    *in_fd = pi[1];
    /* a guest that stops reading must not block the watcher */
    fcntl(pi[1], F_SETFL, fcntl(pi[1], F_GETFL) | O_NONBLOCK);
    if (pid < 0) {
        close(po[0]);
        close(pe[0]);
        close(pi[1]);
    }
    return pid;
}

/* Reads qemu's serial output until an outcome, qemu's exit or the deadline. */
/* The VGA side of a firmware boot: the screen and its watcher. */
struct tcg_screen {
    struct vga_screen vga;
    struct console con;
    bool on, seen;             /* watched; the outcome came from it */
};

static enum vm_outcome tcg_watch(struct console *con, struct tcg_screen *scr, struct qmp *q,
                                 int in_fd, int out_fd, int err_fd, double timeout,
                                 char *reason, size_t rlen, char *qerr, size_t qerrlen)
{
    double deadline = con_now() + timeout;
    size_t qn = 0;
    uint8_t buf[4096];
    bool out_open = true, err_open = true;
    while (out_open || err_open) {
        double left = deadline - con_now();
        if (left <= 0) {
            snprintf(reason, rlen, "no match within %.0f s", timeout);
            return VM_TIMEOUT;
        }
        struct pollfd p[4] = { { out_open ? out_fd : -1, POLLIN, 0 },
                               { err_open ? err_fd : -1, POLLIN, 0 },
                               { console_input_pending(con) ? in_fd : -1, POLLOUT, 0 },
                               { q->closed ? -1 : q->fd, POLLIN, 0 } };
        if (poll(p, 4, left > 0.2 ? 200 : (int)(left * 1000) + 1) < 0 && errno != EINTR)
            break;
        if (p[2].revents & POLLOUT) {
            /* qemu's chardev hands bytes to the UART as its FIFO has room */
            uint8_t b[256];
            size_t k = 0;
            int ch;
            while (k < sizeof(b) && (ch = console_input(con)) >= 0)
                b[k++] = (uint8_t)ch;
            ssize_t w = write(in_fd, b, k);
            if (w >= 0 && (size_t)w < k)
                con->in_pos -= k - (size_t)w;   /* put back what did not fit */
        }
        if (p[3].revents)
            qmp_read(q);   /* a shutdown is kept until qemu exits: its last output first */
        if (q->broken) {
            snprintf(reason, rlen, "qemu's monitor (QMP) refused vdboot's handshake");
            return VM_ERROR;
        }
        if (p[0].revents) {
            ssize_t n = read(out_fd, buf, sizeof(buf));
            if (n <= 0)
                out_open = false;
            for (ssize_t i = 0; i < n; i++) {
                enum vm_outcome o = result_console_event(con, console_feed(con, buf[i]),
                                                         reason, rlen);
                if (o != VM_RUNNING)
                    return o;
            }
        }
        if (scr->on) {
            enum vm_outcome o = result_console_event(&scr->con, vga_poll(&scr->vga, &scr->con),
                                                     reason, rlen);
            if (o != VM_RUNNING) {
                size_t k = strlen(reason);
                snprintf(reason + k, rlen - k, " on the VGA text console");
                scr->seen = true;
                return o;
            }
        }
        if (p[1].revents) {
            ssize_t n = read(err_fd, buf, sizeof(buf));
            if (n <= 0)
                err_open = false;
            for (ssize_t i = 0; i < n && qn + 1 < qerrlen; i++)
                qerr[qn++] = buf[i] == '\n' ? ' ' : (char)buf[i];
            qerr[qn] = 0;
        }
    }
    return VM_RUNNING;   /* qemu exited */
}

/* --shutdown acpi under qemu: press the power button (system_powerdown)
 * and wait up to `wait` s for qemu's SHUTDOWN event, still copying the
 * console to its transcript (no match ends anything now).  Fills `note`. */
static void tcg_press_and_wait(struct console *con, struct qmp *q, int out_fd, double wait,
                               char *note, size_t notelen)
{
    double t0 = con_now(), deadline = t0 + wait;
    uint8_t buf[4096];
    qmp_powerdown(q);
    bool out_open = true;
    while (q->outcome == VM_RUNNING && !q->closed && con_now() < deadline) {
        struct pollfd p[2] = { { out_open ? out_fd : -1, POLLIN, 0 }, { q->fd, POLLIN, 0 } };
        if (poll(p, 2, 200) < 0 && errno != EINTR)
            break;
        if (p[1].revents)
            qmp_read(q);
        if (p[0].revents) {
            ssize_t n = read(out_fd, buf, sizeof(buf));
            if (n <= 0)
                out_open = false;
            for (ssize_t i = 0; i < n; i++)
                console_feed(con, buf[i]);
        }
    }
    if (q->outcome == VM_POWEROFF)
        snprintf(note, notelen, "acpi: the guest powered off %.2f s after vdboot pressed the "
                 "power button", con_now() - t0);
    else if (q->outcome != VM_RUNNING)
        snprintf(note, notelen, "acpi: vdboot pressed the power button; the guest did not "
                 "power off cleanly: %s", q->why);
    else
        snprintf(note, notelen, "acpi: vdboot pressed the power button; the guest did not "
                 "power off: no poweroff within %.0f s", wait);
}

/* qemu's argument vector and the strings made for it, which must live until
 * qemu is started: bounded (TCG_MAX_ARGS), and every addition checked.  A
 * failure is kept, not returned, so that the callers add arguments in a row
 * and look once (tcg_args_failed) before argv is used. */
struct tcg_args {
    const char *argv[TCG_MAX_ARGS + 1];
    char *owned[TCG_MAX_ARGS];
    int n, n_owned;
    int failed;   /* E2BIG or ENOMEM, 0 while all went in */
};

static void tcg_arg(struct tcg_args *a, const char *s)
{
    if (a->n == TCG_MAX_ARGS)
        a->failed = E2BIG;
    else
        a->argv[a->n++] = s;
    a->argv[a->n] = NULL;
}

__attribute__((format(printf, 2, 3)))
static void tcg_argf(struct tcg_args *a, const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    int k = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (k < 0) {
        a->failed = ENOMEM;
        return;
    }
    if (a->n == TCG_MAX_ARGS) {
        a->failed = E2BIG;
        free(s);
        return;
    }
    a->owned[a->n_owned++] = s;   /* n_owned <= n < TCG_MAX_ARGS */
    tcg_arg(a, s);
}

static int tcg_args_failed(const struct tcg_args *a, char *err, size_t errlen)
{
    if (a->failed == E2BIG)
        snprintf(err, errlen, "qemu's command line: more than %d arguments", TCG_MAX_ARGS);
    else if (a->failed)
        snprintf(err, errlen, "qemu's command line: %s", strerror(a->failed));
    return a->failed ? -1 : 0;
}

static void tcg_args_free(struct tcg_args *a)
{
    for (int i = 0; i < a->n_owned; i++)
        free(a->owned[i]);
    a->n_owned = a->n = 0;
}

/* The controllers one group of drives shares (the boot disk, the further
 * disks, the CD-ROMs), each put on the command line before its group's
 * first drive on it; ids are per group, so the groups never share one. */
struct tcg_hbas {
    const char *ahci, *scsi;   /* the controllers' qemu ids */
    const char *scsi_model;    /* qemu's device for the SCSI controller */
    const char *ide;           /* the pc machine's IDE channel the group uses */
    bool ahci_on, scsi_on;
    int ide_unit;              /* the next unit on that channel */
};

/* -device for drive `drive`, the `i`th of its group, as a `kind` ("hd" or
 * "cd") on `bus`, after the controller it needs; `tail`: more properties. */
static void tcg_attach(struct tcg_args *a, struct tcg_hbas *h, const char *bus, const char *kind,
                       const char *drive, int i, const char *tail)
{
    if (!strcmp(bus, "sata") && !h->ahci_on) {
        tcg_arg(a, "-device");
        tcg_argf(a, "ahci,id=%s", h->ahci);
        h->ahci_on = true;
    } else if (!strcmp(bus, "scsi") && !h->scsi_on) {
        tcg_arg(a, "-device");
        tcg_argf(a, "%s,id=%s", h->scsi_model, h->scsi);
        h->scsi_on = true;
    }
    tcg_arg(a, "-device");
    if (!strcmp(bus, "virtio"))
        tcg_argf(a, "virtio-blk-pci,drive=%s%s", drive, tail);
    else if (!strcmp(bus, "sata"))
        tcg_argf(a, "ide-%s,drive=%s,bus=%s.%d%s", kind, drive, h->ahci, i, tail);
    else if (!strcmp(bus, "scsi"))
        tcg_argf(a, "scsi-%s,drive=%s,bus=%s.0,scsi-id=%d%s", kind, drive, h->scsi, i, tail);
    else
        tcg_argf(a, "ide-%s,drive=%s,bus=%s,unit=%d%s", kind, drive, h->ide, h->ide_unit++, tail);
}

/* -drive for an NBD export of vdboot's own view (nbd-serve.c) */
static int tcg_nbd_drive(struct tcg_args *a, const char *sock, const char *id, char *err,
                         size_t errlen)
{
    if (strchr(sock, ',')) {
        snprintf(err, errlen, "NBD socket %s: qemu cannot take a path with a comma (set TMPDIR)",
                 sock);
        return -1;
    }
    tcg_arg(a, "-drive");
    tcg_argf(a, "file=nbd+unix:///?socket=%s,format=raw,if=none,id=%s,cache=unsafe", sock, id);
    return 0;
}

/* The disk as qemu sees it, on the bus asked for (ide: the primary master
 * of the pc machine's PIIX); first in the firmware's boot order (`boot`:
 * with -kernel, qemu's own loader ROM holds that place). */
static int tcg_disk_args(struct tcg_args *a, const char *bus, const char *hba, bool boot,
                         const char *sock, char *err, size_t errlen)
{
    struct tcg_hbas h = { .ahci = "ahci0", .scsi = "scsi0", .ide = "ide.0",
                          .scsi_model = hba ? hba : "virtio-scsi-pci" };
    if (tcg_nbd_drive(a, sock, "d0", err, errlen) < 0)
        return -1;
    tcg_attach(a, &h, bus, "hd", "d0", 0, boot ? ",bootindex=0" : "");
    return 0;
}

/* NICs (--nic, the domain's <interface>s) on qemu's user networking, and
 * the domain's CD-ROMs, read-only (ide: on the secondary channel).  qemu
 * opens a CD-ROM's file itself, through its plain file driver
 * (file.filename: no protocol prefix or json: in the path is ever parsed),
 * with ',' doubled as -drive wants. */
static int tcg_extra_args(const struct vdboot_opts *o, struct tcg_args *a, char *err,
                          size_t errlen)
{
    if (!o->n_nics) {
        tcg_arg(a, "-nic");
        tcg_arg(a, "none");
    }
    for (int i = 0; i < o->n_nics; i++) {
        tcg_arg(a, "-nic");
        tcg_argf(a, "user%s%s", o->nic_models[i][0] ? ",model=" : "", o->nic_models[i]);
    }
    struct tcg_hbas h = { .ahci = "cdahci", .scsi = "cdscsi", .ide = "ide.1",
                          .scsi_model = "virtio-scsi-pci" };
    for (int i = 0; i < o->n_cdroms; i++) {
        const char *p = o->cdroms[i];
        char *esc = malloc(2 * strlen(p) + 1), id[16];
        if (!esc) {
            snprintf(err, errlen, "CD-ROM %.300s: %s", p, strerror(ENOMEM));
            return -1;
        }
        size_t k = 0;
        for (; *p; p++) {
            esc[k++] = *p;
            if (*p == ',')
                esc[k++] = ',';
        }
        esc[k] = 0;
        tcg_arg(a, "-drive");
        tcg_argf(a, "if=none,id=cd%d,media=cdrom,readonly=on%s%s", i,
                 esc[0] ? ",format=raw,file.driver=file,file.filename=" : "", esc);
        free(esc);
        snprintf(id, sizeof id, "cd%d", i);
        tcg_attach(a, &h, o->cdrom_bus[i], "cd", id, i, "");
    }
    return 0;
}

/* The domain's further disks: each opened through vdisk under its own
 * overlay and served on its own NBD socket, as the boot disk is (ide: the
 * primary master, as domain.c allows it only with the boot disk
 * elsewhere); `*started` counts the servers to stop. */
static int tcg_extra_disks(const struct vdboot_opts *o, struct disk *xdk, struct nbd_server *xns,
                           int *started, struct tcg_args *a, char *err, size_t errlen)
{
    struct tcg_hbas h = { .ahci = "xahci", .scsi = "xscsi", .ide = "ide.0",
                          .scsi_model = "virtio-scsi-pci" };
    for (int i = 0; i < o->n_extra; i++) {
        char e[900], id[16];
        if (disk_open(&xdk[i], o->extra_disks[i], o->extra_format[i], e, sizeof e) < 0) {
            snprintf(err, errlen, "the domain's disk %.300s: %.600s", o->extra_disks[i], e);
            return -1;
        }
        if (nbd_serve_start(&xns[i], &xdk[i], err, errlen) < 0)
            return -1;
        (*started)++;
        snprintf(id, sizeof id, "x%d", i);
        if (tcg_nbd_drive(a, xns[i].path, id, err, errlen) < 0)
            return -1;
        tcg_attach(a, &h, o->extra_bus[i], "hd", id, i, "");
    }
    return 0;
}

/* The firmware's debug port (0x402) goes to a file next to the NBD socket:
 * its milestones ("Booting from Hard Disk...", "Boot failed: not a bootable
 * disk", "No bootable device") explain a boot that never reached the
 * serial console.  Returns the last one seen, or "". */
static void tcg_fw_milestone(const char *path, char *out, size_t outlen)
{
    static const char *const marks[] = { "Booting from", "Boot failed", "No bootable device",
                                         "BdsDxe: failed to load", "BdsDxe: loading",
                                         "BdsDxe: starting", NULL };
    out[0] = 0;
    FILE *f = fopen(path, "r");
    char line[256];
    while (f && fgets(line, sizeof(line), f)) {
        for (int i = 0; marks[i]; i++)
            if (strstr(line, marks[i])) {
                line[strcspn(line, "\r\n")] = 0;
                snprintf(out, outlen, "%s", line);
            }
    }
    if (f)
        fclose(f);
}

/* OVMF from Debian's ovmf package (or qemu's own copy). */
static const char *tcg_ovmf(void)
{
    static const char *const paths[] = { "/usr/share/ovmf/OVMF.fd", "/usr/share/qemu/OVMF.fd" };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        if (access(paths[i], R_OK) == 0)
            return paths[i];
    return NULL;
}

void run_tcg(const struct vdboot_opts *o, const struct boot_files *bf, struct vdboot_result *r)
{
    char err[1024], qerr[2048] = "", fwlog[300] = "", milestone[256] = "", monitor[300] = "none";
    static struct tcg_screen scr;   /* large; one boot per process */
    struct console con;
    struct disk dk = { 0 };
    struct nbd_server ns = { .listen_fd = -1, .stop_pipe = { -1, -1 } };   /* stop: closes nothing */
    struct disk xdk[VDBOOT_MAX_EXTRA_DISKS] = { 0 };
    struct nbd_server xns[VDBOOT_MAX_EXTRA_DISKS];
    int xstarted = 0;
    struct qmp q;
    int qsock[2] = { -1, -1 };
    struct tcg_args a = { .n = 0 };
    bool firmware = strcmp(o->firmware, "direct") != 0;
    /* the monitor (qmp.c): qemu waits stopped (-S) until vdboot has it */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, qsock) < 0) {
        result_error(r, "socketpair for qemu's monitor: %s", strerror(errno));
        return;
    }
    qmp_init(&q, qsock[0]);
    /* --accel qemu-kvm: the same qemu path on /dev/kvm, to compare with the
     * built-in VMM on one host */
    const char *fixed[] = { "qemu-system-x86_64", "-accel",
                            strcmp(o->accel, "qemu-kvm") ? "tcg" : "kvm", "-machine", "pc",
                            "-nodefaults", "-no-user-config", "-display", "none",
                            "-serial", "stdio", "-monitor", monitor, "-no-reboot" };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        tcg_arg(&a, fixed[i]);
    tcg_arg(&a, "-m");
    tcg_argf(&a, "%llu", o->memory_mib);
    tcg_arg(&a, "-smp");
    tcg_argf(&a, "%d", o->cpus);
    tcg_arg(&a, "-S");
    tcg_arg(&a, "-chardev");
    tcg_argf(&a, "socket,id=qmp,fd=%d", qsock[1]);
    tcg_arg(&a, "-mon");
    tcg_arg(&a, "chardev=qmp,mode=control");
    if (!firmware) {
        /* Linux checks that the IOAPIC timer ticks within a few of its own
         * loops; an emulated CPU on a busy host misses that and panics
         * ("IO-APIC + timer doesn't work"), so skip the check as qemu's docs
         * advise. */
        tcg_arg(&a, "-kernel");
        tcg_arg(&a, bf->kernel_path);
        tcg_arg(&a, "-append");
        tcg_argf(&a, "%s%s", bf->cmdline,
                 strstr(bf->cmdline, "no_timer_check") ? "" : " no_timer_check");
        if (bf->initrd_path[0]) {
            tcg_arg(&a, "-initrd");
            tcg_arg(&a, bf->initrd_path);
        }
    } else if (!strcmp(o->firmware, "uefi")) {
        const char *fw = tcg_ovmf();
        if (!fw) {
            result_error(r, "--firmware uefi: no OVMF.fd in /usr/share/ovmf (apt-get install ovmf)");
            return;
        }
        tcg_arg(&a, "-bios");
        tcg_arg(&a, fw);
    } else {
        /* SeaBIOS, qemu's default: with nothing bootable it says so on the
         * screen and reboots after reboot-timeout, which -no-reboot ends */
        tcg_arg(&a, "-boot");
        tcg_arg(&a, "strict=on,reboot-timeout=1000");
    }
    if (o->image) {
        if (disk_open(&dk, o->image, o->format, err, sizeof(err)) < 0 ||
            nbd_serve_start(&ns, &dk, err, sizeof(err)) < 0 ||
            tcg_disk_args(&a, o->disk_bus, o->scsi_hba, firmware, ns.path, err, sizeof(err)) < 0) {
            result_error(r, "%s", err);
            goto out;
        }
        if (firmware && !strcmp(o->firmware, "bios")) {
            /* a VGA in text mode, read through the monitor (vga.c); with
             * --run the prompt must be on the serial port, where vdboot types */
            vga_init(&scr.vga, ns.dir);
            if (console_init(&scr.con, o->run ? "a^" : o->expect, NULL, err, sizeof(err)) < 0) {
                result_error(r, "%s", err);
                goto out;
            }
            scr.on = true;
            snprintf(monitor, sizeof(monitor), "unix:%s,server=on,wait=off", scr.vga.mon_path);
            tcg_arg(&a, "-device");
            tcg_arg(&a, "VGA");
        }
        if (firmware) {
            snprintf(fwlog, sizeof(fwlog), "%s/firmware.log", ns.dir);
            tcg_arg(&a, "-chardev");
            tcg_argf(&a, "file,id=fwlog,path=%s", fwlog);
            tcg_arg(&a, "-device");
            tcg_arg(&a, "isa-debugcon,iobase=0x402,chardev=fwlog");
        }
    }
    if (tcg_extra_disks(o, xdk, xns, &xstarted, &a, err, sizeof(err)) < 0 ||
        tcg_extra_args(o, &a, err, sizeof(err)) < 0 || tcg_args_failed(&a, err, sizeof(err)) < 0) {
        result_error(r, "%s", err);
        goto out;
    }
    if (o->verbose) {
        fprintf(stderr, "vdboot: qemu:");
        for (int i = 0; i < a.n; i++)
            fprintf(stderr, " %s", a.argv[i]);
        fputc('\n', stderr);
    }
    if (console_init(&con, o->expect, o->console, err, sizeof(err)) < 0) {
        result_error(r, "%s", err);
        goto out;
    }
    result_arm_run(o, &con);
    int in_fd, out_fd, err_fd;
    pid_t pid = tcg_spawn((char **)a.argv, qsock[1], &in_fd, &out_fd, &err_fd);
    close(qsock[1]);
    qsock[1] = -1;
    if (pid < 0) {
        result_error(r, "cannot start qemu-system-x86_64: %s", strerror(errno));
        console_close(&con);
        goto out;
    }
    r->outcome = tcg_watch(&con, &scr, &q, in_fd, out_fd, err_fd, o->timeout, r->reason, sizeof(r->reason),
                           qerr, sizeof(qerr));
    r->seconds = con_now() - con.t_start;
    if (o->shutdown_acpi && (r->outcome == VM_LOGIN || r->outcome == VM_CHECK_FAILED ||
                             r->outcome == VM_TIMEOUT))
        tcg_press_and_wait(&con, &q, out_fd, VDBOOT_SHUTDOWN_WAIT, r->shutdown,
                           sizeof(r->shutdown));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    close(in_fd);
    close(out_fd);
    close(err_fd);
    if (r->outcome == VM_RUNNING && q.outcome != VM_RUNNING) {
        r->outcome = q.outcome;
        snprintf(r->reason, sizeof(r->reason), "%s %s; last words: %s", q.why,
                 con.run.state >= RUN_SENT ? "while running the --run command" :
                 "before the prompt", con.bytes ? console_last_words(&con) : "(no console output)");
    } else if (r->outcome == VM_RUNNING) {
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
            result_error(r, "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
        else if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && con.bytes)
            r->outcome = VM_PANIC,
            snprintf(r->reason, sizeof(r->reason),
                     "guest reset or powered off before the prompt (last words: %s)",
                     console_last_words(&con));
        else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            r->outcome = VM_PANIC,
            snprintf(r->reason, sizeof(r->reason), "guest reset or powered off before any "
                     "console output (%s)", firmware ?
                     "no serial output from the firmware's boot: nothing bootable, or a "
                     "bootloader that failed on the screen" :
                     "the kernel failed before its console started");
        else if (qerr[0])
            result_error(r, "qemu-system-x86_64 failed: %s", qerr);
        else
            result_error(r, "qemu-system-x86_64 failed with %s %d and no message",
                         WIFEXITED(status) ? "exit status" : "signal",
                         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    }
    if (fwlog[0]) {
        tcg_fw_milestone(fwlog, milestone, sizeof(milestone));
        unlink(fwlog);
    }
    if (milestone[0] && r->outcome != VM_LOGIN && r->outcome != VM_CHECK_FAILED) {
        size_t k = strlen(r->reason);
        snprintf(r->reason + k, sizeof(r->reason) - k, " (firmware's last step: \"%s\"%s)",
                 milestone, con.bytes ? "" : "; nothing on the serial console after it");
    }
    if (scr.on && !scr.seen && scr.vga.seen_text && r->outcome != VM_LOGIN &&
        r->outcome != VM_CHECK_FAILED) {
        size_t k = strlen(r->reason);
        snprintf(r->reason + k, sizeof(r->reason) - k, " (VGA screen's last line: \"%s\")",
                 console_last_line(&scr.con));
    }
    if (ns.error[0] && r->outcome != VM_LOGIN && r->outcome != VM_CHECK_FAILED) {
        size_t k = strlen(r->reason);
        snprintf(r->reason + k, sizeof(r->reason) - k, " (disk read failed: %s)", ns.error);
    }
    result_take_console(r, scr.seen ? &scr.con : &con);
    if (!r->kernel_version[0] && scr.on && scr.con.kernel_version[0])
        snprintf(r->kernel_version, sizeof(r->kernel_version), "%s", scr.con.kernel_version);
    if (r->outcome == VM_LOGIN || r->outcome == VM_CHECK_FAILED)
        snprintf(r->prompt_seen_on, sizeof(r->prompt_seen_on), "%s",
                 scr.seen ? "vga" : "serial");
    console_close(&con);
out:
    if (scr.on) {
        vga_close(&scr.vga);
        console_close(&scr.con);
        scr.on = scr.seen = false;
    }
    nbd_serve_stop(&ns);   /* qemu is gone: the server thread is idle */
    for (int i = 0; i < xstarted; i++)
        nbd_serve_stop(&xns[i]);
    for (int i = 0; i < o->n_extra; i++)
        if (xdk[i].img)
            disk_close(&xdk[i]);
    for (int i = 0; i < 2; i++)
        if (qsock[i] >= 0)
            close(qsock[i]);
    if (dk.img)
        disk_close(&dk);
    tcg_args_free(&a);
}
