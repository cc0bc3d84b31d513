/* parallels.h - what parallels.c (one .hds/.hdd image file) and
 * parallels-xml.c (the .hdd bundle folder with DiskDescriptor.xml) share. */
#ifndef VD_PARALLELS_H
#define VD_PARALLELS_H

#include "vd-driver.h"

/* One expanding ("Compressed" in DiskDescriptor.xml) image file. */
struct parallels_file {
    vd_file *file;
    uint64_t size;            /* bytes of guest data it covers */
    uint64_t cluster_size;    /* bytes */
    uint64_t unit;            /* bytes per BAT unit: 512 (v1) or a cluster (v2) */
    uint32_t bat_entries;
    uint32_t *bat;            /* host order */
    uint64_t file_size;
    uint64_t next_alloc;      /* where the next new cluster goes */
    uint32_t version, heads, cylinders, inuse, data_off, flags;
    uint64_t ext_off;
    bool ext_magic;           /* "WithouFreSpacExt" (v2) */
};

#define PARALLELS_INUSE_MAGIC 0x746f6e59u   /* "Ynot": not closed cleanly */

/* Read and check the header and BAT of `f` (not taken over).  `name` is for
 * messages. */
int parallels_file_load(struct parallels_file *pf, vd_file *f, vd_error *err);
void parallels_file_free(struct parallels_file *pf);
/* File offset holding guest byte `off`, or 0 when its cluster is not
 * allocated; *avail gets the bytes left to the end of that cluster. */
uint64_t parallels_file_lookup(const struct parallels_file *pf, uint64_t off, uint64_t *avail);

/* Bundle (DiskDescriptor.xml). */
struct parallels_bundle;
bool parallels_xml_probe(const uint8_t *head, size_t len);
/* Open the bundle at its current state, or at `snapshot` (a Shot GUID). */
int parallels_bundle_open(vd_image *img, const char *snapshot, struct parallels_bundle **out,
                          vd_error *err);
int parallels_bundle_list_snapshots(struct parallels_bundle *b, vd_snapshot_info *out,
                                    size_t max);
void parallels_bundle_free(struct parallels_bundle *b);
int parallels_bundle_pread(vd_image *img, struct parallels_bundle *b, void *buf, size_t len,
                           uint64_t off, vd_error *err);
int parallels_bundle_block_status(vd_image *img, struct parallels_bundle *b, uint64_t off,
                                  uint64_t len, vd_extents *ext, vd_error *err);
/* Bytes the bundle's files occupy on the host. */
uint64_t parallels_bundle_disk_size(struct parallels_bundle *b);
void parallels_bundle_details(struct parallels_bundle *b, vd_kv_fn fn, void *ctx);

#endif /* VD_PARALLELS_H */
