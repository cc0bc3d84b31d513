/* libvirt.c - what an imported appliance becomes on KVM: a libvirt domain
 * (`virsh define`-ready) and an equivalent qemu command line.  Disks keep the
 * bus the OVF gave them (IDE/SATA/SCSI: a Windows guest without virtio drivers
 * still boots) unless --virtio asks for virtio. */
#include "ovatool.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void xml_escape(const char *in, char *out, size_t outlen)
{
    size_t n = 0;
    for (; in && *in && n + 7 < outlen; in++) {
        const char *rep = NULL;
        switch (*in) {
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '&': rep = "&amp;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&apos;"; break;
        }
        if (rep) {
            n += (size_t)snprintf(out + n, outlen - n, "%s", rep);
        } else if ((unsigned char)*in >= 0x20 || *in == '\t') {
            out[n++] = *in;
        }
    }
    out[n] = 0;
}


enum lv_bus { LV_VIRTIO, LV_IDE, LV_SCSI, LV_SATA, LV_NVME };
/* libvirt 9 has no NVMe disk bus: an NVMe disk goes on AHCI there (every
 * guest with an NVMe driver has an AHCI one); the qemu line uses nvme. */
static const char *const lv_bus_names[] = { "virtio", "ide", "scsi", "sata", "sata" };

/* Each SCSI controller an OVF names, as libvirt and qemu call it. */
struct lv_scsi { const char *ovf, *libvirt, *qemu; };
static const struct lv_scsi lv_scsi_models[] = {
    { "lsilogic", "lsilogic", "lsi53c895a" },
    { "lsilogicsas", "lsisas1068", "mptsas1068" },      /* LSI SAS 1068 */
    { "VirtualSCSI", "vmpvscsi", "pvscsi" },            /* VMware paravirtual */
    { "pvscsi", "vmpvscsi", "pvscsi" },
    { "virtio-scsi", "virtio-scsi", "virtio-scsi-pci" },
    /* qemu has no BusLogic HBA; LSI Logic is what guests of that age drive */
    { "buslogic", "lsilogic", "lsi53c895a" },
};

static const struct lv_scsi *lv_scsi_model(const struct ovf_controller *c)
{
    for (size_t i = 0; c && c->subtype && i < sizeof lv_scsi_models / sizeof lv_scsi_models[0]; i++)
        if (!strcasecmp(c->subtype, lv_scsi_models[i].ovf))
            return &lv_scsi_models[i];
    return &lv_scsi_models[0];
}

/* The bus for a disk: from its OVF controller unless the import chose
 * virtio.  A CD-ROM stays on its OVF bus (there is no virtio CD-ROM). */
static enum lv_bus lv_bus(const struct ovf_appliance *a, const struct import_disk *d,
                          const struct lv_hw *hw)
{
    if (hw->disks == DM_VIRTIO_BLK && !d->cdrom)
        return LV_VIRTIO;
    if (hw->disks == DM_VIRTIO_SCSI && !d->cdrom)
        return LV_SCSI;
    const struct ovf_controller *c = ovf_find_ctrl(a, d->disk ? d->disk->parent : NULL);
    if (!c)
        return d->cdrom ? LV_SATA : LV_VIRTIO;
    if (c->resource_type == 5)
        return LV_IDE;
    if (c->resource_type == 6)
        return LV_SCSI;
    if (c->subtype && strcasestr(c->subtype, "nvme"))
        return LV_NVME;
    return LV_SATA;
}

/* The guest driver a disk on its OVF controller needs, as the domain and
 * the qemu line attach it (IDE and NVMe disks are on q35's AHCI in the
 * domain; qemu's LSI Logic is the 53C895A that sym53c8xx drives), and the
 * bus's name for messages. */
enum gd_drv lv_ovf_driver(const struct ovf_appliance *a, const struct import_disk *d,
                          const char **bus)
{
    static const struct lv_hw ovf = { DM_OVF, false, false };
    const struct ovf_controller *c = ovf_find_ctrl(a, d->disk ? d->disk->parent : NULL);
    switch (lv_bus(a, d, &ovf)) {
    case LV_VIRTIO: *bus = "virtio"; return GD_VIRTIO_BLK;
    case LV_IDE: *bus = "IDE"; return GD_AHCI;
    case LV_NVME: *bus = "NVMe"; return GD_AHCI;
    case LV_SATA: *bus = "SATA"; return GD_AHCI;
    case LV_SCSI: break;
    }
    const char *q = lv_scsi_model(c)->qemu;
    *bus = c && c->subtype ? c->subtype : "SCSI";
    if (!strcmp(q, "mptsas1068"))
        return GD_MPTSAS;
    if (!strcmp(q, "pvscsi"))
        return GD_VMW_PVSCSI;
    if (!strcmp(q, "virtio-scsi-pci"))
        return GD_VIRTIO_SCSI;
    return GD_SYM53C8XX;
}

static enum lv_bus lv_q35_bus(enum lv_bus b);

/* vdboot's --disk-bus for a disk as the domain attaches it. */
const char *lv_vdboot_bus(const struct ovf_appliance *a, const struct import_disk *d,
                          const struct lv_hw *hw)
{
    static const char *const names[] = { "virtio", "sata", "scsi", "sata", "sata" };
    return names[lv_q35_bus(lv_bus(a, d, hw))];
}

/* libvirt refuses IDE on q35: its disks go on the chipset's AHCI (SATA)
 * ports, which the same guests drive (the qemu line's if=ide does this). */
static enum lv_bus lv_q35_bus(enum lv_bus b)
{
    return b == LV_IDE || b == LV_NVME ? LV_SATA : b;
}

static const char *lv_nic_model(const struct ovf_nic *n, bool virtio)
{
    if (virtio || !n->model)
        return "virtio";
    if (!strcasecmp(n->model, "E1000") || !strcasecmp(n->model, "E1000e"))
        return "e1000";
    if (!strcasecmp(n->model, "PCNet32"))
        return "pcnet";
    if (!strcasecmp(n->model, "VmxNet3"))
        return "vmxnet3";
    return "virtio";
}

static bool lv_is_windows(const struct ovf_appliance *a)
{
    const struct os_entry *os = os_from_ovf(a->os_id, a->os_type, a->os_desc);
    if (os)
        return os->windows;
    const char *t = a->os_type ? a->os_type : a->os_desc;
    return t && (strcasestr(t, "win") != NULL);
}

char *libvirt_domain_xml(const struct ovf_appliance *a, const struct import_disk *d,
                         size_t n, const struct lv_hw *hw)
{
    struct sbuf b = { 0 };
    char name[512];
    xml_escape(a->name ? a->name : "appliance", name, sizeof name);
    sb_printf(&b, "<domain type='kvm'>\n  <name>%s</name>\n", name);
    /* virt-manager and virt-install read the guest OS from here */
    const struct os_entry *os = os_from_ovf(a->os_id, a->os_type, a->os_desc);
    if (os && os->libosinfo)
        sb_printf(&b, "  <metadata>\n    <libosinfo:libosinfo "
                  "xmlns:libosinfo='http://libosinfo.org/xmlns/libvirt/domain/1.0'>\n"
                  "      <libosinfo:os id='%s'/>\n    </libosinfo:libosinfo>\n  </metadata>\n",
                  os->libosinfo);
    sb_printf(&b, "  <memory unit='MiB'>%llu</memory>\n  <vcpu>%u</vcpu>\n",
              (unsigned long long)(a->memory_mib ? a->memory_mib : 1024), a->cpus ? a->cpus : 1);
    sb_printf(&b, "  <os%s>\n    <type arch='x86_64' machine='q35'>hvm</type>\n"
              "    <boot dev='hd'/>\n  </os>\n",
              a->firmware && !strcmp(a->firmware, "efi") ? " firmware='efi'" : "");
    sb_printf(&b, "  <features>\n    <acpi/>\n    <apic/>\n  </features>\n"
              "  <cpu mode='host-model'/>\n  <clock offset='%s'/>\n",
              lv_is_windows(a) ? "localtime" : "utc");
    sb_printf(&b, "  <devices>\n");
    unsigned count[5] = { 0 };   /* virtio, ide, scsi, sata, nvme */
    /* One libvirt SCSI controller per OVF SCSI controller a disk uses, of
     * the same model; its disks get units on it in order. */
    const struct ovf_controller *scsi[16] = { 0 };
    unsigned scsi_units[16] = { 0 }, n_scsi = 0;
    for (size_t i = 0; i < n; i++) {
        enum lv_bus k = lv_q35_bus(lv_bus(a, &d[i], hw));
        char dev[16], path[4200], addr[160] = "";
        snprintf(dev, sizeof dev, "%s%c", k == LV_VIRTIO ? "vd" : "sd",
                 'a' + (k == LV_VIRTIO ? count[k] : count[LV_SCSI] + count[LV_SATA]) % 26);
        count[k]++;
        if (k == LV_SCSI) {
            const struct ovf_controller *c = ovf_find_ctrl(a, d[i].disk ? d[i].disk->parent : NULL);
            unsigned ci = 0;
            while (ci < n_scsi && scsi[ci] != c)
                ci++;
            if (ci == n_scsi && n_scsi < 16)
                scsi[n_scsi++] = c;
            if (ci < 16)
                snprintf(addr, sizeof addr, "      <address type='drive' controller='%u' bus='0' "
                         "target='0' unit='%u'/>\n", ci, scsi_units[ci]++);
        }
        xml_escape(d[i].path, path, sizeof path);
        sb_printf(&b, "    <disk type='file' device='%s'>\n"
                  "      <driver name='qemu' type='%s'/>\n"
                  "      <source file='%s'/>\n"
                  "      <target dev='%s' bus='%s'/>\n%s%s    </disk>\n",
                  d[i].cdrom ? "cdrom" : "disk",
                  !strcmp(d[i].format, "vhd") ? "vpc" : d[i].format, path, dev, lv_bus_names[k],
                  d[i].cdrom ? "      <readonly/>\n" : "", addr);
    }
    for (unsigned i = 0; i < n_scsi; i++)
        sb_printf(&b, "    <controller type='scsi' index='%u' model='%s'/>\n", i,
                  hw->disks != DM_OVF ? "virtio-scsi" : lv_scsi_model(scsi[i])->libvirt);
    for (size_t i = 0; i < a->n_nics; i++)
        sb_printf(&b, "    <interface type='network'>\n      <source network='default'/>\n"
                  "      <model type='%s'/>\n    </interface>\n",
                  lv_nic_model(&a->nics[i], hw->virtio_nic));
    sb_printf(&b, "    <serial type='pty'/>\n    <console type='pty'/>\n"
              "    <graphics type='vnc' autoport='yes'/>\n    <video><model type='vga'/></video>\n"
              "  </devices>\n</domain>\n");
    return b.s;
}

/* The same VM for Xen (libxl): a fully virtualized (HVM) domain, which
 * boots any guest the OVF describes through its own BIOS or UEFI (hvmloader,
 * or OVMF); a PV domain would need the guest kernel's Xen PV entry point,
 * which is not read here.  Disks are Xen PV disks (xvdX, bus xen) when the
 * guest has xen_blkfront, else the emulated IDE disks of an HVM guest
 * (ata_piix); CD-ROMs are IDE.  NICs are emulated e1000 on xenbr0. */
char *xen_domain_xml(const struct ovf_appliance *a, const struct import_disk *d, size_t n,
                     const struct lv_hw *hw)
{
    struct sbuf b = { 0 };
    char name[512];
    xml_escape(a->name ? a->name : "appliance", name, sizeof name);
    bool efi = a->firmware && !strcmp(a->firmware, "efi");
    sb_printf(&b, "<domain type='xen'>\n  <name>%s</name>\n"
              "  <memory unit='MiB'>%llu</memory>\n  <vcpu>%u</vcpu>\n"
              "  <os>\n    <type arch='x86_64' machine='xenfv'>hvm</type>\n"
              "    %s\n    <boot dev='hd'/>\n  </os>\n"
              "  <features>\n    <acpi/>\n    <apic/>\n    <pae/>\n  </features>\n"
              "  <clock offset='%s'/>\n  <on_poweroff>destroy</on_poweroff>\n"
              "  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n  <devices>\n"
              "    <emulator>/usr/lib/xen/bin/qemu-system-i386</emulator>\n", name,
              (unsigned long long)(a->memory_mib ? a->memory_mib : 1024), a->cpus ? a->cpus : 1,
              efi ? "<loader type='pflash'>/usr/lib/xen/boot/ovmf.bin</loader>"
                  : "<loader>/usr/lib/xen/boot/hvmloader</loader>",
              lv_is_windows(a) ? "localtime" : "utc");
    unsigned nxvd = 0, nide = 0;
    for (size_t i = 0; i < n; i++) {
        char dev[16], path[4200];
        bool pv = hw->xen_pv_disks && !d[i].cdrom;
        if (pv)
            snprintf(dev, sizeof dev, "xvd%c", 'a' + nxvd++ % 26);
        else
            snprintf(dev, sizeof dev, "hd%c", 'a' + nide++ % 26);
        xml_escape(d[i].path, path, sizeof path);
        sb_printf(&b, "    <disk type='file' device='%s'>\n"
                  "      <driver name='qemu' type='%s'/>\n      <source file='%s'/>\n"
                  "      <target dev='%s' bus='%s'/>\n%s    </disk>\n",
                  d[i].cdrom ? "cdrom" : "disk",
                  !strcmp(d[i].format, "vhd") ? "vpc" : d[i].format, path, dev, pv ? "xen" : "ide",
                  d[i].cdrom ? "      <readonly/>\n" : "");
    }
    for (size_t i = 0; i < a->n_nics; i++)
        sb_printf(&b, "    <interface type='bridge'>\n      <source bridge='xenbr0'/>\n"
                  "      <model type='e1000'/>\n    </interface>\n");
    sb_printf(&b, "    <serial type='pty'/>\n    <console type='pty'/>\n"
              "    <graphics type='vnc' autoport='yes'/>\n  </devices>\n</domain>\n");
    return b.s;
}

/* Shell-quote into `out` with single quotes. */
static void sh_quote(const char *in, char *out, size_t outlen)
{
    size_t n = 0;
    out[n++] = '\'';
    for (; *in && n + 6 < outlen; in++) {
        if (*in == '\'') {
            memcpy(out + n, "'\\''", 4);
            n += 4;
        } else {
            out[n++] = *in;
        }
    }
    out[n++] = '\'';
    out[n] = 0;
}

char *qemu_command_line(const struct ovf_appliance *a, const struct import_disk *d,
                        size_t n, const struct lv_hw *hw)
{
    struct sbuf b = { 0 };
    char q[4400];
    sh_quote(a->name ? a->name : "appliance", q, sizeof q);
    sb_printf(&b, "#!/bin/sh\n# Generated by ovatool import: runs the appliance under KVM.\n"
              "# Without hardware virtualization: QEMU_ACCEL=tcg QEMU_CPU=max %s\n"
              "exec qemu-system-x86_64 -accel \"${QEMU_ACCEL:-kvm}\" -machine q35 "
              "-cpu \"${QEMU_CPU:-host}\" -name %s \\\n"
              "  -m %llu -smp %u -display none \\\n", "$0", q,
              (unsigned long long)(a->memory_mib ? a->memory_mib : 1024), a->cpus ? a->cpus : 1);
    if (a->firmware && !strcmp(a->firmware, "efi"))
        sb_printf(&b, "  -bios /usr/share/ovmf/OVMF.fd \\\n");
    for (size_t i = 0; i < n; i++) {
        enum lv_bus bus = lv_bus(a, &d[i], hw);
        const char *hba = hw->disks != DM_OVF ? "virtio-scsi-pci" :
            lv_scsi_model(ovf_find_ctrl(a, d[i].disk ? d[i].disk->parent : NULL))->qemu;
        sh_quote(d[i].path, q, sizeof q);
        const char *fmt = !strcmp(d[i].format, "vhd") ? "vpc" : d[i].format;
        if (d[i].cdrom && bus == LV_SCSI)
            sb_printf(&b, "  -device %s,id=scsi%zu -drive file=%s,format=raw,if=none,"
                      "id=d%zu,media=cdrom,readonly=on -device scsi-cd,drive=d%zu,bus=scsi%zu.0 \\\n",
                      hba, i, q, i, i, i);
        else if (d[i].cdrom)   /* IDE or SATA: q35's AHCI */
            sb_printf(&b, "  -drive file=%s,format=raw,if=none,id=d%zu,media=cdrom,readonly=on "
                      "-device ide-cd,drive=d%zu \\\n", q, i, i);
        else if (bus == LV_NVME)
            sb_printf(&b, "  -drive file=%s,format=%s,if=none,id=d%zu -device nvme,serial=d%zu,"
                      "drive=d%zu \\\n", q, fmt, i, i, i);
        else if (bus == LV_VIRTIO || bus == LV_IDE)
            sb_printf(&b, "  -drive file=%s,format=%s,if=%s \\\n", q, fmt, lv_bus_names[bus]);
        else if (bus == LV_SATA)   /* q35's built-in AHCI */
            sb_printf(&b, "  -drive file=%s,format=%s,if=none,id=d%zu -device ide-hd,drive=d%zu \\\n",
                      q, fmt, i, i);
        else
            sb_printf(&b, "  -device %s,id=scsi%zu -drive file=%s,format=%s,if=none,id=d%zu "
                      "-device scsi-hd,drive=d%zu,bus=scsi%zu.0 \\\n",
                      hba, i, q, fmt, i, i, i);
    }
    for (size_t i = 0; i < a->n_nics; i++) {
        const char *m = lv_nic_model(&a->nics[i], hw->virtio_nic);
        sb_printf(&b, "  -nic user,model=%s \\\n", !strcmp(m, "virtio") ? "virtio-net-pci" : m);
    }
    sb_printf(&b, "  -serial mon:stdio \"$@\"\n");
    return b.s;
}
