/* unit-vmdk.c - cmocka tests of the VMDK driver's pieces: the descriptor
 * parser (comments, quoting, CRLF and CR line ends, names with spaces,
 * limits), the in-place CID update, writes through the block API into a
 * sparse image and a delta (partial grains copied from the parent, CID and
 * parentCID), and the streamOptimized writer's one-pass rule. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "vd-driver.h"
#include "../formats/vmdk/vmdk.h"

static char tmpdir[256];

static const char *tpath(const char *name)
{
    static char p[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(p[i], sizeof p[i], "%s/%s", tmpdir, name);
    return p[i];
}

static void test_desc_forms(void **state)
{
    (void)state;
    static const char t[] =
        "# Disk DescriptorFile\r\n"
        "  # a comment with createType=\"nope\"\r\n"
        "version=1 \r\n"
        "CID = 0000beef\r\n"
        "parentCID=12abCDef\r"                  /* a lone CR ends a line too */
        "createType=\"twoGbMaxExtentSparse\"\n"
        "parentFileNameHint=\"../my parent.vmdk\"\n"
        "\n"
        "RW 4194304 SPARSE \"disk one-s001.vmdk\"\n"
        "RDONLY\t2048\tFLAT\t\"flat.bin\"\t7\n"
        "RW 100 ZERO\n"
        "ddb.adapterType = \"lsilogic\"\n"
        "ddb.virtualHWVersion = \"14\"\n";
    struct vmdk_desc d;
    vd_error e = { 0 };
    assert_int_equal(vmdk_desc_parse(&d, t, sizeof t - 1, "t", &e), 0);
    assert_int_equal(d.cid, 0xbeef);
    assert_true(d.has_cid);
    assert_int_equal(d.parent_cid, 0x12abcdef);
    assert_string_equal(d.create_type, "twoGbMaxExtentSparse");
    assert_string_equal(d.parent_hint, "../my parent.vmdk");
    assert_string_equal(d.adapter, "lsilogic");
    assert_string_equal(d.hwversion, "14");
    assert_int_equal(d.n_ext, 3);
    assert_string_equal(d.ext[0].name, "disk one-s001.vmdk");
    assert_int_equal(d.ext[0].sectors, 4194304);
    assert_string_equal(d.ext[1].access, "RDONLY");
    assert_string_equal(d.ext[1].type, "FLAT");
    assert_int_equal(d.ext[1].offset, 7);
    assert_string_equal(d.ext[2].type, "ZERO");
    assert_null(d.ext[2].name);
    /* CID rewritten in place keeps every other byte */
    assert_true(vmdk_desc_set_cid(&d, 0x01020304) > 0);
    assert_non_null(strstr(d.text, "CID = 01020304\r\n"));
    assert_non_null(strstr(d.text, "parentCID=12abCDef"));
    vmdk_desc_free(&d);

    /* a short CID grows to 8 digits; the text after it survives */
    static const char t2[] = "CID=1\ncreateType=\"monolithicFlat\"\nRW 1 ZERO\n";
    assert_int_equal(vmdk_desc_parse(&d, t2, sizeof t2 - 1, "t2", &e), 0);
    assert_int_equal(vmdk_desc_set_cid(&d, 0xabcdef12), (int)sizeof t2 - 1 + 7);
    assert_string_equal(d.text, "CID=abcdef12\ncreateType=\"monolithicFlat\"\nRW 1 ZERO\n");
    vmdk_desc_free(&d);

    /* NUL padding ends the text (embedded descriptors) */
    static const char t3[] = "createType=\"monolithicSparse\"\n\0garbage=\"x\n";
    assert_int_equal(vmdk_desc_parse(&d, t3, sizeof t3 - 1, "t3", &e), 0);
    assert_int_equal(d.n_ext, 0);
    vmdk_desc_free(&d);
}

static void expect_desc_error(const char *text, size_t len, const char *pat)
{
    struct vmdk_desc d;
    vd_error e = { 0 };
    assert_int_equal(vmdk_desc_parse(&d, text, len, "bad", &e), -EINVAL);
    if (!strstr(e.msg, pat))
        fail_msg("error '%s' lacks '%s'", e.msg, pat);
}

static void test_desc_errors(void **state)
{
    (void)state;
    expect_desc_error("version=1\n", 10, "no createType");
    expect_desc_error("CID=xyz\ncreateType=\"a\"\n", 24, "CID is not a 32-bit hex");
    expect_desc_error("createType=\"a\"\nRW 12x FLAT \"f\"\n", 31, "extent size");
    expect_desc_error("createType=\"a\"\nRW 1 FLAT \"f\" -4\n", 32, "extent offset");
    expect_desc_error("createType=\"a\"\nRW 1\n", 20, "ACCESS SECTORS TYPE");
    expect_desc_error("createType=\"a\"\nwhat is this\n", 28, "cannot parse");
    size_t n = VMDK_MAX_LINE + 100;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, 'x', n);
    memcpy(big, "createType=\"a\"\nddb.x=", 21);
    expect_desc_error(big, n, "line 2 is");
    free(big);
    char *huge = calloc(1, VMDK_MAX_DESC_BYTES + 1);
    assert_non_null(huge);
    expect_desc_error(huge, VMDK_MAX_DESC_BYTES + 1, "larger than");
    free(huge);
}

static void fill(uint8_t *b, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(i * 31 + seed + (i >> 9));
}

struct kv_find { const char *key; char val[64]; };
static void kv_cb(void *ctx, const char *k, const char *v)
{
    struct kv_find *f = ctx;
    if (!strcmp(k, f->key))
        snprintf(f->val, sizeof f->val, "%s", v);
}
static const char *detail(vd_image *img, const char *key)
{
    static struct kv_find f;
    f.key = key;
    f.val[0] = 0;
    vd_get_format_details(img, kv_cb, &f);
    return f.val;
}

static void test_delta_writes(void **state)
{
    (void)state;
    const size_t size = 3u << 20;
    uint8_t *want = malloc(size), *got = malloc(size);
    assert_non_null(want);
    assert_non_null(got);
    vd_error e = { 0 };
    vd_image *img;
    assert_int_equal(vd_create(tpath("base.vmdk"), &(vd_create_opts){ .format = "vmdk",
                     .size = size, .options = "zeroed_grain=on" }, &e), 0);
    assert_int_equal(vd_open(tpath("base.vmdk"), NULL, &img, &e), 0);
    fill(want, size, 1);
    assert_int_equal(vd_pwrite(img, want, size, 0, &e), 0);
    char base_cid[64];
    snprintf(base_cid, sizeof base_cid, "%s", detail(img, "cid"));
    assert_int_equal(vd_close(img, &e), 0);

    assert_int_equal(vd_create(tpath("child.vmdk"), &(vd_create_opts){ .format = "vmdk",
                     .backing_file = "base.vmdk" }, &e), 0);
    assert_int_equal(vd_open(tpath("child.vmdk"), NULL, &img, &e), 0);
    assert_string_equal(detail(img, "parent-cid"), base_cid);
    char cid0[64];
    snprintf(cid0, sizeof cid0, "%s", detail(img, "cid"));
    /* unaligned, inside one grain, across grains, and the last bytes */
    static const struct { uint64_t off; size_t len; } w[] = {
        { 65536 * 2 + 100, 1000 }, { 65536 * 5 - 7, 300000 }, { (3u << 20) - 513, 513 },
    };
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
        uint8_t *p = malloc(w[i].len);
        fill(p, w[i].len, 100 + (unsigned)i);
        memcpy(want + w[i].off, p, w[i].len);
        assert_int_equal(vd_pwrite(img, p, w[i].len, w[i].off, &e), 0);
        free(p);
    }
    assert_string_not_equal(detail(img, "cid"), cid0);     /* new CID on write */
    assert_int_equal(vd_pread(img, got, size, 0, &e), 0);
    assert_memory_equal(got, want, size);
    /* block status: written grains are the child's own, the rest its parent's */
    vd_extents ext;
    vd_extents_init(&ext);
    assert_int_equal(vd_block_status(img, 0, 65536 * 3, &ext, &e), 0);
    assert_true(ext.n >= 2);
    assert_int_equal(ext.v[0].depth, 1);
    assert_int_equal(ext.v[ext.n - 1].depth, 0);
    vd_extents_free(&ext);
    assert_int_equal(vd_close(img, &e), 0);

    /* reopened: same content; the parent untouched */
    assert_int_equal(vd_open(tpath("child.vmdk"), &(vd_open_opts){ .readonly = true },
                             &img, &e), 0);
    assert_int_equal(vd_pread(img, got, size, 0, &e), 0);
    assert_memory_equal(got, want, size);
    fill(want, size, 1);
    assert_int_equal(vd_pread(vd_backing(img), got, size, 0, &e), 0);
    assert_memory_equal(got, want, size);
    assert_int_equal(vd_close(img, &e), 0);
    free(want);
    free(got);
}

static void test_stream_one_pass(void **state)
{
    (void)state;
    const size_t size = (1u << 20) + 1536;   /* not a whole grain */
    uint8_t *want = calloc(1, size), *got = malloc(size);
    vd_error e = { 0 };
    vd_image *img;
    assert_int_equal(vd_create(tpath("s.vmdk"), &(vd_create_opts){ .format = "vmdk",
                     .size = size, .options = "subformat=streamOptimized" }, &e), 0);
    assert_int_equal(vd_open(tpath("s.vmdk"), NULL, &img, &e), 0);
    fill(want + 512, 1024, 3);
    fill(want + 70000, 512, 4);
    fill(want + size - 512, 512, 5);
    /* sector by sector within a grain, then later grains */
    assert_int_equal(vd_pwrite(img, want + 512, 512, 512, &e), 0);
    assert_int_equal(vd_pwrite(img, want + 1024, 512, 1024, &e), 0);
    assert_int_equal(vd_pwrite(img, want + 70000, 512, 70000, &e), 0);
    /* going back to an earlier grain is refused, with a message saying why */
    assert_int_equal(vd_pwrite(img, want, 512, 0, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "one pass"));
    assert_int_equal(vd_pwrite(img, want + size - 512, 512, size - 512, &e), 0);
    assert_int_equal(vd_close(img, &e), 0);
    assert_int_equal(vd_open(tpath("s.vmdk"), &(vd_open_opts){ .readonly = true },
                             &img, &e), 0);
    assert_int_equal(vd_size(img), size);
    assert_int_equal(vd_pread(img, got, size, 0, &e), 0);
    assert_memory_equal(got, want, size);
    assert_int_equal(vd_close(img, &e), 0);
    free(want);
    free(got);
}

static void test_create_options(void **state)
{
    (void)state;
    vd_error e = { 0 };
    assert_int_equal(vd_create(tpath("o1.vmdk"), &(vd_create_opts){ .format = "vmdk",
                     .size = 1 << 20, .options = "subformat=weird" }, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "subformat=weird"));
    assert_int_equal(vd_create(tpath("o2.vmdk"), &(vd_create_opts){ .format = "vmdk",
                     .size = 1 << 20, .options = "adapter_type=scsi" }, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "adapter_type=scsi"));
    assert_int_equal(vd_create(tpath("o3.vmdk"), &(vd_create_opts){ .format = "vmdk",
                     .size = 1 << 20, .options = "hwversion=x1" }, &e), -EINVAL);
    assert_int_equal(access(tpath("o1.vmdk"), F_OK), -1);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "%s/unit-vmdk.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_desc_forms),
        cmocka_unit_test(test_desc_errors),
        cmocka_unit_test(test_delta_writes),
        cmocka_unit_test(test_stream_one_pass),
        cmocka_unit_test(test_create_options),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        r = r ? r : 1;
    return r;
}
