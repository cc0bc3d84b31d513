/* domain.c - `vdboot --domain vm.xml`: boot with the hardware a libvirt
 * domain gives the VM (what `ovatool import` writes, or `virsh dumpxml`):
 * its boot disk and that disk's format and bus (and SCSI controller model),
 * memory, vCPUs and firmware, its NICs (on qemu's user networking) and
 * CD-ROMs and further disks (all under qemu).  The boot disk boots through its own boot loader
 * (bios, or uefi when the domain says efi or its loader is OVMF), as the
 * VM would.
 *
 * The file is read by libxml2 as untrusted input: at most 1 MiB, no DTD, no
 * entity expansion, no network; a DOCTYPE is refused (a libvirt domain
 * never has one).  Anything wrong is one line naming the file, the line and
 * the element or attribute. */
#include "vdboot.h"
#include "vdisk.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The NICs qemu's pc machine has drivers for in common guests, by their
 * libvirt <model type> and qemu device name. */
static const struct { const char *libvirt, *qemu; } nic_models[] = {
    { "virtio", "virtio-net-pci" }, { "e1000", "e1000" }, { "e1000e", "e1000e" },
    { "rtl8139", "rtl8139" }, { "vmxnet3", "vmxnet3" },
    { "pcnet", "pcnet" },       /* VirtualBox's PCnet, which ovatool import keeps */
};

const char *vdboot_nic_model(const char *qemu_model)
{
    for (size_t i = 0; i < sizeof nic_models / sizeof nic_models[0]; i++)
        if (!strcmp(qemu_model, nic_models[i].qemu))
            return nic_models[i].qemu;
    return NULL;
}

#ifdef VDBOOT_HAVE_LIBXML2
#include <libxml/parser.h>
#include <libxml/tree.h>

#define DOM_MAX_FILE (1u << 20)

/* What the options point at lives here, for the life of the process. */
static struct {
    char image[4096], format[32], bus[16], hba[32], firmware[8];
    char cdrom[VDBOOT_MAX_CDROMS][4096], cdrom_bus[VDBOOT_MAX_CDROMS][16];
    char extra[VDBOOT_MAX_EXTRA_DISKS][4096], extra_format[VDBOOT_MAX_EXTRA_DISKS][32];
    char extra_bus[VDBOOT_MAX_EXTRA_DISKS][16];
} dom;

static bool dom_is(const xmlNode *n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, name);
}

static const xmlNode *dom_child(const xmlNode *n, const char *name)
{
    for (const xmlNode *c = n ? n->children : NULL; c; c = c->next)
        if (dom_is(c, name))
            return c;
    return NULL;
}

/* An attribute's value copied into buf ("" when absent). */
static const char *dom_attr(const xmlNode *n, const char *name, char *buf, size_t len)
{
    buf[0] = 0;
    xmlChar *v = n ? xmlGetProp(n, (const xmlChar *)name) : NULL;
    if (v) {
        snprintf(buf, len, "%s", (const char *)v);
        xmlFree(v);
    }
    return buf;
}

static const char *dom_text(const xmlNode *n, char *buf, size_t len)
{
    buf[0] = 0;
    xmlChar *v = n ? xmlNodeGetContent(n) : NULL;
    if (v) {
        const char *s = (const char *)v;
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
            s++;
        snprintf(buf, len, "%s", s);
        size_t l = strlen(buf);
        while (l && (buf[l - 1] == ' ' || buf[l - 1] == '\t' || buf[l - 1] == '\n' ||
                     buf[l - 1] == '\r'))
            buf[--l] = 0;
        xmlFree(v);
    }
    return buf;
}

/* <memory unit='U'>N</memory> in MiB; libvirt's default unit is KiB. */
static int dom_memory(const xmlNode *m, unsigned long long *mib, char *why, size_t wlen)
{
    static const struct { const char *u; unsigned long long mul; } units[] = {
        { "b", 1 }, { "bytes", 1 }, { "KB", 1000 }, { "k", 1024 }, { "KiB", 1024 },
        { "MB", 1000000 }, { "M", 1ull << 20 }, { "MiB", 1ull << 20 },
        { "GB", 1000000000 }, { "G", 1ull << 30 }, { "GiB", 1ull << 30 },
        { "TB", 1000000000000ull }, { "T", 1ull << 40 }, { "TiB", 1ull << 40 },
    };
    char u[32], t[64];
    dom_attr(m, "unit", u, sizeof u);
    dom_text(m, t, sizeof t);
    unsigned long long mul = 1024;
    if (u[0]) {
        size_t i = 0;
        while (i < sizeof units / sizeof units[0] && strcmp(units[i].u, u))
            i++;
        if (i == sizeof units / sizeof units[0])
            return snprintf(why, wlen, "<memory unit='%.20s'>: not a unit libvirt knows", u), -1;
        mul = units[i].mul;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(t, &end, 10);
    if (!t[0] || *end || errno || t[0] == '-' || v > (1ull << 50) / mul)
        return snprintf(why, wlen, "<memory>%.40s</memory>: not a size", t), -1;
    *mib = v * mul >> 20;
    if (*mib < 16 || *mib > (1u << 20))
        return snprintf(why, wlen, "<memory> of %llu MiB: vdboot boots 16..1048576 MiB", *mib), -1;
    return 0;
}

/* The disk that boots: the one with <boot order='1'/> (lowest order), else
 * the first <disk device='disk'>. */
static const xmlNode *dom_boot_disk(const xmlNode *devs)
{
    const xmlNode *first = NULL, *best = NULL;
    long best_order = 0;
    char b[32];
    for (const xmlNode *c = devs ? devs->children : NULL; c; c = c->next) {
        if (!dom_is(c, "disk"))
            continue;
        dom_attr(c, "device", b, sizeof b);
        if (b[0] && strcmp(b, "disk"))
            continue;       /* cdrom, floppy, lun */
        if (!first)
            first = c;
        const xmlNode *bo = dom_child(c, "boot");
        if (bo) {
            long ord = strtol(dom_attr(bo, "order", b, sizeof b), NULL, 10);
            if (ord > 0 && (!best || ord < best_order)) {
                best = c;
                best_order = ord;
            }
        }
    }
    return best ? best : first;
}

/* The SCSI controller a disk sits on (its <address controller='N'>, else 0)
 * as a qemu device. */
static const char *dom_scsi_hba(const xmlNode *devs, const xmlNode *disk, char *why, size_t wlen)
{
    static const struct { const char *model, *qemu; } hbas[] = {
        { "virtio-scsi", "virtio-scsi-pci" }, { "lsilogic", "lsi53c895a" },
        { "lsisas1068", "mptsas1068" }, { "vmpvscsi", "pvscsi" }, { "", "virtio-scsi-pci" },
    };
    char want[16] = "0", idx[16], model[64];
    const xmlNode *a = dom_child(disk, "address");
    if (a && dom_attr(a, "controller", idx, sizeof idx)[0])
        snprintf(want, sizeof want, "%s", idx);
    model[0] = 0;
    for (const xmlNode *c = devs->children; c; c = c->next) {
        char ty[16];
        if (!dom_is(c, "controller") || strcmp(dom_attr(c, "type", ty, sizeof ty), "scsi"))
            continue;
        dom_attr(c, "index", idx, sizeof idx);
        if (!strcmp(idx[0] ? idx : "0", want)) {
            dom_attr(c, "model", model, sizeof model);
            break;
        }
    }
    for (size_t i = 0; i < sizeof hbas / sizeof hbas[0]; i++)
        if (!strcmp(model, hbas[i].model))
            return hbas[i].qemu;
    snprintf(why, wlen, "<controller type='scsi' model='%.40s'>: vdboot has no such SCSI "
             "controller (virtio-scsi, lsilogic, lsisas1068, vmpvscsi)", model);
    return NULL;
}

/* A source path from the domain: relative ones are the domain file's
 * folder's, as for the boot disk. */
static int dom_path(const char *path, const char *src, char *out, size_t len)
{
    const char *sl = src[0] == '/' ? NULL : strrchr(path, '/');
    return snprintf(out, len, "%.*s%s", sl ? (int)(sl - path + 1) : 0, path, src) >= (int)len
               ? -1 : 0;
}

/* A <disk device='disk'> other than the boot disk: its file, format and
 * bus (ide: one, and only with the boot disk elsewhere; tcg.c puts it at
 * the primary master, ide.0 unit 0, the place the boot disk would hold). */
static int dom_extra_disk(const xmlNode *c, const char *path, struct vdboot_opts *o, char *why,
                          size_t wlen)
{
    char b[4096], bus[16];
    int k = o->n_extra, ide = 0;
    if (k == VDBOOT_MAX_EXTRA_DISKS)
        return snprintf(why, wlen, "more than %d disks besides the boot disk",
                        VDBOOT_MAX_EXTRA_DISKS), -1;
    dom_attr(dom_child(c, "source"), "file", b, sizeof b);
    if (!b[0])
        return snprintf(why, wlen, "a second <disk> with no <source file=...>"), -1;
    if (dom_path(path, b, dom.extra[k], sizeof dom.extra[k]) < 0)
        return snprintf(why, wlen, "a <disk>'s source path is too long"), -1;
    dom_attr(dom_child(c, "driver"), "type", b, sizeof b);
    dom.extra_format[k][0] = 0;
    if (b[0] && (snprintf(dom.extra_format[k], sizeof dom.extra_format[k], "%s",
                          !strcmp(b, "vpc") ? "vhd" : b) >= (int)sizeof dom.extra_format[k] ||
                 !vd_format_lookup(dom.extra_format[k])))
        return snprintf(why, wlen, "<driver type='%.32s'>: not a format vdisk reads", b), -1;
    dom_attr(dom_child(c, "target"), "bus", bus, sizeof bus);
    if (strcmp(bus, "virtio") && strcmp(bus, "sata") && strcmp(bus, "scsi") && strcmp(bus, "ide"))
        return snprintf(why, wlen, "<target bus='%.15s'>: vdboot attaches virtio, sata, scsi "
                        "or ide disks", bus), -1;
    for (int i = 0; i < k; i++)
        ide += !strcmp(o->extra_bus[i], "ide");
    if (!strcmp(bus, "ide") && (ide || !strcmp(o->disk_bus, "ide")))
        return snprintf(why, wlen, "a second ide disk: vdboot attaches one besides the boot "
                        "disk, on a boot disk not on ide"), -1;
    snprintf(dom.extra_bus[k], sizeof dom.extra_bus[k], "%s", bus);
    o->extra_disks[k] = dom.extra[k];
    o->extra_format[k] = dom.extra_format[k][0] ? dom.extra_format[k] : NULL;
    o->extra_bus[k] = dom.extra_bus[k];
    o->n_extra++;
    return 0;
}

/* Every <interface> (user networking in qemu, whatever its source), every
 * <disk device='cdrom'> and every <disk device='disk'> but the boot one. */
static int dom_extras(const xmlNode *devs, const xmlNode *boot, const char *path,
                      struct vdboot_opts *o, char *why, size_t wlen, long *line)
{
    char b[4096], bus[16];
    for (const xmlNode *c = devs->children; c; c = c->next) {
        if (dom_is(c, "disk") && c != boot &&
            (!dom_attr(c, "device", b, sizeof b)[0] || !strcmp(b, "disk"))) {
            *line = c->line;
            if (dom_extra_disk(c, path, o, why, wlen) < 0)
                return -1;
        } else if (dom_is(c, "interface")) {
            *line = c->line;
            dom_attr(dom_child(c, "model"), "type", b, sizeof b);
            const char *q = b[0] ? NULL : "rtl8139";   /* libvirt's default on pc */
            for (size_t i = 0; !q && i < sizeof nic_models / sizeof nic_models[0]; i++)
                if (!strcmp(b, nic_models[i].libvirt))
                    q = nic_models[i].qemu;
            if (!q)
                return snprintf(why, wlen, "<model type='%.32s'>: vdboot attaches virtio, e1000, "
                                "e1000e, rtl8139, vmxnet3 or pcnet NICs", b), -1;
            if (o->n_nics == VDBOOT_MAX_NICS)
                return snprintf(why, wlen, "more than %d <interface>s", VDBOOT_MAX_NICS), -1;
            o->nic_models[o->n_nics++] = q;
        } else if (dom_is(c, "disk") && !strcmp(dom_attr(c, "device", b, sizeof b), "cdrom")) {
            *line = c->line;
            int k = o->n_cdroms;
            if (k == VDBOOT_MAX_CDROMS)
                return snprintf(why, wlen, "more than %d CD-ROMs", VDBOOT_MAX_CDROMS), -1;
            dom_attr(dom_child(c, "target"), "bus", bus, sizeof bus);
            if (strcmp(bus, "ide") && strcmp(bus, "sata") && strcmp(bus, "scsi"))
                return snprintf(why, wlen, "<target bus='%.15s'> of a CD-ROM: vdboot attaches "
                                "ide, sata or scsi CD-ROMs", bus), -1;
            int same = 0;
            for (int i = 0; i < k; i++)
                same += !strcmp(o->cdrom_bus[i], bus);
            if (!strcmp(bus, "ide") && same == 2)
                return snprintf(why, wlen, "a third ide CD-ROM: vdboot puts two on the "
                                "secondary IDE channel"), -1;
            dom_attr(dom_child(c, "source"), "file", b, sizeof b);
            dom.cdrom[k][0] = 0;
            if (b[0] && dom_path(path, b, dom.cdrom[k], sizeof dom.cdrom[k]) < 0)
                return snprintf(why, wlen, "the CD-ROM's source path is too long"), -1;
            /* the file must be there now: one line here, not qemu's words later */
            FILE *f = b[0] ? fopen(dom.cdrom[k], "rb") : NULL;
            if (b[0] && !f)
                return snprintf(why, wlen, "CD-ROM <source file='%.300s'>: %s", dom.cdrom[k],
                                strerror(errno)), -1;
            if (f)
                fclose(f);
            snprintf(dom.cdrom_bus[k], sizeof dom.cdrom_bus[k], "%s", bus);
            o->cdroms[k] = dom.cdrom[k];
            o->cdrom_bus[k] = dom.cdrom_bus[k];
            o->n_cdroms++;
        }
    }
    return 0;
}

static int dom_read(const xmlNode *root, const char *path, struct vdboot_opts *o, char *why,
                    size_t wlen, long *line)
{
    char b[4096];
    *line = root ? root->line : 0;
    if (!dom_is(root, "domain"))
        return snprintf(why, wlen, "the root element is <%.40s>, not <domain>",
                        root ? (const char *)root->name : ""), -1;
    const xmlNode *os = dom_child(root, "os"), *devs = dom_child(root, "devices");
    const xmlNode *mem = dom_child(root, "memory"), *vcpu = dom_child(root, "vcpu");
    if (!devs)
        return snprintf(why, wlen, "no <devices>"), -1;
    const xmlNode *disk = dom_boot_disk(devs);
    if (!disk)
        return *line = devs->line, snprintf(why, wlen, "no <disk device='disk'> in <devices>"), -1;
    *line = disk->line;
    const xmlNode *src = dom_child(disk, "source"), *tgt = dom_child(disk, "target");
    const xmlNode *drv = dom_child(disk, "driver");
    dom_attr(src, "file", b, sizeof b);
    if (!b[0])
        dom_attr(src, "dev", b, sizeof b);
    if (!b[0])
        return snprintf(why, wlen, "the boot <disk> has no <source file=...> or dev"), -1;
    if (dom_path(path, b, dom.image, sizeof dom.image) < 0)
        return snprintf(why, wlen, "the boot <disk>'s source path is too long"), -1;
    dom_attr(drv, "type", b, sizeof b);
    if (b[0]) {
        if (snprintf(dom.format, sizeof dom.format, "%s", !strcmp(b, "vpc") ? "vhd" : b) >=
                (int)sizeof dom.format || !vd_format_lookup(dom.format))
            return snprintf(why, wlen, "<driver type='%.32s'>: not a format vdisk reads", b), -1;
        o->format = dom.format;
    }
    dom_attr(tgt, "bus", b, sizeof b);
    if (strcmp(b, "virtio") && strcmp(b, "sata") && strcmp(b, "scsi") && strcmp(b, "ide"))
        return snprintf(why, wlen, "<target bus='%.32s'>: vdboot boots virtio, sata, scsi or ide "
                        "disks", b), -1;
    if (snprintf(dom.bus, sizeof dom.bus, "%s", b) >= (int)sizeof dom.bus)   /* not reached */
        return snprintf(why, wlen, "<target bus='%.32s'>: name too long", b), -1;
    o->disk_bus = dom.bus;
    if (!strcmp(b, "scsi")) {
        const char *h = dom_scsi_hba(devs, disk, why, wlen);
        if (!h)
            return -1;
        snprintf(dom.hba, sizeof dom.hba, "%s", h);
        o->scsi_hba = dom.hba;
    }
    if (mem) {
        *line = mem->line;
        if (dom_memory(mem, &o->memory_mib, why, wlen) < 0)
            return -1;
    }
    if (vcpu) {
        *line = vcpu->line;
        char *end;
        dom_text(vcpu, b, sizeof b);
        long n = strtol(b, &end, 10);
        if (!b[0] || *end || n < 1 || n > VM_MAX_CPUS)
            return snprintf(why, wlen, "<vcpu>%.20s</vcpu>: want 1..%d", b, VM_MAX_CPUS), -1;
        o->cpus = (int)n;
    }
    /* firmware: <os firmware='efi'>, or a loader that is OVMF / pflash */
    bool efi = false;
    if (os) {
        const xmlNode *ld = dom_child(os, "loader");
        char ty[32];
        efi = !strcmp(dom_attr(os, "firmware", b, sizeof b), "efi") ||
              (ld && (!strcmp(dom_attr(ld, "type", ty, sizeof ty), "pflash") ||
                      strcasestr(dom_text(ld, b, sizeof b), "ovmf") ||
                      strcasestr(b, "edk2")));
    }
    snprintf(dom.firmware, sizeof dom.firmware, "%s", efi ? "uefi" : "bios");
    o->firmware = dom.firmware;
    if (dom_extras(devs, disk, path, o, why, wlen, line) < 0)
        return -1;
    o->image = dom.image;
    o->images = (const char **)&o->image;
    o->n_images = 1;
    return 0;
}

int domain_load(const char *path, struct vdboot_opts *o)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[512], why[600];
    long line = 0;
    if (read_whole_file(path, &buf, &len, err, sizeof err) < 0)
        return fprintf(stderr, "vdboot: --domain %s: %s\n", path, err), -1;
    if (len > DOM_MAX_FILE) {
        free(buf);
        return fprintf(stderr, "vdboot: --domain %s: %zu bytes: a domain is at most %u\n", path,
                       len, DOM_MAX_FILE), -1;
    }
    if (len > INT32_MAX || memmem(buf, len, "<!DOCTYPE", 9)) {
        free(buf);
        return fprintf(stderr, "vdboot: --domain %s: has a DOCTYPE, which no libvirt domain "
                       "has: refused\n", path), -1;
    }
    xmlDoc *doc = xmlReadMemory((const char *)buf, (int)len, path, NULL,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    free(buf);
    if (!doc) {
        const xmlError *e = xmlGetLastError();
        char msg[256] = "not well-formed XML";
        if (e && e->message) {
            snprintf(msg, sizeof msg, "%s", e->message);
            for (char *p = msg; *p; p++)
                if (*p == '\n' || *p < 0x20)
                    *p = ' ';
            size_t l = strlen(msg);
            while (l && msg[l - 1] == ' ')
                msg[--l] = 0;
        }
        return fprintf(stderr, "vdboot: --domain %s: line %d: %s\n", path, e ? e->line : 0,
                       msg), -1;
    }
    int rc = dom_read(xmlDocGetRootElement(doc), path, o, why, sizeof why, &line);
    xmlFreeDoc(doc);
    if (rc < 0)
        fprintf(stderr, "vdboot: --domain %s: line %ld: %s\n", path, line, why);
    return rc;
}

#else
int domain_load(const char *path, struct vdboot_opts *o)
{
    (void)o;
    return fprintf(stderr, "vdboot: --domain %s: vdboot was built without libxml2\n", path), -1;
}
#endif
