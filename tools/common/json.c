/* json.c - the one JSON string writer of every tool's --json output
 * (vdconvert info/check/map/measure, ovatool info/lint, vdboot, vdmount's
 * partitions.json).  Strings come from images, OVF files and guest consoles,
 * so anything can be in them: the output is always valid JSON in ASCII.  The
 * rules are qemu's (qobject/qjson.c), so that `info --output=json` stays
 * byte for byte what qemu-img prints for the same names: '"' and '\\' and
 * \b \f \n \r \t by name, other control characters and everything outside
 * ASCII as \uXXXX (upper-case hex, a surrogate pair above U+FFFF), and
 * each byte that does not start a valid UTF-8 sequence as \uFFFD. */
#include "tool.h"

int vt_utf8_decode(const unsigned char *s, uint32_t *cp)
{
    static const uint32_t min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
    int n = s[0] < 0x80 ? 1 : (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3
          : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (n == 0)
        return 0;
    uint32_t c = n == 1 ? s[0] : s[0] & (0x7f >> n);
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)     /* also stops at the terminating NUL */
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    if (c < min[n] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;                      /* overlong, past Unicode, surrogate */
    *cp = c;
    return n;
}

void vt_json_body(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        uint32_t c = 0xfffd;
        int n = vt_utf8_decode(p, &c);
        p += n ? n : 1;
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (c >= 0x20 && c < 0x7f)
                fputc((int)c, f);
            else if (c < 0x10000)
                fprintf(f, "\\u%04X", (unsigned)c);
            else
                fprintf(f, "\\u%04X\\u%04X", (unsigned)(0xd800 + ((c - 0x10000) >> 10)),
                        (unsigned)(0xdc00 + ((c - 0x10000) & 0x3ff)));
        }
    }
}

void vt_json_str(FILE *f, const char *s)
{
    if (!s) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    vt_json_body(f, s);
    fputc('"', f);
}

void vt_json_member(FILE *f, const char *lead, const char *key, const char *val)
{
    fputs(lead, f);
    vt_json_str(f, key);
    fputs(": ", f);
    vt_json_str(f, val);
}
