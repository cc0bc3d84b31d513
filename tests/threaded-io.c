/* threaded-io - many threads reading one handle while another writes.
 *
 *   threaded-io IMG REF.raw [THREADS] [WRITES] [READS]
 * IMG is a writable image whose guest content equals REF.raw.  One writer
 * thread rewrites 4 KiB blocks of the first half with a pattern that names
 * the block and a generation; reader threads read random ranges: the second
 * half must equal REF exactly, and every 4 KiB block of the first half must
 * be either REF's block or a complete writer pattern (no torn or mixed
 * blocks).  Reopened afterwards, every block must hold the last pattern
 * written to it.  Run under TSan in CI (test.sh).  Exit 0 ok, 1 mismatch.
 *
 * The work is counted, not timed: each reader makes READS reads (default
 * 1500), and the writer writes from before the first read until every
 * reader is done and it has written WRITES blocks (default 1000).  So every
 * read overlaps the writer, and a run does the same reads on a fast or a
 * loaded machine and in every build (a timed run did 10x fewer under TSan
 * than plain, and a writer starved by the readers wrote 273 blocks in 2 s). */
#include "vdisk.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLK 4096u

static vd_image *img;
static uint8_t *ref;
static uint64_t size;
static atomic_int failed, readers_left;
static atomic_long reads_done, writes_done;
static long min_writes, reads_each;
static uint32_t *last_gen;     /* writer: the generation each block holds last (0: REF) */

static void writer_pattern(uint8_t *b, uint64_t blk, uint32_t gen)
{
    for (unsigned i = 0; i < BLK; i += 16) {
        memcpy(b + i, "VDWR", 4);
        memcpy(b + i + 4, &blk, 8);
        memcpy(b + i + 12, &gen, 4);
    }
}

static bool block_ok(const uint8_t *b, uint64_t blk)
{
    if (!memcmp(b, ref + blk * BLK, BLK))
        return true;
    uint32_t gen;
    memcpy(&gen, b + 12, 4);
    uint8_t want[BLK];
    writer_pattern(want, blk, gen);
    return !memcmp(b, want, BLK);
}

static void *writer(void *arg)
{
    (void)arg;
    uint8_t b[BLK];
    uint64_t half = size / 2 / BLK;
    unsigned seed = 1;
    for (uint32_t gen = 1; !atomic_load(&failed) &&
         (atomic_load(&writes_done) < min_writes || atomic_load(&readers_left) > 0); gen++) {
        uint64_t blk = (uint64_t)rand_r(&seed) % half;
        writer_pattern(b, blk, gen);
        vd_error e;
        if (vd_pwrite(img, b, BLK, blk * BLK, &e) < 0) {
            fprintf(stderr, "threaded-io: write: %s\n", e.msg);
            atomic_store(&failed, 1);
            break;
        }
        last_gen[blk] = gen;
        atomic_fetch_add(&writes_done, 1);
    }
    return NULL;
}

/* After the run, reopened: every block of the first half holds the last
 * pattern written to it (or REF's data): a write the format dropped or lost
 * at close fails here even though each read during the run looked whole. */
static int final_check(const char *path)
{
    vd_image *ro;
    vd_error e;
    if (vd_open(path, &(vd_open_opts){ .readonly = true }, &ro, &e) < 0) {
        fprintf(stderr, "threaded-io: reopen: %s\n", e.msg);
        return -1;
    }
    uint8_t b[BLK], want[BLK];
    int bad = 0;
    for (uint64_t blk = 0; blk < size / 2 / BLK && !bad; blk++) {
        if (vd_pread(ro, b, BLK, blk * BLK, &e) < 0) {
            fprintf(stderr, "threaded-io: reread: %s\n", e.msg);
            bad = 1;
            break;
        }
        if (last_gen[blk])
            writer_pattern(want, blk, last_gen[blk]);
        else
            memcpy(want, ref + blk * BLK, BLK);
        if (memcmp(b, want, BLK)) {
            fprintf(stderr, "threaded-io: block %" PRIu64 " does not hold its last write "
                    "(generation %u) after reopening\n", blk, last_gen[blk]);
            bad = 1;
        }
    }
    vd_close(ro, NULL);
    return bad ? -1 : 0;
}

static void *reader(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    uint8_t *b = malloc(16 * BLK);
    for (long n = 0; n < reads_each && !atomic_load(&failed); n++) {
        uint64_t nblk = 1 + (uint64_t)rand_r(&seed) % 16;
        uint64_t blk = (uint64_t)rand_r(&seed) % (size / BLK - nblk);
        vd_error e;
        if (vd_pread(img, b, nblk * BLK, blk * BLK, &e) < 0) {
            fprintf(stderr, "threaded-io: read: %s\n", e.msg);
            atomic_store(&failed, 1);
            break;
        }
        for (uint64_t k = 0; k < nblk; k++) {
            uint64_t x = blk + k;
            bool ok = x < size / 2 / BLK ? block_ok(b + k * BLK, x)
                                         : !memcmp(b + k * BLK, ref + x * BLK, BLK);
            if (!ok) {
                fprintf(stderr, "threaded-io: block %" PRIu64 " torn or wrong\n", x);
                atomic_store(&failed, 1);
            }
        }
        atomic_fetch_add(&reads_done, 1);
    }
    atomic_fetch_sub(&readers_left, 1);
    free(b);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: threaded-io IMG REF.raw [THREADS] [WRITES] [READS]\n");
        return 2;
    }
    int nthreads = argc > 3 ? atoi(argv[3]) : 8;
    min_writes = argc > 4 ? atol(argv[4]) : 1000;
    reads_each = argc > 5 ? atol(argv[5]) : 1500;
    vd_error e;
    if (vd_open(argv[1], NULL, &img, &e) < 0) {
        fprintf(stderr, "threaded-io: %s\n", e.msg);
        return 1;
    }
    size = vd_size(img);
    /* The image may be larger than REF (VHD rounds to its CHS geometry):
     * the rest reads as zeroes. */
    FILE *f = fopen(argv[2], "rb");
    ref = calloc(1, size);
    if (!f || fread(ref, 1, size, f) == 0) {
        fprintf(stderr, "threaded-io: cannot read %s\n", argv[2]);
        return 2;
    }
    fclose(f);
    last_gen = calloc(size / 2 / BLK + 1, sizeof *last_gen);
    pthread_t w, r[64];
    if (nthreads > 64)
        nthreads = 64;
    if (nthreads < 1)
        nthreads = 1;
    atomic_store(&readers_left, nthreads);
    pthread_create(&w, NULL, writer, NULL);
    for (int i = 0; i < nthreads; i++)
        pthread_create(&r[i], NULL, reader, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < nthreads; i++)
        pthread_join(r[i], NULL);
    pthread_join(w, NULL);
    int rc = vd_close(img, &e) < 0 ? 1 : 0;
    if (rc == 0 && !atomic_load(&failed) && final_check(argv[1]) < 0)
        atomic_store(&failed, 1);
    printf("%s: %ld reads, %ld writes, %s\n", argv[1], atomic_load(&reads_done),
           atomic_load(&writes_done), atomic_load(&failed) ? "FAILED" : "ok");
    free(ref);
    free(last_gen);
    return atomic_load(&failed) || rc;
}
