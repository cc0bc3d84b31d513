/* importout.c - the end of every import (appliance or VM folder), once the
 * disks are converted: the disk bus the guest can boot from, the libvirt
 * domain and qemu command line (and a Xen domain), the boot check, and the
 * report.
 *
 * The bus: an OVF from VirtualBox names SATA, VMware's LSI Logic, and a
 * Linux guest of either may lack the driver for the controller KVM gives it
 * (an initramfs built for one machine holds only that machine's drivers).
 * What the guest can boot from is read from its own disk (guestdrv.c):
 * virtio-blk when it has virtio_blk (and virtio_pci), virtio-scsi when it
 * has virtio_scsi, else the OVF's controller, with a warning naming the
 * missing driver.  No Linux found (a Windows guest): the OVF's controller. */
#include "ovatool.h"
#include "tool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct bus_choice {
    struct lv_hw hw;
    const char *decision;         /* "option", "guest-drivers", "ovf" */
    char reason[2048];
    char warning[1024];           /* "" when none */
    struct guest_drivers g;
    bool scanned;
};

static bool io_has(const struct guest_drivers *g, enum gd_drv d)
{
    return ((g->builtin | g->initrd) >> d) & 1u;
}

/* "virtio_blk (initramfs)", "virtio_pci (built in)" */
static void io_where(const struct guest_drivers *g, enum gd_drv d, struct sbuf *b)
{
    sb_printf(b, "%s%s (%s)", b->n ? ", " : "", guest_driver_name(d),
              (g->builtin >> d) & 1u ? "built in" : "initramfs");
}

static bool io_all(const struct guest_drivers *g, const enum gd_drv *need, size_t n,
                   struct sbuf *why)
{
    for (size_t i = 0; i < n; i++)
        if (!io_has(g, need[i]))
            return false;
    for (size_t i = 0; i < n; i++)
        io_where(g, need[i], why);
    return true;
}

static void io_choose_bus(const struct ovf_appliance *a, const struct import_disk *d, size_t nd,
                          const struct import_opts *o, struct bus_choice *c)
{
    memset(c, 0, sizeof *c);
    c->hw = (struct lv_hw){ DM_OVF, o->virtio, false };
    if (o->virtio) {
        c->hw.disks = DM_VIRTIO_BLK;
        c->decision = "option";
        snprintf(c->reason, sizeof c->reason, "--virtio");
        return;
    }
    if (o->ovf_bus) {
        c->decision = "option";
        snprintf(c->reason, sizeof c->reason, "--ovf-bus: the OVF's controllers are kept");
        return;
    }
    const struct import_disk *boot = NULL;
    for (size_t i = 0; i < nd; i++) {
        if (d[i].cdrom)
            continue;
        if (!boot)
            boot = &d[i];
        c->scanned = true;
        if (guest_drivers_scan(d[i].path, d[i].format, &c->g) == 0 && c->g.found) {
            boot = &d[i];
            break;
        }
    }
    c->decision = "ovf";
    if (!boot) {
        snprintf(c->reason, sizeof c->reason, "no disk to read the guest from");
        return;
    }
    const char *bus;
    enum gd_drv need = lv_ovf_driver(a, boot, &bus);
    const struct guest_drivers *g = &c->g;
    c->hw.xen_pv_disks = io_has(g, GD_XEN_BLKFRONT);
    if (!g->found) {
        snprintf(c->reason, sizeof c->reason, "no Linux modules folder or initramfs on the "
                 "disks%s%s: the OVF's %s controller is kept", g->note[0] ? " (" : "", g->note,
                 bus);
        if (g->note[0])
            strcat(c->reason, ")");
        return;
    }
    struct sbuf why = { 0 };
    static const enum gd_drv blk[] = { GD_VIRTIO_BLK, GD_VIRTIO_PCI };
    static const enum gd_drv vscsi[] = { GD_VIRTIO_SCSI, GD_VIRTIO_PCI, GD_SD_MOD };
    const char *src = g->initrd_path[0] ? g->initrd_path : "no initramfs found";
    const char *bsrc = g->builtin_known ? (g->builtin_path[0] ? g->builtin_path : "the initramfs")
                                        : "no modules.builtin found";
    if (io_all(g, blk, 2, &why)) {
        c->hw.disks = DM_VIRTIO_BLK;
        c->decision = "guest-drivers";
    } else if (io_all(g, vscsi, 3, &why)) {
        c->hw.disks = DM_VIRTIO_SCSI;
        c->decision = "guest-drivers";
    }
    if (c->hw.disks != DM_OVF) {
        snprintf(c->reason, sizeof c->reason, "the guest has %s (initramfs %s; modules.builtin: "
                 "%s): disks on %s instead of the OVF's %s", why.s, src, bsrc,
                 c->hw.disks == DM_VIRTIO_BLK ? "virtio-blk" : "virtio-scsi", bus);
        free(why.s);
        return;
    }
    free(why.s);
    const char *missing = !io_has(g, GD_VIRTIO_BLK) ? "virtio_blk" : "virtio_pci";
    bool ovf_ok = io_has(g, need) && (need == GD_AHCI || io_has(g, GD_SD_MOD) ||
                                      need == GD_VIRTIO_BLK);
    snprintf(c->reason, sizeof c->reason, "the guest has no %s (nor virtio_scsi) in its initramfs "
             "%.700s or built in (modules.builtin: %.700s)%s%.400s: the OVF's %s controller is kept",
             missing, src, bsrc, g->note[0] ? "; " : "", g->note, bus);
    if (ovf_ok)
        snprintf(c->warning, sizeof c->warning, "the guest lacks %s: its disks stay on the "
                 "OVF's %s controller, whose driver %s it has", missing, bus,
                 guest_driver_name(need));
    else
        snprintf(c->warning, sizeof c->warning, "the guest lacks %s, and its disks stay on the "
                 "OVF's %s controller, but it has no %s driver%s either (initramfs %s): it will "
                 "not find its root disk; add that driver to its initramfs (or virtio_blk, then "
                 "import with --virtio)", missing, bus, guest_driver_name(need),
                 need != GD_AHCI && need != GD_VIRTIO_BLK && !io_has(g, GD_SD_MOD) ? " or sd_mod" : "",
                 src);
}

/* NAME.xml and the like: written under a temporary name, then renamed. */
static int io_write(const char *path, const char *text, mode_t mode)
{
    char tmp[4700], put[4096], why[512];
    /* A symbolic link at path stays: the file it leads to gets the text. */
    if (vt_resolve_out(path, put, sizeof put, why, sizeof why) < 0) {
        fprintf(stderr, "ovatool: %s\n", why);
        return -1;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp%d", put, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0 || chmod(tmp, mode) != 0 ||
        rename(tmp, put) != 0) {
        fprintf(stderr, "ovatool: %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ---- boot check -------------------------------------------------------- */

/* vdboot: $OVATOOL_VDBOOT, next to ovatool (installed), in the build tree
 * (tools/ovatool/../../boot-check), else from PATH. */
static void io_vdboot_path(char *out, size_t len)
{
    const char *env = getenv("OVATOOL_VDBOOT");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return;
    }
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = 0;
        char *s = strrchr(self, '/');
        if (s) {
            *s = 0;
            snprintf(out, len, "%s/vdboot", self);
            if (access(out, X_OK) == 0)
                return;
            snprintf(out, len, "%s/../../boot-check/vdboot", self);
            if (access(out, X_OK) == 0)
                return;
        }
    }
    snprintf(out, len, "vdboot");
}

/* The value of "key": "..." in one line of vdboot's JSON (escapes undone
 * for what vdboot writes: \" \\ \n \t \uXXXX as '?'). */
static void io_json_get(const char *json, const char *key, char *out, size_t len)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(json, pat);
    size_t n = 0;
    out[0] = 0;
    if (!p)
        return;
    p += strlen(pat);
    if (*p != '"') {        /* a number or null */
        while (*p && *p != ',' && *p != '}' && n + 1 < len)
            out[n++] = *p++;
        out[n] = 0;
        return;
    }
    for (p++; *p && *p != '"' && n + 1 < len; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            out[n++] = *p == 'n' ? ' ' : *p == 't' ? ' ' : *p == 'u' ? '?' : *p;
            if (*p == 'u')
                for (int k = 0; k < 4 && p[1]; k++)
                    p++;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = 0;
}

/* Run vdboot on the imported VM: its domain, so the disk, bus, memory,
 * vCPUs and firmware are the ones the VM will get.  Returns 0 when the guest
 * reached its login prompt; `json` receives vdboot's JSON line. */
static int io_boot_check(const char *domain, struct sbuf *json, char *msg, size_t msglen)
{
    char vdboot[4200];
    io_vdboot_path(vdboot, sizeof vdboot);
    const char *accel = getenv("OVATOOL_BOOT_ACCEL");
    const char *timeout = getenv("OVATOOL_BOOT_TIMEOUT");
    int pfd[2];
    if (pipe(pfd) < 0) {
        snprintf(msg, msglen, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(msg, msglen, "fork: %s", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execlp(vdboot, "vdboot", "--json", "--accel", accel && *accel ? accel : "auto",
               "--timeout", timeout && *timeout ? timeout : "300", "--domain", domain, (char *)NULL);
        fprintf(stderr, "ovatool: boot check: cannot run %s: %s\n", vdboot, strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    char buf[4096];
    ssize_t n;
    while ((n = read(pfd[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0 && json->n < (1u << 20))
            sb_printf(json, "%.*s", (int)n, buf);
    close(pfd[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    while (json->n && (json->s[json->n - 1] == '\n' || json->s[json->n - 1] == '\r'))
        json->s[--json->n] = 0;
    char outcome[64], reason[1500], secs[32];
    if (!json->n || json->s[0] != '{') {
        snprintf(msg, msglen, "%.1000s gave no result (exit status %d)", vdboot,
                 WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
        free(json->s);
        *json = (struct sbuf){ 0 };
        return -1;
    }
    io_json_get(json->s, "outcome", outcome, sizeof outcome);
    io_json_get(json->s, "reason", reason, sizeof reason);
    io_json_get(json->s, "seconds", secs, sizeof secs);
    snprintf(msg, msglen, "%s after %s s: %s", outcome, secs, reason);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 && !strcmp(outcome, "login") ? 0 : -1;
}

/* ---- the report ------------------------------------------------------- */

static void io_json(const struct ovf_appliance *a, const struct import_disk *d, size_t nd,
                    const char *name, const char *xml, const char *sh, const char *xen,
                    const struct bus_choice *c, const struct sbuf *boot, const char *boot_msg,
                    bool boot_ok)
{
    vt_json_member(stdout, "{", "name", name);
    vt_json_member(stdout, ", ", "domain", xml);
    vt_json_member(stdout, ", ", "qemu_script", sh);
    vt_json_member(stdout, ", ", "xen_domain", xen);
    printf(", \"disks\": [");
    for (size_t i = 0; i < nd; i++) {
        vt_json_member(stdout, i ? ", {" : "{", "path", d[i].path);
        vt_json_member(stdout, ", ", "format", d[i].format);
        printf(", \"device\": \"%s\", \"bus\": \"%s\"}", d[i].cdrom ? "cdrom" : "disk",
               lv_vdboot_bus(a, &d[i], &c->hw));
    }
    static const char *const modes[] = { "ovf", "virtio-blk", "virtio-scsi" };
    printf("], \"disk_bus\": {\"mode\": \"%s\", \"decision\": \"%s\"", modes[c->hw.disks],
           c->decision);
    vt_json_member(stdout, ", ", "reason", c->reason);
    vt_json_member(stdout, ", ", "warning", c->warning[0] ? c->warning : NULL);
    printf(", \"guest\": ");
    if (!c->scanned) {
        printf("null");
    } else {
        const struct guest_drivers *g = &c->g;
        printf("{\"linux_found\": %s", g->found ? "true" : "false");
        vt_json_member(stdout, ", ", "initramfs", g->initrd_path[0] ? g->initrd_path : NULL);
        vt_json_member(stdout, ", ", "modules_builtin", g->builtin_path[0] ? g->builtin_path
                       : g->builtin_known ? "in the initramfs" : NULL);
        printf(", \"drivers\": {");
        for (int k = 0; k < GD_N; k++)
            printf("%s\"%s\": %s", k ? ", " : "", guest_driver_name(k),
                   (g->builtin >> k) & 1u ? "\"built-in\"" : (g->initrd >> k) & 1u ?
                   "\"initramfs\"" : "null");
        vt_json_member(stdout, "}, ", "note", g->note[0] ? g->note : NULL);
        printf("}");
    }
    printf("}, \"boot_check\": ");
    if (boot->n)
        printf("{\"ok\": %s, \"summary\": ", boot_ok ? "true" : "false");
    else if (boot_msg)
        printf("{\"ok\": false, \"summary\": ");
    if (boot->n || boot_msg) {
        vt_json_str(stdout, boot_msg);
        printf(", \"vdboot\": %s}", boot->n ? boot->s : "null");
    } else {
        printf("null");
    }
    printf("}\n");
}

/* The domain files, the boot check and the report: 0 on success, 1 when
 * the boot check failed, -1 when a file could not be written (the messages
 * are printed). */
static int import_finish(const struct ovf_appliance *a, struct import_disk *d, size_t nd,
                         const char *name, const struct import_opts *o)
{
    struct bus_choice *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    io_choose_bus(a, d, nd, o, c);
    if (c->warning[0])
        fprintf(stderr, "ovatool: warning: %s\n", c->warning);
    if (!o->json)
        printf("disk bus: %s\n", c->reason);
    char *xml = libvirt_domain_xml(a, d, nd, &c->hw);
    char *cmd = qemu_command_line(a, d, nd, &c->hw);
    char *xen = o->hypervisor && !strcmp(o->hypervisor, "xen") ? xen_domain_xml(a, d, nd, &c->hw)
                                                               : NULL;
    char px[4600], ps[4600], pxen[4600] = "";
    snprintf(px, sizeof px, "%s/%s.xml", o->outdir, name);
    snprintf(ps, sizeof ps, "%s/%s.sh", o->outdir, name);
    if (xen)
        snprintf(pxen, sizeof pxen, "%s/%s-xen.xml", o->outdir, name);
    int rc = -1;
    if (io_write(px, xml, 0644) == 0 && io_write(ps, cmd, 0755) == 0 &&
        (!xen || io_write(pxen, xen, 0644) == 0))
        rc = 0;
    free(xml);
    free(cmd);
    free(xen);
    if (rc == 0 && !o->json) {
        printf("libvirt domain: %s (virsh define %s)\nqemu command line: %s\n", px, px, ps);
        if (pxen[0])
            printf("xen domain: %s (virsh -c xen:/// define %s)\n", pxen, pxen);
    }
    struct sbuf boot = { 0 };
    char boot_msg[2048] = "";
    bool boot_ok = false;
    if (rc == 0 && o->boot_check) {
        boot_ok = io_boot_check(px, &boot, boot_msg, sizeof boot_msg) == 0;
        if (!boot_ok) {
            fprintf(stderr, "ovatool: boot check failed: %s (the imported files are kept)\n",
                    boot_msg);
            rc = 1;
        } else if (!o->json) {
            printf("boot check: %s\n", boot_msg);
        }
    }
    if (o->json && (rc == 0 || (rc > 0 && o->boot_check)))
        io_json(a, d, nd, name, px, ps, pxen[0] ? pxen : NULL, c, &boot,
                o->boot_check ? boot_msg : NULL, boot_ok);
    free(boot.s);
    free(c);
    return rc;
}

int import_conclude(const struct ovf_appliance *a, struct import_disk *d, size_t nd,
                    const char *name, const struct import_opts *o, const char *failed)
{
    int rc = 1;
    if (!failed) {
        int fr = import_finish(a, d, nd, name, o);
        if (fr >= 0)
            rc = fr;     /* 1: the boot check failed (said why): the files are kept */
        else
            failed = "the domain files were not written";
    }
    if (failed) {
        fprintf(stderr, "ovatool: %s\n", failed[0] ? failed : "import failed");
        for (size_t i = 0; i < nd; i++)
            if (d[i].path)
                unlink(d[i].path);
    }
    for (size_t i = 0; i < nd; i++)
        free(d[i].path);
    return rc;
}
