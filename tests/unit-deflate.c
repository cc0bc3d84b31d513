/* unit-deflate.c - cmocka tests of libvdisk/deflate.c: every level reads
 * back through zlib (the inflater qemu uses) with the window the format
 * asks for, stored blocks for random data, "does not fit", vd_inflate
 * on good, corrupt and short input, and the incompressible-data test. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "vd-driver.h"

#define LEN 65536

/* Text-like data whose repeats lie 3000 and 6000 bytes back: a compressor
 * that ignores a 4 KiB window limit uses the far ones. */
static unsigned char *make_data(void)
{
    unsigned char *d = malloc(LEN);
    unsigned x = 12345;
    for (size_t i = 0; i < LEN; i++) {
        x = x * 1103515245 + 12345;
        d[i] = i >= 6000 && (x >> 16) % 3 == 0 ? d[i - 6000]
             : i >= 3000 && (x >> 16) % 3 == 1 ? d[i - 3000] : 'a' + (x >> 20) % 26;
    }
    return d;
}

/* Inflate with zlib at `wbits` (negative: raw deflate). */
static int zlib_inflate(const unsigned char *in, size_t n, unsigned char *out, int wbits)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, wbits) != Z_OK)
        return -1;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = LEN;
    int r = inflate(&z, Z_FINISH);
    size_t got = LEN - z.avail_out;
    inflateEnd(&z);
    return r == Z_STREAM_END && got == LEN ? 0 : -1;
}

static void test_levels_windows(void **state)
{
    (void)state;
    unsigned char *d = make_data(), *c = malloc(2 * LEN), *back = malloc(LEN);
    for (int level = VD_DEFLATE_MIN_LEVEL; level <= VD_DEFLATE_MAX_LEVEL; level++) {
        /* qcow2: raw deflate, 4 KiB window */
        vd_deflater *z = vd_deflater_new(level, 12, false);
        assert_non_null(z);
        for (int round = 0; round < 2; round++) {      /* reused state */
            size_t n = vd_deflate(z, d, LEN, c, 2 * LEN);
            assert_true(n > 0 && n < LEN * 3 / 4);
            assert_int_equal(zlib_inflate(c, n, back, -12), 0);
            assert_memory_equal(back, d, LEN);
            memset(back, 0, LEN);
            size_t got = 0;
            assert_int_equal(vd_inflate(c, n, back, LEN, false, &got), 0);
            assert_int_equal(got, LEN);
            assert_memory_equal(back, d, LEN);
        }
        vd_deflater_free(z);
        /* VMDK grains: zlib-wrapped, 32 KiB window */
        z = vd_deflater_new(level, 15, true);
        assert_non_null(z);
        size_t n = vd_deflate(z, d, LEN, c, 2 * LEN);
        assert_true(n > 0);
        assert_int_equal(zlib_inflate(c, n, back, 15), 0);
        assert_memory_equal(back, d, LEN);
        vd_deflater_free(z);
    }
    free(d);
    free(c);
    free(back);
}

static void test_stored_and_overflow(void **state)
{
    (void)state;
    unsigned char *d = malloc(LEN), *c = malloc(2 * LEN), *back = malloc(LEN);
    for (size_t i = 0; i < LEN; i++)
        d[i] = (unsigned char)((i * 2654435761u) >> 13);
    vd_deflater *z = vd_deflater_new(0, 15, true);
    size_t n = vd_deflate(z, d, LEN, c, 2 * LEN);
    assert_true(n >= LEN && n < LEN + 64);
    assert_int_equal(zlib_inflate(c, n, back, 15), 0);
    assert_memory_equal(back, d, LEN);
    assert_int_equal(vd_deflate(z, d, LEN, c, LEN / 2), 0);     /* does not fit */
    vd_deflater_free(z);
    z = vd_deflater_new(3, 12, false);
    assert_int_equal(vd_deflate(z, d, LEN, c, 100), 0);
    vd_deflater_free(z);
    free(d);
    free(c);
    free(back);
}

static void test_inflate_bad(void **state)
{
    (void)state;
    unsigned char *d = make_data(), *c = malloc(2 * LEN), *back = malloc(LEN);
    vd_deflater *z = vd_deflater_new(4, 15, true);
    size_t n = vd_deflate(z, d, LEN, c, 2 * LEN), got = 0;
    vd_deflater_free(z);
    memset(c + n, 0xab, 100);              /* padding after the stream: ignored */
    assert_int_equal(vd_inflate(c, n + 100, back, LEN, true, &got), 0);
    assert_int_equal(got, LEN);
    assert_int_equal(vd_inflate(c, n / 2, back, LEN, true, &got), -EIO);   /* truncated */
    assert_int_equal(vd_inflate(c, n, back, LEN - 1, true, &got), -EIO);   /* too long */
    c[n - 1] ^= 1;                                                         /* checksum */
    assert_int_equal(vd_inflate(c, n, back, LEN, true, &got), -EIO);
    free(d);
    free(c);
    free(back);
}

/* vd_looks_incompressible counts every byte (four histograms, merged):
 * 8 bits per byte is incompressible, 7 is not, whatever the length's
 * remainder by 4; below 4 KiB it never says so. */
static void test_incompressible(void **state)
{
    (void)state;
    unsigned char *d = malloc(LEN), *t = make_data();
    unsigned x = 99;
    for (size_t i = 0; i < LEN; i++) {
        x = x * 1103515245 + 12345;
        d[i] = (unsigned char)(x >> 16);
    }
    assert_true(vd_looks_incompressible(d, LEN));        /* pseudo-random */
    assert_false(vd_looks_incompressible(t, LEN));       /* text */
    for (size_t i = 0; i < LEN; i++)
        d[i] = (unsigned char)(i * 7);                   /* all 256 values alike: 8 bits */
    assert_true(vd_looks_incompressible(d, LEN));
    assert_true(vd_looks_incompressible(d, 4099));
    assert_false(vd_looks_incompressible(d, 4095));
    for (size_t i = 0; i < LEN; i++)
        d[i] = (unsigned char)((i * 7) & 127);           /* 128 values: 7 bits */
    assert_false(vd_looks_incompressible(d, LEN));
    assert_false(vd_looks_incompressible(d, 4099));
    free(d);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels_windows),
        cmocka_unit_test(test_stored_and_overflow),
        cmocka_unit_test(test_inflate_bad),
        cmocka_unit_test(test_incompressible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
