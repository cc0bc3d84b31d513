/* vdisk.h - the public block API of libvdisk.
 *
 * One API over every virtual disk format: open (format probed from content or
 * forced), create, pread/pwrite, write-zeroes, discard, block status, flush,
 * info, close.  Backing chains are resolved by the library: a read of a range
 * the top image does not hold falls through to its backing image, and a
 * partial write to an unallocated cluster copies the rest from below.
 *
 * Conventions
 *  - Every function returns 0 (or a non-negative count) on success and a
 *    negative errno on failure.
 *  - Every function that can fail takes a `vd_error *` (may be NULL); on
 *    failure it is filled with a one-line message naming the file, the offset
 *    and the field: "disk.qcow2: qcow2: L1 table at 0x50000 beyond end of file
 *    (size 0x30000)".
 *  - The library never prints, never exits and never aborts on bad input.
 *  - One handle may be read from many threads at once; writes and metadata
 *    updates are serialized per image.
 */
#ifndef VDISK_H
#define VDISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VD_ERROR_MAX 512

/* Error report: `code` is the negative errno that was returned. */
typedef struct vd_error {
    int code;
    char msg[VD_ERROR_MAX];
} vd_error;

typedef struct vd_image vd_image;

/* Fill `err` (may be NULL) with a message and return `code` (a negative
 * errno), so that callers report their own failures the same way:
 * `return vd_set_error(err, -EINVAL, "%s: bad size", path);`. */
int vd_set_error(vd_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Same, appending ": strerror(-code)". */
int vd_set_errno(vd_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- opening ----------------------------------------------------------- */

typedef struct vd_open_opts {
    const char *format;       /* driver name, or NULL to probe the content */
    bool readonly;            /* open the file(s) O_RDONLY; writes fail -EROFS */
    bool no_backing;          /* do not open the backing chain (reads of
                                 unallocated ranges return zeroes) */
    bool allow_host_paths;    /* follow backing/extent references that leave
                                 the image's own folder (absolute or ../) */
    const char *snapshot;     /* open an internal snapshot (id or name),
                                 read-only */
    const char *backing_format; /* force the format of the backing image */
    bool force_share;         /* read an image another process may be
                                 writing (see "image locks" below) */
    unsigned cache;           /* VD_CACHE_* flags for the files written, and
                                 VD_CACHE_DIRECT for the files read (below) */
    const char *final_path;   /* the path the image will be renamed to (it is
                                 being made in a temporary folder): its
                                 relative backing reference is resolved in,
                                 and confined to, that path's folder; NULL:
                                 the image's own folder */
    bool keep_content_id;     /* writes leave the content id the image's
                                 deltas check (VMDK CID) as it is: for a
                                 commit, which writes into a base the data
                                 its delta already shows */
    /* A window: the image is the `window_length` bytes at `window_offset`
     * of the file at `path` (a member of an archive, such as the disk of an
     * OVA in its tar), read in place.  0: the whole file.  The image is
     * read-only, every read stays inside the window (one past its end fails
     * like a read past the end of a file), the window must lie inside the
     * file, and the image may name no other file: a backing file, extent or
     * external data file is refused (-EPERM).  `window_name` names the
     * image in messages (e.g. "x.ova:disk1.vmdk"); NULL: `path`. */
    uint64_t window_offset, window_length;
    const char *window_name;
} vd_open_opts;

/* Image locks.  vd_open locks every file of the chain it opens (the image,
 * its extents and data files, its backing files) the way qemu does (OFD
 * byte-range locks at offsets 100+perm "I use" and 200+perm "I do not
 * share", perm bits consistent-read, write, write-unchanged, resize), so
 * that vdisk and a running qemu keep each other out:
 *  - a file opened read-write takes consistent-read, write and resize and
 *    shares neither write nor resize: it fails with -EBUSY while another
 *    process has the file open, for reading or writing (unless that
 *    reader force-shares);
 *  - a file opened read-only (backing files always are) takes
 *    consistent-read and does not share write or resize: it fails with
 *    -EBUSY while another process writes the file, unless `force_share`
 *    (qemu-img -U), which takes no exclusion and reads whatever is there.
 * The locks last until vd_close.  Opens of one file within one process do
 * not exclude each other.  On file systems without OFD locks, no locks. */

/* Cache modes of a writable image's files (0: the page cache, flushes
 * fdatasync, as qemu's cache=writeback). */
#define VD_CACHE_EARLY_WRITEBACK 1u  /* start writing data back as it is
                                        written (sync_file_range, a bounded
                                        window dirty): a flush waits little */
#define VD_CACHE_NO_SYNC         2u  /* flushes sync nothing (cache=unsafe):
                                        data may be lost on a crash */
#define VD_CACHE_SYNC_WRITES     4u  /* every write synced (writethrough) */
/* The image's files (and those of its backing chain) bypass the page cache
 * (O_DIRECT), as with qemu's cache=none/directsync: reads, and the writes
 * of a writable image.  Unaligned reads go through aligned buffers inside
 * the library; an unaligned write (metadata, compressed clusters) reads,
 * modifies and writes the aligned blocks around it, and a block reaching
 * past the end of the file is written through the page cache.  Where a
 * file system refuses O_DIRECT the file goes through the page cache, and
 * vd_reads_direct() says so. */
#define VD_CACHE_DIRECT          8u

/* Open an image (and its backing chain).  `opts` may be NULL (read-write,
 * probed). */
int vd_open(const char *path, const vd_open_opts *opts, vd_image **out,
            vd_error *err);

/* False when `img` was not opened with VD_CACHE_DIRECT, or when a file of
 * its chain goes through the page cache because its file system refused
 * O_DIRECT (or rejected a direct read or write later). */
bool vd_reads_direct(vd_image *img);

/* Close the image and its whole backing chain.  Flushes first when the image
 * is writable; returns the first error met. */
int vd_close(vd_image *img, vd_error *err);

/* ---- overlays ---------------------------------------------------------- */

typedef struct vd_overlay_opts {
    const char *keep_path;    /* the layer is a new qcow2 file here, kept
                                 after vd_close; its backing reference is
                                 the base's name relative to this file's
                                 folder.  -EEXIST if the file exists */
    const char *tmpdir;       /* without keep_path: folder of the temporary
                                 qcow2 (NULL: $TMPDIR, else /tmp) */
    bool in_memory;           /* the layer lives in memory (4 KiB blocks),
                                 no file at all; keep_path is ignored */
} vd_overlay_opts;

/* Put a writable layer over `base`, a chain opened read-only with vd_open,
 * so that writes land in the layer and the base never changes.  Without
 * keep_path or in_memory the layer is a temporary qcow2, unlinked as soon
 * as it is open (nothing is left behind however the process ends) and
 * never synced.  A qcow2 layer's virtual size is the base's rounded up
 * to 512 bytes (the qcow2 unit); an in-memory one's is the base's.  On
 * success `base` belongs to the overlay: it is its
 * backing image (vd_backing(*out)), still locked as it was opened (read,
 * shared with other readers), and vd_close(*out) closes both; the layer's
 * own file is locked for writing (no other process may open it).  On
 * failure `base` is still the caller's.  `opts` may be NULL. */
int vd_open_overlay(vd_image *base, const vd_overlay_opts *opts, vd_image **out,
                    vd_error *err);

/* ---- creating ---------------------------------------------------------- */

typedef struct vd_create_opts {
    const char *format;          /* driver name (required) */
    uint64_t size;               /* virtual size in bytes; 0 = backing's size */
    const char *backing_file;    /* stored as given (relative to the image) */
    const char *backing_format;  /* stored when the format can hold it */
    const char *options;         /* "key=val,key=val": format options */
    bool allow_host_paths;       /* allow opening a backing outside the folder */
    const char *final_path;      /* as vd_open_opts.final_path: the file is made
                                    elsewhere under its final name, and
                                    backing_file is relative to this path */
    bool no_sync;                /* the new files are not synced: the caller
                                    syncs them later (vd_close of the image
                                    opened read-write with a cache mode that
                                    syncs) before relying on them, or does
                                    not need them to outlive a crash */
} vd_create_opts;

/* Create a new image file.  Fails with -EEXIST if `path` exists.  Unknown
 * keys in `options` are an error naming the key. */
int vd_create(const char *path, const vd_create_opts *opts, vd_error *err);

/* Create options (for vd_create_opts.options) that make a new image of
 * `format` (NULL: img's own) like `img`:
 *   VD_LIKE_LAYOUT  img's layout as its header states it: subformat,
 *                   version, cluster/block size, refcount width, and the
 *                   identity the format stores (vdi uuid); only for img's
 *                   own format (rewriting an image, not converting it)
 *   VD_LIKE_UUID    img's image UUID; -ENOTSUP when img has none or
 *                   `format` cannot store one
 * Writes "key=val,..." (possibly "") into buf; -ENAMETOOLONG when `len`
 * bytes are too few. */
#define VD_LIKE_LAYOUT 0x1u
#define VD_LIKE_UUID   0x2u
int vd_create_options_like(vd_image *img, const char *format, unsigned what, char *buf,
                           size_t len, vd_error *err);

/* ---- I/O (guest view) -------------------------------------------------- */

/* Read `len` bytes at `off`.  Ranges past the virtual size are an error. */
int vd_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err);
int vd_pwrite(vd_image *img, const void *buf, size_t len, uint64_t off,
              vd_error *err);

#define VD_ZERO_MAY_UNMAP 1u   /* the range may become a hole */
int vd_pwrite_zeroes(vd_image *img, uint64_t off, uint64_t len, unsigned flags,
                     vd_error *err);
/* Discard: a hint that the range is no longer needed.  Afterwards it reads
 * as the old data, as zeroes, or as the backing image (format-dependent). */
int vd_discard(vd_image *img, uint64_t off, uint64_t len, vd_error *err);
int vd_flush(vd_image *img, vd_error *err);

/* Compressed writes (qcow2 `-c`).  vd_can_compress() says whether the image
 * (opened read-write) can store compressed clusters.  vd_pwrite_compressed()
 * writes whole clusters only: `off` a multiple of vd_info.cluster_size and
 * `len` a multiple of it, except that a request may end anywhere inside the
 * disk's last cluster (the rest of that cluster then reads as zeroes).  A
 * cluster that does not shrink is
 * stored uncompressed.  Returns -ENOTSUP when the format cannot compress,
 * -EINVAL for a misaligned request. */
bool vd_can_compress(vd_image *img);
int vd_pwrite_compressed(vd_image *img, const void *buf, size_t len, uint64_t off,
                         vd_error *err);
/* The deflate level of compressed clusters (qcow2 -c, zlib type) and of
 * streamOptimized VMDK grains written from now on: 1-3 ISA-L igzip (fastest,
 * output ~10 % larger on compressible data), 4-9 zlib's levels (9 smallest);
 * 0 = the format's default.  Not stored in the image.  -EINVAL otherwise. */
int vd_set_compression_level(vd_image *img, int level, vd_error *err);

/* Zero-copy transfers (vdconvert moves data with copy_file_range, which is
 * a reflink on XFS and btrfs and an in-kernel copy elsewhere).
 *
 * vd_data_fd(): the file descriptor holding the data that vd_block_status
 * reports at `depth` (0 = img, 1 = its backing, ...) with a file_off, when
 * that layer stores such data plainly in one file; -1 otherwise (the format
 * has no such file, several extent files, or the layer does not exist).
 * The fd stays owned by the image.
 *
 * vd_map_for_write(): give the guest range [off, off+len) plain space in
 * the top image's data file (vd_data_fd(img, 0)), allocating it where the
 * image has none of its own, and report where: *file_off is where `off`
 * lives and *mapped how many bytes from `off` on are contiguous there
 * (> 0, at most len).  `off` must be a multiple of vd_info.cluster_size and
 * so must `len`, unless the range ends at the virtual size.  Newly
 * allocated space has no defined content until the caller writes all of it
 * there: this is for filling images a conversion is creating, not for
 * images in use.  -ENOTSUP when the format cannot: vd_can_map_for_write()
 * says beforehand. */
int vd_data_fd(vd_image *img, int depth);
/* The caller wrote [file_off, file_off+len) of vd_data_fd(img, 0) itself:
 * lets VD_CACHE_EARLY_WRITEBACK start writing it back. */
void vd_note_write(vd_image *img, uint64_t file_off, uint64_t len);
bool vd_can_map_for_write(vd_image *img);
int vd_map_for_write(vd_image *img, uint64_t off, uint64_t len, uint64_t *file_off,
                     uint64_t *mapped, vd_error *err);

/* ---- copying (the conversion engine) ------------------------------------ */

/* Progress of a copy: `done` of `total` bytes of the guest range handled.
 * Called from the worker threads, possibly concurrently and with `done`
 * values arriving slightly out of order: keep the largest. */
typedef void (*vd_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct vd_copy_opts {
    uint64_t size;            /* bytes to copy from offset 0; 0 = the smaller
                                 of both virtual sizes */
    int threads;              /* worker threads (< 1: one, at most 64) */
    uint64_t sparse_size;     /* zero detection: runs of zeroes of at least
                                 this many bytes (on a grid of this size) are
                                 written as zeroes, not data; 0 = off */
    bool target_is_zeroed;    /* unwritten target ranges read as zeroes (a
                                 new image without backing): ranges that are
                                 zero are not written at all */
    bool compress;            /* store the target's clusters compressed
                                 (vd_can_compress); -ENOTSUP otherwise */
    bool no_copy_range;       /* read and write every byte: no
                                 copy_file_range, no vd_map_for_write */
    bool direct;              /* bypass the page cache: a raw target's data
                                 is written O_DIRECT, and nothing goes by
                                 copy_file_range (open an image target with
                                 VD_CACHE_DIRECT for its own writes) */
    bool only_top;            /* copy only the ranges the top layer of `src`
                                 holds itself (commit, rebase -u) */
    int top_layers;           /* with only_top: the ranges the top
                                 `top_layers` layers hold (commit -b into a
                                 deeper base); < 1 means 1 */
    bool allocate;            /* write the ranges `src` reads as zeroes as
                                 data too: a fully allocated target (qemu-img
                                 -S 0); ignored with `compare` */
    vd_image *compare;        /* content the target already shows (its
                                 backing image): only differences are written;
                                 NULL when none */
    vd_progress_fn progress;  /* may be NULL */
    void *progress_ctx;
} vd_copy_opts;

/* Copy the guest content of `src` into `dst` (opened read-write).
 * Block status drives it: holes are never read, and zero ranges are not
 * written to a target that reads zeroes already.  Worker threads read (and
 * decompress) in parallel; a streaming target (streamOptimized VMDK) is
 * still written strictly in order.  Data the source stores plainly in a
 * file moves with copy_file_range into a raw target, and into clusters of
 * an image target (vd_map_for_write) where the target's file system shares
 * blocks (XFS, btrfs, ...: a reflink) or nothing is to be checked for
 * zeroes (sparse_size 0); elsewhere image targets are cheaper to fill by
 * reading and writing (libvdisk/copy-write.c says why).  Memory:
 * a buffer or two of 1 MiB per thread, and two more for an image target
 * (up to 4 MiB where a target cluster must be written whole), whatever
 * the size of the image.  Does
 * not flush `dst`: vd_flush or vd_close does.  `opts` may be NULL (one
 * thread, no zero detection). */
int vd_copy(vd_image *src, vd_image *dst, const vd_copy_opts *opts, vd_error *err);

/* ---- block status ------------------------------------------------------ */

#define VD_EXT_DATA      0x1u  /* allocated, holds data */
#define VD_EXT_ZERO      0x2u  /* reads as zeroes */
#define VD_EXT_HOLE      0x4u  /* allocated in no layer of the chain */
#define VD_EXT_COMPRESSED 0x8u /* stored compressed (no single file offset) */

#define VD_NO_OFFSET UINT64_MAX

typedef struct vd_extent {
    uint64_t off, len;      /* guest range */
    uint32_t flags;         /* VD_EXT_* */
    int depth;              /* layer that answers: 0 = top image, 1 = its
                               backing, ...; -1 when no layer holds it */
    uint64_t file_off;      /* offset in that layer's file, or VD_NO_OFFSET */
} vd_extent;

typedef struct vd_extents {
    vd_extent *v;
    size_t n, cap;
} vd_extents;

void vd_extents_init(vd_extents *e);
void vd_extents_free(vd_extents *e);
void vd_extents_clear(vd_extents *e);
/* Append an extent; adjacent extents with equal flags/depth (and contiguous
 * file offsets) are merged.  Returns 0 or -ENOMEM. */
int vd_extents_add(vd_extents *e, uint64_t off, uint64_t len, uint32_t flags,
                   int depth, uint64_t file_off);

/* Describe [off, off+len) of the guest view, resolving the backing chain.
 * Appends to `ext`; may describe less than asked (at least one extent). */
int vd_block_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                    vd_error *err);

/* ---- information ------------------------------------------------------- */

typedef struct vd_snapshot_info {
    char id[64];
    char name[256];
    uint64_t vm_state_size;
    uint64_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t disk_size;       /* virtual size at the snapshot */
    uint64_t icount;          /* instructions executed (record/replay), or
                                 UINT64_MAX when the image has none */
} vd_snapshot_info;

typedef struct vd_info {
    const char *format;       /* driver name */
    const char *filename;
    uint64_t virtual_size;
    uint64_t disk_size;       /* bytes allocated on the host, all files */
    uint32_t cluster_size;    /* allocation unit, 0 if none */
    const char *backing_file;    /* as stored in the image, or NULL */
    const char *backing_format;  /* as stored, or NULL */
    const char *backing_path;    /* the resolved file actually opened */
    bool readonly;
    bool dirty;
    size_t n_snapshots;
    bool probed_raw;          /* no format was given and no format matched the
                                 content: opened as raw by elimination (tools
                                 warn, as qemu-img does) */
} vd_info;

int vd_get_info(vd_image *img, vd_info *info);

/* Format-specific details as key/value pairs (e.g. "compat" = "1.1"). */
typedef void (*vd_kv_fn)(void *ctx, const char *key, const char *value);
void vd_get_format_details(vd_image *img, vd_kv_fn fn, void *ctx);

/* Internal snapshots (qcow2): fills up to `max` entries, returns the total
 * count or a negative errno. */
int vd_list_snapshots(vd_image *img, vd_snapshot_info *out, size_t max);

/* Change internal snapshots (qcow2) of an image opened read-write:
 *   VD_SNAPSHOT_CREATE  record the current disk state under the new `name`
 *   VD_SNAPSHOT_APPLY   make snapshot `name` (id or name) the current state
 *                       (what was written since is lost)
 *   VD_SNAPSHOT_DELETE  drop snapshot `name` and free what only it used
 * Each operation is ordered so that a crash in the middle can only leak
 * clusters (repaired by check -r leaks), never lose or share data.
 * -ENOTSUP for formats without internal snapshots, -ENOENT for an unknown
 * snapshot, -EEXIST when creating a name or id already used. */
enum vd_snapshot_op { VD_SNAPSHOT_CREATE, VD_SNAPSHOT_APPLY, VD_SNAPSHOT_DELETE };
int vd_snapshot(vd_image *img, enum vd_snapshot_op op, const char *name, vd_error *err);

/* ---- in-place metadata operations ------------------------------------ *
 *
 * These change an image opened read-write on its own file (same inode:
 * mode, owner, extended attributes and hard links stay), writing metadata
 * only.  Each is ordered so that a crash at any point leaves the image
 * openable, showing the old or the new state (docs/flush.md, per format).
 * A format that has no such operation returns -ENOSYS; one that cannot do
 * it on this image (e.g. a table with no room to grow) returns -ENOTSUP;
 * both with a message naming the file and the reason. */

/* Change the virtual size.  Shrinking needs VD_RESIZE_SHRINK (data past
 * the new end is lost).  Space added reads as zeroes, also over a backing
 * image that is larger than the old size. */
#define VD_RESIZE_SHRINK 1u
int vd_resize(vd_image *img, uint64_t size, unsigned flags, vd_error *err);

/* Store a new backing reference (`backing_file` as it is to be stored,
 * relative to the image's folder or absolute; NULL or "" removes it) and
 * its format (may be NULL).  Only the reference changes: the image's own
 * data is kept as it is, so the guest view changes where the new backing
 * differs from the old (what `rebase -u` does).  The handle keeps reading
 * the backing it opened; the new one is used from the next vd_open. */
int vd_set_backing(vd_image *img, const char *backing_file, const char *backing_format,
                   vd_error *err);

/* Drop all of the image's own data, so that every read falls through to
 * its backing image (what commit does to an overlay once its base holds
 * the data).  -EINVAL for an image without backing. */
int vd_make_empty(vd_image *img, vd_error *err);

/* Before writing the data of `img` into its backing image `base` (both
 * opened read-write; `img` may be opened without its chain), as a commit
 * does.  A format that links a child to its parent's content (VHDX: the
 * parent_linkage is the parent's data write GUID, which the parent's first
 * write changes) stores in `img` the link `base` will have after the
 * write as well as the current one, so that `img` opens over `base` before,
 * during and after the commit; vd_set_backing with the same backing file
 * afterwards keeps only the new link.  Other formats: nothing to do, 0. */
int vd_prepare_commit(vd_image *img, vd_image *base, vd_error *err);

/* Change format options of an image opened read-write, in place (what
 * qemu-img amend does): `options` is "key=value,..." with the format's
 * amend options (vd_format_amend_help; qcow2: compat=0.10|1.1,
 * lazy_refcounts=on|off, refcount_bits=1..64).  Every key is checked before
 * anything is written: an unknown one is -EINVAL "Invalid parameter 'KEY'".
 * Each step is ordered so that a crash leaves the image openable with the
 * old or the new options, leaking clusters at worst (docs/flush.md).  A
 * format without amend options gives -ENOTSUP, "Format driver 'X' does not
 * support option amendment" (qemu-img's words).  `progress` may be NULL. */
int vd_amend(vd_image *img, const char *options, vd_progress_fn progress, void *progress_ctx,
             vd_error *err);

/* Which of the above the image's format has (it may still refuse a given
 * request with -ENOTSUP): VD_INPLACE_* bits. */
#define VD_INPLACE_RESIZE      1u
#define VD_INPLACE_SET_BACKING 2u
#define VD_INPLACE_MAKE_EMPTY  4u
#define VD_INPLACE_PREPARE_COMMIT 8u
#define VD_INPLACE_AMEND       16u
unsigned vd_inplace_ops(vd_image *img);

/* Is the file at `path` (after symlinks; any hard link of it) one of the
 * files `img` and its backing chain opened: an image file, an extent, a
 * data file?  A tool about to write `path` must not when it is (the
 * conversion would destroy its own input).  False when `path` does not
 * exist. */
bool vd_image_uses_file(vd_image *img, const char *path);

vd_image *vd_backing(vd_image *img);       /* NULL at the bottom */
uint64_t vd_size(vd_image *img);
const char *vd_format_name(vd_image *img);
const char *vd_filename(vd_image *img);

/* ---- consistency check ------------------------------------------------- */

#define VD_CHECK_REPAIR_LEAKS 0x1u
#define VD_CHECK_REPAIR_ALL   0x3u

typedef struct vd_check_result {
    uint64_t corruptions;        /* errors that lose or mix data */
    uint64_t leaks;              /* allocated but unused clusters */
    uint64_t corruptions_fixed;
    uint64_t leaks_fixed;
    uint64_t allocated_clusters;
    uint64_t total_clusters;
    uint64_t fragmented_clusters;
    uint64_t compressed_clusters;  /* of the allocated ones (qcow2) */
    uint64_t image_end_offset;
    char first_problem[VD_ERROR_MAX]; /* first problem found, human text */
} vd_check_result;

/* Returns 0 when the driver could check (look at `res`), -ENOTSUP when the
 * format has no check. */
int vd_check(vd_image *img, unsigned flags, vd_check_result *res,
             vd_error *err);

/* ---- partition tables ------------------------------------------------ */

/* MBR (primary, and logical partitions in the chain of extended boot records)
 * and GPT (primary header, or the backup one when the primary is damaged).
 * Partitions are numbered as Linux numbers them: MBR primaries 1-4 by slot,
 * logicals from 5 in chain order; GPT entries by their slot (1-based), unused
 * slots skipped.  Offsets and lengths are bytes of the guest view. */

#define VD_PT_NONE 0   /* no partition table recognised */
#define VD_PT_MBR  1
#define VD_PT_GPT  2

typedef struct vd_partition {
    unsigned index;          /* 1-based partition number (see above) */
    uint64_t start, length;  /* bytes */
    bool logical;            /* MBR: inside an extended partition */
    bool bootable;           /* MBR: active flag 0x80 */
    bool extended;           /* MBR: the extended container itself */
    uint8_t mbr_type;        /* MBR type byte; 0 for GPT */
    char type_guid[37];      /* GPT type GUID, lower-case text; "" for MBR */
    char part_guid[37];      /* GPT unique partition GUID; "" for MBR */
    char name[148];          /* GPT name as UTF-8; "" for MBR */
    uint64_t gpt_attrs;      /* GPT attribute bits */
} vd_partition;

typedef struct vd_partition_table {
    int scheme;              /* VD_PT_* */
    uint32_t sector_size;    /* 512, or 4096 for a GPT found on 4K sectors */
    uint32_t mbr_signature;  /* MBR disk signature at 0x1b8 */
    char disk_guid[37];      /* GPT disk GUID */
    bool gpt_backup_used;    /* the primary GPT was damaged */
    size_t n;
    vd_partition *v;
    /* The first problem that did not stop parsing ("mbr: partition 2 at
     * 0x1ce extends past end of disk, truncated"), or "". */
    char warning[VD_ERROR_MAX];
} vd_partition_table;

/* Read the partition table of `img`.  A disk without one gives scheme
 * VD_PT_NONE and n = 0.  Entries that start past the end of the disk are
 * skipped and those that extend past it truncated (as Linux does), noted in
 * `warning`; a GPT whose headers are both damaged is an error.  Free with
 * vd_partition_table_free. */
int vd_partition_list(vd_image *img, vd_partition_table *out, vd_error *err);
void vd_partition_table_free(vd_partition_table *t);

/* ---- formats ----------------------------------------------------------- */

/* One row per format this build knows: the names users type and what the
 * format can do.  Read from the driver registry, in its order (cheap-first,
 * raw last). */
typedef struct vd_format_desc {
    const char *name;               /* canonical name: "vhd" */
    const char *description;
    const char *const *aliases;     /* other accepted names (qemu's "vpc"),
                                       NULL-terminated, or NULL */
    const char *const *extensions;  /* file name extensions without the dot,
                                       NULL-terminated, or NULL */
    bool can_create;                /* vd_create makes new images */
    bool can_write;                 /* existing images open read-write */
    bool can_probe;                 /* recognised from content (nbd: by URI) */
} vd_format_desc;

/* All formats; *n (may be NULL) receives the count. */
const vd_format_desc *vd_formats(size_t *n);
/* A format by name or alias (exact, as qemu-img matches), or NULL. */
const vd_format_desc *vd_format_lookup(const char *name);
/* Names of the registered drivers, NULL-terminated, cheap-first. */
const char *const *vd_format_names(void);
/* Probe a file without opening it: best-scoring driver name (static string)
 * or NULL; `score` (may be NULL) receives its score 0..100. */
const char *vd_probe_file(const char *path, int *score, vd_error *err);
/* The format a file name's extension names ("x.vmdk" -> "vmdk", "x.hds" ->
 * "parallels"), or NULL when there is no extension or it is unknown. */
const char *vd_format_from_extension(const char *path);
/* Print-ready list of a format's create options: "name\tdescription" lines. */
const char *vd_format_create_help(const char *format);
/* The same for the options vd_amend takes; "" when the format has none. */
const char *vd_format_amend_help(const char *format);
/* Whether the driver can create / write images. */
bool vd_format_can_create(const char *format);

const char *vd_version(void);

/* ---- sizes ------------------------------------------------------------- */

/* A size as qemu-img reads one: digits, then optionally B or one of
 * K, M, G, T, P, E (either case, powers of 1024); B or iB may follow the
 * suffix ("64KiB", which qemu-img refuses).  0, -EINVAL (not a size) or
 * -ERANGE (over 2^64 - 1).  The one parser of the library's create
 * options and the tools' size arguments. */
int vd_parse_size(const char *s, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif /* VDISK_H */
