/* virtio-blk.c - a virtio block device on PCI (legacy interface of virtio
 * 1.0, section 4.1.4.8: one I/O BAR, one split virtqueue at a page frame),
 * backed by the overlay disk.  Debian's kernels drive it with virtio_pci
 * built in; the probe kernel drives it by polling.
 *
 * Requests are served synchronously on the vCPU that kicks the queue.
 * Every descriptor address, length and chain comes from the guest and is
 * checked: a bad one fails the request (or breaks the device), never us. */
#include "vmm.h"
#include "disk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VBLK_QUEUE_NUM 128
#define VBLK_SEG_MAX (VBLK_QUEUE_NUM - 2)
#define VBLK_BAR_SIZE 0x40
#define VBLK_MAX_IO (4u << 20)           /* largest request we take */

/* legacy register block (no MSI-X: device config starts at 0x14) */
enum { VP_HOST_FEATURES = 0x00, VP_GUEST_FEATURES = 0x04, VP_QUEUE_PFN = 0x08,
       VP_QUEUE_NUM = 0x0c, VP_QUEUE_SEL = 0x0e, VP_QUEUE_NOTIFY = 0x10,
       VP_STATUS = 0x12, VP_ISR = 0x13, VP_CONFIG = 0x14 };
#define VIRTIO_BLK_F_SEG_MAX (1u << 2)
#define VIRTIO_BLK_F_BLK_SIZE (1u << 6)
#define VIRTIO_BLK_F_FLUSH (1u << 9)
#define VBLK_FEATURES (VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_FLUSH)
enum { VIRTIO_BLK_T_IN = 0, VIRTIO_BLK_T_OUT = 1, VIRTIO_BLK_T_FLUSH = 4,
       VIRTIO_BLK_T_GET_ID = 8 };
enum { VIRTIO_BLK_S_OK = 0, VIRTIO_BLK_S_IOERR = 1, VIRTIO_BLK_S_UNSUPP = 2 };
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VIRTIO_STATUS_FAILED 0x80

struct vring_desc { uint64_t addr; uint32_t len; uint16_t flags, next; };

static struct vblk_state {
    struct pci_dev pci;
    struct disk *disk;
    uint32_t guest_features, pfn;
    uint16_t last_avail;
    uint8_t status, isr;
    struct vring_desc *desc;       /* in guest memory, or NULL */
    uint16_t *avail;               /* flags, idx, ring[] */
    uint8_t *used;                 /* flags, idx, {id, len}[] */
    uint8_t config[24];            /* capacity, size_max, seg_max, geometry, blk_size */
    uint8_t *bounce;
    uint64_t requests, errors, bytes;
} vblk;

static void vblk_set_ring(struct vm *vm, uint32_t pfn)
{
    vblk.pfn = pfn;
    vblk.desc = NULL;
    vblk.last_avail = 0;
    if (!pfn)
        return;
    uint64_t base = (uint64_t)pfn << 12;
    uint64_t avail = base + 16ull * VBLK_QUEUE_NUM;
    uint64_t used = (avail + 6 + 2ull * VBLK_QUEUE_NUM + 4095) & ~4095ull;
    vblk.desc = vm_guest_ptr(vm, base, 16ull * VBLK_QUEUE_NUM);
    vblk.avail = vm_guest_ptr(vm, avail, 6 + 2ull * VBLK_QUEUE_NUM);
    vblk.used = vm_guest_ptr(vm, used, 6 + 8ull * VBLK_QUEUE_NUM);
    if (!vblk.desc || !vblk.avail || !vblk.used) {
        vblk.desc = NULL;
        vblk.status |= VIRTIO_STATUS_FAILED;   /* ring outside RAM: device broken */
    }
}

/* Gathers a request's chain: header, data segments, status byte.  Returns
 * the number of descriptors, or -1 on a malformed chain. */
static int vblk_chain(uint16_t head, struct vring_desc *out)
{
    int n = 0;
    uint16_t i = head;
    for (;;) {
        if (i >= VBLK_QUEUE_NUM || n >= VBLK_QUEUE_NUM)
            return -1;             /* out of the table, or a loop */
        memcpy(&out[n], &vblk.desc[i], sizeof(out[n]));
        if (!(out[n++].flags & VRING_DESC_F_NEXT))
            return n;
        i = out[n - 1].next;
    }
}

static uint8_t vblk_rw(struct vm *vm, uint32_t type, uint64_t sector,
                       struct vring_desc *d, int nseg, uint32_t *written)
{
    uint64_t off = sector * 512, total = 0;
    if (sector > UINT64_MAX / 512)
        return VIRTIO_BLK_S_IOERR;
    for (int k = 0; k < nseg; k++) {
        bool dev_writes = d[k].flags & VRING_DESC_F_WRITE;
        if (dev_writes != (type == VIRTIO_BLK_T_IN) || d[k].len > VBLK_MAX_IO)
            return VIRTIO_BLK_S_IOERR;
        uint8_t *g = vm_guest_ptr(vm, d[k].addr, d[k].len);
        if (!g)
            return VIRTIO_BLK_S_IOERR;
        char err[256];
        int rc = type == VIRTIO_BLK_T_IN
                     ? disk_read(vblk.disk, g, d[k].len, off + total, err, sizeof(err))
                     : disk_write(vblk.disk, g, d[k].len, off + total, err, sizeof(err));
        if (rc < 0) {
            if (vm->cfg.verbose)
                fprintf(stderr, "vdboot: virtio-blk: %s\n", err);
            return VIRTIO_BLK_S_IOERR;
        }
        total += d[k].len;
        vblk.bytes += d[k].len;
    }
    if (type == VIRTIO_BLK_T_IN)
        *written = (uint32_t)total;
    return VIRTIO_BLK_S_OK;
}

static void vblk_request(struct vm *vm, uint16_t head)
{
    struct vring_desc d[VBLK_QUEUE_NUM];
    uint32_t written = 0;
    int n = vblk_chain(head, d);
    uint8_t *status = NULL;
    if (n >= 2 && d[n - 1].len >= 1 && (d[n - 1].flags & VRING_DESC_F_WRITE))
        status = vm_guest_ptr(vm, d[n - 1].addr, 1);
    uint8_t *hdr = n >= 2 && d[0].len >= 16 ? vm_guest_ptr(vm, d[0].addr, 16) : NULL;
    uint8_t st = VIRTIO_BLK_S_IOERR;
    if (hdr && status) {
        uint32_t type;
        uint64_t sector;
        memcpy(&type, hdr, 4);
        memcpy(&sector, hdr + 8, 8);
        if (type == VIRTIO_BLK_T_IN || type == VIRTIO_BLK_T_OUT) {
            st = vblk_rw(vm, type, sector, d + 1, n - 2, &written);
        } else if (type == VIRTIO_BLK_T_FLUSH) {
            st = VIRTIO_BLK_S_OK;      /* the overlay is thrown away anyway */
        } else if (type == VIRTIO_BLK_T_GET_ID && n >= 3 && (d[1].flags & VRING_DESC_F_WRITE)) {
            uint32_t len = d[1].len < 20 ? d[1].len : 20;
            uint8_t *g = vm_guest_ptr(vm, d[1].addr, len);
            if (g) {
                memset(g, 0, len);
                memcpy(g, "vdboot-overlay", len < 14 ? len : 14);
                written = len;
                st = VIRTIO_BLK_S_OK;
            }
        } else {
            st = VIRTIO_BLK_S_UNSUPP;
        }
    }
    vblk.requests++;
    if (st != VIRTIO_BLK_S_OK)
        vblk.errors++;
    if (status) {
        *status = st;
        written++;
    }
    /* used ring: {id, len} at idx % num, then publish idx */
    uint16_t uidx;
    memcpy(&uidx, vblk.used + 2, 2);
    uint8_t *elem = vblk.used + 4 + 8u * (uidx % VBLK_QUEUE_NUM);
    uint32_t id = head;
    memcpy(elem, &id, 4);
    memcpy(elem + 4, &written, 4);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    uidx++;
    memcpy(vblk.used + 2, &uidx, 2);
}

static void vblk_notify(struct vm *vm)
{
    if (!vblk.desc)
        return;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    uint16_t avail_idx = __atomic_load_n(&vblk.avail[1], __ATOMIC_ACQUIRE);
    int served = 0;
    while (vblk.last_avail != avail_idx && served++ < VBLK_QUEUE_NUM) {
        uint16_t head = vblk.avail[2 + vblk.last_avail % VBLK_QUEUE_NUM];
        vblk.last_avail++;
        vblk_request(vm, head);
    }
    if (served) {
        vblk.isr |= 1;
        vm_irq_line(vm, pci_dev_irq(&vblk.pci), 1);
    }
}

static void vblk_reset(struct vm *vm)
{
    vblk.guest_features = 0;
    vblk.status = 0;
    vblk.isr = 0;
    vblk_set_ring(vm, 0);
    vm_irq_line(vm, pci_dev_irq(&vblk.pci), 0);
}

static uint32_t vblk_reg_read(struct vm *vm, unsigned off)
{
    switch (off) {
    case VP_HOST_FEATURES: return VBLK_FEATURES;
    case VP_GUEST_FEATURES: return vblk.guest_features;
    case VP_QUEUE_PFN: return vblk.pfn;
    case VP_QUEUE_NUM: return VBLK_QUEUE_NUM;
    case VP_QUEUE_SEL: return 0;
    case VP_STATUS: return vblk.status;
    case VP_ISR: {
        uint8_t v = vblk.isr;     /* reading ISR acknowledges the interrupt */
        vblk.isr = 0;
        vm_irq_line(vm, pci_dev_irq(&vblk.pci), 0);
        return v;
    }
    default: return 0;
    }
}

static void vblk_reg_write(struct vm *vm, unsigned off, uint32_t v)
{
    switch (off) {
    case VP_GUEST_FEATURES: vblk.guest_features = v & VBLK_FEATURES; break;
    case VP_QUEUE_PFN: vblk_set_ring(vm, v); break;
    case VP_QUEUE_NOTIFY: if (v == 0) vblk_notify(vm); break;
    case VP_STATUS:
        if ((v & 0xff) == 0)
            vblk_reset(vm);
        else
            vblk.status = (uint8_t)v;
        break;
    default: break;    /* QUEUE_SEL: there is only queue 0 */
    }
}

static void vblk_io(struct vm *vm, void *opaque, uint64_t off, uint8_t *data,
                    unsigned len, bool is_write)
{
    (void)opaque;
    pthread_mutex_lock(&vm->lock);
    if (off >= VP_CONFIG) {
        for (unsigned i = 0; i < len; i++) {
            uint64_t o = off - VP_CONFIG + i;
            if (!is_write)
                data[i] = o < sizeof(vblk.config) ? vblk.config[o] : 0;
        }
    } else if (is_write) {
        uint32_t v = 0;
        memcpy(&v, data, len > 4 ? 4 : len);
        vblk_reg_write(vm, (unsigned)off, v);
    } else {
        uint32_t v = vblk_reg_read(vm, (unsigned)off);
        memcpy(data, &v, len > 4 ? 4 : len);
    }
    pthread_mutex_unlock(&vm->lock);
}

int virtio_blk_init(struct vm *vm, struct disk *dk, char *err, size_t errlen)
{
    memset(&vblk, 0, sizeof(vblk));
    vblk.disk = dk;
    uint64_t sectors = dk->size / 512;
    uint32_t seg_max = VBLK_SEG_MAX, blk_size = 512;
    memcpy(vblk.config, &sectors, 8);        /* capacity */
    memcpy(vblk.config + 12, &seg_max, 4);   /* seg_max */
    memcpy(vblk.config + 20, &blk_size, 4);  /* blk_size */
    vblk.pci = (struct pci_dev){
        .vendor = 0x1af4, .device = 0x1001,  /* transitional virtio-blk */
        .subsys_vendor = 0x1af4, .subsys_id = 2,
        .class_code = 0x010000, .bar0_size = VBLK_BAR_SIZE, .bar0_io = vblk_io,
    };
    if (pci_add(vm, &vblk.pci) < 0) {
        snprintf(err, errlen, "no free PCI slot for virtio-blk");
        return -1;
    }
    vm->blk = &vblk;
    return 0;
}

void virtio_blk_exit(struct vm *vm)
{
    if (vm->cfg.verbose && vblk.disk)
        fprintf(stderr, "vdboot: virtio-blk: %llu requests (%llu failed), %llu KiB moved\n",
                (unsigned long long)vblk.requests, (unsigned long long)vblk.errors,
                (unsigned long long)(vblk.bytes >> 10));
    memset(&vblk, 0, sizeof(vblk));
}
