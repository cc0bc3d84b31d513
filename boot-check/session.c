/* session.c - --run: log in on the serial console and run one command, as
 * a person at the terminal would.  Driven by the console's lines:
 *
 *   login prompt (the --expect match)  -> type USER
 *   "Password:"                        -> type the password (once)
 *   a shell prompt (a line ending in # or $) -> type the command line
 *   "VDBOOT-BEGIN" ... "VDBOOT-END N"  -> the output and exit status N
 *
 * The lines typed are
 *   printf '\nVDB%sBEGIN\n' OOT-; (
 *   CMD
 *   ); printf '\nVDB%sEND %d\n' OOT- $?
 * The terminal echoes "VDB%sBEGIN", never the marker itself, so only the
 * shell's output can match; the shell reads all three lines (echo and
 * continuation prompts come out then) before it prints BEGIN, so nothing
 * but CMD's output lies between the markers; and the subshell keeps an
 * `exit 3` in CMD from ending the login shell (its status is still $?). */
#include "console.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUN_BEGIN "VDBOOT-BEGIN"
#define RUN_END "VDBOOT-END "

static void session_type(struct console *c, const char *s)
{
    size_t n = strlen(s);
    if (c->in_pos == c->in_len)
        c->in_pos = c->in_len = 0;
    if (n > sizeof(c->input) - c->in_len)
        n = sizeof(c->input) - c->in_len;   /* checked in console_set_run */
    memcpy(c->input + c->in_len, s, n);
    c->in_len += n;
}

void console_set_run(struct console *c, const char *command, const char *user,
                     const char *password)
{
    memset(&c->run, 0, sizeof(c->run));
    c->run.state = RUN_WAIT_PROMPT;
    c->run.command = command;
    c->run.user = user;
    c->run.password = password;
    c->run.exit_status = -1;
}

int console_input(struct console *c)
{
    if (c->in_pos >= c->in_len)
        return -1;
    return (unsigned char)c->input[c->in_pos++];
}

bool console_input_pending(const struct console *c)
{
    return c->in_pos < c->in_len;
}

const char *console_timeout_stage(const struct console *c)
{
    switch (c->run.state) {
    case RUN_LOGGING_IN: return "the login prompt was seen, but no shell prompt after logging in";
    case RUN_SENT: case RUN_OUTPUT: return "logged in, but the --run command did not finish";
    default: return NULL;
    }
}

/* A shell prompt: the unfinished line ends in "# " or "$ " (or without the
 * space). */
static bool session_is_prompt(const char *line)
{
    size_t n = strlen(line);
    while (n && line[n - 1] == ' ')
        n--;
    return n && (line[n - 1] == '#' || line[n - 1] == '$');
}

static bool session_is_password(const char *line)
{
    const char *p = strstr(line, "assword:");
    return p && p > line && (p[-1] == 'p' || p[-1] == 'P') && !p[strspn(p + 8, " ") + 8];
}

static void session_output(struct console *c, const char *line)
{
    struct con_run *r = &c->run;
    size_t n = strlen(line);
    if (r->output_len + n + 2 > sizeof(r->output)) {
        r->output_truncated = true;
        return;
    }
    memcpy(r->output + r->output_len, line, n);
    r->output_len += n;
    r->output[r->output_len++] = '\n';
    r->output[r->output_len] = 0;
}

enum con_event session_line(struct console *c, bool line_done, enum con_event ev)
{
    struct con_run *r = &c->run;
    char buf[CON_INPUT_MAX];
    if (ev == CON_PANIC)
        return ev;
    switch (r->state) {
    case RUN_WAIT_PROMPT:
        if (ev != CON_MATCH)
            return ev;
        r->t_login = con_now();
        snprintf(c->event_line, sizeof(c->event_line), "%s", c->line);   /* the prompt */
        snprintf(buf, sizeof(buf), "%s\n", r->user);
        session_type(c, buf);
        r->state = RUN_LOGGING_IN;
        return CON_NONE;
    case RUN_LOGGING_IN:
        if (line_done)
            return CON_NONE;
        if (!r->password_sent && r->password && session_is_password(c->line)) {
            snprintf(buf, sizeof(buf), "%s\n", r->password);
            session_type(c, buf);
            r->password_sent = true;
        } else if (session_is_prompt(c->line)) {
            snprintf(buf, sizeof(buf), "printf '\\nVDB%%sBEGIN\\n' OOT-; (\n%s\n"
                     "); printf '\\nVDB%%sEND %%d\\n' OOT- $?\n", r->command);
            session_type(c, buf);
            r->state = RUN_SENT;
        }
        return CON_NONE;
    case RUN_SENT:
        if (line_done && strcmp(c->line, RUN_BEGIN) == 0)
            r->state = RUN_OUTPUT;
        return CON_NONE;
    case RUN_OUTPUT:
        if (!line_done)
            return CON_NONE;
        if (strncmp(c->line, RUN_END, strlen(RUN_END)) == 0) {
            char *end;
            long st = strtol(c->line + strlen(RUN_END), &end, 10);
            if (end != c->line + strlen(RUN_END) && !*end) {
                r->exit_status = (int)st;
                /* the END printf starts with a newline: drop that empty line */
                if (r->output_len && r->output[r->output_len - 1] == '\n')
                    r->output[--r->output_len] = 0;
                r->state = RUN_DONE;
                return CON_DONE;
            }
        }
        session_output(c, c->line);
        return CON_NONE;
    default:
        return CON_NONE;
    }
}
