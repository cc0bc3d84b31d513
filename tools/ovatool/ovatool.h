/* ovatool.h - shared declarations of the ovatool command. */
#ifndef OVATOOL_H
#define OVATOOL_H

#include "ovf.h"
#include "tool.h"
#include "vdisk.h"

#include <stdbool.h>
#include <stdio.h>

/* disk.c */
struct disk_stats {
    uint64_t capacity;    /* virtual size */
    uint64_t populated;   /* bytes not known to be zero (OVF populatedSize) */
};
/* Convert src to dst (format fmt, create options) via a temp name + rename;
 * dst's virtual size is the source's, or `min_size` when that is larger (an
 * OVF capacity larger than its file); `stats` (may be NULL) receives what the
 * copy saw of the source.  `trusted_refs` opens the source with
 * allow_host_paths: only for chains ovatool linked itself from a VM's own
 * media registry (vmfolder.c), never for references read from an appliance. */
/* A source read in place: the `len` bytes at `off` of src (an .ova's disk
 * member), named `name` in messages (vd_open_opts.window_*). */
struct disk_window {
    uint64_t off, len;
    const char *name;
};
/* `win`: NULL, or src is read through that window. */
int disk_convert(const char *src, const char *src_fmt, const struct disk_window *win,
                 const char *dst, const char *fmt,
                 const char *options, uint64_t min_size, bool progress, bool trusted_refs,
                 struct disk_stats *stats, char *err, size_t errlen);
/* Is `out` (through any symbolic or hard link) the disk `src` or a file it
 * reads (an extent, a backing file)?  The library's own test
 * (vd_image_uses_file), made before anything is written: `out` must not
 * be written then.  False when `out` does not exist or `src` does not
 * open (its conversion then says why). */
bool disk_is_input(const char *src, const char *out);

/* libvirt.c: domain XML and a qemu command line for imported disks. */
struct import_disk {
    const struct ovf_disk *disk;
    char *path;          /* absolute path of the converted disk */
    const char *format;
    bool cdrom;          /* an ISO attached read-only as a CD-ROM */
};
/* guestdrv.c: the disk drivers a guest on a disk has (its modules.builtin
 * and the modules in its initramfs, from its ext2/3/4 file systems). */
enum gd_drv { GD_VIRTIO_BLK, GD_VIRTIO_SCSI, GD_VIRTIO_PCI, GD_AHCI, GD_ATA_PIIX, GD_SYM53C8XX,
              GD_MPTSAS, GD_VMW_PVSCSI, GD_NVME, GD_SD_MOD, GD_XEN_BLKFRONT, GD_N };
struct guest_drivers {
    bool found;                  /* a Linux modules folder or initramfs was seen */
    bool builtin_known;          /* a modules.builtin was read */
    unsigned builtin, initrd;    /* bit 1u << enum gd_drv: built in / in the initramfs */
    char builtin_path[700], initrd_path[700];   /* "partition N:/path" */
    char note[1000];             /* what could not be read, or "" */
};
/* 0 when the disk was read (g->found says whether a Linux guest was seen);
 * -1 when the disk cannot be opened (g->note says why). */
int guest_drivers_scan(const char *disk, const char *format, struct guest_drivers *g);
const char *guest_driver_name(enum gd_drv d);
/* The modules an initramfs image (b, n bytes) holds, into g->initrd (a
 * modules.builtin inside it into g->builtin); what could not be read goes
 * to g->note (naming g->initrd_path).  Bounded; any bytes are safe. */
void guest_scan_initramfs(const unsigned char *b, size_t n, struct guest_drivers *g);

/* How import attaches the disks: as the OVF says, or all on virtio-blk or
 * virtio-scsi (CD-ROMs keep their bus); NICs as the OVF says or virtio. */
enum disk_mode { DM_OVF, DM_VIRTIO_BLK, DM_VIRTIO_SCSI };
struct lv_hw { enum disk_mode disks; bool virtio_nic; bool xen_pv_disks; };
char *libvirt_domain_xml(const struct ovf_appliance *a, const struct import_disk *d,
                         size_t n, const struct lv_hw *hw);
char *qemu_command_line(const struct ovf_appliance *a, const struct import_disk *d,
                        size_t n, const struct lv_hw *hw);
/* The same VM as a libvirt Xen (libxl) HVM domain. */
char *xen_domain_xml(const struct ovf_appliance *a, const struct import_disk *d, size_t n,
                     const struct lv_hw *hw);
/* The guest driver the disk's OVF controller needs, `bus` its name. */
enum gd_drv lv_ovf_driver(const struct ovf_appliance *a, const struct import_disk *d,
                          const char **bus);
/* vdboot's --disk-bus for the disk as the domain attaches it. */
const char *lv_vdboot_bus(const struct ovf_appliance *a, const struct import_disk *d,
                          const struct lv_hw *hw);

/* import.c / export.c / verify */
struct import_opts {
    const char *format;     /* output disk format */
    const char *outdir;
    bool no_verify, progress, virtio;
    bool json;              /* the result as one JSON object on stdout */
    bool ovf_bus;           /* keep the OVF's controllers, whatever the guest has */
    bool boot_check;        /* boot the imported VM with vdboot before success */
    const char *hypervisor; /* "kvm" (default) or "xen": also a Xen domain */
    bool strict;            /* a missing manifest is an error, not a warning */
    const char *cafile;
};
int ova_import(const char *path, const struct import_opts *o);
/* importout.c: the end of both kinds of import.  With `failed` NULL (every
 * disk converted): choose the disk bus from the guest's drivers, write
 * NAME.xml and NAME.sh (NAME-xen.xml with --hypervisor xen), boot-check, and
 * report (text or --json).  With `failed` (why, "" when already said), or
 * when a file could not be written: one line, and the converted disks are
 * removed; a failed boot check keeps them.  Frees the disks' paths; returns
 * the exit code, 0 or 1. */
int import_conclude(const struct ovf_appliance *a, struct import_disk *d, size_t nd,
                    const char *name, const struct import_opts *o, const char *failed);
/* vmfolder.c: import a VMware .vmx or a VirtualBox .vbox VM folder. */
int vm_folder_import(const char *path, const struct import_opts *o);
/* Make file `f` whole in `dir` (join chunks, inflate gzip within limits);
 * returns the path to read (malloc'd) or NULL with a message. */
char *appliance_prepare_file(const char *dir, const struct ovf_file *f, uint64_t capacity,
                             char *err, size_t errlen);
/* A name for files and domains: the VM's when usable, else from `path`'s
 * file name; false when the VM's own name was replaced. */
bool safe_vm_name(const char *vm, const char *path, char *out, size_t len);

/* convert.c */
/* What export and convert both write: the OVA, for an importer, its
 * manifest's digest and its optional signature. */
struct pack_opts {
    const char *out, *target, *sign_key, *sign_cert;
    enum ovf_digest digest;
    bool progress;
};

struct convert_opts {
    struct pack_opts pack;
    bool no_verify;
};
int ova_convert(const char *path, const struct convert_opts *o);

struct export_opts {
    struct pack_opts pack;
    const char *name, *os_type;
    const char **disks; size_t n_disks;
    unsigned cpus;
    uint64_t memory_mib;
    int ovf_version;
};
int ova_export(const struct export_opts *o);
/* Where ova_pack takes a file's bytes from: the file at `path`, or (path
 * NULL) the `len` bytes at `off` of the open descriptor `fd` (a member of
 * the .ova being converted, copied from where it lies; `name` says which
 * in messages). */
struct pack_src {
    const char *path;
    int fd;
    uint64_t off, len;
    const char *name;
};
/* Pack descriptor `desc` and the files of `a` (a->files[i] read from
 * src[i], once: its digest is taken as it is written) as OUT in ustar,
 * descriptor first, then the files, the manifest STEM.mf (digest dg) and,
 * with `key`, the certificate STEM.cert. */
int ova_pack(const char *out, const char *stem, const char *desc, const struct ovf_appliance *a,
             const struct pack_src *src, enum ovf_digest dg, const char *key,
             const char *certfile, char *err, size_t errlen);

/* Appliance reading shared by info/verify/import (appliance.c). */
struct appliance_file {
    char *name;
    char sha1[129], sha256[129], sha512[129];   /* "" when not computed */
    uint64_t size;
    bool extracted;     /* written to the extraction folder */
    /* APP_WINDOW_DISKS: a disk left in the archive, its `size` bytes at
     * `data_off` of the .ova (a plain ustar member), read there in place. */
    bool windowed;
    uint64_t data_off;
    /* A windowed member is not digested while the archive is read: the
     * manifest's entry for it is kept here by appliance_verify_manifest
     * (with defer_windowed), for import to check (want_hex "" when none). */
    enum ovf_digest want_alg;
    char want_hex[129];
    bool verified;
};
struct appliance {
    struct ovf_appliance ovf;
    char *ovf_name;
    char *mf_text; size_t mf_len; char *mf_name;
    char *cert_text; size_t cert_len;
    struct appliance_file *files; size_t n_files;
    bool is_ova;
    size_t n_missing;       /* referenced files absent (.ovf without its files) */
    size_t n_unsafe;        /* references that leave the appliance (not followed) */
    char **diags; size_t n_diags;   /* every warning found while reading, one line each */
    /* Where the members can be read again (appliance.c: digests the
     * manifest names that were not computed while reading). */
    char *src_path, *extract_dir;
    unsigned mf_algs;       /* 1 << OVF_SHA*: algorithms a manifest read so far uses */
    int fd;                 /* the .ova, open (read-only) until appliance_free, or -1 */
    bool defer_windowed;    /* set by the caller: verify leaves windowed members' digests
                               to it (want_alg, want_hex) */
    uint64_t tar_end;       /* .ova: where the header after the last member read lies */
};
/* Record a warning about the appliance (shown by info, in text and JSON). */
void appliance_diag(struct appliance *ap, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The tar archive `path` opened for reading (libarchive), or NULL with
 * "PATH: why" in `err` (when not NULL). */
struct archive;
struct archive *ova_open_tar(const char *path, char *err, size_t errlen);
/* Read an .ova (tar) or an .ovf with its folder; digests of every member
 * (those a manifest read before it names, else SHA256; the verification
 * computes any other one it needs from a second read).  When `extract_dir`
 * is set, every member is also written there, except, with
 * APP_WINDOW_DISKS, the disks an image can be read from in place: an .ova
 * member that the descriptor (read before it) references uncompressed and
 * unchunked, not as a CD-ROM's medium, stored as plain ustar data
 * (appliance_file.windowed). */
#define APP_WINDOW_DISKS 1u
/* With APP_WINDOW_DISKS: a CD-ROM's ISO member too (convert copies it
 * from where it lies; import extracts it to keep it as a file). */
#define APP_WINDOW_MEDIA 2u
int appliance_read(const char *path, const char *extract_dir, unsigned flags,
                   struct appliance *ap, char *err, size_t errlen);
void appliance_free(struct appliance *ap);
/* The member read in place for file reference `href`, or NULL (extracted). */
struct appliance_file *appliance_windowed(struct appliance *ap, const char *href);
/* A name (malloc'd) that opens the very .ova the members were read from:
 * what vd_open reads a windowed member through. */
char *appliance_fd_path(const struct appliance *ap);
/* Copy windowed member `af` out of the .ova into `dir`, for an image that
 * names other members (a VMDK descriptor and its extents, extracted beside
 * it): read in place, it could not open them.  The path (malloc'd) or NULL
 * with a message naming the .ova, the member and the offset. */
char *appliance_extract_member(const struct appliance *ap, const struct appliance_file *af,
                               const char *dir, char *err, size_t errlen);
/* Digest `alg` of a windowed member, read in place: 0, or -1 on a short read. */
int appliance_digest_window(const struct appliance *ap, const struct appliance_file *f,
                            enum ovf_digest alg, char hex[129]);
/* The one line for a member whose `alg` digest (hex `have`) is not the
 * manifest's (`want`), for verify, import and convert alike. */
void appliance_digest_mismatch(const struct appliance *ap, enum ovf_digest alg,
                               const char *member, const char *want, const char *have,
                               char *err, size_t errlen);
/* 0 when file reference `href` is in the appliance (as a member or its
 * first chunk); else -1 with one line naming the .ova, the member and the
 * offset the archive's members end at. */
int appliance_member_present(const struct appliance *ap, const char *href, char *err,
                             size_t errlen);
/* 0 when windowed member `af` is no larger than reference `f` declares
 * (ovf:size, when given); else -1 with one line naming the .ova, the member,
 * its offset and both sizes: a member that swallows what follows it. */
int appliance_member_fits(const struct appliance *ap, const struct appliance_file *af,
                          const struct ovf_file *f, char *err, size_t errlen);
/* Compare member digests with the manifest: 0 all good; -1 with a message. */
int appliance_verify_manifest(struct appliance *ap, char *err, size_t errlen,
                              int *checked);

/* lint.c: problems of an appliance for a target's importer; 0 clean, 1 not. */
int ova_lint(const char *path, const char *target, bool json);
/* 0 when the first bytes of a file (at least its header and embedded
 * descriptor) are those of a streamOptimized VMDK (version 3, deflated
 * grains with markers); else -1 and why ("is ...", a phrase). */
int vmdk_stream_check(const unsigned char *head, size_t n, char *why, size_t whylen);

/* ostable.c: guest operating systems by vdisk name, CIM OSType number,
 * VMware guestOS id, VirtualBox OSType and libosinfo id. */
struct os_entry {
    const char *name, *desc;
    int cim;
    const char *vmware, *vbox, *libosinfo;
    bool windows;
};
const struct os_entry *os_table(size_t *n);
/* vdisk's name, a short alias (debian, windows10...) or a vendor id; NULL if unknown. */
const struct os_entry *os_by_name(const char *name);
/* What an OperatingSystemSection describes (any argument may be NULL). */
const struct os_entry *os_from_ovf(const char *cim_id, const char *os_type, const char *desc);
void os_list_names(FILE *f);

/* strbuf.c: a growable string (s is NULL until the first append). */
struct sbuf {
    char *s;
    size_t n, cap;
};
void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* libvirt.c: escape text for XML attributes/content into a static-size buffer. */
void xml_escape(const char *in, char *out, size_t outlen);

#endif
