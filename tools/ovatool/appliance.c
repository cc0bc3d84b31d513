/* appliance.c - reading an appliance: an .ova (tar, read in one pass with
 * libarchive) or an .ovf with its files in the same folder.  Every member is
 * digested (the manifest's algorithms when it came first, else SHA256) and
 * optionally extracted; a disk stored as plain ustar data can instead be
 * left where it is and read in place (APP_WINDOW_DISKS).  Chunked members
 * (name.000000000, .000000001, ...) are joined; members compressed with
 * ovf:compression="gzip" are inflated on extraction. */
#include "ovatool.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define APP_MAX_MEMBERS 4096
#define APP_MAX_TEXT (16u << 20)     /* .ovf, .mf, .cert */

static bool app_has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcasecmp(s + a - b, suf);
}

/* A member name we accept: a plain file name, no folders, no "..". */
static bool app_plain_name(const char *n)
{
    return n && *n && !strchr(n, '/') && strcmp(n, ".") && strcmp(n, "..");
}

static bool app_is_text(const char *name)
{
    return app_has_suffix(name, ".ovf") || app_has_suffix(name, ".mf") ||
           app_has_suffix(name, ".cert");
}

struct app_member {
    struct appliance_file *f;
    struct digest_ctx *d[3];          /* by enum ovf_digest; NULL: not computed */
    FILE *out;
    char *text; size_t text_len;   /* kept in memory for .ovf/.mf/.cert */
    bool failed;                   /* reading it failed: release, don't parse */
};

/* Start member `name`: with `extract_dir` (appliance_read's) its name
 * must be new, and with `write` it is written there. */
static int app_member_begin(struct appliance *ap, const char *name, const char *extract_dir,
                            bool write, bool digest, struct app_member *m, char *err,
                            size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (ap->n_files >= APP_MAX_MEMBERS) {
        snprintf(err, errlen, "more than %d members", APP_MAX_MEMBERS);
        return -1;
    }
    /* Extracting or reading in place, a name must say which member it is. */
    for (size_t i = 0; extract_dir && i < ap->n_files; i++)
        if (!strcmp(ap->files[i].name, name)) {
            snprintf(err, errlen, "%s: member '%s' appears twice; refused", ap->src_path, name);
            return -1;
        }
    struct appliance_file *nv = realloc(ap->files, (ap->n_files + 1) * sizeof *nv);
    if (!nv)
        return -1;
    ap->files = nv;
    m->f = &ap->files[ap->n_files++];
    memset(m->f, 0, sizeof *m->f);
    m->f->name = strdup(name);
    /* Each digest costs about as much CPU as the whole conversion's
     * decompression: only those the manifest uses, when it came first (as
     * the OVF specification orders members), else SHA256 (what current
     * exporters write).  Another one is computed later, by a second read,
     * if the manifest turns out to name it. */
    unsigned algs = ap->mf_algs ? ap->mf_algs : 1u << OVF_SHA256;
    for (int a = OVF_SHA1; digest && a <= OVF_SHA512; a++)
        if ((algs & (1u << a)) && !(m->d[a] = digest_new((enum ovf_digest)a))) {
            snprintf(err, errlen, "%s: cannot start a %s digest", name,
                     digest_name((enum ovf_digest)a));
            return -1;
        }
    if (extract_dir && write) {
        m->f->extracted = true;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", extract_dir, name);
        m->out = fopen(path, "wbx");
        if (!m->out) {
            snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
            return -1;
        }
    }
    return 0;
}


static int app_member_data(struct app_member *m, const void *buf, size_t n, char *err,
                           size_t errlen)
{
    for (int a = OVF_SHA1; a <= OVF_SHA512; a++)
        if (m->d[a])
            digest_update(m->d[a], buf, n);
    m->f->size += n;
    if (app_is_text(m->f->name)) {
        if (m->text_len + n > APP_MAX_TEXT) {
            snprintf(err, errlen, "%s: larger than the %u MiB limit for descriptors",
                     m->f->name, APP_MAX_TEXT >> 20);
            return -1;
        }
        char *t = realloc(m->text, m->text_len + n + 1);
        if (!t)
            return -1;
        memcpy(t + m->text_len, buf, n);
        m->text = t;
        m->text_len += n;
        t[m->text_len] = 0;
    }
    if (m->out && fwrite(buf, 1, n, m->out) != n) {
        snprintf(err, errlen, "%s: write failed: %s", m->f->name, strerror(errno));
        return -1;
    }
    return 0;
}

static int app_member_end(struct appliance *ap, struct app_member *m, char *err, size_t errlen)
{
    char *hex[3] = { m->f->sha1, m->f->sha256, m->f->sha512 };
    for (int a = OVF_SHA1; a <= OVF_SHA512; a++)
        if (m->d[a])
            digest_final_hex(m->d[a], hex[a]);
    if (m->out && fclose(m->out) != 0) {
        snprintf(err, errlen, "%s: write failed: %s", m->f->name, strerror(errno));
        return -1;
    }
    const char *name = m->f->name;
    if (m->failed) {
        free(m->text);
        return 0;
    }
    if (app_has_suffix(name, ".ovf") && !ap->ovf_name) {
        ap->ovf_name = strdup(name);
        if (ovf_parse(m->text ? m->text : "", m->text_len, name, &ap->ovf, err, errlen) < 0) {
            free(m->text);
            return -1;
        }
        free(m->text);
    } else if (app_has_suffix(name, ".mf") && !ap->mf_text) {
        ap->mf_text = m->text ? m->text : strdup("");
        ap->mf_len = m->text_len;
        ap->mf_name = strdup(name);
        struct manifest mf;
        char ignored[256];      /* a bad manifest is reported by the verification */
        if (mf_parse(ap->mf_text, ap->mf_len, name, &mf, ignored, sizeof ignored) == 0) {
            for (size_t i = 0; i < mf.n; i++)
                ap->mf_algs |= 1u << mf.v[i].alg;
            mf_free(&mf);
        }
    } else if (app_has_suffix(name, ".cert") && !ap->cert_text) {
        ap->cert_text = m->text ? m->text : strdup("");
        ap->cert_len = m->text_len;
    } else {
        free(m->text);
    }
    return 0;
}

struct archive *ova_open_tar(const char *path, char *err, size_t errlen)
{
    struct archive *ar = archive_read_new();
    if (!ar) {
        if (err)
            snprintf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    archive_read_support_format_tar(ar);
    if (archive_read_open_filename(ar, path, 1 << 20) != ARCHIVE_OK) {
        if (err)
            snprintf(err, errlen, "%s: %s", path, archive_error_string(ar));
        archive_read_free(ar);
        return NULL;
    }
    return ar;
}

/* Number field of a ustar header: octal digits ended by NUL or space, or
 * base-256 (first byte 0x80, then big-endian: the sizes of 8 GiB and more
 * that GNU tar and libarchive write); UINT64_MAX when it is neither. */
static uint64_t app_octal(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    size_t i = 0;
    if (p[0] == 0x80) {
        for (i = 1; i < n; i++) {
            if (v >> 55)
                return UINT64_MAX;      /* past 2^63: not a size */
            v = v << 8 | p[i];
        }
        return v;
    }
    while (i < n && p[i] == ' ')
        i++;
    if (i == n || p[i] < '0' || p[i] > '7')
        return UINT64_MAX;
    for (; i < n && p[i] >= '0' && p[i] <= '7'; i++)
        v = v << 3 | (uint64_t)(p[i] - '0');
    return i == n || p[i] == 0 || p[i] == ' ' ? v : UINT64_MAX;
}

/* The header at `pos` of the archive (open as `fd`) is one plain ustar
 * header for a regular file `name` of `size` bytes, its data right behind
 * it: no pax or GNU extension header before it, no prefix, a valid
 * checksum.  Anything else is extracted as before. */
static bool app_plain_ustar(int fd, int64_t pos, const char *name, int64_t size)
{
    unsigned char h[512];
    if (pos < 0 || size < 0 || pread(fd, h, sizeof h, pos) != (ssize_t)sizeof h)
        return false;
    uint64_t sum = 0;
    for (size_t i = 0; i < sizeof h; i++)
        sum += i >= 148 && i < 156 ? ' ' : h[i];
    size_t nl = strlen(name);
    return app_octal(h + 148, 8) == sum && !memcmp(h + 257, "ustar", 5) &&
           (h[156] == '0' || h[156] == 0) && nl < 100 && !memcmp(h, name, nl) && !h[nl] &&
           !h[345] && app_octal(h + 124, 12) == (uint64_t)size;
}

/* Is member `name` a disk to read in place (appliance_read)? */
static bool app_windowable(const struct appliance *ap, const char *name, unsigned flags)
{
    const struct ovf_appliance *a = &ap->ovf;
    if (!ap->ovf_name || app_is_text(name))
        return false;           /* the descriptor comes later: nothing is known */
    const struct ovf_file *f = NULL;
    for (size_t i = 0; i < a->n_files && !f; i++)
        if (!strcmp(a->files[i].href, name))
            f = &a->files[i];
    if (!f || f->compression || f->chunk_size)
        return false;
    for (size_t i = 0; i < a->n_disks; i++)
        if (a->disks[i].file_ref && !strcmp(a->disks[i].file_ref, f->id) &&
            ovf_disk_is_cdrom(&a->disks[i]) && !(flags & APP_WINDOW_MEDIA))
            return false;       /* an ISO is copied out as it is */
    return true;
}

static int app_read_ova(const char *path, const char *extract_dir, unsigned flags,
                        struct appliance *ap, char *err, size_t errlen)
{
    /* One descriptor for the whole import: the disks read in place later
     * are in the very file whose members were digested here. */
    ap->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (ap->fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct archive *ar = archive_read_new();
    archive_read_support_format_tar(ar);
    if (archive_read_open_fd(ar, ap->fd, 1 << 20) != ARCHIVE_OK) {
        snprintf(err, errlen, "%s: %s", path, archive_error_string(ar));
        archive_read_free(ar);
        return -1;
    }
    struct archive_entry *e;
    int r = 0, ar_r;
    char *buf = malloc(1 << 20), last[256] = "";
    uint64_t next_header = 0;       /* where the next header should be */
    while (r == 0 && (ar_r = archive_read_next_header(ar, &e)) == ARCHIVE_OK) {
        const char *name = archive_entry_pathname(e);
        if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e)) {
            snprintf(err, errlen, "%s: member '%s' is not a regular file (link, folder or "
                     "device); refused", path, name ? name : "");
            r = -1;
            break;
        }
        if (!app_plain_name(name)) {
            snprintf(err, errlen, "%s: member '%s' is not a plain file name; refused",
                     path, name ? name : "");
            r = -1;
            break;
        }
        if (ap->n_files == 0 && !app_has_suffix(name, ".ovf"))
            appliance_diag(ap, "first member is '%s', not the .ovf descriptor the OVF "
                           "specification puts first", name);
        int64_t hpos = archive_read_header_position(ar);
        bool window = extract_dir && (flags & APP_WINDOW_DISKS) && archive_entry_size(e) > 0 &&
                      app_windowable(ap, name, flags) &&
                      app_plain_ustar(ap->fd, hpos, name, archive_entry_size(e));
        struct app_member m;
        /* What is read in place, and a descriptor, manifest or
         * certificate (kept in memory) when disks are, is not written out;
         * every name is checked for a second member of that name. */
        bool write = !window && !((flags & APP_WINDOW_DISKS) && app_is_text(name));
        if ((r = app_member_begin(ap, name, extract_dir, write, !window, &m, err, errlen)) < 0)
            break;
        la_ssize_t n = 0;
        struct stat st;
        if (window) {
            /* Skipped here (a seek): its digest is computed while it is
             * converted (import.c), from the same descriptor. */
            m.f->windowed = true;
            m.f->data_off = (uint64_t)hpos + 512;
            m.f->size = (uint64_t)archive_entry_size(e);
            if (fstat(ap->fd, &st) < 0 || m.f->data_off + m.f->size > (uint64_t)st.st_size) {
                snprintf(err, errlen, "%s: member %s (data at offset 0x%llx, %llu bytes) ends "
                         "past the end of the archive (%lld bytes): truncated", path, name,
                         (unsigned long long)m.f->data_off, (unsigned long long)m.f->size,
                         (long long)st.st_size);
                r = -1;
            } else if (archive_read_data_skip(ar) != ARCHIVE_OK) {
                n = -1;
            }
        }
        while (!window && (n = archive_read_data(ar, buf, 1 << 20)) > 0)
            if ((r = app_member_data(&m, buf, (size_t)n, err, errlen)) < 0)
                break;
        if (n < 0 && r == 0) {
            snprintf(err, errlen, "%s: member %s (header at offset 0x%llx): %s after %llu of "
                     "its %lld bytes", path, name, (unsigned long long)hpos,
                     archive_error_string(ar), (unsigned long long)m.f->size,
                     (long long)archive_entry_size(e));
            r = -1;
        }
        snprintf(last, sizeof last, "%s", name);
        next_header = (uint64_t)hpos + 512 + (m.f->size + 511) / 512 * 512;
        ap->tar_end = next_header;
        if (r == 0) {
            r = app_member_end(ap, &m, err, errlen);
        } else {              /* keep the first error; just release the member */
            char ignored[256];
            m.failed = true;
            app_member_end(ap, &m, ignored, sizeof ignored);
        }
    }
    if (r == 0 && ar_r != ARCHIVE_EOF && last[0]) {
        snprintf(err, errlen, "%s: not a valid tar archive after member %s (next header "
                 "at offset 0x%llx): %s", path, last, (unsigned long long)next_header,
                 archive_error_string(ar));
        r = -1;
    } else if (r == 0 && ar_r != ARCHIVE_EOF) {
        snprintf(err, errlen, "%s: not a valid tar archive: %s", path, archive_error_string(ar));
        r = -1;
    }
    free(buf);
    archive_read_free(ar);
    return r;
}

static int app_read_plain_file(struct appliance *ap, const char *dir, const char *name,
                               const char *extract_dir, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct app_member m;
    int r = app_member_begin(ap, name, extract_dir, true, true, &m, err, errlen);
    char *buf = malloc(1 << 20);
    size_t n;
    while (r == 0 && (n = fread(buf, 1, 1 << 20, f)) > 0)
        r = app_member_data(&m, buf, n, err, errlen);
    free(buf);
    fclose(f);
    if (m.f) {
        int r2 = app_member_end(ap, &m, err, errlen);
        if (!r)
            r = r2;
    }
    return r;
}

/* An .ovf in a folder: the descriptor, its referenced files (or their
 * chunks), and the .mf/.cert of the same base name when present. */
static int app_read_folder(const char *path, const char *extract_dir, struct appliance *ap,
                           char *err, size_t errlen)
{
    char *copy = strdup(path);
    char *slash = strrchr(copy, '/');
    const char *dir = slash ? (*slash = 0, copy) : ".";
    const char *base = slash ? slash + 1 : path;
    if (slash && !*dir)
        dir = "/";
    int r = app_read_plain_file(ap, dir, base, extract_dir, err, errlen);
    for (size_t i = 0; r == 0 && i < ap->ovf.n_files; i++) {
        const struct ovf_file *f = &ap->ovf.files[i];
        char p[4096];
        if (!ovf_href_is_plain(f->href)) {
            if (extract_dir) {
                snprintf(err, errlen, "%s: file reference '%s' is not a plain file name "
                         "(only files inside the appliance are followed); refused",
                         ap->ovf_name, f->href);
                r = -1;
            } else {
                ap->n_unsafe++;
                appliance_diag(ap, "file reference '%s' leaves the appliance (not followed; "
                               "import refuses it)", f->href);
            }
            continue;
        }
        snprintf(p, sizeof p, "%s/%s", dir, f->href);
        if (access(p, R_OK) == 0) {
            r = app_read_plain_file(ap, dir, f->href, extract_dir, err, errlen);
            continue;
        }
        for (unsigned c = 0; r == 0; c++) {
            char cn[600];
            snprintf(cn, sizeof cn, "%s.%09u", f->href, c);
            snprintf(p, sizeof p, "%s/%s", dir, cn);
            if (access(p, R_OK) != 0) {
                if (c == 0 && !extract_dir) {
                    /* info/verify on a bare descriptor: report, don't fail */
                    ap->n_missing++;
                    appliance_diag(ap, "file '%s' referenced by the descriptor is missing",
                                   f->href);
                } else if (c == 0) {
                    snprintf(err, errlen, "%s/%s: file referenced by the descriptor is missing",
                             dir, f->href);
                    r = -1;
                }
                break;
            }
            r = app_read_plain_file(ap, dir, cn, extract_dir, err, errlen);
        }
    }
    char stem[4096];
    snprintf(stem, sizeof stem, "%s", base);
    char *dot = strrchr(stem, '.');
    if (dot)
        *dot = 0;
    static const char *const sfx[] = { ".mf", ".cert" };
    for (int k = 0; r == 0 && k < 2; k++) {
        char n[4200], p[8400];
        snprintf(n, sizeof n, "%s%s", stem, sfx[k]);
        snprintf(p, sizeof p, "%s/%s", dir, n);
        if (access(p, R_OK) == 0)
            r = app_read_plain_file(ap, dir, n, extract_dir, err, errlen);
    }
    free(copy);
    return r;
}

void appliance_diag(struct appliance *ap, const char *fmt, ...)
{
    char line[1024];
    va_list va;
    va_start(va, fmt);
    vsnprintf(line, sizeof line, fmt, va);
    va_end(va);
    char **nv = realloc(ap->diags, (ap->n_diags + 1) * sizeof *nv);
    if (!nv)
        return;
    ap->diags = nv;
    ap->diags[ap->n_diags++] = strdup(line);
}

/* What the descriptor says that import would refuse or change. */
static void app_check_disks(struct appliance *ap)
{
    const struct ovf_appliance *a = &ap->ovf;
    if (ap->ovf_name && !ap->mf_text)
        appliance_diag(ap, "no manifest (.mf): the files' integrity cannot be checked");
    for (size_t i = 0; i < a->n_disks; i++) {
        const struct ovf_disk *d = &a->disks[i];
        if (!ovf_disk_in_use(a, d))
            continue;
        if (d->capacity_error)
            appliance_diag(ap, "disk %s: %s", d->id ? d->id : "?", d->capacity_error);
        else if (!d->file_ref && !d->capacity)
            appliance_diag(ap, "disk %s: neither a file nor a capacity", d->id ? d->id : "?");
    }
}

int appliance_read(const char *path, const char *extract_dir, unsigned flags,
                   struct appliance *ap, char *err, size_t errlen)
{
    memset(ap, 0, sizeof *ap);
    ap->fd = -1;
    ap->src_path = strdup(path);
    ap->extract_dir = extract_dir ? strdup(extract_dir) : NULL;
    if (!ap->src_path || (extract_dir && !ap->extract_dir)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int r;
    if (app_has_suffix(path, ".ovf")) {
        r = app_read_folder(path, extract_dir, ap, err, errlen);
    } else {
        ap->is_ova = true;
        r = app_read_ova(path, extract_dir, flags, ap, err, errlen);
        if (r == 0 && !ap->ovf_name) {
            snprintf(err, errlen, "%s: no .ovf descriptor in the archive", path);
            r = -1;
        }
    }
    if (r == 0)
        app_check_disks(ap);
    return r;
}

void appliance_free(struct appliance *ap)
{
    ovf_free(&ap->ovf);
    free(ap->ovf_name);
    free(ap->mf_text);
    free(ap->mf_name);
    free(ap->cert_text);
    for (size_t i = 0; i < ap->n_files; i++)
        free(ap->files[i].name);
    free(ap->files);
    for (size_t i = 0; i < ap->n_diags; i++)
        free(ap->diags[i]);
    free(ap->diags);
    free(ap->src_path);
    free(ap->extract_dir);
    if (ap->fd >= 0)
        close(ap->fd);
    memset(ap, 0, sizeof *ap);
    ap->fd = -1;
}

struct appliance_file *appliance_windowed(struct appliance *ap, const char *href)
{
    for (size_t i = 0; i < ap->n_files; i++)
        if (ap->files[i].windowed && !strcmp(ap->files[i].name, href))
            return &ap->files[i];
    return NULL;
}

/* /proc/self/fd/N reaches the open file itself, whatever is renamed
 * meanwhile; without /proc, the path. */
char *appliance_fd_path(const struct appliance *ap)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", ap->fd);
    return strdup(ap->fd >= 0 && access(p, R_OK) == 0 ? p : ap->src_path);
}

char *appliance_extract_member(const struct appliance *ap, const struct appliance_file *af,
                               const char *dir, char *err, size_t errlen)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, af->name);
    int out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    char *buf = malloc(1 << 20);
    uint64_t done = 0;
    ssize_t n = 1;
    while (out >= 0 && buf && done < af->size && n > 0) {
        size_t want = af->size - done < (1u << 20) ? (size_t)(af->size - done) : 1u << 20;
        if ((n = pread(ap->fd, buf, want, (off_t)(af->data_off + done))) > 0) {
            if (write(out, buf, (size_t)n) != n)
                n = -1;
            else
                done += (uint64_t)n;
        }
    }
    free(buf);
    if (out < 0 || close(out) != 0 || done != af->size) {
        snprintf(err, errlen, "%s: cannot extract member %s at offset 0x%llx: %s", ap->src_path,
                 af->name, (unsigned long long)(af->data_off + done),
                 n == 0 ? "end of file" : strerror(errno));
        unlink(path);
        return NULL;
    }
    return strdup(path);
}

/* Feed the `nth` (0-based) member called `name` of the archive `path` to
 * `d`.  0, or -1 when it is not there or cannot be read. */
static int app_digest_ova_member(const char *path, const char *name, size_t nth,
                                 struct digest_ctx *d, char *buf)
{
    struct archive *ar = ova_open_tar(path, NULL, 0);
    int r = -1;
    struct archive_entry *e;
    if (ar)
        while (archive_read_next_header(ar, &e) == ARCHIVE_OK) {
            const char *n = archive_entry_pathname(e);
            if (!n || strcmp(n, name) || nth--)
                continue;
            la_ssize_t got;
            while ((got = archive_read_data(ar, buf, 1 << 20)) > 0)
                digest_update(d, buf, (size_t)got);
            r = got < 0 ? -1 : 0;
            break;
        }
    archive_read_free(ar);
    return r;
}

/* Feed member `f`, left in the archive, to `d` (buf: 1 MiB).  0 or -1. */
static int app_digest_window(const struct appliance *ap, const struct appliance_file *f,
                             struct digest_ctx *d, char *buf)
{
    uint64_t done = 0;
    ssize_t n = 1;
    while (done < f->size && (n > 0 || (n < 0 && errno == EINTR))) {
        size_t want = f->size - done < (1u << 20) ? (size_t)(f->size - done) : 1u << 20;
        if ((n = pread(ap->fd, buf, want, (off_t)(f->data_off + done))) > 0) {
            digest_update(d, buf, (size_t)n);
            done += (uint64_t)n;
        }
    }
    return done == f->size ? 0 : -1;
}

int appliance_digest_window(const struct appliance *ap, const struct appliance_file *f,
                            enum ovf_digest alg, char hex[129])
{
    struct digest_ctx *d = digest_new(alg);
    char *buf = malloc(1 << 20);
    int r = d && buf ? app_digest_window(ap, f, d, buf) : -1;
    hex[0] = 0;
    if (d)
        digest_final_hex(d, hex);
    free(buf);
    return r;
}

/* Digest `alg` of member `f`, which reading did not compute, from a second
 * read: its extracted copy, its file beside the descriptor, or the archive
 * again.  Fills f's field; 0 or -1 with a message. */
static int app_rehash(struct appliance *ap, struct appliance_file *f, enum ovf_digest alg,
                      char *err, size_t errlen)
{
    char *hex = alg == OVF_SHA1 ? f->sha1 : alg == OVF_SHA512 ? f->sha512 : f->sha256;
    struct digest_ctx *d = digest_new(alg);
    char *buf = malloc(1 << 20);
    int r = -1;
    if (d && buf && f->windowed) {      /* in place, from the .ova read before */
        r = app_digest_window(ap, f, d, buf);
    } else if (d && buf && ap->is_ova && !f->extracted) {
        size_t nth = 0;
        for (struct appliance_file *p = ap->files; p < f; p++)
            nth += !strcmp(p->name, f->name);
        r = app_digest_ova_member(ap->src_path, f->name, nth, d, buf);
    } else if (d && buf) {
        char path[8400];
        const char *slash = strrchr(ap->src_path, '/');
        if (f->extracted)
            snprintf(path, sizeof path, "%s/%s", ap->extract_dir, f->name);
        else
            snprintf(path, sizeof path, "%.*s%s", slash ? (int)(slash - ap->src_path + 1) : 0,
                     ap->src_path, f->name);
        FILE *in = fopen(path, "rb");
        size_t n;
        while (in && (n = fread(buf, 1, 1 << 20, in)) > 0)
            digest_update(d, buf, n);
        r = in && !ferror(in) ? 0 : -1;
        if (in)
            fclose(in);
    }
    if (d)
        digest_final_hex(d, hex);
    free(buf);
    if (r < 0) {
        hex[0] = 0;
        snprintf(err, errlen, "%s: cannot read %s again for its %s digest", ap->src_path,
                 f->name, digest_name(alg));
    }
    return r;
}

void appliance_digest_mismatch(const struct appliance *ap, enum ovf_digest alg,
                               const char *member, const char *want, const char *have,
                               char *err, size_t errlen)
{
    snprintf(err, errlen, "%s: %s digest of %s does not match (manifest %.16s..., file %.16s...)",
             ap->mf_name, digest_name(alg), member, want, have);
}

int appliance_member_present(const struct appliance *ap, const char *href, char *err,
                             size_t errlen)
{
    if (!ap->is_ova)
        return 0;       /* a folder's missing files were refused while reading it */
    size_t n = strlen(href);
    for (size_t i = 0; i < ap->n_files; i++) {
        const char *m = ap->files[i].name;
        if (!strcmp(m, href) || (!strncmp(m, href, n) && !strcmp(m + n, ".000000000")))
            return 0;
    }
    snprintf(err, errlen, "%s: member %s, referenced by %s, is missing: the archive's %zu "
             "members end at offset 0x%llx", ap->src_path, href,
             ap->ovf_name ? ap->ovf_name : "the descriptor", ap->n_files,
             (unsigned long long)ap->tar_end);
    return -1;
}

int appliance_member_fits(const struct appliance *ap, const struct appliance_file *af,
                          const struct ovf_file *f, char *err, size_t errlen)
{
    if (!f->size || af->size <= f->size)
        return 0;
    snprintf(err, errlen, "%s: member %s (data at offset 0x%llx) is %llu bytes, larger than "
             "the %llu the descriptor declares (ovf:size); refused", ap->src_path, f->href,
             (unsigned long long)af->data_off, (unsigned long long)af->size,
             (unsigned long long)f->size);
    return -1;
}

int appliance_verify_manifest(struct appliance *ap, char *err, size_t errlen,
                              int *checked)
{
    struct manifest mf;
    *checked = 0;
    if (!ap->mf_text) {
        snprintf(err, errlen, "no manifest (.mf) in the appliance");
        return -1;
    }
    if (mf_parse(ap->mf_text, ap->mf_len, ap->mf_name, &mf, err, errlen) < 0)
        return -1;
    int r = 0;
    for (size_t i = 0; i < mf.n && r == 0; i++) {
        const struct mf_entry *e = &mf.v[i];
        struct appliance_file *f = NULL;
        for (size_t k = 0; k < ap->n_files; k++)
            if (!strcmp(ap->files[k].name, e->file))
                f = &ap->files[k];
        if (!f) {
            snprintf(err, errlen, "%s: lists %s, which is not in the appliance", ap->mf_name,
                     e->file);
            r = -1;
            break;
        }
        if (f->windowed && ap->defer_windowed) {
            /* checked while it is converted (import.c), or at its end */
            f->want_alg = e->alg;
            snprintf(f->want_hex, sizeof f->want_hex, "%s", e->hex);
            (*checked)++;
            continue;
        }
        const char *have = e->alg == OVF_SHA1 ? f->sha1 : e->alg == OVF_SHA512 ? f->sha512
                                                                          : f->sha256;
        if (!*have && (r = app_rehash(ap, f, e->alg, err, errlen)) < 0)
            break;
        if (strcmp(have, e->hex)) {
            appliance_digest_mismatch(ap, e->alg, e->file, e->hex, have, err, errlen);
            r = -1;
        }
        (*checked)++;
    }
    /* Every disk file must be covered: a manifest that omits one proves nothing. */
    for (size_t i = 0; r == 0 && i < ap->ovf.n_files; i++) {
        const char *h = ap->ovf.files[i].href;
        bool listed = mf_find(&mf, h) != NULL;
        for (size_t k = 0; !listed && k < mf.n; k++)
            listed = !strncmp(mf.v[k].file, h, strlen(h)) && mf.v[k].file[strlen(h)] == '.';
        if (!listed) {
            snprintf(err, errlen, "%s: does not list %s", ap->mf_name, h);
            r = -1;
        }
    }
    mf_free(&mf);
    return r;
}
