/* guestdrv.c - which disk drivers the guest on an imported disk can boot
 * with, so import can give its disks a bus the guest will find its root on.
 *
 * Read through libvdisk and the public vdisk-ext2.h from every ext2/3/4 file
 * system of the disk (partitions, or the whole disk): the kernel's
 * modules.builtin (/lib/modules/KV or /usr/lib/modules/KV), and the initramfs
 * (/boot/initrd.img-KV, initramfs-KV.img, initrd-KV, or at the top of a
 * separate /boot file system).  The initramfs is what the kernel unpacks: a
 * sequence of newc cpio archives, each plain or compressed (gzip, zstd, xz),
 * NUL padding between them - an uncompressed early-microcode archive and a
 * compressed main one is the usual layout.  It is parsed here as a stream,
 * bounded (compressed size, unpacked bytes, members, name length), so a
 * hostile image costs at most a few seconds and never memory in proportion
 * to what it claims.  A module counts when a member is named NAME.ko (plain
 * or .xz/.zst/.gz); a modules.builtin inside the initramfs counts too. */
#include "ovatool.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>
#ifdef OVATOOL_HAVE_LZMA
#include <lzma.h>
#endif

#define GD_MAX_INITRD (512u << 20)        /* an initramfs read into memory */
#define GD_MAX_UNPACKED (1ull << 30)      /* bytes unpacked per initramfs */
#define GD_MAX_MEMBERS 500000u
#define GD_MAX_NAME 4096u
#define GD_MAX_BUILTIN (4u << 20)
#define GD_CHUNK (256u << 10)

static const char *const gd_names[GD_N] = {
    [GD_VIRTIO_BLK] = "virtio_blk", [GD_VIRTIO_SCSI] = "virtio_scsi",
    [GD_VIRTIO_PCI] = "virtio_pci", [GD_AHCI] = "ahci", [GD_ATA_PIIX] = "ata_piix",
    [GD_SYM53C8XX] = "sym53c8xx", [GD_MPTSAS] = "mptsas", [GD_VMW_PVSCSI] = "vmw_pvscsi",
    [GD_NVME] = "nvme", [GD_SD_MOD] = "sd_mod", [GD_XEN_BLKFRONT] = "xen_blkfront",
};

const char *guest_driver_name(enum gd_drv d)
{
    return d < GD_N ? gd_names[d] : "?";
}

/* The driver a path names ("kernel/drivers/block/virtio_blk.ko.zst"), -1 if
 * none of ours.  Module names treat '-' and '_' alike. */
static int gd_module_of(const char *path, size_t len)
{
    static const char *const ext[] = { ".ko", ".ko.xz", ".ko.zst", ".ko.gz" };
    const char *base = path;
    for (size_t i = 0; i < len; i++)
        if (path[i] == '/')
            base = path + i + 1;
    size_t bl = len - (size_t)(base - path);
    for (size_t e = 0; e < 4; e++) {
        size_t el = strlen(ext[e]);
        if (bl <= el || memcmp(base + bl - el, ext[e], el) != 0)
            continue;
        size_t sl = bl - el;
        for (int d = 0; d < GD_N; d++) {
            if (strlen(gd_names[d]) != sl)
                continue;
            size_t k = 0;
            while (k < sl && (base[k] == gd_names[d][k] || (base[k] == '-' && gd_names[d][k] == '_')))
                k++;
            if (k == sl)
                return d;
        }
    }
    return -1;
}

/* Each line of a modules.builtin names a module built into the kernel. */
static unsigned gd_builtin_mask(const char *buf, size_t len)
{
    unsigned m = 0;
    for (size_t s = 0; s < len;) {
        size_t e = s;
        while (e < len && buf[e] != '\n')
            e++;
        int d = gd_module_of(buf + s, e - s);
        if (d >= 0)
            m |= 1u << d;
        s = e + 1;
    }
    return m;
}

/* ---- the cpio stream ---------------------------------------------------- */

enum gd_cpio_state { CP_BETWEEN, CP_HDR, CP_NAME, CP_DATA, CP_SKIP };

struct gd_cpio {
    enum gd_cpio_state st;
    uint64_t off;                 /* bytes of this stream seen, for messages */
    unsigned char hdr[110];
    size_t have;                  /* bytes of hdr or name gathered */
    char name[GD_MAX_NAME + 4];
    uint32_t namesize, filesize;
    uint64_t left, skip;          /* data bytes left; padding to skip after */
    bool trailer;
    unsigned members;
    char *keep;                   /* a modules.builtin being read */
    size_t keep_len;
    bool keeping;
    unsigned mask, builtin;       /* modules found; modules.builtin inside */
    char err[200];                /* set: the stream is malformed, stop */
    bool stop;                    /* set: data that is not cpio (maybe compressed) */
};

static int gd_hex8(const unsigned char *p, uint32_t *v)
{
    uint32_t x = 0;
    for (int i = 0; i < 8; i++) {
        int c = p[i], d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
                          c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        x = x << 4 | (uint32_t)d;
    }
    *v = x;
    return 0;
}

static void gd_cpio_name_done(struct gd_cpio *c)
{
    c->trailer = !strcmp(c->name, "TRAILER!!!");
    size_t nl = strlen(c->name);
    int d = gd_module_of(c->name, nl);
    if (d >= 0)
        c->mask |= 1u << d;
    c->keeping = false;
    if (nl >= 15 && !strcmp(c->name + nl - 15, "modules.builtin") &&
        (nl == 15 || c->name[nl - 16] == '/') && c->filesize <= GD_MAX_BUILTIN) {
        free(c->keep);
        c->keep = malloc(c->filesize + 1u);
        c->keep_len = 0;
        c->keeping = c->keep != NULL;
    }
    c->left = c->filesize;
    c->skip = (4 - c->filesize % 4) % 4;
    c->st = CP_DATA;
}

/* Consume what of buf[0..len) is cpio; sets c->stop at data that is not
 * (outside an archive), c->err on a malformed archive.  Returns bytes used. */
static size_t gd_cpio_feed(struct gd_cpio *c, const unsigned char *buf, size_t len)
{
    size_t i = 0;
    while (i < len && !c->err[0] && !c->stop) {
        switch (c->st) {
        case CP_BETWEEN:             /* NUL padding, or the next archive */
            if (buf[i] == 0) {
                i++;
                c->off++;
                break;
            }
            if (buf[i] != '0') {
                c->stop = true;
                break;
            }
            c->st = CP_HDR;
            c->have = 0;
            c->trailer = false;
            /* fall through */
        case CP_HDR: {
            size_t n = sizeof c->hdr - c->have < len - i ? sizeof c->hdr - c->have : len - i;
            memcpy(c->hdr + c->have, buf + i, n);
            c->have += n;
            i += n;
            c->off += n;
            if (c->have < sizeof c->hdr)
                break;
            if (memcmp(c->hdr, "070701", 6) && memcmp(c->hdr, "070702", 6)) {
                snprintf(c->err, sizeof c->err, "cpio header at offset %llu: magic is not "
                         "070701/070702 (newc)", (unsigned long long)(c->off - 110));
                break;
            }
            if (gd_hex8(c->hdr + 54, &c->filesize) < 0 || gd_hex8(c->hdr + 94, &c->namesize) < 0 ||
                c->namesize == 0 || c->namesize > GD_MAX_NAME) {
                snprintf(c->err, sizeof c->err, "cpio header at offset %llu: bad c_filesize or "
                         "c_namesize", (unsigned long long)(c->off - 110));
                break;
            }
            if (++c->members > GD_MAX_MEMBERS) {
                snprintf(c->err, sizeof c->err, "more than %u cpio members", GD_MAX_MEMBERS);
                break;
            }
            c->have = 0;
            c->st = CP_NAME;
            break;
        }
        case CP_NAME: {
            /* the name and its padding: header + name end on 4 bytes */
            size_t want = c->namesize + (4 - (110 + c->namesize) % 4) % 4;
            size_t n = want - c->have < len - i ? want - c->have : len - i;
            memcpy(c->name + c->have, buf + i, n);
            c->have += n;
            i += n;
            c->off += n;
            if (c->have < want)
                break;
            if (c->name[c->namesize - 1] != 0) {
                snprintf(c->err, sizeof c->err, "cpio member name at offset %llu is not "
                         "NUL-terminated", (unsigned long long)(c->off - want));
                break;
            }
            gd_cpio_name_done(c);
            break;
        }
        case CP_DATA: {
            size_t n = c->left < len - i ? (size_t)c->left : len - i;
            if (c->keeping) {
                memcpy(c->keep + c->keep_len, buf + i, n);
                c->keep_len += n;
            }
            i += n;
            c->off += n;
            c->left -= n;
            if (c->left)
                break;
            if (c->keeping) {
                c->builtin |= gd_builtin_mask(c->keep, c->keep_len);
                c->keeping = false;
            }
            c->st = CP_SKIP;
        }
            /* fall through */
        case CP_SKIP: {
            size_t n = c->skip < len - i ? (size_t)c->skip : len - i;
            i += n;
            c->off += n;
            c->skip -= n;
            if (!c->skip)
                c->st = c->trailer ? CP_BETWEEN : CP_HDR;
            c->have = 0;
            break;
        }
        }
    }
    return i;
}

/* ---- compressed parts ----------------------------------------------------- */

struct gd_unpack {
    struct gd_cpio *cp;
    uint64_t total;
    char err[240];
};

/* Feed unpacked bytes to the cpio parser; false to stop. */
static bool gd_out(struct gd_unpack *u, const unsigned char *b, size_t n, uint64_t at)
{
    if ((u->total += n) > GD_MAX_UNPACKED) {
        snprintf(u->err, sizeof u->err, "unpacks past %llu MiB: not read further",
                 GD_MAX_UNPACKED >> 20);
        return false;
    }
    gd_cpio_feed(u->cp, b, n);
    if (u->cp->stop) {
        snprintf(u->err, sizeof u->err, "the data compressed at offset %llu is not a cpio archive",
                 (unsigned long long)at);
        return false;
    }
    return !u->cp->err[0];
}

/* Each returns the compressed bytes used (one stream), or 0 with u->err. */
static size_t gd_gunzip(struct gd_unpack *u, const unsigned char *in, size_t len, uint64_t at,
                        unsigned char *out)
{
    z_stream z = { 0 };
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
        return 0;
    z.next_in = (unsigned char *)in;
    z.avail_in = len > UINT32_MAX ? UINT32_MAX : (uInt)len;
    int r = Z_OK;
    while (r == Z_OK) {
        z.next_out = out;
        z.avail_out = GD_CHUNK;
        r = inflate(&z, Z_NO_FLUSH);
        if ((r == Z_OK || r == Z_STREAM_END) && !gd_out(u, out, GD_CHUNK - z.avail_out, at))
            break;
        if (r == Z_BUF_ERROR || (r == Z_OK && z.avail_in == 0 && z.avail_out != 0))
            r = Z_DATA_ERROR;   /* truncated */
    }
    size_t used = r == Z_STREAM_END ? (size_t)z.total_in : 0;
    if (r != Z_STREAM_END && !u->err[0])
        snprintf(u->err, sizeof u->err, "gzip data at offset %llu is corrupt or truncated",
                 (unsigned long long)at);
    inflateEnd(&z);
    return used;
}

static size_t gd_unzstd(struct gd_unpack *u, const unsigned char *in, size_t len, uint64_t at,
                        unsigned char *out)
{
    ZSTD_DCtx *z = ZSTD_createDCtx();
    if (!z)
        return 0;
    /* a window of at most 128 MiB, whatever the frame asks for */
    ZSTD_DCtx_setParameter(z, ZSTD_d_windowLogMax, 27);
    ZSTD_inBuffer ib = { in, len, 0 };
    size_t r = 1, used = 0;
    while (r != 0) {
        ZSTD_outBuffer ob = { out, GD_CHUNK, 0 };
        size_t before = ib.pos;
        r = ZSTD_decompressStream(z, &ob, &ib);
        if (ZSTD_isError(r) || (ob.pos == 0 && ib.pos == before && r != 0)) {
            snprintf(u->err, sizeof u->err, "zstd data at offset %llu is corrupt or truncated%s%s",
                     (unsigned long long)at, ZSTD_isError(r) ? ": " : "",
                     ZSTD_isError(r) ? ZSTD_getErrorName(r) : "");
            break;
        }
        if (!gd_out(u, out, ob.pos, at))
            break;
        if (r == 0)
            used = ib.pos;
    }
    ZSTD_freeDCtx(z);
    return used;
}

#ifdef OVATOOL_HAVE_LZMA
static size_t gd_unxz(struct gd_unpack *u, const unsigned char *in, size_t len, uint64_t at,
                      unsigned char *out)
{
    lzma_stream s = LZMA_STREAM_INIT;
    if (lzma_stream_decoder(&s, 256u << 20, 0) != LZMA_OK)
        return 0;
    s.next_in = in;
    s.avail_in = len;
    lzma_ret r = LZMA_OK;
    while (r == LZMA_OK) {
        s.next_out = out;
        s.avail_out = GD_CHUNK;
        r = lzma_code(&s, LZMA_FINISH);
        if ((r == LZMA_OK || r == LZMA_STREAM_END) && !gd_out(u, out, GD_CHUNK - s.avail_out, at))
            break;
    }
    size_t used = r == LZMA_STREAM_END ? (size_t)s.total_in : 0;
    if (r != LZMA_STREAM_END && !u->err[0])
        snprintf(u->err, sizeof u->err, "xz data at offset %llu is corrupt or truncated",
                 (unsigned long long)at);
    lzma_end(&s);
    return used;
}
#endif

/* Walk an initramfs image: the modules it holds into g->initrd (and a
 * modules.builtin inside it into g->builtin); what could not be read goes
 * to g->note. */
void guest_scan_initramfs(const unsigned char *b, size_t n, struct guest_drivers *g)
{
    struct gd_cpio *c = calloc(1, sizeof *c);
    unsigned char *out = malloc(GD_CHUNK);
    struct gd_unpack u = { .cp = c };
    size_t pos = 0;
    while (c && out && pos < n && !c->err[0] && !u.err[0]) {
        c->stop = false;
        pos += gd_cpio_feed(c, b + pos, n - pos);
        if (!c->stop || c->err[0])
            break;
        const unsigned char *p = b + pos;
        size_t left = n - pos, used = 0;
        c->stop = false;        /* what follows must be cpio once unpacked */
        if (left >= 2 && p[0] == 0x1f && (p[1] == 0x8b || p[1] == 0x9e))
            used = gd_gunzip(&u, p, left, pos, out);
        else if (left >= 4 && !memcmp(p, "\x28\xb5\x2f\xfd", 4))
            used = gd_unzstd(&u, p, left, pos, out);
#ifdef OVATOOL_HAVE_LZMA
        else if (left >= 6 && !memcmp(p, "\xfd" "7zXZ\0", 6))
            used = gd_unxz(&u, p, left, pos, out);
#endif
        else
            snprintf(u.err, sizeof u.err, "data at offset %zu is neither cpio nor gzip/zstd%s "
                     "(not read)", pos,
#ifdef OVATOOL_HAVE_LZMA
                     "/xz"
#else
                     ""
#endif
            );
        if (!used)
            break;
        pos += used;
    }
    if (c) {
        g->initrd |= c->mask;
        g->builtin |= c->builtin;
        if (c->builtin)
            g->builtin_known = true;
        if (c->err[0] || u.err[0])
            snprintf(g->note, sizeof g->note, "%s: %s", g->initrd_path, c->err[0] ? c->err : u.err);
        else if (c->st != CP_BETWEEN)
            snprintf(g->note, sizeof g->note, "%s: ends inside a cpio member", g->initrd_path);
        free(c->keep);
    }
    free(c);
    free(out);
}

/* ---- the file systems ----------------------------------------------------- */
#ifdef OVATOOL_HAVE_EXT2
#include "vdisk-ext2.h"

struct gd_dir { char best[256]; const char *const *pfx; };

/* Keep the newest name starting with one of the prefixes. */
static int gd_pick(void *ctx, const char *name, uint32_t ino, unsigned char type)
{
    (void)ino; (void)type;
    struct gd_dir *d = ctx;
    for (const char *const *p = d->pfx; *p; p++) {
        size_t l = strlen(*p);
        if (strncmp(name, *p, l) || strlen(name) >= sizeof d->best || strstr(name, ".old") ||
            strstr(name, ".bak"))
            continue;
        if (!d->best[0] || strverscmp(name, d->best) > 0)
            snprintf(d->best, sizeof d->best, "%s", name);
    }
    return 0;
}

static bool gd_newest(vd_ext2 *fs, const char *dir, const char *const *pfx, char *out, size_t len)
{
    struct gd_dir d = { .pfx = pfx };
    uint32_t ino;
    vd_error ve;
    if (vd_ext2_lookup(fs, dir, true, &ino, &ve) < 0 || vd_ext2_readdir(fs, ino, gd_pick, &d, &ve) < 0 ||
        !d.best[0])
        return false;
    snprintf(out, len, "%s%s%s", dir, dir[1] ? "/" : "", d.best);
    return true;
}

static void gd_scan_fs(vd_ext2 *fs, const char *where, struct guest_drivers *g)
{
    static const char *const kv_pfx[] = { "", NULL };
    static const char *const ird_pfx[] = { "initrd.img", "initramfs-", "initrd-", "initrd", NULL };
    static const char *const mod_dirs[] = { "/lib/modules", "/usr/lib/modules" };
    char path[600];
    vd_error ve;
    if (!g->builtin_known)
        for (int i = 0; i < 2; i++) {
            char kv[300];
            if (!gd_newest(fs, mod_dirs[i], kv_pfx, kv, sizeof kv) || strstr(kv, "/."))
                continue;
            snprintf(path, sizeof path, "%s/modules.builtin", kv);
            char *buf;
            size_t len;
            if (vd_ext2_read_file(fs, path, GD_MAX_BUILTIN, &buf, &len, &ve) < 0)
                continue;
            g->builtin |= gd_builtin_mask(buf, len);
            g->builtin_known = true;
            free(buf);
            snprintf(g->builtin_path, sizeof g->builtin_path, "%s:%s", where, path);
            g->found = true;
            break;
        }
    if (g->initrd_path[0])
        return;
    static const char *const boot_dirs[] = { "/boot", "/" };
    for (int i = 0; i < 2; i++) {
        if (!gd_newest(fs, boot_dirs[i], ird_pfx, path, sizeof path))
            continue;
        char *buf;
        size_t len;
        g->found = true;
        if (vd_ext2_read_file(fs, path, GD_MAX_INITRD, &buf, &len, &ve) < 0) {
            /* a dangling /initrd.img (its /boot a separate file system),
             * or too large: the next place may have it */
            snprintf(g->note, sizeof g->note, "%.60s:%.300s: %.500s", where, path, ve.msg);
            continue;
        }
        snprintf(g->initrd_path, sizeof g->initrd_path, "%s:%s", where, path);
        g->note[0] = 0;
        guest_scan_initramfs((unsigned char *)buf, len, g);
        free(buf);
        return;
    }
}

int guest_drivers_scan(const char *disk, const char *format, struct guest_drivers *g)
{
    memset(g, 0, sizeof *g);
    vd_image *img;
    vd_error ve = { 0 };
    if (vd_open(disk, &(vd_open_opts){ .format = format, .readonly = true }, &img, &ve) < 0) {
        snprintf(g->note, sizeof g->note, "%s", ve.msg);
        return -1;
    }
    vd_partition_table pt = { 0 };
    char where[64];
    struct { uint64_t off, len; unsigned idx; } fss[64];
    size_t nfs = 0;
    if (vd_partition_list(img, &pt, &ve) == 0 && pt.n > 0) {
        for (size_t i = 0; i < pt.n && nfs < 64; i++)
            if (!pt.v[i].extended)
                fss[nfs++] = (typeof(fss[0])){ pt.v[i].start, pt.v[i].length, pt.v[i].index };
    } else {
        fss[nfs++] = (typeof(fss[0])){ 0, vd_size(img), 0 };
    }
    vd_partition_table_free(&pt);
    for (size_t i = 0; i < nfs; i++) {
        vd_ext2 *fs;
        if (!vd_ext2_probe(img, fss[i].off, fss[i].len) ||
            vd_ext2_open(img, fss[i].off, fss[i].len, &fs, &ve) < 0)
            continue;
        if (fss[i].idx)
            snprintf(where, sizeof where, "partition %u", fss[i].idx);
        else
            snprintf(where, sizeof where, "whole disk");
        gd_scan_fs(fs, where, g);
        vd_ext2_close(fs);
    }
    vd_close(img, NULL);
    return 0;
}

#else /* no libext2fs: nothing can be read from the guest's file systems */

int guest_drivers_scan(const char *disk, const char *format, struct guest_drivers *g)
{
    (void)disk; (void)format;
    memset(g, 0, sizeof *g);
    snprintf(g->note, sizeof g->note, "ovatool was built without libext2fs: guest not read");
    return -1;
}
#endif
