/* tool.h - what every vdisk command-line tool shares: exit codes, --version,
 * the one-line usage error, the format list and the "guessed raw" warning.
 *
 * Exit codes, the same in every tool and documented in each man page:
 *   0  success
 *   1  error (the operation failed; a one-line message says why)
 *   2  usage (unknown command or option, missing argument)
 * Tools whose result is itself a status keep qemu-img's or their own
 * documented codes on top (vdconvert compare/check, vdboot outcomes).
 */
#ifndef VD_TOOL_H
#define VD_TOOL_H

#include "vdisk.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define VT_EXIT_OK 0
#define VT_EXIT_ERR 1
#define VT_EXIT_USAGE 2

/* Print "PROG (vdisk) VERSION" on stdout; returns 0. */
int vt_version(const char *prog);

/* "PREFIX: MSG" and a newline on stderr: the one line of every tool's
 * errors. */
void vt_vmessage(const char *prefix, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* "PROG: MSG" on stderr, then `usage` (may be NULL); returns VT_EXIT_USAGE. */
int vt_usage_error(const char *prog, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* After getopt returned '?' or ':' (optstring starting with ':'), the
 * option the user typed ("-x" or "--foo") in `buf`; `last` is
 * argv[optind - 1]. */
const char *vt_bad_option(const char *last, char *buf, size_t n);

/* Print "fmt1, fmt2, ..." of the formats (only creatable ones if asked). */
void vt_print_formats(FILE *f, bool creatable_only);

/* The qemu-img warning for an image opened as raw because nothing else
 * matched its content (vd_info.probed_raw), naming the user's `path`, in
 * qemu-img's words (scripts grep for them). */
void vt_warn_probed_raw(vd_image *img, const char *path);

/* Whether an output made under a temporary name may be renamed over
 * `path`: it is absent or a regular file.  Renaming over /dev/null, a
 * device, a FIFO or a socket would replace that node. */
bool vt_replaceable(const char *path);
/* Where an output replacing `path` goes: `path` itself, or, when `path` is
 * a symbolic link, the file it leads to (existing or not, in a folder that
 * exists), as "REALDIR/NAME" in *out.  The new file is made beside that
 * and renamed onto it, so the link stays a link and the file it names
 * holds the output (as qemu-img, which writes through it).  A link that
 * loops or leads into a missing folder: a negative errno and a one-line
 * message naming `path` in `why`. */
int vt_resolve_out(const char *path, char *out, size_t n, char *why, size_t whyn);
/* "REALDIR/NAME" for `path` in *out: its folder resolved (-ENOENT: the
 * folder does not exist), its last name kept as it is (a link stays). */
int vt_resolve_dir(const char *path, char *out, size_t n);
/* Worker threads for a copy: the CPUs this process may run on (its
 * affinity, as nproc counts them: `taskset -c 0` gives one), else the
 * CPUs online. */
int vt_cpus(void);

/* ---- JSON (json.c): the string writer of every tool's --json ----------- */

/* `s` as a quoted JSON string in ASCII, by qemu's rules (qemu-img's JSON
 * stays byte-compatible): '"', '\\' and \b \f \n \r \t by name, other
 * control characters and non-ASCII as \uXXXX, bytes of invalid UTF-8 as
 * \uFFFD.  NULL writes null. */
void vt_json_str(FILE *f, const char *s);
/* The same without the quotes. */
void vt_json_body(FILE *f, const char *s);
/* One string member of an object: `lead` (the separator and layout before
 * it, "" for the first), "key": and `val` as vt_json_str writes it. */
void vt_json_member(FILE *f, const char *lead, const char *key, const char *val);
/* The code point of the valid UTF-8 sequence at `s` in *cp and its length
 * (1-4), or 0 for an invalid, overlong, surrogate or truncated one. */
int vt_utf8_decode(const unsigned char *s, uint32_t *cp);

/* ---- progress (progress.c): the one display of every tool's -p -------- */

typedef struct vt_progress vt_progress;
/* `label` names the user's files ("guest.raw -> guest.vmdk"); NULL when not
 * `enabled`.  Every call accepts NULL. */
vt_progress *vt_progress_new(const char *label, uint64_t total, bool enabled);
void vt_progress_add(vt_progress *p, uint64_t done);   /* thread-safe */
void vt_progress_end(vt_progress *p, bool ok);
/* A vd_progress_fn for vd_copy; ctx is the vt_progress (may be NULL). */
void vt_progress_cb(void *ctx, uint64_t done, uint64_t total);

#endif
