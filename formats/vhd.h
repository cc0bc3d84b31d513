/* vhd.h - shared between the VHD driver's open/I/O half (vhd.c) and its
 * create half (vhd-create.c).  On-disk layout (all fields big-endian), from
 * Microsoft's "Virtual Hard Disk Image Format Specification" v1.0:
 *
 *   footer (512 bytes): at the end of every VHD, and copied at offset 0 of
 *     dynamic and differencing disks;
 *   dynamic header (1024 bytes): at the footer's data offset;
 *   BAT: one 32-bit sector number per block, 0xffffffff = not allocated;
 *   block: a sector bitmap (one bit per 512-byte sector, padded to a whole
 *     sector) followed by the block's data. */
#ifndef VD_VHD_H
#define VD_VHD_H

#include "vd-driver.h"

#define VHD_SECTOR 512u
#define VHD_FOOTER_SIZE 512u
#define VHD_DYNHDR_SIZE 1024u

/* footer field offsets */
#define VHD_F_COOKIE 0           /* "conectix" */
#define VHD_F_FEATURES 8
#define VHD_F_VERSION 12
#define VHD_F_DATA_OFFSET 16     /* dynamic header, or ~0 for fixed */
#define VHD_F_TIMESTAMP 24       /* seconds since 2000-01-01 UTC */
#define VHD_F_CREATOR_APP 28
#define VHD_F_CREATOR_VER 32
#define VHD_F_CREATOR_OS 36
#define VHD_F_ORIG_SIZE 40
#define VHD_F_CUR_SIZE 48
#define VHD_F_CYLINDERS 56
#define VHD_F_HEADS 58
#define VHD_F_SPT 59
#define VHD_F_TYPE 60
#define VHD_F_CHECKSUM 64
#define VHD_F_UUID 68
#define VHD_F_SAVED_STATE 84

/* dynamic header field offsets */
#define VHD_D_COOKIE 0           /* "cxsparse" */
#define VHD_D_DATA_OFFSET 8
#define VHD_D_TABLE_OFFSET 16
#define VHD_D_VERSION 24
#define VHD_D_MAX_ENTRIES 28
#define VHD_D_BLOCK_SIZE 32
#define VHD_D_CHECKSUM 36
#define VHD_D_PARENT_UUID 40
#define VHD_D_PARENT_TIME 56
#define VHD_D_PARENT_NAME 64     /* 512 bytes UTF-16BE */
#define VHD_D_LOCATORS 576       /* 8 entries of 24 bytes */
#define VHD_LOCATOR_SIZE 24
#define VHD_LOCATORS 8

#define VHD_TYPE_FIXED 2
#define VHD_TYPE_DYNAMIC 3
#define VHD_TYPE_DIFF 4

#define VHD_BAT_UNUSED 0xffffffffu
/* 2040 GiB: the largest disk the format's tools accept (qemu, Hyper-V). */
#define VHD_MAX_SECTORS 0xff000000ull
/* 65535 cylinders * 16 heads * 255 sectors: the largest CHS geometry. */
#define VHD_MAX_GEOMETRY (65535ull * 16 * 255)
/* 2000-01-01 00:00:00 UTC in Unix time. */
#define VHD_EPOCH 946684800ll

/* Driver state (vhd.c; vhd-inplace.c changes the parent link). */
struct vhd_state {
    uint8_t footer[VHD_FOOTER_SIZE];
    uint8_t dynhdr[VHD_DYNHDR_SIZE];
    uint32_t type;
    uint64_t file_size;
    uint64_t bat_off;
    uint32_t bat_entries;
    uint32_t block_size;
    uint32_t bitmap_size;      /* bytes, whole sectors */
    uint32_t *bat;             /* host order */
    uint64_t next_free;        /* where the next block (then the footer) goes */
    bool footer_from_head;     /* the trailing footer was bad: rewrite it */
    /* The copy at offset 0 (dynamic, differencing) differs from the footer
     * at the end: a resize stopped between the two writes (the end one is
     * written first and rules here, as for libvhdi, VirtualBox and
     * Hyper-V; qemu reads the copy).  A read-write open's flush and
     * `check -r leaks` write the copy again. */
    bool head_stale;
    /* Blocks allocated since the last flush: their BAT entries are written
     * at the next flush, after the blocks and the moved footer are synced,
     * so that after a power loss no entry points past the end of the file. */
    uint32_t *unsynced;
    size_t n_unsynced, cap_unsynced;
};

uint32_t vhd_checksum(const uint8_t *buf, size_t len, size_t csum_off);
void vhd_geometry(uint64_t sectors, uint16_t *cyl, uint8_t *heads, uint8_t *spt);
int vhd_create(const struct vd_create_args *a, vd_error *err);
bool vhd_footer_valid(const uint8_t *footer);
/* Read a file's valid footer: the one at its end, else the copy at offset
 * 0 (a dynamic disk whose end was torn).  False when neither is valid. */
bool vhd_read_any_footer(vd_file *f, uint8_t footer[VHD_FOOTER_SIZE]);
/* vhd-parent.c: set img->backing_file from the dynamic header's locators. */
int vhd_find_parent(vd_image *img, const uint8_t *dynhdr, uint64_t file_size, vd_error *err);
/* vhd-parent.c: the parent's unique id must equal the stored parent UUID. */
int vhd_check_parent(vd_image *img, const uint8_t *dynhdr, uint64_t dynhdr_off, vd_error *err);

/* vhd-create.c */
int vhd_put_parent_name(uint8_t *dh, const char *path, vd_error *err);
/* Parent locator `i` of the dynamic header `dh`: `path` as UTF-16LE into
 * data[cap] (2 * strlen(path) is room), to be written at file offset `at`;
 * *len is the text's length and *space the sectors' bytes it takes. */
int vhd_fill_locator(uint8_t *dh, int i, uint32_t code, const char *path, uint8_t *data,
                     size_t cap, uint64_t at, size_t *len, uint64_t *space, vd_error *err);
char *vhd_windows_path(const char *p, bool relative);
/* The virtual size a footer gives (qemu's rule, vhd.c). */
uint64_t vhd_guest_size(const uint8_t *footer);
/* vhd-resize.c */
int vhd_resize(vd_image *img, uint64_t size, vd_error *err);
/* What an interrupted resize leaves (a stale footer copy at offset 0, BAT
 * entries past the end), counted as leaks; repaired with
 * VD_CHECK_REPAIR_LEAKS. */
int vhd_check_leftovers(vd_image *img, struct vhd_state *s, unsigned flags,
                        vd_check_result *res, vd_error *err);
/* vhd.c: a block appended (BAT entry at the next flush); sectors of a
 * differencing block marked present */
int vhd_alloc_block(vd_image *img, struct vhd_state *s, uint32_t blk, vd_error *err);
int vhd_set_bits(vd_image *img, struct vhd_state *s, uint32_t blk, uint32_t in_blk,
                 uint64_t n, vd_error *err);
/* vhd-inplace.c */
int vhd_set_backing(vd_image *img, const char *file, const char *fmt, vd_error *err);
int vhd_make_empty(vd_image *img, vd_error *err);

#endif
