/* qcow2-write-tool - drive libvdisk writes from a test script.
 *
 *   qcow2-write-tool [-s SNAP] [-m MIRROR.raw] [-f FMT] IMG OP...
 *
 * OPs, applied in order (sizes take K/M/G suffixes):
 *   w:OFF:LEN:SEED    write a deterministic pattern (64 random bytes, 64 zero
 *                     bytes, ...: compresses at every cluster size)
 *   c:OFF:LEN:SEED    the same through vd_pwrite_compressed
 *   z:OFF:LEN[:u]     write zeroes (u: VD_ZERO_MAY_UNMAP)
 *   d:OFF:LEN         discard (the mirror gets zeroes: use without backing)
 *   f                 flush
 *   dump:OUT          write the guest view to OUT (raw)
 *   check[:leaks|:all]  run vd_check (repairing), print the result; exits 2
 *                     when corruptions or leaks remain
 *   copyc:SRC         copy SRC's guest view in, every non-zero cluster through
 *                     vd_pwrite_compressed (what `convert -c` does)
 *   snaps             list snapshots: id, name, disk size
 *   info              print format details
 * With -m every write/zero/discard is also applied to the raw MIRROR so that
 * `qemu-img compare MIRROR IMG` can judge the result.  -s opens a snapshot
 * (read-only).  The image is opened read-only when every OP reads. */
#include "vdisk.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int mirror_fd = -1;

static uint64_t parse_size(const char *s)
{
    char *end;
    uint64_t v = strtoull(s, &end, 0);
    switch (*end) {
    case 'K': case 'k': v <<= 10; break;
    case 'M': case 'm': v <<= 20; break;
    case 'G': case 'g': v <<= 30; break;
    default: break;
    }
    return v;
}

static void pattern(uint8_t *buf, size_t len, uint64_t off, uint64_t seed)
{
    for (size_t i = 0; i < len; i++) {
        uint64_t pos = off + i;
        if ((pos & 127) >= 64) {
            buf[i] = 0;
            continue;
        }
        uint64_t x = (pos >> 3) * 0x9e3779b97f4a7c15ull ^ (seed + 1) * 0xbf58476d1ce4e5b9ull;
        x ^= x >> 31;
        x *= 0x94d049bb133111ebull;
        x ^= x >> 29;
        buf[i] = (uint8_t)(x >> ((pos & 7) * 8));
    }
}

static int mirror(const void *buf, size_t len, uint64_t off)
{
    if (mirror_fd < 0)
        return 0;
    void *z = NULL;
    if (!buf)
        buf = z = calloc(1, len);
    ssize_t n = pwrite(mirror_fd, buf, len, (off_t)off);
    free(z);
    return n == (ssize_t)len ? 0 : -1;
}

static int op_write(vd_image *img, char *args, bool compressed, vd_error *e)
{
    char *o = strtok(args, ":"), *l = strtok(NULL, ":"), *sd = strtok(NULL, ":");
    if (!o || !l || !sd)
        return fprintf(stderr, "w/c need OFF:LEN:SEED\n"), -1;
    uint64_t off = parse_size(o), len = parse_size(l), seed = parse_size(sd);
    uint8_t *buf = malloc(len ? len : 1);
    pattern(buf, len, off, seed);
    int r = compressed ? vd_pwrite_compressed(img, buf, len, off, e)
                       : vd_pwrite(img, buf, len, off, e);
    if (r == 0)
        r = mirror(buf, len, off);
    free(buf);
    return r;
}

static int op_zero(vd_image *img, char *args, bool discard, vd_error *e)
{
    char *o = strtok(args, ":"), *l = strtok(NULL, ":"), *u = strtok(NULL, ":");
    if (!o || !l)
        return fprintf(stderr, "z/d need OFF:LEN\n"), -1;
    uint64_t off = parse_size(o), len = parse_size(l);
    int r = discard ? vd_discard(img, off, len, e)
                    : vd_pwrite_zeroes(img, off, len, u ? VD_ZERO_MAY_UNMAP : 0, e);
    if (r == 0)
        r = mirror(NULL, len, off);
    return r;
}

static int op_dump(vd_image *img, const char *out, vd_error *e)
{
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return perror(out), -1;
    uint64_t size = vd_size(img);
    size_t chunk = 1 << 20;
    uint8_t *buf = malloc(chunk);
    int r = 0;
    for (uint64_t off = 0; off < size && r == 0; off += chunk) {
        size_t n = size - off < chunk ? (size_t)(size - off) : chunk;
        if ((r = vd_pread(img, buf, n, off, e)) == 0 && pwrite(fd, buf, n, (off_t)off) != (ssize_t)n)
            r = -1;
    }
    free(buf);
    close(fd);
    return r;
}

static int op_check(vd_image *img, const char *mode, vd_error *e)
{
    unsigned flags = !mode ? 0 : !strcmp(mode, "all") ? VD_CHECK_REPAIR_ALL : VD_CHECK_REPAIR_LEAKS;
    vd_check_result res;
    int r = vd_check(img, flags, &res, e);
    if (r < 0)
        return r;
    printf("corruptions=%llu leaks=%llu corruptions_fixed=%llu leaks_fixed=%llu end=%llu%s%s\n",
           (unsigned long long)res.corruptions, (unsigned long long)res.leaks,
           (unsigned long long)res.corruptions_fixed, (unsigned long long)res.leaks_fixed,
           (unsigned long long)res.image_end_offset, res.first_problem[0] ? " first: " : "",
           res.first_problem);
    if (res.corruptions > res.corruptions_fixed || res.leaks > res.leaks_fixed)
        return 2;
    return 0;
}

static int op_copyc(vd_image *img, const char *src, vd_error *e)
{
    vd_image *in;
    vd_info info;
    if (vd_open(src, &(vd_open_opts){ .readonly = true }, &in, e) < 0)
        return -1;
    vd_get_info(img, &info);
    size_t cs = info.cluster_size ? info.cluster_size : 65536;
    uint64_t size = vd_size(in) < vd_size(img) ? vd_size(in) : vd_size(img);
    uint8_t *buf = malloc(cs);
    int r = vd_can_compress(img) ? 0 : -1;
    if (r < 0)
        fprintf(stderr, "image cannot compress\n");
    for (uint64_t off = 0; off < size && r == 0; off += cs) {
        size_t n = size - off < cs ? (size_t)(size - off) : cs;
        if ((r = vd_pread(in, buf, n, off, e)) < 0)
            break;
        size_t z = 0;
        while (z < n && !buf[z])
            z++;
        if (z < n)
            r = vd_pwrite_compressed(img, buf, n, off, e);
    }
    free(buf);
    vd_close(in, NULL);
    return r;
}

static void print_kv(void *ctx, const char *k, const char *v)
{
    (void)ctx;
    printf("%s=%s\n", k, v);
}

static int op_snaps(vd_image *img)
{
    vd_snapshot_info sn[64];
    int n = vd_list_snapshots(img, sn, 64);
    for (int i = 0; i < n && i < 64; i++)
        printf("%s\t%s\t%llu\n", sn[i].id, sn[i].name, (unsigned long long)sn[i].disk_size);
    return n < 0 ? n : 0;
}

static bool op_reads_only(const char *op)
{
    return !strncmp(op, "dump:", 5) || !strcmp(op, "snaps") || !strcmp(op, "info") ||
           !strcmp(op, "check");
}

int main(int argc, char **argv)
{
    const char *snap = NULL, *mpath = NULL, *fmt = NULL;
    int c;
    while ((c = getopt(argc, argv, "s:m:f:")) != -1) {
        if (c == 's') snap = optarg;
        else if (c == 'm') mpath = optarg;
        else if (c == 'f') fmt = optarg;
        else return 64;
    }
    if (optind + 2 > argc) {
        fprintf(stderr, "usage: qcow2-write-tool [-s SNAP] [-m MIRROR] [-f FMT] IMG OP...\n");
        return 64;
    }
    bool ro = true;
    for (int i = optind + 1; i < argc; i++)
        ro &= op_reads_only(argv[i]);
    if (mpath && (mirror_fd = open(mpath, O_RDWR)) < 0)
        return perror(mpath), 1;
    vd_error e = { 0 };
    vd_image *img;
    if (vd_open(argv[optind], &(vd_open_opts){ .readonly = ro || snap, .snapshot = snap,
                .format = fmt }, &img, &e) < 0) {
        fprintf(stderr, "qcow2-write-tool: %s\n", e.msg);
        return 1;
    }
    int r = 0;
    for (int i = optind + 1; i < argc && r == 0; i++) {
        char *op = argv[i];
        if (!strncmp(op, "w:", 2)) r = op_write(img, op + 2, false, &e);
        else if (!strncmp(op, "c:", 2)) r = op_write(img, op + 2, true, &e);
        else if (!strncmp(op, "z:", 2)) r = op_zero(img, op + 2, false, &e);
        else if (!strncmp(op, "d:", 2)) r = op_zero(img, op + 2, true, &e);
        else if (!strcmp(op, "f")) r = vd_flush(img, &e);
        else if (!strncmp(op, "dump:", 5)) r = op_dump(img, op + 5, &e);
        else if (!strncmp(op, "check", 5)) r = op_check(img, op[5] == ':' ? op + 6 : NULL, &e);
        else if (!strcmp(op, "snaps")) r = op_snaps(img);
        else if (!strncmp(op, "copyc:", 6)) r = op_copyc(img, op + 6, &e);
        else if (!strcmp(op, "info")) vd_get_format_details(img, print_kv, NULL);
        else {
            fprintf(stderr, "unknown op %s\n", op);
            r = -1;
        }
        if (r < 0 && e.msg[0])
            fprintf(stderr, "qcow2-write-tool: %s: %s\n", op, e.msg);
    }
    int cr = vd_close(img, &e);
    if (cr < 0 && r == 0) {
        fprintf(stderr, "qcow2-write-tool: close: %s\n", e.msg);
        r = cr;
    }
    if (mirror_fd >= 0)
        close(mirror_fd);
    mirror_fd = -1;   /* tests/mutant-runner -b runs main() again */
    return r == 0 ? 0 : r == 2 ? 2 : 1;
}
