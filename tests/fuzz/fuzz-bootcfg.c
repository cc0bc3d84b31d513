/* fuzz-bootcfg.c - libFuzzer target: the boot loader configuration parsers
 * vdboot runs on text read from a guest's /boot (boot-check/bootcfg.c).  The
 * first byte picks grub.cfg, extlinux.conf or a BLS entry; the rest is the
 * file, NUL-terminated in an exact-size copy so ASan sees any overread. */
#include "bootcfg.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t n = size - 1;
    char *cfg = malloc(n + 1);
    if (!cfg)
        abort();
    memcpy(cfg, data + 1, n);
    cfg[n] = 0;
    struct bootcfg_entry e;
    memset(&e, 0, sizeof e);
    switch (data[0] % 3) {
    case 0: bootcfg_grub(cfg, &e); break;
    case 1: bootcfg_extlinux(cfg, &e); break;
    default: bootcfg_bls(cfg, &e); break;
    }
    /* Every field must stay a terminated string inside its array. */
    if (!memchr(e.linux_path, 0, sizeof e.linux_path) || !memchr(e.initrd_path, 0, sizeof e.initrd_path) ||
        !memchr(e.args, 0, sizeof e.args) || !memchr(e.title, 0, sizeof e.title))
        abort();
    /* The parsers cut lines in place and must put the text back. */
    if (memcmp(cfg, data + 1, strnlen(cfg, n)) != 0)
        abort();
    free(cfg);
    return 0;
}
