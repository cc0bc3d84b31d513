/* vhdx.h - the VHDX driver's shared state and on-disk layout (all fields
 * little-endian), from Microsoft's "VHDX Format Specification" v1.00:
 *
 *   0       file identifier "vhdxfile" + creator (64 KiB)
 *   64 KiB  header 1, 128 KiB header 2 (4 KiB each; the valid one with the
 *           higher sequence number is current)
 *   192 KiB region table 1, 256 KiB region table 2 (64 KiB each): where
 *           the BAT and the metadata region are
 *   log     (header's LogOffset/LogLength): circular buffer of entries that
 *           redo metadata writes after a crash
 *   metadata region: table + items (block size, virtual size, sector sizes,
 *           page 83 id, parent locator)
 *   BAT     64-bit entries: payload blocks, and for every chunk_ratio of
 *           them one sector-bitmap block entry
 *
 * Files: vhdx.c (table, open/close, flush, details, check), header.c
 * (CRC-32C, GUIDs, headers, region table, metadata), log.c (replay, writing),
 * bat.c (BAT, guest I/O, block status), create.c, inplace.c (resize, parent
 * link, emptying). */
#ifndef VD_VHDX_H
#define VD_VHDX_H

#include "vd-driver.h"

#define VHDX_MiB (1ull << 20)
#define VHDX_HEADER1_OFF (64u << 10)
#define VHDX_HEADER2_OFF (128u << 10)
#define VHDX_HEADER_SIZE 4096u
#define VHDX_RT1_OFF (192u << 10)
#define VHDX_RT2_OFF (256u << 10)
#define VHDX_RT_SIZE (64u << 10)
#define VHDX_META_TABLE_SIZE (64u << 10)
#define VHDX_LOG_SECTOR 4096u
#define VHDX_MAX_ENTRIES 2047u

#define VHDX_GUID_BAT "2DC27766-F623-4200-9D64-115E9BFD4A08"
#define VHDX_GUID_META "8B7CA206-4790-4B9A-B8FE-575F050F886E"
#define VHDX_GUID_FILE_PARAMS "CAA16737-FA36-4D43-B3B6-33F0AA44E76B"
#define VHDX_GUID_VDISK_SIZE "2FA54224-CD1B-4876-B211-5DBED83BF4B8"
#define VHDX_GUID_PAGE83 "BECA12AB-B2E6-4523-93EF-C309E000C746"
#define VHDX_GUID_LSS "8141BF1D-A96F-4709-BA47-F233A8FAAB5F"
#define VHDX_GUID_PSS "CDA348C7-445D-4471-9CC9-E9885251C556"
#define VHDX_GUID_PARENT "A8D35F2D-B30B-454D-ABF7-D3D84834AB0C"
#define VHDX_GUID_LOCATOR_TYPE "B04AEFB7-D19E-4A81-B789-25B8E9445913"

/* header fields */
#define VHDX_H_SIG 0            /* "head" */
#define VHDX_H_CSUM 4
#define VHDX_H_SEQ 8
#define VHDX_H_FILE_GUID 16
#define VHDX_H_DATA_GUID 32
#define VHDX_H_LOG_GUID 48
#define VHDX_H_LOG_VERSION 64
#define VHDX_H_VERSION 66
#define VHDX_H_LOG_LEN 68
#define VHDX_H_LOG_OFF 72

/* BAT entry: state in bits 0-2, file offset in MiB in bits 20-63 */
#define VHDX_BAT_STATE(e) ((unsigned)((e) & 7))
#define VHDX_BAT_OFF(e) ((e) >> 20 << 20)
enum {
    VHDX_PAYLOAD_NOT_PRESENT = 0,
    VHDX_PAYLOAD_UNDEFINED = 1,
    VHDX_PAYLOAD_ZERO = 2,
    VHDX_PAYLOAD_UNMAPPED = 3,
    VHDX_PAYLOAD_FULLY_PRESENT = 6,
    VHDX_PAYLOAD_PARTIALLY_PRESENT = 7,
    VHDX_SB_PRESENT = 6,
};

/* A metadata write recovered from the log but not applied to the file
 * (read-only open): reads of the file see it.  data NULL = zeroes. */
struct vhdx_patch {
    uint64_t off, len;
    uint8_t *data;
};

struct vhdx_state {
    uint64_t file_size;
    uint8_t hdr[VHDX_HEADER_SIZE];   /* the current header */
    int hdr_slot;                    /* 0: at 64 KiB, 1: at 128 KiB */
    uint64_t log_off, log_len;
    uint64_t bat_off, bat_len, meta_off, meta_len;
    uint32_t block_size, lss, pss;
    bool has_parent, leave_allocated;
    uint8_t page83[16];
    uint64_t chunk_ratio, payload_blocks, bat_entries;
    uint64_t *bat;
    uint8_t *bat_dirty;              /* one flag per 4 KiB of BAT */
    struct vhdx_patch *patches;      /* read-only replay view */
    size_t n_patches;
    uint64_t log_seq;                /* last sequence number written */
    bool data_guid_fresh;            /* DataWriteGuid renewed this session */
    bool next_data_guid_set;         /* the renewal takes next_data_guid */
    uint8_t next_data_guid[16];      /* (chosen before a commit writes here) */
    bool replayed;                   /* a dirty log was replayed at open */
    bool crashed;                    /* test hook fired: write nothing more */
    char *parent_linkage, *parent_linkage2;
};

/* header.c */
uint32_t vhdx_crc32c(const void *buf, size_t len);
/* CRC-32C of a structure whose checksum field (at csum_off) counts as 0. */
uint32_t vhdx_struct_crc(const uint8_t *buf, size_t len, size_t csum_off);
void vhdx_guid_format(const uint8_t *g, char *out /* 39 bytes */);
void vhdx_guid_random(uint8_t *g);
bool vhdx_guid_parse(const char *str, uint8_t *g);   /* "{...}" or bare */
bool vhdx_guid_is_zero(const uint8_t *g);
int vhdx_locator_text(const uint8_t *loc, uint64_t off, uint64_t bytes, char **out, uint64_t at,
                      uint32_t i, const char *what, vd_error *err);
/* Read the two headers of `f`, choose the current one into s->hdr. */
int vhdx_read_headers(vd_file *f, struct vhdx_state *s, vd_error *err);
int vhdx_read_regions(vd_image *img, struct vhdx_state *s, vd_error *err);
int vhdx_read_metadata(vd_image *img, struct vhdx_state *s, vd_error *err);
/* Parent locators: "{guid}" lower case (out: 40 bytes); a path with
 * backslashes and ".\\" in front (malloc'd); the item from key/value
 * pairs and its length in *len (-EINVAL: not UTF-8, or does not fit in
 * `cap`). */
void vhdx_linkage_format(const uint8_t *g, char *out);
char *vhdx_win_relpath(const char *path);
int vhdx_locator_build(const char *const (*kv)[2], unsigned n, uint8_t *out, size_t cap,
                       uint32_t *len, vd_error *err);
/* Write a new current header (sequence + 1) into the other slot, with the
 * given GUIDs (NULL = keep). */
int vhdx_write_header(vd_image *img, struct vhdx_state *s, const uint8_t *file_guid,
                      const uint8_t *data_guid, const uint8_t *log_guid, vd_error *err);

/* log.c */
/* Read [off, off+len) of the file as the replayed log says it is. */
int vhdx_file_read(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err);
/* Replay the log if the header names one: into the file when writable,
 * else into s->patches. */
int vhdx_log_replay(vd_image *img, struct vhdx_state *s, vd_error *err);
/* Write the 4 KiB metadata sectors listed through the log: entries, flush,
 * then in place, flush. */
int vhdx_log_write(vd_image *img, struct vhdx_state *s, const uint64_t *offs,
                   uint8_t *const *sectors, size_t n, vd_error *err);
/* Mark the log empty (header LogGuid = 0) once a flush has applied it. */
int vhdx_log_close(vd_image *img, struct vhdx_state *s, vd_error *err);
void vhdx_patches_free(struct vhdx_state *s);

/* bat.c */
int vhdx_read_bat(vd_image *img, struct vhdx_state *s, vd_error *err);
int vhdx_bat_flush(vd_image *img, struct vhdx_state *s, vd_error *err);
int vhdx_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err);
int vhdx_pwrite(vd_image *img, const void *buf, size_t len, uint64_t off, vd_error *err);
int vhdx_pwrite_zeroes(vd_image *img, uint64_t off, uint64_t len, unsigned flags,
                       vd_error *err);
int vhdx_discard(vd_image *img, uint64_t off, uint64_t len, vd_error *err);
int vhdx_block_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                      vd_error *err);
/* A partially present piece [off, off+n) of block `blk` (at `in` in it):
 * `fn` per run of sectors that are present in this layer or not, with the
 * run's place in the file. */
typedef int (*vhdx_run_fn)(vd_image *img, uint64_t off, uint64_t n, bool present,
                           uint64_t file_off, void *ctx, vd_error *err);
int vhdx_partial_runs(vd_image *img, struct vhdx_state *s, uint64_t off, uint64_t n,
                      uint64_t blk, uint64_t in, vhdx_run_fn fn, void *ctx, vd_error *err);
/* Before the first change of guest data: new FileWriteGuid and
 * DataWriteGuid in the header (once per session). */
int vhdx_begin_write(vd_image *img, struct vhdx_state *s, vd_error *err);
/* Index in the BAT of payload block `b` (sector bitmap entries interleave). */
static inline uint64_t vhdx_bat_index(const struct vhdx_state *s, uint64_t b)
{
    return b + b / s->chunk_ratio;
}

/* inplace.c: the driver's in-place operations (vd-driver.h) */
int vhdx_resize(vd_image *img, uint64_t size, vd_error *err);
int vhdx_set_backing(vd_image *img, const char *file, const char *fmt, vd_error *err);
int vhdx_make_empty(vd_image *img, vd_error *err);
int vhdx_prepare_commit(vd_image *img, vd_image *base, vd_error *err);

/* create.c */
int vhdx_create(const struct vd_create_args *a, vd_error *err);

#endif
