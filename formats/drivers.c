/* drivers.c - the explicit registry of format drivers.
 *
 * Order matters only for ties in probe scores; drivers are listed roughly
 * cheap-first, with raw last because it claims every file with score 1. */
#include "vd-driver.h"

extern const struct vd_driver vd_raw;
extern const struct vd_driver vd_vhd;
extern const struct vd_driver vd_vhdx;
/* extern declarations of further drivers go here, one line each */
extern const struct vd_driver vd_vdi;
extern const struct vd_driver vd_qcow2;
extern const struct vd_driver vd_vmdk;
extern const struct vd_driver vd_parallels;
extern const struct vd_driver vd_qed;
extern const struct vd_driver vd_qcow1;
#ifdef HAVE_LIBNBD
extern const struct vd_driver vd_nbd;
#endif

const struct vd_driver *const vd_drivers[] = {
    /* format drivers, one line each */
    &vd_qcow2,
    &vd_vdi,
    &vd_vmdk,
    &vd_parallels,
    &vd_qed,
    &vd_qcow1,
    &vd_vhdx,
    &vd_vhd,        /* late: its footer is at the end of the file */
#ifdef HAVE_LIBNBD
    &vd_nbd,        /* chosen by URI only, never by probing */
#endif
    &vd_raw,        /* last: the fallback */
    NULL,
};
