/* writelog.c - for power-loss tests: a log of every change made to files
 * opened through vd_file.
 *
 * With VDISK_TEST_WRITE_LOG=PATH in the environment, each completed write,
 * zeroing, truncation and sync is appended to PATH as one record (one
 * writev on an O_APPEND descriptor, so records from threads or from the
 * test program itself never interleave).  tests/powerloss.py rebuilds from
 * it what a disk could hold after a power loss at any record: everything a
 * later sync of the same file made durable, and any subset of the rest.
 *
 * Record: "VDWL", op (u32: 1 write, 2 zero, 3 truncate, 4 sync, 5 mark),
 * path length (u32), offset (u64), length (u64), the path, then for
 * writes the data.  Little-endian.  Without the variable nothing is done
 * beyond one check.
 *
 * Built only into the test library (libvdisk/meson.build: vdisk-test, with
 * -DVD_TEST_HOOKS), never into the installed libvdisk. */
#include "vd-driver.h"
#include "vd-internal.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

static int vd_wl_fd = -1;
static pthread_once_t vd_wl_once = PTHREAD_ONCE_INIT;

static void vd_wl_open(void)
{
    const char *p = getenv("VDISK_TEST_WRITE_LOG");
    if (p && *p)
        vd_wl_fd = open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

void vd_wl_record(const vd_file *f, enum vd_wl_op op, uint64_t off, uint64_t len,
                  const void *data)
{
    pthread_once(&vd_wl_once, vd_wl_open);
    if (vd_wl_fd < 0)
        return;
    uint8_t h[28];
    size_t plen = strlen(f->path);
    memcpy(h, "VDWL", 4);
    vd_put_le32(h + 4, (uint32_t)op);
    vd_put_le32(h + 8, (uint32_t)plen);
    vd_put_le64(h + 12, off);
    vd_put_le64(h + 20, len);
    struct iovec iov[3] = {
        { h, sizeof h }, { f->path, plen }, { (void *)data, op == VD_WL_WRITE ? len : 0 },
    };
    /* A test tool: a failed or short log write only weakens the test. */
    if (writev(vd_wl_fd, iov, 3) < 0)
        return;
}
