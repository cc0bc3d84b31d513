/* unit-vhd.c - cmocka tests of the VHD driver through the public API:
 * CHS-rounded and exact (force_size) sizes; writes into a differencing disk
 * (unaligned, across a block boundary, into the last sector) land in the
 * child only, read back merged with the parent, are reported by block status
 * at the right depth, survive a reopen, and - when python3-libvhdi is
 * installed - read the same through libvhdi. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk.h"

static char dir[] = "/tmp/unit-vhd.XXXXXX";

static char *path_in(const char *name)
{
    static char buf[4][256];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (uint8_t)(seed >> 16);
    }
}

static uint64_t size_of_new(const char *name, uint64_t size, const char *opts)
{
    vd_error e;
    vd_image *img;
    assert_int_equal(vd_create(path_in(name), &(vd_create_opts){ .format = "vpc", .size = size,
                                                                 .options = opts }, &e), 0);
    assert_int_equal(vd_open(path_in(name), &(vd_open_opts){ .readonly = true }, &img, &e), 0);
    assert_string_equal(vd_format_name(img), "vhd");
    uint64_t s = vd_size(img);
    vd_close(img, NULL);
    return s;
}

static void test_sizes(void **state)
{
    (void)state;
    /* qemu-img create -f vpc 64M makes 67125248 bytes (963 -> 964 cylinders,
     * 8 heads, 17 sectors); force_size keeps 64 MiB exactly. */
    assert_int_equal(size_of_new("a.vhd", 64 << 20, NULL), 67125248);
    assert_int_equal(size_of_new("b.vhd", 64 << 20, "force_size=on"), 64 << 20);
    assert_int_equal(size_of_new("c.vhd", 64 << 20, "subformat=fixed,force_size=on"), 64 << 20);
    assert_int_equal(size_of_new("d.vhd", 1000, "force_size=on"), 1024);
    vd_error e;
    assert_true(vd_create(path_in("e.vhd"), &(vd_create_opts){ .format = "vhd", .size = 1 << 20,
                          .options = "subformat=sparse" }, &e) < 0);
    assert_non_null(strstr(e.msg, "subformat=sparse"));
    assert_true(vd_create(path_in("f.vhd"), &(vd_create_opts){ .format = "vhd",
                          .size = 3ull << 40 }, &e) < 0);
}

#define PSIZE (5u << 20)

static void test_differencing_writes(void **state)
{
    (void)state;
    vd_error e;
    vd_image *img;
    uint8_t *parent = malloc(PSIZE), *want = malloc(PSIZE), *got = malloc(PSIZE);
    fill(parent, PSIZE, 1);
    assert_int_equal(vd_create(path_in("base.vhd"), &(vd_create_opts){ .format = "vhd",
                     .size = PSIZE, .options = "force_size=on" }, &e), 0);
    assert_int_equal(vd_open(path_in("base.vhd"), NULL, &img, &e), 0);
    assert_int_equal(vd_pwrite(img, parent, PSIZE, 0, &e), 0);
    assert_int_equal(vd_close(img, &e), 0);

    assert_int_equal(vd_create(path_in("child.vhd"), &(vd_create_opts){ .format = "vhd",
                     .backing_file = "base.vhd" }, &e), 0);
    assert_int_equal(vd_open(path_in("child.vhd"), NULL, &img, &e), 0);
    assert_int_equal(vd_size(img), PSIZE);
    memcpy(want, parent, PSIZE);
    static const struct { uint64_t off; size_t len; } w[] = {
        { 100, 7 },                          /* inside one sector */
        { (2u << 20) - 300, 1000 },          /* across the first block boundary */
        { 3u << 20, 4096 },                  /* aligned */
        { PSIZE - 512, 512 },                /* the last sector */
    };
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
        fill(want + w[i].off, w[i].len, 100 + (unsigned)i);
        assert_int_equal(vd_pwrite(img, want + w[i].off, w[i].len, w[i].off, &e), 0);
    }
    assert_int_equal(vd_close(img, &e), 0);

    /* Merged view after reopening. */
    assert_int_equal(vd_open(path_in("child.vhd"), &(vd_open_opts){ .readonly = true }, &img,
                             &e), 0);
    assert_non_null(vd_backing(img));
    assert_int_equal(vd_pread(img, got, PSIZE, 0, &e), 0);
    assert_memory_equal(got, want, PSIZE);
    /* Block status: the written sector at 3 MiB is the child's, the sector
     * after it the parent's. */
    vd_extents ext;
    vd_extents_init(&ext);
    assert_int_equal(vd_block_status(img, 3u << 20, 8192, &ext, &e), 0);
    assert_true(ext.n >= 1);
    assert_int_equal(ext.v[0].depth, 0);
    assert_int_equal(ext.v[0].len, 4096);
    vd_extents_clear(&ext);
    assert_int_equal(vd_block_status(img, (3u << 20) + 4096, 4096, &ext, &e), 0);
    assert_int_equal(ext.v[0].depth, 1);
    vd_extents_free(&ext);
    vd_close(img, NULL);

    /* The parent did not change. */
    assert_int_equal(vd_open(path_in("base.vhd"), &(vd_open_opts){ .readonly = true }, &img,
                             &e), 0);
    assert_int_equal(vd_pread(img, got, PSIZE, 0, &e), 0);
    assert_memory_equal(got, parent, PSIZE);
    vd_close(img, NULL);

    /* libvhdi, the independent reader, sees the same merged content. */
    if (system("/usr/bin/python3 -c 'import pyvhdi' 2>/dev/null") == 0) {
        FILE *f = fopen(path_in("want.raw"), "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(want, 1, PSIZE, f), PSIZE);
        fclose(f);
        char cmd[1024];
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c 'import pyvhdi,sys\n"
                 "c=pyvhdi.file(); c.open(\"%s\"); p=pyvhdi.file(); p.open(\"%s\")\n"
                 "c.set_parent(p)\n"
                 "sys.exit(c.read_buffer_at_offset(c.media_size, 0) != open(\"%s\",\"rb\").read())'",
                 path_in("child.vhd"), path_in("base.vhd"), path_in("want.raw"));
        assert_int_equal(system(cmd), 0);
    }
    free(parent);
    free(want);
    free(got);
}

/* A second writer session appends blocks after the moved footer: the file
 * stays a valid VHD (footer last, copy at 0) and the data reads back. */
static void test_dynamic_append(void **state)
{
    (void)state;
    vd_error e;
    vd_image *img;
    uint8_t a[4096], b[4096];
    fill(a, sizeof a, 9);
    assert_int_equal(vd_create(path_in("dyn.vhd"), &(vd_create_opts){ .format = "vhd",
                     .size = 9u << 20, .options = "force_size=on" }, &e), 0);
    for (int pass = 0; pass < 2; pass++) {
        assert_int_equal(vd_open(path_in("dyn.vhd"), NULL, &img, &e), 0);
        assert_int_equal(vd_pwrite(img, a, sizeof a, (uint64_t)(pass * 4 + 1) << 20, &e), 0);
        assert_int_equal(vd_close(img, &e), 0);
    }
    assert_int_equal(vd_open(path_in("dyn.vhd"), &(vd_open_opts){ .readonly = true }, &img, &e),
                     0);
    for (int pass = 0; pass < 2; pass++) {
        assert_int_equal(vd_pread(img, b, sizeof b, (uint64_t)(pass * 4 + 1) << 20, &e), 0);
        assert_memory_equal(a, b, sizeof a);
    }
    vd_check_result res;
    assert_int_equal(vd_check(img, 0, &res, &e), 0);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(res.allocated_clusters, 2);
    vd_close(img, NULL);
}

/* Write-zeroes: unallocated dynamic blocks stay unallocated, allocated ones
 * and differencing ranges (which would show the parent) read zero. */
static void test_zeroes(void **state)
{
    (void)state;
    vd_error e;
    vd_image *img;
    uint8_t a[4096], b[4096], z[4096] = { 0 };
    fill(a, sizeof a, 31);
    assert_int_equal(vd_create(path_in("z.vhd"), &(vd_create_opts){ .format = "vhd",
                     .size = 8u << 20, .options = "force_size=on" }, &e), 0);
    assert_int_equal(vd_open(path_in("z.vhd"), NULL, &img, &e), 0);
    assert_int_equal(vd_pwrite(img, a, sizeof a, 1u << 20, &e), 0);
    assert_int_equal(vd_pwrite_zeroes(img, 0, 8u << 20, 0, &e), 0);
    assert_int_equal(vd_pread(img, b, sizeof b, 1u << 20, &e), 0);
    assert_memory_equal(b, z, sizeof b);
    vd_check_result res;
    assert_int_equal(vd_check(img, 0, &res, &e), 0);
    assert_int_equal(res.allocated_clusters, 1);
    assert_int_equal(vd_close(img, &e), 0);

    assert_int_equal(vd_open(path_in("z.vhd"), NULL, &img, &e), 0);
    assert_int_equal(vd_pwrite(img, a, sizeof a, 5u << 20, &e), 0);
    assert_int_equal(vd_close(img, &e), 0);
    assert_int_equal(vd_create(path_in("zc.vhd"), &(vd_create_opts){ .format = "vhd",
                     .backing_file = "z.vhd" }, &e), 0);
    assert_int_equal(vd_open(path_in("zc.vhd"), NULL, &img, &e), 0);
    assert_int_equal(vd_pwrite_zeroes(img, (5u << 20) + 512, 1024, 0, &e), 0);
    assert_int_equal(vd_pread(img, b, sizeof b, 5u << 20, &e), 0);
    assert_memory_equal(b, a, 512);
    assert_memory_equal(b + 512, z, 1024);
    assert_memory_equal(b + 1536, a + 1536, sizeof a - 1536);
    vd_close(img, NULL);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_differencing_writes),
        cmocka_unit_test(test_dynamic_append),
        cmocka_unit_test(test_zeroes),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (!getenv("UNIT_VHD_KEEP") && system(cmd) != 0)
        r = r ? r : 1;
    return r;
}
