/* ovf-write.c - write an OVF 1.0 or 2.0 descriptor that validates against
 * the DMTF DSP8023 schema.  The flavour (--target) picks what the importer
 * expects: VirtualSystemType "vmx-NN" and an LSI Logic SCSI controller for
 * VMware/ESXi, "virtualbox-2.2" and a SATA (AHCI) controller for VirtualBox. */
#include "ovatool.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>


struct rasd { const char *name; char value[256]; };

static int ovfw_rasd_cmp(const void *x, const void *y)
{
    return strcmp(((const struct rasd *)x)->name, ((const struct rasd *)y)->name);
}

/* One <Item>: the CIM RASD schema is an xs:sequence in alphabetical order,
 * so the elements are sorted by name before writing. */
static void ovfw_item(struct sbuf *b, struct rasd *r, size_t n)
{
    qsort(r, n, sizeof *r, ovfw_rasd_cmp);
    sb_printf(b, "      <Item>\n");
    for (size_t i = 0; i < n; i++)
        sb_printf(b, "        <rasd:%s>%s</rasd:%s>\n", r[i].name, r[i].value, r[i].name);
    sb_printf(b, "      </Item>\n");
}

static void ovfw_set(struct rasd *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void ovfw_set(struct rasd *r, const char *name, const char *fmt, ...)
{
    va_list ap;
    r->name = name;
    va_start(ap, fmt);
    vsnprintf(r->value, sizeof r->value, fmt, ap);
    va_end(ap);
}

/* A controller as the target's importer names it (what lint accepts for
 * that target): the kind is kept (IDE, SATA, NVMe, each SCSI model) where
 * the target has it; VirtualBox has no VMware paravirtual SCSI (LSI Logic
 * instead).  Generic OVF keeps the subtype as given. */
static void ovfw_ctrl(const struct ovf_controller *c, bool vmware, bool vbox, int *type,
                      const char **sub)
{
    const char *s = c->subtype ? c->subtype : "";
    *type = c->resource_type;
    *sub = s;
    if (c->resource_type == 5) {
        *sub = "PIIX4";
    } else if (c->resource_type == 6) {
        static const char *const known[] = { "lsilogic", "lsilogicsas", "buslogic", "VirtualSCSI" };
        *sub = "lsilogic";
        for (size_t i = 0; i < 4; i++)
            if (!strcasecmp(s, known[i]) && !(vbox && i == 3))
                *sub = known[i];
        if (!vmware && !vbox && *s)
            *sub = s;
    } else {
        bool nvme = strcasestr(s, "nvme") != NULL;
        *type = 20;
        if (vmware)
            *sub = nvme ? "vmware.nvme.controller" : "vmware.sata.ahci";
        else if (vbox || !*s)
            *sub = nvme ? "NVMe" : "AHCI";
    }
}

/* The InstanceID the i-th controller gets (3 is the single default one). */
static unsigned ovfw_ctrl_id(size_t i)
{
    return i == 0 ? 3 : 30 + (unsigned)i;
}

char *ovf_write(const struct ovf_appliance *a, int version, const char *target)
{
    struct sbuf b = { 0 };
    bool vmware = target && (!strcmp(target, "vmware") || !strcmp(target, "esxi"));
    bool vbox = target && !strcmp(target, "virtualbox");
    /* vSphere's default port group; VirtualBox attaches "NAT" to its NAT engine */
    const char *net = vmware ? "VM Network" : "NAT";
    const char *ns = version == 2 ? "http://schemas.dmtf.org/ovf/envelope/2"
                                  : "http://schemas.dmtf.org/ovf/envelope/1";
    char name[512], os[512];
    xml_escape(a->name, name, sizeof name);
    xml_escape(a->os_desc ? a->os_desc : (a->os_type ? a->os_type : "Other"), os, sizeof os);
    sb_printf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    sb_printf(&b, "<Envelope xmlns=\"%s\" xmlns:ovf=\"%s\" "
          "xmlns:rasd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData\" "
          "xmlns:vssd=\"http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData\" "
          "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"%s ovf:version=\"%s\">\n",
      ns, ns, vmware ? " xmlns:vmw=\"http://www.vmware.com/schema/ovf\""
                     : vbox ? " xmlns:vbox=\"http://www.virtualbox.org/ovf/machine\"" : "",
      version == 2 ? "2.0" : "1.0");
    sb_printf(&b, "  <References>\n");
    for (size_t i = 0; i < a->n_files; i++)
        sb_printf(&b, "    <File ovf:href=\"%s\" ovf:id=\"%s\" ovf:size=\"%llu\"/>\n", a->files[i].href,
          a->files[i].id, (unsigned long long)a->files[i].size);
    sb_printf(&b, "  </References>\n");
    sb_printf(&b, "  <DiskSection>\n    <Info>Virtual disk information</Info>\n");
    for (size_t i = 0; i < a->n_disks; i++)
        sb_printf(&b, "    <Disk ovf:capacity=\"%llu\" ovf:capacityAllocationUnits=\"byte\" "
              "ovf:diskId=\"%s\" ovf:fileRef=\"%s\" ovf:format=\"%s\" "
              "ovf:populatedSize=\"%llu\"/>\n",
          (unsigned long long)a->disks[i].capacity, a->disks[i].id, a->disks[i].file_ref,
          a->disks[i].cdrom ? OVF_ISO_FORMAT
                            : "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized",
          (unsigned long long)a->disks[i].populated);
    sb_printf(&b, "  </DiskSection>\n");
    sb_printf(&b, "  <NetworkSection>\n    <Info>The list of logical networks</Info>\n"
          "    <Network ovf:name=\"%s\">\n      <Description>The %s network</Description>\n"
          "    </Network>\n  </NetworkSection>\n", net, net);
    sb_printf(&b, "  <VirtualSystem ovf:id=\"%s\">\n    <Info>A virtual machine</Info>\n"
          "    <Name>%s</Name>\n", name, name);
    /* The CIM number for every importer; VMware reads its guestOS id from
     * vmw:osType, VirtualBox its OSType from a vbox:OSType element. */
    char ostype[256] = "";
    if (a->os_type)
        xml_escape(a->os_type, ostype, sizeof ostype);
    sb_printf(&b, "    <OperatingSystemSection ovf:id=\"%s\"", a->os_id ? a->os_id : "1");
    if (vmware && ostype[0])
        sb_printf(&b, " vmw:osType=\"%s\"", ostype);
    sb_printf(&b, ">\n      <Info>The guest operating system</Info>\n"
          "      <Description>%s</Description>\n", os);
    if (vbox && ostype[0])
        sb_printf(&b, "      <vbox:OSType ovf:required=\"false\">%s</vbox:OSType>\n", ostype);
    sb_printf(&b, "    </OperatingSystemSection>\n");
    sb_printf(&b, "    <VirtualHardwareSection>\n      <Info>Virtual hardware requirements</Info>\n"
          "      <System>\n        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>\n"
          "        <vssd:InstanceID>0</vssd:InstanceID>\n"
          "        <vssd:VirtualSystemIdentifier>%s</vssd:VirtualSystemIdentifier>\n"
          "        <vssd:VirtualSystemType>%s</vssd:VirtualSystemType>\n      </System>\n",
      name, vmware ? (strcmp(target, "esxi") ? "vmx-10" : "vmx-13") : "virtualbox-2.2");
    struct rasd r[8];
    ovfw_set(&r[0], "AllocationUnits", "hertz * 10^6");
    ovfw_set(&r[1], "Caption", "%u virtual CPU(s)", a->cpus ? a->cpus : 1);
    ovfw_set(&r[2], "ElementName", "%u virtual CPU(s)", a->cpus ? a->cpus : 1);
    ovfw_set(&r[3], "InstanceID", "1");
    ovfw_set(&r[4], "ResourceType", "3");
    ovfw_set(&r[5], "VirtualQuantity", "%u", a->cpus ? a->cpus : 1);
    ovfw_item(&b, r, 6);
    unsigned long long mem = a->memory_mib ? a->memory_mib : 1024;
    ovfw_set(&r[0], "AllocationUnits", "byte * 2^20");
    ovfw_set(&r[1], "Caption", "%llu MB of memory", mem);
    ovfw_set(&r[2], "ElementName", "%llu MB of memory", mem);
    ovfw_set(&r[3], "InstanceID", "2");
    ovfw_set(&r[4], "ResourceType", "4");
    ovfw_set(&r[5], "VirtualQuantity", "%llu", mem);
    ovfw_item(&b, r, 6);
    /* The appliance's controllers (convert keeps them), else the one the
     * target uses by default; each disk on its own controller. */
    if (a->n_ctrls == 0) {
        ovfw_set(&r[0], "Address", "0");
        ovfw_set(&r[1], "ElementName", vmware ? "SCSI Controller 0" : "SATA Controller 0");
        ovfw_set(&r[2], "InstanceID", "3");
        ovfw_set(&r[3], "ResourceSubType", vmware ? "lsilogic" : "AHCI");
        ovfw_set(&r[4], "ResourceType", vmware ? "6" : "20");
        ovfw_item(&b, r, 5);
    }
    unsigned per_type[32] = { 0 }, units[64] = { 0 };
    for (size_t i = 0; i < a->n_ctrls; i++) {
        int type;
        const char *sub;
        ovfw_ctrl(&a->ctrls[i], vmware, vbox, &type, &sub);
        static const char *const kind[] = { [5] = "IDE", [6] = "SCSI", [20] = "SATA" };
        ovfw_set(&r[0], "Address", "%u", per_type[type & 31]++);
        ovfw_set(&r[1], "ElementName", "%s Controller %u", kind[type & 31] ? kind[type & 31] : "Disk",
                 per_type[type & 31] - 1);
        ovfw_set(&r[2], "InstanceID", "%u", ovfw_ctrl_id(i));
        ovfw_set(&r[3], "ResourceSubType", "%s", sub);
        ovfw_set(&r[4], "ResourceType", "%d", type);
        ovfw_item(&b, r, 5);
    }
    for (size_t i = 0; i < a->n_disks; i++) {
        const struct ovf_disk *d = &a->disks[i];
        size_t ci = 0;
        while (ci < a->n_ctrls && (!d->parent || !a->ctrls[ci].instance_id ||
                                   strcmp(d->parent, a->ctrls[ci].instance_id)))
            ci++;
        if (ci == a->n_ctrls)
            ci = 0;        /* no (known) parent: the first controller */
        unsigned unit = d->address >= 0 ? (unsigned)d->address : units[ci & 63];
        units[ci & 63] = unit + 1 > units[ci & 63] ? unit + 1 : units[ci & 63];
        ovfw_set(&r[0], "AddressOnParent", "%u", a->n_ctrls ? unit : (unsigned)i);
        ovfw_set(&r[1], "ElementName", "%s%zu", d->cdrom ? "cdrom" : "disk", i + 1);
        ovfw_set(&r[2], "HostResource", "ovf:/disk/%s", d->id);
        ovfw_set(&r[3], "InstanceID", "%zu", 10 + i);
        ovfw_set(&r[4], "Parent", "%u", ovfw_ctrl_id(ci));
        ovfw_set(&r[5], "ResourceType", d->cdrom ? "15" : "17");
        ovfw_item(&b, r, 6);
    }
    /* The NICs the appliance has (one when it says none), as models the
     * target's importer knows; anything else becomes an E1000. */
    for (size_t i = 0; i < (a->n_nics ? a->n_nics : 1); i++) {
        const char *m = a->n_nics ? a->nics[i].model : NULL;
        static const char *const vmw_models[] = { "E1000", "E1000e", "VmxNet3", "PCNet32", NULL };
        static const char *const vbox_models[] = { "E1000", "PCNet32", NULL };
        const char *const *ok = vmware ? vmw_models : vbox_models;
        const char *use = "E1000";
        for (size_t k = 0; m && ok[k]; k++)
            if (!strcasecmp(m, ok[k]))
                use = ok[k];
        ovfw_set(&r[0], "AutomaticAllocation", "true");
        ovfw_set(&r[1], "Connection", "%s", net);
        ovfw_set(&r[2], "ElementName", "Ethernet adapter %zu", i + 1);
        ovfw_set(&r[3], "InstanceID", "%zu", 5 + (i ? 100 + i : 0));
        ovfw_set(&r[4], "ResourceSubType", "%s", use);
        ovfw_set(&r[5], "ResourceType", "10");
        ovfw_item(&b, r, 6);
    }
    /* vSphere reads EFI firmware from this extra config key */
    if (vmware && a->firmware && !strcmp(a->firmware, "efi"))
        sb_printf(&b, "      <vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" "
                  "vmw:value=\"efi\"/>\n");
    sb_printf(&b, "    </VirtualHardwareSection>\n  </VirtualSystem>\n</Envelope>\n");
    return b.s;
}
