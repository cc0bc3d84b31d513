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

/* The bus for a disk: from its OVF controller unless virtio.  A CD-ROM
 * stays on its OVF bus even with --virtio (there is no virtio CD-ROM). */
static enum lv_bus lv_bus(const struct ovf_appliance *a, const struct import_disk *d, bool virtio)
{
    if (virtio && !d->cdrom)
        return LV_VIRTIO;
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
                         size_t n, bool virtio)
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
        enum lv_bus k = lv_q35_bus(lv_bus(a, &d[i], virtio));
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
                  virtio ? "virtio-scsi" : lv_scsi_model(scsi[i])->libvirt);
    for (size_t i = 0; i < a->n_nics; i++)
        sb_printf(&b, "    <interface type='network'>\n      <source network='default'/>\n"
                  "      <model type='%s'/>\n    </interface>\n",
                  lv_nic_model(&a->nics[i], virtio));
    sb_printf(&b, "    <serial type='pty'/>\n    <console type='pty'/>\n"
              "    <graphics type='vnc' autoport='yes'/>\n    <video><model type='vga'/></video>\n"
              "  </devices>\n</domain>\n");
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
                        size_t n, bool virtio)
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
        enum lv_bus bus = lv_bus(a, &d[i], virtio);
        sh_quote(d[i].path, q, sizeof q);
        const char *fmt = !strcmp(d[i].format, "vhd") ? "vpc" : d[i].format;
        if (d[i].cdrom && bus == LV_SCSI)
            sb_printf(&b, "  -device %s,id=scsi%zu -drive file=%s,format=raw,if=none,"
                      "id=d%zu,media=cdrom,readonly=on -device scsi-cd,drive=d%zu,bus=scsi%zu.0 \\\n",
                      lv_scsi_model(ovf_find_ctrl(a, d[i].disk ? d[i].disk->parent : NULL))->qemu,
                      i, q, i, i, i);
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
                      lv_scsi_model(ovf_find_ctrl(a, d[i].disk ? d[i].disk->parent : NULL))->qemu,
                      i, q, fmt, i, i, i);
    }
    for (size_t i = 0; i < a->n_nics; i++) {
        const char *m = lv_nic_model(&a->nics[i], virtio);
        sb_printf(&b, "  -nic user,model=%s \\\n", !strcmp(m, "virtio") ? "virtio-net-pci" : m);
    }
    sb_printf(&b, "  -serial mon:stdio \"$@\"\n");
    return b.s;
}
