/* vdconvert - convert, inspect and create virtual disk images.
 * (Minimal first version: convert, info, check, compare, create.) */
#include "vdisk.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK (2u << 20)

static int die_err(const vd_error *e)
{
    fprintf(stderr, "vdconvert: %s\n", e->msg);
    return 1;
}

static int copy_image(vd_image *in, vd_image *out, vd_error *e)
{
    uint64_t size = vd_size(in), off = 0;
    char *buf = malloc(CHUNK);
    vd_extents ext;
    vd_extents_init(&ext);
    int r = 0;
    while (off < size && r == 0) {
        uint64_t want = size - off < 64 * (uint64_t)CHUNK ? size - off : 64 * (uint64_t)CHUNK;
        vd_extents_clear(&ext);
        if ((r = vd_block_status(in, off, want, &ext, e)) < 0)
            break;
        for (size_t i = 0; i < ext.n && r == 0; i++) {
            vd_extent *x = &ext.v[i];
            if (x->flags & VD_EXT_ZERO)
                continue;          /* the new target reads zeroes already */
            for (uint64_t p = x->off; p < x->off + x->len && r == 0;) {
                size_t n = x->off + x->len - p < CHUNK ? (size_t)(x->off + x->len - p) : CHUNK;
                if ((r = vd_pread(in, buf, n, p, e)) < 0)
                    break;
                /* skip all-zero 64 KiB pieces */
                for (size_t q = 0; q < n && r == 0; q += 65536) {
                    size_t m = n - q < 65536 ? n - q : 65536;
                    size_t z;
                    for (z = 0; z < m && !buf[q + z]; z++)
                        ;
                    if (z < m)
                        r = vd_pwrite(out, buf + q, m, p + q, e);
                }
                p += n;
            }
        }
        if (ext.n == 0)
            break;
        off = ext.v[ext.n - 1].off + ext.v[ext.n - 1].len;
    }
    vd_extents_free(&ext);
    free(buf);
    return r;
}

static int cmd_convert(int argc, char **argv)
{
    const char *ifmt = NULL, *ofmt = NULL, *opts = NULL;
    int c;
    while ((c = getopt(argc, argv, "f:O:o:pq")) != -1) {
        switch (c) {
        case 'f': ifmt = optarg; break;
        case 'O': ofmt = optarg; break;
        case 'o': opts = optarg; break;
        case 'p': case 'q': break;
        default: return 1;
        }
    }
    if (argc - optind != 2) {
        fprintf(stderr, "usage: vdconvert [-f FMT] [-O FMT] [-o OPTS] IN OUT\n");
        return 1;
    }
    const char *src = argv[optind], *dst = argv[optind + 1];
    if (!ofmt)
        ofmt = vd_format_from_extension(dst);
    if (!ofmt)
        ofmt = "raw";
    vd_error e;
    vd_image *in, *out;
    if (vd_open(src, &(vd_open_opts){ .format = ifmt, .readonly = true }, &in, &e) < 0)
        return die_err(&e);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.vdtmp%d", dst, (int)getpid());
    int r = vd_create(tmp, &(vd_create_opts){ .format = ofmt, .size = vd_size(in), .options = opts }, &e);
    if (r == 0)
        r = vd_open(tmp, &(vd_open_opts){ .format = ofmt }, &out, &e);
    if (r == 0) {
        r = copy_image(in, out, &e);
        int r2 = vd_close(out, r ? NULL : &e);
        if (!r)
            r = r2;
    }
    vd_close(in, NULL);
    if (r == 0 && rename(tmp, dst) < 0) {
        r = -errno;
        snprintf(e.msg, sizeof e.msg, "rename %s: %s", dst, strerror(errno));
    }
    if (r < 0) {
        unlink(tmp);
        return die_err(&e);
    }
    return 0;
}

static int cmd_info(int argc, char **argv)
{
    bool json = false;
    const char *fmt = NULL;
    int c;
    static const struct option lo[] = { { "json", 0, 0, 'j' }, { 0, 0, 0, 0 } };
    while ((c = getopt_long(argc, argv, "f:", lo, NULL)) != -1) {
        if (c == 'j') json = true;
        else if (c == 'f') fmt = optarg;
        else return 1;
    }
    if (optind >= argc) {
        fprintf(stderr, "usage: vdconvert info [--json] IMG\n");
        return 1;
    }
    vd_error e;
    vd_image *img;
    if (vd_open(argv[optind], &(vd_open_opts){ .format = fmt, .readonly = true }, &img, &e) < 0)
        return die_err(&e);
    vd_info i;
    vd_get_info(img, &i);
    if (json)
        printf("{\"filename\": \"%s\", \"format\": \"%s\", \"virtual-size\": %" PRIu64
               ", \"actual-size\": %" PRIu64 ", \"cluster-size\": %u%s%s%s}\n",
               i.filename, i.format, i.virtual_size, i.disk_size, i.cluster_size,
               i.backing_file ? ", \"backing-filename\": \"" : "",
               i.backing_file ? i.backing_file : "", i.backing_file ? "\"" : "");
    else {
        printf("image: %s\nfile format: %s\nvirtual size: %" PRIu64 " bytes\n"
               "disk size: %" PRIu64 " bytes\n", i.filename, i.format, i.virtual_size,
               i.disk_size);
        if (i.cluster_size)
            printf("cluster_size: %u\n", i.cluster_size);
        if (i.backing_file)
            printf("backing file: %s\n", i.backing_file);
    }
    vd_close(img, NULL);
    return 0;
}

static int cmd_create(int argc, char **argv)
{
    const char *fmt = "raw", *opts = NULL, *backing = NULL, *bfmt = NULL;
    int c;
    while ((c = getopt(argc, argv, "f:O:o:b:F:")) != -1) {
        switch (c) {
        case 'f': case 'O': fmt = optarg; break;
        case 'o': opts = optarg; break;
        case 'b': backing = optarg; break;
        case 'F': bfmt = optarg; break;
        default: return 1;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "usage: vdconvert create -O FMT [-b BACKING] IMG [SIZE]\n");
        return 1;
    }
    uint64_t size = 0;
    if (optind + 1 < argc) {
        char *end;
        unsigned long long v = strtoull(argv[optind + 1], &end, 10);
        int sh = *end == 'K' || *end == 'k' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : *end == 'T' ? 40 : 0;
        size = (uint64_t)v << sh;
    }
    vd_error e;
    if (vd_create(argv[optind], &(vd_create_opts){ .format = fmt, .size = size, .options = opts,
                  .backing_file = backing, .backing_format = bfmt }, &e) < 0)
        return die_err(&e);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: vdconvert [info|create] ... | vdconvert IN OUT\n");
        return 1;
    }
    if (!strcmp(argv[1], "info"))
        return cmd_info(argc - 1, argv + 1);
    if (!strcmp(argv[1], "create"))
        return cmd_create(argc - 1, argv + 1);
    if (!strcmp(argv[1], "convert"))
        return cmd_convert(argc - 1, argv + 1);
    return cmd_convert(argc, argv);
}
