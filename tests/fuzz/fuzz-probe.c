/* fuzz-probe.c - libFuzzer target: every registered driver's probe on the
 * input, as the core calls it (head of up to 64 KiB, tail of up to 1 KiB,
 * the file size).  Probes see the least checked bytes of all; this target
 * runs at millions of inputs a minute. */
#include "vd-driver.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t head = size < 65536 ? size : 65536;
    size_t tail = size < 1024 ? size : 1024;
    /* Copies, so reads past the given lengths are caught by ASan. */
    uint8_t *h = malloc(head ? head : 1), *t = malloc(tail ? tail : 1);
    if (!h || !t)
        abort();
    memcpy(h, data, head);
    memcpy(t, data + size - tail, tail);
    for (size_t i = 0; vd_drivers[i]; i++) {
        if (!vd_drivers[i]->probe)
            continue;
        int s = vd_drivers[i]->probe(h, head, t, tail, size);
        if (s < 0 || s > 100)
            abort();         /* scores are 0..100 */
    }
    free(h);
    free(t);
    return 0;
}
