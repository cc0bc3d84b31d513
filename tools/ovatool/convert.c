/* convert.c - `ovatool convert IN --target T -o OUT.ova`: the same VM for
 * another importer.  The descriptor is written anew for T (system type,
 * the same controllers as T names them, the OS as T names it, T's network
 * name, EFI where T reads it); CD-ROMs keep their ISO byte for byte; disks that are already streamOptimized VMDKs of the
 * declared capacity are passed through byte for byte, others are converted
 * (and grown to the declared capacity); a new manifest (and certificate with
 * --sign) covers the result.  `ovatool lint --target T` of OUT is clean.
 * The disks are read where they lie in the .ova (import's windows): one
 * passed through is copied from its member into OUT, one converted is
 * written beside OUT first (OUT's descriptor, its first member, states the
 * sizes); only what import extracts too is extracted. */
#include "ovatool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Is the disk a streamOptimized VMDK of the declared capacity, to be
 * passed through?  The file at `path`, or the member `win` of the .ova open
 * as `fd` (`path` then reaches it: appliance_fd_path). */
static bool conv_passthrough(const char *path, const struct disk_window *win, int fd,
                             uint64_t capacity)
{
    enum { HEAD = 64 << 10 };
    unsigned char *head = malloc(HEAD);
    size_t n = 0;
    if (head && win) {
        ssize_t got = pread(fd, head, win->len < HEAD ? (size_t)win->len : HEAD,
                            (off_t)win->off);
        n = got > 0 ? (size_t)got : 0;
    } else if (head) {
        FILE *f = fopen(path, "rb");
        n = f ? fread(head, 1, HEAD, f) : 0;
        if (f)
            fclose(f);
    }
    char why[256];
    bool ok = head && vmdk_stream_check(head, n, why, sizeof why) == 0;
    free(head);
    if (!ok)
        return false;
    vd_image *img = NULL;
    vd_error e = { 0 };
    if (vd_open(path, &(vd_open_opts){ .readonly = true, .format = "vmdk",
                                       .window_offset = win ? win->off : 0,
                                       .window_length = win ? win->len : 0,
                                       .window_name = win ? win->name : NULL }, &img, &e) < 0)
        return false;
    ok = !capacity || vd_size(img) == capacity;
    vd_close(img, NULL);
    return ok;
}

/* Remove the extracted members and the converted disks, and both folders. */
static void conv_cleanup(const char *work, const char *conv, const struct appliance *ap,
                         char **paths, size_t n)
{
    char p[4400];
    for (size_t i = 0; i < ap->n_files; i++) {
        snprintf(p, sizeof p, "%s/%s", work, ap->files[i].name);
        unlink(p);
    }
    for (size_t i = 0; paths && i < n; i++)
        if (paths[i])
            unlink(paths[i]);
    snprintf(p, sizeof p, "%s/joined.tmp", work);
    unlink(p);
    rmdir(work);
    rmdir(conv);
}

/* Is the file at `p` the one `out` names (device and inode: through any
 * symbolic or hard link)? */
static bool conv_same_file(const char *p, const struct stat *out)
{
    struct stat st;
    return stat(p, &st) == 0 && st.st_dev == out->st_dev && st.st_ino == out->st_ino;
}

/* Is `out` the file `name` in the folder of `path` (its first `dl` bytes)
 * or, with `chunks`, one of the chunks NAME.000000000, .000000001 ... that
 * stand there in a row?  `hit` receives the name. */
static bool conv_beside(const char *path, int dl, const char *name, bool chunks,
                        const struct stat *out, char *hit, size_t len)
{
    char p[8400];
    snprintf(hit, len, "%s", name);
    snprintf(p, sizeof p, "%.*s%s", dl, path, hit);
    if (conv_same_file(p, out))
        return true;
    for (unsigned c = 0; chunks; c++) {
        snprintf(hit, len, "%s.%09u", name, c);
        snprintf(p, sizeof p, "%.*s%s", dl, path, hit);
        if (access(p, F_OK) != 0)
            return false;
        if (conv_same_file(p, out))
            return true;
    }
    return false;
}

/* Is `out` a file convert reads: the appliance `path` or, for an .ovf, a
 * file beside it that appliance_read reads (each plain file reference or
 * its chunks, STEM.mf, STEM.cert)?  Then one line says which.  Asked before
 * anything is written; an `out` that does not exist is no input, and a
 * descriptor that does not parse gives no answer (its conversion says why). */
static bool conv_out_is_input(const char *path, const char *out)
{
    struct stat so;
    if (stat(out, &so) < 0)
        return false;
    if (conv_same_file(path, &so)) {
        fprintf(stderr, "ovatool: %s: this is the appliance %s; refusing to overwrite an "
                "input\n", out, path);
        return true;
    }
    size_t pl = strlen(path);
    if (pl < 4 || strcasecmp(path + pl - 4, ".ovf"))
        return false;
    FILE *f = fopen(path, "rb");
    char *buf = malloc(OVF_MAX_DESCRIPTOR + 1);
    size_t n = f && buf ? fread(buf, 1, OVF_MAX_DESCRIPTOR + 1, f) : 0;
    if (f)
        fclose(f);
    struct ovf_appliance a = { 0 };
    char err[512];
    bool parsed = buf && n && ovf_parse(buf, n, path, &a, err, sizeof err) == 0;
    free(buf);
    if (!parsed) {
        ovf_free(&a);
        return false;
    }
    bool found = false;
    const char *slash = strrchr(path, '/');
    int dl = slash ? (int)(slash - path + 1) : 0;      /* the folder, with its '/' */
    char hit[4400], side[4400];
    for (size_t i = 0; !found && i < a.n_files; i++)
        found = ovf_href_is_plain(a.files[i].href) &&
                conv_beside(path, dl, a.files[i].href, true, &so, hit, sizeof hit);
    for (int k = 0; !found && k < 2; k++) {
        snprintf(side, sizeof side, "%.*s%s", (int)(pl - (size_t)dl - 4), path + dl,
                 k ? ".cert" : ".mf");
        found = conv_beside(path, dl, side, false, &so, hit, sizeof hit);
    }
    if (found)
        fprintf(stderr, "ovatool: %s: this is the file %s of the appliance %s; refusing to "
                "overwrite an input\n", out, hit, path);
    ovf_free(&a);
    return found;
}

int ova_convert(const char *path, const struct convert_opts *o)
{
    const struct pack_opts *pk = &o->pack;
    char err[8192] = "", work[4200], conv[4200];
    /* An existing OUT is refused anyway; when it is an input, say so. */
    if (conv_out_is_input(path, pk->out))
        return 1;
    if (access(pk->out, F_OK) == 0) {
        fprintf(stderr, "ovatool: %s: already exists; not overwritten\n", pk->out);
        return 1;
    }
    /* work: what cannot be read in place (import extracts the same);
     * conv: the converted disks, apart, whatever the members are named */
    snprintf(work, sizeof work, "%s.work%d", pk->out, (int)getpid());
    snprintf(conv, sizeof conv, "%s.conv%d", pk->out, (int)getpid());
    if (mkdir(work, 0700) < 0 || mkdir(conv, 0700) < 0) {
        fprintf(stderr, "ovatool: %s: %s\n", access(work, F_OK) ? work : conv, strerror(errno));
        rmdir(work);
        return 1;
    }
    bool vmware = !strcmp(pk->target, "vmware") || !strcmp(pk->target, "esxi");
    bool vbox = !strcmp(pk->target, "virtualbox");
    struct appliance ap;
    struct ovf_appliance n = { 0 };
    char **paths = NULL, **names = NULL;   /* files to remove; members' names */
    struct pack_src *srcs = NULL;
    size_t np = 0, passed = 0, ncd = 0;
    int rc = 1, checked;
    if (appliance_read(path, work, APP_WINDOW_DISKS | APP_WINDOW_MEDIA, &ap, err, sizeof err) < 0)
        goto out;
    const struct ovf_appliance *a = &ap.ovf;
    if (ap.mf_text && !o->no_verify &&
        appliance_verify_manifest(&ap, err, sizeof err, &checked) < 0)
        goto out;
    if (!ap.mf_text)
        fprintf(stderr, "ovatool: %s: warning: no manifest: the files are not checked\n", path);
    if (ap.cert_text)
        fprintf(stderr, "ovatool: %s: note: the certificate signs the old manifest and is "
                "not carried over%s\n", path, pk->sign_key ? " (--sign signs the new one)" : "");
    char name[256];
    safe_vm_name(a->name, path, name, sizeof name);
    n.name = strdup(name);
    n.cpus = a->has_cpus && a->cpus ? a->cpus : 1;
    n.memory_mib = a->has_memory && a->memory_mib ? a->memory_mib : 1024;
    if (!a->has_cpus || !a->has_memory)
        fprintf(stderr, "ovatool: %s: warning: the descriptor does not state %s; writing %u "
                "CPU(s), %llu MiB\n", path, !a->has_cpus ? "the CPUs" : "the memory", n.cpus,
                (unsigned long long)n.memory_mib);
    /* The OS as the target names it, from the one table; an OS the table
     * does not know keeps its CIM number and description. */
    const struct os_entry *os = os_from_ovf(a->os_id, a->os_type, a->os_desc);
    char cim[16];
    snprintf(cim, sizeof cim, "%d", os ? os->cim : a->os_id ? atoi(a->os_id) : 1);
    n.os_id = strdup(cim);
    n.os_desc = strdup(os ? os->desc : a->os_desc ? a->os_desc : "Other");
    if (os)
        n.os_type = strdup(vmware ? os->vmware : vbox ? os->vbox : os->name);
    if (os && !vmware && !vbox) {
        free(n.os_type);
        n.os_type = NULL;
    }
    n.firmware = a->firmware ? strdup(a->firmware) : NULL;
    n.nics = calloc(a->n_nics + 1, sizeof *n.nics);
    for (size_t i = 0; i < a->n_nics; i++)
        n.nics[n.n_nics++].model = a->nics[i].model ? strdup(a->nics[i].model) : NULL;
    /* the controllers, each as the target names its kind (ovf-write.c) */
    n.ctrls = calloc(a->n_ctrls + 1, sizeof *n.ctrls);
    for (size_t i = 0; i < a->n_ctrls; i++)
        n.ctrls[n.n_ctrls++] = (struct ovf_controller){
            .instance_id = a->ctrls[i].instance_id ? strdup(a->ctrls[i].instance_id) : NULL,
            .resource_type = a->ctrls[i].resource_type,
            .subtype = a->ctrls[i].subtype ? strdup(a->ctrls[i].subtype) : NULL };
    n.files = calloc(a->n_disks + 1, sizeof *n.files);
    n.disks = calloc(a->n_disks + 1, sizeof *n.disks);
    paths = calloc(a->n_disks + 1, sizeof *paths);
    names = calloc(a->n_disks + 1, sizeof *names);
    srcs = calloc(a->n_disks + 1, sizeof *srcs);
    for (size_t i = 0; i < a->n_disks; i++) {
        const struct ovf_disk *d = &a->disks[i];
        if (!ovf_disk_in_use(a, d))
            continue;
        bool cdrom = ovf_disk_is_cdrom(d);
        if (cdrom && (!d->file_ref || !ovf_find_file(a, d->file_ref))) {
            fprintf(stderr, "ovatool: %s: warning: CD-ROM %s has no medium; not carried over\n",
                    path, d->id ? d->id : "?");
            continue;
        }
        if (d->capacity_error && !cdrom) {
            snprintf(err, sizeof err, "%s: disk %s: %s; refused", ap.ovf_name,
                     d->id ? d->id : "?", d->capacity_error);
            goto out;
        }
        const struct ovf_file *f = d->file_ref ? ovf_find_file(a, d->file_ref) : NULL;
        char dname[600], dst[4900], opts[160];
        snprintf(dname, sizeof dname, cdrom ? "%s-cd%zu.iso" : "%s-disk%zu.vmdk", name, np + 1);
        snprintf(dst, sizeof dst, "%s/%s", conv, dname);
        snprintf(opts, sizeof opts, "subformat=streamOptimized,adapter_type=%s%s",
                 vmware ? "lsilogic" : "ide", !strcmp(pk->target, "esxi") ? ",hwversion=13" : "");
        struct disk_stats ds = { .capacity = d->capacity, .populated = d->populated };
        uint64_t fsize = 0;
        if (!f) {      /* a file-less disk: an empty one of its capacity */
            vd_error e = { 0 };
            if (!d->capacity || vd_create(dst, &(vd_create_opts){ .format = "vmdk",
                                 .size = d->capacity, .options = opts }, &e) < 0) {
                snprintf(err, sizeof err, "disk %s: %s", d->id ? d->id : "?",
                         d->capacity ? e.msg : "neither a file nor a capacity");
                goto out;
            }
            ds.populated = 0;
            paths[np] = strdup(dst);
        } else {
            if (!ovf_href_is_plain(f->href)) {
                snprintf(err, sizeof err, "%s: file reference '%s' leaves the appliance; "
                         "refused", ap.ovf_name, f->href);
                goto out;
            }
            /* A plain ustar member is read where it lies in the .ova (as
             * import does), and copied from there when it passes through;
             * the rest was extracted into `work`. */
            const struct appliance_file *af = appliance_windowed(&ap, f->href);
            struct disk_window win = { 0 };
            char *src;
            if (af) {
                if (appliance_member_fits(&ap, af, f, err, sizeof err) < 0)
                    goto out;
                char wname[4400];
                snprintf(wname, sizeof wname, "%s: member %s", path, f->href);
                names[np] = strdup(wname);
                win = (struct disk_window){ .off = af->data_off, .len = af->size,
                                            .name = names[np] };
                src = appliance_fd_path(&ap);
            } else {
                src = appliance_member_present(&ap, f->href, err, sizeof err) < 0 ? NULL :
                      appliance_prepare_file(work, f, d->capacity, err, sizeof err);
            }
            if (!src)
                goto out;
            int r = 0;
            if (cdrom || conv_passthrough(src, af ? &win : NULL, ap.fd, d->capacity)) {
                /* byte for byte: an ISO, or a stream VMDK as the target reads it */
                if (af) {
                    srcs[np] = (struct pack_src){ .fd = ap.fd, .off = win.off, .len = win.len,
                                                  .name = names[np] };
                    fsize = win.len;
                    free(src);
                } else {
                    paths[np] = src;
                }
                if (cdrom)
                    ncd++;
                else
                    passed++;
            } else {
                r = disk_convert(src, NULL, af ? &win : NULL, dst, "vmdk", opts, d->capacity,
                                 pk->progress, false, &ds, err, sizeof err);
                if (r == -EPERM && af) {     /* it names other members: extract it */
                    free(src);
                    src = appliance_extract_member(&ap, af, work, err, sizeof err);
                    af = NULL;
                    r = !src ? -1 : disk_convert(src, NULL, NULL, dst, "vmdk", opts,
                                                 d->capacity, pk->progress, false, &ds, err,
                                                 sizeof err);
                }
                if (src && !af)
                    unlink(src);
                free(src);
                if (r == 0)
                    paths[np] = strdup(dst);
            }
            if (r < 0)
                goto out;
        }
        if (paths[np]) {
            struct stat st;
            if (stat(paths[np], &st) < 0) {
                snprintf(err, sizeof err, "%s: %s", paths[np], strerror(errno));
                goto out;
            }
            srcs[np] = (struct pack_src){ .path = paths[np] };
            fsize = (uint64_t)st.st_size;
        }
        char id[32];
        snprintf(id, sizeof id, "file%zu", np + 1);
        n.files[np] = (struct ovf_file){ .id = strdup(id), .href = strdup(dname),
                                         .size = fsize };
        snprintf(id, sizeof id, "vmdisk%zu", np + 1);
        n.disks[np] = (struct ovf_disk){ .id = strdup(id), .file_ref = strdup(n.files[np].id),
                                         .capacity = cdrom ? fsize :
                                                     d->capacity ? d->capacity : ds.capacity,
                                         .populated = cdrom ? fsize : ds.populated,
                                         .address = d->address, .cdrom = cdrom,
                                         .parent = d->parent ? strdup(d->parent) : NULL };
        n.n_files = n.n_disks = ++np;
    }
    char *desc = ovf_write(&n, !strcmp(pk->target, "ovf2") ? 2 : 1, pk->target);
    if (ova_pack(pk->out, name, desc, &n, srcs, pk->digest, pk->sign_key, pk->sign_cert, err,
                 sizeof err) == 0) {
        rc = 0;
        printf("%s: %s appliance, %zu disk(s) (%zu passed through, %zu converted), %zu CD-ROM(s), "
               "manifest %s%s\n", pk->out, pk->target, np - ncd, passed, np - ncd - passed, ncd,
               digest_name(pk->digest),
               pk->sign_key ? ", signed" : "");
        if (vbox && n.firmware && !strcmp(n.firmware, "efi"))
            fprintf(stderr, "ovatool: note: VirtualBox reads EFI only from its own machine "
                    "section: after import run VBoxManage modifyvm %s --firmware efi\n", name);
    }
    free(desc);
out:
    if (rc)
        fprintf(stderr, "ovatool: %s\n", err[0] ? err : "convert failed");
    conv_cleanup(work, conv, &ap, paths, np + 1);
    for (size_t i = 0; i <= np; i++) {
        if (paths)
            free(paths[i]);
        if (names)
            free(names[i]);
    }
    free(paths);
    free(names);
    free(srcs);
    ovf_free(&n);
    appliance_free(&ap);
    return rc;
}
