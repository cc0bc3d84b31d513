/* fuzz-ova.c - libFuzzer target: an OVA (tar) read as `ovatool verify` reads
 * it: members walked with libarchive, names checked, digests taken, the
 * descriptor and manifest parsed, the manifest compared, a certificate (if a
 * member has one) parsed and checked.  Nothing is extracted (no folder). */
#include "ovatool.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    snprintf(fuzz_path, sizeof fuzz_path, "%s/a.ova", fuzz_dir);
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
    char err[8192];
    struct appliance ap;
    memset(&ap, 0, sizeof ap);
    if (appliance_read(fuzz_path, NULL, 0, &ap, err, sizeof err) == 0) {
        int checked = 0;
        appliance_verify_manifest(&ap, err, sizeof err, &checked);
        if (ap.cert_text) {
            struct cert_result cr;
            cert_verify(ap.cert_text, ap.cert_len, ap.mf_text ? ap.mf_text : "", ap.mf_len,
                        "fuzz.mf", NULL, &cr);
        }
    }
    appliance_free(&ap);
    return 0;
}
