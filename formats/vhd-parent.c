/* vhd-parent.c - the parent of a differencing VHD: which file it is (parent
 * locators and the parent's name, decoded from UTF-16 and Windows/Mac paths)
 * and whether it is the right one (its unique id). */
#include "vhd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* Turn a stored Windows or Mac path into one relative to the child's folder:
 * backslashes become slashes, a Mac "file://" URL becomes its path, a
 * leading "./" goes, and a path
 * with a drive letter ("C:\VMs\base.vhd") is reduced to its file name, since
 * the images travel together and that drive does not exist here. */
static void vhd_normalize_parent_path(char *p)
{
    for (char *q = p; *q; q++)
        if (*q == '\\')
            *q = '/';
    size_t n = strlen(p);
    if (n >= 7 && !memcmp(p, "file://", 7)) {
        /* a Mac file URL: file://localhost/path or file:///path, %XX escaped */
        char *src = p + 7, *o = p;
        if (!strncmp(src, "localhost/", 10))
            src += 9;
        for (; *src; src++) {
            unsigned v;
            if (*src == '%' && src[1] && src[2] && sscanf(src + 1, "%2x", &v) == 1 && v) {
                *o++ = (char)v;
                src += 2;
            } else {
                *o++ = *src;
            }
        }
        *o = 0;
    }
    if (((p[0] | 0x20) >= 'a' && (p[0] | 0x20) <= 'z') && p[1] == ':') {
        const char *base = strrchr(p, '/');
        const char *from = base ? base + 1 : p + 2;
        memmove(p, from, strlen(from) + 1);
    }
    while (p[0] == '.' && p[1] == '/')
        memmove(p, p + 2, strlen(p + 2) + 1);
}

/* Decode parent locator `i`; NULL if it is not a usable path (then `why`,
 * when it is worth saying, tells what was wrong with it). */
static char *vhd_locator_path(vd_image *img, const uint8_t *dynhdr, uint64_t file_size, int i,
                              vd_error *why)
{
    const uint8_t *l = dynhdr + VHD_D_LOCATORS + i * VHD_LOCATOR_SIZE;
    uint32_t code = vd_be32(l), len = vd_be32(l + 8);
    uint64_t off = vd_be64(l + 16), end;
    bool utf16 = code == 0x57327275 || code == 0x57326b75;   /* W2ru, W2ku */
    bool macx = code == 0x4d616358;                         /* MacX: UTF-8 URL */
    if ((!utf16 && !macx) || !len)
        return NULL;
    /* A path longer than 64 KiB is not a path: ignore the locator. */
    if (len > 65536 || vd_add_overflow(off, len, &end) || end > file_size)
        return NULL;
    uint8_t *raw = malloc(len);
    if (!raw)
        return NULL;
    char *p = NULL;
    if (vd_file_pread(img->file, raw, len, off, why) == 0) {
        size_t bad;
        if (!utf16) {
            if ((p = malloc((size_t)len + 1))) {
                memcpy(p, raw, len);
                p[len] = 0;
            }
        } else if (vd_utf16_decode(raw, len, 0, &p, &bad) == -EILSEQ) {
            vd_set_error(why, -EILSEQ, "vhd: parent locator %d at 0x%llx: invalid UTF-16 at byte %zu",
                         i, (unsigned long long)off, bad);
        }
    }
    free(raw);
    if (p)
        vhd_normalize_parent_path(p);
    if (p && !*p) {
        free(p);
        p = NULL;
    }
    return p;
}

static bool vhd_candidate_exists(vd_image *img, const char *name)
{
    return vd_related_exists(img, name);
}

/* Choose the parent among the candidates - the relative locator (W2ru),
 * the absolute ones (W2ku, MacX), the parent's unicode name, in that order:
 * the first that names a file we may open wins; failing that the first whose
 * file name alone exists next to the child (absolute paths from another
 * machine, when the images travel together); else the first candidate, so
 * that the core's error names it. */
#define VHD_MAX_CANDIDATES (VHD_LOCATORS + 1)

static const char *vhd_basename(const char *p)
{
    const char *b = strrchr(p, '/');
    return b ? b + 1 : p;
}

int vhd_find_parent(vd_image *img, const uint8_t *dynhdr, uint64_t file_size, vd_error *err)
{
    static const uint32_t order[] = { 0x57327275, 0x57326b75, 0x4d616358 };
    char *cand[VHD_MAX_CANDIDATES];
    size_t n = 0;
    vd_error why = { 0 };
    for (size_t k = 0; k < 3; k++)
        for (int i = 0; i < VHD_LOCATORS; i++) {
            if (vd_be32(dynhdr + VHD_D_LOCATORS + i * VHD_LOCATOR_SIZE) != order[k])
                continue;
            char *p = vhd_locator_path(img, dynhdr, file_size, i, why.code ? NULL : &why);
            if (p)
                cand[n++] = p;
        }
    char *name;
    size_t bad;
    if (vd_utf16_decode(dynhdr + VHD_D_PARENT_NAME, 512, VD_UTF16_BE, &name, &bad) == -EILSEQ &&
        !why.code)
        vd_set_error(&why, -EILSEQ, "vhd: parent name (dynamic header +%d): invalid UTF-16 at byte %zu",
                     VHD_D_PARENT_NAME, bad);
    if (name)
        vhd_normalize_parent_path(name);
    if (name && *name)
        cand[n++] = name;
    else
        free(name);
    const char *pick = NULL;
    for (size_t i = 0; i < n && !pick; i++)
        if (vhd_candidate_exists(img, cand[i]))
            pick = cand[i];
    for (size_t i = 0; i < n && !pick; i++)
        if (*vhd_basename(cand[i]) && vhd_candidate_exists(img, vhd_basename(cand[i])))
            pick = vhd_basename(cand[i]);
    if (!pick && n)
        pick = cand[0];
    img->backing_file = pick ? strdup(pick) : NULL;
    for (size_t i = 0; i < n; i++)
        free(cand[i]);
    if (!pick && why.code == -EILSEQ)
        return vd_set_error(err, -EINVAL, "%s", why.msg);
    if (!pick)
        return vd_set_error(err, -EINVAL,
                            "vhd: differencing disk names no parent (no parent locator or name)");
    img->backing_format = strdup("vhd");
    if (!img->backing_file || !img->backing_format)
        return vd_set_error(err, -ENOMEM, "out of memory");
    return 0;
}
bool vhd_read_any_footer(vd_file *f, uint8_t footer[VHD_FOOTER_SIZE])
{
    int64_t size = vd_file_size(f, NULL);
    if (size < VHD_FOOTER_SIZE)
        return false;
    if (vd_file_pread(f, footer, VHD_FOOTER_SIZE, (uint64_t)size - VHD_FOOTER_SIZE, NULL) == 0 &&
        vhd_footer_valid(footer))
        return true;
    return vd_file_pread(f, footer, VHD_FOOTER_SIZE, 0, NULL) == 0 && vhd_footer_valid(footer);
}


/* The parent must be the disk the child was made from: its footer's unique
 * id equals the child's parent UUID.  A parent we cannot open is left to the
 * core, which reports it when it opens the chain. */
int vhd_check_parent(vd_image *img, const uint8_t *dynhdr, uint64_t dynhdr_off, vd_error *err)
{
    vd_file *pf;
    uint8_t f[VHD_FOOTER_SIZE];
    if (vd_file_open_related(img, img->backing_file, true, &pf, NULL) < 0)
        return 0;
    bool ok = vhd_read_any_footer(pf, f);
    vd_file_close(pf);
    if (!ok)
        return vd_set_error(err, -EINVAL, "vhd: parent '%s' is not a VHD", img->backing_file);
    if (memcmp(f + VHD_F_UUID, dynhdr + VHD_D_PARENT_UUID, 16))
        return vd_set_error(err, -EINVAL,
                            "vhd: parent UUID at 0x%llx does not match the unique id of '%s'",
                            (unsigned long long)(dynhdr_off + VHD_D_PARENT_UUID),
                            img->backing_file);
    return 0;
}

