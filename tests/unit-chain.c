/* unit-chain.c - cmocka tests of what the core owns in a backing chain:
 * reads falling through to the backing image, copy-on-write of partial
 * cluster writes (with the core's alignment splitting), zero ranges, a
 * backing image shorter than its overlay, and block status merged across
 * layers with the right depth.
 *
 * The overlay is a small in-memory test driver ("memlayer": 4 KiB clusters,
 * 512-byte alignment) so that the core is tested on its own; the base is a
 * real raw file opened through vd_open. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "vd-driver.h"

#define ML_CLUSTER 4096u

struct memlayer {
    uint8_t *data;
    uint8_t *state;    /* per cluster: 0 unallocated, 1 data, 2 zero */
};

static int ml_pread(vd_image *img, void *buf, size_t len, uint64_t off, vd_error *err)
{
    struct memlayer *m = img->priv;
    uint8_t *p = buf;
    while (len) {
        uint64_t c = off / ML_CLUSTER;
        size_t in = ML_CLUSTER - off % ML_CLUSTER;
        size_t n = len < in ? len : in;
        int r = 0;
        if (m->state[c] == 1)
            memcpy(p, m->data + off, n);
        else if (m->state[c] == 2)
            memset(p, 0, n);
        else
            r = vd_backing_pread(img, p, n, off, err);
        if (r < 0)
            return r;
        p += n; off += n; len -= n;
    }
    return 0;
}

static int ml_pwrite(vd_image *img, const void *buf, size_t len, uint64_t off, vd_error *err)
{
    struct memlayer *m = img->priv;
    const uint8_t *p = buf;
    assert_int_equal(off % 512, 0);            /* the core aligned it */
    assert_true(len % 512 == 0 || off + len == img->size);
    while (len) {
        uint64_t c = off / ML_CLUSTER;
        size_t in = ML_CLUSTER - off % ML_CLUSTER;
        size_t n = len < in ? len : in;
        if (m->state[c] == 0 && n < ML_CLUSTER) {   /* copy-on-write */
            int r = vd_backing_pread(img, m->data + c * ML_CLUSTER, ML_CLUSTER,
                                     c * ML_CLUSTER, err);
            if (r < 0)
                return r;
        } else if (m->state[c] == 2) {
            memset(m->data + c * ML_CLUSTER, 0, ML_CLUSTER);
        }
        m->state[c] = 1;
        memcpy(m->data + off, p, n);
        p += n; off += n; len -= n;
    }
    return 0;
}

static int ml_block_status(vd_image *img, uint64_t off, uint64_t len, vd_extents *ext,
                           vd_error *err)
{
    (void)err;
    struct memlayer *m = img->priv;
    uint64_t end = off + len;
    while (off < end) {
        uint64_t c = off / ML_CLUSTER;
        uint64_t n = ML_CLUSTER - off % ML_CLUSTER;
        if (n > end - off)
            n = end - off;
        static const uint32_t flags[] = { VD_LAYER_UNALLOC, VD_LAYER_DATA, VD_LAYER_ZERO };
        int r = vd_extents_add(ext, off, n, flags[m->state[c]], 0,
                               m->state[c] == 1 ? off : VD_NO_OFFSET);
        if (r < 0)
            return r;
        off += n;
    }
    return 0;
}

static const struct vd_driver ml_driver = {
    .name = "memlayer", .align = 512,
    .pread = ml_pread, .pwrite = ml_pwrite, .block_status = ml_block_status,
    .can_write = VD_CAN_NATIVE,
};

static char base_path[] = "/tmp/vdchainXXXXXX";
#define BASE_SIZE (64u * 1024)

static uint8_t pattern(uint64_t off) { return (uint8_t)(off * 13 + (off >> 9)); }

/* An overlay of `size` bytes over the raw base. */
static vd_image *make_overlay(uint64_t size)
{
    vd_image *img = calloc(1, sizeof *img);
    struct memlayer *m = calloc(1, sizeof *m);
    m->data = calloc(1, size);
    m->state = calloc(1, size / ML_CLUSTER + 1);
    pthread_rwlock_init(&img->lock, NULL);
    img->drv = &ml_driver;
    img->priv = m;
    img->size = size;
    img->path = strdup("overlay");
    vd_error err;
    assert_int_equal(vd_open(base_path, &(vd_open_opts){ .readonly = true, .format = "raw" },
                             &img->backing, &err), 0);
    return img;
}

static void free_overlay(vd_image *img)
{
    struct memlayer *m = img->priv;
    free(m->data); free(m->state); free(m);
    img->priv = NULL;
    img->readonly = true;     /* nothing to flush */
    vd_close(img, NULL);
}

static int setup(void **state)
{
    (void)state;
    int fd = mkstemp(base_path);
    uint8_t *buf = malloc(BASE_SIZE);
    for (uint64_t i = 0; i < BASE_SIZE; i++)
        buf[i] = pattern(i);
    assert_int_equal(write(fd, buf, BASE_SIZE), BASE_SIZE);
    close(fd);
    free(buf);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(base_path);
    return 0;
}

static void test_fall_through_and_cow(void **state)
{
    (void)state;
    vd_image *img = make_overlay(BASE_SIZE);
    vd_error err;
    uint8_t *buf = malloc(BASE_SIZE);
    assert_int_equal(vd_pread(img, buf, BASE_SIZE, 0, &err), 0);
    for (uint64_t i = 0; i < BASE_SIZE; i++)
        assert_int_equal(buf[i], pattern(i));

    /* An unaligned 100-byte write inside cluster 1: the core splits it into
     * 512-byte read-modify-write, the driver copies the cluster from below. */
    uint8_t w[100];
    memset(w, 0xEE, sizeof w);
    assert_int_equal(vd_pwrite(img, w, sizeof w, 5000, &err), 0);
    assert_int_equal(vd_pread(img, buf, BASE_SIZE, 0, &err), 0);
    for (uint64_t i = 0; i < BASE_SIZE; i++)
        assert_int_equal(buf[i], i >= 5000 && i < 5100 ? 0xEE : pattern(i));

    vd_extents ext;
    vd_extents_init(&ext);
    assert_int_equal(vd_block_status(img, 0, BASE_SIZE, &ext, &err), 0);
    assert_int_equal(ext.n, 3);
    assert_int_equal(ext.v[0].depth, 1);          /* cluster 0: the base */
    assert_int_equal(ext.v[0].len, 4096);
    assert_int_equal(ext.v[0].flags, VD_EXT_DATA);
    assert_int_equal(ext.v[1].depth, 0);          /* cluster 1: the overlay */
    assert_int_equal(ext.v[1].off, 4096);
    assert_int_equal(ext.v[1].len, 4096);
    assert_int_equal(ext.v[2].depth, 1);
    assert_int_equal(ext.v[2].off + ext.v[2].len, BASE_SIZE);
    vd_extents_free(&ext);
    free(buf);
    free_overlay(img);
}

static void test_zero_and_short_backing(void **state)
{
    (void)state;
    vd_image *img = make_overlay(2 * BASE_SIZE);    /* base covers half */
    struct memlayer *m = img->priv;
    m->state[4] = 2;                                /* cluster 4 explicitly zero */
    vd_error err;
    uint8_t buf[8192];
    assert_int_equal(vd_pread(img, buf, 8192, 3 * 4096, &err), 0);
    for (int i = 0; i < 4096; i++)
        assert_int_equal(buf[i], pattern(3 * 4096 + i));
    assert_true(vd_is_zero(buf + 4096, 4096));
    /* across the end of the base: base bytes then zeroes */
    assert_int_equal(vd_pread(img, buf, 8192, BASE_SIZE - 4096, &err), 0);
    for (int i = 0; i < 4096; i++)
        assert_int_equal(buf[i], pattern(BASE_SIZE - 4096 + i));
    assert_true(vd_is_zero(buf + 4096, 4096));

    vd_extents ext;
    vd_extents_init(&ext);
    assert_int_equal(vd_block_status(img, 0, 2 * BASE_SIZE, &ext, &err), 0);
    /* [0,16K) base data, [16K,20K) zero in the overlay, [20K,64K) base data,
     * [64K,128K) in no layer */
    assert_int_equal(ext.n, 4);
    assert_int_equal(ext.v[1].flags, VD_EXT_ZERO);
    assert_int_equal(ext.v[1].depth, 0);
    assert_int_equal(ext.v[3].off, BASE_SIZE);
    assert_int_equal(ext.v[3].flags, VD_EXT_ZERO | VD_EXT_HOLE);
    assert_int_equal(ext.v[3].depth, -1);
    vd_extents_free(&ext);

    /* a write past the base's end lands in the overlay, with zero COW fill */
    uint8_t w[512];
    memset(w, 7, sizeof w);
    assert_int_equal(vd_pwrite(img, w, 512, BASE_SIZE + 1024, &err), 0);
    assert_int_equal(vd_pread(img, buf, 4096, BASE_SIZE, &err), 0);
    assert_true(vd_is_zero(buf, 1024));
    assert_int_equal(buf[1024], 7);
    assert_true(vd_is_zero(buf + 1536, 4096 - 1536));
    free_overlay(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fall_through_and_cow),
        cmocka_unit_test(test_zero_and_short_backing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
