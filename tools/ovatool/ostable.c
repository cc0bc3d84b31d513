/* ostable.c - the one table of guest operating systems ovatool knows:
 * vdisk's own name, the CIM_OperatingSystem OSType number an OVF's
 * OperatingSystemSection carries (ovf:id), the VMware guestOS id
 * (vmw:osType), the VirtualBox OSType (vbox:OSType) and the libosinfo id
 * for the libvirt domain.  Export, lint, convert and import all use it.
 *
 * CIM numbers are those of the DMTF CIM_OperatingSystem.OSType value map
 * (e.g. 67 is Windows XP, 105 Windows 7, 120 Windows 10 64-bit).  The value
 * map has no entries for Windows 11 or Windows Server 2019/2022; those carry
 * the nearest older id (as VirtualBox does) and are told apart by the vendor
 * osType and the description.  Where several rows share a vendor id or a
 * CIM number, the first row is the one a bare id reads back as. */
#include "ovatool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define W "http://microsoft.com/win/"
static const struct os_entry os_rows[] = {
    /* name, description, CIM, VMware guestOS, VirtualBox OSType, libosinfo, windows */
    { "windows7_64", "Microsoft Windows 7 (64-bit)", 105, "windows7_64Guest", "Windows7_64", W "7", true },
    { "windows7_32", "Microsoft Windows 7 (32-bit)", 105, "windows7Guest", "Windows7", W "7", true },
    { "windows8_64", "Microsoft Windows 8 (64-bit)", 114, "windows8_64Guest", "Windows8_64", W "8", true },
    { "windows81_64", "Microsoft Windows 8.1 (64-bit)", 117, "windows8_64Guest", "Windows81_64", W "8.1", true },
    { "windows10_64", "Microsoft Windows 10 (64-bit)", 120, "windows9_64Guest", "Windows10_64", W "10", true },
    { "windows10_32", "Microsoft Windows 10 (32-bit)", 119, "windows9Guest", "Windows10", W "10", true },
    { "windows11_64", "Microsoft Windows 11 (64-bit)", 120, "windows11_64Guest", "Windows11_64", W "11", true },
    { "windows2008r2_64", "Microsoft Windows Server 2008 R2 (64-bit)", 103, "windows7Server64Guest", "Windows2008_64", W "2k8r2", true },
    { "windows2012_64", "Microsoft Windows Server 2012 (64-bit)", 112, "windows8srv_64Guest", "Windows2012_64", W "2k12", true },
    { "windows2012r2_64", "Microsoft Windows Server 2012 R2 (64-bit)", 115, "windows8srv_64Guest", "Windows2012_64", W "2k12r2", true },
    { "windows2016_64", "Microsoft Windows Server 2016 (64-bit)", 118, "windows9srv_64Guest", "Windows2016_64", W "2k16", true },
    { "windows2019_64", "Microsoft Windows Server 2019 (64-bit)", 118, "windows2019srv_64Guest", "Windows2019_64", W "2k19", true },
    { "windows2022_64", "Microsoft Windows Server 2022 (64-bit)", 118, "windows2019srvNext_64Guest", "Windows2022_64", W "2k22", true },
    { "ubuntu_64", "Ubuntu Linux (64-bit)", 94, "ubuntu64Guest", "Ubuntu_64", "http://libosinfo.org/linux/2022", false },
    { "ubuntu_32", "Ubuntu Linux (32-bit)", 93, "ubuntuGuest", "Ubuntu", "http://libosinfo.org/linux/2022", false },
    { "debian_64", "Debian GNU/Linux (64-bit)", 96, "debian10_64Guest", "Debian_64", "http://libosinfo.org/linux/2022", false },
    { "debian10_64", "Debian GNU/Linux 10 (64-bit)", 96, "debian10_64Guest", "Debian_64", "http://debian.org/debian/10", false },
    { "debian11_64", "Debian GNU/Linux 11 (64-bit)", 96, "debian11_64Guest", "Debian_64", "http://debian.org/debian/11", false },
    { "debian12_64", "Debian GNU/Linux 12 (64-bit)", 96, "debian12_64Guest", "Debian_64", "http://debian.org/debian/12", false },
    { "rhel_64", "Red Hat Enterprise Linux (64-bit)", 80, "rhel8_64Guest", "RedHat_64", "http://redhat.com/rhel/8.0", false },
    { "rhel7_64", "Red Hat Enterprise Linux 7 (64-bit)", 80, "rhel7_64Guest", "RedHat_64", "http://redhat.com/rhel/7.0", false },
    { "rhel8_64", "Red Hat Enterprise Linux 8 (64-bit)", 80, "rhel8_64Guest", "RedHat_64", "http://redhat.com/rhel/8.0", false },
    { "rhel9_64", "Red Hat Enterprise Linux 9 (64-bit)", 80, "rhel9_64Guest", "RedHat_64", "http://redhat.com/rhel/9.0", false },
    { "centos_64", "CentOS (64-bit)", 107, "centos64Guest", "RedHat_64", "http://centos.org/centos/7.0", false },
    { "centos7_64", "CentOS 7 (64-bit)", 107, "centos7_64Guest", "RedHat_64", "http://centos.org/centos/7.0", false },
    { "centos8_64", "CentOS 8 (64-bit)", 107, "centos8_64Guest", "RedHat_64", "http://centos.org/centos/8", false },
    { "oraclelinux_64", "Oracle Linux (64-bit)", 109, "oracleLinux64Guest", "Oracle_64", NULL, false },
    { "sles12_64", "SUSE Linux Enterprise Server 12 (64-bit)", 85, "sles12_64Guest", "OpenSUSE_64", "http://suse.com/sles/12", false },
    { "sles15_64", "SUSE Linux Enterprise Server 15 (64-bit)", 85, "sles15_64Guest", "OpenSUSE_64", "http://suse.com/sle/15", false },
    { "opensuse_64", "openSUSE (64-bit)", 83, "opensuse64Guest", "OpenSUSE_64", "http://opensuse.org/opensuse/unknown", false },
    { "freebsd_64", "FreeBSD (64-bit)", 78, "freebsd64Guest", "FreeBSD_64", NULL, false },
    { "freebsd12_64", "FreeBSD 12 (64-bit)", 78, "freebsd12_64Guest", "FreeBSD_64", "http://freebsd.org/freebsd/12.0", false },
    { "freebsd13_64", "FreeBSD 13 (64-bit)", 78, "freebsd13_64Guest", "FreeBSD_64", "http://freebsd.org/freebsd/13.0", false },
    { "freebsd14_64", "FreeBSD 14 (64-bit)", 78, "freebsd14_64Guest", "FreeBSD_64", "http://freebsd.org/freebsd/14.0", false },
    { "linux_64", "Other Linux (64-bit)", 101, "otherLinux64Guest", "Linux_64", "http://libosinfo.org/linux/2022", false },
    { "linux_32", "Other Linux (32-bit)", 36, "otherLinuxGuest", "Linux", NULL, false },
    { "other_64", "Other (64-bit)", 102, "otherGuest64", "Other_64", NULL, false },
    { "other", "Other", 1, "otherGuest", "Other", NULL, false },
};
#undef W
#define OS_N (sizeof os_rows / sizeof os_rows[0])

/* Short names people type, and what they mean. */
static const struct { const char *alias, *name; } os_aliases[] = {
    { "windows", "windows10_64" }, { "windows7", "windows7_64" }, { "windows10", "windows10_64" },
    { "windows11", "windows11_64" }, { "ubuntu", "ubuntu_64" }, { "debian", "debian_64" },
    { "rhel", "rhel_64" }, { "centos", "centos_64" }, { "sles", "sles15_64" },
    { "opensuse", "opensuse_64" }, { "freebsd", "freebsd_64" }, { "linux", "linux_64" },
};

const struct os_entry *os_table(size_t *n)
{
    *n = OS_N;
    return os_rows;
}

const struct os_entry *os_by_name(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < OS_N; i++)
        if (!strcasecmp(name, os_rows[i].name))
            return &os_rows[i];
    for (size_t i = 0; i < sizeof os_aliases / sizeof os_aliases[0]; i++)
        if (!strcasecmp(name, os_aliases[i].alias))
            return os_by_name(os_aliases[i].name);
    /* a vendor id names a row too (the first that uses it) */
    for (size_t i = 0; i < OS_N; i++)
        if (!strcasecmp(name, os_rows[i].vmware) || !strcasecmp(name, os_rows[i].vbox))
            return &os_rows[i];
    return NULL;
}

/* The row an OVF's OperatingSystemSection describes: the vendor osType
 * weighs most, then the CIM number, then the description (which tells the
 * rows that share both apart, e.g. Debian 11 and 12 for VirtualBox). */
const struct os_entry *os_from_ovf(const char *cim_id, const char *os_type, const char *desc)
{
    const struct os_entry *best = NULL;
    int best_score = 0;
    int cim = cim_id && *cim_id ? atoi(cim_id) : -1;
    for (size_t i = 0; i < OS_N; i++) {
        const struct os_entry *e = &os_rows[i];
        bool vendor = os_type && (!strcasecmp(os_type, e->vmware) || !strcasecmp(os_type, e->vbox));
        if (os_type && *os_type && !vendor)
            continue;          /* a vendor id we know decides the family */
        int score = (vendor ? 4 : 0) + (e->cim == cim ? 2 : 0) +
                    (desc && !strcasecmp(desc, e->desc) ? 1 : 0);
        if (score > best_score && (vendor || e->cim == cim)) {
            best = e;
            best_score = score;
        }
    }
    if (!best && os_type && *os_type)   /* an osType we do not know: by number */
        return os_from_ovf(cim_id, NULL, desc);
    return best;
}

void os_list_names(FILE *f)
{
    for (size_t i = 0; i < OS_N; i++)
        fprintf(f, "%s%s", i ? ", " : "", os_rows[i].name);
    fprintf(f, "\n");
}
