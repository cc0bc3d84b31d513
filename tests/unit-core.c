/* unit-core.c - cmocka tests of the core: extents accumulator, option
 * parsing, path confinement, the overflow and zero helpers, UTF-16,
 * alignment (read-modify-write through a raw image), the part-by-part walk
 * of the drivers.  A backing chain's fall-through and block status are
 * unit-chain.c's. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "vd-driver.h"
#include "vd-internal.h"

static void test_extents_merge(void **state)
{
    (void)state;
    vd_extents e;
    vd_extents_init(&e);
    assert_int_equal(vd_extents_add(&e, 0, 512, VD_EXT_DATA, 0, 4096), 0);
    assert_int_equal(vd_extents_add(&e, 512, 512, VD_EXT_DATA, 0, 4608), 0);
    assert_int_equal(e.n, 1);          /* contiguous in guest and file */
    assert_int_equal(vd_extents_add(&e, 1024, 512, VD_EXT_DATA, 0, 9999), 0);
    assert_int_equal(e.n, 2);          /* file offset jumps */
    assert_int_equal(vd_extents_add(&e, 1536, 512, VD_EXT_ZERO, 0, VD_NO_OFFSET), 0);
    assert_int_equal(vd_extents_add(&e, 2048, 512, VD_EXT_ZERO, 1, VD_NO_OFFSET), 0);
    assert_int_equal(e.n, 4);          /* different depth */
    assert_int_equal(vd_extents_add(&e, 2560, 0, VD_EXT_ZERO, 1, VD_NO_OFFSET), 0);
    assert_int_equal(e.n, 4);          /* empty ignored */
    vd_extents_free(&e);
}

static void test_options(void **state)
{
    (void)state;
    vd_kvlist *kv;
    vd_error err;
    assert_int_equal(vd_kvlist_parse("cluster_size=64k,compat=1.1,name=a,,b", &kv, &err), 0);
    uint64_t v;
    assert_int_equal(vd_opt_size(kv, "cluster_size", 0, &v, &err), 0);
    assert_int_equal(v, 65536);
    assert_string_equal(vd_opt_str(kv, "name"), "a,b");
    assert_non_null(vd_kvlist_unused(kv));      /* compat not yet used */
    assert_string_equal(vd_opt_str(kv, "compat"), "1.1");
    assert_null(vd_kvlist_unused(kv));
    bool b;
    assert_int_equal(vd_opt_bool(kv, "missing", true, &b, &err), 0);
    assert_true(b);
    vd_kvlist_free(kv);
    assert_int_equal(vd_kvlist_parse("novalue", &kv, &err), -EINVAL);
    assert_int_equal(vd_parse_size("16X", &v), -EINVAL);
    assert_int_equal(vd_parse_size("16E", &v), -ERANGE);    /* 2^64 */
    assert_int_equal(vd_parse_size("1g", &v), 0);
    assert_int_equal(v, 1 << 30);
    assert_int_equal(vd_parse_size("17179869184T", &v), -ERANGE);
    assert_int_equal(vd_parse_size("2M", &v), 0);
    assert_int_equal(v, 2 << 20);
}

static void test_confinement(void **state)
{
    (void)state;
    char *p = NULL;
    vd_error err;
    assert_int_equal(vd_resolve_related("/x/img.vmdk", "img-flat.vmdk", false, &p, &err), 0);
    assert_string_equal(p, "/x/img-flat.vmdk");
    free(p);
    assert_int_equal(vd_resolve_related("/x/img.vmdk", "sub/../a", false, &p, &err), 0);
    free(p);
    assert_int_equal(vd_resolve_related("/x/img.vmdk", "../etc/passwd", false, &p, &err), -EPERM);
    assert_non_null(strstr(err.msg, "leaves the image's folder"));
    assert_int_equal(vd_resolve_related("/x/img.vmdk", "/etc/passwd", false, &p, &err), -EPERM);
    assert_int_equal(vd_resolve_related("/x/img.vmdk", "a/../../b", false, &p, &err), -EPERM);
    assert_int_equal(vd_resolve_related("/x/img.vmdk", "/etc/passwd", true, &p, &err), 0);
    free(p);
}

static void test_overflow_helpers(void **state)
{
    (void)state;
    uint64_t r;
    assert_true(vd_mul_overflow(UINT64_MAX / 2 + 1, 2, &r));
    assert_false(vd_mul_overflow(1ull << 31, 1ull << 31, &r));
    assert_true(vd_add_overflow(UINT64_MAX, 1, &r));
    assert_true(vd_is_zero("\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 20));
    char buf[100] = { 0 };
    buf[99] = 1;
    assert_false(vd_is_zero(buf, 100));
    assert_true(vd_is_zero(buf, 99));
}

/* The one UTF-16 converter: pairs, both byte orders, and every kind of
 * invalid input refused with its place. */
static void test_utf16(void **state)
{
    (void)state;
    /* "a", U+00E9, U+20AC, U+1F600 (a pair), NUL, then junk past the NUL */
    static const uint8_t le[] = { 'a', 0, 0xe9, 0, 0xac, 0x20, 0x3d, 0xd8, 0x00, 0xde,
                                  0, 0, 0x00, 0xdc };
    const char *utf8 = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    char *s;
    size_t bad = 99, used;
    assert_int_equal(vd_utf16_decode(le, sizeof le, 0, &s, &bad), 0);
    assert_string_equal(s, utf8);
    free(s);
    uint8_t be[sizeof le];
    for (size_t i = 0; i < sizeof le; i += 2) {
        be[i] = le[i + 1];
        be[i + 1] = le[i];
    }
    assert_int_equal(vd_utf16_decode(be, sizeof be, VD_UTF16_BE, &s, NULL), 0);
    assert_string_equal(s, utf8);
    free(s);
    assert_int_equal(vd_utf16_decode(le, 0, 0, &s, NULL), 0);    /* empty */
    assert_string_equal(s, "");
    free(s);
    /* odd length; a high surrogate cut off at the end, followed by a
     * non-surrogate, or a low one alone */
    assert_int_equal(vd_utf16_decode(le, 5, 0, &s, &bad), -EILSEQ);
    assert_null(s);
    assert_int_equal(bad, 4);
    assert_int_equal(vd_utf16_decode(le, 8, 0, &s, &bad), -EILSEQ);
    assert_int_equal(bad, 6);
    static const uint8_t hi_a[] = { 0x3d, 0xd8, 'a', 0 }, lo[] = { 'b', 0, 0x00, 0xdc };
    assert_int_equal(vd_utf16_decode(hi_a, sizeof hi_a, 0, &s, &bad), -EILSEQ);
    assert_int_equal(bad, 0);
    assert_int_equal(vd_utf16_decode(lo, sizeof lo, 0, &s, &bad), -EILSEQ);
    assert_int_equal(bad, 2);

    uint8_t out[16];
    assert_int_equal(vd_utf16_encode(utf8, out, sizeof out, 0, &used, NULL), 0);
    assert_int_equal(used, 10);
    assert_memory_equal(out, le, 10);
    assert_int_equal(vd_utf16_encode(utf8, out, sizeof out, VD_UTF16_BE, &used, NULL), 0);
    assert_memory_equal(out, be, 10);
    /* the pair needs 4 bytes where 3 are left */
    assert_int_equal(vd_utf16_encode(utf8, out, 9, 0, &used, &bad), -ENOSPC);
    assert_int_equal(used, 0);
    assert_int_equal(bad, 6);
    /* not UTF-8: a Latin-1 byte, a stray continuation, overlong NUL, an
     * encoded surrogate, a cut sequence, past U+10FFFF */
    static const char *const invalid[] = { "ab\xe9", "ab\x80", "ab\xc0\x80", "ab\xed\xa0\x80",
                                           "ab\xe2\x82", "ab\xf4\x90\x80\x80" };
    for (size_t i = 0; i < sizeof invalid / sizeof *invalid; i++) {
        bad = 99;
        assert_int_equal(vd_utf16_encode(invalid[i], out, sizeof out, 0, &used, &bad), -EILSEQ);
        assert_int_equal(bad, 2);
    }
}

/* Unaligned and cross-boundary I/O through a raw image. */
static void test_raw_io(void **state)
{
    (void)state;
    char path[] = "/tmp/vdunitXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    unlink(path);
    vd_error err;
    assert_int_equal(vd_create(path, &(vd_create_opts){ .format = "raw", .size = 10000 }, &err), 0);
    vd_image *img;
    assert_int_equal(vd_open(path, NULL, &img, &err), 0);
    assert_string_equal(vd_format_name(img), "raw");
    char w[3000], r[3000];
    for (size_t i = 0; i < sizeof w; i++)
        w[i] = (char)(i * 7 + 1);
    assert_int_equal(vd_pwrite(img, w, sizeof w, 511, &err), 0);
    assert_int_equal(vd_pread(img, r, sizeof r, 511, &err), 0);
    assert_memory_equal(w, r, sizeof w);
    assert_int_equal(vd_pwrite_zeroes(img, 600, 100, 0, &err), 0);
    assert_int_equal(vd_pread(img, r, 100, 600, &err), 0);
    assert_true(vd_is_zero(r, 100));
    /* beyond the end */
    assert_int_equal(vd_pread(img, r, 2, 9999, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "beyond the virtual size"));
    vd_extents ext;
    vd_extents_init(&ext);
    assert_int_equal(vd_block_status(img, 0, 10000, &ext, &err), 0);
    assert_true(ext.n >= 1);
    assert_int_equal(ext.v[0].off, 0);
    uint64_t covered = 0;
    for (size_t i = 0; i < ext.n; i++)
        covered += ext.v[i].len;
    assert_int_equal(covered, 10000);
    vd_extents_free(&ext);
    assert_int_equal(vd_close(img, &err), 0);
    /* read-only open refuses writes */
    assert_int_equal(vd_open(path, &(vd_open_opts){ .readonly = true }, &img, &err), 0);
    assert_int_equal(vd_pwrite(img, w, 1, 0, &err), -EROFS);
    vd_close(img, NULL);
    unlink(path);
}

/* vd_walk: parts cut at block boundaries, a handler that stops short, a
 * failing handler stops the walk, one that handles nothing is an error. */
struct walk_log {
    uint64_t off[8], n[8], blk[8], in[8], done[8];
    unsigned k, shorten_to, fail_at;
};

static int walk_part(vd_image *img, struct vd_part *pt, void *ctx, vd_error *err)
{
    (void)img;
    struct walk_log *w = ctx;
    if (w->k == w->fail_at)
        return vd_set_error(err, -EIO, "part %u fails", w->k);
    if (w->shorten_to < pt->n)
        pt->n = w->shorten_to;
    if (pt->p)
        memset(pt->p, 'a' + (int)w->k, pt->n);
    w->off[w->k] = pt->off;
    w->n[w->k] = pt->n;
    w->blk[w->k] = pt->blk;
    w->in[w->k] = pt->in;
    w->done[w->k] = pt->done;
    w->k++;
    return 0;
}

static void test_walk(void **state)
{
    (void)state;
    vd_error err;
    uint8_t buf[300];
    struct walk_log w = { .shorten_to = UINT32_MAX, .fail_at = UINT32_MAX };
    /* [100, 400) in blocks of 128: 100..128, 128..256, 256..384, 384..400 */
    assert_int_equal(vd_walk(NULL, buf, 100, 300, 128, walk_part, &w, &err), 0);
    assert_int_equal(w.k, 4);
    static const uint64_t off[] = { 100, 128, 256, 384 }, n[] = { 28, 128, 128, 16 };
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(w.off[i], off[i]);
        assert_int_equal(w.n[i], n[i]);
        assert_int_equal(w.blk[i], off[i] / 128);
        assert_int_equal(w.in[i], off[i] % 128);
        assert_int_equal(w.done[i], off[i] - 100);
        assert_int_equal(buf[w.done[i]], 'a' + i);         /* p follows done */
    }
    /* no block size: the handler says how far it got (runs of 70) */
    w = (struct walk_log){ .shorten_to = 70, .fail_at = UINT32_MAX };
    assert_int_equal(vd_walk(NULL, NULL, 0, 200, 0, walk_part, &w, &err), 0);
    assert_int_equal(w.k, 3);
    assert_int_equal(w.n[2], 60);
    assert_int_equal(w.off[2], 140);
    /* the first failure ends the walk with its error */
    w = (struct walk_log){ .shorten_to = UINT32_MAX, .fail_at = 1 };
    assert_int_equal(vd_walk(NULL, NULL, 0, 1000, 100, walk_part, &w, &err), -EIO);
    assert_int_equal(w.k, 1);
    assert_string_equal(err.msg, "part 1 fails");
    /* a handler that handles nothing would loop for ever: refused */
    w = (struct walk_log){ .shorten_to = 0, .fail_at = UINT32_MAX };
    assert_int_equal(vd_walk(NULL, NULL, 0, 10, 0, walk_part, &w, &err), -EIO);
    assert_non_null(strstr(err.msg, "internal error"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_extents_merge),
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_confinement),
        cmocka_unit_test(test_overflow_helpers),
        cmocka_unit_test(test_utf16),
        cmocka_unit_test(test_raw_io),
        cmocka_unit_test(test_walk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
