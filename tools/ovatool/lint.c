/* lint.c - `ovatool lint APPLIANCE --target T`: everything in an appliance
 * that T's importer (VirtualBox, VMware Workstation/Fusion via ovftool,
 * vSphere/ESXi, a plain OVF 2 consumer) would refuse or silently change, one
 * line each with what to do.  It reads the archive itself (member order, tar
 * format, disk headers) and the descriptor through the shared parser. */
#include "ovatool.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LINT_HEAD (64u << 10)   /* bytes of each disk member kept for its header */

struct lint_member {
    char *name;
    uint64_t size;
    int format;                  /* libarchive's ARCHIVE_FORMAT_* */
    unsigned char *head; size_t head_len;
};

struct lint {
    const char *target;
    bool vmware, esxi, vbox, ovf2;
    size_t n;
    char **code, **msg;
};

static void lint_add(struct lint *L, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void lint_add(struct lint *L, const char *code, const char *fmt, ...)
{
    char m[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    char **c = realloc(L->code, (L->n + 1) * sizeof *c), **g;
    if (!c)
        return;
    L->code = c;
    if (!(g = realloc(L->msg, (L->n + 1) * sizeof *g)))
        return;
    L->msg = g;
    L->code[L->n] = strdup(code);
    L->msg[L->n] = strdup(m);
    L->n++;
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

int vmdk_stream_check(const unsigned char *b, size_t n, char *why, size_t whylen)
{
    if (n < 512 || memcmp(b, "KDMV", 4)) {
        snprintf(why, whylen, "is not a sparse VMDK (no KDMV header)");
        return -1;
    }
    uint32_t version = le32(b + 4), flags = le32(b + 8);
    uint64_t doff = le64(b + 28) * 512, dlen = le64(b + 36) * 512;
    unsigned comp = (unsigned)b[77] | (unsigned)b[78] << 8;
    bool stream = false;
    if (doff && doff < n) {
        size_t l = dlen && doff + dlen <= n ? (size_t)dlen : n - (size_t)doff;
        char *d = strndup((const char *)b + doff, l);
        stream = d && strstr(d, "createType=\"streamOptimized\"");
        free(d);
    }
    if (!stream)
        snprintf(why, whylen, "is a VMDK, but not streamOptimized (createType)");
    else if (version != 3)
        snprintf(why, whylen, "is a streamOptimized VMDK of header version %u; importers "
                 "expect version 3", version);
    else if (comp != 1 || !(flags & (1u << 16)) || !(flags & (1u << 17)))
        snprintf(why, whylen, "is a streamOptimized VMDK without deflate-compressed grains "
                 "and markers (compressAlgorithm %u, flags 0x%x)", comp, flags);
    else
        return 0;
    return -1;
}

/* The archive as stored: member order, tar flavour, disk headers. */
static int lint_read_tar(const char *path, struct lint_member **out, size_t *n, char *err,
                         size_t errlen)
{
    struct archive *ar = ova_open_tar(path, err, errlen);
    if (!ar)
        return -1;
    struct archive_entry *e;
    int r;
    *out = NULL;
    *n = 0;
    while ((r = archive_read_next_header(ar, &e)) == ARCHIVE_OK && *n < 4096) {
        struct lint_member *nv = realloc(*out, (*n + 1) * sizeof *nv);
        if (!nv)
            break;
        *out = nv;
        struct lint_member *m = &nv[(*n)++];
        memset(m, 0, sizeof *m);
        m->name = strdup(archive_entry_pathname(e) ? archive_entry_pathname(e) : "");
        m->size = (uint64_t)archive_entry_size(e);
        m->format = archive_format(ar);
        m->head = malloc(LINT_HEAD);
        la_ssize_t got;
        while (m->head && m->head_len < LINT_HEAD &&
               (got = archive_read_data(ar, m->head + m->head_len, LINT_HEAD - m->head_len)) > 0)
            m->head_len += (size_t)got;
    }
    if (r != ARCHIVE_EOF && r != ARCHIVE_OK) {
        snprintf(err, errlen, "%s: not a valid tar archive: %s", path, archive_error_string(ar));
        archive_read_free(ar);
        return -1;
    }
    archive_read_free(ar);
    return 0;
}

static bool lint_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a > b && !strcmp(s + a - b, suf);
}

static void lint_layout(struct lint *L, const struct appliance *ap, struct lint_member *m,
                        size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((m[i].format & ARCHIVE_FORMAT_BASE_MASK) == ARCHIVE_FORMAT_TAR &&
            m[i].format != ARCHIVE_FORMAT_TAR_USTAR) {
            lint_add(L, "tar-format", "member %s is stored in %s tar format; importers read "
                     "POSIX ustar only: repack with 'tar --format=ustar' (or ovatool convert)",
                     m[i].name, m[i].format == ARCHIVE_FORMAT_TAR_GNUTAR ? "GNU" : "pax");
            break;
        }
    if (n && !strstr(m[0].name, ".ovf"))
        lint_add(L, "tar-order", "the first member is %s; the OVF descriptor must come first "
                 "(streaming importers read it before the disks): repack", m[0].name);
    size_t next_ref = 0;
    for (size_t i = 0; i < n; i++) {
        const char *nm = m[i].name;
        size_t l = strlen(nm);
        if (strchr(nm, '/'))
            lint_add(L, "tar-path", "member %s is in a folder; every member must be at the "
                     "archive's root: repack", nm);
        bool is_mf = lint_suffix(nm, ".mf"), is_cert = lint_suffix(nm, ".cert");
        bool at_end = i + 1 == n || (is_mf && i + 2 == n && lint_suffix(m[n - 1].name, ".cert"));
        bool at_front = i == 1 || (is_cert && i == 2 && lint_suffix(m[1].name, ".mf"));
        (void)l;
        if ((is_mf || is_cert) && !at_end && !at_front)
            lint_add(L, "tar-order", "%s is member %zu; the manifest and certificate go right "
                     "after the descriptor or at the end: repack", nm, i + 1);
        if (i == 0 || is_mf || is_cert)
            continue;
        if (lint_suffix(nm, ".ovf")) {
            if (ap->ovf_name && strcmp(nm, ap->ovf_name))
                lint_add(L, "tar-extra", "member %s is a second descriptor; an appliance has "
                         "one: remove it", nm);
            continue;
        }
        size_t k = 0;
        while (k < ap->ovf.n_files && strcmp(ap->ovf.files[k].href, nm) &&
               !(strncmp(ap->ovf.files[k].href, nm, strlen(ap->ovf.files[k].href)) == 0 &&
                 nm[strlen(ap->ovf.files[k].href)] == '.'))
            k++;
        if (k == ap->ovf.n_files)
            lint_add(L, "tar-extra", "member %s is not referenced by the descriptor: remove it", nm);
        else if (k < next_ref)
            lint_add(L, "tar-order", "member %s comes after a file the References list later; "
                     "store files in References order", nm);
        else
            next_ref = k;
    }
}

static void lint_manifest(struct lint *L, struct appliance *ap)
{
    if (!ap->mf_text) {
        lint_add(L, "manifest-missing", "no manifest (.mf): the importer cannot check the "
                 "files (VirtualBox and ovftool warn, --strict importers refuse): add one "
                 "(ovatool convert writes it)");
        return;
    }
    int algs = 0;
    bool bad_syntax = false;
    for (const char *p = ap->mf_text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p) : strlen(p);
        char line[1200];
        snprintf(line, sizeof line, "%.*s", (int)(l < 1100 ? l : 1100), p);
        p = nl ? nl + 1 : NULL;
        if (!line[0])
            continue;
        /* DSP0243: ALG(file)= hex, one space after '=', nothing after the hex */
        const char *open = strchr(line, '('), *close = strstr(line, ")= ");
        size_t hl = close ? strspn(close + 3, "0123456789abcdefABCDEF") : 0;
        if (!open || !close || open == line || strchr(line, '\r') || open[-1] == ' ' ||
            !hl || close[3 + hl])
            bad_syntax = true;
        if (!strncmp(line, "SHA1", 4) && line[4] != '2' && line[4] != '5')
            algs |= 1;
        else if (!strncmp(line, "SHA256", 6))
            algs |= 2;
        else if (!strncmp(line, "SHA512", 6))
            algs |= 4;
        else
            algs |= 8;
    }
    if (bad_syntax)
        lint_add(L, "manifest-syntax", "%s: lines are not in the 'SHA256(file)= hex' form of "
                 "the OVF specification (spaces, CR LF or trailing text): ovftool and vSphere "
                 "refuse them; rewrite the manifest (ovatool convert)", ap->mf_name);
    if (algs & 8)
        lint_add(L, "manifest-algorithm", "%s: a digest other than SHA1, SHA256 or SHA512: "
                 "use SHA256", ap->mf_name);
    else if (algs != 1 && algs != 2 && algs != 4)
        lint_add(L, "manifest-algorithm", "%s: mixes digest algorithms: use one (SHA256)",
                 ap->mf_name);
    int checked;
    char err[1024];
    if (!bad_syntax && appliance_verify_manifest(ap, err, sizeof err, &checked) < 0)
        lint_add(L, "manifest-mismatch", "%s: the importer will refuse the appliance", err);
}

static bool lint_in(const char *s, const char *const *list)
{
    for (; s && *list; list++)
        if (!strcasecmp(s, *list))
            return true;
    return false;
}

static void lint_hardware(struct lint *L, const struct ovf_appliance *a)
{
    const char *st = a->system_type;
    if ((L->vmware || L->esxi) && (!st || strncmp(st, "vmx-", 4)))
        lint_add(L, "system-type", "VirtualSystemType is '%s'; vSphere and ovftool accept "
                 "vmx-NN only: write vmx-%s", st ? st : "(none)", L->esxi ? "13" : "10");
    if (L->ovf2 && a->version != 2)
        lint_add(L, "ovf-version", "the descriptor is OVF 1.x; an OVF 2 consumer expects the "
                 "envelope/2 namespace: convert with --target ovf2");
    static const char *const vmw_scsi[] = { "lsilogic", "lsilogicsas", "buslogic", "VirtualSCSI", NULL };
    static const char *const vbox_scsi[] = { "lsilogic", "lsilogicsas", "buslogic", NULL };
    static const char *const ide[] = { "PIIX3", "PIIX4", "ICH6", NULL };
    for (size_t i = 0; i < a->n_items; i++) {
        const struct ovf_item *it = &a->items[i];
        const char *sub = it->subtype ? it->subtype : "";
        const char *nm = it->name ? it->name : "?";
        if (it->type == 6 && (L->vmware || L->esxi) && !lint_in(sub, vmw_scsi))
            lint_add(L, "controller", "SCSI controller '%s' has subtype '%s', which vSphere "
                     "does not know: use lsilogic, lsilogicsas or VirtualSCSI", nm, sub);
        if (it->type == 6 && L->vbox && !lint_in(sub, vbox_scsi))
            lint_add(L, "controller", "SCSI controller '%s' has subtype '%s'; VirtualBox "
                     "makes it an LSI Logic controller: use lsilogic or lsilogicsas", nm, sub);
        if (it->type == 5 && *sub && !lint_in(sub, ide) && (L->vbox || L->vmware || L->esxi))
            lint_add(L, "controller", "IDE controller '%s' has subtype '%s': use PIIX4", nm, sub);
        if (it->type == 20 && (L->vmware || L->esxi) && strcasecmp(sub, "vmware.sata.ahci") &&
            strcasecmp(sub, "vmware.nvme.controller"))
            lint_add(L, "controller", "controller '%s' (ResourceType 20) has subtype '%s'; "
                     "vSphere knows vmware.sata.ahci and vmware.nvme.controller: use "
                     "vmware.sata.ahci for SATA", nm, sub);
        if (it->type == 20 && L->vbox && strcasecmp(sub, "AHCI") && strcasecmp(sub, "NVMe"))
            lint_add(L, "controller", "controller '%s' (ResourceType 20) has subtype '%s'; "
                     "VirtualBox knows AHCI (SATA) and NVMe: use AHCI", nm, sub);
        static const int vmw_types[] = { 1, 3, 4, 5, 6, 10, 14, 15, 16, 17, 20, 21, 23, 24, 0 };
        static const int vbox_types[] = { 3, 4, 5, 6, 10, 14, 15, 16, 17, 20, 23, 24, 35, 0 };
        const int *ok = L->vbox ? vbox_types : (L->vmware || L->esxi) ? vmw_types : NULL;
        bool known = !ok;
        for (size_t k = 0; ok && ok[k]; k++)
            known = known || ok[k] == it->type;
        if (!known)
            lint_add(L, "item-type", "item '%s' has ResourceType %d, which %s does not "
                     "accept%s: remove it", nm, it->type, L->vbox ? "VirtualBox" : "vSphere",
                     it->type == 35 ? " (VirtualBox's sound card)" : "");
        if (it->type == 10 && (L->vmware || L->esxi) &&
            !lint_in(sub, (const char *const[]){ "E1000", "E1000e", "VmxNet3", "PCNet32", NULL }))
            lint_add(L, "nic-model", "NIC '%s' has model '%s', which vSphere does not know: "
                     "use VmxNet3 or E1000", nm, sub);
        if (it->type == 10 && L->vbox &&
            !lint_in(sub, (const char *const[]){ "E1000", "PCNet32", "virtio", NULL }))
            lint_add(L, "nic-model", "NIC '%s' has model '%s'; VirtualBox makes it an Intel "
                     "PRO/1000: use E1000", nm, sub);
    }
}

static const char *const lint_vbox_nets[] = { "NAT", "Bridged", "HostOnly", "Internal",
                                              "Generic", "NATNetwork", NULL };

static void lint_system(struct lint *L, const struct ovf_appliance *a)
{
    const struct os_entry *os = os_from_ovf(a->os_id, a->os_type, a->os_desc);
    const struct os_entry *by_cim = os_from_ovf(a->os_id, NULL, NULL);
    const struct os_entry *by_type = a->os_type ? os_by_name(a->os_type) : NULL;
    if ((L->vmware || L->esxi) && (!a->os_type || !by_type || strcasecmp(a->os_type, by_type->vmware)))
        lint_add(L, "os-type", "%s%s%s; vSphere guesses the guest from ovf:id %s: write "
                 "vmw:osType=\"%s\"", a->os_type ? "osType '" : "no VMware guestOS id (vmw:osType)",
                 a->os_type ? a->os_type : "", a->os_type ? "' is not a VMware guestOS id" : "",
                 a->os_id ? a->os_id : "(none)", os ? os->vmware : "otherGuest64");
    if (L->vbox && (!a->os_type || !by_type || strcasecmp(a->os_type, by_type->vbox)))
        lint_add(L, "os-type", "%s%s%s; VirtualBox guesses the guest from ovf:id %s: write "
                 "<vbox:OSType>%s</vbox:OSType>", a->os_type ? "osType '" : "no VirtualBox OSType (vbox:OSType)",
                 a->os_type ? a->os_type : "", a->os_type ? "' is not a VirtualBox OSType" : "",
                 a->os_id ? a->os_id : "(none)", os ? os->vbox : "Other_64");
    if (by_type && by_cim && by_cim->cim != by_type->cim)
        lint_add(L, "os-id", "ovf:id %s (CIM: %s) disagrees with osType %s (%s): write "
                 "ovf:id %d", a->os_id, by_cim->desc, a->os_type, by_type->desc, by_type->cim);
    if (a->os_id && !by_cim && atoi(a->os_id) > 1)
        lint_add(L, "os-id", "ovf:id %s is not a CIM OSType ovatool knows; importers may show "
                 "'Other': check the OperatingSystemSection", a->os_id);
    for (size_t i = 0; i < a->n_networks; i++) {
        if ((L->vmware || L->esxi) && lint_in(a->networks[i], lint_vbox_nets))
            lint_add(L, "network", "network '%s' is a VirtualBox attachment name; vSphere "
                     "maps it to whatever port group exists: name it 'VM Network'",
                     a->networks[i]);
        if (L->vbox && !lint_in(a->networks[i], lint_vbox_nets))
            lint_add(L, "network", "network '%s' is not a VirtualBox attachment (NAT, Bridged, "
                     "HostOnly, Internal); VirtualBox attaches it as NAT: name it 'NAT'",
                     a->networks[i]);
    }
    if ((L->vmware || L->esxi) && a->firmware_src == 2)
        lint_add(L, "firmware", "EFI firmware is stated only in vbox:Machine; vSphere boots "
                 "it with BIOS: add <vmw:Config vmw:key=\"firmware\" vmw:value=\"efi\"/>");
    if (L->vbox && a->firmware_src == 1)
        lint_add(L, "firmware", "EFI firmware is stated only in vmw:Config; VirtualBox boots "
                 "it with BIOS: after import run VBoxManage modifyvm VM --firmware efi");
    if (L->vbox && a->has_vbox_machine && strcmp(a->flavor ? a->flavor : "", "virtualbox"))
        lint_add(L, "vbox-machine", "a vbox:Machine section overrides the OVF hardware in "
                 "VirtualBox: make sure it matches, or drop it");
}

static void lint_disks(struct lint *L, const struct appliance *ap, const struct lint_member *m,
                       size_t nm)
{
    const struct ovf_appliance *a = &ap->ovf;
    for (size_t i = 0; i < a->n_disks; i++) {
        const struct ovf_disk *d = &a->disks[i];
        const char *id = d->id ? d->id : "?";
        if (!ovf_disk_in_use(a, d) || ovf_disk_is_cdrom(d))
            continue;
        if (d->capacity_error)
            lint_add(L, "capacity", "disk %s: %s: state the capacity in bytes", id, d->capacity_error);
        if (d->capacity_ref && L->vbox)
            lint_add(L, "capacity", "disk %s: capacity ${%s} comes from a property, which "
                     "VirtualBox does not resolve: write the number", id, d->capacity_ref);
        const char *u = d->capacity_units;
        if (u && strcasecmp(u, "byte") && strncasecmp(u, "byte * 2^", 9))
            lint_add(L, "capacity", "disk %s: ovf:capacityAllocationUnits '%s' is not the "
                     "'byte * 2^N' form importers read: write byte * 2^20 (MiB) or bytes", id, u);
        const struct ovf_file *f = d->file_ref ? ovf_find_file(a, d->file_ref) : NULL;
        if (!f)
            continue;
        bool stream_uri = d->format && strstr(d->format, "vmdk.html#streamOptimized");
        if (!stream_uri && !L->ovf2)
            lint_add(L, "disk-format", "disk %s: format '%s' is not a streamOptimized VMDK, "
                     "the one format every importer reads: convert the disk", id,
                     d->format ? d->format : "(none)");
        if (f->compression && (L->vmware || L->esxi))
            lint_add(L, "compression", "file %s is gzip-compressed (ovf:compression); vSphere "
                     "does not inflate it: store it plain (streamOptimized VMDK is compressed "
                     "already)", f->href);
        if (f->chunk_size && (L->vbox || L->esxi))
            lint_add(L, "chunked", "file %s is split in chunks (ovf:chunkSize), which %s does "
                     "not join: store it whole", f->href, L->vbox ? "VirtualBox" : "vSphere");
        const struct lint_member *mem = NULL;
        for (size_t k = 0; k < nm; k++)
            if (!strcmp(m[k].name, f->href))
                mem = &m[k];
        for (size_t k = 0; !mem && k < ap->n_files; k++)
            if (!strcmp(ap->files[k].name, f->href) && f->size && ap->files[k].size != f->size)
                lint_add(L, "file-size", "file %s: ovf:size %llu but the file has %llu bytes: "
                         "importers refuse or truncate it; write the real size", f->href,
                         (unsigned long long)f->size, (unsigned long long)ap->files[k].size);
        if (!mem)
            continue;
        if (f->size && mem->size != f->size)
            lint_add(L, "file-size", "file %s: ovf:size %llu but the member has %llu bytes: "
                     "importers refuse or truncate it; write the real size", f->href,
                     (unsigned long long)f->size, (unsigned long long)mem->size);
        char why[256];
        if (!f->compression && stream_uri && !L->ovf2 &&
            vmdk_stream_check(mem->head, mem->head_len, why, sizeof why) < 0)
            lint_add(L, "vmdk", "file %s %s: convert it to a streamOptimized VMDK (version 3)",
                     f->href, why);
    }
}

int ova_lint(const char *path, const char *target, bool json)
{
    struct lint L = { .target = target };
    L.vmware = !strcmp(target, "vmware");
    L.esxi = !strcmp(target, "esxi");
    L.vbox = !strcmp(target, "virtualbox");
    L.ovf2 = !strcmp(target, "ovf2");
    struct lint_member *m = NULL;
    size_t nm = 0;
    char err[4096];
    struct appliance ap;
    size_t len = strlen(path);
    bool ova = !(len > 4 && !strcasecmp(path + len - 4, ".ovf"));
    if (ova && lint_read_tar(path, &m, &nm, err, sizeof err) < 0) {
        fprintf(stderr, "ovatool: %s\n", err);
        return 1;
    }
    int rc = 1;
    if (appliance_read(path, NULL, 0, &ap, err, sizeof err) < 0) {
        /* what the reader refuses (members in folders, links, a broken
         * descriptor), every importer refuses too */
        lint_add(&L, "unreadable", "%s", err);
    } else {
        if (ova)
            lint_layout(&L, &ap, m, nm);
        for (size_t i = 0; i < ap.n_diags; i++)
            if (!strstr(ap.diags[i], "no manifest") && !strstr(ap.diags[i], "first member"))
                lint_add(&L, "reference", "%s", ap.diags[i]);
        lint_manifest(&L, &ap);
        lint_hardware(&L, &ap.ovf);
        lint_system(&L, &ap.ovf);
        lint_disks(&L, &ap, m, nm);
    }
    appliance_free(&ap);
    if (json) {
        printf("{\"appliance\": ");
        vt_json_str(stdout, path);
        printf(", \"target\": \"%s\", \"clean\": %s, \"problems\": [", target, L.n ? "false" : "true");
        for (size_t i = 0; i < L.n; i++) {
            printf("%s{\"code\": \"%s\", \"message\": ", i ? ", " : "", L.code[i]);
            vt_json_str(stdout, L.msg[i]);
            printf("}");
        }
        printf("]}\n");
    } else {
        for (size_t i = 0; i < L.n; i++)
            printf("%s: %s: [%s] %s\n", path, target, L.code[i], L.msg[i]);
        if (!L.n)
            printf("%s: clean for %s\n", path, target);
    }
    rc = L.n ? 1 : 0;
    for (size_t i = 0; i < L.n; i++) {
        free(L.code[i]);
        free(L.msg[i]);
    }
    free(L.code);
    free(L.msg);
    for (size_t i = 0; i < nm; i++) {
        free(m[i].name);
        free(m[i].head);
    }
    free(m);
    return rc;
}
