/* boot.c - where the kernel comes from: --kernel/--initrd/--append, or the
 * image's own /boot (discover.c); plus the small helpers of the result. */
#include "vdboot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void result_error(struct vdboot_result *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
    va_end(ap);
    r->outcome = VM_ERROR;
}

void result_take_console(struct vdboot_result *r, const struct console *c)
{
    snprintf(r->event_line, sizeof(r->event_line), "%s", c->event_line);
    r->run_exit_status = -1;
    if (c->run.state != RUN_OFF) {
        snprintf(r->run_command, sizeof(r->run_command), "%s", c->run.command);
        snprintf(r->run_user, sizeof(r->run_user), "%s", c->run.user);
        if (c->run.state == RUN_DONE) {
            r->run_exit_status = c->run.exit_status;
            memcpy(r->run_output, c->run.output, c->run.output_len + 1);
            r->run_output_len = c->run.output_len;
            r->run_output_truncated = c->run.output_truncated;
        }
        const char *stage = console_timeout_stage(c);
        if (r->outcome == VM_TIMEOUT && stage) {
            size_t n = strlen(r->reason);
            snprintf(r->reason + n, sizeof(r->reason) - n, " (%s)", stage);
        }
    }
    if (c->kernel_version[0])
        snprintf(r->kernel_version, sizeof(r->kernel_version), "%s", c->kernel_version);
    if (c->bytes)
        r->first_byte_seconds = c->t_first_byte - c->t_start;
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    if (f) {
        console_print_tail(c, f, 8);
        fclose(f);
        snprintf(r->tail, sizeof(r->tail), "%s", mem ? mem : "");
        free(mem);
    }
}

enum vm_outcome result_console_event(const struct console *c, enum con_event ev, char *reason,
                                     size_t rlen)
{
    switch (ev) {
    case CON_MATCH:
        snprintf(reason, rlen, "matched \"%s\"", c->event_line);
        return VM_LOGIN;
    case CON_PANIC:
        snprintf(reason, rlen, "%s", c->event_line);
        return VM_PANIC;
    case CON_DONE:
        snprintf(reason, rlen, "logged in as %s; '%.300s' exited %d", c->run.user, c->run.command,
                 c->run.exit_status);
        return c->run.exit_status == 0 ? VM_LOGIN : VM_CHECK_FAILED;
    default:
        return VM_RUNNING;
    }
}

void result_arm_run(const struct vdboot_opts *o, struct console *c)
{
    if (o->run)
        console_set_run(c, o->run, o->login ? o->login : "root",
                        o->password_file ? o->password : NULL);
}

int read_whole_file(const char *path, uint8_t **out, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > VDBOOT_MAX_BOOT_FILE) {
        snprintf(err, errlen, "%s: not a regular file of at most %llu MiB", path,
                 VDBOOT_MAX_BOOT_FILE >> 20);
        close(fd);
        return -1;
    }
    *len = (size_t)st.st_size;
    *out = malloc(*len ? *len : 1);
    size_t got = 0;
    while (*out && got < *len) {
        ssize_t n = read(fd, *out + got, *len - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (!*out || got != *len) {
        snprintf(err, errlen, "%s: read failed", path);
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/* Adds console=ttyS0 when the command line names no serial console: the
 * prompt is watched there. */
static void boot_add_console(char *cmd, size_t size)
{
    if (strstr(cmd, "console=ttyS0"))
        return;
    size_t n = strlen(cmd);
    snprintf(cmd + n, size - n, "%sconsole=ttyS0,115200", n ? " " : "");
}

int boot_files_get(const struct vdboot_opts *o, struct boot_files *bf, struct vdboot_result *r)
{
    char err[1024];
    memset(bf, 0, sizeof(*bf));
    if (o->kernel) {
        if (read_whole_file(o->kernel, &bf->bi.kernel, &bf->bi.kernel_len, err, sizeof(err)) < 0)
            goto fail;
        snprintf(bf->kernel_path, sizeof(bf->kernel_path), "%s", o->kernel);
        snprintf(bf->source, sizeof(bf->source), "%s", o->kernel);
        if (o->initrd) {
            if (read_whole_file(o->initrd, &bf->bi.initrd, &bf->bi.initrd_len, err, sizeof(err)) < 0)
                goto fail;
            snprintf(bf->initrd_path, sizeof(bf->initrd_path), "%s", o->initrd);
        }
        snprintf(bf->cmdline, sizeof(bf->cmdline), "%s", o->append ? o->append : "");
    } else {
        if (discover_boot(o->image, o->format, bf, err, sizeof(err)) < 0)
            goto fail;
        if (o->append)
            snprintf(bf->cmdline, sizeof(bf->cmdline), "%s", o->append);
        else
            boot_add_console(bf->cmdline, sizeof(bf->cmdline));
    }
    /* Both accelerators need a loadable kernel: say which header field is
     * wrong here rather than let qemu or the guest fail without a word. */
    char why[512];
    if (bzimage_check(bf->bi.kernel, bf->bi.kernel_len, why, sizeof(why)) < 0) {
        snprintf(err, sizeof(err), "%.500s: %.500s", bf->source, why);
        goto fail;
    }
    bf->bi.cmdline = bf->cmdline;
    return 0;
fail:
    result_error(r, "%s", err);
    boot_files_free(bf);
    return -1;
}

void boot_files_free(struct boot_files *bf)
{
    free(bf->bi.kernel);
    free(bf->bi.initrd);
    bf->bi.kernel = bf->bi.initrd = NULL;
    if (bf->tmpdir[0]) {
        if (bf->kernel_path[0])
            unlink(bf->kernel_path);
        if (bf->initrd_path[0])
            unlink(bf->initrd_path);
        rmdir(bf->tmpdir);
        bf->tmpdir[0] = 0;
    }
}
