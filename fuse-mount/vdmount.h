/* vdmount.h - shared between the parts of the vdmount tool. */
#ifndef VDMOUNT_H
#define VDMOUNT_H

#define FUSE_USE_VERSION 31
#include <fuse.h>

#include "view.h"

/* Options that the FUSE operations need to see. */
struct vm_options {
    bool writable;        /* --rw or --overlay: disk and pN accept writes */
    bool page_cache;      /* --page-cache: disk and pN through the kernel's cache */
    uint64_t disk_size;
};
extern struct vm_options vm_options;

extern const struct fuse_operations vm_fuse_ops;

/* --ls and --cat (lscat.c): exit status 0 or 1, messages on stderr. */
int vm_ls(struct view *v, const char *path);
int vm_cat(struct view *v, const char *path);

#endif
