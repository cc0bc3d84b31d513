/* ovf.h - the appliance model ovatool reads from and writes to OVF
 * descriptors, manifests and certificates. */
#ifndef OVATOOL_OVF_H
#define OVATOOL_OVF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A descriptor larger than this is refused before parsing. */
#define OVF_MAX_DESCRIPTOR (16u << 20)
/* A declared disk capacity above this (1 EiB) is taken for a mistake or an
 * attack, never for a disk to create. */
#define OVF_MAX_CAPACITY (1ull << 60)
#define OVF_MAX_ITEMS 1024

struct ovf_file {
    char *id, *href;
    uint64_t size;            /* 0 when not stated */
    char *compression;        /* NULL or "gzip" */
    uint64_t chunk_size;      /* 0 = not chunked */
};

/* The format URI of an ISO 9660 image (a CD-ROM's medium), as VirtualBox writes it. */
#define OVF_ISO_FORMAT "http://www.ecma-international.org/publications/standards/Ecma-119.htm"

struct ovf_controller {
    char *instance_id;
    int resource_type;        /* 5 IDE, 6 SCSI (parallel), 20 SATA/other */
    char *subtype;            /* lsilogic, AHCI, PIIX4, ... */
};

struct ovf_disk {
    char *id, *file_ref;
    uint64_t capacity;        /* bytes */
    uint64_t populated;       /* bytes, 0 unknown */
    char *format;             /* format URI */
    char *parent;             /* controller instance id */
    int address;              /* AddressOnParent, -1 unknown */
    bool attached;            /* a hardware item of the chosen configuration uses it */
    bool cdrom;               /* a CD/DVD item attaches it (an ISO image, copied as is) */
    char *capacity_ref;       /* "${key}": a ProductSection property gives it */
    uint64_t capacity_unit;
    char *capacity_error;     /* the capacity is unreadable or absurd: why (import refuses) */
    char *capacity_units;     /* ovf:capacityAllocationUnits as written, or NULL */
};

/* Every hardware item of the chosen configuration, for lint. */
struct ovf_item {
    int type;                 /* rasd:ResourceType */
    char *subtype;            /* rasd:ResourceSubType or NULL */
    char *name;               /* rasd:ElementName or NULL */
};

struct ovf_nic {
    char *network;
    char *model;              /* ResourceSubType: E1000, PCNet32, VmxNet3, virtio */
};

struct ovf_appliance {
    int version;              /* 1 or 2 (envelope namespace) */
    char *name;
    char *os_id;              /* OperatingSystemSection ovf:id (CIM number) */
    char *os_desc;
    char *os_type;            /* vbox:OSType or vmw:osType */
    char *flavor;             /* "virtualbox", "vmware" or "ovf" */
    unsigned cpus;
    uint64_t memory_mib;
    bool has_cpus, has_memory;  /* the hardware section states them */
    char *product, *vendor, *product_version;
    bool has_eula;
    char *firmware;           /* "efi" or NULL */
    int firmware_src;         /* where EFI was stated: 1 vmw:Config, 2 vbox:Machine */
    char *system_type;        /* vssd:VirtualSystemType ("vmx-13", "virtualbox-2.2") */
    bool has_vbox_machine;    /* a vbox:Machine section (VirtualBox reads it first) */
    struct ovf_item *items; size_t n_items;
    char *configuration;      /* DeploymentOption chosen (the default), or NULL */
    struct ovf_file *files; size_t n_files;
    struct ovf_disk *disks; size_t n_disks;
    struct ovf_controller *ctrls; size_t n_ctrls;
    struct ovf_nic *nics; size_t n_nics;
    char **networks; size_t n_networks;
};

/* Parse a descriptor held in memory.  `name` names it in errors.  Returns 0
 * or -1 with a one-line message in `err`. */
int ovf_parse(const char *buf, size_t len, const char *name, struct ovf_appliance *a,
              char *err, size_t errlen);
void ovf_free(struct ovf_appliance *a);
const struct ovf_file *ovf_find_file(const struct ovf_appliance *a, const char *id);
/* A file reference we follow: a plain name inside the appliance (no folders,
 * no "..", nothing absolute, no URL). */
bool ovf_href_is_plain(const char *href);
/* Is the disk part of the VM as configured?  (When no hardware item names
 * any disk, all are.) */
/* Is `d` an optical medium (attached by a CD/DVD item, or an ISO 9660
 * format URI)?  Such a file is attached read-only, never converted. */
bool ovf_disk_is_cdrom(const struct ovf_disk *d);
bool ovf_disk_in_use(const struct ovf_appliance *a, const struct ovf_disk *d);
const struct ovf_controller *ovf_find_ctrl(const struct ovf_appliance *a, const char *id);

/* Write a descriptor (OVF 1.0 or 2.0) for `a`; returns a malloc'd string. */
char *ovf_write(const struct ovf_appliance *a, int version, const char *target);

/* ---- manifests and certificates (manifest.c) ---- */

enum ovf_digest { OVF_SHA1, OVF_SHA256, OVF_SHA512 };

struct mf_entry {
    enum ovf_digest alg;
    char *file;
    char hex[129];
};
struct manifest {
    struct mf_entry *v;
    size_t n;
};

/* Parse "SHA256(file)= hex" and "SHA256 (file) = hex" lines. */
int mf_parse(const char *buf, size_t len, const char *name, struct manifest *m,
             char *err, size_t errlen);
void mf_free(struct manifest *m);
const struct mf_entry *mf_find(const struct manifest *m, const char *file);

/* Streaming digest: one per file. */
struct digest_ctx;
struct digest_ctx *digest_new(enum ovf_digest alg);
void digest_update(struct digest_ctx *d, const void *buf, size_t len);
void digest_final_hex(struct digest_ctx *d, char hex[129]);   /* frees d */
const char *digest_name(enum ovf_digest alg);

struct cert_result {
    bool present, signature_ok, chain_trusted, chain_checked;
    char signer[512];
    char detail[512];
};
/* Check a .cert (signature line + PEM certificate) over the manifest bytes;
 * `cafile` may be NULL (chain not checked). */
int cert_verify(const char *cert, size_t cert_len, const char *mf, size_t mf_len,
                const char *mf_name, const char *cafile, struct cert_result *res);
/* Sign manifest bytes with KEY.pem; returns the .cert text (malloc'd). */
char *cert_sign(const char *mf, size_t mf_len, const char *mf_name, enum ovf_digest alg,
                const char *keyfile, const char *certfile, char *err, size_t errlen);

#endif
