/* bootcfg.h - the boot loader configurations vdboot reads to find the
 * kernel a disk boots: grub.cfg, BLS entries, extlinux.conf.  Text comes
 * from the guest's filesystem, so it is untrusted: every parser bounds what
 * it copies into the fixed fields and never reads past the NUL. */
#ifndef VDBOOT_BOOTCFG_H
#define VDBOOT_BOOTCFG_H

struct bootcfg_entry {
    char linux_path[512], initrd_path[512], args[2048], title[256], via[600];
};

/* Each parses a NUL-terminated config (modified while parsing and restored)
 * into *e (zeroed by the caller); 0 when a kernel path was found, else -1. */
/* grub.cfg: the default menuentry (by number, "N>M" into a submenu, or title). */
int bootcfg_grub(char *cfg, struct bootcfg_entry *e);
/* extlinux.conf / syslinux.cfg: the "default" label (or the last one). */
int bootcfg_extlinux(char *cfg, struct bootcfg_entry *e);
/* One Boot Loader Specification entry (a .conf file in loader/entries). */
int bootcfg_bls(char *cfg, struct bootcfg_entry *e);

#endif
