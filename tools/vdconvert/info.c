/* info.c - `vdconvert info` and `vdconvert map`.
 *
 * Both print what the library reports in qemu-img's shapes (human text and
 * --json with qemu-img's key names), so scripts written for qemu-img can
 * read them.
 */
#include "vdconvert.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define INFO_MAX_SNAPSHOTS 4096

static void info_human_size(char *out, size_t n, uint64_t v)
{
    static const char *const u[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    double d = (double)v;
    int i = 0;
    while (d >= 1024 && i < 6) {
        d /= 1024;
        i++;
    }
    if (i == 0)
        snprintf(out, n, "%" PRIu64 " B", v);
    else
        snprintf(out, n, "%.3g %s", d, u[i]);
}

/* Details that are numbers or booleans are printed as JSON numbers and
 * booleans, as qemu-img does ("refcount-bits": 16, "corrupt": false). */
static bool info_json_literal(const char *v)
{
    if (!strcmp(v, "true") || !strcmp(v, "false"))
        return true;
    if (!*v || (v[0] == '0' && v[1]))        /* "0x1", "007": keep as text */
        return false;
    for (const char *p = v; *p; p++)
        if (*p < '0' || *p > '9' || p - v > 18)
            return false;
    return true;
}

struct info_kv_ctx {
    FILE *f;
    bool json;
    int n;
};

static void info_kv(void *ctx, const char *key, const char *value)
{
    struct info_kv_ctx *c = ctx;
    if (c->json) {
        /* qemu-img's JSON keys use '-' ("refcount-bits") */
        char k[128];
        snprintf(k, sizeof k, "%s", key);
        for (char *p = k; *p; p++)
            if (*p == '_')
                *p = '-';
        fprintf(c->f, "%s\n                ", c->n ? "," : "");
        vt_json_str(c->f, k);
        fputs(": ", c->f);
        if (info_json_literal(value))
            fputs(value, c->f);
        else
            vt_json_str(c->f, value);
    } else {
        if (!c->n)
            fputs("Format specific information:\n", c->f);
        fprintf(c->f, "    %s: %s\n", key, value);
    }
    c->n++;
}

static vd_snapshot_info *info_snapshots(vd_image *img, int *n)
{
    *n = vd_list_snapshots(img, NULL, 0);
    if (*n <= 0)
        return NULL;
    if (*n > INFO_MAX_SNAPSHOTS)
        *n = INFO_MAX_SNAPSHOTS;
    vd_snapshot_info *s = calloc((size_t)*n, sizeof *s);
    if (!s || vd_list_snapshots(img, s, (size_t)*n) < 0) {
        free(s);
        *n = 0;
        return NULL;
    }
    return s;
}

/* qemu-img's table (block/qapi.c in qemu 7.2): the header and the rows use
 * different widths, as there, so that scripts cutting columns work. */
void vc_print_snapshots(const vd_snapshot_info *s, int n)
{
    if (n <= 0)
        return;
    printf("Snapshot list:\n%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE",
           "VM CLOCK", "ICOUNT");
    for (int i = 0; i < n; i++) {
        char vm[32], date[32], clock[48], icount[24] = "";
        time_t t = (time_t)s[i].date_sec;
        struct tm tm;
        info_human_size(vm, sizeof vm, s[i].vm_state_size);
        strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
        uint64_t cs = s[i].vm_clock_nsec / UINT64_C(1000000000);
        snprintf(clock, sizeof clock, "%02" PRIu64 ":%02u:%02u.%03u", cs / 3600,
                 (unsigned)(cs / 60 % 60), (unsigned)(cs % 60),
                 (unsigned)(s[i].vm_clock_nsec / 1000000 % 1000));
        if (s[i].icount != UINT64_MAX)
            snprintf(icount, sizeof icount, "%" PRId64, (int64_t)s[i].icount);
        printf("%-9s %-16s %8s%20s%13s%11s\n", s[i].id, s[i].name, vm, date, clock, icount);
    }
}

static void info_print_snapshots_json(const vd_snapshot_info *s, int n)
{
    if (n <= 0)
        return;
    printf(",\n        \"snapshots\": [");
    for (int i = 0; i < n; i++) {
        vt_json_member(stdout, i ? ",\n            {" : "\n            {", "id", s[i].id);
        vt_json_member(stdout, ", ", "name", s[i].name);
        printf(", \"vm-state-size\": %" PRIu64 ", \"date-sec\": %" PRIu64
               ", \"date-nsec\": %u, \"vm-clock-sec\": %" PRIu64 ", \"vm-clock-nsec\": %u}",
               s[i].vm_state_size, s[i].date_sec, s[i].date_nsec,
               s[i].vm_clock_nsec / UINT64_C(1000000000),
               (unsigned)(s[i].vm_clock_nsec % UINT64_C(1000000000)));
    }
    printf("\n        ]");
}

static void info_print_human(vd_image *img)
{
    vd_info i;
    char vs[32], ds[32];
    vd_get_info(img, &i);
    info_human_size(vs, sizeof vs, i.virtual_size);
    info_human_size(ds, sizeof ds, i.disk_size);
    printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRIu64 " bytes)\n"
           "disk size: %s\n", i.filename, i.format, vs, i.virtual_size, ds);
    if (i.cluster_size)
        printf("cluster_size: %u\n", i.cluster_size);
    if (i.backing_file) {
        printf("backing file: %s", i.backing_file);
        if (i.backing_path && strcmp(i.backing_path, i.backing_file))
            printf(" (actual path: %s)", i.backing_path);
        printf("\n");
        if (i.backing_format)
            printf("backing file format: %s\n", i.backing_format);
    }
    if (i.dirty)
        printf("dirty flag: yes\n");
    int n;
    vd_snapshot_info *s = info_snapshots(img, &n);
    vc_print_snapshots(s, n);
    free(s);
    struct info_kv_ctx c = { .f = stdout };
    vd_get_format_details(img, info_kv, &c);
}

static void info_print_json(vd_image *img, const char *indent_first)
{
    vd_info i;
    vd_get_info(img, &i);
    printf("%s{\n        \"virtual-size\": %" PRIu64, indent_first, i.virtual_size);
    vt_json_member(stdout, ",\n        ", "filename", i.filename);
    if (i.cluster_size)
        printf(",\n        \"cluster-size\": %u", i.cluster_size);
    vt_json_member(stdout, ",\n        ", "format", i.format);
    printf(",\n        \"actual-size\": %" PRIu64 ",\n        \"dirty-flag\": %s",
           i.disk_size, i.dirty ? "true" : "false");
    if (i.backing_file) {
        vt_json_member(stdout, ",\n        ", "backing-filename", i.backing_file);
        if (i.backing_path)
            vt_json_member(stdout, ",\n        ", "full-backing-filename", i.backing_path);
        if (i.backing_format)
            vt_json_member(stdout, ",\n        ", "backing-filename-format", i.backing_format);
    }
    int n;
    vd_snapshot_info *s = info_snapshots(img, &n);
    info_print_snapshots_json(s, n);
    free(s);
    struct info_kv_ctx c = { .f = stdout, .json = true };
    vt_json_member(stdout, ",\n        \"format-specific\": {\n            ", "type", i.format);
    printf(",\n            \"data\": {");
    c.n = 0;
    vd_get_format_details(img, info_kv, &c);
    printf("%s}\n        }\n    }", c.n ? "\n            " : "");
}

static const char info_usage[] =
    "usage: vdconvert info [-f FMT] [--json] [--backing-chain] [-U] [--allow-host-paths] IMG\n"
    "  -U, --force-share  read IMG even while another process writes it\n"
    "  --json           qemu-img's JSON layout (an array with --backing-chain)\n"
    "  --backing-chain  describe every image of the backing chain\n";

int vc_cmd_info(int argc, char **argv)
{
    bool json = false, chain = false, allow = false;
    const char *fmt = NULL;
    static const struct option lo[] = {
        { "backing-chain", 0, 0, 'b' }, VC_OUTPUT_LONG_OPTIONS, VC_COMMON_LONG_OPTIONS,
        { 0, 0, 0, 0 } };
    int c, done;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:hU", lo, NULL)) != -1) {
        switch (c) {
        case 'b': chain = true; break;
        default:
            done = vc_common_option(c, "info", info_usage, argv, &fmt, &allow, &json);
            if (done >= 0)
                return done;
        }
    }
    vd_image *img;
    if ((done = vc_open_operand("info", argc, argv, fmt, allow, &img)))
        return done;
    if (chain && json)
        printf("[\n");
    for (vd_image *l = img; l; l = chain ? vd_backing(l) : NULL) {
        if (json) {
            info_print_json(l, chain ? "    " : "");
            printf("%s\n", chain && vd_backing(l) ? "," : "");
        } else {
            info_print_human(l);
            if (chain && vd_backing(l))
                printf("\n");
        }
    }
    if (chain && json)
        printf("]\n");
    vd_close(img, NULL);
    return 0;
}

/* ---- map ---------------------------------------------------------------- */

/* The image of the chain at `depth`, or NULL. */
static vd_image *map_layer(vd_image *img, int depth)
{
    for (int d = 0; d < depth && img; d++)
        img = vd_backing(img);
    return depth < 0 ? NULL : img;
}

/* A raw layer, or an NBD export (qemu-img treats one as a raw protocol
 * layer), maps every guest byte to the same offset of its "file". */
static bool map_is_plain(vd_image *layer)
{
    return layer && (!strcmp(vd_format_name(layer), "raw") ||
                     !strcmp(vd_format_name(layer), "nbd"));
}

/* Ranges no layer holds: qemu-img reports them at the bottom layer.  A raw
 * layer maps every byte to the same file offset, zeroes too, and qemu-img
 * prints that offset. */
static void map_print_json(const vd_extent *x, bool first, int bottom, vd_image *img)
{
    vd_image *layer = map_layer(img, x->depth);
    bool data = x->flags & VD_EXT_DATA;
    bool zero = (x->flags & VD_EXT_ZERO) != 0;
    bool present = !(x->flags & VD_EXT_HOLE);
    printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %d, "
           "\"present\": %s, \"zero\": %s, \"data\": %s", first ? "[" : ",\n",
           x->off, x->len, x->depth < 0 ? bottom : x->depth, present ? "true" : "false",
           zero ? "true" : "false", data ? "true" : "false");
    if (data && x->file_off != VD_NO_OFFSET && !(x->flags & VD_EXT_COMPRESSED))
        printf(", \"offset\": %" PRIu64, x->file_off);
    else if (map_is_plain(layer))
        printf(", \"offset\": %" PRIu64, x->off);
    printf("}");
}

static void map_print_human(const vd_extent *x, vd_image *img, bool *header)
{
    vd_image *l = map_layer(img, x->depth);
    uint64_t mapped = x->file_off;
    if (mapped == VD_NO_OFFSET && map_is_plain(l) && !(x->flags & VD_EXT_COMPRESSED))
        mapped = x->off;
    if (!(x->flags & VD_EXT_DATA) || mapped == VD_NO_OFFSET)
        return;
    if (!*header) {
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
        *header = true;
    }
    printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", x->off, x->len, mapped,
           l ? vd_filename(l) : "?");
}

/* Extents are merged across block-status calls so that one range is one
 * line, as qemu-img prints it. */
static bool map_mergeable(const vd_extent *a, const vd_extent *b)
{
    if (a->flags != b->flags || a->depth != b->depth || a->off + a->len != b->off)
        return false;
    if (a->file_off == VD_NO_OFFSET || b->file_off == VD_NO_OFFSET)
        return a->file_off == b->file_off;
    return a->file_off + a->len == b->file_off;
}

static const char map_usage[] =
    "usage: vdconvert map [-f FMT] [--json] [--start-offset OFF] [--max-length LEN]\n"
    "                     [-U] [--allow-host-paths] IMG\n"
    "  -U, --force-share  read IMG even while another process writes it\n";

int vc_cmd_map(int argc, char **argv)
{
    bool json = false, allow = false;
    const char *fmt = NULL;
    uint64_t start = 0, maxlen = UINT64_MAX;
    static const struct option lo[] = {
        { "start-offset", 1, 0, 's' }, { "max-length", 1, 0, 'l' }, VC_OUTPUT_LONG_OPTIONS,
        VC_COMMON_LONG_OPTIONS, { 0, 0, 0, 0 } };
    int c, done;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:hU", lo, NULL)) != -1) {
        switch (c) {
        case 's':
            if (!vc_parse_size(optarg, &start))
                return vc_fail("map: --start-offset %s: not a size", optarg);
            break;
        case 'l':
            if (!vc_parse_size(optarg, &maxlen))
                return vc_fail("map: --max-length %s: not a size", optarg);
            break;
        default:
            done = vc_common_option(c, "map", map_usage, argv, &fmt, &allow, &json);
            if (done >= 0)
                return done;
        }
    }
    vd_image *img;
    if ((done = vc_open_operand("map", argc, argv, fmt, allow, &img)))
        return done;
    vd_error e = { 0 };
    int bottom = 0;
    for (vd_image *l = vd_backing(img); l; l = vd_backing(l))
        bottom++;
    uint64_t size = vd_size(img);
    uint64_t end = start < size ? (size - start < maxlen ? size : start + maxlen) : start;
    vd_extents ext;
    vd_extents_init(&ext);
    vd_extent cur = { .len = 0 };
    bool first = true, header = false;
    int r = 0;
    for (uint64_t off = start; off < end && r == 0;) {
        vd_extents_clear(&ext);
        if ((r = vd_block_status(img, off, end - off, &ext, &e)) < 0)
            break;
        for (size_t i = 0; i < ext.n; i++) {
            vd_extent x = ext.v[i];
            if (cur.len && map_mergeable(&cur, &x)) {
                cur.len += x.len;
                continue;
            }
            if (cur.len) {
                if (json)
                    map_print_json(&cur, first, bottom, img);
                else
                    map_print_human(&cur, img, &header);
                first = false;
            }
            cur = x;
        }
        uint64_t next = ext.n ? ext.v[ext.n - 1].off + ext.v[ext.n - 1].len : off;
        if (next <= off) {
            r = vd_set_error(&e, -5, "%s: block status made no progress at 0x%" PRIx64,
                             vd_filename(img), off);
            break;
        }
        off = next;
    }
    if (r == 0 && cur.len) {
        if (json)
            map_print_json(&cur, first, bottom, img);
        else
            map_print_human(&cur, img, &header);
        first = false;
    }
    if (r == 0 && json)
        printf("%s]\n", first ? "[" : "");
    vd_extents_free(&ext);
    vd_close(img, NULL);
    return r < 0 ? vc_fail_err(&e) : 0;
}
