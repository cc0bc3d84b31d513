/* fuzz-ovf.c - libFuzzer target: OVF descriptor parsing (libxml2 with
 * entities and network off, then the envelope walk of ovf-parse.c) and, when
 * it parses, writing it back out as OVF 1 and 2, since export and the libvirt
 * writer carry parsed strings.  A manifest parse of the same bytes covers
 * manifest.c's line parser. */
#include "ovatool.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024];
    struct ovf_appliance a;
    memset(&a, 0, sizeof a);
    if (ovf_parse((const char *)data, size, "fuzz.ovf", &a, err, sizeof err) == 0) {
        free(ovf_write(&a, 1, NULL));
        free(ovf_write(&a, 2, "vmware"));
        struct import_disk d[4];
        size_t n = 0;
        for (size_t i = 0; i < a.n_disks && n < 4; i++, n++)
            d[n] = (struct import_disk){ .disk = &a.disks[i], .path = "/x/disk'<&>.qcow2",
                                         .format = "qcow2", .cdrom = ovf_disk_is_cdrom(&a.disks[i]) };
        static const struct lv_hw ovf_bus = { DM_OVF, false, false };
        static const struct lv_hw vscsi = { DM_VIRTIO_SCSI, true, true };
        free(libvirt_domain_xml(&a, d, n, &ovf_bus));
        free(qemu_command_line(&a, d, n, &vscsi));
        free(xen_domain_xml(&a, d, n, &vscsi));
        const char *bus;
        for (size_t i = 0; i < n; i++)
            (void)lv_ovf_driver(&a, &d[i], &bus);
    }
    ovf_free(&a);
    struct manifest m;
    memset(&m, 0, sizeof m);
    if (mf_parse((const char *)data, size, "fuzz.mf", &m, err, sizeof err) == 0)
        mf_free(&m);
    return 0;
}
