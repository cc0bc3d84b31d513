/* vmdk.h - shared state of the VMDK driver (formats/vmdk/ files).
 *
 * A VMDK disk is a descriptor (text: CID, parent link, extent list, DDB)
 * plus one or more extents.  The descriptor lives in its own small file or is
 * embedded in a hosted sparse extent ("KDMV" header).  Extents are FLAT/VMFS
 * (raw bytes at an offset), ZERO (no storage), or SPARSE (grain directory ->
 * grain tables -> grains; streamOptimized is SPARSE with compressed grains
 * behind markers).  Everything below is in 512-byte sectors on disk. */
#ifndef VMDK_H
#define VMDK_H

#include "vd-driver.h"

#define VMDK_SECTOR 512u
#define VMDK_MAGIC 0x564d444bu           /* "KDMV" read little-endian */
#define VMDK_COWD_MAGIC 0x44574f43u      /* "COWD": ESX vmfsSparse (VMDK3) */
#define VMDK_SESPARSE_MAGIC 0x00000000cafebabeull
#define VMDK_GD_AT_END 0xffffffffffffffffull

/* header flags */
#define VMDK_FLAG_NL_DETECT   (1u << 0)
#define VMDK_FLAG_RGD         (1u << 1)
#define VMDK_FLAG_ZERO_GRAIN  (1u << 2)
#define VMDK_FLAG_COMPRESSED  (1u << 16)
#define VMDK_FLAG_MARKERS     (1u << 17)

/* stream markers (type field of a metadata marker) */
#define VMDK_MARKER_EOS    0
#define VMDK_MARKER_GT     1
#define VMDK_MARKER_GD     2
#define VMDK_MARKER_FOOTER 3

/* Limits on what a header or descriptor may ask for (hostile input). */
#define VMDK_MAX_DESC_BYTES  (1u << 20)     /* whole descriptor text */
#define VMDK_MAX_LINE        65536u         /* one descriptor line */
#define VMDK_MAX_EXTENTS     4096u
#define VMDK_MAX_GRAIN_SECTORS 2048u        /* 1 MiB grains (VMware: 64 KiB) */
#define VMDK_MAX_GTES        65536u         /* entries per grain table */

/* Grain table entry values with a meaning of their own. */
#define VMDK_GTE_UNALLOC 0u
#define VMDK_GTE_ZERO    1u                 /* only with VMDK_FLAG_ZERO_GRAIN */

enum vmdk_extent_type {
    VMDK_EXT_FLAT,      /* FLAT and VMFS: raw bytes at `flat_off` */
    VMDK_EXT_ZERO,      /* reads as zeroes, stores nothing */
    VMDK_EXT_SPARSE,    /* hosted sparse / streamOptimized */
    VMDK_EXT_SESPARSE,  /* ESXi seSparse (read-only) */
};

struct vmdk_sparse;     /* sparse.c */
struct vmdk_stream;     /* stream.c: the sequential writer */
struct vmdk_sesparse;   /* sesparse.c */

struct vmdk_extent {
    enum vmdk_extent_type type;
    uint64_t start;          /* first guest sector */
    uint64_t sectors;        /* guest sectors this extent holds */
    uint64_t flat_off;       /* FLAT: byte offset in the file */
    bool readonly;           /* RDONLY access in the descriptor */
    bool own_file;           /* file is ours to close (not img->file) */
    vd_file *file;
    char *name;              /* as written in the descriptor (or NULL) */
    struct vmdk_sparse *sp;  /* SPARSE */
    struct vmdk_sesparse *se; /* SESPARSE */
};

/* One "ACCESS SECTORS TYPE "NAME" [OFFSET]" line of a descriptor. */
struct vmdk_desc_extent {
    char access[16];
    uint64_t sectors;
    char type[16];
    char *name;              /* malloc'd, NULL for ZERO */
    uint64_t offset;         /* sectors */
};

struct vmdk_desc {
    char *text;              /* the descriptor as read (NUL-terminated) */
    size_t len;
    uint32_t cid, parent_cid;
    bool has_cid;
    size_t cid_pos;          /* offset of the CID value in text, 0 = none */
    size_t cid_len;
    char *create_type;
    char *parent_hint;
    char *adapter;
    char *hwversion;
    struct vmdk_desc_extent *ext;
    size_t n_ext;
};

struct vmdk {
    struct vmdk_desc desc;
    bool desc_embedded;      /* descriptor inside the sparse file */
    uint64_t desc_off;       /* its byte offset (embedded) */
    uint64_t desc_room;      /* bytes reserved for it (embedded) */
    struct vmdk_extent *ext;
    size_t n_ext;
    bool cid_updated;        /* a new CID was written since open */
    bool parent_checked;     /* the parent's CID was compared (atomic) */
    struct vmdk_stream *stream;   /* non-NULL: writing a streamOptimized file */
};

#define VMDK_SPLIT_SECTORS (4194304ull)  /* 2 GiB per twoGbMaxExtent file */

/* vmdk.c */
/* Open the extent a descriptor line names, as the extent after the others
 * (guest sectors from `start`). */
int vmdk_open_desc_extent(vd_image *img, struct vmdk *v, const struct vmdk_desc_extent *d,
                          uint64_t start, vd_error *err);
int vmdk_write_descriptor(vd_image *img, struct vmdk *v, size_t old_len, vd_error *err);
/* inplace.c */
int vmdk_resize(vd_image *img, uint64_t size, vd_error *err);
int vmdk_set_backing(vd_image *img, const char *file, const char *fmt, vd_error *err);
int vmdk_make_empty(vd_image *img, vd_error *err);

/* descriptor.c */
int vmdk_desc_parse(struct vmdk_desc *d, const char *text, size_t len,
                    const char *where, vd_error *err);
void vmdk_desc_free(struct vmdk_desc *d);
/* Read the descriptor of the VMDK file `path` (embedded or separate) and
 * return its CID; for the parent check of delta disks. */
int vmdk_read_cid_of(const char *path, uint32_t *cid, vd_error *err);
/* The same from a file already open (a parent opened beneath the folder). */
int vmdk_read_cid_file(vd_file *f, uint32_t *cid, vd_error *err);
/* Whether `head` (len bytes) looks like a text descriptor. */
bool vmdk_desc_probe(const uint8_t *head, size_t len);

struct vmdk_desc_params {
    uint32_t cid, parent_cid;
    const char *create_type;
    const char *parent_hint;      /* NULL: none */
    const char *extent_lines;     /* "RW 2048 SPARSE \"x.vmdk\"\n"... */
    uint64_t sectors;             /* for the geometry */
    const char *adapter;
    const char *hwversion;
};
/* A complete descriptor text (malloc'd). */
char *vmdk_desc_format(const struct vmdk_desc_params *p);
/* Replace the CID value in d->text; returns the new text length, or -1 if
 * the descriptor has no CID line. */
int vmdk_desc_set_cid(struct vmdk_desc *d, uint32_t cid);

/* resize.c: extent files beside a twoGbMaxExtent descriptor that follow
 * its extent names but are not named (a grow killed before its descriptor
 * write): counted as leaks; `fix` removes those that hold no data. */
int vmdk_leftover_extents(vd_image *img, struct vmdk *v, bool fix, vd_check_result *res,
                          vd_error *err);

/* sparse.c */
struct vmdk_header {
    uint32_t version, flags;
    uint64_t capacity, grain, desc_off, desc_size;
    uint32_t gtes;
    uint64_t rgd_off, gd_off, overhead;
    uint16_t compress;
};
int vmdk_header_parse(const uint8_t *b, struct vmdk_header *h, const char *where,
                      uint64_t file_size, vd_error *err);
void vmdk_header_encode(const struct vmdk_header *h, uint8_t *b);
int vmdk_sparse_open(struct vmdk_extent *e, const struct vmdk_header *h,
                     vd_error *err);
void vmdk_sparse_close(struct vmdk_extent *e);
/* Sync the grains written since the last flush, then write their grain
 * table entries (the caller syncs again). */
int vmdk_sparse_flush(struct vmdk_extent *e, vd_error *err);
int vmdk_sparse_make_empty(struct vmdk_extent *e, vd_error *err);
/* Grow a hosted sparse extent to `sectors` within its grain directory's
 * room (the header's capacity, synced); -ENOSPC with the reason when it
 * does not fit.  `check_only`: only say whether it fits. */
int vmdk_sparse_grow(struct vmdk_extent *e, uint64_t sectors, bool check_only,
                     uint64_t zero_to, vd_error *err);
/* What the part handlers of vd_walk need of an extent's request. */
struct vmdk_walk {
    struct vmdk_extent *e;
    uint64_t guest_off;       /* guest offset of the request's first byte */
};

/* I/O inside one extent; `off` is a byte offset relative to the extent. */
int vmdk_sparse_pread(vd_image *img, struct vmdk_extent *e, uint8_t *buf,
                      size_t len, uint64_t off, uint64_t guest_off, vd_error *err);
int vmdk_sparse_pwrite(vd_image *img, struct vmdk_extent *e, const uint8_t *buf,
                       size_t len, uint64_t off, uint64_t guest_off, vd_error *err);
int vmdk_sparse_status(struct vmdk_extent *e, uint64_t off, uint64_t len,
                       uint64_t guest_off, vd_extents *ext, vd_error *err);
int vmdk_sparse_check(struct vmdk_extent *e, vd_check_result *res, vd_error *err);
uint32_t vmdk_sparse_grain_bytes(struct vmdk_extent *e);
bool vmdk_sparse_is_stream(struct vmdk_extent *e);
/* Whether the extent's header has the zeroed-grain flag (entry 1). */
bool vmdk_sparse_zero_grain(struct vmdk_extent *e);

/* stream.c */
/* A freshly created streamOptimized file (header and descriptor only): set
 * up the sequential writer. */
int vmdk_stream_begin(vd_image *img, struct vmdk_extent *e, const struct vmdk_header *h,
                      vd_error *err);
int vmdk_stream_pwrite(vd_image *img, const uint8_t *buf, size_t len, uint64_t off,
                       vd_error *err);
int vmdk_stream_pread(vd_image *img, uint8_t *buf, size_t len, uint64_t off,
                      vd_error *err);
int vmdk_stream_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                       vd_error *err);
/* Write what is buffered, the grain tables, GD, footer and end marker. */
int vmdk_stream_finish(vd_image *img, vd_error *err);
void vmdk_stream_free(struct vmdk_stream *s);
/* Decompress one zlib-wrapped grain. */
int vmdk_inflate(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len,
                 size_t *got);

/* sesparse.c */
int vmdk_sesparse_open(struct vmdk_extent *e, vd_error *err);
void vmdk_sesparse_close(struct vmdk_extent *e);
int vmdk_sesparse_pread(vd_image *img, struct vmdk_extent *e, uint8_t *buf, size_t len,
                        uint64_t off, uint64_t guest_off, vd_error *err);
int vmdk_sesparse_status(struct vmdk_extent *e, uint64_t off, uint64_t len,
                         uint64_t guest_off, vd_extents *ext, vd_error *err);

/* create.c */
/* A new sparse extent file of `sectors` (grain directory and tables
 * preallocated), embedding `desc` unless NULL, its first `zero_sectors`
 * reading as zeroes over a backing file (zero grains, or hole grains
 * without `zeroed_grain`); a new flat extent file. */
int vmdk_create_sparse(const char *path, uint64_t sectors, const char *desc,
                       bool zeroed_grain, uint64_t zero_sectors, vd_error *err);
int vmdk_create_flat(const char *path, uint64_t sectors, vd_error *err);
int vmdk_create(const struct vd_create_args *a, vd_error *err);
extern const vd_opt_desc vmdk_create_opts[];
uint32_t vmdk_new_cid(void);

#endif /* VMDK_H */
