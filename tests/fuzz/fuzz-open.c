/* fuzz-open.c - libFuzzer target: an image in memory is opened read-only
 * and exercised the way the tools use it: info, format details, snapshot
 * list, block status over the image, reads of what block status reports and
 * of fixed spots, and a consistency check.
 *
 * Built once per format with -DFUZZ_FORMAT="name" (the format is forced, so
 * a mutated magic still reaches that driver's parser) and once without it
 * (probing picks the driver).  The input is written to a file in a private
 * folder: the library opens paths, and names an image gives (extents,
 * descriptors) then resolve inside that empty folder.  Backing files are not
 * opened (no_backing).  Work per input is bounded so a slow input means a
 * real problem (libFuzzer -timeout), not a big virtual size. */
#include "vdisk.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>

#ifndef FUZZ_FORMAT
#define FUZZ_FORMAT NULL
#endif

#define FUZZ_MAX_STATUS_CALLS 64
#define FUZZ_MAX_READ (4u << 20)      /* bytes read per input, in total */
#define FUZZ_CHUNK (64u << 10)

static char fuzz_dir[256], fuzz_path[300];
static int fuzz_fd = -1;
static uint8_t fuzz_buf[FUZZ_CHUNK];

static void fuzz_cleanup(void)
{
    if (fuzz_fd >= 0)
        close(fuzz_fd);
    unlink(fuzz_path);
    rmdir(fuzz_dir);
}

static int fuzz_setup(void)
{
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/vdfuzz.XXXXXX", base);
    if (!mkdtemp(fuzz_dir))
        return -1;
    snprintf(fuzz_path, sizeof fuzz_path, "%s/img", fuzz_dir);
    fuzz_fd = open(fuzz_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fuzz_fd < 0)
        return -1;
    atexit(fuzz_cleanup);
    return 0;
}

static void fuzz_kv(void *ctx, const char *key, const char *value)
{
    /* Touch the strings so a dangling pointer shows under ASan. */
    size_t *n = ctx;
    *n += strlen(key) + strlen(value);
}

static void fuzz_read(vd_image *img, uint64_t off, uint64_t len, uint64_t *budget)
{
    uint64_t size = vd_size(img);
    if (off >= size)
        return;
    if (len > size - off)
        len = size - off;
    if (len > FUZZ_CHUNK)
        len = FUZZ_CHUNK;
    if (len > *budget)
        len = *budget;
    if (!len)
        return;
    *budget -= len;
    vd_pread(img, fuzz_buf, (size_t)len, off, NULL);
}

static void fuzz_walk(vd_image *img, uint64_t *budget)
{
    vd_extents ext;
    vd_extents_init(&ext);
    uint64_t off = 0, size = vd_size(img);
    for (int i = 0; i < FUZZ_MAX_STATUS_CALLS && off < size; i++) {
        vd_extents_clear(&ext);
        if (vd_block_status(img, off, size - off, &ext, NULL) < 0 || !ext.n)
            break;
        for (size_t k = 0; k < ext.n; k++)
            if (!(ext.v[k].flags & VD_EXT_ZERO))
                fuzz_read(img, ext.v[k].off, ext.v[k].len, budget);
        uint64_t end = ext.v[ext.n - 1].off + ext.v[ext.n - 1].len;
        if (end <= off)
            break;
        off = end;
    }
    vd_extents_free(&ext);
}

#ifdef FUZZ_COMPACT_VHDX
/* fuzz-vhdx-compact: a VHDX spreads its metadata over 9 MiB (regions 1 MiB
 * aligned, the first data block at 8 MiB in qemu's layout), which makes
 * whole-file inputs slow to mutate and run (fuzz-open-vhdx: ~400 inputs/s).
 * Here the input is only the first 16 KiB of each place that holds
 * metadata in qemu's layout (where all of qemu's non-zero metadata bytes
 * are), written to those offsets of a 9 MiB file; everything else is a
 * hole (zeroes).  A mutated region table or BAT may still point anywhere. */
static const uint64_t compact_at[] = {
    0, 64 << 10, 128 << 10, 192 << 10, 256 << 10,  /* identifier, headers, region tables */
    1 << 20,                                       /* log */
    2 << 20,                                       /* BAT */
    3 << 20, (3 << 20) + (64 << 10),               /* metadata table and items */
    8 << 20,                                       /* first data block */
};
#define COMPACT_PIECE (16u << 10)
#define COMPACT_FILE (9ull << 20)
static const uint8_t compact_zero[COMPACT_PIECE];

static void fuzz_store(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < sizeof compact_at / sizeof compact_at[0]; i++) {
        size_t from = i * COMPACT_PIECE;
        size_t n = size > from ? size - from : 0;
        if (n > COMPACT_PIECE)
            n = COMPACT_PIECE;
        if ((n && pwrite(fuzz_fd, data + from, n, (off_t)compact_at[i]) != (ssize_t)n) ||
            pwrite(fuzz_fd, compact_zero, COMPACT_PIECE - n, (off_t)(compact_at[i] + n)) !=
                (ssize_t)(COMPACT_PIECE - n))
            abort();
    }
    if (ftruncate(fuzz_fd, (off_t)COMPACT_FILE) < 0)
        abort();
}
#else
static void fuzz_store(const uint8_t *data, size_t size)
{
    /* Overwrite, then cut to size: truncating to 0 first would free and
     * reallocate every page of a multi-MiB input on each run. */
    if (pwrite(fuzz_fd, data, size, 0) != (ssize_t)size || ftruncate(fuzz_fd, (off_t)size) < 0)
        abort();
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fuzz_fd < 0 && fuzz_setup() < 0)
        abort();
    fuzz_store(data, size);
    vd_image *img;
    vd_error err;
    vd_open_opts o = { .format = FUZZ_FORMAT, .readonly = true, .no_backing = true };
    if (vd_open(fuzz_path, &o, &img, &err) < 0)
        return 0;
    vd_info info;
    vd_get_info(img, &info);
    size_t n = 0;
    vd_get_format_details(img, fuzz_kv, &n);
    vd_snapshot_info snaps[4];
    vd_list_snapshots(img, snaps, 4);

    uint64_t budget = FUZZ_MAX_READ, vsize = vd_size(img);
    fuzz_read(img, 0, FUZZ_CHUNK, &budget);
    fuzz_read(img, vsize / 2, 4096, &budget);
    fuzz_read(img, vsize > 4096 ? vsize - 4096 : 0, 4096, &budget);
    fuzz_walk(img, &budget);

    vd_check_result res;
    vd_check(img, 0, &res, &err);
    vd_close(img, NULL);
    return 0;
}
