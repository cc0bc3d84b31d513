/* vdconvert.h - what the sub-command files of vdconvert share. */
#ifndef VDCONVERT_H
#define VDCONVERT_H

#include "vdisk.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes: 1 a failure, 2 a usage error (as every vdisk tool; tool.h). */
#define VC_EXIT_ERR 1
#define VC_EXIT_USAGE 2

/* ---- helpers (vdconvert.c) --------------------------------------------- */

/* Print "vdconvert: MSG" on stderr; returns VC_EXIT_ERR. */
int vc_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print the error's one-line message; returns VC_EXIT_ERR. */
int vc_fail_err(const vd_error *e);
/* A size argument (vd_parse_size's rules, qemu-img's); false on garbage
 * or overflow. */
static inline bool vc_parse_size(const char *s, uint64_t *out)
{
    return vd_parse_size(s, out) == 0;
}
/* getopt boilerplate: prints "vdconvert CMD: unknown option ..." and the
 * command's usage on stderr; returns VC_EXIT_USAGE.  `what` is
 * argv[optind - 1]. */
int vc_usage_error(const char *cmd, const char *what);
/* "vdconvert CMD: MSG" and the command's synopsis; returns VC_EXIT_USAGE. */
int vc_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The long options of vc_common_option, for the commands that take them:
 * --help, --allow-host-paths and --force-share; --json and --output. */
#define VC_COMMON_LONG_OPTIONS \
    { "help", 0, 0, 'h' }, { "allow-host-paths", 0, 0, 'H' }, { "force-share", 0, 0, 'U' }
#define VC_OUTPUT_LONG_OPTIONS { "json", 0, 0, 'j' }, { "output", 1, 0, 'o' }
/* getopt's `c` when it is none of the command's own options: the options
 * most commands share are taken here and -1 returned: -f FMT into *fmt,
 * --allow-host-paths into *allow, -U/--force-share, and with `json` (not
 * NULL) --json and --output=json|human into *json; -h/--help prints `usage`
 * and returns 0; a bad --output value is VC_EXIT_ERR; anything else is the
 * usage error of `cmd` (VC_EXIT_USAGE).  A command lists in its optstring
 * and long options those of them it takes. */
int vc_common_option(int c, const char *cmd, const char *usage, char **argv, const char **fmt,
                     bool *allow, bool *json);
/* The one image operand left after the options (argv[optind]) opened
 * read-only: 0, the usage error when there is not exactly one, or the open
 * error (VC_EXIT_ERR). */
int vc_open_operand(const char *cmd, int argc, char **argv, const char *fmt, bool allow,
                    vd_image **img);
/* 0 when `fmt` is NULL or a known format (name or alias); otherwise prints
 * qemu-img's "Unknown file format 'X'" with the list and returns 1. */
int vc_check_format(const char *fmt);
/* The output format for `path`: `given` (-O, checked; aliases become the
 * canonical name), else the extension when it is a known one, else raw for
 * NBD URIs and devices; otherwise prints an error asking for -O and
 * returns 1. */
int vc_output_format(const char *given, const char *path, const char **fmt);
/* -U/--force-share: read images another process may be writing (read-only
 * opens only; writers always take the write lock). */
extern bool vc_force_share;
/* Whether a backing file given to an image of format `fmt` needs its
 * format named (-F), as qemu-img 7.2 requires. */
bool vc_backing_needs_format(const char *fmt);
/* Open an image read-only (or read-write) with the common options. */
int vc_open(const char *path, const char *fmt, bool readonly, bool allow_host,
            vd_image **out, vd_error *e);
/* qemu-img's "Snapshot list:" table (info.c; snapshot -l, info). */
void vc_print_snapshots(const vd_snapshot_info *s, int n);
/* Whether the `len` bytes at buf are all zero. */
bool vc_is_zero(const void *buf, size_t len);

/* ---- conversion (convert.c) -------------------------------------------- */

struct vc_convert_opts {
    const char *src, *dst;
    const char *src_fmt, *dst_fmt;     /* NULL: probe / from extension */
    const char *options;               /* -o, may be NULL */
    const char *backing, *backing_fmt; /* -B, -F */
    const char *snapshot;              /* -l */
    uint64_t sparse_size;              /* -S; 0 = no zero detection, and the
                                          output fully allocated */
    int workers;                       /* -m */
    bool compress;                     /* -c */
    int compression_level;             /* -o compression_level=N, 0 default */
    bool existing;                     /* -n: write into an existing target */
    bool target_is_zero;               /* --target-is-zero (with -n) */
    bool direct;                       /* -t none|directsync: O_DIRECT on raw targets */
    unsigned cache;                    /* -t: VD_CACHE_* of the target */
    bool src_direct;                   /* -T none|directsync: IN read O_DIRECT */
    const char *src_cache;             /* -T's argument, for messages */
    const char *dst_cache;             /* -t's argument, for messages */
    bool progress, quiet;
    bool allow_host_paths;
    bool no_copy_range;                /* disable copy_file_range (testing) */
    bool keep_uuid;                    /* --keep-uuid: OUT gets IN's image UUID */
};

int vc_convert(const struct vc_convert_opts *o, vd_error *e);


/* ---- the temporary output (tmpout.c) ---------------------------------- */

/* Whether images of `fmt` are made in a temporary folder under their final
 * names (their files name each other: VMDK) rather than under a hidden
 * name beside OUT. */
bool vc_tmp_needs_folder(const char *fmt);
/* The path to create the new image for OUT at (NULL and *e on failure);
 * from here a signal that ends the process removes it.  One at a time. */
const char *vc_tmp_begin(const char *dst, const char *fmt, vd_error *e);
/* Put the finished image in place (its other files first, the file at
 * OUT last). */
int vc_tmp_commit(const char *dst, vd_error *e);
/* Remove what was made (after a failure). */
void vc_tmp_abort(void);
/* Replace the temporary names in e's message by the user's (OUT). */
void vc_tmp_user_names(vd_error *e, const char *dst);

/* ---- rewriting an image in place (chain.c) -------------------------------- */

enum vc_rewrite_mode {
    VC_REWRITE_KEEP_BACKING,  /* same backing; copy the top layer (resize) */
    VC_REWRITE_SAFE,          /* new backing; same guest content (rebase) */
    VC_REWRITE_UNSAFE,        /* new backing; top layer as it is (rebase -u) */
    VC_REWRITE_EMPTY,         /* same backing; nothing of its own (commit) */
};
/* Rewrite `path` (format `fmt`) at `size` as a new image (tmpout.c) put
 * in place of the original. */
int vc_rewrite(const char *path, const char *fmt, uint64_t size, const char *new_backing,
               const char *new_bfmt, enum vc_rewrite_mode mode, bool allow, vd_error *e);

/* ---- in place (inplace.c): -ENOSYS when the format has no such hook ---- */

/* A backing name as stored (relative to the folder of the image at `img`)
 * resolved for opening from the current directory; malloc'd, NULL on
 * out of memory. */
char *vc_backing_path(const char *img, const char *name);

/* rebase (safe: copy what differs between the backings, then switch the
 * reference) or rebase -u (switch only), on the image's own file. */
int vc_rebase_inplace(const char *path, const char *fmt, const char *nb, const char *nbf,
                      bool unsafe, bool allow, vd_error *e);
/* After commit wrote the overlay's data into its base: refresh the
 * overlay's link to the base and, unless `keep`, empty it. */
int vc_commit_finish(const char *path, const char *fmt, bool keep, bool allow, vd_error *e);

/* ---- progress --------------------------------------------------------- */

/* The display shared by every tool: tools/common (tool.h). */
#include "tool.h"

/* ---- sub-commands ------------------------------------------------------ */

int vc_cmd_convert(int argc, char **argv);
int vc_cmd_info(int argc, char **argv);
int vc_cmd_map(int argc, char **argv);
int vc_cmd_check(int argc, char **argv);
int vc_cmd_compare(int argc, char **argv);
int vc_cmd_create(int argc, char **argv);
int vc_cmd_resize(int argc, char **argv);
int vc_cmd_measure(int argc, char **argv);
int vc_cmd_snapshot(int argc, char **argv);
int vc_cmd_commit(int argc, char **argv);
int vc_cmd_rebase(int argc, char **argv);
int vc_cmd_amend(int argc, char **argv);
int vc_cmd_dd(int argc, char **argv);
int vc_cmd_bench(int argc, char **argv);

#endif
