/* qcow2.h - private state and helpers shared by the qcow2 driver files.
 *
 * Layout of the driver (formats/qcow2/):
 *   qcow2.c     the driver table, open/close, read/write/zero/discard dispatch
 *   header.c    header + extensions: parse, validate, update fields
 *   l2.c        L1/L2 lookup, L2 entry decoding (incl. extended L2), L2
 *               allocation and copy-on-write of shared L2 tables
 *   refcount.c  refcount get/set for every width, cluster allocation,
 *               refcount table growth
 *   compress.c  zlib (raw deflate) and zstd compressed clusters
 *   snapshot.c  internal snapshot table: list and load
 *   check.c     refcount rebuild in memory, leak/corruption report, repair
 *   create.c    new images
 *   resize.c    in place: virtual size, backing reference, emptying
 *   amend.c     in place: compat level, lazy refcounts, refcount width
 *
 * Write ordering (what flush guarantees): data clusters are written at once;
 * L2 tables and refcount blocks live in write-back caches.  Refcount blocks
 * always reach the disk before any L2 table (so an L2 entry on disk never
 * points at a cluster whose refcount is 0), an L2 table before the L1 entry
 * naming it, a refcount block before the refcount table entry naming it, and
 * L2 entries are written before refcounts are decremented (so a freed
 * cluster is never referenced).  "Before" means a sync between: a disk's
 * volatile cache may reorder writes, the page cache does not.  The syncs are
 * taken only where the later write needs them (qcow2_barrier: nothing of
 * the kind written since the file's last sync, no sync), so a run of writes
 * pays one per batch of metadata, not one per table.  A crash between
 * flushes can lose the writes since the last flush and leak clusters; after
 * qcow2_flush returns everything is on disk and the image is clean.
 */
#ifndef VD_QCOW2_H
#define VD_QCOW2_H

#include "vd-driver.h"

#include <zlib.h>
#include <zstd.h>

#define QCOW2_MAGIC 0x514649fbu            /* "QFI\xfb" */

/* header fields (byte offsets) */
#define QH_VERSION          4
#define QH_BACKING_OFF      8
#define QH_BACKING_SIZE     16
#define QH_CLUSTER_BITS     20
#define QH_SIZE             24
#define QH_CRYPT            32
#define QH_L1_SIZE          36
#define QH_L1_OFF           40
#define QH_RT_OFF           48
#define QH_RT_CLUSTERS      56
#define QH_NB_SNAPSHOTS     60
#define QH_SNAPSHOTS_OFF    64
#define QH_INCOMPAT         72
#define QH_COMPAT           80
#define QH_AUTOCLEAR        88
#define QH_REFCOUNT_ORDER   96
#define QH_HEADER_LEN       100
#define QH_COMPRESSION      104
#define QCOW2_V2_HEADER_LEN 72
#define QCOW2_V3_HEADER_LEN 104

/* feature bits */
#define QCOW2_INCOMPAT_DIRTY     (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT   (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESS  (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2     (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN     0x1full
#define QCOW2_COMPAT_LAZY        (1ull << 0)
#define QCOW2_AUTOCLEAR_BITMAPS  (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_RAW (1ull << 1)

/* header extension types */
#define QEXT_END          0x00000000u
#define QEXT_BACKING_FMT  0xe2792acau
#define QEXT_FEATURES     0x6803f857u
#define QEXT_BITMAPS      0x23852875u
#define QEXT_CRYPTO       0x0537be77u
#define QEXT_DATA_FILE    0x44415441u

/* L1/L2 entry bits */
#define QCOW2_OFLAG_COPIED     (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO       (1ull << 0)
#define QCOW2_OFFSET_MASK      0x00fffffffffffe00ull   /* bits 9..55 */
#define QCOW2_L1_RESERVED      0x7f000000000001ffull
#define QCOW2_L2_RESERVED      0x3f000000000001feull

#define QCOW2_COMPRESS_ZLIB 0
#define QCOW2_COMPRESS_ZSTD 1

/* Decoded L2 entry kinds. */
enum qcow2_kind {
    QCOW2_UNALLOC,        /* not here: backing (or zeroes) */
    QCOW2_ZERO,           /* reads as zeroes (may keep a preallocated host) */
    QCOW2_NORMAL,         /* data at host */
    QCOW2_COMPRESSED,     /* compressed data at host, csize bytes */
    QCOW2_SUBCLUSTERS,    /* extended L2 with a mixed bitmap */
};

typedef struct qcow2_entry {
    enum qcow2_kind kind;
    uint64_t host;        /* host offset (cluster aligned) or 0 */
    uint64_t csize;       /* compressed: bytes from host to end of last sector */
    bool copied;          /* refcount is exactly 1: may be written in place */
    uint32_t alloc_bits;  /* extended L2 */
    uint32_t zero_bits;
} qcow2_entry;


typedef struct qcow2_snapshot {
    char *id, *name;
    uint64_t l1_off;
    uint32_t l1_size;
    uint64_t vm_state_size;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t disk_size;   /* from the extra data, else the image size */
    uint8_t *extra;       /* the extra data as stored (rewritten as is) */
    uint32_t extra_len;
} qcow2_snapshot;

/* A reusable compressor (compress.c). */
typedef struct qcow2_zstate {
    bool ready;
    vd_deflater *zd;          /* zlib type: deflate with a 4 KiB window */
    ZSTD_CCtx *zc;
} qcow2_zstate;
#define QCOW2_ZPOOL 8

typedef struct qcow2_state {
    vd_image *img;
    vd_file *file;            /* metadata file (= img->file) */
    vd_file *data_file;       /* external data file, or NULL (= file) */
    uint32_t version;
    uint32_t cluster_bits;
    uint64_t cluster_size;
    uint32_t header_len;
    uint64_t incompat, compat, autoclear;
    uint32_t refcount_order;  /* refcount_bits = 1 << order */
    uint32_t refcount_bits;
    uint64_t rb_entries;      /* refcounts per refcount block */
    int compression;          /* QCOW2_COMPRESS_* */
    bool extl2;
    uint32_t l2_entry_size;   /* 8 or 16 */
    uint64_t l2_entries;      /* entries per L2 table */
    uint32_t sc_bits;         /* log2 subcluster size (extl2) */

    uint64_t *l1;             /* active (or loaded snapshot) L1, host order */
    uint32_t l1_size;
    uint64_t l1_off;
    bool l1_is_snapshot;

    uint64_t *rt;             /* refcount table, host order */
    uint64_t rt_entries;
    uint64_t rt_off;
    uint32_t rt_clusters;
    bool rt_growing;          /* table being replaced: entries not written */

    uint32_t nb_snapshots;
    uint64_t snapshots_off;
    qcow2_snapshot *snaps;
    uint64_t snapshots_bytes; /* size of the snapshot table */

    uint64_t backing_off;     /* where the backing name lives (for check) */
    uint32_t backing_len;
    char *data_file_name;
    uint64_t bitmaps_off, bitmaps_size;
    uint32_t nb_bitmaps;

    uint64_t alloc_next;      /* cluster allocation cursor (bytes) */
    uint64_t free_hint;       /* lowest cluster freed since the last rewind */
    uint64_t comp_cur, comp_end;  /* packing cursor for compressed data */

    vd_mcache l2c, rbc;
    /* What was written since the file's last sync, for qcow2_barrier: each
     * holds file->syncs + 1 when such a write came after that sync. */
    uint64_t rc_unsynced;     /* refcount blocks, table entries, table switch */
    uint64_t ref_unsynced;    /* L2 tables, L1 entries: references */
    uint64_t free_unsynced;   /* refcounts lowered after such references */
    qcow2_entry *pending;     /* clusters to free after the next L2 flush */
    size_t npending, cappending;
    pthread_mutex_t lock;     /* guards the caches and L1 for parallel reads,
                                 and the compressor pool */
    qcow2_zstate zpool[QCOW2_ZPOOL];
    bool zbusy[QCOW2_ZPOOL];
} qcow2_state;

static inline qcow2_state *qcow2_s(vd_image *img) { return img->priv; }
/* The mark of a write made now, for the *_unsynced fields. */
static inline uint64_t qcow2_now(const qcow2_state *s) { return s->file->syncs + 1; }
/* Sync when a write marked `mark` has not been synced yet: what comes next
 * depends on it reaching the disk first. */
static inline int qcow2_barrier(qcow2_state *s, uint64_t mark, vd_error *err)
{ return mark == qcow2_now(s) ? vd_file_sync(s->file, err) : 0; }
static inline uint64_t qcow2_offset_in_cluster(const qcow2_state *s, uint64_t v)
{ return v & (s->cluster_size - 1); }

/* header.c */
int qcow2_probe(const uint8_t *head, size_t len, const uint8_t *tail, size_t tail_len,
                uint64_t file_size);
int qcow2_header_read(qcow2_state *s, vd_image *img, vd_error *err);
int qcow2_header_write_u64(qcow2_state *s, uint32_t field, uint64_t v, vd_error *err);
int qcow2_header_write_rt(qcow2_state *s, vd_error *err);
int qcow2_header_set_incompat(qcow2_state *s, uint64_t incompat, vd_error *err);
/* The header cluster rebuilt in memory, to be written with one write of
 * *write_len bytes at 0: the fixed header (hdr_len bytes: the present one,
 * cut or zero-extended, for the caller to edit), the extensions present now
 * (with `set_backing`, the backing format's replaced by `fmt`), an end
 * marker, and the backing file name (with `set_backing`, `file`, NULL for
 * none; its offset and size are filled in). */
int qcow2_header_build(qcow2_state *s, uint32_t hdr_len, bool set_backing, const char *file,
                       const char *fmt, uint8_t **out, uint64_t *write_len, vd_error *err);
/* Offset/size of host ranges: in file, cluster aligned, not zero. */
int qcow2_check_table(qcow2_state *s, const char *what, uint64_t off, uint64_t bytes,
                      uint64_t file_size, vd_error *err);


/* refcount.c */
uint64_t qcow2_rc_get_packed(const uint8_t *block, uint64_t idx, uint32_t order);
void qcow2_rc_set_packed(uint8_t *block, uint64_t idx, uint32_t order, uint64_t v);
int qcow2_refcount_get(qcow2_state *s, uint64_t cluster, uint64_t *out, vd_error *err);
int qcow2_refcount_update(qcow2_state *s, uint64_t host, uint64_t len, int delta,
                          vd_error *err);
int qcow2_refcount_set(qcow2_state *s, uint64_t cluster, uint64_t v, vd_error *err);
/* n contiguous clusters with refcount 0 from the cursor; sets no refcount. */
int qcow2_alloc_raw(qcow2_state *s, uint64_t n, uint64_t *host, vd_error *err);
uint64_t qcow2_rc_max(const qcow2_state *s);
void qcow2_alloc_rewind(qcow2_state *s);
/* Allocate n contiguous clusters (refcount 1 each); returns host offset. */
int qcow2_alloc_clusters(qcow2_state *s, uint64_t n, uint64_t *host, vd_error *err);
int qcow2_rc_flush_before_l2(void *s, vd_error *err);
int qcow2_rc_before_write(void *s, vd_error *err);
int qcow2_meta_flush(qcow2_state *s, vd_error *err);
int qcow2_refcount_table_load(qcow2_state *s, uint64_t file_size, vd_error *err);

/* l2.c */
void qcow2_decode_l2(const qcow2_state *s, uint64_t e, uint64_t bitmap, qcow2_entry *out);
int qcow2_l1_load(qcow2_state *s, uint64_t off, uint32_t size, uint64_t **out,
                  vd_error *err);
/* Look up the entry for guest cluster `gc`. */
int qcow2_lookup(qcow2_state *s, uint64_t gc, qcow2_entry *out, vd_error *err);
/* Set the entry for guest cluster `gc` (allocating/COWing its L2 table). */
int qcow2_l2_set(qcow2_state *s, uint64_t gc, uint64_t entry, uint64_t bitmap,
                 vd_error *err);
int qcow2_l1_write(qcow2_state *s, uint64_t l1i, vd_error *err);
int qcow2_l2_validate_l1(qcow2_state *s, uint64_t l1e, uint32_t idx, vd_error *err);
/* Free what an entry references (after its L2 was rewritten). */
int qcow2_entry_free(qcow2_state *s, const qcow2_entry *e, vd_error *err);
/* Queue an entry whose clusters are to be freed once the L2 tables that no
 * longer reference them are on disk; qcow2_release_pending does that. */
int qcow2_defer_free(qcow2_state *s, const qcow2_entry *e, vd_error *err);
int qcow2_release_pending(qcow2_state *s, vd_error *err);
/* The same once QCOW2_PENDING_BATCH clusters wait (else at the next flush):
 * writing the L2 tables needs the refcounts synced first, and lowering the
 * counts the tables synced, so releasing after every write that frees
 * (discards, unmapping zero writes) would cost two syncs per write. */
#define QCOW2_PENDING_BATCH 4096
int qcow2_release_pending_batch(qcow2_state *s, vd_error *err);
/* Make guest cluster `gc` unallocated and defer freeing what it used
 * (discard, shrink, emptying an overlay); nothing to do when unallocated. */
int qcow2_unmap_cluster(qcow2_state *s, uint64_t gc, vd_error *err);

/* compress.c */
int qcow2_decompress(qcow2_state *s, const uint8_t *in, size_t in_len, uint8_t *out,
                     size_t out_len, vd_error *err);
/* Compress `len` bytes with the image's compression type; returns the
 * compressed size, 0 when it does not fit out_cap, or a negative errno.
 * Thread-safe (a pooled compressor state). */
long qcow2_compress(qcow2_state *s, const uint8_t *in, size_t len, uint8_t *out,
                    size_t out_cap);
void qcow2_zstate_free(qcow2_zstate *z, int type);
/* Compressed clusters from guest offset `off` (its cluster's entry is
 * `first`) up to `len` bytes into buf: as many following clusters as are
 * compressed and stored next to each other, read at once.  *done: bytes
 * filled (at least the first cluster's part). */
int qcow2_read_compressed_run(qcow2_state *s, const qcow2_entry *first, uint8_t *buf,
                              size_t len, uint64_t off, size_t *done, vd_error *err);
int qcow2_pwrite_compressed(vd_image *img, const void *buf, size_t len, uint64_t off,
                            vd_error *err);

/* snapshot.c */
int qcow2_snapshots_read(qcow2_state *s, uint64_t file_size, vd_error *err);
void qcow2_snapshots_free(qcow2_state *s);
int qcow2_list_snapshots(vd_image *img, vd_snapshot_info *out, size_t max);
int qcow2_load_snapshot(vd_image *img, const char *name, vd_error *err);
/* The snapshot whose id, else whose name, is `name`; NULL if none. */
qcow2_snapshot *qcow2_snapshot_find(qcow2_state *s, const char *name);

/* snapshot-write.c */
/* Write `snaps` as a new snapshot table, switch the header to it, free the
 * old one, and make it the image's list (taking ownership of the array;
 * the entries' strings and extra data move with it). */
int qcow2_snap_table_replace(qcow2_state *s, qcow2_snapshot *snaps, uint32_t n,
                             vd_error *err);
int qcow2_snapshot_op(vd_image *img, enum vd_snapshot_op op, const char *name,
                      vd_error *err);

/* resize.c */
/* Free what waits for it, write the metadata caches, sync the file. */
int qcow2_settle(qcow2_state *s, vd_error *err);
int qcow2_resize(vd_image *img, uint64_t size, vd_error *err);
int qcow2_set_backing(vd_image *img, const char *file, const char *fmt, vd_error *err);
int qcow2_make_empty(vd_image *img, vd_error *err);

/* amend.c */
int qcow2_amend(vd_image *img, vd_kvlist *opts, vd_progress_fn progress, void *progress_ctx,
                vd_error *err);
extern const vd_opt_desc qcow2_amend_opts[];

/* check.c */
int qcow2_check(vd_image *img, unsigned flags, vd_check_result *res, vd_error *err);

/* create.c */
int qcow2_create(const struct vd_create_args *a, vd_error *err);
extern const vd_opt_desc qcow2_create_opts[];

/* qcow2.c */
int qcow2_read_cluster_guest(qcow2_state *s, uint64_t gc, uint8_t *buf, vd_error *err);

#endif
