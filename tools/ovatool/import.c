/* import.c - `ovatool import`: read an appliance (the disks of an .ova
 * stay in it and are converted from there; what cannot be read in place is
 * unpacked into a private folder), verify its manifest (and certificate)
 * before any disk is converted, convert each disk to the chosen format, and
 * write a libvirt domain and a qemu command line beside them.
 * Outputs appear under their final names only when everything succeeded. */
#include "ovatool.h"
#include "tool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <pthread.h>
#include <unistd.h>
#include <isa-l/igzip_lib.h>

/* What every refusal for integrity adds: how to import anyway. */
#define IMP_HINT " (use --no-verify to import anyway)"

static void imp_rmtree(const char *dir, const struct appliance *ap)
{
    char p[4400];
    for (size_t i = 0; i < ap->n_files; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, ap->files[i].name);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/joined.tmp", dir);
    unlink(p);
    rmdir(dir);
}

/* Inflate the gzip file `src` (one or more members, each checked against
 * its CRC; anything after the last member that is not a gzip header is
 * ignored, as gzip does) into `dst`, at most `limit` bytes.  ISA-L's igzip
 * inflates 1.8x as fast as zlib here.  0, -EFBIG past the limit, -EIO on
 * corrupt or truncated data or a failed read or write. */
static int imp_gunzip(const char *src, const char *dst, uint64_t limit)
{
    enum { IN = 1 << 20, OUT = 1 << 20 };
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    uint8_t *ib = malloc(IN), *ob = malloc(OUT);
    struct inflate_state *st = malloc(sizeof *st);
    int r = in && out && ib && ob && st ? 0 : -EIO;
    uint64_t total = 0;
    bool member_done = true, any = false, eof = false, pending = false;
    if (r == 0)
        isal_inflate_init(st);
    while (r == 0) {
        if (!eof && st->avail_in < 2) {   /* keep a byte left over in front */
            if (st->avail_in)
                ib[0] = st->next_in[0];
            size_t n = fread(ib + st->avail_in, 1, IN - st->avail_in, in);
            eof = n == 0;
            st->next_in = ib;
            st->avail_in += (uint32_t)n;
        }
        if (member_done) {      /* at a member boundary: another one? */
            if (st->avail_in < 2 || st->next_in[0] != 0x1f || st->next_in[1] != 0x8b)
                break;          /* the end, or trailing bytes (ignored) */
            uint8_t *next = st->next_in;
            uint32_t avail = st->avail_in;
            isal_inflate_reset(st);
            st->crc_flag = ISAL_GZIP;
            st->next_in = next;
            st->avail_in = avail;
            member_done = false;
            any = true;
        } else if (!st->avail_in && eof && !pending) {
            break;              /* truncated inside a member */
        }
        st->next_out = ob;
        st->avail_out = OUT;
        int ir = isal_inflate(st);
        size_t got = OUT - st->avail_out;
        pending = st->avail_out == 0;      /* it may hold more output */
        if (ir != ISAL_DECOMP_OK)
            r = -EIO;
        else if ((total += got) > limit)
            r = -EFBIG;
        else if (got && fwrite(ob, 1, got, out) != got)
            r = -EIO;
        else if (st->block_state == ISAL_BLOCK_FINISH)
            member_done = true;
    }
    if (r == 0 && (!any || !member_done || ferror(in)))
        r = -EIO;       /* not gzip, truncated inside a member, or a read error */
    if (in)
        fclose(in);
    if (out && fclose(out) != 0 && r == 0)
        r = -EIO;
    free(ib);
    free(ob);
    free(st);
    return r;
}

/* Make the disk file `href` whole in `dir`: join chunks, inflate gzip.
 * Returns the path to read (malloc'd). */
/* A gzip member may inflate to at most this many times its size. */
#define IMP_MAX_RATIO 64

char *appliance_prepare_file(const char *dir, const struct ovf_file *f, uint64_t capacity,
                              char *err, size_t errlen)
{
    char src[4400], joined[4400];
    snprintf(src, sizeof src, "%s/%s", dir, f->href);
    snprintf(joined, sizeof joined, "%s/joined.tmp", dir);
    if (access(src, R_OK) != 0) {             /* chunked: href.000000000 ... */
        FILE *out = fopen(joined, "wb");
        char *buf = malloc(1 << 20);
        for (unsigned c = 0; out && buf; c++) {
            char cp[4500];
            snprintf(cp, sizeof cp, "%s.%09u", src, c);
            FILE *in = fopen(cp, "rb");
            if (!in) {
                if (c == 0) {
                    snprintf(err, errlen, "%s: disk file missing from the appliance", f->href);
                    fclose(out);
                    free(buf);
                    return NULL;
                }
                break;
            }
            size_t n;
            while ((n = fread(buf, 1, 1 << 20, in)) > 0)
                fwrite(buf, 1, n, out);
            fclose(in);
            unlink(cp);
        }
        free(buf);
        if (!out || fclose(out) != 0) {
            snprintf(err, errlen, "%s: cannot join chunks", f->href);
            return NULL;
        }
        rename(joined, src);
    }
    struct stat st;
    if (stat(src, &st) == 0 && f->size && (uint64_t)st.st_size > f->size) {
        snprintf(err, errlen, "%s: member is %lld bytes, larger than the %llu the descriptor "
                 "declares (ovf:size); refused", f->href, (long long)st.st_size,
                 (unsigned long long)f->size);
        return NULL;
    }
    if (f->compression && !strcmp(f->compression, "gzip")) {
        /* A gzip bomb must not fill the disk: a disk file inflates to at
         * most its capacity plus its metadata (limit), and never more than
         * IMP_MAX_RATIO times its compressed size. */
        uint64_t limit = (uint64_t)st.st_size * IMP_MAX_RATIO + (64u << 20);
        if (capacity && capacity + (64u << 20) < limit)
            limit = capacity + (64u << 20);
        int r = imp_gunzip(src, joined, limit);
        if (r == -EFBIG) {
            snprintf(err, errlen, "%s: gzip data inflates past %llu bytes (the disk's capacity "
                     "plus metadata): refused as a gzip bomb", f->href,
                     (unsigned long long)limit);
            unlink(joined);
            return NULL;
        }
        if (r < 0) {
            snprintf(err, errlen, "%s: gzip data is corrupt or truncated", f->href);
            unlink(joined);
            return NULL;
        }
        rename(joined, src);
    } else if (f->compression) {
        snprintf(err, errlen, "%s: unsupported ovf:compression=\"%s\"", f->href, f->compression);
        return NULL;
    }
    return strdup(src);
}

/* The work folder is inside the output folder, so the ISO moves by rename. */
static int imp_move_iso(const char *src, const char *dst, char *err, size_t errlen)
{
    /* A (dangling) symbolic link at dst stays: the file it leads to gets
     * the ISO. */
    char put[4096];
    if (vt_resolve_out(dst, put, sizeof put, err, errlen) < 0)
        return -1;
    if (rename(src, put) < 0) {
        snprintf(err, errlen, "%s: %s", dst, strerror(errno));
        return -1;
    }
    return 0;
}

static void imp_sanitize(char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
            *s = '_';
}

/* The name the outputs (NAME.xml, NAME.sh, NAME-diskN) and the domain get:
 * the VM's name when it is a plain name; an empty, dot-leading (hidden, "..")
 * or dash-leading (taken for an option by virsh and sh) or path-like name is
 * replaced by one made from the appliance's file name.  Returns true when
 * the VM's own name was kept. */
bool safe_vm_name(const char *vm, const char *path, char *out, size_t len)
{
    if (vm && *vm && *vm != '.' && *vm != '-' && !strchr(vm, '/') && !strchr(vm, '\\')) {
        snprintf(out, len, "%s", vm);
        imp_sanitize(out);
        return true;
    }
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    snprintf(out, len, "%s", base);
    char *dot = strrchr(out, '.');
    if (dot && dot != out)
        *dot = 0;
    imp_sanitize(out);
    for (char *p = out; *p == '.' || *p == '-'; p++)
        *p = '_';
    if (!*out)
        snprintf(out, len, "appliance");
    return false;
}

/* The virtual size of a disk file as vdisk reads it. */
static int imp_virtual_size(const char *path, const struct disk_window *w, uint64_t *size,
                            char *err, size_t errlen)
{
    vd_image *img = NULL;
    vd_error e = { 0 };
    int r = vd_open(path, &(vd_open_opts){ .readonly = true, .window_offset = w ? w->off : 0,
                                           .window_length = w ? w->len : 0,
                                           .window_name = w ? w->name : NULL }, &img, &e);
    if (r < 0) {
        snprintf(err, errlen, "%s", e.msg);
        return r;
    }
    *size = vd_size(img);
    vd_close(img, NULL);
    return 0;
}

/* A disk the descriptor declares without a file (an empty data disk): a
 * new, empty disk of the declared capacity. */
static int imp_create_empty(const char *dst, const char *fmt, uint64_t size, char *err,
                            size_t errlen)
{
    vd_error e = { 0 };
    if (vd_create(dst, &(vd_create_opts){ .format = fmt, .size = size }, &e) < 0) {
        snprintf(err, errlen, "%s", e.msg);
        return -1;
    }
    return 0;
}

static int imp_check_cert(const struct appliance *ap, const struct import_opts *o)
{
    if (!ap->cert_text)
        return 0;
    struct cert_result cr;
    cert_verify(ap->cert_text, ap->cert_len, ap->mf_text ? ap->mf_text : "", ap->mf_len,
                ap->mf_name ? ap->mf_name : "(no manifest)", o->cafile, &cr);
    if (!cr.signature_ok) {
        fprintf(stderr, "ovatool: certificate: %s\n", cr.detail);
        return -1;
    }
    if (cr.chain_checked && !cr.chain_trusted) {
        fprintf(stderr, "ovatool: certificate: %s\n", cr.detail);
        return -1;
    }
    fprintf(stderr, "certificate: signature ok, signer %s%s\n", cr.signer,
            cr.chain_checked ? ", chain trusted" : " (chain not checked: no --ca-file)");
    return 0;
}

/* The manifest's digest of a member read in place, computed by a thread
 * of its own while the disk converts: the hashing costs no time of the
 * conversion's, and the member is read from the page cache once. */
struct imp_digest {
    const struct appliance *ap;
    struct appliance_file *f;
    char hex[129];
    int r;
    pthread_t th;
    bool running;
};

static void *imp_digest_run(void *arg)
{
    struct imp_digest *d = arg;
    d->r = appliance_digest_window(d->ap, d->f, d->f->want_alg, d->hex);
    return NULL;
}

/* Start checking member f (nothing to do when it has no pending digest). */
static void imp_digest_start(struct imp_digest *d, const struct appliance *ap,
                             struct appliance_file *f)
{
    *d = (struct imp_digest){ .ap = ap, .f = f };
    if (!f || !f->want_hex[0] || f->verified)
        return;
    d->running = pthread_create(&d->th, NULL, imp_digest_run, d) == 0;
    if (!d->running)
        imp_digest_run(d);
}

/* Wait for the digest and compare it: 0 when it matches (or there was
 * nothing to check); -1 with the message verify gives. */
static int imp_digest_end(struct imp_digest *d, char *err, size_t errlen)
{
    if (d->running)
        pthread_join(d->th, NULL);
    struct appliance_file *f = d->f;
    if (!f || !f->want_hex[0] || f->verified)
        return 0;
    if (d->r < 0) {
        snprintf(err, errlen, "%s: member %s (data at offset 0x%llx): cannot be read for its "
                 "%s digest", d->ap->src_path, f->name, (unsigned long long)f->data_off,
                 digest_name(f->want_alg));
        return -1;
    }
    if (strcmp(d->hex, f->want_hex)) {
        char m[2048];
        appliance_digest_mismatch(d->ap, f->want_alg, f->name, f->want_hex, d->hex, m, sizeof m);
        snprintf(err, errlen, "%s%s", m, IMP_HINT);
        return -1;
    }
    f->verified = true;
    return 0;
}

int ova_import(const char *path, const struct import_opts *o)
{
    char err[8192] = "", work[4200];
    struct appliance ap;
    if (mkdir(o->outdir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "ovatool: %s: %s\n", o->outdir, strerror(errno));
        return 1;
    }
    snprintf(work, sizeof work, "%s/.ovatool-import.%d", o->outdir, (int)getpid());
    if (mkdir(work, 0700) < 0) {
        fprintf(stderr, "ovatool: %s: %s\n", work, strerror(errno));
        return 1;
    }
    int rc, checked = 0;
    const char *failed = err;     /* NULL once every disk is converted */
    struct import_disk *disks = NULL;
    size_t nd = 0;
    if (appliance_read(path, work, APP_WINDOW_DISKS, &ap, err, sizeof err) < 0)
        goto out;
    if (!ap.mf_text && o->strict) {
        snprintf(err, sizeof err, "%s: no manifest (.mf): refused with --strict", path);
        goto out;
    }
    if (!ap.mf_text && !o->no_verify) {
        /* VirtualBox and ovftool import such appliances with a warning */
        fprintf(stderr, "ovatool: %s: warning: no manifest (.mf): the files' integrity is not "
                "checked (--strict refuses such appliances)\n", path);
    } else if (!o->no_verify) {
        ap.defer_windowed = true;
        if (appliance_verify_manifest(&ap, err, sizeof err, &checked) < 0) {
            char e2[8400];
            snprintf(e2, sizeof e2, "%s%s", err, IMP_HINT);
            snprintf(err, sizeof err, "%.8000s", e2);
            goto out;
        }
        if (imp_check_cert(&ap, o) < 0) {
            snprintf(err, sizeof err, "%s: certificate check failed%s", path, IMP_HINT);
            goto out;
        }
    }
    char name[256];
    if (!safe_vm_name(ap.ovf.name, path, name, sizeof name)) {
        fprintf(stderr, "ovatool: %s: warning: VM name '%s' is not usable as a file or domain "
                "name; using '%s'\n", path, ap.ovf.name ? ap.ovf.name : "", name);
        free(ap.ovf.name);
        ap.ovf.name = strdup(name);
    }
    disks = calloc(ap.ovf.n_disks + 1, sizeof *disks);
    for (size_t i = 0; i < ap.ovf.n_disks; i++) {
        const struct ovf_disk *d = &ap.ovf.disks[i];
        const struct ovf_file *f = d->file_ref ? ovf_find_file(&ap.ovf, d->file_ref) : NULL;
        if (!ovf_disk_in_use(&ap.ovf, d))
            continue;      /* a disk of another deployment option */
        if (d->capacity_error) {
            snprintf(err, sizeof err, "%s: disk %s: %s; refused", ap.ovf_name,
                     d->id ? d->id : "?", d->capacity_error);
            goto out;
        }
        if (!f && (ovf_disk_is_cdrom(d) || !d->capacity)) {
            fprintf(stderr, "ovatool: %s: warning: %s %s has no file%s; not attached\n",
                    ap.ovf_name, ovf_disk_is_cdrom(d) ? "CD-ROM" : "disk", d->id ? d->id : "?",
                    ovf_disk_is_cdrom(d) ? "" : " and no capacity");
            continue;
        }
        if (!f) {
            char dst[4600];
            snprintf(dst, sizeof dst, "%s/%s-disk%zu.%s", o->outdir, name, nd + 1, o->format);
            if (access(dst, F_OK) == 0) {
                snprintf(err, sizeof err, "%s: already exists; not overwritten", dst);
                goto out;
            }
            if (imp_create_empty(dst, o->format, d->capacity, err, sizeof err) < 0)
                goto out;
            disks[nd] = (struct import_disk){ .disk = d, .path = realpath(dst, NULL),
                                              .format = o->format };
            nd++;
            fprintf(o->json ? stderr : stdout, "disk %zu: %s (empty, %llu bytes: the descriptor gives no file)\n", nd, dst,
                   (unsigned long long)d->capacity);
            continue;
        }
        if (!ovf_href_is_plain(f->href)) {
            snprintf(err, sizeof err, "%s: file reference '%s' leaves the appliance; refused",
                     ap.ovf_name, f->href);
            goto out;
        }
        /* A plain ustar member is converted where it lies in the .ova,
         * through the descriptor its digest was computed from (no copy,
         * no second name to look it up by); the rest is extracted. */
        struct appliance_file *af = appliance_windowed(&ap, f->href), *member = af;
        char wname[4400];
        struct disk_window win = { 0 };
        char *src;
        if (af) {
            if (appliance_member_fits(&ap, af, f, err, sizeof err) < 0)
                goto out;
            snprintf(wname, sizeof wname, "%s: member %s", path, f->href);
            win = (struct disk_window){ .off = af->data_off, .len = af->size, .name = wname };
            src = appliance_fd_path(&ap);
        } else if (appliance_member_present(&ap, f->href, err, sizeof err) == 0) {
            src = appliance_prepare_file(work, f, d->capacity, err, sizeof err);
        } else {
            goto out;
        }
        if (!src)
            goto out;
        bool cdrom = ovf_disk_is_cdrom(d);
        char dst[4600];
        if (cdrom)
            snprintf(dst, sizeof dst, "%s/%s-cd%zu.iso", o->outdir, name, nd + 1);
        else
            snprintf(dst, sizeof dst, "%s/%s-disk%zu.%s", o->outdir, name, nd + 1, o->format);
        if (access(dst, F_OK) == 0) {
            snprintf(err, sizeof err, "%s: already exists; not overwritten", dst);
            free(src);
            goto out;
        }
        /* The virtual size follows ovf:capacity: a smaller file is grown
         * (the guest was given the declared size); a larger one holds data
         * past the declared end and is refused. */
        uint64_t vsize = 0;
        int vr = cdrom ? 0 : imp_virtual_size(src, af ? &win : NULL, &vsize, err, sizeof err);
        if (vr == -EPERM && af) {       /* it names other members: extract it */
            free(src);
            if (!(src = appliance_extract_member(&ap, af, work, err, sizeof err)))
                goto out;
            af = NULL;
            vr = imp_virtual_size(src, NULL, &vsize, err, sizeof err);
        }
        if (vr < 0) {
            free(src);
            goto out;
        }
        if (!cdrom && d->capacity && vsize > d->capacity) {
            snprintf(err, sizeof err, "%s: disk %s: %s has a virtual size of %llu bytes, larger "
                     "than the ovf:capacity of %llu bytes the descriptor declares; refused",
                     ap.ovf_name, d->id ? d->id : "?", f->href, (unsigned long long)vsize,
                     (unsigned long long)d->capacity);
            free(src);
            goto out;
        }
        if (!cdrom && d->capacity > vsize)
            fprintf(stderr, "ovatool: disk %s: %s is %llu bytes, grown to the declared "
                    "ovf:capacity of %llu bytes\n", d->id ? d->id : "?", f->href,
                    (unsigned long long)vsize, (unsigned long long)d->capacity);
        /* An ISO is a medium, not a disk: it keeps its bytes (and any
         * signature over them) and is attached read-only. */
        struct imp_digest dg;
        imp_digest_start(&dg, &ap, member);
        int r = cdrom ? imp_move_iso(src, dst, err, sizeof err)
                      : disk_convert(src, NULL, af ? &win : NULL, dst, o->format, NULL,
                                     d->capacity, o->progress, false, NULL, err, sizeof err);
        /* A digest that does not match is the cause of whatever the
         * conversion made of those bytes: it is the message. */
        char derr[2048];
        if (imp_digest_end(&dg, derr, sizeof derr) < 0) {
            if (r == 0)
                unlink(dst);    /* converted from bytes the manifest does not vouch for */
            snprintf(err, sizeof err, "%s", derr);
            r = -1;
        }
        if (!af)
            unlink(src);
        free(src);
        if (r < 0)
            goto out;
        disks[nd].disk = d;
        disks[nd].path = realpath(dst, NULL);
        disks[nd].format = cdrom ? "raw" : o->format;
        disks[nd].cdrom = cdrom;
        nd++;
        fprintf(o->json ? stderr : stdout, "%s %zu: %s\n", cdrom ? "cd-rom" : "disk", nd, dst);
    }
    /* Members read in place that no disk in use converted: checked now. */
    for (size_t i = 0; i < ap.n_files; i++) {
        struct imp_digest dg;
        imp_digest_start(&dg, &ap, &ap.files[i]);
        if (imp_digest_end(&dg, err, sizeof err) < 0)
            goto out;
    }
    if (ap.mf_text && !o->no_verify)
        fprintf(stderr, "manifest: %d digests verified\n", checked);
    failed = NULL;
out:
    rc = import_conclude(&ap.ovf, disks, nd, name, o, failed);
    free(disks);
    imp_rmtree(work, &ap);
    appliance_free(&ap);
    return rc;
}
