/* vmfolder.c - `ovatool import vm.vmx` and `ovatool import vm.vbox`: a VM
 * folder as VMware (Workstation, Fusion, ESXi) or VirtualBox leaves it, read
 * into the same appliance model an OVF gives, then imported like one: every
 * disk converted (a split-extent VMDK or a VDI differencing chain is read
 * through libvdisk), a libvirt domain and a qemu command line written.
 *
 * VirtualBox keeps differencing images in Snapshots/ and the base beside the
 * .vbox, while libvdisk looks for a VDI's parent beside it (by UUID): the
 * chain from the media registry is linked into one private folder first. */
#include "ovatool.h"

#include <ctype.h>
#include <errno.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define VMF_MAX_DISKS 64

struct vmfolder {
    struct ovf_appliance a;
    char *src[VMF_MAX_DISKS];     /* each disk's image path */
    char dir[4096];               /* the folder of the .vmx/.vbox */
    char links[4200];             /* private folder of chain links ("" none) */
    const char *outdir;           /* where that folder goes (not the user's VM folder) */
};

static char *vmf_path(const struct vmfolder *v, const char *name)
{
    char p[8400];
    if (name[0] == '/')
        snprintf(p, sizeof p, "%s", name);
    else
        snprintf(p, sizeof p, "%s/%s", v->dir, name);
    for (char *q = p; *q; q++)          /* VirtualBox on Windows writes '\' */
        if (*q == '\\')
            *q = '/';
    return strdup(p);
}

static void vmf_add_ctrl(struct ovf_appliance *a, const char *id, int type, const char *sub)
{
    if (ovf_find_ctrl(a, id))
        return;
    struct ovf_controller *nv = realloc(a->ctrls, (a->n_ctrls + 1) * sizeof *nv);
    if (!nv)
        return;
    a->ctrls = nv;
    a->ctrls[a->n_ctrls++] = (struct ovf_controller){ .instance_id = strdup(id),
                                                       .resource_type = type,
                                                       .subtype = sub ? strdup(sub) : NULL };
}

static int vmf_add_disk(struct vmfolder *v, const char *ctrl, int unit, char *src)
{
    struct ovf_appliance *a = &v->a;
    if (a->n_disks >= VMF_MAX_DISKS) {
        free(src);
        return -1;
    }
    struct ovf_disk *nv = realloc(a->disks, (a->n_disks + 1) * sizeof *nv);
    if (!nv) {
        free(src);
        return -1;
    }
    a->disks = nv;
    char id[32];
    snprintf(id, sizeof id, "disk%zu", a->n_disks + 1);
    v->src[a->n_disks] = src;
    a->disks[a->n_disks++] = (struct ovf_disk){ .id = strdup(id), .parent = strdup(ctrl),
                                                .address = unit, .attached = true };
    return 0;
}

static void vmf_add_nic(struct ovf_appliance *a, const char *model)
{
    struct ovf_nic *nv = realloc(a->nics, (a->n_nics + 1) * sizeof *nv);
    if (!nv)
        return;
    a->nics = nv;
    a->nics[a->n_nics++] = (struct ovf_nic){ .model = strdup(model) };
}

/* The table row whose VMware id matches a .vmx guestOS ("windows9-64" is
 * windows9_64Guest, "ubuntu-64" ubuntu64Guest): compared without '-', '_'
 * and the "Guest" suffix. */
static const struct os_entry *vmf_vmx_os(const char *g)
{
    char want[128], have[128];
    size_t n = 0, tn;
    for (; g && *g && n + 1 < sizeof want; g++)
        if (*g != '-' && *g != '_')
            want[n++] = (char)tolower((unsigned char)*g);
    want[n] = 0;
    const struct os_entry *t = os_table(&tn);
    for (size_t i = 0; i < tn; i++) {
        size_t m = 0;
        for (const char *p = t[i].vmware; *p && m + 1 < sizeof have; p++)
            if (*p != '-' && *p != '_')
                have[m++] = (char)tolower((unsigned char)*p);
        have[m] = 0;
        if (m > 5 && !strcmp(have + m - 5, "guest"))
            have[m - 5] = 0;
        if (n && !strcmp(want, have))
            return &t[i];
    }
    return NULL;
}

/* ---- .vmx: key = "value" lines ------------------------------------------- */

struct vmx_kv { char *k, *v; };

static const char *vmx_get(const struct vmx_kv *kv, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (!strcasecmp(kv[i].k, key))
            return kv[i].v;
    return NULL;
}

static bool vmx_true(const char *v)
{
    return v && (!strcasecmp(v, "TRUE") || !strcasecmp(v, "yes") || !strcmp(v, "1"));
}

static int vmf_read_vmx(struct vmfolder *v, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct vmx_kv *kv = NULL;
    size_t n = 0, lineno = 0;
    char line[8192];
    int r = 0;
    while (fgets(line, sizeof line, f) && n < 100000) {
        lineno++;
        char *p = line, *eq = strchr(line, '=');
        while (isspace((unsigned char)*p))
            p++;
        if (!*p || *p == '#')
            continue;
        if (!eq) {
            snprintf(err, errlen, "%s: line %zu: expected key = \"value\"", path, lineno);
            r = -1;
            break;
        }
        char *ke = eq;
        while (ke > p && isspace((unsigned char)ke[-1]))
            ke--;
        char *val = eq + 1;
        while (isspace((unsigned char)*val))
            val++;
        size_t vl = strcspn(val, "\r\n");
        val[vl] = 0;
        if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
            val[vl - 1] = 0;
            val++;
        }
        struct vmx_kv *nv = realloc(kv, (n + 1) * sizeof *nv);
        if (!nv)
            break;
        kv = nv;
        kv[n].k = strndup(p, (size_t)(ke - p));
        kv[n++].v = strdup(val);
    }
    fclose(f);
    struct ovf_appliance *a = &v->a;
    const char *s;
    if (r == 0) {
        a->name = (s = vmx_get(kv, n, "displayName")) ? strdup(s) : NULL;
        a->cpus = (s = vmx_get(kv, n, "numvcpus")) ? (unsigned)atoi(s) : 1;
        a->has_cpus = true;
        a->memory_mib = (s = vmx_get(kv, n, "memsize")) ? strtoull(s, NULL, 10) : 1024;
        a->has_memory = true;
        if ((s = vmx_get(kv, n, "firmware")) && !strcasecmp(s, "efi"))
            a->firmware = strdup("efi");
        const struct os_entry *os = vmf_vmx_os(vmx_get(kv, n, "guestOS"));
        if (os) {
            char cim[16];
            snprintf(cim, sizeof cim, "%d", os->cim);
            a->os_type = strdup(os->vmware);
            a->os_id = strdup(cim);
            a->os_desc = strdup(os->desc);
        }
    }
    /* disks: BUSn:m.fileName of a present hard disk, in file order */
    for (size_t i = 0; r == 0 && i < n; i++) {
        char bus[8], key[64];
        unsigned c, u;
        int end = 0;
        if (sscanf(kv[i].k, "%7[a-zA-Z]%u:%u.%*[fF]ile%*[nN]ame%n", bus, &c, &u, &end) != 3 ||
            (size_t)end != strlen(kv[i].k))
            continue;
        for (char *b = bus; *b; b++)
            *b = (char)tolower((unsigned char)*b);
        bool scsi = !strcmp(bus, "scsi"), sata = !strcmp(bus, "sata"), ide = !strcmp(bus, "ide"),
             nvme = !strcmp(bus, "nvme");
        if (!scsi && !sata && !ide && !nvme)
            continue;
        snprintf(key, sizeof key, "%s%u:%u.present", bus, c, u);
        if (!vmx_true(vmx_get(kv, n, key)))
            continue;
        snprintf(key, sizeof key, "%s%u:%u.deviceType", bus, c, u);
        const char *dt = vmx_get(kv, n, key);
        if (dt && (strcasestr(dt, "cdrom") || strcasestr(dt, "floppy")))
            continue;                    /* media, not disks */
        char ctrl[32];
        snprintf(ctrl, sizeof ctrl, "%s%u", bus, c);
        snprintf(key, sizeof key, "%s%u.virtualDev", bus, c);
        const char *vd = vmx_get(kv, n, key);
        if (scsi)
            vmf_add_ctrl(a, ctrl, 6, !vd ? "lsilogic" : !strcasecmp(vd, "lsisas1068") ? "lsilogicsas"
                                   : !strcasecmp(vd, "pvscsi") ? "VirtualSCSI" : vd);
        else
            vmf_add_ctrl(a, ctrl, ide ? 5 : 20, ide ? "PIIX4" : sata ? "AHCI" : "NVMe");
        if (vmf_add_disk(v, ctrl, (int)u, vmf_path(v, kv[i].v)) < 0) {
            snprintf(err, errlen, "%s: more than %d disks", path, VMF_MAX_DISKS);
            r = -1;
        }
    }
    for (unsigned e = 0; r == 0 && e < 10; e++) {
        char key[64];
        snprintf(key, sizeof key, "ethernet%u.present", e);
        if (!vmx_true(vmx_get(kv, n, key)))
            continue;
        snprintf(key, sizeof key, "ethernet%u.virtualDev", e);
        const char *m = vmx_get(kv, n, key);
        vmf_add_nic(a, !m ? "E1000" : !strcasecmp(m, "vmxnet3") ? "VmxNet3"
                     : !strcasecmp(m, "e1000e") ? "E1000e" : !strcasecmp(m, "vlance") ? "PCNet32"
                     : "E1000");
    }
    for (size_t i = 0; i < n; i++) {
        free(kv[i].k);
        free(kv[i].v);
    }
    free(kv);
    return r;
}

/* ---- .vbox: VirtualBox machine XML --------------------------------------- */

static bool vbx_is(const xmlNode *n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, name);
}

static char *vbx_attr(const xmlNode *n, const char *name)
{
    xmlChar *v = xmlGetProp(n, (const xmlChar *)name);
    char *r = v ? strdup((const char *)v) : NULL;
    xmlFree(v);
    return r;
}

/* The media registry's HardDisk with `uuid` (nested elements are children
 * of their parent image). */
static const xmlNode *vbx_find_disk(const xmlNode *n, const char *uuid)
{
    for (const xmlNode *c = n ? n->children : NULL; c; c = c->next) {
        if (!vbx_is(c, "HardDisk"))
            continue;
        char *u = vbx_attr(c, "uuid");
        bool hit = u && !strcasecmp(u, uuid);
        free(u);
        if (hit)
            return c;
        const xmlNode *d = vbx_find_disk(c, uuid);
        if (d)
            return d;
    }
    return NULL;
}

/* The image to read for a disk: its location, or, for a differencing image,
 * a link to it in a private folder together with links to its parents. */
static char *vbx_image(struct vmfolder *v, const xmlNode *disk, size_t k, char *err, size_t errlen)
{
    char *loc = vbx_attr(disk, "location");
    if (!loc) {
        snprintf(err, errlen, "HardDisk without a location");
        return NULL;
    }
    char *leaf = vmf_path(v, loc);
    free(loc);
    if (!vbx_is(disk->parent, "HardDisk"))
        return leaf;                     /* a base image: read it as it is */
    if (!v->links[0]) {
        snprintf(v->links, sizeof v->links, "%s/.ovatool-chain.%d", v->outdir, (int)getpid());
        if (mkdir(v->links, 0700) < 0) {
            snprintf(err, errlen, "%s: %s", v->links, strerror(errno));
            v->links[0] = 0;
            free(leaf);
            return NULL;
        }
    }
    char *out = NULL;
    size_t depth = 0;
    for (const xmlNode *d = disk; vbx_is(d, "HardDisk") && depth < 64; d = d->parent, depth++) {
        char *l = vbx_attr(d, "location"), *p = l ? vmf_path(v, l) : NULL;
        free(l);
        if (!p || p[0] != '/') {         /* make the link absolute */
            char cwd[4096], *abs = malloc(8400);
            if (p && abs && getcwd(cwd, sizeof cwd))
                snprintf(abs, 8400, "%s/%s", cwd, p);
            free(p);
            p = abs;
        }
        char link[4400];
        snprintf(link, sizeof link, "%s/d%zu-%zu.vdi", v->links, k, depth);
        if (!p || symlink(p, link) < 0) {
            snprintf(err, errlen, "%s: %s", link, strerror(errno));
            free(p);
            free(out);
            free(leaf);
            return NULL;
        }
        free(p);
        if (!out)
            out = strdup(link);
    }
    free(leaf);
    return out;
}

static int vmf_read_vbox(struct vmfolder *v, const char *path, char *err, size_t errlen)
{
    xmlDoc *doc = xmlReadFile(path, NULL, XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (!doc) {
        snprintf(err, errlen, "%s: not well-formed XML", path);
        return -1;
    }
    xmlNode *root = xmlDocGetRootElement(doc), *m = NULL;
    for (xmlNode *c = root ? root->children : NULL; c; c = c->next)
        if (vbx_is(c, "Machine"))
            m = c;
    if (!vbx_is(root, "VirtualBox") || !m) {
        snprintf(err, errlen, "%s: not a VirtualBox machine (no <VirtualBox><Machine>)", path);
        xmlFreeDoc(doc);
        return -1;
    }
    struct ovf_appliance *a = &v->a;
    a->name = vbx_attr(m, "name");
    char *ost = vbx_attr(m, "OSType");
    const struct os_entry *os = os_from_ovf(NULL, ost, NULL);
    if (os) {
        char cim[16];
        snprintf(cim, sizeof cim, "%d", os->cim);
        a->os_id = strdup(cim);
        a->os_desc = strdup(os->desc);
    }
    a->os_type = ost;
    a->cpus = 1;
    a->memory_mib = 1024;
    a->has_cpus = a->has_memory = true;
    const xmlNode *reg = NULL, *ctrls = NULL;
    for (xmlNode *c = m->children; c; c = c->next) {
        if (vbx_is(c, "MediaRegistry"))
            for (xmlNode *h = c->children; h; h = h->next)
                if (vbx_is(h, "HardDisks"))
                    reg = h;
        if (vbx_is(c, "StorageControllers"))
            ctrls = c;
        if (!vbx_is(c, "Hardware"))
            continue;
        for (xmlNode *h = c->children; h; h = h->next) {
            char *s = NULL;
            if (vbx_is(h, "CPU") && (s = vbx_attr(h, "count")))
                a->cpus = (unsigned)atoi(s);
            else if (vbx_is(h, "Memory") && (s = vbx_attr(h, "RAMSize")))
                a->memory_mib = strtoull(s, NULL, 10);
            else if (vbx_is(h, "Firmware") && (s = vbx_attr(h, "type")) && !strncasecmp(s, "EFI", 3))
                a->firmware = strdup("efi");
            else if (vbx_is(h, "StorageControllers"))
                ctrls = h;           /* newer settings keep them in Hardware */
            else if (vbx_is(h, "Network"))
                for (xmlNode *ad = h->children; ad; ad = ad->next) {
                    char *en = vbx_is(ad, "Adapter") ? vbx_attr(ad, "enabled") : NULL;
                    char *ty = en ? vbx_attr(ad, "type") : NULL;
                    if (en && !strcmp(en, "true"))
                        vmf_add_nic(a, ty && !strncmp(ty, "Am79", 4) ? "PCNet32"
                                       : ty && !strcmp(ty, "virtio") ? "virtio" : "E1000");
                    free(en);
                    free(ty);
                }
            free(s);
        }
    }
    int r = 0;
    /* the current state's attachments (snapshots keep theirs in <Snapshot>) */
    for (xmlNode *sc = ctrls ? ctrls->children : NULL; r == 0 && sc; sc = sc->next) {
        if (!vbx_is(sc, "StorageController"))
            continue;
        char *nm = vbx_attr(sc, "name"), *ty = vbx_attr(sc, "type");
        char id[128];
        snprintf(id, sizeof id, "%s", nm ? nm : "ctrl");
        const char *t = ty ? ty : "AHCI";
        if (!strcasecmp(t, "AHCI"))
            vmf_add_ctrl(a, id, 20, "AHCI");
        else if (!strcasecmp(t, "NVMe"))
            vmf_add_ctrl(a, id, 20, "NVMe");
        else if (!strncasecmp(t, "PIIX", 4) || !strcasecmp(t, "ICH6"))
            vmf_add_ctrl(a, id, 5, t);
        else
            vmf_add_ctrl(a, id, 6, !strcasecmp(t, "VirtioSCSI") ? "virtio-scsi" : t);
        free(nm);
        free(ty);
        for (xmlNode *ad = sc->children; r == 0 && ad; ad = ad->next) {
            char *dt = vbx_is(ad, "AttachedDevice") ? vbx_attr(ad, "type") : NULL;
            char *port = dt ? vbx_attr(ad, "port") : NULL;
            if (dt && !strcmp(dt, "HardDisk")) {
                char *uuid = NULL;
                for (xmlNode *im = ad->children; im && !uuid; im = im->next)
                    if (vbx_is(im, "Image"))
                        uuid = vbx_attr(im, "uuid");
                const xmlNode *disk = uuid ? vbx_find_disk(reg, uuid) : NULL;
                char *src = disk ? vbx_image(v, disk, a->n_disks, err, errlen) : NULL;
                if (!disk)
                    snprintf(err, errlen, "%s: attached image %s is not in the media registry",
                             path, uuid ? uuid : "(no uuid)");
                if (!src || vmf_add_disk(v, id, port ? atoi(port) : 0, src) < 0)
                    r = -1;
                free(uuid);
            }
            free(dt);
            free(port);
        }
    }
    xmlFreeDoc(doc);
    return r;
}

/* ---- the import ---------------------------------------------------------- */

int vm_folder_import(const char *path, const struct import_opts *o)
{
    struct vmfolder v;
    memset(&v, 0, sizeof v);
    char err[8192] = "";
    snprintf(v.dir, sizeof v.dir, "%s", path);
    char *slash = strrchr(v.dir, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(v.dir, sizeof v.dir, ".");
    size_t l = strlen(path);
    bool vbox = l > 5 && !strcasecmp(path + l - 5, ".vbox");
    struct import_disk d[VMF_MAX_DISKS];
    size_t nd = 0;
    int rc;
    const char *failed = err;     /* NULL once every disk is converted */
    v.outdir = o->outdir;
    if (mkdir(o->outdir, 0755) < 0 && errno != EEXIST) {
        snprintf(err, sizeof err, "%s: %s", o->outdir, strerror(errno));
        goto out;
    }
    if ((vbox ? vmf_read_vbox(&v, path, err, sizeof err) : vmf_read_vmx(&v, path, err, sizeof err)) < 0)
        goto out;
    char name[256];
    if (!safe_vm_name(v.a.name, path, name, sizeof name))
        fprintf(stderr, "ovatool: %s: warning: VM name '%s' is not usable as a file or domain "
                "name; using '%s'\n", path, v.a.name ? v.a.name : "", name);
    free(v.a.name);
    v.a.name = strdup(name);
    for (size_t i = 0; i < v.a.n_disks; i++) {
        char dst[4600];
        snprintf(dst, sizeof dst, "%s/%s-disk%zu.%s", o->outdir, name, i + 1, o->format);
        if (access(dst, F_OK) == 0) {
            snprintf(err, sizeof err, "%s: already exists; not overwritten", dst);
            goto out;
        }
        if (disk_convert(v.src[i], NULL, NULL, dst, o->format, NULL, 0, o->progress,
                         v.links[0] && !strncmp(v.src[i], v.links, strlen(v.links)), NULL, err,
                         sizeof err) < 0)
            goto out;
        d[nd++] = (struct import_disk){ .disk = &v.a.disks[i], .path = realpath(dst, NULL),
                                        .format = o->format };
        fprintf(o->json ? stderr : stdout, "disk %zu: %s (from %s)\n", nd, dst, v.src[i]);
    }
    failed = NULL;
out:
    rc = import_conclude(&v.a, d, nd, name, o, failed);
    for (size_t i = 0; i < v.a.n_disks; i++)
        free(v.src[i]);
    if (v.links[0]) {                    /* remove the chain links */
        for (size_t k = 0; k < VMF_MAX_DISKS; k++)
            for (size_t dd = 0; dd < 64; dd++) {
                char link[4400];
                snprintf(link, sizeof link, "%s/d%zu-%zu.vdi", v.links, k, dd);
                if (unlink(link) < 0 && dd)
                    break;
            }
        rmdir(v.links);
    }
    ovf_free(&v.a);
    return rc;
}
