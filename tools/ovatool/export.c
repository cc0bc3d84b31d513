/* export.c - `ovatool export`: disks converted to streamOptimized VMDK, an
 * OVF descriptor, a manifest and optionally a certificate, packed into a
 * POSIX ustar archive in the order the OVF specification requires
 * (descriptor first, then disks, manifest, certificate). */
#include "ovatool.h"
#include "tool.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The ustar header of member `name`, `size` bytes. */
static int exp_header(struct archive *ar, const char *name, uint64_t size, char *err,
                      size_t errlen)
{
    struct archive_entry *e = archive_entry_new();
    if (!e) {
        snprintf(err, errlen, "%s: out of memory", name);
        return -1;
    }
    archive_entry_set_pathname(e, name);
    archive_entry_set_size(e, (la_int64_t)size);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_mtime(e, time(NULL), 0);
    archive_entry_set_uname(e, "someone");
    archive_entry_set_gname(e, "someone");
    int r = archive_write_header(ar, e) == ARCHIVE_OK ? 0 : -1;
    archive_entry_free(e);
    if (r < 0)
        snprintf(err, errlen, "%s: %s", name, archive_error_string(ar));
    return r;
}

/* A member held in memory (the descriptor, the manifest, the certificate). */
static int exp_add_text(struct archive *ar, const char *name, const char *mem, size_t len,
                        char *err, size_t errlen)
{
    if (exp_header(ar, name, len, err, errlen) < 0)
        return -1;
    if (archive_write_data(ar, mem, len) != (la_ssize_t)len) {
        snprintf(err, errlen, "%s: writing to the archive failed: %s", name,
                 archive_error_string(ar));
        return -1;
    }
    return 0;
}

/* Member `name` copied from `src` (a file, or a byte range of the .ova
 * being converted) in one pass that also computes its `dg` digest (hex):
 * the bytes are read once, whichever they are. */
static int exp_add_src(struct archive *ar, const char *name, const struct pack_src *src,
                       enum ovf_digest dg, char hex[129], char *err, size_t errlen)
{
    int fd = src->path ? open(src->path, O_RDONLY | O_CLOEXEC) : src->fd;
    const char *what = src->path ? src->path : src->name;
    struct stat st;
    if (fd < 0 || (src->path && fstat(fd, &st) < 0)) {
        snprintf(err, errlen, "%s: %s", what, strerror(errno));
        if (src->path && fd >= 0)
            close(fd);
        return -1;
    }
    uint64_t size = src->path ? (uint64_t)st.st_size : src->len, done = 0;
    struct digest_ctx *d = digest_new(dg);
    char *buf = malloc(1 << 20);
    int r = d && buf ? exp_header(ar, name, size, err, errlen) : -1;
    if (r == 0 && (!d || !buf))
        snprintf(err, errlen, "%s: out of memory", name);
    while (r == 0 && done < size) {
        size_t want = size - done < (1u << 20) ? (size_t)(size - done) : 1u << 20;
        ssize_t n = src->path ? read(fd, buf, want) : pread(fd, buf, want,
                                                            (off_t)(src->off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "%s: read at offset 0x%llx: %s", what,
                     (unsigned long long)((src->path ? 0 : src->off) + done),
                     n == 0 ? "end of file (it shrank)" : strerror(errno));
            r = -1;
        } else if (archive_write_data(ar, buf, (size_t)n) != n) {
            snprintf(err, errlen, "%s: writing to the archive failed: %s", name,
                     archive_error_string(ar));
            r = -1;
        } else {
            digest_update(d, buf, (size_t)n);
            done += (uint64_t)n;
        }
    }
    if (d)
        digest_final_hex(d, hex);
    free(buf);
    if (src->path)
        close(fd);
    return r;
}

static void exp_mf_add(char **mf, size_t *len, enum ovf_digest alg, const char *name,
                       const char *hex)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "%s(%s)= %s\n", digest_name(alg), name, hex);
    *mf = realloc(*mf, *len + (size_t)n + 1);
    memcpy(*mf + *len, line, (size_t)n + 1);
    *len += (size_t)n;
}

int ova_pack(const char *out, const char *stem, const char *desc, const struct ovf_appliance *a,
             const struct pack_src *src, enum ovf_digest dg, const char *key,
             const char *certfile, char *err, size_t errlen)
{
    char tmpout[4200], ovfname[600], mfname[600], certname[600], hex[129], put[4096];
    /* A symbolic link at out stays: the file it leads to gets the OVA. */
    if (vt_resolve_out(out, put, sizeof put, err, errlen) < 0)
        return -1;
    snprintf(tmpout, sizeof tmpout, "%s.tmp%d", put, (int)getpid());
    snprintf(ovfname, sizeof ovfname, "%s.ovf", stem);
    snprintf(mfname, sizeof mfname, "%s.mf", stem);
    snprintf(certname, sizeof certname, "%s.cert", stem);
    char *mf = NULL, *cert = NULL;
    size_t mf_len = 0;
    struct digest_ctx *d = digest_new(dg);
    digest_update(d, desc, strlen(desc));
    digest_final_hex(d, hex);
    exp_mf_add(&mf, &mf_len, dg, ovfname, hex);
    struct archive *ar = archive_write_new();
    archive_write_set_format_ustar(ar);
    /* 1 MiB writes instead of 10 KiB ones; the archive ends after its two
     * zero records, unpadded */
    archive_write_set_bytes_per_block(ar, 1 << 20);
    archive_write_set_bytes_in_last_block(ar, 1);
    if (archive_write_open_filename(ar, tmpout) != ARCHIVE_OK) {
        snprintf(err, errlen, "%s: %s", tmpout, archive_error_string(ar));
        archive_write_free(ar);
        free(mf);
        return -1;
    }
    /* The order the OVF specification requires: descriptor, files, manifest
     * (each file's digest taken as it is written), certificate. */
    int r = exp_add_text(ar, ovfname, desc, strlen(desc), err, errlen);
    for (size_t i = 0; r == 0 && i < a->n_files; i++)
        if ((r = exp_add_src(ar, a->files[i].href, &src[i], dg, hex, err, errlen)) == 0)
            exp_mf_add(&mf, &mf_len, dg, a->files[i].href, hex);
    if (r == 0 && key && !(cert = cert_sign(mf, mf_len, mfname, dg, key, certfile, err, errlen)))
        r = -1;
    if (r == 0)
        r = exp_add_text(ar, mfname, mf, mf_len, err, errlen);
    if (r == 0 && cert)
        r = exp_add_text(ar, certname, cert, strlen(cert), err, errlen);
    if (archive_write_close(ar) != ARCHIVE_OK && r == 0) {
        snprintf(err, errlen, "%s: %s", tmpout, archive_error_string(ar));
        r = -1;
    }
    archive_write_free(ar);
    if (r == 0 && rename(tmpout, put) < 0) {
        snprintf(err, errlen, "%s: %s", out, strerror(errno));
        r = -1;
    }
    if (r < 0)
        unlink(tmpout);
    free(mf);
    free(cert);
    return r;
}

int ova_export(const struct export_opts *o)
{
    const struct pack_opts *pk = &o->pack;
    char err[8192] = "", work[4200];
    snprintf(work, sizeof work, "%s.work%d", pk->out, (int)getpid());
    /* An existing OUT is refused anyway; when it is an input, say so. */
    for (size_t i = 0; i < o->n_disks; i++)
        if (disk_is_input(o->disks[i], pk->out)) {
            fprintf(stderr, "ovatool: %s: this is the disk %s or one of its files (image, "
                    "extent or backing file); refusing to overwrite an input\n", pk->out,
                    o->disks[i]);
            return 1;
        }
    if (access(pk->out, F_OK) == 0) {
        fprintf(stderr, "ovatool: %s: already exists; not overwritten\n", pk->out);
        return 1;
    }
    if (mkdir(work, 0700) < 0) {
        fprintf(stderr, "ovatool: %s: %s\n", work, strerror(errno));
        return 1;
    }
    bool vmware = pk->target && (!strcmp(pk->target, "vmware") || !strcmp(pk->target, "esxi"));
    struct ovf_appliance a = { 0 };
    a.name = strdup(o->name);
    /* main checked the name: the table gives the CIM number and the id
     * the target's importer reads */
    const struct os_entry *os = os_by_name(o->os_type ? o->os_type : "other");
    char cim[16];
    snprintf(cim, sizeof cim, "%d", os->cim);
    bool vbox = pk->target && !strcmp(pk->target, "virtualbox");
    a.os_type = vmware ? strdup(os->vmware) : vbox ? strdup(os->vbox) : NULL;
    a.os_desc = strdup(os->desc);
    a.os_id = strdup(cim);
    a.cpus = o->cpus;
    a.memory_mib = o->memory_mib;
    a.files = calloc(o->n_disks + 1, sizeof *a.files);
    a.disks = calloc(o->n_disks + 1, sizeof *a.disks);
    char **vmdk = calloc(o->n_disks + 1, sizeof *vmdk);
    struct pack_src *src = calloc(o->n_disks + 1, sizeof *src);
    char *desc = NULL;
    int rc = 1;
    for (size_t i = 0; i < o->n_disks; i++) {
        char name[600], path[4900], opts[128];
        snprintf(name, sizeof name, "%s-disk%zu.vmdk", o->name, i + 1);
        snprintf(path, sizeof path, "%s/%s", work, name);
        snprintf(opts, sizeof opts, "subformat=streamOptimized,adapter_type=%s%s",
                 vmware ? "lsilogic" : "ide",
                 pk->target && !strcmp(pk->target, "esxi") ? ",hwversion=13" : "");
        struct disk_stats ds;
        if (disk_convert(o->disks[i], NULL, NULL, path, "vmdk", opts, 0, pk->progress, false, &ds, err,
                         sizeof err) < 0)
            goto out;
        vmdk[i] = strdup(path);
        src[i] = (struct pack_src){ .path = vmdk[i] };
        struct stat st;
        stat(path, &st);
        a.disks[i].capacity = ds.capacity;
        a.disks[i].populated = ds.populated;
        char id[32];
        snprintf(id, sizeof id, "file%zu", i + 1);
        a.files[i] = (struct ovf_file){ .id = strdup(id), .href = strdup(name),
                                        .size = (uint64_t)st.st_size };
        snprintf(id, sizeof id, "vmdisk%zu", i + 1);
        a.disks[i].id = strdup(id);
        a.disks[i].file_ref = strdup(a.files[i].id);
        a.n_files = a.n_disks = i + 1;
    }
    desc = ovf_write(&a, o->ovf_version, pk->target);
    if (ova_pack(pk->out, o->name, desc, &a, src, pk->digest, pk->sign_key, pk->sign_cert, err,
                 sizeof err) == 0) {
        rc = 0;
        printf("%s: %zu disk(s), manifest %s%s\n", pk->out, o->n_disks, digest_name(pk->digest),
               pk->sign_key ? ", signed" : "");
    }
out:
    if (rc)
        fprintf(stderr, "ovatool: %s\n", err[0] ? err : "export failed");
    for (size_t i = 0; i < o->n_disks; i++) {
        if (vmdk[i])
            unlink(vmdk[i]);
        free(vmdk[i]);
    }
    rmdir(work);
    free(vmdk);
    free(src);
    free(desc);
    ovf_free(&a);
    return rc;
}
