/* crash-writer - the crash-consistency harness's two halves.
 *
 *   crash-writer write IMG SEED LOG [FLUSH_EVERY]
 *       Opens IMG read-write through libvdisk and writes pseudo-random data
 *       at pseudo-random offsets forever (iteration i is a pure function of
 *       SEED and i), calling vd_flush every FLUSH_EVERY writes and then
 *       appending "i\n" to LOG (fsync'd): i writes are durable.  The test
 *       SIGKILLs it at a random moment.
 *       With VD_CRASH_WRITES=N it stops after N writes instead (flushed
 *       and closed); with VD_CRASH_UNMAP=1 its zero writes may unmap
 *       (VD_ZERO_MAY_UNMAP: they free clusters); and with
 *       VDISK_TEST_WRITE_LOG set (the library's log of file changes, for
 *       power-loss tests) it appends a "mark" record holding i to that log
 *       after each completed flush.
 *   crash-writer verify IMG SEED DONE [FLUSH_EVERY] [BASE]
 *       Replays iterations 0..DONE-1 on a shadow copy (zeroes, or the raw
 *       content of BASE when the image has a backing file) and checks that
 *       the image reads back exactly that, except the bytes that iterations
 *       DONE..DONE+FLUSH_EVERY-1 may have touched (in flight at the kill).
 *   crash-writer serve
 *       Judges many images in one process: reads requests from its input,
 *       one a line, tab-separated, and answers each with the messages the
 *       command would print, then a line "end RC" (RC: its exit status),
 *       flushed, before reading the next:
 *         verify IMG SEED DONE FLUSH_EVERY [BASE]   as verify above
 *         check IMG   as `vdconvert check IMG` (the same vd_open read-only
 *                     and vd_check; exit 0 clean, 1 not checked, 2
 *                     corruptions, 3 leaks only, 63 no check): the
 *                     first problem and the counts
 *       Each request opens the image afresh.  The tests judge hundreds of
 *       images a run, and under ASan a process's start and leak scan cost
 *       more than a verify's or a check's work.
 *   crash-writer pattern OUT SIZE
 *       Writes the raw base of the backing layouts: SIZE bytes, byte i
 *       being (i * 7 + 3) & 0xff.
 * Exit: 0 ok, 1 content differs or the image does not open, 2 usage. */
#include "vdisk.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_WRITE 65536
#define CHUNK (1u << 20)

struct op {
    uint64_t off;
    size_t len;
    uint8_t fill_seed;
};

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33; x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* Iteration i: mostly small unaligned writes, some large aligned ones, and
 * every 7th a zero write. */
static struct op op_for(uint64_t seed, uint64_t i, uint64_t size)
{
    uint64_t r = mix(seed * 1000003u + i);
    struct op o;
    if (r % 4 == 0) {
        o.len = (size_t)(1 + (r >> 8) % MAX_WRITE);
        o.off = (r >> 24) % (size - o.len);
    } else {
        o.len = (size_t)(((r >> 8) % 16 + 1) * 4096);
        o.off = ((r >> 24) % (size / 4096)) * 4096;
        if (o.off + o.len > size)
            o.off = size - o.len;
    }
    o.fill_seed = (uint8_t)(r >> 56);
    return o;
}

static bool op_is_zero(uint64_t seed, uint64_t i)
{
    return mix(seed ^ (i * 7919u)) % 7 == 0;
}

static void fill(uint8_t *buf, const struct op *o, uint64_t i)
{
    for (size_t k = 0; k < o->len; k++)
        buf[k] = (uint8_t)(o->fill_seed + k * 31 + (i & 0xff) + (k >> 9));
}

/* A mark record in the library's write log (libvdisk/writelog.c format). */
static void write_log_mark(int wl, uint64_t done)
{
    uint8_t h[28 + 4] = "VDWL";
    uint32_t op = 5, plen = 4;
    memcpy(h + 4, &op, 4);          /* little-endian hosts only, as the tests */
    memcpy(h + 8, &plen, 4);
    memcpy(h + 12, &done, 8);
    memset(h + 20, 0, 8);
    memcpy(h + 28, "mark", 4);
    if (wl >= 0 && write(wl, h, sizeof h) != (ssize_t)sizeof h)
        fprintf(stderr, "crash-writer: cannot append to the write log\n");
}

static int do_write(const char *img_path, uint64_t seed, const char *log, uint64_t every)
{
    vd_image *img;
    vd_error e;
    if (vd_open(img_path, NULL, &img, &e) < 0) {
        fprintf(stderr, "crash-writer: %s\n", e.msg);
        return 1;
    }
    int lf = open(log, O_WRONLY | O_APPEND | O_CREAT, 0644);
    const char *wl_path = getenv("VDISK_TEST_WRITE_LOG"), *limit = getenv("VD_CRASH_WRITES");
    int wl = wl_path ? open(wl_path, O_WRONLY | O_APPEND | O_CREAT, 0644) : -1;
    uint64_t max = limit ? strtoull(limit, NULL, 10) : UINT64_MAX;
    const char *unmap = getenv("VD_CRASH_UNMAP");
    unsigned zflags = unmap && !strcmp(unmap, "1") ? VD_ZERO_MAY_UNMAP : 0;
    uint8_t *buf = malloc(MAX_WRITE);
    uint64_t size = vd_size(img);
    for (uint64_t i = 0;; i++) {
        if (i == max) {
            int r = vd_close(img, &e);
            if (r < 0)
                fprintf(stderr, "crash-writer: close: %s\n", e.msg);
            free(buf);
            close(lf);
            if (wl >= 0)
                close(wl);
            return r < 0;
        }
        struct op o = op_for(seed, i, size);
        int r;
        if (op_is_zero(seed, i)) {
            r = vd_pwrite_zeroes(img, o.off, o.len, zflags, &e);
        } else {
            fill(buf, &o, i);
            r = vd_pwrite(img, buf, o.len, o.off, &e);
        }
        if (r < 0) {
            fprintf(stderr, "crash-writer: write %" PRIu64 ": %s\n", i, e.msg);
            return 1;
        }
        if ((i + 1) % every == 0) {
            if (vd_flush(img, &e) < 0) {
                fprintf(stderr, "crash-writer: flush: %s\n", e.msg);
                return 1;
            }
            char line[32];
            int n = snprintf(line, sizeof line, "%" PRIu64 "\n", i + 1);
            if (write(lf, line, (size_t)n) != n || fsync(lf) < 0)
                return 1;
            write_log_mark(wl, i + 1);
        }
    }
}

/* The shadow: SIZE zero bytes, in huge pages where the kernel gives them
 * (transparent huge pages on request) and faulted in with one call.  A
 * calloc'd buffer took a fault per 4 KiB page on first touch, 4096 for a
 * 16 MiB image: with hundreds of verifies a run (crash-consistency,
 * power-loss), half of a verify's CPU time (0.11 -> 0.055 s plain).  Both
 * madvise calls are requests; an older kernel that refuses them gives the
 * same zeroes page by page. */
static uint8_t *shadow_alloc(uint64_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    madvise(p, size, MADV_HUGEPAGE);
#ifdef MADV_POPULATE_WRITE
    madvise(p, size, MADV_POPULATE_WRITE);
#endif
    return p;
}

/* Whether byte K may differ: one of the EVERY writes in flight at the kill
 * (FL) touched it.  A list, not a map the size of the image: asked only of
 * bytes that differ. */
static bool in_flight(const struct op *fl, uint64_t every, uint64_t k)
{
    for (uint64_t i = 0; i < every; i++)
        if (k >= fl[i].off && k < fl[i].off + fl[i].len)
            return true;
    return false;
}

static int do_verify(const char *img_path, uint64_t seed, uint64_t done, uint64_t every,
                     const char *base, FILE *msg)
{
    vd_image *img;
    vd_error e;
    if (vd_open(img_path, &(vd_open_opts){ .readonly = true }, &img, &e) < 0) {
        fprintf(msg, "crash-writer: reopen: %s\n", e.msg);
        return 1;
    }
    /* The shadow is the one image-sized buffer; the image is read 1 MiB at
     * a time (hundreds of trials a run, many under ASan: the page faults of
     * three image-sized buffers were most of a verify's time). */
    uint64_t size = vd_size(img);
    uint8_t *shadow = shadow_alloc(size), *got = malloc(CHUNK);
    struct op *fl = calloc(every, sizeof *fl);
    int rc = 0;
    if (!shadow || !got || !fl) {
        fprintf(msg, "crash-writer: out of memory for a %" PRIu64 "-byte shadow\n", size);
        rc = 2;
        goto out;
    }
    for (uint64_t i = 0; i < every; i++)
        fl[i] = op_for(seed, done + i, size);
    if (base) {
        /* A base smaller than the image (VHD rounds sizes up) reads as
         * zeroes past its end. */
        FILE *f = fopen(base, "rb");
        size_t n = f ? fread(shadow, 1, size, f) : 0;
        if (f)
            fclose(f);
        if (n == 0) {
            fprintf(msg, "crash-writer: cannot read base %s\n", base);
            rc = 2;
            goto out;
        }
    }
    for (uint64_t i = 0; i < done; i++) {
        struct op o = op_for(seed, i, size);
        if (op_is_zero(seed, i)) {
            memset(shadow + o.off, 0, o.len);
        } else {
            fill(shadow + o.off, &o, i);
        }
    }
    /* Byte by byte only where a 4 KiB piece differs at all (memcmp skips
     * the rest fast, which matters under ASan: hundreds of trials a run).
     * The first differing byte outside the in-flight writes is the one
     * named. */
    for (uint64_t c = 0; c < size && !rc; c += CHUNK) {
        uint64_t cend = c + CHUNK < size ? c + CHUNK : size;
        if (vd_pread(img, got, cend - c, c, &e) < 0) {
            fprintf(msg, "crash-writer: read: %s\n", e.msg);
            rc = 1;
            break;
        }
        for (uint64_t p = c; p < cend && !rc; p += 4096) {
            uint64_t end = p + 4096 < cend ? p + 4096 : cend;
            if (!memcmp(got + (p - c), shadow + p, end - p))
                continue;
            for (uint64_t k = p; k < end; k++)
                if (got[k - c] != shadow[k] && !in_flight(fl, every, k)) {
                    fprintf(msg, "crash-writer: %s: byte 0x%" PRIx64 " is 0x%02x, expected "
                            "0x%02x (%" PRIu64 " writes were flushed)\n", img_path, k,
                            got[k - c], shadow[k], done);
                    rc = 1;
                    break;
                }
        }
    }
out:
    vd_close(img, NULL);
    if (shadow)
        munmap(shadow, size);
    free(got); free(fl);
    return rc;
}

/* The base of the backing layouts: byte i is (i * 7 + 3) & 0xff, a pattern
 * no zero write or fill repeats by chance. */
static int do_pattern(const char *path, uint64_t size)
{
    uint8_t block[4096];
    for (size_t k = 0; k < sizeof block; k++)
        block[k] = (uint8_t)(k * 7 + 3);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return 1;
    }
    for (uint64_t p = 0; p < size; p += sizeof block)
        if (fwrite(block, 1, size - p < sizeof block ? size - p : sizeof block, f) == 0)
            break;
    if (fclose(f) != 0) {
        perror(path);
        return 1;
    }
    return 0;
}

/* `vdconvert check IMG` without its output format: vd_check's verdict as
 * that command's exit status, the first problem and the counts on MSG. */
static int do_check(const char *img_path, FILE *msg)
{
    vd_image *img;
    vd_error e;
    vd_check_result res;
    if (vd_open(img_path, &(vd_open_opts){ .readonly = true }, &img, &e) < 0) {
        fprintf(msg, "crash-writer: check: %s\n", e.msg);
        return 1;
    }
    int r = vd_check(img, 0, &res, &e), rc;
    if (r == -ENOTSUP) {
        fprintf(msg, "crash-writer: %s: format %s does not support checks\n", img_path,
                vd_format_name(img));
        rc = 63;
    } else if (r < 0) {
        fprintf(msg, "crash-writer: check: %s\n", e.msg);
        rc = 1;
    } else {
        if (res.first_problem[0] && (res.corruptions || res.leaks))
            fprintf(msg, "%s\n", res.first_problem);
        fprintf(msg, "check: %" PRIu64 " corruptions, %" PRIu64 " leaked clusters\n",
                res.corruptions, res.leaks);
        rc = res.corruptions ? 2 : res.leaks ? 3 : 0;
    }
    if (vd_close(img, &e) < 0 && rc == 0) {
        fprintf(msg, "crash-writer: close: %s\n", e.msg);
        rc = 1;
    }
    return rc;
}

/* The requests of `serve` on stdin, each answered on stdout with the
 * command's messages and "end RC". */
static int do_serve(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        char *w[7] = { 0 };
        int n = 0;
        if (line[len - 1] == '\n')
            line[len - 1] = '\0';
        for (char *p = line; p && n < 7; n++) {
            w[n] = p;
            p = strchr(p, '\t');
            if (p)
                *p++ = '\0';
        }
        int rc = 2;
        if ((n == 5 || n == 6) && !strcmp(w[0], "verify"))
            rc = do_verify(w[1], strtoull(w[2], NULL, 10), strtoull(w[3], NULL, 10),
                           strtoull(w[4], NULL, 10), n == 6 ? w[5] : NULL, stdout);
        else if (n == 2 && !strcmp(w[0], "check"))
            rc = do_check(w[1], stdout);
        else
            printf("crash-writer: serve: not a request: '%s' (%d words)\n", w[0], n);
        printf("end %d\n", rc);
        if (fflush(stdout) != 0)
            break;
    }
    free(line);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && !strcmp(argv[1], "write"))
        return do_write(argv[2], strtoull(argv[3], NULL, 10), argv[4],
                        argc > 5 ? strtoull(argv[5], NULL, 10) : 8);
    if (argc >= 5 && !strcmp(argv[1], "verify"))
        return do_verify(argv[2], strtoull(argv[3], NULL, 10), strtoull(argv[4], NULL, 10),
                         argc > 5 ? strtoull(argv[5], NULL, 10) : 8, argc > 6 ? argv[6] : NULL,
                         stderr);
    if (argc == 2 && !strcmp(argv[1], "serve"))
        return do_serve();
    if (argc == 4 && !strcmp(argv[1], "pattern"))
        return do_pattern(argv[2], strtoull(argv[3], NULL, 0));
    fprintf(stderr, "usage: crash-writer write IMG SEED LOG [EVERY] | verify IMG SEED DONE [EVERY] [BASE]"
            " | serve | pattern OUT SIZE\n");
    return 2;
}
