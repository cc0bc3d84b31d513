/* nbd.c - NBD exports as images: "nbd://host[:port]/export" and
 * "nbd+unix:///export?socket=PATH" open like files, so vdconvert, vdmount and
 * vdboot read (and, where the server allows, write) disks served by nbdkit,
 * qemu-nbd or `nbdkit vdisk` on another host.
 *
 * The core recognises the URI (vd_is_uri) and hands it to this driver without
 * opening a file.  Several connections are opened when the server advertises
 * multi-conn (up to VD_NBD_CONNECTIONS, default 4) and requests are spread
 * over them round-robin; libnbd handles are thread-safe, so reads run in
 * parallel.  Block status uses the base:allocation context.
 *
 * libnbd is loaded on the first NBD open, not linked (libvdisk/lazylib.c
 * says why): without it installed, an NBD URI is refused in one line
 * naming the package, and every other image opens as before. */
#include "vd-driver.h"

#include <errno.h>
#include <libnbd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define NBD_MAX_CONNS 16
/* Requests larger than this are split (servers cap at 32 MiB or less). */
#define NBD_MAX_REQUEST (8u << 20)

/* The libnbd functions this driver calls, in the order of lib_names:
 * loaded on the first NBD open (libvdisk/lazylib.c says why). */
static struct {
    typeof(&nbd_create) create;
    typeof(&nbd_add_meta_context) add_meta_context;
    typeof(&nbd_connect_uri) connect_uri;
    typeof(&nbd_close) close;
    typeof(&nbd_is_read_only) is_read_only;
    typeof(&nbd_get_size) get_size;
    typeof(&nbd_can_multi_conn) can_multi_conn;
    typeof(&nbd_shutdown) shutdown;
    typeof(&nbd_pread) pread;
    typeof(&nbd_pwrite) pwrite;
    typeof(&nbd_zero) zero;
    typeof(&nbd_trim) trim;
    typeof(&nbd_can_zero) can_zero;
    typeof(&nbd_can_trim) can_trim;
    typeof(&nbd_can_flush) can_flush;
    typeof(&nbd_flush) flush;
    typeof(&nbd_can_meta_context) can_meta_context;
    typeof(&nbd_block_status) block_status;
    typeof(&nbd_get_errno) get_errno;
    typeof(&nbd_get_error) get_error;
} lib;
static const char *const lib_names[] = {
    "nbd_create", "nbd_add_meta_context", "nbd_connect_uri", "nbd_close", "nbd_is_read_only",
    "nbd_get_size", "nbd_can_multi_conn", "nbd_shutdown", "nbd_pread", "nbd_pwrite", "nbd_zero",
    "nbd_trim", "nbd_can_zero", "nbd_can_trim", "nbd_can_flush", "nbd_flush",
    "nbd_can_meta_context", "nbd_block_status", "nbd_get_errno", "nbd_get_error", NULL
};
/* (each slot is one function pointer, filled as dlsym's own example does,
 * through a void * of the same size) */
_Static_assert(sizeof lib == (sizeof lib_names / sizeof lib_names[0] - 1) * sizeof(void *),
               "one slot per name");
static struct vd_lazy_lib libnbd = {
    .soname = "libnbd.so.0", .package = "libnbd0", .names = lib_names, .slots = (void **)&lib,
};

struct nbd_state {
    struct nbd_handle *h[NBD_MAX_CONNS];
    unsigned n;
    atomic_uint next;
};

static struct nbd_handle *nbd_pick(vd_image *img)
{
    struct nbd_state *s = img->priv;
    return s->h[atomic_fetch_add(&s->next, 1) % s->n];
}

static int nbd_fail(vd_error *err, const char *what, uint64_t off)
{
    int e = lib.get_errno();
    return vd_set_error(err, e ? -e : -EIO, "nbd: %s at 0x%llx: %s", what,
                        (unsigned long long)off, lib.get_error() ? lib.get_error() : "failed");
}

static int nbd_probe(const uint8_t *head, size_t len, const uint8_t *tail, size_t tail_len,
                     uint64_t file_size)
{
    (void)head; (void)len; (void)tail; (void)tail_len; (void)file_size;
    return 0;   /* only ever chosen by URI */
}

static struct nbd_handle *nbd_connect_one(const char *uri, bool readonly, vd_error *err)
{
    struct nbd_handle *h = lib.create();
    if (!h) {
        vd_set_error(err, -ENOMEM, "nbd: %s", lib.get_error());
        return NULL;
    }
    lib.add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION);
    if (lib.connect_uri(h, uri) < 0) {
        vd_set_error(err, -ECONNREFUSED, "nbd: connect: %s", lib.get_error());
        lib.close(h);
        return NULL;
    }
    if (!readonly && lib.is_read_only(h) == 1) {
        vd_set_error(err, -EROFS, "nbd: the server exports this disk read-only");
        lib.close(h);
        return NULL;
    }
    return h;
}

static int nbd_open(vd_image *img, vd_error *err)
{
    int r = vd_lazy_load(&libnbd, "nbd", err);
    if (r < 0)
        return r;
    struct nbd_state *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->h[0] = nbd_connect_one(img->path, img->readonly, err);
    if (!s->h[0]) {
        free(s);
        return err ? err->code : -EIO;
    }
    int64_t size = lib.get_size(s->h[0]);
    if (size < 0) {
        vd_set_error(err, -EIO, "nbd: export size: %s", lib.get_error());
        lib.close(s->h[0]);
        free(s);
        return -EIO;
    }
    unsigned want = 4;
    const char *env = getenv("VD_NBD_CONNECTIONS");
    if (env)
        want = (unsigned)strtoul(env, NULL, 10);
    if (want < 1)
        want = 1;
    if (want > NBD_MAX_CONNS)
        want = NBD_MAX_CONNS;
    /* Without multi-conn, writes on one connection need not be visible on
     * another: stay with one. */
    if (lib.can_multi_conn(s->h[0]) != 1)
        want = 1;
    s->n = 1;
    while (s->n < want) {
        struct nbd_handle *h = nbd_connect_one(img->path, img->readonly, NULL);
        if (!h)
            break;
        s->h[s->n++] = h;
    }
    img->size = (uint64_t)size;
    img->priv = s;
    return 0;
}

static void nbd_close_img(vd_image *img)
{
    struct nbd_state *s = img->priv;
    for (unsigned i = 0; s && i < s->n; i++) {
        lib.shutdown(s->h[i], 0);
        lib.close(s->h[i]);
    }
    free(s);
    img->priv = NULL;
}

/* A walk's parts: one request each, of at most NBD_MAX_REQUEST bytes. */
enum nbd_op { NBD_OP_READ, NBD_OP_WRITE, NBD_OP_ZERO, NBD_OP_TRIM };

struct nbd_walk {
    enum nbd_op op;
    struct nbd_handle *h;   /* NULL: each part on the next connection */
    uint32_t flags;
};

static int nbd_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    static const char *const what[] = { "read", "write", "write-zeroes", "trim" };
    const struct nbd_walk *w = ctx;
    struct nbd_handle *h = w->h ? w->h : nbd_pick(img);
    int r = -1;
    if (pt->n > NBD_MAX_REQUEST)
        pt->n = NBD_MAX_REQUEST;
    switch (w->op) {
    case NBD_OP_READ:
        r = lib.pread(h, pt->p, pt->n, pt->off, 0);
        break;
    case NBD_OP_WRITE:
        r = lib.pwrite(h, pt->p, pt->n, pt->off, 0);
        break;
    case NBD_OP_ZERO:
        r = lib.zero(h, pt->n, pt->off, w->flags);
        break;
    case NBD_OP_TRIM:
        r = lib.trim(h, pt->n, pt->off, 0);
        break;
    }
    return r < 0 ? nbd_fail(err, what[w->op], pt->off) : 0;
}

static int nbd_pread_img(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err)
{
    struct nbd_walk w = { NBD_OP_READ, NULL, 0 };
    return vd_walk(img, buf, off, len, 0, nbd_part, &w, err);
}

static int nbd_pwrite_img(vd_image *img, const void *buf, size_t len, uint64_t off,
                          vd_error *err)
{
    struct nbd_walk w = { NBD_OP_WRITE, NULL, 0 };
    return vd_walk(img, (void *)buf, off, len, 0, nbd_part, &w, err);
}

static int nbd_zero_img(vd_image *img, uint64_t off, uint64_t len, unsigned flags,
                        vd_error *err)
{
    struct nbd_walk w = { NBD_OP_ZERO, nbd_pick(img),
                          (flags & VD_ZERO_MAY_UNMAP) ? 0 : LIBNBD_CMD_FLAG_NO_HOLE };
    /* a server without WRITE_ZEROES: zero buffers written, as the core
     * would for a driver without pwrite_zeroes */
    if (lib.can_zero(w.h) != 1)
        return vd_zero_by_writing(img, off, len, nbd_pwrite_img, err);
    return vd_walk(img, NULL, off, len, 0, nbd_part, &w, err);
}

static int nbd_discard_img(vd_image *img, uint64_t off, uint64_t len, vd_error *err)
{
    struct nbd_walk w = { NBD_OP_TRIM, nbd_pick(img), 0 };
    if (lib.can_trim(w.h) != 1)
        return 0;
    return vd_walk(img, NULL, off, len, 0, nbd_part, &w, err);
}

static int nbd_flush_img(vd_image *img, vd_error *err)
{
    struct nbd_state *s = img->priv;
    for (unsigned i = 0; i < s->n; i++)
        if (lib.can_flush(s->h[i]) == 1 && lib.flush(s->h[i], 0) < 0)
            return nbd_fail(err, "flush", 0);
    return 0;
}

struct nbd_status_ctx {
    vd_extents *ext;
    uint64_t off, end;
    int r;
};

static int nbd_status_cb(void *user, const char *metacontext, uint64_t offset,
                         uint32_t *entries, size_t nr, int *error)
{
    (void)offset; (void)error;
    struct nbd_status_ctx *c = user;
    if (strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION))
        return 0;
    for (size_t i = 0; i + 1 < nr && c->off < c->end && c->r == 0; i += 2) {
        uint64_t len = entries[i];
        if (len > c->end - c->off)
            len = c->end - c->off;
        uint32_t f = entries[i + 1];
        uint32_t flags = (f & LIBNBD_STATE_ZERO) ? VD_LAYER_ZERO : VD_LAYER_DATA;
        c->r = vd_extents_add(c->ext, c->off, len, flags, 0, VD_NO_OFFSET);
        c->off += len;
    }
    return 0;
}

static int nbd_block_status_img(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                                vd_error *err)
{
    struct nbd_handle *h = nbd_pick(img);
    if (lib.can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1)
        return vd_extents_add(ext, off, len, VD_LAYER_DATA, 0, VD_NO_OFFSET);
    if (len > (1u << 30))
        len = 1u << 30;     /* the count is 32-bit */
    struct nbd_status_ctx c = { .ext = ext, .off = off, .end = off + len };
    nbd_extent_callback cb = { .callback = nbd_status_cb, .user_data = &c };
    if (lib.block_status(h, len, off, cb, 0) < 0)
        return nbd_fail(err, "block status", off);
    if (c.off == off)   /* a server that answered nothing for this range */
        return vd_extents_add(ext, off, len, VD_LAYER_DATA, 0, VD_NO_OFFSET);
    return c.r;
}

static uint64_t nbd_disk_size(vd_image *img)
{
    (void)img;
    return 0;   /* unknown on the remote side */
}

const struct vd_driver vd_nbd = {
    .name = "nbd",
    .description = "NBD export (nbd://, nbd+unix://)",
    .probe = nbd_probe,
    .align = 1,
    .parallel_reads = true,
    .open = nbd_open,
    .close = nbd_close_img,
    .pread = nbd_pread_img,
    .pwrite = nbd_pwrite_img,
    .pwrite_zeroes = nbd_zero_img,
    .discard = nbd_discard_img,
    .flush = nbd_flush_img,
    .block_status = nbd_block_status_img,
    .disk_size = nbd_disk_size,
    .can_write = VD_CAN_NATIVE,
};
