/* vd-internal.h - core-private helpers (not for drivers). */
#ifndef VD_INTERNAL_H
#define VD_INTERNAL_H
#include "vd-driver.h"

int vd_kvlist_parse(const char *s, vd_kvlist **out, vd_error *err);
void vd_kvlist_free(vd_kvlist *kv);
const char *vd_kvlist_unused(vd_kvlist *kv);
bool vd_kvlist_any(vd_kvlist *kv);
const char *vd_kvlist_first_not_in(vd_kvlist *kv, const vd_opt_desc *known);

/* "nbd://...", "nbd+unix://...", "nbds://...": an NBD export, not a file. */
bool vd_is_uri(const char *path);

/* A zeroed handle with its lock set up (vd_open's layers, the in-memory
 * overlay), and its release: the driver's close, the file, the names; not
 * the backing chain (vd_close walks that). */
vd_image *vd_image_new(void);
void vd_image_free(vd_image *img);

/* Remember that `img` opened `f` (vd_image_uses_file).  0 or -ENOMEM. */
int vd_image_note_file(vd_image *img, vd_file *f);
/* While on (this thread), vd_file_create makes files whose syncs do
 * nothing: vd_create with vd_create_opts.no_sync. */
void vd_file_create_unsynced(bool on);
/* Does copy_file_range into the file at fd share blocks (a reflink)
 * rather than copy them?  (The copy engine's choice, copy.c.) */
bool vd_fs_shares_blocks(int fd);

/* Open `name` (absolute, or relative to the folder `root`, an O_PATH
 * descriptor) with `flags`, following symlinks by hand so that the file
 * reached lies inside `root` (compared by device and inode); -EXDEV when
 * the name or a symlink on the way leads out (beneath.c). */
int vd_open_beneath_walk(int root, const char *name, int flags);

/* Prefix err->msg with "path: " unless it already starts with it. */
void vd_error_prefix(vd_error *err, const char *path);

/* With the image write-locked: zero what the image holds in [from, to),
 * past its virtual size but inside the allocation unit holding it (to at
 * most the size rounded up to img->cluster_size).  For the in-place
 * resize: nothing a shrink dropped shows again after a grow (io.c). */
int vd_zero_past_end_locked(vd_image *img, uint64_t from, uint64_t to, vd_error *err);

/* Power-loss tests (writelog.c): log a completed change to a file when
 * VDISK_TEST_WRITE_LOG is set; `data` only for VD_WL_WRITE.  Only the test
 * build of the library (VD_TEST_HOOKS, libvdisk/meson.build) has the log;
 * in the installed library the calls compile to nothing. */
enum vd_wl_op { VD_WL_WRITE = 1, VD_WL_ZERO, VD_WL_TRUNCATE, VD_WL_SYNC, VD_WL_MARK };
#ifdef VD_TEST_HOOKS
void vd_wl_record(const vd_file *f, enum vd_wl_op op, uint64_t off, uint64_t len,
                  const void *data);
#else
static inline void vd_wl_record(const vd_file *f, enum vd_wl_op op, uint64_t off,
                                uint64_t len, const void *data)
{
    (void)f; (void)op; (void)off; (void)len; (void)data;
}
#endif

#endif
