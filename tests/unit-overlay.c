/* unit-overlay.c - cmocka tests of vd_open_overlay through the public API:
 * the in-memory layer, the temporary qcow2 (gone from its folder once open)
 * and the kept qcow2 (backing named relatively, reopened by vd_open), over
 * a raw base and over a qcow2 chain.  Every layer is compared with a model
 * of the guest view after unaligned writes, and the base file must keep its
 * bytes.  Locks: while a kept layer is open, another process can open the
 * base to read but neither the base to write nor the layer at all. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vdisk.h"

/* Not a multiple of 4 KiB or 64 KiB: the last block of a layer is short
 * (but of 512 bytes, which a qcow2 size must be). */
#define DISK_SIZE (1024u * 1024 + 1536)

static char dir[] = "/tmp/vdoverlayXXXXXX";
static char base_raw[64], base_top[64];
static uint8_t model[DISK_SIZE];

static uint8_t pattern(uint64_t off) { return (uint8_t)(off * 7 + (off >> 12)); }

static int setup(void **state)
{
    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(base_raw, sizeof base_raw, "%s/base.raw", dir);
    snprintf(base_top, sizeof base_top, "%s/top.qcow2", dir);
    int fd = open(base_raw, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    for (uint64_t i = 0; i < DISK_SIZE; i++)
        model[i] = pattern(i);
    assert_int_equal(write(fd, model, DISK_SIZE), DISK_SIZE);
    close(fd);
    /* a chain: top.qcow2 over base.raw, with 4 KiB of its own at 64 KiB */
    vd_error err;
    vd_create_opts co = { .format = "qcow2", .backing_file = "base.raw",
                          .backing_format = "raw" };
    assert_int_equal(vd_create(base_top, &co, &err), 0);
    vd_image *top;
    assert_int_equal(vd_open(base_top, NULL, &top, &err), 0);
    uint8_t blk[4096];
    memset(blk, 0x5a, sizeof blk);
    assert_int_equal(vd_pwrite(top, blk, sizeof blk, 65536, &err), 0);
    assert_int_equal(vd_close(top, &err), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd);
}

/* The guest view of `img` equals `want` byte for byte. */
static void assert_view(vd_image *img, const uint8_t *want)
{
    static uint8_t got[DISK_SIZE];
    vd_error err;
    assert_int_equal(vd_size(img), DISK_SIZE);
    assert_int_equal(vd_pread(img, got, DISK_SIZE, 0, &err), 0);
    assert_memory_equal(got, want, DISK_SIZE);
}

/* Unaligned writes into a layer, mirrored in `view`: inside one block,
 * across blocks and clusters, and the disk's last bytes. */
static void scribble(vd_image *img, uint8_t *view)
{
    static const struct { uint64_t off; size_t len; uint8_t val; } w[] = {
        { 5000, 100, 0xee }, { 60000, 20000, 0x11 }, { DISK_SIZE - 50, 50, 0x77 },
        { 0, 1, 0x99 },
    };
    static uint8_t buf[20000];
    vd_error err;
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
        memset(buf, w[i].val, w[i].len);
        assert_int_equal(vd_pwrite(img, buf, w[i].len, w[i].off, &err), 0);
        memset(view + w[i].off, w[i].val, w[i].len);
    }
}

/* The base file still holds its pattern. */
static void assert_base_unchanged(void)
{
    static uint8_t got[DISK_SIZE];
    int fd = open(base_raw, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, got, DISK_SIZE), DISK_SIZE);
    close(fd);
    for (uint64_t i = 0; i < DISK_SIZE; i++)
        if (got[i] != pattern(i))
            fail_msg("base.raw changed at %llu", (unsigned long long)i);
}

static vd_image *open_base(const char *path)
{
    vd_image *img;
    vd_error err;
    vd_open_opts o = { .readonly = true };
    assert_int_equal(vd_open(path, &o, &img, &err), 0);
    return img;
}

static void test_memory(void **state)
{
    (void)state;
    static uint8_t view[DISK_SIZE];
    memcpy(view, model, DISK_SIZE);
    vd_image *base = open_base(base_raw), *ov;
    vd_error err;
    vd_overlay_opts o = { .in_memory = true };
    assert_int_equal(vd_open_overlay(base, &o, &ov, &err), 0);
    assert_ptr_equal(vd_backing(ov), base);
    assert_view(ov, view);
    scribble(ov, view);
    assert_view(ov, view);

    /* block status: the written 4 KiB block at 4096 is the layer's own */
    vd_extents ext;
    vd_extents_init(&ext);
    assert_int_equal(vd_block_status(ov, 4096, 8192, &ext, &err), 0);
    assert_int_equal(ext.v[0].depth, 0);
    assert_int_equal(ext.v[0].len, 4096);
    assert_int_equal(ext.v[1].depth, 1);
    vd_extents_free(&ext);

    /* a discarded block reads as the base again */
    assert_int_equal(vd_discard(ov, 4096, 4096, &err), 0);
    memcpy(view + 4096, model + 4096, 4096);
    assert_view(ov, view);
    assert_int_equal(vd_close(ov, &err), 0);
    assert_base_unchanged();
}

static size_t entries(const char *path)
{
    DIR *d = opendir(path);
    assert_non_null(d);
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static void test_temporary_over_chain(void **state)
{
    (void)state;
    static uint8_t view[DISK_SIZE];
    memcpy(view, model, DISK_SIZE);
    memset(view + 65536, 0x5a, 4096);             /* top.qcow2's own block */
    char tmp[80];
    snprintf(tmp, sizeof tmp, "%s/tmp", dir);
    assert_int_equal(mkdir(tmp, 0700), 0);
    vd_image *base = open_base(base_top), *ov;
    vd_error err;
    vd_overlay_opts o = { .tmpdir = tmp };
    assert_int_equal(vd_open_overlay(base, &o, &ov, &err), 0);
    assert_int_equal(entries(tmp), 0);           /* unlinked once open */
    assert_string_equal(vd_format_name(ov), "qcow2");
    assert_view(ov, view);
    scribble(ov, view);
    assert_view(ov, view);
    assert_int_equal(vd_close(ov, &err), 0);
    assert_base_unchanged();
    rmdir(tmp);
}

/* Exit status of a peer command run on the images (output dropped), -1
 * when it cannot run. */
static int run(const char *const argv[])
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) && WEXITSTATUS(st) != 127 ? WEXITSTATUS(st) : -1;
}

static void test_kept(void **state)
{
    (void)state;
    static uint8_t view[DISK_SIZE];
    memcpy(view, model, DISK_SIZE);
    char kept[80], sub[80], kept_sub[96];
    snprintf(kept, sizeof kept, "%s/kept.qcow2", dir);
    snprintf(sub, sizeof sub, "%s/sub", dir);
    snprintf(kept_sub, sizeof kept_sub, "%s/kept.qcow2", sub);
    vd_image *base = open_base(base_raw), *ov;
    vd_error err;
    vd_overlay_opts o = { .keep_path = kept };
    assert_int_equal(vd_open_overlay(base, &o, &ov, &err), 0);
    scribble(ov, view);

    /* qemu (whose image locks vdisk takes) may read the base but not write
     * it, and may not even read the layer while it is open */
    const char *info_base[] = { "qemu-img", "info", "-f", "raw", base_raw, NULL };
    const char *write_base[] = { "qemu-io", "-f", "raw", "-c", "write 0 512", base_raw, NULL };
    const char *info_kept[] = { "qemu-img", "info", kept, NULL };
    if (run(info_base) < 0)
        fail_msg("qemu-img is not installed (test.sh installs qemu-utils)");
    assert_int_equal(run(info_base), 0);
    assert_int_not_equal(run(write_base), 0);
    assert_int_not_equal(run(info_kept), 0);
    assert_int_equal(vd_close(ov, &err), 0);
    assert_base_unchanged();

    /* reopened as an ordinary image: confined, the base named "base.raw" */
    vd_image *img;
    assert_int_equal(vd_open(kept, &(vd_open_opts){ .readonly = true }, &img, &err), 0);
    vd_info info;
    vd_get_info(img, &info);
    assert_string_equal(info.backing_file, "base.raw");
    assert_string_equal(info.backing_format, "raw");
    assert_view(img, view);
    vd_close(img, NULL);

    /* an existing file is refused, and the base stays the caller's */
    base = open_base(base_raw);
    assert_int_equal(vd_open_overlay(base, &o, &ov, &err), -EEXIST);
    assert_non_null(strstr(err.msg, "kept.qcow2"));
    /* from a subfolder the base is "../base.raw" */
    assert_int_equal(mkdir(sub, 0700), 0);
    o.keep_path = kept_sub;
    assert_int_equal(vd_open_overlay(base, &o, &ov, &err), 0);
    vd_close(ov, NULL);
    assert_int_equal(vd_open(kept_sub, &(vd_open_opts){ .readonly = true }, &img, &err),
                     -EPERM);
    assert_int_equal(vd_open(kept_sub, &(vd_open_opts){ .readonly = true,
                                                        .allow_host_paths = true },
                             &img, &err), 0);
    vd_get_info(img, &info);
    assert_string_equal(info.backing_file, "../base.raw");
    assert_view(img, model);
    vd_close(img, NULL);
}

static void test_refuses_writable_base(void **state)
{
    (void)state;
    vd_image *base, *ov;
    vd_error err;
    assert_int_equal(vd_open(base_raw, NULL, &base, &err), 0);
    assert_int_equal(vd_open_overlay(base, NULL, &ov, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "read-only"));
    vd_close(base, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_temporary_over_chain),
        cmocka_unit_test(test_kept),
        cmocka_unit_test(test_refuses_writable_base),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
