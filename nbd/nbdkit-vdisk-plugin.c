/* nbdkit-vdisk-plugin.c - serve the guest view of any image libvdisk reads
 * over NBD:  nbdkit vdisk file=disk.vmdk [format=FMT] [readonly=true|false]
 *            [allow-host-paths=true] [force-share=true]
 *
 * One libvdisk handle is opened when the server is ready and shared by every
 * connection: libvdisk handles are thread-safe (reads in parallel where the
 * driver allows, writes serialized), so the plugin runs in the PARALLEL
 * thread model and advertises multi-conn — a flush on any connection flushes
 * the one handle that every connection writes through.  Block status maps to
 * NBD extents (holes and zeroes), write-zeroes, trim and flush to the
 * libvdisk calls of the same name.  The image's locks (qemu's, see vdisk.h)
 * are held from get_ready to unload: a served read-write image is refused
 * to qemu and to other vdisk writers, and a served image that another
 * process writes is refused unless force-share=true (read-only). */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "vdisk.h"

static char *vdp_file;
static const char *vdp_format;
static bool vdp_readonly = true;
static bool vdp_allow_host_paths;
static bool vdp_force_share;
static vd_image *vdp_img;

static void vdp_unload(void)
{
    if (vdp_img) {
        vd_error e;
        if (vd_close(vdp_img, &e) < 0)
            nbdkit_error("%s", e.msg);
    }
    free(vdp_file);
}

static int vdp_config(const char *key, const char *value)
{
    if (!strcmp(key, "file")) {
        free(vdp_file);
        vdp_file = nbdkit_realpath(value);
        return vdp_file ? 0 : -1;
    }
    if (!strcmp(key, "format")) {
        vdp_format = value;
        return 0;
    }
    if (!strcmp(key, "readonly")) {
        int r = nbdkit_parse_bool(value);
        if (r < 0)
            return -1;
        vdp_readonly = r;
        return 0;
    }
    if (!strcmp(key, "allow-host-paths")) {
        int r = nbdkit_parse_bool(value);
        if (r < 0)
            return -1;
        vdp_allow_host_paths = r;
        return 0;
    }
    if (!strcmp(key, "force-share")) {
        int r = nbdkit_parse_bool(value);
        if (r < 0)
            return -1;
        vdp_force_share = r;
        return 0;
    }
    nbdkit_error("unknown parameter '%s'", key);
    return -1;
}

static int vdp_config_complete(void)
{
    if (!vdp_file) {
        nbdkit_error("file=IMAGE is required");
        return -1;
    }
    if (vdp_force_share && !vdp_readonly) {
        nbdkit_error("force-share=true is for readonly=true: a writer takes the write lock");
        return -1;
    }
    return 0;
}

static int vdp_get_ready(void)
{
    vd_error e;
    vd_open_opts o = { .format = vdp_format, .readonly = vdp_readonly,
                       .allow_host_paths = vdp_allow_host_paths,
                       .force_share = vdp_force_share };
    if (vd_open(vdp_file, &o, &vdp_img, &e) < 0) {
        nbdkit_error("%s", e.msg);
        return -1;
    }
    return 0;
}

static void *vdp_open(int readonly)
{
    (void)readonly;
    return vdp_img;
}

static int64_t vdp_get_size(void *h)
{
    return (int64_t)vd_size(h);
}

static int vdp_can_write(void *h)
{
    (void)h;
    return !vdp_readonly;
}

static int vdp_can_multi_conn(void *h)
{
    (void)h;
    return 1;
}

static int vdp_can_flush(void *h)
{
    (void)h;
    return !vdp_readonly;
}

static int vdp_fail(const vd_error *e, int code)
{
    nbdkit_error("%s", e->msg);
    errno = -code;
    return -1;
}

static int vdp_pread(void *h, void *buf, uint32_t count, uint64_t off, uint32_t flags)
{
    (void)flags;
    vd_error e;
    int r = vd_pread(h, buf, count, off, &e);
    return r < 0 ? vdp_fail(&e, r) : 0;
}

static int vdp_flush(void *h, uint32_t flags)
{
    (void)flags;
    vd_error e;
    int r = vd_flush(h, &e);
    return r < 0 ? vdp_fail(&e, r) : 0;
}

static int vdp_pwrite(void *h, const void *buf, uint32_t count, uint64_t off, uint32_t flags)
{
    vd_error e;
    int r = vd_pwrite(h, buf, count, off, &e);
    if (r < 0)
        return vdp_fail(&e, r);
    return (flags & NBDKIT_FLAG_FUA) ? vdp_flush(h, 0) : 0;
}

static int vdp_zero(void *h, uint32_t count, uint64_t off, uint32_t flags)
{
    vd_error e;
    int r = vd_pwrite_zeroes(h, off, count, (flags & NBDKIT_FLAG_MAY_TRIM) ? VD_ZERO_MAY_UNMAP : 0, &e);
    if (r < 0)
        return vdp_fail(&e, r);
    return (flags & NBDKIT_FLAG_FUA) ? vdp_flush(h, 0) : 0;
}

static int vdp_trim(void *h, uint32_t count, uint64_t off, uint32_t flags)
{
    vd_error e;
    int r = vd_discard(h, off, count, &e);
    if (r < 0)
        return vdp_fail(&e, r);
    return (flags & NBDKIT_FLAG_FUA) ? vdp_flush(h, 0) : 0;
}

static int vdp_extents(void *h, uint32_t count, uint64_t off, uint32_t flags,
                       struct nbdkit_extents *out)
{
    vd_extents ext;
    vd_extents_init(&ext);
    vd_error e;
    int r = vd_block_status(h, off, count, &ext, &e);
    if (r < 0) {
        vd_extents_free(&ext);
        return vdp_fail(&e, r);
    }
    for (size_t i = 0; i < ext.n; i++) {
        uint32_t t = 0;
        if (ext.v[i].flags & VD_EXT_ZERO)
            t |= NBDKIT_EXTENT_ZERO;
        if (ext.v[i].flags & VD_EXT_HOLE)
            t |= NBDKIT_EXTENT_HOLE;
        if (nbdkit_add_extent(out, ext.v[i].off, ext.v[i].len, t) < 0) {
            vd_extents_free(&ext);
            return -1;
        }
        if (flags & NBDKIT_FLAG_REQ_ONE)
            break;
    }
    vd_extents_free(&ext);
    return 0;
}

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static struct nbdkit_plugin plugin = {
    .name = "vdisk",
    .longname = "vdisk: every virtual disk format libvdisk reads",
    .version = VDISK_VERSION,
    .description = "Serves the guest view of raw, qcow2, qcow, qed, vdi, vmdk, vhd, vhdx and "
                   "parallels images (backing chains resolved).",
    .config_help = "file=IMAGE (required)  format=FMT  readonly=true|false (default true)  "
                   "allow-host-paths=true  force-share=true",
    .magic_config_key = "file",
    .unload = vdp_unload,
    .config = vdp_config,
    .config_complete = vdp_config_complete,
    .get_ready = vdp_get_ready,
    .open = vdp_open,
    .get_size = vdp_get_size,
    .can_write = vdp_can_write,
    .can_flush = vdp_can_flush,
    .can_multi_conn = vdp_can_multi_conn,
    .pread = vdp_pread,
    .pwrite = vdp_pwrite,
    .flush = vdp_flush,
    .zero = vdp_zero,
    .trim = vdp_trim,
    .extents = vdp_extents,
    .errno_is_preserved = 1,
};

NBDKIT_REGISTER_PLUGIN(plugin)
