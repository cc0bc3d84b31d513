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

/* CON_DONE: the --run command finished (see struct con_run). */
enum con_event { CON_NONE = 0, CON_MATCH, CON_PANIC, CON_DONE };

#define CON_INPUT_MAX 8192
#define CON_RUN_OUTPUT_MAX 16384

/* --run: after the prompt, log in over the console and run one command
 * (session.c).  The markers around its output are typed so that the
 * terminal's echo of the command line does not contain them. */
enum con_run_state { RUN_OFF = 0, RUN_WAIT_PROMPT, RUN_LOGGING_IN, RUN_SENT, RUN_OUTPUT,
                     RUN_DONE };
struct con_run {
    enum con_run_state state;
    const char *command, *user, *password;
    bool password_sent;
    char output[CON_RUN_OUTPUT_MAX];
    size_t output_len;
    bool output_truncated;
    int exit_status;
    double t_login;            /* when the prompt was seen */
};

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
    struct con_run run;
    /* bytes to type into the guest's serial port, in order; the device
     * (serial.c or qemu's stdin in tcg.c) takes them with console_input */
    char input[CON_INPUT_MAX];
    size_t in_len, in_pos;
};

double con_now(void);
/* session.c: arm --run before the boot; console_feed calls session_line */
void console_set_run(struct console *c, const char *command, const char *user,
                     const char *password);
enum con_event session_line(struct console *c, bool line_done, enum con_event ev);
/* Next byte to type, or -1; whether any is waiting. */
int console_input(struct console *c);
bool console_input_pending(const struct console *c);
/* Why the run timed out: boot, login or the command. */
const char *console_timeout_stage(const struct console *c);
/* `expect` is an extended regex matched against each line as it grows;
 * `path` is the transcript ("-" = stdout, NULL = none). */
int console_init(struct console *c, const char *expect, const char *path,
                 char *err, size_t errlen);
void console_close(struct console *c);
enum con_event console_feed(struct console *c, uint8_t byte);
/* The last non-empty line seen (the unfinished one if any), or "". */
const char *console_last_line(const struct console *c);
/* The same, skipping the kernel's reboot/power-off messages: the line that
 * says why a guest went down. */
const char *console_last_words(const struct console *c);
/* Writes the last lines (the unfinished one too) to `f`, each indented. */
void console_print_tail(const struct console *c, FILE *f, int max_lines);

#endif
