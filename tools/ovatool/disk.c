/* disk.c - converting one disk for import and export: libvdisk's vd_copy
 * (block-status driven, worker threads, zero-copy where the formats allow,
 * streamOptimized VMDK written in order) into a file created under a
 * temporary name and renamed when complete. */
#include "ovatool.h"
#include "tool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Zero runs of this size are left unallocated (vdconvert's default -S). */
#define DISK_SPARSE_SIZE 4096u

/* Bytes of `img` that block status does not know to be zero (OVF
 * populatedSize): metadata only, no data is read. */
static int disk_populated(vd_image *img, uint64_t *out, vd_error *e)
{
    vd_extents ext;
    vd_extents_init(&ext);
    uint64_t size = vd_size(img), off = 0, data = 0;
    int r = 0;
    while (off < size) {
        vd_extents_clear(&ext);
        if ((r = vd_block_status(img, off, size - off, &ext, e)) < 0)
            break;
        if (!ext.n) {
            r = -EIO;
            snprintf(e->msg, sizeof e->msg, "%s: block status at 0x%llx described nothing",
                     vd_filename(img), (unsigned long long)off);
            break;
        }
        for (size_t i = 0; i < ext.n; i++)
            if (!(ext.v[i].flags & VD_EXT_ZERO))
                data += ext.v[i].len;
        off = ext.v[ext.n - 1].off + ext.v[ext.n - 1].len;
    }
    vd_extents_free(&ext);
    *out = data;
    return r;
}

/* Progress in the display every vdisk tool shares (tools/common), labelled
 * with what the user knows: the source disk and the output's name, never
 * the working folder the appliance is packed or unpacked in. */
static int disk_copy(vd_image *in, vd_image *out, const char *src, const char *dst,
                     bool progress, vd_error *e)
{
    char label[512];
    const char *sb = strrchr(src, '/'), *db = strrchr(dst, '/');
    snprintf(label, sizeof label, "%s -> %s", sb ? sb + 1 : src, db ? db + 1 : dst);
    vt_progress *p = vt_progress_new(label, vd_size(in), progress);
    vd_copy_opts o = {
        .threads = vt_cpus(), .sparse_size = DISK_SPARSE_SIZE,
        .target_is_zeroed = true,
        .progress = p ? vt_progress_cb : NULL, .progress_ctx = p,
    };
    int r = vd_copy(in, out, &o, e);
    vt_progress_end(p, r == 0);
    return r;
}

int disk_convert(const char *src, const char *src_fmt, const struct disk_window *win,
                 const char *dst, const char *fmt,
                 const char *options, uint64_t min_size, bool progress, bool trusted_refs,
                 struct disk_stats *stats, char *err, size_t errlen)
{
    uint64_t populated = 0;
    vd_error e = { 0 };
    vd_image *in = NULL, *out = NULL;
    /* A symbolic link at dst stays: the file it leads to gets the disk. */
    char put[4096], tmp[4200];
    if (vt_resolve_out(dst, put, sizeof put, err, errlen) < 0)
        return -1;
    snprintf(tmp, sizeof tmp, "%s.tmp%d", put, (int)getpid());
    int r = vd_open(src, &(vd_open_opts){ .readonly = true, .format = src_fmt,
                                          .allow_host_paths = trusted_refs,
                                          .window_offset = win ? win->off : 0,
                                          .window_length = win ? win->len : 0,
                                          .window_name = win ? win->name : NULL }, &in, &e);
    /* The output replaces dst (or the file a link there leads to) by a
     * rename: never a file the source reads. */
    if (r == 0 && vd_image_uses_file(in, put))
        r = vd_set_error(&e, -EINVAL, "%s: this is the input %s or one of its files; refusing "
                         "to overwrite an input", dst, src);
    if (r == 0 && vd_size(in) > min_size)
        min_size = vd_size(in);
    if (r == 0 && stats)
        r = disk_populated(in, &populated, &e);
    if (r == 0)
        r = vd_create(tmp, &(vd_create_opts){ .format = fmt, .size = min_size,
                                              .options = options }, &e);
    if (r == 0)
        r = vd_open(tmp, &(vd_open_opts){ .format = fmt }, &out, &e);
    if (r == 0)
        r = disk_copy(in, out, win ? win->name : src, dst, progress, &e);
    if (r == 0 && stats)
        *stats = (struct disk_stats){ .capacity = vd_size(in), .populated = populated };
    if (out) {
        int r2 = vd_close(out, r ? NULL : &e);
        if (!r)
            r = r2;
    }
    if (in)
        vd_close(in, NULL);
    if (r == 0 && rename(tmp, put) < 0) {
        r = -errno;
        snprintf(e.msg, sizeof e.msg, "%s: rename: %s", dst, strerror(errno));
    }
    if (r < 0) {
        unlink(tmp);
        snprintf(err, errlen, "%s", e.msg);
    }
    return r;
}

bool disk_is_input(const char *src, const char *out)
{
    struct stat st;
    vd_image *in = NULL;
    vd_error e = { 0 };
    /* nothing at `out`: no input to lose, and no disk opened for it */
    if (stat(out, &st) < 0 || vd_open(src, &(vd_open_opts){ .readonly = true }, &in, &e) < 0)
        return false;
    bool r = vd_image_uses_file(in, out);
    vd_close(in, NULL);
    return r;
}
