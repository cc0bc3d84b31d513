/* descriptor.c - the VMDK text descriptor: parsing (embedded or separate,
 * comments, quoting, CRLF/CR line ends, NUL padding) and writing.
 *
 * The descriptor is untrusted text: its size and each line's length are
 * capped, numbers are range-checked, and only the keys the driver uses are
 * kept (the raw text is kept too, so the CID can be updated in place and the
 * DDB entries we do not know survive a write). */
#include "vmdk.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

bool vmdk_desc_probe(const uint8_t *head, size_t len)
{
    static const char sig[] = "# Disk DescriptorFile";
    size_t n = len < 4096 ? len : 4096;
    if (len >= sizeof sig - 1 && !memcmp(head, sig, sizeof sig - 1))
        return true;
    /* Some tools omit the first comment: a text file with an extent-ish
     * createType line near the start is a descriptor too. */
    for (size_t i = 0; i < n; i++)
        if (head[i] == 0 || (head[i] < 0x20 && !isspace(head[i])))
            return false;
    return memmem(head, n, "createType=", 11) != NULL &&
           memmem(head, n, "version=", 8) != NULL;
}

/* Trim spaces and tabs at both ends of [*s, *s+*n). */
static void vmdk_desc_trim(const char **s, size_t *n)
{
    while (*n && isblank((unsigned char)**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && isspace((unsigned char)(*s)[*n - 1]))
        (*n)--;
}

/* A value, without its quotes if it has them. */
static char *vmdk_desc_value(const char *v, size_t n)
{
    vmdk_desc_trim(&v, &n);
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        v++;
        n -= 2;
    }
    return strndup(v, n);
}

static int vmdk_desc_hex32(const char *v, size_t n, uint32_t *out)
{
    char tmp[24];
    vmdk_desc_trim(&v, &n);
    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        v++;
        n -= 2;
    }
    if (n == 0 || n > 16)
        return -1;
    memcpy(tmp, v, n);
    tmp[n] = 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(tmp, &end, 16);
    if (*end || errno || x > UINT32_MAX)
        return -1;
    *out = (uint32_t)x;
    return 0;
}

/* Next whitespace-separated token of an extent line; a quoted token may hold
 * spaces.  Returns NULL at the end of the line. */
static const char *vmdk_desc_token(const char **p, const char *end, size_t *n)
{
    const char *s = *p;
    while (s < end && isblank((unsigned char)*s))
        s++;
    if (s >= end)
        return NULL;
    const char *t = s;
    if (*s == '"') {
        t = ++s;
        while (t < end && *t != '"')
            t++;
        *n = (size_t)(t - s);
        *p = t < end ? t + 1 : t;
        return s;
    }
    while (t < end && !isblank((unsigned char)*t))
        t++;
    *n = (size_t)(t - s);
    *p = t;
    return s;
}

static int vmdk_desc_extent(struct vmdk_desc *d, const char *line, size_t n,
                            unsigned lineno, const char *where, vd_error *err)
{
    const char *p = line, *end = line + n, *tok[5];
    size_t tn[5];
    int k = 0;
    while (k < 5 && (tok[k] = vmdk_desc_token(&p, end, &tn[k])) != NULL)
        k++;
    if (k < 3)
        return vd_set_error(err, -EINVAL, "vmdk: %s line %u: extent line "
                            "needs ACCESS SECTORS TYPE", where, lineno);
    if (d->n_ext >= VMDK_MAX_EXTENTS)
        return vd_set_error(err, -EINVAL, "vmdk: %s line %u: more than %u "
                            "extents", where, lineno, VMDK_MAX_EXTENTS);
    struct vmdk_desc_extent x = { 0 };
    if (tn[0] >= sizeof x.access || tn[2] >= sizeof x.type)
        return vd_set_error(err, -EINVAL, "vmdk: %s line %u: bad extent "
                            "access or type", where, lineno);
    memcpy(x.access, tok[0], tn[0]);
    memcpy(x.type, tok[2], tn[2]);
    char num[24];
    char *e;
    if (tn[1] == 0 || tn[1] >= sizeof num)
        return vd_set_error(err, -EINVAL, "vmdk: %s line %u: bad extent size",
                            where, lineno);
    memcpy(num, tok[1], tn[1]);
    num[tn[1]] = 0;
    errno = 0;
    x.sectors = strtoull(num, &e, 10);
    if (*e || errno || !isdigit((unsigned char)num[0]) ||
        x.sectors > VD_MAX_VIRTUAL_SIZE / VMDK_SECTOR)
        return vd_set_error(err, -EINVAL, "vmdk: %s line %u: extent size "
                            "'%s' is not a sane sector count", where, lineno, num);
    if (k >= 4) {
        x.name = strndup(tok[3], tn[3]);
        if (!x.name)
            return -ENOMEM;
    }
    if (k >= 5) {
        if (tn[4] == 0 || tn[4] >= sizeof num) {
            free(x.name);
            return vd_set_error(err, -EINVAL, "vmdk: %s line %u: bad extent "
                                "offset", where, lineno);
        }
        memcpy(num, tok[4], tn[4]);
        num[tn[4]] = 0;
        errno = 0;
        x.offset = strtoull(num, &e, 10);
        if (*e || errno || !isdigit((unsigned char)num[0]) ||
            x.offset > VD_MAX_VIRTUAL_SIZE / VMDK_SECTOR) {
            free(x.name);
            return vd_set_error(err, -EINVAL, "vmdk: %s line %u: extent "
                                "offset '%s' is not a sane sector number", where,
                                lineno, num);
        }
    }
    struct vmdk_desc_extent *nv = realloc(d->ext, (d->n_ext + 1) * sizeof *nv);
    if (!nv) {
        free(x.name);
        return -ENOMEM;
    }
    d->ext = nv;
    d->ext[d->n_ext++] = x;
    return 0;
}

static bool vmdk_desc_is_access(const char *s, size_t n)
{
    return (n > 3 && !memcmp(s, "RW ", 3)) || (n > 7 && !memcmp(s, "RDONLY ", 7)) ||
           (n > 9 && !memcmp(s, "NOACCESS ", 9)) ||
           (n > 3 && !memcmp(s, "RW\t", 3)) || (n > 7 && !memcmp(s, "RDONLY\t", 7));
}

static int vmdk_desc_keyval(struct vmdk_desc *d, const char *line, size_t n,
                            const char *eq, unsigned lineno, const char *where,
                            vd_error *err)
{
    const char *k = line, *v = eq + 1;
    size_t kn = (size_t)(eq - line), vn = n - kn - 1;
    vmdk_desc_trim(&k, &kn);
    char **slot = NULL;
#define KEY(s) (kn == sizeof(s) - 1 && !memcmp(k, s, kn))
    if (KEY("CID") || KEY("parentCID")) {
        uint32_t x;
        if (vmdk_desc_hex32(v, vn, &x) < 0)
            return vd_set_error(err, -EINVAL, "vmdk: %s line %u: %.*s is not "
                                "a 32-bit hex number", where, lineno, (int)kn, k);
        if (KEY("CID")) {
            d->cid = x;
            d->has_cid = true;
            const char *s = v;
            size_t sn = vn;
            vmdk_desc_trim(&s, &sn);
            d->cid_pos = (size_t)(s - d->text);
            d->cid_len = sn;
        } else {
            d->parent_cid = x;
        }
        return 0;
    }
    if (KEY("createType"))
        slot = &d->create_type;
    else if (KEY("parentFileNameHint"))
        slot = &d->parent_hint;
    else if (KEY("ddb.adapterType"))
        slot = &d->adapter;
    else if (KEY("ddb.virtualHWVersion"))
        slot = &d->hwversion;
#undef KEY
    if (!slot)
        return 0;           /* a key we do not use: kept only in the text */
    free(*slot);
    *slot = vmdk_desc_value(v, vn);
    return *slot ? 0 : -ENOMEM;
}

int vmdk_desc_parse(struct vmdk_desc *d, const char *text, size_t len,
                    const char *where, vd_error *err)
{
    memset(d, 0, sizeof *d);
    d->parent_cid = 0xffffffffu;
    if (len > VMDK_MAX_DESC_BYTES)
        return vd_set_error(err, -EINVAL, "vmdk: %s: descriptor of %zu bytes is larger "
                            "than %u", where, len, VMDK_MAX_DESC_BYTES);
    /* The embedded descriptor area is NUL-padded: the text ends there. */
    const char *nul = memchr(text, 0, len);
    if (nul)
        len = (size_t)(nul - text);
    d->text = strndup(text, len);
    if (!d->text)
        return -ENOMEM;
    d->len = len;
    const char *p = d->text, *end = d->text + len;
    unsigned lineno = 0;
    int r = 0;
    while (p < end && r == 0) {
        const char *e = p;
        while (e < end && *e != '\n' && *e != '\r')
            e++;
        lineno++;
        size_t n = (size_t)(e - p);
        if (n > VMDK_MAX_LINE) {
            r = vd_set_error(err, -EINVAL, "vmdk: %s line %u is %zu bytes "
                             "long (limit %u)", where, lineno, n, VMDK_MAX_LINE);
            break;
        }
        const char *s = p;
        vmdk_desc_trim(&s, &n);
        const char *eq = memchr(s, '=', n);
        if (n == 0 || s[0] == '#')
            ;                               /* blank or comment */
        else if (vmdk_desc_is_access(s, n))
            r = vmdk_desc_extent(d, s, n, lineno, where, err);
        else if (eq)
            r = vmdk_desc_keyval(d, s, n, eq, lineno, where, err);
        else
            r = vd_set_error(err, -EINVAL, "vmdk: %s line %u: cannot parse "
                             "'%.40s'", where, lineno, s);
        /* CRLF counts as one line end */
        if (e < end && *e == '\r' && e + 1 < end && e[1] == '\n')
            e++;
        p = e + 1;
    }
    if (r == 0 && !d->create_type)
        r = vd_set_error(err, -EINVAL, "vmdk: %s: descriptor has no createType", where);
    if (r < 0)
        vmdk_desc_free(d);
    return r;
}

void vmdk_desc_free(struct vmdk_desc *d)
{
    for (size_t i = 0; i < d->n_ext; i++)
        free(d->ext[i].name);
    free(d->ext);
    free(d->text);
    free(d->create_type);
    free(d->parent_hint);
    free(d->adapter);
    free(d->hwversion);
    memset(d, 0, sizeof *d);
}

int vmdk_desc_set_cid(struct vmdk_desc *d, uint32_t cid)
{
    if (!d->cid_pos)
        return -1;
    char hex[9];
    snprintf(hex, sizeof hex, "%08" PRIx32, cid);
    if (d->cid_len == 8) {
        memcpy(d->text + d->cid_pos, hex, 8);
    } else {
        size_t n = d->len - d->cid_len + 8;
        char *t = malloc(n + 1);
        if (!t)
            return -1;
        memcpy(t, d->text, d->cid_pos);
        memcpy(t + d->cid_pos, hex, 8);
        memcpy(t + d->cid_pos + 8, d->text + d->cid_pos + d->cid_len,
               d->len - d->cid_pos - d->cid_len);
        t[n] = 0;
        free(d->text);
        d->text = t;
        d->len = n;
        d->cid_len = 8;
    }
    d->cid = cid;
    return (int)d->len;
}

char *vmdk_desc_format(const struct vmdk_desc_params *p)
{
    /* Geometry as VMware reports it: 16 heads for IDE, 255 for SCSI. */
    unsigned heads = !strcmp(p->adapter, "ide") ? 16 : 255;
    uint64_t cyl = p->sectors / (heads * 63ull);
    if (cyl > 16383 && !strcmp(p->adapter, "ide"))
        cyl = 16383;
    char hint[4200] = "";
    if (p->parent_hint)
        snprintf(hint, sizeof hint, "parentFileNameHint=\"%s\"\n", p->parent_hint);
    char *out = NULL;
    if (asprintf(&out,
                 "# Disk DescriptorFile\n"
                 "version=1\n"
                 "CID=%08" PRIx32 "\n"
                 "parentCID=%08" PRIx32 "\n"
                 "createType=\"%s\"\n"
                 "%s"
                 "\n"
                 "# Extent description\n"
                 "%s"
                 "\n"
                 "# The Disk Data Base\n"
                 "#DDB\n"
                 "\n"
                 "ddb.virtualHWVersion = \"%s\"\n"
                 "ddb.geometry.cylinders = \"%" PRIu64 "\"\n"
                 "ddb.geometry.heads = \"%u\"\n"
                 "ddb.geometry.sectors = \"63\"\n"
                 "ddb.adapterType = \"%s\"\n",
                 p->cid, p->parent_cid, p->create_type, hint, p->extent_lines,
                 p->hwversion, cyl, heads, p->adapter) < 0)
        return NULL;
    return out;
}

/* Read the descriptor text of a VMDK file (embedded or the file itself). */
static int vmdk_desc_read_file(vd_file *f, char **text, size_t *len, vd_error *err)
{
    uint8_t hdr[VMDK_SECTOR];
    int64_t size = vd_file_size(f, err);
    if (size < 0)
        return (int)size;
    uint64_t off = 0, n = (uint64_t)size;
    if (size >= (int64_t)VMDK_SECTOR) {
        int r = vd_file_pread(f, hdr, sizeof hdr, 0, err);
        if (r < 0)
            return r;
        if (vd_le32(hdr) == VMDK_MAGIC) {
            struct vmdk_header h;
            r = vmdk_header_parse(hdr, &h, f->path, (uint64_t)size, err);
            if (r < 0)
                return r;
            off = h.desc_off * VMDK_SECTOR;
            n = h.desc_size * VMDK_SECTOR;
            if (!h.desc_off || !h.desc_size)
                return vd_set_error(err, -EINVAL, "vmdk: %s: sparse file has no "
                                    "embedded descriptor", f->path);
        }
    }
    if (n > VMDK_MAX_DESC_BYTES)
        return vd_set_error(err, -EINVAL, "vmdk: %s: descriptor of %" PRIu64 " bytes is "
                            "larger than %u", f->path, n, VMDK_MAX_DESC_BYTES);
    char *t = malloc(n + 1);
    if (!t)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vd_file_pread_zfill(f, t, n, off, err);
    if (r < 0) {
        free(t);
        return r;
    }
    t[n] = 0;
    *text = t;
    *len = n;
    return 0;
}

int vmdk_read_cid_file(vd_file *f, uint32_t *cid, vd_error *err)
{
    char *text = NULL;
    size_t len = 0;
    int r = vmdk_desc_read_file(f, &text, &len, err);
    if (r < 0)
        return r;
    struct vmdk_desc d;
    r = vmdk_desc_parse(&d, text, len, f->path, err);
    free(text);
    if (r < 0)
        return r;
    if (!d.has_cid)
        r = vd_set_error(err, -EINVAL, "vmdk: %s: descriptor has no CID", f->path);
    else
        *cid = d.cid;
    vmdk_desc_free(&d);
    return r;
}

int vmdk_read_cid_of(const char *path, uint32_t *cid, vd_error *err)
{
    vd_file *f;
    int r = vd_file_open(path, true, &f, err);
    if (r < 0)
        return r;
    r = vmdk_read_cid_file(f, cid, err);
    vd_file_close(f);
    return r;
}
