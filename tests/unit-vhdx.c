/* unit-vhdx.c - cmocka tests of the VHDX driver through the public API:
 * writes into a differencing disk (unaligned, across a block boundary, the
 * last sector) land in the child only and read back merged, block status
 * gives the right layer, libvhdi (python3-libvhdi, when installed) reads the
 * same; blocks appended in a second session; a crash after the log entry
 * (VDISK_VHDX_TEST_CRASH) is replayed by a read-write open, after which
 * `qemu-img check` (when installed) finds a clean image with the data; a
 * header naming a log that holds no entry yet is not a pending log;
 * write-zeroes and discard drop whole blocks (not on fixed disks). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk.h"

/* The driver's CRC-32C (exported by libvdisk for its own use). */
uint32_t vhdx_crc32c(const void *buf, size_t len);

/* Bit by bit, as the VHDX specification defines it. */
static uint32_t crc32c_reference(const uint8_t *p, size_t len)
{
    uint32_t c = ~0u;
    while (len--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    }
    return ~c;
}

/* The hardware path (SSE4.2) and the table agree with the definition for
 * every length and alignment, and on the standard check value. */
static void test_crc32c(void **state)
{
    (void)state;
    assert_int_equal(vhdx_crc32c("123456789", 9), 0xe3069283u);
    uint8_t buf[600];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 131 + (i >> 3) * 7);
    for (size_t off = 0; off < 9; off++)
        for (size_t len = 0; len + off <= sizeof buf; len += 37)
            assert_int_equal(vhdx_crc32c(buf + off, len), crc32c_reference(buf + off, len));
}

static char dir[] = "/tmp/unit-vhdx.XXXXXX";

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

static void write_file(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    fclose(f);
}

#define PSIZE (5u << 20)

static void test_differencing_writes(void **state)
{
    (void)state;
    vd_error e;
    vd_image *img;
    uint8_t *parent = malloc(PSIZE), *want = malloc(PSIZE), *got = malloc(PSIZE);
    fill(parent, PSIZE, 1);
    assert_int_equal(vd_create(path_in("base.vhdx"), &(vd_create_opts){ .format = "vhdx",
                     .size = PSIZE, .options = "block_size=1M" }, &e), 0);
    assert_int_equal(vd_open(path_in("base.vhdx"), NULL, &img, &e), 0);
    assert_int_equal(vd_pwrite(img, parent, PSIZE, 0, &e), 0);
    assert_int_equal(vd_close(img, &e), 0);

    assert_int_equal(vd_create(path_in("child.vhdx"), &(vd_create_opts){ .format = "vhdx",
                     .backing_file = "base.vhdx", .options = "block_size=1M" }, &e), 0);
    assert_int_equal(vd_open(path_in("child.vhdx"), NULL, &img, &e), 0);
    assert_int_equal(vd_size(img), PSIZE);
    memcpy(want, parent, PSIZE);
    static const struct { uint64_t off; size_t len; } w[] = {
        { 100, 7 }, { (1u << 20) - 300, 1000 }, { 3u << 20, 4096 }, { PSIZE - 512, 512 },
    };
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
        fill(want + w[i].off, w[i].len, 100 + (unsigned)i);
        assert_int_equal(vd_pwrite(img, want + w[i].off, w[i].len, w[i].off, &e), 0);
    }
    assert_int_equal(vd_close(img, &e), 0);

    assert_int_equal(vd_open(path_in("child.vhdx"), &(vd_open_opts){ .readonly = true }, &img,
                             &e), 0);
    assert_int_equal(vd_pread(img, got, PSIZE, 0, &e), 0);
    assert_memory_equal(got, want, PSIZE);
    vd_extents ext;
    vd_extents_init(&ext);
    assert_int_equal(vd_block_status(img, 2u << 20, 4096, &ext, &e), 0);
    assert_int_equal(ext.v[0].depth, 1);          /* untouched block: the parent's */
    vd_extents_clear(&ext);
    assert_int_equal(vd_block_status(img, 3u << 20, 4096, &ext, &e), 0);
    assert_int_equal(ext.v[0].depth, 0);          /* written block: the child's */
    vd_extents_free(&ext);
    vd_close(img, NULL);

    assert_int_equal(vd_open(path_in("base.vhdx"), &(vd_open_opts){ .readonly = true }, &img,
                             &e), 0);
    assert_int_equal(vd_pread(img, got, PSIZE, 0, &e), 0);
    assert_memory_equal(got, parent, PSIZE);
    vd_close(img, NULL);

    if (system("/usr/bin/python3 -c 'import pyvhdi' 2>/dev/null") == 0) {
        write_file(path_in("want.raw"), want, PSIZE);
        char cmd[1024];
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c 'import pyvhdi,sys\n"
                 "c=pyvhdi.file(); c.open(\"%s\"); p=pyvhdi.file(); p.open(\"%s\")\n"
                 "c.set_parent(p)\n"
                 "sys.exit(c.read_buffer_at_offset(c.media_size, 0) != open(\"%s\",\"rb\").read())'",
                 path_in("child.vhdx"), path_in("base.vhdx"), path_in("want.raw"));
        assert_int_equal(system(cmd), 0);
    }
    /* A parent whose data changed is refused (parent_linkage). */
    assert_int_equal(vd_open(path_in("base.vhdx"), NULL, &img, &e), 0);
    assert_int_equal(vd_pwrite(img, parent, 512, 0, &e), 0);
    assert_int_equal(vd_close(img, &e), 0);
    assert_true(vd_open(path_in("child.vhdx"), &(vd_open_opts){ .readonly = true }, &img,
                        &e) < 0);
    assert_non_null(strstr(e.msg, "parent_linkage"));
    free(parent);
    free(want);
    free(got);
}

static void test_crash_replay_rw(void **state)
{
    (void)state;
    vd_error e;
    vd_image *img;
    uint8_t a[8192], b[8192];
    fill(a, sizeof a, 5);
    assert_int_equal(vd_create(path_in("crash.vhdx"), &(vd_create_opts){ .format = "vhdx",
                     .size = 8u << 20, .options = "block_size=1M" }, &e), 0);
    for (int pass = 0; pass < 2; pass++) {      /* second pass appends */
        if (pass)
            setenv("VDISK_VHDX_TEST_CRASH", "after-log", 1);
        assert_int_equal(vd_open(path_in("crash.vhdx"), NULL, &img, &e), 0);
        assert_int_equal(vd_pwrite(img, a, sizeof a, (uint64_t)(1 + 4 * pass) << 20, &e), 0);
        assert_int_equal(vd_close(img, &e), 0);
        unsetenv("VDISK_VHDX_TEST_CRASH");
    }
    /* The second session's BAT update is only in the log.  A read-write open
     * replays it into the file. */
    assert_int_equal(vd_open(path_in("crash.vhdx"), NULL, &img, &e), 0);
    vd_info info;
    assert_int_equal(vd_get_info(img, &info), 0);
    assert_true(info.dirty);
    assert_int_equal(vd_close(img, &e), 0);
    assert_int_equal(vd_open(path_in("crash.vhdx"), &(vd_open_opts){ .readonly = true }, &img,
                             &e), 0);
    assert_int_equal(vd_get_info(img, &info), 0);
    assert_false(info.dirty);
    for (int pass = 0; pass < 2; pass++) {
        assert_int_equal(vd_pread(img, b, sizeof b, (uint64_t)(1 + 4 * pass) << 20, &e), 0);
        assert_memory_equal(a, b, sizeof a);
    }
    vd_check_result res;
    assert_int_equal(vd_check(img, 0, &res, &e), 0);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(res.allocated_clusters, 2);
    vd_close(img, NULL);
    if (system("qemu-img --version >/dev/null 2>&1") == 0) {
        char cmd[1024];
        uint8_t *full = calloc(1, 8u << 20);
        memcpy(full + (1u << 20), a, sizeof a);
        memcpy(full + (5u << 20), a, sizeof a);
        write_file(path_in("crash.raw"), full, 8u << 20);
        free(full);
        snprintf(cmd, sizeof cmd, "qemu-img check -q -f vhdx '%s' && qemu-img compare -q "
                 "-f vhdx '%s' -F raw '%s'", path_in("crash.vhdx"), path_in("crash.vhdx"),
                 path_in("crash.raw"));
        assert_int_equal(system(cmd), 0);
    }
}

/* A header naming a log (LogGuid set) with no entry under that GUID: the
 * state a crash leaves between the header write that starts a log and the
 * first entry becoming durable.  Nothing is pending: the image opens clean
 * (not dirty, check finds nothing), as qemu-img check also says; an old
 * entry of the previous log (another GUID) in the log area is not replayed. */
static void test_log_guid_without_entry(void **state)
{
    (void)state;
    vd_error e;
    vd_image *img;
    uint8_t a[8192], b[8192], h[2][4096];
    fill(a, sizeof a, 9);
    const char *p = path_in("noentry.vhdx");
    assert_int_equal(vd_create(p, &(vd_create_opts){ .format = "vhdx", .size = 4u << 20,
                     .options = "block_size=1M" }, &e), 0);
    assert_int_equal(vd_open(p, NULL, &img, &e), 0);     /* leaves an old entry */
    assert_int_equal(vd_pwrite(img, a, sizeof a, 1u << 20, &e), 0);
    assert_int_equal(vd_close(img, &e), 0);
    FILE *f = fopen(p, "r+b");
    assert_non_null(f);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(fseek(f, (i + 1) * 65536L, SEEK_SET), 0);
        assert_int_equal(fread(h[i], 1, 4096, f), 4096);
    }
    uint64_t s0, s1;
    memcpy(&s0, h[0] + 8, 8);
    memcpy(&s1, h[1] + 8, 8);
    int cur = s1 > s0, other = !cur;
    memcpy(h[other], h[cur], 4096);
    uint64_t seq = (cur ? s1 : s0) + 1;
    memcpy(h[other] + 8, &seq, 8);                       /* little-endian host */
    memset(h[other] + 48, 0x5a, 16);                     /* LogGuid */
    memset(h[other] + 4, 0, 4);
    uint32_t crc = vhdx_crc32c(h[other], 4096);
    memcpy(h[other] + 4, &crc, 4);
    assert_int_equal(fseek(f, (other + 1) * 65536L, SEEK_SET), 0);
    assert_int_equal(fwrite(h[other], 1, 4096, f), 4096);
    fclose(f);
    assert_int_equal(vd_open(p, &(vd_open_opts){ .readonly = true }, &img, &e), 0);
    vd_info info;
    assert_int_equal(vd_get_info(img, &info), 0);
    assert_false(info.dirty);
    vd_check_result res;
    assert_int_equal(vd_check(img, 0, &res, &e), 0);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(vd_pread(img, b, sizeof b, 1u << 20, &e), 0);
    assert_memory_equal(a, b, sizeof a);
    vd_close(img, NULL);
    if (system("qemu-img --version >/dev/null 2>&1") == 0) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "qemu-img check -q -f vhdx '%s'", p);
        assert_int_equal(system(cmd), 0);
    }
    assert_int_equal(vd_open(p, NULL, &img, &e), 0);     /* read-write: stays clean */
    assert_int_equal(vd_get_info(img, &info), 0);
    assert_false(info.dirty);
    assert_int_equal(vd_close(img, &e), 0);
}

/* Zeroing a whole block drops it (BAT state ZERO); a partial range is
 * written; discard drops whole blocks only; a fixed disk keeps its blocks.
 * qemu-img agrees on the result. */
static void zero_case(const char *name, const char *opts, uint64_t want_alloc)
{
    vd_error e;
    vd_image *img;
    const uint64_t size = 4u << 20;
    uint8_t *want = malloc(size), *got = malloc(size);
    fill(want, size, 21);
    assert_int_equal(vd_create(path_in(name), &(vd_create_opts){ .format = "vhdx", .size = size,
                     .options = opts }, &e), 0);
    assert_int_equal(vd_open(path_in(name), NULL, &img, &e), 0);
    assert_int_equal(vd_pwrite(img, want, size, 0, &e), 0);
    assert_int_equal(vd_flush(img, &e), 0);
    assert_int_equal(vd_pwrite_zeroes(img, 1u << 20, 1u << 20, VD_ZERO_MAY_UNMAP, &e), 0);
    memset(want + (1u << 20), 0, 1u << 20);
    assert_int_equal(vd_pwrite_zeroes(img, (5u << 19), 4096, 0, &e), 0);
    memset(want + (5u << 19), 0, 4096);
    assert_int_equal(vd_discard(img, 3u << 20, 1u << 20, &e), 0);
    assert_int_equal(vd_pread(img, got + (3u << 20), 1u << 20, 3u << 20, &e), 0);
    memcpy(want + (3u << 20), got + (3u << 20), 1u << 20);   /* old data or zeroes */
    fill(want + (1u << 20) + 1000, 100, 22);                 /* a ZERO block written again */
    assert_int_equal(vd_pwrite(img, want + (1u << 20) + 1000, 100, (1u << 20) + 1000, &e), 0);
    assert_int_equal(vd_close(img, &e), 0);
    assert_int_equal(vd_open(path_in(name), &(vd_open_opts){ .readonly = true }, &img, &e), 0);
    assert_int_equal(vd_pread(img, got, size, 0, &e), 0);
    assert_memory_equal(got, want, size);
    vd_check_result res;
    assert_int_equal(vd_check(img, 0, &res, &e), 0);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(res.allocated_clusters, want_alloc);
    vd_close(img, NULL);
    if (system("qemu-img --version >/dev/null 2>&1") == 0) {
        char raw[300], cmd[1024];
        snprintf(raw, sizeof raw, "%s.raw", path_in(name));
        write_file(raw, want, size);
        snprintf(cmd, sizeof cmd, "qemu-img check -q -f vhdx '%s' && qemu-img compare -q "
                 "-f vhdx '%s' -F raw '%s'", path_in(name), path_in(name), raw);
        assert_int_equal(system(cmd), 0);
    }
    free(want);
    free(got);
}

static void test_zero_discard(void **state)
{
    (void)state;
    zero_case("zero-dyn.vhdx", "block_size=1M", 3);
    zero_case("zero-fixed.vhdx", "block_size=1M,subformat=fixed", 4);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c),
        cmocka_unit_test(test_differencing_writes),
        cmocka_unit_test(test_crash_replay_rw),
        cmocka_unit_test(test_log_guid_without_entry),
        cmocka_unit_test(test_zero_discard),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (!getenv("UNIT_VHD_KEEP") && system(cmd) != 0)
        r = r ? r : 1;
    return r;
}
