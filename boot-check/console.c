/* console.c - watches the guest's serial output.  Bytes arrive one by one
 * (from the 16550 model or from qemu's pipe); each line is matched as it
 * grows, because a login prompt never ends with a newline. */
#include "console.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Messages after which a Linux guest will not reach its prompt. */
static const char *const con_panic_marks[] = {
    "Kernel panic - not syncing",
    "---[ end Kernel panic",
    /* firmware and boot loader failures (seen on the VGA screen, vga.c) */
    "Boot failed: not a bootable disk",
    "No bootable device",
    "grub rescue>",
    "grub>",                   /* GRUB's command line: no config, or it failed */
    "UEFI Interactive Shell",  /* OVMF's last resort once every boot option failed */
    "Entering rescue mode",
    NULL,
};

double con_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int console_init(struct console *c, const char *expect, const char *path,
                 char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    c->t_start = con_now();
    int rc = regcomp(&c->expect, expect, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char m[128];
        regerror(rc, &c->expect, m, sizeof(m));
        snprintf(err, errlen, "--expect '%s': %s", expect, m);
        return -1;
    }
    c->have_expect = true;
    if (path && strcmp(path, "-") == 0) {
        c->out = stdout;
    } else if (path) {
        c->out = fopen(path, "w");
        if (!c->out) {
            snprintf(err, errlen, "--console %s: cannot create it", path);
            return -1;
        }
        c->out_owned = true;
        setvbuf(c->out, NULL, _IOLBF, 0);   /* a slow boot can be watched live */
    }
    return 0;
}

void console_close(struct console *c)
{
    if (c->have_expect)
        regfree(&c->expect);
    c->have_expect = false;
    if (c->out && c->out_owned)
        fclose(c->out);
    else if (c->out)
        fflush(c->out);
    c->out = NULL;
}

static void con_end_line(struct console *c)
{
    memcpy(c->tail[c->tail_next], c->line, c->line_len + 1);
    c->tail_next = (c->tail_next + 1) % CON_TAIL_LINES;
    if (c->tail_count < CON_TAIL_LINES)
        c->tail_count++;
    c->line_len = 0;
    c->line[0] = 0;
}

static void con_note_version(struct console *c)
{
    const char *p = strstr(c->line, "Linux version ");
    if (!p || c->kernel_version[0])
        return;
    p += strlen("Linux version ");
    size_t n = strcspn(p, " ");
    if (n >= sizeof(c->kernel_version))
        n = sizeof(c->kernel_version) - 1;
    memcpy(c->kernel_version, p, n);
    c->kernel_version[n] = 0;
}

static enum con_event con_check(struct console *c, bool line_done)
{
    if (line_done) {
        con_note_version(c);
        for (int i = 0; con_panic_marks[i]; i++)
            if (strstr(c->line, con_panic_marks[i]))
                return CON_PANIC;
    }
    if (c->line_len && regexec(&c->expect, c->line, 0, NULL, 0) == 0)
        return CON_MATCH;
    return CON_NONE;
}

enum con_event console_feed(struct console *c, uint8_t b)
{
    if (c->bytes++ == 0)
        c->t_first_byte = con_now();
    if (c->out) {
        fputc(b, c->out);
        if (c->out == stdout)
            fflush(c->out);
    }
    if (b == '\r' || b == 0)
        return CON_NONE;
    bool done = b == '\n';
    if (!done) {
        if (c->line_len + 1 >= CON_LINE_MAX)
            con_end_line(c);    /* an endless line is wrapped, not dropped */
        c->line[c->line_len++] = (char)(b >= 0x20 || b == '\t' ? b : '?');
        c->line[c->line_len] = 0;
        /* Matching on every byte of a long boot log costs little next to
         * the guest; skip it only mid-word, where a prompt cannot end. */
        if (b != ':' && b != ' ' && b != '#' && b != '$' && b != '>')
            return CON_NONE;
    }
    enum con_event ev = con_check(c, done);
    if (ev == CON_MATCH && c->run.state > RUN_WAIT_PROMPT)
        ev = CON_NONE;          /* logged in already: the prompt regex is done */
    if (c->run.state != RUN_OFF)
        ev = session_line(c, done, ev);
    if (ev != CON_NONE && ev != CON_DONE) {   /* DONE keeps the prompt's line */
        snprintf(c->event_line, sizeof(c->event_line), "%s", c->line);
        c->t_event = con_now();
    }
    if (done)
        con_end_line(c);
    return ev;
}

void console_print_tail(const struct console *c, FILE *f, int max_lines)
{
    int n = c->tail_count < max_lines ? c->tail_count : max_lines;
    for (int i = n; i > 0; i--) {
        int k = (c->tail_next - i + CON_TAIL_LINES) % CON_TAIL_LINES;
        fprintf(f, "  | %s\n", c->tail[k]);
    }
    if (c->line_len)
        fprintf(f, "  | %s\n", c->line);
}

/* The kernel's own farewell lines say nothing about why it went down. */
static bool con_is_shutdown_noise(const char *l)
{
    static const char *const noise[] = { "reboot: ", "Restarting system", "Power down",
                                         "Preparing to enter system sleep state",
                                         "Synchronizing SCSI cache", NULL };
    for (int i = 0; noise[i]; i++)
        if (strstr(l, noise[i]))
            return true;
    return false;
}

const char *console_last_words(const struct console *c)
{
    if (c->line_len && !con_is_shutdown_noise(c->line))
        return c->line;
    for (int i = 1; i <= c->tail_count; i++) {
        const char *l = c->tail[(c->tail_next - i + CON_TAIL_LINES) % CON_TAIL_LINES];
        if (l[0] && !con_is_shutdown_noise(l))
            return l;
    }
    return console_last_line(c);
}

const char *console_last_line(const struct console *c)
{
    if (c->line_len)
        return c->line;
    for (int i = 1; i <= c->tail_count; i++) {
        const char *l = c->tail[(c->tail_next - i + CON_TAIL_LINES) % CON_TAIL_LINES];
        if (l[0])
            return l;
    }
    return "";
}
