/* qed.h - QED driver internals shared by qed.c (I/O, open, create) and
 * qed-check.c (the consistency check) and qed-inplace.c (resize, backing
 * reference, emptying). */
#ifndef VD_QED_H
#define VD_QED_H
#include "vd-driver.h"

#define QED_MAGIC            0x00444551u   /* "QED\0" read little-endian */
#define QED_HEADER_LEN       64
#define QED_F_BACKING_FILE   0x1ull
#define QED_F_NEED_CHECK     0x2ull
#define QED_F_BACKING_RAW    0x4ull        /* backing is raw: do not probe it */
#define QED_F_KNOWN          (QED_F_BACKING_FILE | QED_F_NEED_CHECK | QED_F_BACKING_RAW)
#define QED_MIN_CLUSTER      (4u << 10)
#define QED_MAX_CLUSTER      (64u << 20)
#define QED_MAX_TABLE_SIZE   16u
#define QED_DEF_CLUSTER      (64u << 10)
#define QED_DEF_TABLE_SIZE   4u
#define QED_ZERO_ENTRY       1ull
#define QED_L2_CACHE_BYTES   (1u << 20)    /* at least 2 tables, at most 64 */
#define QED_MAX_BACKING_NAME 4096u

/* Header field offsets. */
enum {
    QED_H_MAGIC = 0, QED_H_CLUSTER = 4, QED_H_TABLE = 8, QED_H_HDRSIZE = 12,
    QED_H_FEATURES = 16, QED_H_COMPAT = 24, QED_H_AUTOCLEAR = 32,
    QED_H_L1 = 40, QED_H_SIZE = 48, QED_H_BF_OFF = 56, QED_H_BF_LEN = 60,
};

/* An L2 table as lookups see it: its little-endian entries in the shared
 * table cache, `n` of them below the image size; valid until the next
 * table is asked for. */
struct qed_l2 {
    uint64_t off;          /* file offset of the table */
    uint8_t *b;
    uint64_t n;
    size_t slot;           /* for vd_mcache_mark_dirty_range */
};

struct qed_state {
    uint32_t cluster_size, table_size, header_size;
    uint64_t features, compat, autoclear;
    uint64_t l1_off, image_size;
    uint64_t table_bytes, table_entries;
    uint64_t span;            /* guest bytes one L2 table maps */
    uint64_t data_start;      /* first byte after the header clusters */
    uint64_t l1_n;            /* L1 entries covering image_size */
    uint64_t *l1;
    uint64_t l1_dirty_lo, l1_dirty_hi;  /* [lo, hi) L1 entries to write back */
    uint64_t file_end;        /* next allocation, cluster aligned */
    vd_mcache l2c;            /* L2 tables, the part below the image size */
    bool synced;              /* l2c's write-back synced the data first */
    bool flag_set;            /* we set NEED_CHECK in this session */
    uint8_t *scratch;         /* one cluster, for copy-on-write */
};

/* Shared between the driver files. */
bool qed_table_ok(const struct qed_state *s, uint64_t off, uint64_t file_size);
int qed_write_features(vd_image *img, vd_error *err);
/* Write the changed L1 and L2 entries, after a sync of the data and file
 * extensions they point to (nothing when none changed). */
int qed_cache_writeback(vd_image *img, vd_error *err);
/* Forget the cached tables (after writing them back), e.g. before tables
 * are rewritten on disk; 0 or -ENOMEM when the cache cannot be set up
 * again for the current size. */
int qed_cache_reset(vd_image *img, vd_error *err);
int qed_check(vd_image *img, unsigned flags, vd_check_result *res, vd_error *err);
/* qed-inplace.c */
int qed_resize(vd_image *img, uint64_t size, vd_error *err);
int qed_set_backing(vd_image *img, const char *file, const char *fmt, vd_error *err);
int qed_make_empty(vd_image *img, vd_error *err);

#endif
