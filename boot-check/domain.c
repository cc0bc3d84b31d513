/* domain.c - `vdboot --domain vm.xml`: boot with the hardware a libvirt
 * domain gives the VM (what `ovatool import` writes, or `virsh dumpxml`):
 * its boot disk and that disk's format and bus (and SCSI controller model),
 * memory, vCPUs and firmware.  The disk boots through its own boot loader
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

#ifdef VDBOOT_HAVE_LIBXML2
#include <libxml/parser.h>
#include <libxml/tree.h>

#define DOM_MAX_FILE (1u << 20)

/* What the options point at lives here, for the life of the process. */
static struct {
    char image[4096], format[32], bus[16], hba[32], firmware[8];
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
    const char *sl = b[0] == '/' ? NULL : strrchr(path, '/');   /* relative: to the
                                                                   domain file's folder */
    if (snprintf(dom.image, sizeof dom.image, "%.*s%s", sl ? (int)(sl - path + 1) : 0, path, b) >=
        (int)sizeof dom.image)
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
