/* vd-driver.h - the interface between the libvdisk core and format drivers.
 *
 * A driver is one `const struct vd_driver` table (like an nbdkit plugin or a
 * libarchive format reader), registered in formats/drivers.c.  The core owns
 * probing, file I/O, alignment, the backing chain and locking:
 *
 *  - Drivers see I/O aligned to `drv->align` bytes (the core splits requests
 *    and does read-modify-write under the image's write lock).
 *  - pread/pwrite never cross the virtual size.
 *  - A driver reads ranges its image does not hold with vd_backing_pread():
 *    it reads the backing chain, or zeroes when there is none.  A partial
 *    write to an unallocated cluster fetches the rest of the cluster the same
 *    way (copy-on-write).
 *  - Reads may run concurrently only if `parallel_reads` is set; otherwise the
 *    core serializes every call on the image.  Writes are always serialized.
 *  - Every field read from disk is untrusted: use the vd_*_overflow helpers and
 *    the table-size limits below before allocating or multiplying.
 */
#ifndef VD_DRIVER_H
#define VD_DRIVER_H

#include "vdisk.h"

#include <endian.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/types.h>

/* ---- errors ------------------------------------------------------------ */

/* vd_set_error / vd_set_errno: in vdisk.h.  Both escape control characters
 * in the message (names read from an image may hold a newline or an ESC
 * sequence): vd_escape_ctl copies `src` into `dst` (`cap` bytes, always
 * terminated) with \n, \r, \t, \e as such and other bytes below 0x20 and
 * 0x7f as \xNN; everything else, UTF-8 included, as is.  Returns the length
 * written. */
size_t vd_escape_ctl(char *dst, size_t cap, const char *src);

/* ---- checked arithmetic on untrusted values ---------------------------- */

static inline bool vd_add_overflow(uint64_t a, uint64_t b, uint64_t *r)
{ return __builtin_add_overflow(a, b, r); }
static inline bool vd_mul_overflow(uint64_t a, uint64_t b, uint64_t *r)
{ return __builtin_mul_overflow(a, b, r); }
/* Largest table (L1, BAT, grain directory, ...) a driver may allocate from an
 * on-disk count.  Bigger tables are an error, not a malloc. */
#define VD_MAX_TABLE_BYTES (256ull << 20)
/* Largest virtual size accepted from a header: 64 TiB * 1024 = 64 PiB.  */
#define VD_MAX_VIRTUAL_SIZE (1ull << 56)

/* ---- endian loads/stores (unaligned-safe) ------------------------------ */

static inline uint16_t vd_le16(const void *p) { uint16_t v; memcpy(&v, p, 2); return le16toh(v); }
static inline uint32_t vd_le32(const void *p) { uint32_t v; memcpy(&v, p, 4); return le32toh(v); }
static inline uint64_t vd_le64(const void *p) { uint64_t v; memcpy(&v, p, 8); return le64toh(v); }
static inline uint16_t vd_be16(const void *p) { uint16_t v; memcpy(&v, p, 2); return be16toh(v); }
static inline uint32_t vd_be32(const void *p) { uint32_t v; memcpy(&v, p, 4); return be32toh(v); }
static inline uint64_t vd_be64(const void *p) { uint64_t v; memcpy(&v, p, 8); return be64toh(v); }
static inline void vd_put_le16(void *p, uint16_t v) { v = htole16(v); memcpy(p, &v, 2); }
static inline void vd_put_le32(void *p, uint32_t v) { v = htole32(v); memcpy(p, &v, 4); }
static inline void vd_put_le64(void *p, uint64_t v) { v = htole64(v); memcpy(p, &v, 8); }
static inline void vd_put_be16(void *p, uint16_t v) { v = htobe16(v); memcpy(p, &v, 2); }
static inline void vd_put_be32(void *p, uint32_t v) { v = htobe32(v); memcpy(p, &v, 4); }
static inline void vd_put_be64(void *p, uint64_t v) { v = htobe64(v); memcpy(p, &v, 8); }

static inline bool vd_is_pow2(uint64_t v) { return v && !(v & (v - 1)); }
static inline uint64_t vd_round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
/* The piece of [off, off+len) inside one block of `block` bytes (the one
 * holding off): its length; *blk gets the block's index, *in off's place
 * in it.  Drivers with a block table walk a request this way. */
static inline uint64_t vd_block_piece(uint64_t off, uint64_t len, uint64_t block, uint64_t *blk,
                                      uint64_t *in)
{
    *blk = off / block;
    *in = off % block;
    return block - *in < len ? block - *in : len;
}

/* One part of a request that vd_walk hands to a driver: `n` bytes at
 * offset `off`, `done` bytes into the request, the caller's data at `p`
 * (NULL for a walk without a buffer, e.g. block status).  With a block
 * size, a part never crosses a block boundary: `blk` is the block's index
 * and `in` off's place in it. */
struct vd_part {
    uint8_t *p;
    uint64_t off, n, done;
    uint64_t blk, in;
};
/* Handle one part; 0 or a negative errno.  It may set pt->n lower (but not
 * to 0) when it handled fewer bytes, e.g. a run of like table entries that
 * ends early; the walk goes on after them. */
typedef int vd_part_fn(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err);
/* The piece-by-piece loop of the drivers: walk [off, off+len) in parts cut
 * at multiples of `block` (0: not cut, the handler says how far it got),
 * calling fn on each until one fails.  `buf` may be NULL; a write passes
 * its const buffer cast, and its handler only reads pt->p. */
int vd_walk(vd_image *img, void *buf, uint64_t off, uint64_t len, uint64_t block,
            vd_part_fn *fn, void *ctx, vd_error *err);
/* A pwrite: the driver table's, a driver's own, or the core's locked one. */
typedef int vd_write_fn(vd_image *img, const void *buf, size_t len, uint64_t off,
                        vd_error *err);
/* Zeroes over [off, off+len) written as data through `write`, from one
 * zeroed buffer of at most 1 MiB: for unaligned edges and formats that
 * cannot mark a range as zero. */
int vd_zero_by_writing(vd_image *img, uint64_t off, uint64_t len, vd_write_fn *write,
                       vd_error *err);
/* Formats whose tables map each cluster on its own (qcow, QED) read and
 * report block status through one pair of loops: the driver says what the
 * bytes at an offset are, vd_map_pread and vd_map_block_status do the rest. */
enum vd_map_kind {
    VD_MAP_BACKING,           /* not in this layer: the backing file's bytes */
    VD_MAP_ZERO,              /* zeroes */
    VD_MAP_DATA,              /* in this file at file_off */
    VD_MAP_COMPRESSED,        /* compressed: read_compressed gets them */
};
struct vd_map {
    enum vd_map_kind kind;
    uint64_t n;               /* bytes from the offset that read this way */
    uint64_t file_off;        /* VD_MAP_DATA */
    uint64_t entry, entry_at; /* the driver's own: table entry and where it is */
    uint64_t in;              /* the offset's place in its cluster */
};
struct vd_mapper {
    /* What the bytes at guest offset `off` are, for up to `max` of them
     * (m->n: 1..max); 0 or a negative errno naming the bad entry. */
    int (*map)(vd_image *img, uint64_t off, uint64_t max, struct vd_map *m, vd_error *err);
    /* The m->n bytes of a VD_MAP_COMPRESSED mapping into `p`. */
    int (*read_compressed)(vd_image *img, const struct vd_map *m, uint8_t *p, vd_error *err);
};
int vd_map_pread(vd_image *img, void *buf, size_t len, uint64_t off,
                 const struct vd_mapper *mp, vd_error *err);
/* At most up to the end of the `table` bytes of guest space that hold off
 * (one L2 table's span): the core asks again for the rest. */
int vd_map_block_status(vd_image *img, uint64_t off, uint64_t len, uint64_t table,
                        vd_extents *ext, const struct vd_mapper *mp, vd_error *err);
bool vd_is_zero(const void *buf, size_t len);
/* Does a whole cluster/grain look like random or already-compressed data
 * (byte entropy of at least 7.9 bits)?  Compressed writers then store it
 * without spending a full deflate on it.  False below 4 KiB. */
bool vd_looks_incompressible(const void *buf, size_t len);

/* ---- growable arrays (mcache.c) -------------------------------------- */

/* Make room for `need` elements of `elem` bytes in the array *arrp (a T **)
 * of capacity *cap, doubling; 0 or -ENOMEM (the array is then unchanged).
 * VD_ARRAY_RESERVE(arr, cap, need) passes the element size itself. */
int vd_array_reserve(void *arrp, size_t *cap, size_t need, size_t elem);
#define VD_ARRAY_RESERVE(arr, cap, need) vd_array_reserve(&(arr), &(cap), (need), sizeof *(arr))

/* ---- UUIDs (uuid.c) ---------------------------------------------------- */

/* Byte order on disk: RFC 4122 (ext2, VHD, ...) by default, or with
 * VD_UUID_MIXED Microsoft's GUID layout, which VirtualBox's RTUUID shares
 * (first three fields little-endian: GPT, VHDX, VDI). */
#define VD_UUID_MIXED 1u
#define VD_UUID_UPPER 2u     /* format with A-F (as VHDX tools print GUIDs) */
/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" into out[37]. */
void vd_uuid_format(const uint8_t u[16], unsigned flags, char out[37]);
/* That form, either case, optionally in braces; 0 or -EINVAL (u unchanged). */
int vd_uuid_parse(const char *s, unsigned flags, uint8_t u[16]);
/* A random version 4 UUID; 0 or -errno. */
int vd_uuid_random(uint8_t u[16], unsigned flags);

/* ---- UTF-16 (utf16.c) -------------------------------------------------- */

/* Names stored as UTF-16: little-endian by default, big-endian with
 * VD_UTF16_BE (the VHD parent name). */
#define VD_UTF16_BE 1u
/* `bytes` bytes of UTF-16 at p to a malloc'd UTF-8 string in *out, ending at
 * the first NUL unit or at `bytes`.  0; -EILSEQ for an odd length or an
 * unpaired surrogate, with the byte offset of the bad unit in *bad (if not
 * NULL); -ENOMEM.  *out is NULL on failure. */
int vd_utf16_decode(const uint8_t *p, size_t bytes, unsigned flags, char **out, size_t *bad);
/* The UTF-8 string `in` as UTF-16 (no NUL) into out[cap], its length in
 * bytes in *used.  0; -EILSEQ when `in` is not valid UTF-8, -ENOSPC when it
 * does not fit; then *bad (if not NULL) is the offset in `in` where it
 * failed and *used is 0. */
int vd_utf16_encode(const char *in, uint8_t *out, size_t cap, unsigned flags, size_t *used,
                    size_t *bad);

/* ---- deflate (deflate.c) ----------------------------------------------- */

/* Compression levels: 1-3 ISA-L igzip, 4-9 zlib/libdeflate (deflate.c). */
#define VD_DEFLATE_MIN_LEVEL 1
#define VD_DEFLATE_MAX_LEVEL 9
typedef struct vd_deflater vd_deflater;
/* `level` if valid (img->compression_level; 0 = unset), else `dflt`. */
int vd_deflate_level(int level, int dflt);
/* A compressor for whole buffers at `level` (0: stored blocks), with matches at most
 * 2^window_bits (9-15) back, a zlib header and trailer when zlib_wrap (else
 * raw deflate).  NULL when out of memory.  One thread at a time. */
vd_deflater *vd_deflater_new(int level, int window_bits, bool zlib_wrap);
void vd_deflater_free(vd_deflater *d);
/* Compress len bytes into at most cap: the size, or 0 when it does not fit. */
size_t vd_deflate(vd_deflater *d, const void *in, size_t len, void *out, size_t cap);
/* Inflate a raw deflate (or zlib-wrapped) stream from in[0..in_len) into at
 * most out_len bytes, stopping at the end of the stream (bytes after it
 * are ignored); *got (may be NULL) = bytes produced.  0, -EIO when the data
 * is corrupt or does not fit, -ENOMEM.  Thread-safe. */
int vd_inflate(const void *in, size_t in_len, void *out, size_t out_len, bool zlib_wrap,
               size_t *got);

/* ---- optional libraries (lazylib.c) ----------------------------------- */

/* A library loaded with dlopen on first use (libnbd, libxml2): its soname,
 * the Debian package that has it (named in the error), the NULL-terminated
 * list of its functions a driver calls and the slots that receive them
 * (slots[i] for names[i]).  Once loaded, a driver calls through the slots. */
struct vd_lazy_lib {
    const char *soname, *package;
    const char *const *names;
    void **slots;
    bool tried;
    char error[256];
};
/* 0 once every function is resolved (the first call loads, later ones
 * answer from the first); else -ENOTSUP, "WHAT: cannot load SONAME
 * (install PACKAGE): why". */
int vd_lazy_load(struct vd_lazy_lib *l, const char *what, vd_error *err);

/* ---- files ------------------------------------------------------------- */

struct vd_lock;
typedef struct vd_file {
    int fd;
    char *path;
    bool readonly;
    struct vd_lock *lock;          /* lock.c: the qemu-compatible image lock */
    uint8_t lock_perm, lock_noshare;
    unsigned cache;                /* VD_CACHE_* (writeback.c) */
    uint64_t syncs;                /* vd_file_sync calls that succeeded: the
                                      points a driver orders its writes by */
    struct vd_writeback *wb;       /* early writeback state, or NULL */
    uint32_t dio_align;            /* reads are O_DIRECT with this alignment
                                      (writeback.c); 0: through the page
                                      cache.  Atomic: a refused read clears it */
    struct vd_dio *dio;            /* direct.c: a writable file's O_DIRECT
                                      writes, or NULL */
    /* A window (vd_open_opts.window_length): the file is the win_len bytes
     * at win_off of the host file; every offset here is relative to it and
     * no access leaves it.  Always read-only. */
    bool win;
    uint64_t win_off, win_len;
} vd_file;

/* Open an existing file.  Returns 0 or -errno with a message naming path. */
int vd_file_open(const char *path, bool readonly, vd_file **out, vd_error *err);
/* Create a new file (O_EXCL). */
int vd_file_create(const char *path, vd_file **out, vd_error *err);
/* End the writing of a file vd_file_create made, `r` being how it went:
 * synced when r is 0, then closed; removed when anything failed, so that a
 * failed create leaves no half-written image.  Returns r or the sync's
 * error. */
int vd_file_create_finish(vd_file *f, int r, vd_error *err);
void vd_file_close(vd_file *f);
/* Make a read-only file the window [off, off+len) of itself (which must lie
 * inside it), named `name` in messages (NULL: its path). */
int vd_file_set_window(vd_file *f, const char *name, uint64_t off, uint64_t len,
                       vd_error *err);
/* Cache modes (writeback.c): set on a file opened for writing; and note
 * that [off, off+len) was written to it (by vd_file_pwrite, or directly). */
void vd_file_set_cache(vd_file *f, unsigned cache);
void vd_file_free_cache(vd_file *f);
void vd_file_wrote(vd_file *f, uint64_t off, uint64_t len);
/* Read (and, opened for writing, write) the file with O_DIRECT from now on.
 * Returns -EINVAL, leaving the file as it was, when its file system refuses. */
int vd_file_set_direct(vd_file *f);
/* Back to the page cache (a direct request was refused with EINVAL). */
void vd_file_drop_direct(vd_file *f);
/* direct.c: the state of a writable file's direct writes (init: 0 or
 * -ENOMEM; nothing for a read-only file), and vd_file_pwrite's write when
 * f->dio_align is set: all of [off, off+len) or -errno. */
int vd_file_dio_init(vd_file *f);
void vd_file_dio_free(vd_file *f);
int vd_file_pwrite_direct(vd_file *f, const void *buf, size_t len, uint64_t off);
/* vd_file_pread_common's read when f->dio_align is set: aligned requests go
 * straight to the file, others through an aligned bounce buffer.  Returns
 * the bytes read (short only at the end of the file) or -errno. */
ssize_t vd_file_pread_direct(vd_file *f, void *buf, size_t len, uint64_t off);
/* Exactly `len` bytes or an error ("pread at 0x..: short read"). */
int vd_file_pread(vd_file *f, void *buf, size_t len, uint64_t off, vd_error *err);
/* Like vd_file_pread but bytes past end of file read as zeroes. */
int vd_file_pread_zfill(vd_file *f, void *buf, size_t len, uint64_t off, vd_error *err);
/* A format's fixed header: the `len` bytes at 0, and the file's size in
 * *size; a shorter file is "<fmt>: file of N bytes is shorter than the
 * header". */
int vd_file_read_header(vd_file *f, void *h, size_t len, const char *fmt, uint64_t *size,
                        vd_error *err);
/* A name of `len` bytes stored at `off` (a backing file's, in the header's
 * clusters) in a new NUL-terminated *out; one holding a NUL byte is refused
 * as "<what> at 0x... contains a NUL byte".  The caller checks the range. */
int vd_file_read_string(vd_file *f, uint64_t off, uint32_t len, const char *what, char **out,
                        vd_error *err);
int vd_file_pwrite(vd_file *f, const void *buf, size_t len, uint64_t off, vd_error *err);
/* Write zeroes: punches a hole when possible (keeps the size), else writes. */
int vd_file_zero(vd_file *f, uint64_t off, uint64_t len, vd_error *err);
int vd_file_truncate(vd_file *f, uint64_t size, vd_error *err);
int vd_file_sync(vd_file *f, vd_error *err);
/* Current size (a window's length), or -errno. */
int64_t vd_file_size(vd_file *f, vd_error *err);
/* lseek(SEEK_DATA / SEEK_HOLE) from `off`, in the file's own offsets (a
 * window's end is a hole's end); -1 with errno as lseek. */
int64_t vd_file_seek(vd_file *f, uint64_t off, int whence);
/* Bytes allocated on the host filesystem. */
uint64_t vd_file_allocated(vd_file *f);

/* Take the image lock qemu understands (lock.c) on an open file: a writer
 * excludes other writers and readers, a reader excludes writers unless
 * `force_share`.  -EBUSY with a message naming the file when another
 * process holds a conflicting lock.  Released by vd_file_close. */
int vd_file_lock(vd_file *f, bool write, bool force_share, vd_error *err);
void vd_file_unlock(vd_file *f);

/* Open a file named inside an image (an extent, a bundle member, a parent):
 * `name` is resolved against the folder of `img` and, unless the image was
 * opened with allow_host_paths, opened beneath that folder with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS): a name or a symlink
 * that leads out of the folder is refused with -EPERM and a message saying
 * so; an absolute name whose folder resolves inside it is accepted.  The
 * file gets the image's lock (vd_file_lock). */
int vd_file_open_related(vd_image *img, const char *name, bool readonly,
                         vd_file **out, vd_error *err);
/* The same open without a lock, for a reference stored in the image at
 * `base_path`; `bundle`: a folder found there is a Parallels bundle, whose
 * DiskDescriptor.xml is opened. */
int vd_file_open_beneath(const char *base_path, const char *name, bool allow_host_paths,
                         bool readonly, bool bundle, vd_file **out, vd_error *err);
/* Does `name` (a reference of `img`) open under the confinement rule? */
bool vd_related_exists(vd_image *img, const char *name);
/* Open the image a reference `name` stored in the image at `base_path`
 * names (a backing file), beneath that image's folder like
 * vd_file_open_beneath; NBD URIs only with allow_host_paths. */
int vd_open_related(const char *base_path, const char *name, const vd_open_opts *o,
                    vd_image **out, vd_error *err);

/* The path `name` names from the folder of `base_path` (malloc'd in *out),
 * refused with -EPERM when it resolves out of the folder (unless
 * allow_host_paths).  Prefer vd_file_open_related, which has no gap
 * between the check and the open. */
int vd_resolve_related(const char *base_path, const char *name,
                       bool allow_host_paths, char **out, vd_error *err);

/* ---- metadata-table cache (mcache.c) ----------------------------------- */

/* Fixed-size tables read from a file at their offset (qcow2 L2 tables and
 * refcount blocks, qcow/QED L2 tables, VMDK grain tables), least recently
 * used evicted, dirty ones written back on eviction and flush. */
typedef struct vd_mcache_slot {
    uint64_t off;             /* file offset of the table, 0 = empty slot */
    uint64_t copy_off;        /* a second copy written with it (VMDK's RGD), or 0 */
    uint8_t *data;
    bool dirty;
    size_t dirty_lo, dirty_hi;    /* the bytes [lo, hi) of the table to write back */
    uint64_t lru;
} vd_mcache_slot;

typedef struct vd_mcache {
    vd_mcache_slot *slots;
    size_t n;                 /* slots the cache may grow to */
    size_t used;              /* slots [0, used) have a buffer */
    size_t table_bytes;
    size_t last;              /* the last hit, checked first */
    uint64_t tick;
    vd_file *file;
    const char *what;         /* "L2 table", "grain table": for messages */
    /* Called once before dirty tables are written (at a flush, and when a
     * dirty table is evicted, which writes back every dirty one): what they
     * point at must be on disk first (qcow2 refcounts, VMDK grains). */
    int (*before_write)(void *ctx, vd_error *err);
    void *ctx;
} vd_mcache;

/* Slots: budget / table_bytes, within [min_slots, max_slots] (a miss scans
 * them all).  0 or -ENOMEM. */
int vd_mcache_init(vd_mcache *c, vd_file *f, size_t table_bytes, size_t budget,
                   size_t min_slots, size_t max_slots, const char *what);
void vd_mcache_free(vd_mcache *c);
/* The table at `off`, read from the file (load) or zeroed (a new table);
 * *slot is for vd_mcache_mark_dirty.  Valid until the next get. */
int vd_mcache_get(vd_mcache *c, uint64_t off, uint8_t **data, size_t *slot, bool load,
                  vd_error *err);
/* The slot's table changed; it is written back (and at copy_off too, if
 * not 0) at eviction or flush. */
void vd_mcache_mark_dirty(vd_mcache *c, size_t slot, uint64_t copy_off);
/* Only bytes [lo, hi) of the slot's table changed (they join any range
 * already dirty): write-back writes that range, not the whole table (QED
 * writes back single entries of its large tables). */
void vd_mcache_mark_dirty_range(vd_mcache *c, size_t slot, size_t lo, size_t hi);
int vd_mcache_flush(vd_mcache *c, vd_error *err);
/* Forget the table at `off` (freed or rewritten on disk), every table for
 * UINT64_MAX, without writing it. */
void vd_mcache_drop(vd_mcache *c, uint64_t off);

/* ---- create options ---------------------------------------------------- */

typedef struct vd_opt_desc {
    const char *name;
    const char *help;
} vd_opt_desc;

typedef struct vd_kvlist vd_kvlist;
/* Look up an option; marks it used.  NULL when absent. */
const char *vd_opt_str(vd_kvlist *kv, const char *key);
/* A size, read by vd_parse_size (vdisk.h). */
int vd_opt_size(vd_kvlist *kv, const char *key, uint64_t def, uint64_t *out, vd_error *err);
int vd_opt_bool(vd_kvlist *kv, const char *key, bool def, bool *out, vd_error *err);
int vd_opt_uint(vd_kvlist *kv, const char *key, uint64_t def, uint64_t *out, vd_error *err);

/* ---- the driver table -------------------------------------------------- */

enum vd_can { VD_CAN_NONE = 0, VD_CAN_EMULATE = 1, VD_CAN_NATIVE = 2 };

/* Block status of one layer, reported by drivers through vd_extents_add with
 * depth 0 and these flags: */
#define VD_LAYER_DATA   VD_EXT_DATA   /* this layer holds data */
#define VD_LAYER_ZERO   VD_EXT_ZERO   /* this layer says: zeroes */
#define VD_LAYER_UNALLOC VD_EXT_HOLE  /* not here: ask the backing image */

struct vd_create_args {
    const char *path;
    uint64_t size;
    const char *backing_file;     /* as to be stored */
    const char *backing_format;
    vd_image *backing;            /* opened backing image (or NULL) */
    vd_kvlist *opts;
};

struct vd_driver {
    const char *name;
    const char *description;
    const char *const *extensions;   /* file name suffixes, no dot */
    const char *const *aliases;      /* other names users give (qemu's "vpc") */
    /* Graded confidence that a file of `file_size` bytes whose first `len`
     * bytes (up to 64 KiB) are `head` and last `tail_len` bytes (up to 1 KiB,
     * for footer formats like VHD) are `tail` is this format:
     * 100 full magic + sane header, 50 magic only, 1 fallback (raw), 0 no.
     * A folder path is probed through its DiskDescriptor.xml. */
    int (*probe)(const uint8_t *head, size_t len, const uint8_t *tail,
                 size_t tail_len, uint64_t file_size);
    uint32_t align;                  /* I/O alignment the driver needs (>=1) */
    bool parallel_reads;             /* pread may run concurrently */
    /* A write into part of a cluster that holds no data yet writes the
     * whole cluster (the rest from the backing file, or zeroes), so writing
     * a cluster's zeroes with its data changes nothing in the file: the copy
     * engine then keeps a cluster with data in one write instead of
     * splitting it at each short run of zeroes. */
    bool whole_clusters;

    /* open: img->file is open; set img->size, img->priv, and
     * img->backing_file/backing_format (malloc'd) if it has one. */
    int (*open)(vd_image *img, vd_error *err);
    void (*close)(vd_image *img);
    int (*create)(const struct vd_create_args *a, vd_error *err);
    const vd_opt_desc *create_opts;

    int (*pread)(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err);
    int (*pwrite)(vd_image *img, const void *buf, size_t len, uint64_t off, vd_error *err);
    /* Optional: store whole clusters (img->cluster_size; the last one may end
     * at the virtual size) compressed.  Called by vd_pwrite_compressed with
     * the alignment checked but WITHOUT the image lock, so that callers'
     * threads compress in parallel: the driver must hold
     * pthread_rwlock_wrlock(&img->lock) around every metadata or file
     * update. */
    int (*pwrite_compressed)(vd_image *img, const void *buf, size_t len, uint64_t off,
                             vd_error *err);
    int (*pwrite_zeroes)(vd_image *img, uint64_t off, uint64_t len, unsigned flags, vd_error *err);
    /* Optional, for zero-copy transfers (see vd_data_fd): the file holding
     * the data block_status reports with a file_off, or NULL when there is
     * no such single plain file. */
    vd_file *(*data_file)(vd_image *img);
    /* Optional (see vd_map_for_write): called with the image write-locked,
     * range checked and cluster aligned. */
    int (*map_for_write)(vd_image *img, uint64_t off, uint64_t len, uint64_t *file_off,
                         uint64_t *mapped, vd_error *err);
    int (*discard)(vd_image *img, uint64_t off, uint64_t len, vd_error *err);
    int (*flush)(vd_image *img, vd_error *err);
    /* Describe this layer only (VD_LAYER_*), from `off` on; at least one
     * extent, at most `len`.  file_off where meaningful. */
    int (*block_status)(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext, vd_error *err);
    int (*check)(vd_image *img, unsigned flags, vd_check_result *res, vd_error *err);
    void (*details)(vd_image *img, vd_kv_fn fn, void *ctx);
    int (*list_snapshots)(vd_image *img, vd_snapshot_info *out, size_t max);
    /* Open snapshot `name` read-only (called after open instead of serving the
     * active state). */
    int (*load_snapshot)(vd_image *img, const char *name, vd_error *err);
    /* Create/apply/delete an internal snapshot (image write-locked). */
    int (*snapshot)(vd_image *img, enum vd_snapshot_op op, const char *name, vd_error *err);
    uint64_t (*disk_size)(vd_image *img);   /* NULL: allocated size of file */

    /* In-place metadata operations (see vd_resize, vd_set_backing,
     * vd_make_empty in vdisk.h).  Called with the image write-locked and
     * flushed; NULL when the driver has none.  Each orders its writes so
     * that a crash leaves the image openable with the old or the new state
     * (docs/flush.md says how, per format); a driver that cannot do the
     * operation on this image returns -ENOTSUP with the reason.
     * resize: `size` differs from img->size (the core checked the shrink
     * flag); the driver sets img->size.  New space reads as zeroes or as
     * the backing image.  Over a backing image larger than the old size,
     * a driver that made the new range read as zeroes before the size
     * changed (zero markers written and synced first) returns 1; on 0 the
     * core zeroes what the backing would show, after the size change (a
     * crash in between shows the backing there).
     * set_backing: `file` NULL clears the reference; `fmt` may be NULL.
     * The core updates img->backing_file/backing_format afterwards.
     * make_empty: drop every cluster of this layer (reads fall through to
     * the backing image).
     * prepare_commit: called on a child before a commit writes its data
     * into `base` (its backing image, opened read-write): a format that
     * links a child to its parent's content stores the link the parent
     * will have after that write too, so the child opens throughout. */
    int (*resize)(vd_image *img, uint64_t size, vd_error *err);
    /* What lies past the virtual size inside the allocation unit
     * (cluster_size) holding it must never show after a grow.  Either the
     * driver's resize clears it itself (resize_clears_tail: before a grow,
     * and after a shrink once the new size rules), or the core does it
     * around the driver's resize (resize_zero_tail: it reads and writes
     * that rest through pread/pwrite with the size raised to the unit's
     * end, so the driver must map the whole unit).  With neither, a
     * driver's resize must not shrink inside a unit. */
    bool resize_clears_tail;
    bool resize_zero_tail;
    int (*set_backing)(vd_image *img, const char *file, const char *fmt, vd_error *err);
    int (*make_empty)(vd_image *img, vd_error *err);
    int (*prepare_commit)(vd_image *img, vd_image *base, vd_error *err);
    /* amend: change format options (vd_amend).  The core has checked that
     * every key of `opts` is one of `amend_opts`; the driver reads them with
     * vd_opt_*, validates all values before its first write, and calls
     * `progress` (may be NULL) as it goes. */
    int (*amend)(vd_image *img, vd_kvlist *opts, vd_progress_fn progress, void *progress_ctx,
                 vd_error *err);
    const vd_opt_desc *amend_opts;

    /* NONE: read-only format; EMULATE/NATIVE: vd_create and writes work.
     * Zeroing, discard and block status need no flag: a NULL callback is
     * what the core checks. */
    enum vd_can can_write;
};

/* ---- the image handle (core-owned; drivers may read/write the fields
 *      marked "driver") ---------------------------------------------------- */

struct vd_image {
    const struct vd_driver *drv;
    char *path;
    vd_file *file;                 /* the main file */
    bool readonly;
    bool allow_host_paths;
    bool force_share;              /* core: read without excluding writers */
    bool no_backing;               /* core: opened without its chain; drivers
                                      skip checks against the parent */
    void *priv;                    /* driver state */
    uint64_t size;                 /* driver: virtual size */
    uint32_t cluster_size;         /* driver: allocation unit (info only) */
    bool dirty;                    /* driver: dirty/in-use flag was set */
    char *backing_file;            /* driver: as stored in the image */
    char *backing_format;          /* driver: as stored */
    vd_image *backing;             /* core: opened backing image or NULL */
    char *backing_path;            /* core: resolved path of the backing */
    int depth;                     /* core: 0 top, 1 its backing, ... */
    bool probed_raw;               /* core: no format given, none matched */
    pthread_rwlock_t lock;         /* core */
    struct vd_file_id { dev_t dev; ino_t ino; } *file_ids; /* core: every file */
    size_t n_file_ids, cap_file_ids; /* the layer opened (vd_image_uses_file) */
    int compression_level;         /* core: vd_set_compression_level, 0 unset */
    unsigned cache;                /* core: vd_open_opts.cache, for its files */
    bool direct;                   /* core: read-only, VD_CACHE_DIRECT asked */
    bool direct_refused;           /* core: a file of it refused O_DIRECT */
    bool keep_content_id;          /* core: vd_open_opts.keep_content_id */
};

/* Read [off, off+len) of the backing chain below `img` (zeroes where there is
 * none, or past its end).  For drivers' unallocated ranges and COW. */
int vd_backing_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err);

/* The registry (formats/drivers.c). */
extern const struct vd_driver *const vd_drivers[];
const struct vd_driver *vd_find_driver(const char *name);

#endif /* VD_DRIVER_H */
