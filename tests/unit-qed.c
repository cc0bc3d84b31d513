/* unit-qed.c - QED writes through the block API, judged by qemu-img.
 *
 *  - a QED child of a raw base: partial-cluster writes copy the rest of the
 *    cluster from the base, whole-cluster runs, in-place rewrites, zero
 *    clusters hiding base data; the base never changes; qemu-img compare
 *    and check agree with our expected content;
 *  - the need-check protocol: set on disk while metadata is in flight,
 *    cleared by flush/close;
 *  - an image left with NEED_CHECK and a bad L2 entry: read-only open works
 *    (the bad entry errors, check counts it), read-write open repairs it and
 *    qemu-img check is clean afterwards;
 *  - leaks are counted like qemu-img check counts them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <cmocka.h>

#include "vdisk.h"

#define MiB (1u << 20)
#define BASE_SIZE (4 * MiB)
#define CL 65536u

static char dir[256];

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static int run(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int r = system(cmd);
    return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

static void write_file(const char *name, const void *buf, size_t len)
{
    char p[512];
    path_in(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    fclose(f);
}

static uint8_t *read_file(const char *name, size_t len)
{
    char p[512];
    path_in(p, sizeof p, name);
    uint8_t *b = malloc(len);
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    assert_int_equal(fread(b, 1, len, f), len);
    fclose(f);
    return b;
}

static uint64_t qed_features(const char *name)
{
    uint8_t *h = read_file(name, 64);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | h[16 + i];
    free(h);
    return v;
}

static void fill(uint8_t *b, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        b[i] = (uint8_t)((i * 131 + seed * 7 + (i >> 9)) ^ seed);
}

static void do_write(vd_image *img, uint8_t *expect, uint64_t off, size_t len, unsigned seed)
{
    vd_error e;
    uint8_t *b = malloc(len);
    fill(b, len, seed);
    int r = vd_pwrite(img, b, len, off, &e);
    if (r)
        fail_msg("write at %llu: %s", (unsigned long long)off, e.msg);
    memcpy(expect + off, b, len);
    free(b);
}

static void do_zero(vd_image *img, uint8_t *expect, uint64_t off, size_t len)
{
    vd_error e;
    int r = vd_pwrite_zeroes(img, off, len, 0, &e);
    if (r)
        fail_msg("zero at %llu: %s", (unsigned long long)off, e.msg);
    memset(expect + off, 0, len);
}

static void assert_reads(vd_image *img, const uint8_t *expect, size_t len)
{
    vd_error e;
    uint8_t *b = malloc(len);
    int r = vd_pread(img, b, len, 0, &e);
    if (r)
        fail_msg("read: %s", e.msg);
    for (size_t i = 0; i < len; i++)
        if (b[i] != expect[i])
            fail_msg("byte %zu: got 0x%02x, expected 0x%02x", i, b[i], expect[i]);
    free(b);
}

static void test_child_writes(void **state)
{
    (void)state;
    uint8_t *base = malloc(BASE_SIZE), *expect = malloc(BASE_SIZE);
    fill(base, BASE_SIZE, 1);
    memcpy(expect, base, BASE_SIZE);
    write_file("base.raw", base, BASE_SIZE);

    char top[512];
    path_in(top, sizeof top, "top.qed");
    vd_error e;
    int r = vd_create(top, &(vd_create_opts){ .format = "qed", .backing_file = "base.raw" }, &e);
    if (r)
        fail_msg("create: %s", e.msg);
    assert_int_equal(qed_features("top.qed"), 0x1 | 0x4);   /* backing, raw */

    vd_image *img;
    r = vd_open(top, NULL, &img, &e);
    if (r)
        fail_msg("open: %s", e.msg);
    assert_int_equal(vd_size(img), BASE_SIZE);
    do_write(img, expect, 70000, 100, 2);              /* COW inside cluster 1 */
    assert_true(qed_features("top.qed") & 0x2);       /* need-check while dirty */
    do_write(img, expect, 1 * MiB, 3 * CL, 3);          /* whole new clusters */
    do_write(img, expect, 5 * CL - 10, 200, 4);         /* straddles two clusters */
    do_write(img, expect, 70050, 10, 5);                /* in place */
    do_zero(img, expect, 2 * MiB, CL);                  /* zero cluster over base */
    do_zero(img, expect, 3 * MiB + 10, 100);            /* partial zeroes: COW */
    do_zero(img, expect, 1 * MiB + CL, CL);             /* zero an allocated one */
    do_write(img, expect, BASE_SIZE - 512, 512, 6);     /* the very end */
    assert_reads(img, expect, BASE_SIZE);
    assert_int_equal(vd_flush(img, &e), 0);
    assert_false(qed_features("top.qed") & 0x2);
    assert_int_equal(vd_close(img, &e), 0);

    uint8_t *b2 = read_file("base.raw", BASE_SIZE);
    assert_memory_equal(b2, base, BASE_SIZE);          /* writes stayed in the child */
    free(b2);
    write_file("expect.raw", expect, BASE_SIZE);
    assert_int_equal(run("cd %s && qemu-img compare -q -f qed -F raw top.qed expect.raw", dir), 0);
    assert_int_equal(run("cd %s && qemu-img check -q top.qed", dir), 0);
    /* The zero cluster hides the base; qemu-io sees it too. */
    assert_int_equal(run("cd %s && qemu-io -f qed -c 'read -P 0 2M 64k' top.qed >/dev/null", dir), 0);

    r = vd_open(top, &(vd_open_opts){ .readonly = true }, &img, &e);
    if (r)
        fail_msg("reopen: %s", e.msg);
    assert_reads(img, expect, BASE_SIZE);
    vd_check_result res;
    assert_int_equal(vd_check(img, 0, &res, &e), 0);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(res.leaks, 0);
    vd_close(img, NULL);
    free(base);
    free(expect);
}

/* Offset of L2 entry 0 of the first L2 table, from the file itself. */
static uint64_t first_l2_entry_off(const char *name)
{
    char p[512];
    path_in(p, sizeof p, name);
    int fd = open(p, O_RDONLY);
    assert_true(fd >= 0);
    uint8_t h[64], l1[8];
    assert_int_equal(pread(fd, h, 64, 0), 64);
    uint64_t l1_off = 0, l2 = 0;
    for (int i = 7; i >= 0; i--)
        l1_off = l1_off << 8 | h[40 + i];
    assert_int_equal(pread(fd, l1, 8, (off_t)l1_off), 8);
    for (int i = 7; i >= 0; i--)
        l2 = l2 << 8 | l1[i];
    close(fd);
    assert_true(l2 != 0);
    return l2;
}

static void poke(const char *name, uint64_t off, const void *b, size_t n)
{
    char p[512];
    path_in(p, sizeof p, name);
    int fd = open(p, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, b, n, (off_t)off), (ssize_t)n);
    close(fd);
}

static void test_need_check_repair(void **state)
{
    (void)state;
    assert_int_equal(run("cd %s && qemu-img create -q -f qed nc.qed 1M && "
                         "qemu-io -f qed -c 'write -P 0x33 0 128k' nc.qed >/dev/null", dir), 0);
    uint64_t ent = first_l2_entry_off("nc.qed");
    uint8_t bad[8] = { 0, 0, 0, 0x40, 0, 0, 0, 0 };    /* 0x40000000: past EOF */
    poke("nc.qed", ent, bad, 8);
    uint8_t feat = 0x2;
    poke("nc.qed", 16, &feat, 1);

    char p[512];
    path_in(p, sizeof p, "nc.qed");
    vd_image *img;
    vd_error e;
    assert_int_equal(vd_open(p, &(vd_open_opts){ .readonly = true }, &img, &e), 0);
    uint8_t buf[4096];
    assert_true(vd_pread(img, buf, sizeof buf, 0, &e) < 0);
    assert_non_null(strstr(e.msg, "past end of file"));
    assert_int_equal(vd_pread(img, buf, sizeof buf, CL, &e), 0);   /* cluster 1 is fine */
    assert_int_equal(buf[0], 0x33);
    vd_check_result res;
    assert_int_equal(vd_check(img, 0, &res, &e), 0);
    assert_int_equal(res.corruptions, 1);
    vd_close(img, NULL);
    assert_int_equal(qed_features("nc.qed"), 0x2);     /* read-only left it */

    assert_int_equal(vd_open(p, NULL, &img, &e), 0);    /* read-write: repaired */
    assert_int_equal(qed_features("nc.qed"), 0);
    assert_int_equal(vd_pread(img, buf, sizeof buf, 0, &e), 0);
    assert_int_equal(buf[0], 0);                        /* dropped: reads unallocated */
    vd_close(img, NULL);
    /* The dropped cluster is now a leak, exactly as qemu-img sees it (rc 3). */
    assert_int_equal(run("cd %s && qemu-img check -q nc.qed >/dev/null 2>&1", dir), 3);
}

static void test_leak_count(void **state)
{
    (void)state;
    assert_int_equal(run("cd %s && qemu-img create -q -f qed lk.qed 1M && "
                         "qemu-io -f qed -c 'write -P 0x44 0 64k' lk.qed >/dev/null && "
                         "truncate -s +128K lk.qed", dir), 0);
    char p[512];
    path_in(p, sizeof p, "lk.qed");
    vd_image *img;
    vd_error e;
    assert_int_equal(vd_open(p, &(vd_open_opts){ .readonly = true }, &img, &e), 0);
    vd_check_result res;
    assert_int_equal(vd_check(img, 0, &res, &e), 0);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(res.leaks, 2);
    assert_int_equal(res.allocated_clusters, 1);
    vd_close(img, NULL);
    assert_int_equal(run("cd %s && qemu-img check lk.qed 2>&1 | grep -q '2 leaked clusters'",
                         dir), 0);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "%s/unit-qed.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    run("rm -rf %s", dir);
    return 0;
}

int main(void)
{
    if (run("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") != 0) {
        printf("SKIP: qemu-img/qemu-io not installed\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_child_writes),
        cmocka_unit_test(test_need_check_repair),
        cmocka_unit_test(test_leak_count),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
