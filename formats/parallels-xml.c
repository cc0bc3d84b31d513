/* parallels-xml.c - Parallels .hdd bundle folders, read through their
 * DiskDescriptor.xml.
 *
 * The descriptor cuts the disk into storages (guest sector ranges
 * [Start, End), each its own files) and lists snapshots as a tree of Shot
 * elements (GUID, ParentGUID; an all-zero ParentGUID is the root).  Every
 * storage holds one Image per snapshot, tagged with the snapshot's GUID:
 * "Compressed" (an expanding image, parallels.c) or "Plain" (raw data).  We
 * serve the current state: the chain from the top snapshot (Snapshots/TopGUID
 * when present, else the one leaf of the tree) down to the root; a cluster
 * that an expanding image does not hold falls through to its parent
 * snapshot's image, and below the root it reads as zeroes.
 *
 * The descriptor is untrusted: at most 1 MiB, parsed without network access
 * and without entity expansion, and a document with a DTD is refused (its
 * entities could expand when the text is read).  Bundles are read-only. */
#include "parallels.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#define PRLX_MAX_DESCRIPTOR (1u << 20)
#define PRLX_MAX_STORAGES 4096
#define PRLX_MAX_SHOTS 1024
#define PRLX_ROOT_GUID "{00000000-0000-0000-0000-000000000000}"

bool parallels_xml_probe(const uint8_t *head, size_t len)
{
    static const char tag[] = "<Parallels_disk_image";
    size_t n = len < 1024 ? len : 1024;
    for (size_t i = 0; i + sizeof tag - 1 <= n; i++)
        if (head[i] == '<' && !memcmp(head + i, tag, sizeof tag - 1))
            return true;
    return false;
}

#ifndef HAVE_LIBXML2

int parallels_bundle_open(vd_image *img, const char *snapshot, struct parallels_bundle **out,
                          vd_error *err)
{
    (void)img; (void)snapshot; (void)out;
    return vd_set_error(err, -ENOTSUP, "parallels: DiskDescriptor.xml needs libxml2, which "
                        "this build lacks");
}
void parallels_bundle_free(struct parallels_bundle *b) { (void)b; }
int parallels_bundle_pread(vd_image *img, struct parallels_bundle *b, void *buf, size_t len,
                           uint64_t off, vd_error *err)
{
    (void)img; (void)b; (void)buf; (void)len; (void)off;
    return vd_set_error(err, -ENOTSUP, "parallels: built without libxml2");
}
int parallels_bundle_block_status(vd_image *img, struct parallels_bundle *b, uint64_t off,
                                  uint64_t len, vd_extents *ext, vd_error *err)
{
    (void)img; (void)b; (void)off; (void)len; (void)ext;
    return vd_set_error(err, -ENOTSUP, "parallels: built without libxml2");
}
void parallels_bundle_details(struct parallels_bundle *b, vd_kv_fn fn, void *ctx)
{
    (void)b; (void)fn; (void)ctx;
}
uint64_t parallels_bundle_disk_size(struct parallels_bundle *b)
{
    (void)b;
    return 0;
}
int parallels_bundle_list_snapshots(struct parallels_bundle *b, vd_snapshot_info *out,
                                    size_t max)
{
    (void)b; (void)out; (void)max;
    return 0;
}

#else

#include <libxml/parser.h>
#include <libxml/tree.h>

/* The libxml2 functions read here, in the order of xml_names: loaded on
 * the first DiskDescriptor.xml (libvdisk/lazylib.c says why). */
static struct {
    typeof(&xmlReadMemory) read_memory;
    typeof(&xmlDocGetRootElement) root;
    typeof(&xmlFreeDoc) free_doc;
    typeof(&xmlStrcmp) strcmp;
} xml;
static const char *const xml_names[] = {
    "xmlReadMemory", "xmlDocGetRootElement", "xmlFreeDoc", "xmlStrcmp", NULL
};
/* (each slot is one function pointer, filled as dlsym's own example does,
 * through a void * of the same size) */
_Static_assert(sizeof xml == (sizeof xml_names / sizeof xml_names[0] - 1) * sizeof(void *),
               "one slot per name");
static struct vd_lazy_lib libxml2 = {
    .soname = "libxml2.so.2", .package = "libxml2", .names = xml_names, .slots = (void **)&xml,
};

enum { PRLX_PLAIN, PRLX_EXPANDING };

struct prlx_layer {
    int type;
    vd_file *file;
    struct parallels_file pf;    /* PRLX_EXPANDING */
};

struct prlx_storage {
    uint64_t start, end;         /* bytes */
    size_t n;                    /* layers, top snapshot first */
    struct prlx_layer *layers;
};

struct prlx_shot {
    char guid[64], parent[64];
};

struct parallels_bundle {
    uint64_t size;
    size_t n;
    struct prlx_storage *st;
    size_t chain_len;
    char top[64];
    struct prlx_shot *shots;     /* the whole tree, for listing */
    size_t n_shots;
};

/* ---- XML helpers ------------------------------------------------------- */

static bool prlx_is(const xmlNode *n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && !xml.strcmp(n->name, BAD_CAST name);
}

static xmlNode *prlx_child(const xmlNode *parent, const char *name)
{
    for (xmlNode *c = parent ? parent->children : NULL; c; c = c->next)
        if (prlx_is(c, name))
            return c;
    return NULL;
}

/* Text of the direct text children of `n` (never expanding entities),
 * trimmed, into out[cap]; false when absent or too long. */
static bool prlx_text(const xmlNode *n, char *out, size_t cap)
{
    size_t len = 0;
    if (!n)
        return false;
    for (xmlNode *c = n->children; c; c = c->next) {
        if (c->type != XML_TEXT_NODE && c->type != XML_CDATA_SECTION_NODE)
            continue;
        for (const xmlChar *p = c->content; p && *p; p++) {
            if (len + 1 >= cap)
                return false;
            out[len++] = (char)*p;
        }
    }
    out[len] = 0;
    size_t a = 0;
    while (out[a] == ' ' || out[a] == '\n' || out[a] == '\t' || out[a] == '\r')
        a++;
    memmove(out, out + a, len - a + 1);
    len -= a;
    while (len && (out[len - 1] == ' ' || out[len - 1] == '\n' || out[len - 1] == '\t' ||
                   out[len - 1] == '\r'))
        out[--len] = 0;
    return true;
}

static int prlx_u64(const xmlNode *parent, const char *name, uint64_t *out, vd_error *err)
{
    char t[32];
    char *end;
    if (!prlx_text(prlx_child(parent, name), t, sizeof t) || !*t || *t == '-')
        return vd_set_error(err, -EINVAL, "parallels: DiskDescriptor.xml: <%s> missing or not "
                            "a number", name);
    errno = 0;
    unsigned long long v = strtoull(t, &end, 10);
    if (*end || errno)
        return vd_set_error(err, -EINVAL, "parallels: DiskDescriptor.xml: <%s>%s</%s> is not "
                            "a number", name, t, name);
    *out = v;
    return 0;
}

/* ---- snapshot chain ---------------------------------------------------- */

static int prlx_shots(const xmlNode *snaps, struct prlx_shot **out, size_t *n, vd_error *err)
{
    size_t count = 0;
    for (xmlNode *c = snaps ? snaps->children : NULL; c; c = c->next)
        count += prlx_is(c, "Shot");
    if (count > PRLX_MAX_SHOTS)
        return vd_set_error(err, -EFBIG, "parallels: DiskDescriptor.xml: %zu snapshots, more "
                            "than %d", count, PRLX_MAX_SHOTS);
    struct prlx_shot *v = calloc(count ? count : 1, sizeof *v);
    if (!v)
        return vd_set_error(err, -ENOMEM, "out of memory");
    size_t i = 0;
    for (xmlNode *c = snaps ? snaps->children : NULL; c; c = c->next) {
        if (!prlx_is(c, "Shot"))
            continue;
        if (!prlx_text(prlx_child(c, "GUID"), v[i].guid, sizeof v[i].guid) ||
            !prlx_text(prlx_child(c, "ParentGUID"), v[i].parent, sizeof v[i].parent)) {
            free(v);
            return vd_set_error(err, -EINVAL, "parallels: DiskDescriptor.xml: snapshot %zu "
                                "lacks a GUID or ParentGUID", i);
        }
        i++;
    }
    *out = v;
    *n = count;
    return 0;
}

static bool prlx_is_root(const char *guid)
{
    return !*guid || !strcasecmp(guid, PRLX_ROOT_GUID);
}

/* The top snapshot: TopGUID, else the one Shot nobody names as parent. */
static int prlx_top(const xmlNode *snaps, const struct prlx_shot *v, size_t n, char *top,
                    vd_error *err)
{
    if (prlx_text(prlx_child(snaps, "TopGUID"), top, 64) && *top)
        return 0;
    size_t leaves = 0;
    for (size_t i = 0; i < n; i++) {
        bool parent = false;
        for (size_t j = 0; j < n && !parent; j++)
            parent = !strcasecmp(v[j].parent, v[i].guid);
        if (!parent && leaves++ == 0)
            snprintf(top, 64, "%s", v[i].guid);
    }
    if (leaves != 1)
        return vd_set_error(err, -EINVAL, "parallels: DiskDescriptor.xml: %zu snapshot leaves "
                            "and no TopGUID: which state is current is unknown", leaves);
    return 0;
}

/* GUIDs from the top snapshot to the root, top first, in *chain. */
static int prlx_chain(const xmlNode *snaps, struct parallels_bundle *b, const char *want,
                      char (**chain)[64], vd_error *err)
{
    struct prlx_shot *v = NULL;
    size_t n = 0, *len = &b->chain_len;
    char *top = b->top;
    int r = prlx_shots(snaps, &v, &n, err);
    if (r < 0)
        return r;
    *chain = calloc(n ? n : 1, sizeof **chain);
    if (!*chain) {
        free(v);
        return vd_set_error(err, -ENOMEM, "out of memory");
    }
    *len = 0;
    if (n == 0)
        goto out;              /* no snapshot list: each storage has one image */
    if (want)      /* a snapshot asked for by GUID, braces optional */
        snprintf(top, 64, "%s%s%s", *want == '{' ? "" : "{", want, *want == '{' ? "" : "}");
    else if ((r = prlx_top(snaps, v, n, top, err)) < 0)
        goto out;
    const char *cur = top;
    while (!prlx_is_root(cur)) {
        size_t i;
        for (i = 0; i < n && strcasecmp(v[i].guid, cur); i++)
            ;
        if (i == n) {
            r = vd_set_error(err, -EINVAL, "parallels: DiskDescriptor.xml: snapshot %s is not "
                             "in the snapshot list", cur);
            break;
        }
        if (*len == n) {
            r = vd_set_error(err, -ELOOP, "parallels: DiskDescriptor.xml: the snapshot tree "
                             "loops at %s", cur);
            break;
        }
        snprintf((*chain)[(*len)++], 64, "%s", v[i].guid);
        cur = v[i].parent;
    }
out:
    if (r < 0) {
        free(v);
        free(*chain);
        *chain = NULL;
    } else {
        b->shots = v;
        b->n_shots = n;
    }
    return r;
}

/* ---- storages ---------------------------------------------------------- */

static void prlx_layer_free(struct prlx_layer *l)
{
    parallels_file_free(&l->pf);
    vd_file_close(l->file);
}

static int prlx_open_layer(vd_image *img, const xmlNode *image, struct prlx_layer *l,
                           uint64_t span, vd_error *err)
{
    char type[32], file[1024];
    if (!prlx_text(prlx_child(image, "Type"), type, sizeof type) ||
        !prlx_text(prlx_child(image, "File"), file, sizeof file) || !*file)
        return vd_set_error(err, -EINVAL, "parallels: DiskDescriptor.xml: an <Image> lacks "
                            "<Type> or <File>");
    if (!strcmp(type, "Plain"))
        l->type = PRLX_PLAIN;
    else if (!strcmp(type, "Compressed"))
        l->type = PRLX_EXPANDING;
    else
        return vd_set_error(err, -ENOTSUP, "parallels: DiskDescriptor.xml: image %s has type "
                            "'%s', expected Plain or Compressed", file, type);
    int r = vd_file_open_related(img, file, true, &l->file, err);
    if (r < 0 || l->type == PRLX_PLAIN)
        return r;
    r = parallels_file_load(&l->pf, l->file, err);
    if (r < 0) {
        char msg[VD_ERROR_MAX];
        snprintf(msg, sizeof msg, "%s", err ? err->msg : "");
        return vd_set_error(err, r, "%s: %s", file, msg);
    }
    (void)span;   /* a shorter image reads as zeroes past its end, as Parallels does */
    return 0;
}

/* The Image of `storage` for snapshot `guid` (NULL guid: the only one). */
static const xmlNode *prlx_find_image(const xmlNode *storage, const char *guid)
{
    const xmlNode *found = NULL;
    size_t n = 0;
    for (const xmlNode *c = storage->children; c; c = c->next) {
        if (!prlx_is(c, "Image"))
            continue;
        n++;
        char g[64];
        if (guid && prlx_text(prlx_child(c, "GUID"), g, sizeof g) && !strcasecmp(g, guid))
            return c;
        found = c;
    }
    return !guid && n == 1 ? found : NULL;
}

static int prlx_storage(vd_image *img, const xmlNode *sn, struct prlx_storage *st,
                        char (*chain)[64], size_t chain_len, vd_error *err)
{
    uint64_t start, end;
    int r;
    if ((r = prlx_u64(sn, "Start", &start, err)) < 0 || (r = prlx_u64(sn, "End", &end, err)) < 0)
        return r;
    if (end <= start || end > VD_MAX_VIRTUAL_SIZE / 512)
        return vd_set_error(err, -EINVAL, "parallels: DiskDescriptor.xml: storage sectors "
                            "[%llu, %llu) are not a valid range", (unsigned long long)start,
                            (unsigned long long)end);
    st->start = start * 512;
    st->end = end * 512;
    size_t want = chain_len ? chain_len : 1;
    st->layers = calloc(want, sizeof *st->layers);
    if (!st->layers)
        return vd_set_error(err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < want; i++) {
        const xmlNode *im = prlx_find_image(sn, chain_len ? chain[i] : NULL);
        if (!im)
            return vd_set_error(err, -EINVAL, "parallels: DiskDescriptor.xml: storage at sector "
                                "%llu has no image for snapshot %s", (unsigned long long)start,
                                chain_len ? chain[i] : "(the only one)");
        st->n++;     /* counted before opening, so that a failure frees it */
        if ((r = prlx_open_layer(img, im, &st->layers[i], st->end - st->start, err)) < 0)
            return r;
    }
    return 0;
}

static int prlx_storages(vd_image *img, struct parallels_bundle *b, const xmlNode *data,
                         char (*chain)[64], size_t chain_len, vd_error *err)
{
    size_t count = 0;
    for (xmlNode *c = data ? data->children : NULL; c; c = c->next)
        count += prlx_is(c, "Storage");
    if (count == 0 || count > PRLX_MAX_STORAGES)
        return vd_set_error(err, -EINVAL, "parallels: DiskDescriptor.xml: %zu storages, expected "
                            "1..%d", count, PRLX_MAX_STORAGES);
    b->st = calloc(count, sizeof *b->st);
    if (!b->st)
        return vd_set_error(err, -ENOMEM, "out of memory");
    uint64_t expect = 0;
    for (xmlNode *c = data->children; c; c = c->next) {
        if (!prlx_is(c, "Storage"))
            continue;
        struct prlx_storage *st = &b->st[b->n++];
        int r = prlx_storage(img, c, st, chain, chain_len, err);
        if (r < 0)
            return r;
        if (st->start != expect)
            return vd_set_error(err, -EINVAL, "parallels: DiskDescriptor.xml: storage %zu starts "
                                "at sector %llu, expected %llu (gap or overlap)", b->n - 1,
                                (unsigned long long)(st->start / 512),
                                (unsigned long long)(expect / 512));
        expect = st->end;
    }
    if (expect < b->size)
        return vd_set_error(err, -EINVAL, "parallels: DiskDescriptor.xml: storages end at sector "
                            "%llu, before the disk size %llu", (unsigned long long)(expect / 512),
                            (unsigned long long)(b->size / 512));
    return 0;
}

/* ---- open -------------------------------------------------------------- */

static int prlx_read_descriptor(vd_image *img, char **out, size_t *len, vd_error *err)
{
    int64_t size = vd_file_size(img->file, err);
    if (size < 0)
        return (int)size;
    if (size > PRLX_MAX_DESCRIPTOR)
        return vd_set_error(err, -EFBIG, "parallels: DiskDescriptor.xml is %lld bytes, more than "
                            "the %u accepted", (long long)size, PRLX_MAX_DESCRIPTOR);
    *out = malloc((size_t)size + 1);
    if (!*out)
        return vd_set_error(err, -ENOMEM, "out of memory");
    *len = (size_t)size;
    return vd_file_pread(img->file, *out, *len, 0, err);
}

static int prlx_parse(vd_image *img, struct parallels_bundle *b, xmlDoc *doc, const char *want,
                      vd_error *err)
{
    xmlNode *root = xml.root(doc);
    if (doc->intSubset || doc->extSubset)
        return vd_set_error(err, -EINVAL, "parallels: DiskDescriptor.xml has a DTD; refused "
                            "(entities are not expanded)");
    if (!prlx_is(root, "Parallels_disk_image"))
        return vd_set_error(err, -EINVAL, "parallels: DiskDescriptor.xml: root element is not "
                            "<Parallels_disk_image>");
    uint64_t sectors, lss = 512;
    xmlNode *params = prlx_child(root, "Disk_Parameters");
    int r = prlx_u64(params, "Disk_size", &sectors, err);
    if (r < 0)
        return r;
    if (prlx_child(params, "LogicSectorSize") &&
        ((r = prlx_u64(params, "LogicSectorSize", &lss, err)) < 0 || lss != 512))
        return r < 0 ? r : vd_set_error(err, -ENOTSUP, "parallels: DiskDescriptor.xml: logical "
                                        "sector size %llu is not 512", (unsigned long long)lss);
    if (sectors > VD_MAX_VIRTUAL_SIZE / 512)
        return vd_set_error(err, -EFBIG, "parallels: DiskDescriptor.xml: Disk_size %llu sectors "
                            "is too large", (unsigned long long)sectors);
    b->size = sectors * 512;
    char (*chain)[64] = NULL;
    r = prlx_chain(prlx_child(root, "Snapshots"), b, want, &chain, err);
    if (r == 0)
        r = prlx_storages(img, b, prlx_child(root, "StorageData"), chain, b->chain_len, err);
    free(chain);
    return r;
}

int parallels_bundle_open(vd_image *img, const char *snapshot, struct parallels_bundle **out,
                          vd_error *err)
{
    char *text = NULL;
    size_t len = 0;
    struct parallels_bundle *b = calloc(1, sizeof *b);
    if (!b)
        return vd_set_error(err, -ENOMEM, "out of memory");
    int r = vd_lazy_load(&libxml2, "parallels", err);
    if (r == 0)
        r = prlx_read_descriptor(img, &text, &len, err);
    if (r == 0) {
        xmlDoc *doc = xml.read_memory(text, (int)len, "DiskDescriptor.xml", NULL,
                                      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
        if (!doc) {
            r = vd_set_error(err, -EINVAL, "parallels: DiskDescriptor.xml is not well-formed XML");
        } else {
            r = prlx_parse(img, b, doc, snapshot, err);
            xml.free_doc(doc);
        }
    }
    free(text);
    if (r < 0) {
        parallels_bundle_free(b);
        return r;
    }
    img->size = b->size;
    if (b->st[0].layers[0].type == PRLX_EXPANDING)
        img->cluster_size = (uint32_t)b->st[0].layers[0].pf.cluster_size;
    *out = b;
    return 0;
}

void parallels_bundle_free(struct parallels_bundle *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++) {
        for (size_t j = 0; j < b->st[i].n; j++)
            prlx_layer_free(&b->st[i].layers[j]);
        free(b->st[i].layers);
    }
    free(b->st);
    free(b->shots);
    free(b);
}

/* Snapshots are the shots other than the current state (the top). */
int parallels_bundle_list_snapshots(struct parallels_bundle *b, vd_snapshot_info *out,
                                    size_t max)
{
    size_t count = 0;
    for (size_t i = 0; i < b->n_shots; i++) {
        if (!strcasecmp(b->shots[i].guid, b->top))
            continue;
        if (out && count < max) {
            memset(&out[count], 0, sizeof out[count]);
            out[count].icount = UINT64_MAX;
            snprintf(out[count].id, sizeof out[count].id, "%s", b->shots[i].guid);
            snprintf(out[count].name, sizeof out[count].name, "%s", b->shots[i].guid);
            out[count].disk_size = b->size;
        }
        count++;
    }
    return (int)count;
}

/* ---- I/O --------------------------------------------------------------- */

/* Read `len` bytes at `rel` within storage `st`, from layer `li` down. */
static int prlx_read_layers(const struct prlx_storage *st, size_t li, uint8_t *buf, size_t len,
                            uint64_t rel, vd_error *err)
{
    if (li == st->n) {
        memset(buf, 0, len);
        return 0;
    }
    const struct prlx_layer *l = &st->layers[li];
    if (l->type == PRLX_PLAIN)
        return vd_file_pread_zfill(l->file, buf, len, rel, err);
    while (len) {
        uint64_t avail;
        uint64_t foff = parallels_file_lookup(&l->pf, rel, &avail);
        size_t n = avail < len ? (size_t)avail : len;
        int r = foff ? vd_file_pread_zfill(l->file, buf, n, foff, err)
                     : prlx_read_layers(st, li + 1, buf, n, rel, err);
        if (r < 0)
            return r;
        buf += n;
        rel += n;
        len -= n;
    }
    return 0;
}

static const struct prlx_storage *prlx_storage_at(const struct parallels_bundle *b, uint64_t off)
{
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (off < b->st[mid].start)
            hi = mid;
        else if (off >= b->st[mid].end)
            lo = mid + 1;
        else
            return &b->st[mid];
    }
    return NULL;
}

/* The storage holding pt->off, the part cut at its end. */
static const struct prlx_storage *prlx_part_storage(const struct parallels_bundle *b,
                                                    struct vd_part *pt, vd_error *err)
{
    const struct prlx_storage *st = prlx_storage_at(b, pt->off);
    if (!st)
        vd_set_error(err, -EIO, "parallels: no storage holds offset 0x%llx",
                     (unsigned long long)pt->off);
    else if (st->end - pt->off < pt->n)
        pt->n = st->end - pt->off;
    return st;
}

static int prlx_read_part(vd_image *img, struct vd_part *pt, void *b, vd_error *err)
{
    (void)img;
    const struct prlx_storage *st = prlx_part_storage(b, pt, err);
    return st ? prlx_read_layers(st, 0, pt->p, pt->n, pt->off - st->start, err) : -EIO;
}

int parallels_bundle_pread(vd_image *img, struct parallels_bundle *b, void *buf, size_t len,
                           uint64_t off, vd_error *err)
{
    return vd_walk(img, buf, off, len, 0, prlx_read_part, b, err);
}

/* Is `rel` held by some layer?  Shrinks *n to a range with one answer. */
static bool prlx_allocated(const struct prlx_storage *st, uint64_t rel, uint64_t *n)
{
    for (size_t i = 0; i < st->n; i++) {
        if (st->layers[i].type == PRLX_PLAIN)
            return true;
        uint64_t avail;
        bool here = parallels_file_lookup(&st->layers[i].pf, rel, &avail) != 0;
        if (avail < *n)
            *n = avail;
        if (here)
            return true;
    }
    return false;
}

struct prlx_status {
    struct parallels_bundle *b;
    vd_extents *ext;
};

static int prlx_status_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    (void)img;
    struct prlx_status *c = ctx;
    const struct prlx_storage *st = prlx_part_storage(c->b, pt, err);
    if (!st)
        return -EIO;
    bool data = prlx_allocated(st, pt->off - st->start, &pt->n);
    return vd_extents_add(c->ext, pt->off, pt->n, data ? VD_LAYER_DATA : VD_LAYER_ZERO, 0,
                          VD_NO_OFFSET);
}

int parallels_bundle_block_status(vd_image *img, struct parallels_bundle *b, uint64_t off,
                                  uint64_t len, vd_extents *ext, vd_error *err)
{
    struct prlx_status c = { b, ext };
    return vd_walk(img, NULL, off, len, 0, prlx_status_part, &c, err);
}

uint64_t parallels_bundle_disk_size(struct parallels_bundle *b)
{
    uint64_t total = 0;
    for (size_t i = 0; i < b->n; i++)
        for (size_t j = 0; j < b->st[i].n; j++)
            total += vd_file_allocated(b->st[i].layers[j].file);
    return total;
}

void parallels_bundle_details(struct parallels_bundle *b, vd_kv_fn fn, void *ctx)
{
    char v[32];
    fn(ctx, "bundle", "DiskDescriptor.xml");
    snprintf(v, sizeof v, "%zu", b->n);
    fn(ctx, "storages", v);
    snprintf(v, sizeof v, "%zu", b->chain_len);
    fn(ctx, "snapshot-chain-length", v);
    if (*b->top)
        fn(ctx, "current-snapshot", b->top);
}

#endif /* HAVE_LIBXML2 */
