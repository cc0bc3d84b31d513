/* unit-vdi-parallels.c - cmocka tests of what the VDI and Parallels drivers
 * do through the block API that the command line cannot reach:
 *  - writes into a differencing VDI land in the child (copy-on-write of the
 *    rest of the block from the parent), the parent is untouched, and the
 *    data is there after reopening (parent found again by UUID);
 *  - block status of a child names the layer that holds each range;
 *  - a Parallels image carries the in-use flag while open read-write and
 *    not after a clean close; one left in use reads (marked dirty), refuses
 *    writes with a message naming the flag until a check repairs it;
 *  - UUID text parsing/formatting round trips in VirtualBox's byte order. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "vd-driver.h"
#include "../formats/vdi-uuid.h"

#define PARALLELS_INUSE_MAGIC_TEST 0x746f6e59u   /* "Ynot" */

static char dir[256];

static const char *path_in(const char *name)
{
    static char p[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", dir, name);
    return p[i];
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "%s/unit-vdi.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void fill(uint8_t *b, size_t n, uint8_t v)
{
    memset(b, v, n);
}

static void test_vdi_child_writes(void **state)
{
    (void)state;
    vd_error e;
    vd_image *img;
    const size_t M = 1 << 20;
    uint8_t *buf = malloc(2 * M), *got = malloc(2 * M);
    assert_non_null(buf);
    assert_non_null(got);

    /* parent: 4 MiB, blocks 0 and 1 hold 0xaa */
    assert_int_equal(vd_create(path_in("parent.vdi"), &(vd_create_opts){ .format = "vdi",
                     .size = 4 * M }, &e), 0);
    assert_int_equal(vd_open(path_in("parent.vdi"), NULL, &img, &e), 0);
    fill(buf, 2 * M, 0xaa);
    assert_int_equal(vd_pwrite(img, buf, 2 * M, 0, &e), 0);
    assert_int_equal(vd_close(img, &e), 0);

    assert_int_equal(vd_create(path_in("child.vdi"), &(vd_create_opts){ .format = "vdi",
                     .backing_file = "parent.vdi" }, &e), 0);
    assert_int_equal(vd_open(path_in("child.vdi"), NULL, &img, &e), 0);
    assert_int_equal(vd_size(img), 4 * M);
    /* partial, unaligned write inside block 1: the rest of the block must
     * come from the parent */
    fill(buf, 1000, 0x11);
    assert_int_equal(vd_pwrite(img, buf, 1000, M + 12345, &e), 0);
    /* a write into block 3, unallocated in both */
    fill(buf, 4096, 0x22);
    assert_int_equal(vd_pwrite(img, buf, 4096, 3 * M, &e), 0);

    vd_extents ext;
    vd_extents_init(&ext);
    assert_int_equal(vd_block_status(img, 0, 4 * M, &ext, &e), 0);
    int depth_at[4] = { -9, -9, -9, -9 };
    for (size_t i = 0; i < ext.n; i++)
        for (uint64_t b = ext.v[i].off / M; b * M < ext.v[i].off + ext.v[i].len; b++)
            depth_at[b] = ext.v[i].depth;
    vd_extents_free(&ext);
    assert_int_equal(depth_at[0], 1);     /* parent's data */
    assert_int_equal(depth_at[1], 0);     /* copied up into the child */
    assert_int_equal(depth_at[3], 0);
    assert_int_equal(vd_close(img, &e), 0);

    /* reopen: the child finds its parent by UUID and holds the writes */
    assert_int_equal(vd_open(path_in("child.vdi"), &(vd_open_opts){ .readonly = true },
                             &img, &e), 0);
    assert_int_equal(vd_pread(img, got, 2 * M, 0, &e), 0);
    for (size_t i = 0; i < 2 * M; i++) {
        uint8_t want = (i >= M + 12345 && i < M + 12345 + 1000) ? 0x11 : 0xaa;
        if (got[i] != want)
            fail_msg("child byte %zu is %#x, want %#x", i, got[i], want);
    }
    assert_int_equal(vd_pread(img, got, 8192, 3 * M - 4096, &e), 0);
    for (size_t i = 0; i < 8192; i++)
        assert_int_equal(got[i], i < 4096 ? 0 : 0x22);
    assert_int_equal(vd_close(img, &e), 0);

    /* the parent did not change */
    assert_int_equal(vd_open(path_in("parent.vdi"), &(vd_open_opts){ .readonly = true },
                             &img, &e), 0);
    assert_int_equal(vd_pread(img, got, 2 * M, 0, &e), 0);
    for (size_t i = 0; i < 2 * M; i++)
        if (got[i] != 0xaa)
            fail_msg("parent byte %zu changed to %#x", i, got[i]);
    assert_int_equal(vd_pread(img, got, 4096, 3 * M, &e), 0);
    assert_true(vd_is_zero(got, 4096));
    assert_int_equal(vd_close(img, &e), 0);
    free(buf);
    free(got);
}

static uint32_t read_le32_at(const char *path, long off)
{
    FILE *f = fopen(path, "rb");
    uint8_t b[4] = { 0 };
    assert_non_null(f);
    assert_int_equal(fseek(f, off, SEEK_SET), 0);
    assert_int_equal(fread(b, 1, 4, f), 4);
    fclose(f);
    return vd_le32(b);
}

static void test_parallels_inuse(void **state)
{
    (void)state;
    vd_error e;
    vd_image *img;
    const char *p = path_in("disk.hds");
    uint8_t buf[4096];
    assert_int_equal(vd_create(p, &(vd_create_opts){ .format = "parallels", .size = 8 << 20,
                     .options = "cluster_size=64K" }, &e), 0);
    assert_int_equal(vd_open(p, NULL, &img, &e), 0);
    assert_int_equal(read_le32_at(p, 44), PARALLELS_INUSE_MAGIC_TEST);
    fill(buf, sizeof buf, 0x5c);
    assert_int_equal(vd_pwrite(img, buf, sizeof buf, 70000, &e), 0);
    assert_int_equal(vd_close(img, &e), 0);
    assert_int_equal(read_le32_at(p, 44), 0);

    /* left in use: refused read-write, readable read-only */
    FILE *f = fopen(p, "r+b");
    assert_non_null(f);
    fseek(f, 44, SEEK_SET);
    fwrite("Ynot", 1, 4, f);
    fclose(f);
    /* read-write: opens (so that check can repair it) but refuses writes */
    assert_int_equal(vd_open(p, NULL, &img, &e), 0);
    assert_int_equal(vd_pwrite(img, buf, 512, 0, &e), -EBUSY);
    assert_non_null(strstr(e.msg, "in-use flag"));
    assert_int_equal(vd_close(img, NULL), 0);
    assert_int_equal(read_le32_at(p, 44), PARALLELS_INUSE_MAGIC_TEST);  /* untouched */
    assert_int_equal(vd_open(p, &(vd_open_opts){ .readonly = true }, &img, &e), 0);
    vd_info info;
    assert_int_equal(vd_get_info(img, &info), 0);
    assert_true(info.dirty);
    assert_int_equal(vd_pread(img, buf, sizeof buf, 70000, &e), 0);
    for (size_t i = 0; i < sizeof buf; i++)
        assert_int_equal(buf[i], 0x5c);
    assert_int_equal(vd_close(img, &e), 0);
    assert_int_equal(read_le32_at(p, 44), PARALLELS_INUSE_MAGIC_TEST);  /* untouched */

    /* check -r all clears it; writes work again */
    vd_check_result res;
    memset(&res, 0, sizeof res);
    assert_int_equal(vd_open(p, NULL, &img, &e), 0);
    assert_int_equal(vd_check(img, VD_CHECK_REPAIR_ALL, &res, &e), 0);
    assert_int_equal(res.corruptions, 1);
    assert_int_equal(res.corruptions_fixed, 1);
    assert_int_equal(vd_pwrite(img, buf, 512, 0, &e), 0);
    assert_int_equal(vd_close(img, &e), 0);
    assert_int_equal(read_le32_at(p, 44), 0);
}

static void test_uuid_text(void **state)
{
    (void)state;
    uint8_t u[16], v[16];
    char s[40];
    assert_int_equal(vdi_uuid_parse("{01234567-89ab-cdef-0123-456789ABCDEF}", u), 0);
    assert_int_equal(u[0], 0x67);    /* first field little-endian */
    assert_int_equal(u[3], 0x01);
    assert_int_equal(u[4], 0xab);
    assert_int_equal(u[8], 0x01);    /* last eight bytes as written */
    vdi_uuid_format(u, s);
    assert_string_equal(s, "01234567-89ab-cdef-0123-456789abcdef");
    assert_int_equal(vdi_uuid_parse(s, v), 0);
    assert_memory_equal(u, v, 16);
    assert_int_not_equal(vdi_uuid_parse("01234567-89ab-cdef-0123-456789abcde", v), 0);
    assert_int_not_equal(vdi_uuid_parse("01234567-89ab-cdef-0123-456789abcdef0", v), 0);
    assert_int_not_equal(vdi_uuid_parse("0123456789ab-cdef-0123-456789abcdef00", v), 0);
    assert_int_equal(vdi_uuid_random(u), 0);
    assert_int_equal(vdi_uuid_random(v), 0);
    assert_memory_not_equal(u, v, 16);
    vdi_uuid_format(u, s);
    assert_int_equal(s[14], '4');    /* version 4 */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vdi_child_writes),
        cmocka_unit_test(test_parallels_inuse),
        cmocka_unit_test(test_uuid_text),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
