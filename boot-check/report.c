/* report.c - how vdboot tells its results: a line of text per image, one
 * JSON object per image (one a line), a JUnit XML file (one testcase per
 * image, for CI dashboards) or TAP.  Console text goes into all of them: a
 * console of a guest in trouble holds anything, so JSON escapes what is not
 * valid UTF-8 (the tools' one writer), and in XML such bytes, and those XML
 * does not allow, are replaced by '?'. */
#include "vdboot.h"
#include "tool.h"

#include <stdio.h>
#include <string.h>

const char *const vdboot_outcome_names[] = { "running", "login", "panic", "timeout", "error",
                                             "check_failed", "poweroff" };
const int vdboot_outcome_exit[] = { 3, 0, 1, 2, 3, 4, 5 };

/* Empty fields are null (unknown), not "". */
static void json_str(FILE *f, const char *s)
{
    vt_json_str(f, s && *s ? s : NULL);
}

/* XML text or attribute value: markup escaped; control characters XML 1.0
 * forbids (all below 0x20 but tab, newline, CR) become '?'.  In attributes
 * newlines become spaces. */
static void xml_str(FILE *f, const char *s, bool attr)
{
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        uint32_t cp;
        int n = vt_utf8_decode(p, &cp);
        if (n == 0) {
            fputc('?', f);
            p++;
            continue;
        }
        if (n > 1) {
            fwrite(p, 1, (size_t)n, f);
            p += n;
            continue;
        }
        switch (*p) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\n': case '\t': fputc(attr ? ' ' : *p, f); break;
        default: fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, f); break;
        }
        p++;
    }
}

void report_text(const struct vdboot_result *r)
{
    const char *name = vdboot_outcome_names[r->outcome];
    FILE *f = r->outcome == VM_LOGIN ? stdout : stderr;
    fprintf(f, "vdboot: %s%s%s after %.2f s (%s%s%s): %s\n", r->image[0] ? r->image : "",
            r->image[0] ? ": " : "", name, r->seconds, r->accel[0] ? r->accel : "no accelerator",
            r->kernel_version[0] ? ", kernel " : "", r->kernel_version, r->reason);
    if (r->outcome == VM_PANIC || r->outcome == VM_TIMEOUT)
        fprintf(f, "vdboot: last console lines:\n%s", r->tail);
    if (r->shutdown[0])
        fprintf(f, "vdboot: shutdown: %s\n", r->shutdown);
    if (r->run_exit_status >= 0)
        fprintf(f, "vdboot: '%s' exited %d%s:\n%s%s", r->run_command, r->run_exit_status,
                r->run_output_truncated ? " (output truncated)" : "", r->run_output,
                r->run_output_len && r->run_output[r->run_output_len - 1] != '\n' ? "\n" : "");
}

/* ", \"key\": " and the string (null when empty). */
static void json_kv(FILE *f, const char *key, const char *v)
{
    fprintf(f, ", \"%s\": ", key);
    json_str(f, v);
}

void report_json(FILE *f, const struct vdboot_result *r)
{
    fprintf(f, "{\"image\": ");
    json_str(f, r->image);
    json_kv(f, "format", r->format);
    fprintf(f, ", \"outcome\": \"%s\", \"exit_code\": %d",
            vdboot_outcome_names[r->outcome], vdboot_outcome_exit[r->outcome]);
    json_kv(f, "accelerator", r->accel);
    json_kv(f, "accelerator_reason", r->accel_why);
    json_kv(f, "firmware", r->firmware);
    json_kv(f, "disk_bus", r->disk_bus);
    fprintf(f, ", \"seconds\": %.3f, \"first_output_seconds\": ", r->seconds);
    if (r->first_byte_seconds >= 0)
        fprintf(f, "%.3f", r->first_byte_seconds);
    else
        fprintf(f, "null");
    json_kv(f, "kernel_version", r->kernel_version);
    json_kv(f, "kernel", r->kernel_source);
    json_kv(f, "cmdline", r->cmdline);
    json_kv(f, "reason", r->reason);
    json_kv(f, "matched",
            r->outcome == VM_LOGIN || r->outcome == VM_CHECK_FAILED ? r->event_line : NULL);
    json_kv(f, "prompt_seen_on", r->prompt_seen_on);
    json_kv(f, "console", r->console_path);
    json_kv(f, "console_tail", r->tail);
    json_kv(f, "shutdown", r->shutdown);
    fprintf(f, ", \"run\": ");
    if (r->run_command[0]) {
        fprintf(f, "{\"command\": ");
        json_str(f, r->run_command);
        json_kv(f, "user", r->run_user);
        fprintf(f, ", \"exit_status\": ");
        if (r->run_exit_status >= 0)
            fprintf(f, "%d", r->run_exit_status);
        else
            fprintf(f, "null");
        fprintf(f, ", \"output\": ");
        /* "" for no output, unlike json_str */
        vt_json_str(f, r->run_exit_status >= 0 ? r->run_output : NULL);
        fprintf(f, ", \"output_truncated\": %s}", r->run_output_truncated ? "true" : "false");
    } else {
        fprintf(f, "null");
    }
    fprintf(f, "}\n");
}

/* One <testsuite> of one <testcase> per image; anything but login is a
 * <failure> whose type is the outcome and whose message is the reason. */
int report_junit(const char *path, const struct vdboot_result *rs, int n, double seconds)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int failures = 0;
    for (int i = 0; i < n; i++)
        failures += rs[i].outcome != VM_LOGIN;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<testsuites name=\"vdboot\" tests=\"%d\" failures=\"%d\" errors=\"0\" "
            "time=\"%.3f\">\n"
            "  <testsuite name=\"vdboot\" tests=\"%d\" failures=\"%d\" errors=\"0\" "
            "skipped=\"0\" time=\"%.3f\">\n", n, failures, seconds, n, failures, seconds);
    for (int i = 0; i < n; i++) {
        const struct vdboot_result *r = &rs[i];
        fprintf(f, "    <testcase classname=\"vdboot.%s\" name=\"", r->accel[0] ? r->accel : "none");
        xml_str(f, r->image[0] ? r->image : r->kernel_source, true);
        fprintf(f, "\" time=\"%.3f\">\n", r->seconds);
        if (r->outcome != VM_LOGIN) {
            fprintf(f, "      <failure type=\"%s\" message=\"%s: ", vdboot_outcome_names[r->outcome],
                    vdboot_outcome_names[r->outcome]);
            xml_str(f, r->reason, true);
            fprintf(f, "\">");
            xml_str(f, r->reason, false);
            fprintf(f, "</failure>\n");
        }
        fprintf(f, "      <system-out>");
        xml_str(f, r->tail, false);
        fprintf(f, "</system-out>\n    </testcase>\n");
    }
    fprintf(f, "  </testsuite>\n</testsuites>\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* TAP 13: a test line per image, a YAML block with the outcome and the
 * console tail for the ones that did not log in. */
void report_tap(FILE *f, const struct vdboot_result *rs, int n)
{
    fprintf(f, "TAP version 13\n1..%d\n", n);
    for (int i = 0; i < n; i++) {
        const struct vdboot_result *r = &rs[i];
        bool ok = r->outcome == VM_LOGIN;
        fprintf(f, "%s %d - %s: %s after %.2f s\n", ok ? "ok" : "not ok", i + 1,
                r->image[0] ? r->image : r->kernel_source, vdboot_outcome_names[r->outcome],
                r->seconds);
        if (ok)
            continue;
        fprintf(f, "  ---\n  outcome: %s\n  exit_code: %d\n  reason: ",
                vdboot_outcome_names[r->outcome], vdboot_outcome_exit[r->outcome]);
        json_str(f, r->reason);   /* a JSON string is a YAML double-quoted scalar */
        fprintf(f, "\n  console_tail: ");
        json_str(f, r->tail);
        fprintf(f, "\n  ...\n");
    }
}
