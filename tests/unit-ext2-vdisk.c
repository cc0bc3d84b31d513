/* unit-ext2-vdisk.c - the vdisk_ext2 API (used by vdmount and vdboot) on a
 * small ext4 image made with mke2fs/debugfs at the start: lookups with and
 * without following symlinks, read_file limits, readdir stopping early,
 * xattr buffer sizes, errors for missing paths and non-files.  Skipped (77)
 * when mke2fs or debugfs is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk-ext2.h"

static char dir[64];
static vd_image *img;
static vd_ext2 *fs;

static int run(const char *cmd)
{
    int r = system(cmd);
    return r == 0 ? 0 : -1;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/unit-ext2.XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "set -e; cd %s; mkdir -p root/boot root/etc; echo 'menuentry x' > root/boot/grub.cfg;"
             " printf 'abcdefghij' > root/etc/ten; ln -s boot/grub.cfg root/cfg-link;"
             " ln -s /boot root/boot-abs; for i in 1 2 3 4 5; do echo $i > root/etc/f$i; done;"
             " truncate -s 16M fs.img; mke2fs -q -F -t ext4 -b 1024 -d root fs.img;"
             " debugfs -w -R 'ea_set /etc/ten user.k valuevalue' fs.img >/dev/null 2>&1",
             dir);
    if (run(cmd) < 0)
        return -1;
    char path[128];
    snprintf(path, sizeof path, "%s/fs.img", dir);
    vd_open_opts o = { .format = "raw", .readonly = true };
    if (vd_open(path, &o, &img, NULL) < 0)
        return -1;
    if (!vd_ext2_probe(img, 0, vd_size(img)))
        return -1;
    return vd_ext2_open(img, 0, vd_size(img), &fs, NULL) < 0 ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    vd_ext2_close(fs);
    vd_close(img, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return run(cmd);
}

static void test_lookup(void **state)
{
    (void)state;
    uint32_t a, b, root;
    struct stat st;
    assert_int_equal(vd_ext2_lookup(fs, "/", false, &root, NULL), 0);
    assert_int_equal(root, VD_EXT2_ROOT_INO);
    assert_int_equal(vd_ext2_lookup(fs, "/cfg-link", false, &a, NULL), 0);
    assert_int_equal(vd_ext2_stat(fs, a, &st, NULL), 0);
    assert_true(S_ISLNK(st.st_mode));
    assert_int_equal(vd_ext2_lookup(fs, "/cfg-link", true, &b, NULL), 0);
    assert_int_equal(vd_ext2_stat(fs, b, &st, NULL), 0);
    assert_true(S_ISREG(st.st_mode));
    /* an absolute symlink in the middle resolves inside this file system */
    assert_int_equal(vd_ext2_lookup(fs, "/boot-abs/grub.cfg", false, &a, NULL), 0);
    assert_int_equal(a, b);
    vd_error err = { 0 };
    assert_int_equal(vd_ext2_lookup(fs, "/etc/missing", false, &a, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "/etc/missing"));
    assert_int_equal(vd_ext2_lookup(fs, "/etc/ten/x", false, &a, NULL), -ENOTDIR);
    char target[64];
    assert_int_equal(vd_ext2_lookup(fs, "cfg-link", false, &a, NULL), 0);
    assert_int_equal(vd_ext2_readlink(fs, a, target, sizeof target, NULL), 0);
    assert_string_equal(target, "boot/grub.cfg");
    assert_int_equal(vd_ext2_readlink(fs, b, target, sizeof target, NULL), -EINVAL);
}

static void test_read(void **state)
{
    (void)state;
    char *buf;
    size_t len;
    assert_int_equal(vd_ext2_read_file(fs, "/cfg-link", 1024, &buf, &len, NULL), 0);
    assert_int_equal(len, 12);
    assert_string_equal(buf, "menuentry x\n");
    free(buf);
    vd_error err = { 0 };
    assert_int_equal(vd_ext2_read_file(fs, "/etc/ten", 9, &buf, &len, &err), -EFBIG);
    assert_null(buf);
    assert_int_equal(vd_ext2_read_file(fs, "/etc", 1024, &buf, &len, NULL), -EISDIR);
    uint32_t ino;
    char small[4];
    assert_int_equal(vd_ext2_lookup(fs, "/etc/ten", false, &ino, NULL), 0);
    assert_int_equal(vd_ext2_pread(fs, ino, small, 4, 3, NULL), 4);
    assert_memory_equal(small, "defg", 4);
    assert_int_equal(vd_ext2_pread(fs, ino, small, 4, 8, NULL), 2);   /* short at EOF */
    assert_int_equal(vd_ext2_pread(fs, ino, small, 4, 100, NULL), 0);
}

struct count {
    int n, stop_at;
    bool saw_dot;
};

static int count_cb(void *ctx, const char *name, uint32_t ino, unsigned char type)
{
    struct count *c = ctx;
    (void)ino;
    if (!strcmp(name, "."))
        c->saw_dot = type == DT_DIR || type == DT_UNKNOWN;
    return ++c->n == c->stop_at ? 42 : 0;
}

static void test_readdir(void **state)
{
    (void)state;
    uint32_t etc;
    assert_int_equal(vd_ext2_lookup(fs, "/etc", false, &etc, NULL), 0);
    struct count c = { 0, 0, false };
    assert_int_equal(vd_ext2_readdir(fs, etc, count_cb, &c, NULL), 0);
    assert_int_equal(c.n, 2 + 6);     /* . .. ten f1..f5 */
    assert_true(c.saw_dot);
    struct count s = { 0, 3, false };
    assert_int_equal(vd_ext2_readdir(fs, etc, count_cb, &s, NULL), 42);
    assert_int_equal(s.n, 3);
    uint32_t ten;
    assert_int_equal(vd_ext2_lookup(fs, "/etc/ten", false, &ten, NULL), 0);
    assert_int_equal(vd_ext2_readdir(fs, ten, count_cb, &c, NULL), -ENOTDIR);
}

static void test_xattr(void **state)
{
    (void)state;
    uint32_t ino;
    char buf[64];
    assert_int_equal(vd_ext2_lookup(fs, "/etc/ten", false, &ino, NULL), 0);
    assert_int_equal(vd_ext2_listxattr(fs, ino, NULL, 0, NULL), 7);   /* "user.k\0" */
    assert_int_equal(vd_ext2_listxattr(fs, ino, buf, 3, NULL), -ERANGE);
    assert_int_equal(vd_ext2_listxattr(fs, ino, buf, sizeof buf, NULL), 7);
    assert_string_equal(buf, "user.k");
    assert_int_equal(vd_ext2_getxattr(fs, ino, "user.k", NULL, 0, NULL), 10);
    assert_int_equal(vd_ext2_getxattr(fs, ino, "user.k", buf, 4, NULL), -ERANGE);
    assert_int_equal(vd_ext2_getxattr(fs, ino, "user.k", buf, sizeof buf, NULL), 10);
    assert_memory_equal(buf, "valuevalue", 10);
    assert_int_equal(vd_ext2_getxattr(fs, ino, "user.none", buf, sizeof buf, NULL), -ENODATA);
    assert_string_equal(vd_ext2_type(fs), "ext4");
}

int main(void)
{
    if (system("command -v mke2fs >/dev/null && command -v debugfs >/dev/null") != 0) {
        printf("SKIP: mke2fs/debugfs not installed\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_read),
        cmocka_unit_test(test_readdir),
        cmocka_unit_test(test_xattr),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
