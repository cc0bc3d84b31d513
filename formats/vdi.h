/* vdi.h - VDI layout and driver state shared by vdi.c (open, I/O, create)
 * and vdi-inplace.c (resize, parent link, emptying). */
#ifndef VD_VDI_H
#define VD_VDI_H

#include "vd-driver.h"

#define VDI_SIGNATURE_TEXT "<<< Oracle VM VirtualBox Disk Image >>>\n"
#define VDI_MAGIC 0xbeda107fu
#define VDI_VERSION_1_1 0x00010001u
#define VDI_PREHEADER_SIZE 72u
#define VDI_HEADER1_SIZE 384u        /* v1.0: no LCHS geometry */
#define VDI_HEADER1PLUS_SIZE 400u    /* v1.1 */
#define VDI_HEADER0_SIZE 348u
#define VDI_BLOCK_FREE 0xffffffffu
#define VDI_BLOCK_ZERO 0xfffffffeu
#define VDI_DEFAULT_BLOCK (1u << 20)
#define VDI_MAX_BLOCK (64u << 20)    /* a write allocates one block in memory */
#define VDI_MAX_SCAN 4096            /* folder entries looked at for a parent */

enum { VDI_TYPE_NORMAL = 1, VDI_TYPE_FIXED = 2, VDI_TYPE_UNDO = 3, VDI_TYPE_DIFF = 4 };

/* Field offsets from the start of the file (version 1.x). */
enum {
    VDI_O_TEXT = 0, VDI_O_MAGIC = 64, VDI_O_VERSION = 68,
    VDI_O_HDR_SIZE = 72, VDI_O_TYPE = 76, VDI_O_FLAGS = 80, VDI_O_COMMENT = 84,
    VDI_O_OFF_BLOCKS = 340, VDI_O_OFF_DATA = 344,
    VDI_O_CYLS = 348, VDI_O_HEADS = 352, VDI_O_SECTORS = 356, VDI_O_SECTOR_SIZE = 360,
    VDI_O_DISK_SIZE = 368, VDI_O_BLOCK_SIZE = 376, VDI_O_BLOCK_EXTRA = 380,
    VDI_O_BLOCKS = 384, VDI_O_ALLOCATED = 388,
    VDI_O_UUID_CREATE = 392, VDI_O_UUID_MODIFY = 408, VDI_O_UUID_LINK = 424,
    VDI_O_UUID_PARENT = 440,
    VDI_O_LCHS = 456,   /* cylinders, heads, sectors, sector size: 4 x u32 */
};
/* Version 0 header, from the start of the file. */
enum {
    VDI0_O_TYPE = 72, VDI0_O_DISK_SIZE = 352, VDI0_O_BLOCK_SIZE = 360,
    VDI0_O_BLOCKS = 364, VDI0_O_ALLOCATED = 368, VDI0_O_UUID_CREATE = 372,
    VDI0_O_UUID_MODIFY = 388, VDI0_O_UUID_LINK = 404,
};

struct vdi_state {
    uint32_t version, type;
    uint64_t off_blocks, off_data;
    uint32_t block_size, block_extra, n_blocks, n_alloc;
    uint64_t disk_size, file_size;
    uint64_t alloc_at;             /* block map offset of cBlocksAllocated */
    uint32_t next_index;           /* data index of the next new block */
    uint8_t uuid_create[16], uuid_modify[16], uuid_link[16], uuid_parent[16];
    uint32_t *bmap;
    /* Blocks given data since the last flush: their map entries (and the
     * allocated count) are written at the next flush, after the data is
     * synced, so that after a power loss no entry points at a block that
     * did not reach the disk. */
    uint32_t *unsynced;
    size_t n_unsynced, cap_unsynced;
    /* A new block is assembled here (block_extra + block_size bytes,
     * 4096-aligned for O_DIRECT), under the image's write lock.  Kept: a
     * fresh 1 MiB buffer per block was an mmap, 256 page faults and a
     * munmap each, and made raw -> vdi 4-17x slower. */
    uint8_t *blockbuf;
};

/* vdi-inplace.c */
int vdi_resize(vd_image *img, uint64_t size, vd_error *err);
int vdi_set_backing(vd_image *img, const char *file, const char *fmt, vd_error *err);
int vdi_make_empty(vd_image *img, vd_error *err);
int vdi_check_compaction(vd_image *img, struct vdi_state *s, unsigned flags,
                         vd_check_result *res, vd_error *err);
/* Move the first `nb` blocks' data below slot `keep` (see vdi-inplace.c). */
int vdi_compact(vd_image *img, struct vdi_state *s, uint64_t nb, uint32_t keep,
                vd_error *err);

#endif
