/* ddbench.c - `vdconvert dd` and `vdconvert bench`, as qemu-img has them.
 *
 * dd copies whole blocks of the input's guest view into a new output image
 * with qemu-img's operands and its arithmetic (count counts from the start
 * of the input, skip inside that: qemu-img dd writes min(size, count*bs)
 * minus skip*bs bytes).  Blocks that read as zeroes are not written: the
 * new output reads as zeroes there already.
 *
 * bench times COUNT reads (or writes) of SIZE bytes at OFFSET, OFFSET+STEP,
 * ... wrapped at the image size as qemu-img wraps them, from up to BENCH_MAX_THREADS threads
 * (qemu-img keeps DEPTH asynchronous requests in flight; libvdisk's calls
 * are synchronous, so threads stand in for the queue).
 */
#include "vdconvert.h"
#include "tool.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DD_MAX_BS 2147483647ull       /* qemu-img's limit */
#define DD_CHUNK (4u << 20)           /* bytes read per call */
#define BENCH_MAX_THREADS 16

/* ---- dd --------------------------------------------------------------------- */

static const char dd_usage[] =
    "usage: vdconvert dd [-f FMT] [-O FMT] [--allow-host-paths] [bs=BYTES] [count=BLOCKS]\n"
    "                    [skip=BLOCKS] if=INPUT of=OUTPUT\n"
    "  bs=BYTES      block size (default 512; K/M/G suffixes)\n"
    "  count=BLOCKS  copy up to BLOCKS blocks, counted from the start of INPUT\n"
    "  skip=BLOCKS   start at block BLOCKS of INPUT\n"
    "  -O FMT        output format (default raw); OUTPUT is created (replaced)\n";

struct dd_args {
    const char *in, *out;
    uint64_t bs, count, skip;
    bool has_count, has_skip;
};

static int dd_operand(const char *arg, struct dd_args *a)
{
    const char *eq = strchr(arg, '=');
    if (!eq)
        return vc_usage("dd", "unrecognized operand %s", arg);
    size_t kl = (size_t)(eq - arg);
    const char *v = eq + 1;
    uint64_t n;
    if (kl == 2 && !strncmp(arg, "if", 2)) {
        a->in = v;
    } else if (kl == 2 && !strncmp(arg, "of", 2)) {
        a->out = v;
    } else if (kl == 2 && !strncmp(arg, "bs", 2)) {
        if (!vc_parse_size(v, &n) || n < 1 || n > DD_MAX_BS)
            return vc_fail("Invalid bs specified. Must be between 1 and 2147483647.");
        a->bs = n;
    } else if (kl == 5 && !strncmp(arg, "count", 5)) {
        if (!vc_parse_size(v, &n))
            return vc_fail("invalid number: '%s'", v);
        a->count = n;
        a->has_count = true;
    } else if (kl == 4 && !strncmp(arg, "skip", 4)) {
        if (!vc_parse_size(v, &n))
            return vc_fail("invalid number: '%s'", v);
        a->skip = n;
        a->has_skip = true;
    } else {
        return vc_usage("dd", "unrecognized operand %.*s", (int)kl, arg);
    }
    return 0;
}

/* Copy [from, end) of `in` to `out` at 0, leaving zero blocks unwritten. */
static int dd_copy(vd_image *in, vd_image *out, uint64_t from, uint64_t end, uint64_t bs,
                   vd_error *e)
{
    uint64_t chunk = bs > DD_CHUNK ? bs : DD_CHUNK / bs * bs;
    char *buf = malloc(chunk);
    if (!buf)
        return vd_set_error(e, -ENOMEM, "out of memory");
    int r = 0;
    for (uint64_t pos = from; pos < end && r == 0;) {
        size_t n = (size_t)(end - pos < chunk ? end - pos : chunk);
        if ((r = vd_pread(in, buf, n, pos, e)) < 0)
            break;
        if (!vc_is_zero(buf, n))
            r = vd_pwrite(out, buf, n, pos - from, e);
        pos += n;
    }
    free(buf);
    return r;
}

int vc_cmd_dd(int argc, char **argv)
{
    const char *fmt = NULL, *ofmt = "raw";
    bool allow = false;
    static const struct option lo[] = {
        VC_COMMON_LONG_OPTIONS, { 0, 0, 0, 0 } };
    int c, done;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:O:Uh", lo, NULL)) != -1) {
        switch (c) {
        case 'O': ofmt = optarg; break;
        default:
            done = vc_common_option(c, "dd", dd_usage, argv, &fmt, &allow, NULL);
            if (done >= 0)
                return done;
        }
    }
    struct dd_args a = { .bs = 512 };
    for (int i = optind; i < argc; i++) {
        int r = dd_operand(argv[i], &a);
        if (r)
            return r;
    }
    if (!a.in || !a.out)
        return vc_usage("dd", "Must specify both input and output files");
    if (vc_check_format(fmt) || vc_output_format(ofmt, a.out, &ofmt))
        return VC_EXIT_ERR;
    if (!vd_format_can_create(ofmt))
        return vc_fail("format %s: creating images is not supported", ofmt);
    vd_error e = { 0 };
    vd_image *in, *out;
    if (vc_open(a.in, fmt, true, allow, &in, &e) < 0)
        return vc_fail_err(&e);
    vt_warn_probed_raw(in, a.in);
    uint64_t size = vd_size(in);
    if (a.has_count && a.count <= UINT64_MAX / a.bs && a.count * a.bs < size)
        size = a.count * a.bs;
    uint64_t from = 0;
    if (a.has_skip && (a.skip > UINT64_MAX / a.bs || size < a.skip * a.bs)) {
        vd_close(in, NULL);
        return vc_fail("%s: cannot skip to specified offset", a.in);
    }
    if (a.has_skip)
        from = a.skip * a.bs;
    /* qemu-img dd replaces OUTPUT; a device is written in place */
    struct stat st;
    bool device = stat(a.out, &st) == 0 && (S_ISBLK(st.st_mode) || S_ISCHR(st.st_mode));
    if (!device && unlink(a.out) < 0 && errno != ENOENT) {
        vd_close(in, NULL);
        return vc_fail("%s: cannot replace: %s", a.out, strerror(errno));
    }
    int r = 0;
    if (!device)
        /* sizes round up to whole 512-byte sectors, as qemu-img creates them */
        r = vd_create(a.out, &(vd_create_opts){ .format = ofmt,
                      .size = (size - from + 511) / 512 * 512 }, &e);
    if (r == 0)
        r = vd_open(a.out, &(vd_open_opts){ .format = ofmt }, &out, &e);
    if (r == 0) {
        r = dd_copy(in, out, from, size, a.bs, &e);
        int r2 = vd_close(out, r < 0 ? NULL : &e);
        r = r < 0 ? r : r2;
    }
    vd_close(in, NULL);
    if (r < 0) {
        if (!device)
            unlink(a.out);
        return vc_fail_err(&e);
    }
    return 0;
}

/* ---- bench ------------------------------------------------------------------ */

static const char bench_usage[] =
    "usage: vdconvert bench [-c COUNT] [-d DEPTH] [-f FMT] [--flush-interval=N] [-n]\n"
    "                       [--no-drain] [-o OFFSET] [--pattern=BYTE] [-q] [-s SIZE]\n"
    "                       [-S STEP] [-t CACHE] [-w] [--allow-host-paths] IMG\n"
    "  -c COUNT   requests (default 75000)      -d DEPTH  in parallel (default 64)\n"
    "  -s SIZE    bytes a request (default 4K)  -S STEP   offset step (default SIZE)\n"
    "  -o OFFSET  first offset (default 0)      -w        write (default: read)\n"
    "  --pattern=BYTE  what writes write (default 0)\n"
    "  --flush-interval=N  flush after every N writes (and at the end)\n"
    "  -t none    open raw images with O_DIRECT semantics are not emulated: the\n"
    "             cache mode is checked and accepted, as -n and --no-drain\n";

struct bench {
    vd_image *img;
    uint64_t count, offset, step, bufsize, size, flush_interval;
    bool write;
    int pattern;
    uint64_t next;               /* next request number (atomic) */
    int failed;                  /* first error (atomic flag) */
    vd_error err;
    pthread_mutex_t err_lock;
};

/* The offset of request `i`: qemu-img 7.2 adds STEP and wraps at the image
 * size (a request may then end past it and fail, as in qemu-img). */
static uint64_t bench_offset(const struct bench *b, uint64_t i)
{
    if (i == 0)
        return b->offset;
    unsigned __int128 m = b->size;
    return (uint64_t)(((unsigned __int128)b->offset + (unsigned __int128)i * b->step) % m);
}

static void *bench_worker(void *arg)
{
    struct bench *b = arg;
    char *buf = malloc(b->bufsize);
    vd_error e = { 0 };
    int r = buf ? 0 : vd_set_error(&e, -ENOMEM, "out of memory");
    if (buf)
        memset(buf, b->pattern, b->bufsize);
    while (r == 0 && !__atomic_load_n(&b->failed, __ATOMIC_RELAXED)) {
        uint64_t i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
        if (i >= b->count)
            break;
        uint64_t off = bench_offset(b, i);
        r = b->write ? vd_pwrite(b->img, buf, b->bufsize, off, &e)
                     : vd_pread(b->img, buf, b->bufsize, off, &e);
        if (r == 0 && b->write && b->flush_interval && (i + 1) % b->flush_interval == 0)
            r = vd_flush(b->img, &e);
    }
    if (r < 0 && !__atomic_exchange_n(&b->failed, 1, __ATOMIC_RELAXED)) {
        pthread_mutex_lock(&b->err_lock);
        b->err = e;
        pthread_mutex_unlock(&b->err_lock);
    }
    free(buf);
    return NULL;
}

static int bench_number(const char *opt, const char *s, uint64_t min, uint64_t *out)
{
    if (!vc_parse_size(s, out) || *out < min)
        return vc_fail("bench: %s %s: expected a number%s", opt, s, min ? " > 0" : "");
    return 0;
}

int vc_cmd_bench(int argc, char **argv)
{
    struct bench b = { .count = 75000, .bufsize = 4096 };
    uint64_t depth = 64, step = 0;
    const char *fmt = NULL;
    bool allow = false, quiet = false;
    enum { O_PATTERN = 256, O_FLUSH, O_NODRAIN };
    static const struct option lo[] = {
        { "pattern", 1, 0, O_PATTERN }, { "flush-interval", 1, 0, O_FLUSH },
        { "no-drain", 0, 0, O_NODRAIN }, VC_COMMON_LONG_OPTIONS, { 0, 0, 0, 0 } };
    int c, done;
    uint64_t v;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:d:f:i:no:qs:S:t:wUh", lo, NULL)) != -1) {
        switch (c) {
        case 'c': if (bench_number("-c", optarg, 1, &b.count)) return 1; break;
        case 'd': if (bench_number("-d", optarg, 1, &depth)) return 1; break;
        case 'o': if (bench_number("-o", optarg, 0, &b.offset)) return 1; break;
        case 's':
            if (bench_number("-s", optarg, 1, &b.bufsize) || b.bufsize > (1u << 30))
                return vc_fail("bench: -s %s: expected 1 byte to 1 GiB", optarg);
            break;
        case 'S': if (bench_number("-S", optarg, 1, &step)) return 1; break;
        case 't':
            if (strcmp(optarg, "none") && strcmp(optarg, "writeback") &&
                strcmp(optarg, "writethrough") && strcmp(optarg, "directsync") &&
                strcmp(optarg, "unsafe"))
                return vc_fail("Invalid cache mode");
            break;
        case 'i': if (strcmp(optarg, "threads") && strcmp(optarg, "native") &&
                      strcmp(optarg, "io_uring"))
                      return vc_fail("Invalid aio option: %s", optarg);
                  break;
        case 'n': case O_NODRAIN: break;
        case 'q': quiet = true; break;
        case 'w': b.write = true; break;
        case O_PATTERN:
            if (!vc_parse_size(optarg, &v) || v > 0xff)
                return vc_fail("Invalid pattern byte specified");
            b.pattern = (int)v;
            break;
        case O_FLUSH: if (bench_number("--flush-interval", optarg, 0, &b.flush_interval)) return 1;
                      break;
        default:
            done = vc_common_option(c, "bench", bench_usage, argv, &fmt, &allow, NULL);
            if (done >= 0)
                return done;
        }
    }
    if (argc - optind != 1)
        return vc_usage("bench", "expected one image");
    if (b.flush_interval && !b.write)
        return vc_fail("--flush-interval is only available in write tests");
    b.step = step ? step : b.bufsize;
    vd_error e = { 0 };
    if (vc_open(argv[optind], fmt, !b.write, allow, &b.img, &e) < 0)
        return vc_fail_err(&e);
    b.size = vd_size(b.img);
    if (b.offset + b.bufsize > b.size || b.offset + b.bufsize < b.offset) {
        vd_close(b.img, NULL);
        return vc_fail("bench: %s: a request of %" PRIu64 " bytes at offset %" PRIu64
                       " ends past the image (%" PRIu64 " bytes)", argv[optind], b.bufsize,
                       b.offset, b.size);
    }
    if (!quiet)
        printf("Sending %" PRIu64 " %s requests, %" PRIu64 " bytes each, %" PRIu64
               " in parallel (starting at offset %" PRIu64 ", step size %" PRIu64 ")\n",
               b.count, b.write ? "write" : "read", b.bufsize, depth, b.offset, b.step);
    fflush(stdout);
    pthread_mutex_init(&b.err_lock, NULL);
    int nt = depth < BENCH_MAX_THREADS ? (int)depth : BENCH_MAX_THREADS;
    if ((uint64_t)nt > b.count)
        nt = (int)b.count;
    pthread_t th[BENCH_MAX_THREADS];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int started = 0;
    for (; started < nt; started++)
        if (pthread_create(&th[started], NULL, bench_worker, &b))
            break;
    if (!started)
        bench_worker(&b);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    int r = b.failed ? -1 : 0;
    if (r == 0 && b.write && (r = vd_flush(b.img, &e)) < 0)
        b.err = e;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    pthread_mutex_destroy(&b.err_lock);
    int r2 = vd_close(b.img, r < 0 ? NULL : &e);
    if (r < 0)
        return vc_fail_err(&b.err);
    if (r2 < 0)
        return vc_fail_err(&e);
    if (!quiet)
        printf("Run completed in %.3f seconds.\n",
               (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}
