/* tcg.c - the same boot check under qemu-system-x86_64 -accel tcg, for
 * hosts whose /dev/kvm cannot run a Linux guest at speed.  vdboot still
 * chooses the kernel, initrd and command line; qemu gets the disk in its
 * own format with snapshot=on (writes go to a temporary overlay, the image
 * is opened read-only), and its serial port on a pipe that the same console
 * watcher reads.  qemu runs with -no-reboot, so a guest reset ends it. */
#include "vdboot.h"
#include "vdisk.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TCG_MAX_ARGS 48

/* qemu's name for a vdisk format, or NULL when qemu cannot read it. */
static const char *tcg_qemu_format(const char *fmt)
{
    static const char *const map[][2] = {
        { "raw", "raw" }, { "qcow2", "qcow2" }, { "qcow", "qcow" }, { "qed", "qed" },
        { "vdi", "vdi" }, { "vmdk", "vmdk" }, { "vhd", "vpc" }, { "vhdx", "vhdx" },
        { "parallels", "parallels" },
    };
    for (size_t i = 0; fmt && i < sizeof(map) / sizeof(map[0]); i++)
        if (!strcmp(fmt, map[i][0]))
            return map[i][1];
    return NULL;
}

static pid_t tcg_spawn(char **argv, int *out_fd, int *err_fd)
{
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) < 0)
        return -1;
    if (pipe2(pe, O_CLOEXEC) < 0) {
        close(po[0]);
        close(po[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    *out_fd = po[0];
    *err_fd = pe[0];
    if (pid < 0) {
        close(po[0]);
        close(pe[0]);
    }
    return pid;
}

/* Reads qemu's serial output until an outcome, qemu's exit or the deadline. */
static enum vm_outcome tcg_watch(struct console *con, int out_fd, int err_fd, double timeout,
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
        struct pollfd p[2] = { { out_open ? out_fd : -1, POLLIN, 0 },
                               { err_open ? err_fd : -1, POLLIN, 0 } };
        if (poll(p, 2, left > 0.2 ? 200 : (int)(left * 1000) + 1) < 0 && errno != EINTR)
            break;
        if (p[0].revents) {
            ssize_t n = read(out_fd, buf, sizeof(buf));
            if (n <= 0)
                out_open = false;
            for (ssize_t i = 0; i < n; i++) {
                enum con_event ev = console_feed(con, buf[i]);
                if (ev == CON_MATCH) {
                    snprintf(reason, rlen, "matched \"%s\"", con->event_line);
                    return VM_LOGIN;
                }
                if (ev == CON_PANIC) {
                    snprintf(reason, rlen, "%s", con->event_line);
                    return VM_PANIC;
                }
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

static int tcg_drive(const struct vdboot_opts *o, char *drive, size_t size, char *err,
                     size_t errlen)
{
    vd_error ve = { 0 };
    const char *fmt = o->format ? o->format : vd_probe_file(o->image, NULL, &ve);
    const char *qf = tcg_qemu_format(fmt);
    if (!qf) {
        snprintf(err, errlen, "%s: format %s cannot be given to qemu%s%s", o->image,
                 fmt ? fmt : "unknown", ve.msg[0] ? ": " : "", ve.msg);
        return -1;
    }
    if (strchr(o->image, ',')) {
        snprintf(err, errlen, "%s: qemu cannot take a file name with a comma", o->image);
        return -1;
    }
    snprintf(drive, size, "file=%s,format=%s,if=virtio,snapshot=on,cache=unsafe", o->image, qf);
    return 0;
}

void run_tcg(const struct vdboot_opts *o, const struct boot_files *bf, struct vdboot_result *r)
{
    char err[1024], mem[32], cpus[16], drive[4200], qerr[2048] = "", append[4200];
    struct console con;
    const char *argv[TCG_MAX_ARGS];
    int n = 0;
    if (o->image && tcg_drive(o, drive, sizeof(drive), err, sizeof(err)) < 0) {
        result_error(r, "%s", err);
        return;
    }
    snprintf(mem, sizeof(mem), "%llu", o->memory_mib);
    snprintf(cpus, sizeof(cpus), "%d", o->cpus);
    /* Linux checks that the IOAPIC timer ticks within a few of its own
     * loops; an emulated CPU on a busy host misses that and panics ("IO-APIC
     * + timer doesn't work"), so skip the check as qemu's docs advise. */
    snprintf(append, sizeof(append), "%s%s", bf->cmdline,
             strstr(bf->cmdline, "no_timer_check") ? "" : " no_timer_check");
    const char *fixed[] = { "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc",
                            "-nodefaults", "-no-user-config", "-display", "none",
                            "-serial", "stdio", "-monitor", "none", "-no-reboot",
                            "-m", mem, "-smp", cpus, "-kernel", bf->kernel_path,
                            "-append", append };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        argv[n++] = fixed[i];
    if (bf->initrd_path[0]) {
        argv[n++] = "-initrd";
        argv[n++] = bf->initrd_path;
    }
    if (o->image) {
        argv[n++] = "-drive";
        argv[n++] = drive;
    }
    argv[n] = NULL;
    if (console_init(&con, o->expect, o->console, err, sizeof(err)) < 0) {
        result_error(r, "%s", err);
        return;
    }
    int out_fd, err_fd;
    pid_t pid = tcg_spawn((char **)argv, &out_fd, &err_fd);
    if (pid < 0) {
        result_error(r, "cannot start qemu-system-x86_64: %s", strerror(errno));
        console_close(&con);
        return;
    }
    r->outcome = tcg_watch(&con, out_fd, err_fd, o->timeout, r->reason, sizeof(r->reason),
                           qerr, sizeof(qerr));
    r->seconds = con_now() - con.t_start;
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    close(out_fd);
    close(err_fd);
    if (r->outcome == VM_RUNNING) {
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
            result_error(r, "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
        else if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && con.bytes)
            r->outcome = VM_PANIC,
            snprintf(r->reason, sizeof(r->reason),
                     "guest reset or powered off before the prompt (last line: %s)",
                     console_last_line(&con));
        else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            r->outcome = VM_PANIC,
            snprintf(r->reason, sizeof(r->reason), "guest reset or powered off before any "
                     "console output (the kernel failed before its console started)");
        else if (qerr[0])
            result_error(r, "qemu-system-x86_64 failed: %s", qerr);
        else
            result_error(r, "qemu-system-x86_64 failed with %s %d and no message",
                         WIFEXITED(status) ? "exit status" : "signal",
                         WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    }
    result_take_console(r, &con);
    console_close(&con);
}
