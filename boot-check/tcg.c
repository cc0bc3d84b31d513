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

/* The disk as qemu sees it: an NBD export of vdboot's own view (nbd-serve.c)
 * on the bus asked for; first in the firmware's boot order (`boot`: with
 * -kernel, qemu's own loader ROM holds that place). */
static int tcg_disk_args(const char *bus, const char *hba, bool boot, const char *sock, const char **argv, int *n,
                         char *drive, size_t dlen, char *dev, size_t devlen, char *err,
                         size_t errlen)
{
    if (strchr(sock, ',')) {
        snprintf(err, errlen, "NBD socket %s: qemu cannot take a path with a comma (set TMPDIR)",
                 sock);
        return -1;
    }
    snprintf(drive, dlen, "file=nbd+unix:///?socket=%s,format=raw,if=none,id=d0,cache=unsafe",
             sock);
    static char hbadev[64];     /* argv outlives this call */
    argv[(*n)++] = "-drive";
    argv[(*n)++] = drive;
    if (!strcmp(bus, "virtio")) {
        snprintf(dev, devlen, "virtio-blk-pci,drive=d0%s", boot ? ",bootindex=0" : "");
    } else if (!strcmp(bus, "sata")) {
        argv[(*n)++] = "-device";
        argv[(*n)++] = "ahci,id=ahci0";
        snprintf(dev, devlen, "ide-hd,drive=d0,bus=ahci0.0%s", boot ? ",bootindex=0" : "");
    } else if (!strcmp(bus, "scsi")) {
        argv[(*n)++] = "-device";
        snprintf(hbadev, sizeof hbadev, "%s,id=scsi0", hba ? hba : "virtio-scsi-pci");
        argv[(*n)++] = hbadev;
        snprintf(dev, devlen, "scsi-hd,drive=d0,bus=scsi0.0%s", boot ? ",bootindex=0" : "");
    } else {   /* ide: the PIIX controller of the pc machine */
        snprintf(dev, devlen, "ide-hd,drive=d0,bus=ide.0,unit=0%s", boot ? ",bootindex=0" : "");
    }
    argv[(*n)++] = "-device";
    argv[(*n)++] = dev;
    return 0;
}

/* NICs (--nic, the domain's <interface>s) on qemu's user networking, and
 * the domain's CD-ROMs, read-only.  qemu opens a CD-ROM's file itself,
 * through its plain file driver (file.filename: no protocol prefix or
 * json: in the path is ever parsed), with ',' doubled as -drive wants.
 * Buffers are static: argv outlives this call, one boot per process. */
static int tcg_extra_args(const struct vdboot_opts *o, const char **argv, int *n, char *err,
                          size_t errlen)
{
    static char nic[VDBOOT_MAX_NICS][64], drv[VDBOOT_MAX_CDROMS][8300], dev[VDBOOT_MAX_CDROMS][64];
    argv[(*n)++] = "-nic";
    argv[(*n)++] = o->n_nics ? nic[0] : "none";
    for (int i = 0; i < o->n_nics; i++) {
        snprintf(nic[i], sizeof nic[i], "user%s%s", o->nic_models[i][0] ? ",model=" : "",
                 o->nic_models[i]);
        if (i) {
            argv[(*n)++] = "-nic";
            argv[(*n)++] = nic[i];
        }
    }
    bool ahci = false, scsi = false;
    int ide = 0;
    for (int i = 0; i < o->n_cdroms; i++) {
        char esc[8200];
        size_t k = 0;
        for (const char *p = o->cdroms[i]; *p && k + 2 < sizeof esc; p++) {
            esc[k++] = *p;
            if (*p == ',')
                esc[k++] = ',';
        }
        esc[k] = 0;
        if (snprintf(drv[i], sizeof drv[i], "if=none,id=cd%d,media=cdrom,readonly=on%s%s", i,
                     esc[0] ? ",format=raw,file.driver=file,file.filename=" : "", esc) >=
            (int)sizeof drv[i]) {
            snprintf(err, errlen, "CD-ROM %.300s: path too long for qemu", o->cdroms[i]);
            return -1;
        }
        argv[(*n)++] = "-drive";
        argv[(*n)++] = drv[i];
        const char *bus = o->cdrom_bus[i];
        if (!strcmp(bus, "sata")) {
            if (!ahci) {
                argv[(*n)++] = "-device";
                argv[(*n)++] = "ahci,id=cdahci";
                ahci = true;
            }
            snprintf(dev[i], sizeof dev[i], "ide-cd,drive=cd%d,bus=cdahci.%d", i, i);
        } else if (!strcmp(bus, "scsi")) {
            if (!scsi) {
                argv[(*n)++] = "-device";
                argv[(*n)++] = "virtio-scsi-pci,id=cdscsi";
                scsi = true;
            }
            snprintf(dev[i], sizeof dev[i], "scsi-cd,drive=cd%d,bus=cdscsi.0,scsi-id=%d", i, i);
        } else {   /* ide: the secondary channel of the pc machine's PIIX */
            snprintf(dev[i], sizeof dev[i], "ide-cd,drive=cd%d,bus=ide.1,unit=%d", i, ide++);
        }
        argv[(*n)++] = "-device";
        argv[(*n)++] = dev[i];
    }
    return 0;
}

/* The domain's further disks: each opened through vdisk under its own
 * overlay and served on its own NBD socket, as the boot disk is; `*started`
 * counts the servers to stop. */
static int tcg_extra_disks(const struct vdboot_opts *o, struct disk *xdk, struct nbd_server *xns,
                           int *started, const char **argv, int *n, char *err, size_t errlen)
{
    static char drv[VDBOOT_MAX_EXTRA_DISKS][320], dev[VDBOOT_MAX_EXTRA_DISKS][64];
    bool ahci = false, scsi = false;
    for (int i = 0; i < o->n_extra; i++) {
        char e[900];
        if (disk_open(&xdk[i], o->extra_disks[i], o->extra_format[i], e, sizeof e) < 0) {
            snprintf(err, errlen, "the domain's disk %.300s: %.600s", o->extra_disks[i], e);
            return -1;
        }
        if (nbd_serve_start(&xns[i], &xdk[i], err, errlen) < 0)
            return -1;
        (*started)++;
        if (strchr(xns[i].path, ',')) {
            snprintf(err, errlen, "NBD socket %s: qemu cannot take a path with a comma (set "
                     "TMPDIR)", xns[i].path);
            return -1;
        }
        snprintf(drv[i], sizeof drv[i], "file=nbd+unix:///?socket=%s,format=raw,if=none,"
                 "id=x%d,cache=unsafe", xns[i].path, i);
        argv[(*n)++] = "-drive";
        argv[(*n)++] = drv[i];
        const char *bus = o->extra_bus[i];
        if (!strcmp(bus, "virtio")) {
            snprintf(dev[i], sizeof dev[i], "virtio-blk-pci,drive=x%d", i);
        } else if (!strcmp(bus, "sata")) {
            if (!ahci) {
                argv[(*n)++] = "-device";
                argv[(*n)++] = "ahci,id=xahci";
                ahci = true;
            }
            snprintf(dev[i], sizeof dev[i], "ide-hd,drive=x%d,bus=xahci.%d", i, i);
        } else if (!strcmp(bus, "scsi")) {
            if (!scsi) {
                argv[(*n)++] = "-device";
                argv[(*n)++] = "virtio-scsi-pci,id=xscsi";
                scsi = true;
            }
            snprintf(dev[i], sizeof dev[i], "scsi-hd,drive=x%d,bus=xscsi.0,scsi-id=%d", i, i);
        } else {   /* ide: the boot disk is elsewhere (domain.c), so the primary master */
            snprintf(dev[i], sizeof dev[i], "ide-hd,drive=x%d,bus=ide.0,unit=0", i);
        }
        argv[(*n)++] = "-device";
        argv[(*n)++] = dev[i];
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
    char err[1024], mem[32], cpus[16], drive[512], dev[128], qerr[2048] = "", append[4200];
    char fwlog[300] = "", fwdev[340], milestone[256] = "", monitor[300] = "none", qmpdev[64];
    static struct tcg_screen scr;   /* large; one boot per process */
    struct console con;
    struct disk dk = { 0 };
    struct nbd_server ns = { .listen_fd = -1, .stop_pipe = { -1, -1 } };   /* stop: closes nothing */
    struct disk xdk[VDBOOT_MAX_EXTRA_DISKS] = { 0 };
    struct nbd_server xns[VDBOOT_MAX_EXTRA_DISKS];
    int xstarted = 0;
    struct qmp q;
    int qsock[2] = { -1, -1 };
    const char *argv[TCG_MAX_ARGS];
    int n = 0;
    bool firmware = strcmp(o->firmware, "direct") != 0;
    snprintf(mem, sizeof(mem), "%llu", o->memory_mib);
    snprintf(cpus, sizeof(cpus), "%d", o->cpus);
    /* --accel qemu-kvm: the same qemu path on /dev/kvm, to compare with the
     * built-in VMM on one host */
    const char *fixed[] = { "qemu-system-x86_64", "-accel",
                            strcmp(o->accel, "qemu-kvm") ? "tcg" : "kvm", "-machine", "pc",
                            "-nodefaults", "-no-user-config", "-display", "none",
                            "-serial", "stdio", "-monitor", monitor, "-no-reboot",
                            "-m", mem, "-smp", cpus, "-S", "-chardev", qmpdev,
                            "-mon", "chardev=qmp,mode=control" };
    /* the monitor (qmp.c): qemu waits stopped (-S) until vdboot has it */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, qsock) < 0) {
        result_error(r, "socketpair for qemu's monitor: %s", strerror(errno));
        return;
    }
    snprintf(qmpdev, sizeof(qmpdev), "socket,id=qmp,fd=%d", qsock[1]);
    qmp_init(&q, qsock[0]);
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        argv[n++] = fixed[i];
    if (!firmware) {
        /* Linux checks that the IOAPIC timer ticks within a few of its own
         * loops; an emulated CPU on a busy host misses that and panics
         * ("IO-APIC + timer doesn't work"), so skip the check as qemu's docs
         * advise. */
        snprintf(append, sizeof(append), "%s%s", bf->cmdline,
                 strstr(bf->cmdline, "no_timer_check") ? "" : " no_timer_check");
        argv[n++] = "-kernel";
        argv[n++] = bf->kernel_path;
        argv[n++] = "-append";
        argv[n++] = append;
        if (bf->initrd_path[0]) {
            argv[n++] = "-initrd";
            argv[n++] = bf->initrd_path;
        }
    } else if (!strcmp(o->firmware, "uefi")) {
        const char *fw = tcg_ovmf();
        if (!fw) {
            result_error(r, "--firmware uefi: no OVMF.fd in /usr/share/ovmf (apt-get install ovmf)");
            return;
        }
        argv[n++] = "-bios";
        argv[n++] = fw;
    } else {
        /* SeaBIOS, qemu's default: with nothing bootable it says so on the
         * screen and reboots after reboot-timeout, which -no-reboot ends */
        argv[n++] = "-boot";
        argv[n++] = "strict=on,reboot-timeout=1000";
    }
    if (o->image) {
        if (disk_open(&dk, o->image, o->format, err, sizeof(err)) < 0 ||
            nbd_serve_start(&ns, &dk, err, sizeof(err)) < 0 ||
            tcg_disk_args(o->disk_bus, o->scsi_hba, firmware, ns.path, argv, &n, drive, sizeof(drive), dev,
                          sizeof(dev), err, sizeof(err)) < 0) {
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
            argv[n++] = "-device";
            argv[n++] = "VGA";
        }
        if (firmware) {
            snprintf(fwlog, sizeof(fwlog), "%s/firmware.log", ns.dir);
            snprintf(fwdev, sizeof(fwdev), "file,id=fwlog,path=%s", fwlog);
            argv[n++] = "-chardev";
            argv[n++] = fwdev;
            argv[n++] = "-device";
            argv[n++] = "isa-debugcon,iobase=0x402,chardev=fwlog";
        }
    }
    if (tcg_extra_disks(o, xdk, xns, &xstarted, argv, &n, err, sizeof(err)) < 0 ||
        tcg_extra_args(o, argv, &n, err, sizeof(err)) < 0) {
        result_error(r, "%s", err);
        goto out;
    }
    argv[n] = NULL;
    if (o->verbose) {
        fprintf(stderr, "vdboot: qemu:");
        for (int i = 0; i < n; i++)
            fprintf(stderr, " %s", argv[i]);
        fputc('\n', stderr);
    }
    if (console_init(&con, o->expect, o->console, err, sizeof(err)) < 0) {
        result_error(r, "%s", err);
        goto out;
    }
    result_arm_run(o, &con);
    int in_fd, out_fd, err_fd;
    pid_t pid = tcg_spawn((char **)argv, qsock[1], &in_fd, &out_fd, &err_fd);
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
}
