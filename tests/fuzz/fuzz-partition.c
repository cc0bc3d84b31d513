/* fuzz-partition.c - libFuzzer target: MBR (with the extended/logical
 * chain) and GPT parsing (libvdisk/partition.c) on a raw disk made of the
 * input, as vdmount and vdboot call it.  Every listed partition must lie
 * inside the disk. */
#include "vdisk.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char fuzz_dir[256], fuzz_path[300];
static int fuzz_fd = -1;

static void fuzz_cleanup(void)
{
    if (fuzz_fd >= 0)
        close(fuzz_fd);
    unlink(fuzz_path);
    rmdir(fuzz_dir);
}

static int fuzz_setup(void)
{
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(fuzz_dir, sizeof fuzz_dir, "%s/vdfuzz.XXXXXX", base);
    if (!mkdtemp(fuzz_dir))
        return -1;
    snprintf(fuzz_path, sizeof fuzz_path, "%s/disk", fuzz_dir);
    fuzz_fd = open(fuzz_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fuzz_fd < 0)
        return -1;
    atexit(fuzz_cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fuzz_fd < 0 && fuzz_setup() < 0)
        abort();
    if (ftruncate(fuzz_fd, 0) < 0 || pwrite(fuzz_fd, data, size, 0) != (ssize_t)size)
        abort();
    vd_image *img;
    vd_error err;
    vd_open_opts o = { .format = "raw", .readonly = true, .no_backing = true };
    if (vd_open(fuzz_path, &o, &img, &err) < 0)
        return 0;
    vd_partition_table t;
    if (vd_partition_list(img, &t, &err) == 0) {
        uint64_t disk = vd_size(img);
        for (size_t i = 0; i < t.n; i++)
            if (t.v[i].start > disk || t.v[i].length > disk - t.v[i].start)
                abort();
        vd_partition_table_free(&t);
    }
    vd_close(img, NULL);
    return 0;
}
