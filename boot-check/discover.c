/* discover.c - find the kernel a disk would boot, without booting firmware:
 * each ext2/3/4 filesystem of the image (partitions through libvdisk, or
 * the whole disk), read through libext2fs (vdisk_ext2), is searched for
 *   1. /boot/grub/grub.cfg: the default menuentry's linux/initrd lines,
 *   2. the newest BLS entry in /boot/loader/entries (*.conf),
 *   3. /boot/extlinux/extlinux.conf: the default label,
 *   4. /vmlinuz + /initrd.img (or /boot/vmlinuz + /boot/initrd.img),
 * each also tried without the /boot prefix, for a separate /boot partition.
 * The kernel and initrd are copied into a private temporary directory too,
 * because qemu (tcg) wants files. */
#include "vdboot.h"
#include "vdisk-ext2.h"
#include "bootcfg.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DISC_MAX_CONFIG (1u << 20)
#define DISC_MAX_ENTRIES 64

struct disc_names { char v[DISC_MAX_ENTRIES][256]; int n; };

static int disc_collect(void *ctx, const char *name, uint32_t ino, unsigned char type)
{
    (void)ino; (void)type;
    struct disc_names *d = ctx;
    size_t l = strlen(name);
    if (l > 5 && l < 256 && !strcmp(name + l - 5, ".conf") && d->n < DISC_MAX_ENTRIES)
        snprintf(d->v[d->n++], 256, "%s", name);
    return 0;
}

static int disc_cmp_desc(const void *a, const void *b)
{
    return -strverscmp((const char *)a, (const char *)b);
}

static int disc_try_bls(vd_ext2 *fs, const char *pfx, struct bootcfg_entry *e)
{
    char dir[300];
    uint32_t ino;
    vd_error ve;
    struct disc_names *names = calloc(1, sizeof(*names));
    snprintf(dir, sizeof(dir), "%s/loader/entries", pfx);
    if (!names || vd_ext2_lookup(fs, dir, true, &ino, &ve) < 0 ||
        vd_ext2_readdir(fs, ino, disc_collect, names, &ve) < 0 || names->n == 0) {
        free(names);
        return -1;
    }
    qsort(names->v, (size_t)names->n, sizeof(names->v[0]), disc_cmp_desc);
    char path[600], *buf;
    size_t len;
    snprintf(path, sizeof(path), "%s/%s", dir, names->v[0]);
    free(names);
    if (vd_ext2_read_file(fs, path, DISC_MAX_CONFIG, &buf, &len, &ve) < 0)
        return -1;
    int rc = bootcfg_bls(buf, e);
    free(buf);
    snprintf(e->via, sizeof(e->via), "%s", path);
    return rc;
}

static int disc_try_file(vd_ext2 *fs, const char *path, int (*parse)(char *, struct bootcfg_entry *),
                         struct bootcfg_entry *e)
{
    char *buf;
    size_t len;
    vd_error ve;
    if (vd_ext2_read_file(fs, path, DISC_MAX_CONFIG, &buf, &len, &ve) < 0)
        return -1;
    int rc = parse(buf, e);
    free(buf);
    snprintf(e->via, sizeof(e->via), "%s", path);
    return rc;
}

/* The entry this filesystem boots, by the order in the file comment. */
static int disc_find_entry(vd_ext2 *fs, struct bootcfg_entry *e)
{
    static const char *const pfx[] = { "/boot", "" };
    char path[300];
    uint32_t ino;
    vd_error ve;
    for (int i = 0; i < 2; i++) {
        memset(e, 0, sizeof(*e));
        snprintf(path, sizeof(path), "%s/grub/grub.cfg", pfx[i]);
        if (disc_try_file(fs, path, bootcfg_grub, e) == 0)
            return 0;
        memset(e, 0, sizeof(*e));
        if (disc_try_bls(fs, pfx[i], e) == 0)
            return 0;
        memset(e, 0, sizeof(*e));
        snprintf(path, sizeof(path), "%s/extlinux/extlinux.conf", pfx[i]);
        if (disc_try_file(fs, path, bootcfg_extlinux, e) == 0)
            return 0;
    }
    for (int i = 1; i >= 0; i--) {
        memset(e, 0, sizeof(*e));
        snprintf(e->linux_path, sizeof(e->linux_path), "%s/vmlinuz", pfx[i]);
        if (vd_ext2_lookup(fs, e->linux_path, true, &ino, &ve) == 0) {
            snprintf(e->initrd_path, sizeof(e->initrd_path), "%s/initrd.img", pfx[i]);
            snprintf(e->via, sizeof(e->via), "%s symlink", e->linux_path);
            return 0;
        }
    }
    return -1;
}

/* Reads a file named by a boot entry: as given, else under /boot (grub
 * paths are relative to the filesystem grub's root is on). */
static int disc_read(vd_ext2 *fs, const char *name, char **buf, size_t *len, char *used,
                     size_t usize)
{
    vd_error ve;
    char p[600];
    snprintf(p, sizeof(p), "%s%s", name[0] == '/' ? "" : "/", name);
    if (vd_ext2_read_file(fs, p, VDBOOT_MAX_BOOT_FILE, buf, len, &ve) == 0) {
        snprintf(used, usize, "%s", p);
        return 0;
    }
    snprintf(p, sizeof(p), "/boot%s%s", name[0] == '/' ? "" : "/", name);
    if (vd_ext2_read_file(fs, p, VDBOOT_MAX_BOOT_FILE, buf, len, &ve) == 0) {
        snprintf(used, usize, "%s", p);
        return 0;
    }
    return -1;
}

static int disc_save(struct boot_files *bf, const char *name, const void *data, size_t len,
                     char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%s", bf->tmpdir, name);
    int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, data, len);
    close(fd);
    return n == (ssize_t)len ? 0 : -1;
}

static int disc_load(vd_ext2 *fs, const struct bootcfg_entry *e, struct boot_files *bf,
                     const char *where, char *err, size_t errlen)
{
    char *k = NULL, *i = NULL, kused[600], iused[600] = "";
    size_t klen, ilen = 0;
    if (disc_read(fs, e->linux_path, &k, &klen, kused, sizeof(kused)) < 0) {
        snprintf(err, errlen, "%s: kernel %s named by %s is missing", where, e->linux_path, e->via);
        return -1;
    }
    if (e->initrd_path[0] && disc_read(fs, e->initrd_path, &i, &ilen, iused, sizeof(iused)) < 0) {
        if (strstr(e->via, "symlink") == NULL) {
            free(k);
            snprintf(err, errlen, "%s: initrd %s named by %s is missing", where, e->initrd_path, e->via);
            return -1;
        }
        i = NULL;   /* /vmlinuz without /initrd.img: boot without one */
    }
    bf->bi.kernel = (uint8_t *)k;
    bf->bi.kernel_len = klen;
    bf->bi.initrd = (uint8_t *)i;
    bf->bi.initrd_len = i ? ilen : 0;
    snprintf(bf->cmdline, sizeof(bf->cmdline), "%s", e->args);
    snprintf(bf->source, sizeof(bf->source), "%.60s: %.120s%s%.120s via %.120s%s%.60s%s", where, kused,
             i ? " + " : "", i ? iused : "", e->via, e->title[0] ? " ('" : "", e->title,
             e->title[0] ? "')" : "");
    snprintf(bf->tmpdir, sizeof(bf->tmpdir), "%s/vdboot.XXXXXX",
             getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(bf->tmpdir)) {
        bf->tmpdir[0] = 0;
        snprintf(err, errlen, "cannot create a temporary directory: %s", strerror(errno));
        return -1;
    }
    if (disc_save(bf, "vmlinuz", k, klen, bf->kernel_path, sizeof(bf->kernel_path)) < 0 ||
        (i && disc_save(bf, "initrd.img", i, ilen, bf->initrd_path, sizeof(bf->initrd_path)) < 0)) {
        snprintf(err, errlen, "cannot write the kernel to %s: %s", bf->tmpdir, strerror(errno));
        return -1;
    }
    return 0;
}

/* One filesystem: 1 = booted entry found and loaded, 0 = nothing here,
 * -1 = an entry found but broken (err says why). */
static int disc_fs(vd_image *img, uint64_t off, uint64_t len, const char *where,
                   struct boot_files *bf, char *err, size_t errlen)
{
    vd_ext2 *fs;
    vd_error ve;
    if (!vd_ext2_probe(img, off, len) || vd_ext2_open(img, off, len, &fs, &ve) < 0)
        return 0;
    struct bootcfg_entry *e = calloc(1, sizeof(*e));
    int rc = 0;
    char w[300];
    snprintf(w, sizeof(w), "%s (%s)", where, vd_ext2_type(fs));
    if (e && disc_find_entry(fs, e) == 0)
        rc = disc_load(fs, e, bf, w, err, errlen) < 0 ? -1 : 1;
    free(e);
    vd_ext2_close(fs);
    return rc;
}

int discover_boot(const char *image, const char *format, struct boot_files *bf,
                  char *err, size_t errlen)
{
    vd_image *img;
    vd_error ve = { 0 };
    vd_open_opts o = { .format = format, .readonly = true };
    if (vd_open(image, &o, &img, &ve) < 0) {
        snprintf(err, errlen, "%s", ve.msg);
        return -1;
    }
    vd_partition_table pt = { 0 };
    int rc = 0;
    char where[64];
    err[0] = 0;
    if (vd_partition_list(img, &pt, &ve) == 0 && pt.n > 0) {
        /* bootable partitions first: that is where a boot loader looks */
        for (int pass = 0; pass < 2 && rc == 0; pass++)
            for (size_t i = 0; i < pt.n && rc == 0; i++) {
                vd_partition *p = &pt.v[i];
                if (p->extended || p->bootable != (pass == 0))
                    continue;
                snprintf(where, sizeof(where), "partition %u", p->index);
                rc = disc_fs(img, p->start, p->length, where, bf, err, errlen);
            }
    } else {
        rc = disc_fs(img, 0, vd_size(img), "whole disk", bf, err, errlen);
    }
    vd_partition_table_free(&pt);
    vd_close(img, NULL);
    if (rc == 1)
        return 0;
    if (rc == 0)
        snprintf(err, errlen, "%s: no kernel found (no ext2/3/4 filesystem with /boot/grub/grub.cfg, "
                 "loader entries, extlinux.conf or /vmlinuz)", image);
    boot_files_free(bf);
    return -1;
}

/* --firmware auto: an EFI system partition (GPT type C12A7328-..., or MBR
 * type 0xEF) means the image boots by UEFI; anything else is left to the
 * BIOS (its MBR code or a GPT BIOS-boot partition).  The ESP's contents are
 * not checked here: a missing loader is for the firmware to report. */
const char *discover_firmware(const char *image, const char *format, char *why, size_t whylen)
{
    vd_image *img;
    vd_error ve = { 0 };
    vd_open_opts o = { .format = format, .readonly = true };
    snprintf(why, whylen, "no EFI system partition");
    if (vd_open(image, &o, &img, &ve) < 0) {
        snprintf(why, whylen, "%s", ve.msg);
        return NULL;
    }
    vd_partition_table pt = { 0 };
    const char *fw = "bios";
    if (vd_partition_list(img, &pt, &ve) == 0)
        for (size_t i = 0; i < pt.n; i++)
            if (!strcmp(pt.v[i].type_guid, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b") ||
                pt.v[i].mbr_type == 0xef) {
                snprintf(why, whylen, "partition %u is an EFI system partition", pt.v[i].index);
                fw = "uefi";
                break;
            }
    vd_partition_table_free(&pt);
    vd_close(img, NULL);
    return fw;
}
