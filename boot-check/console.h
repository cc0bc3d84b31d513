/* console.h - the guest's serial console as vdboot watches it: a transcript
 * file, the last lines for reports, and the matchers that end a run (the
 * login prompt, --expect, kernel panics).  Shared by the built-in VMM and
 * the qemu (tcg) path. */
#ifndef VDBOOT_CONSOLE_H
#define VDBOOT_CONSOLE_H

#include <regex.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define CON_TAIL_LINES 12
#define CON_LINE_MAX 512

enum con_event { CON_NONE = 0, CON_MATCH, CON_PANIC };

struct console {
    FILE *out;                 /* transcript (may be NULL) */
    bool out_owned;
    regex_t expect;
    bool have_expect;
    char line[CON_LINE_MAX];   /* the current, unfinished line */
    size_t line_len;
    char tail[CON_TAIL_LINES][CON_LINE_MAX];
    int tail_next, tail_count;
    char event_line[CON_LINE_MAX]; /* the line that matched or panicked */
    char kernel_version[128];  /* from "Linux version ..." when seen */
    uint64_t bytes;
    double t_start, t_first_byte, t_event;
};

double con_now(void);
/* `expect` is an extended regex matched against each line as it grows;
 * `path` is the transcript ("-" = stdout, NULL = none). */
int console_init(struct console *c, const char *expect, const char *path,
                 char *err, size_t errlen);
void console_close(struct console *c);
enum con_event console_feed(struct console *c, uint8_t byte);
/* The last non-empty line seen (the unfinished one if any), or "". */
const char *console_last_line(const struct console *c);
/* Writes the last lines (the unfinished one too) to `f`, each indented. */
void console_print_tail(const struct console *c, FILE *f, int max_lines);

#endif
