/* The demo guest's virtio-mmio driver (virtio 1.x, split virtqueues), polled: no interrupt.
 * The same order as Linux's virtio_mmio.c: reset, ACKNOWLEDGE, DRIVER, the features (VERSION_1 and
 * nothing else), FEATURES_OK read back, the queue's three areas, QueueReady, DRIVER_OK. Each command
 * starts from a reset, so the rings start from index 0 on both sides. A request is one chain, made
 * available and notified (one MMIO exit); the guest then polls the used ring in its own memory,
 * which costs no exit. The avail ring's NO_INTERRUPT flag keeps the device's line down. */
#ifndef GUEST_VIRTIO_H
#define GUEST_VIRTIO_H

#define VIO_MAGIC 0x000
#define VIO_VERSION 0x004
#define VIO_DEVICE_ID 0x008
#define VIO_DEVICE_FEATURES 0x010
#define VIO_DEVICE_FEATURES_SEL 0x014
#define VIO_DRIVER_FEATURES 0x020
#define VIO_DRIVER_FEATURES_SEL 0x024
#define VIO_QUEUE_SEL 0x030
#define VIO_QUEUE_NUM_MAX 0x034
#define VIO_QUEUE_NUM 0x038
#define VIO_QUEUE_READY 0x044
#define VIO_QUEUE_NOTIFY 0x050
#define VIO_STATUS 0x070
#define VIO_QUEUE_DESC 0x080
#define VIO_QUEUE_DRIVER 0x090
#define VIO_QUEUE_DEVICE 0x0a0

#define VQ_SIZE 8
#define VQ_DESC (GUEST_VIRTQ)            /* 8 descriptors of 16 bytes */
#define VQ_AVAIL (GUEST_VIRTQ + 0x100)   /* flags, idx, ring[8] */
#define VQ_USED (GUEST_VIRTQ + 0x200)    /* flags, idx, {id, len}[8] */
#define VQ_REQ (GUEST_VIRTQ + 0x400)     /* a virtio-blk request header, then its status byte at +0x80 */
#define DESC_F_NEXT 1
#define DESC_F_WRITE 2

struct vq_desc { u64 addr; u32 len; u16 flags; u16 next; };

static inline u32 vio_r(u64 base, u32 off) { return *(volatile u32 *)(base + off); }
static inline void vio_w(u64 base, u32 off, u32 v) { *(volatile u32 *)(base + off) = v; }

static u16 vq_avail_idx, vq_used_seen;

/* Reset the device at `base`, check it is `device_id`, negotiate VERSION_1 only, set up queue `q`
 * in GUEST_VIRTQ, DRIVER_OK. 0, or a negative step number that failed. */
static long vio_open(u64 base, u32 device_id, u32 q)
{
    if (vio_r(base, VIO_MAGIC) != 0x74726976 || vio_r(base, VIO_VERSION) != 2)
        return -1;
    if (vio_r(base, VIO_DEVICE_ID) != device_id)
        return -2;
    vio_w(base, VIO_STATUS, 0);
    vio_w(base, VIO_STATUS, 1);      /* ACKNOWLEDGE */
    vio_w(base, VIO_STATUS, 1 | 2);  /* DRIVER */
    vio_w(base, VIO_DEVICE_FEATURES_SEL, 1);
    if (!(vio_r(base, VIO_DEVICE_FEATURES) & 1))  /* VIRTIO_F_VERSION_1 is bit 32 */
        return -3;
    vio_w(base, VIO_DRIVER_FEATURES_SEL, 1);
    vio_w(base, VIO_DRIVER_FEATURES, 1);
    vio_w(base, VIO_DRIVER_FEATURES_SEL, 0);
    vio_w(base, VIO_DRIVER_FEATURES, 0);
    vio_w(base, VIO_STATUS, 1 | 2 | 8);  /* FEATURES_OK */
    if (!(vio_r(base, VIO_STATUS) & 8))
        return -4;
    for (u64 *p = (u64 *)GUEST_VIRTQ; p < (u64 *)(GUEST_VIRTQ + 0x300); p++)
        *p = 0;
    *(volatile u16 *)VQ_AVAIL = 1;  /* VIRTQ_AVAIL_F_NO_INTERRUPT: this driver polls */
    vq_avail_idx = vq_used_seen = 0;
    vio_w(base, VIO_QUEUE_SEL, q);
    if (vio_r(base, VIO_QUEUE_NUM_MAX) < VQ_SIZE)
        return -5;
    vio_w(base, VIO_QUEUE_NUM, VQ_SIZE);
    vio_w(base, VIO_QUEUE_DESC, VQ_DESC);
    vio_w(base, VIO_QUEUE_DESC + 4, 0);
    vio_w(base, VIO_QUEUE_DRIVER, VQ_AVAIL);
    vio_w(base, VIO_QUEUE_DRIVER + 4, 0);
    vio_w(base, VIO_QUEUE_DEVICE, VQ_USED);
    vio_w(base, VIO_QUEUE_DEVICE + 4, 0);
    vio_w(base, VIO_QUEUE_READY, 1);
    vio_w(base, VIO_STATUS, 1 | 2 | 8 | 4);  /* DRIVER_OK */
    return 0;
}

/* Offer the chain at descriptor 0, notify queue `q`, wait for the device to use it. */
static void vio_submit(u64 base, u32 q)
{
    volatile u16 *avail = (volatile u16 *)VQ_AVAIL;
    avail[2 + vq_avail_idx % VQ_SIZE] = 0;
    __asm__ volatile("" ::: "memory");  /* the ring entry before the index the device reads */
    avail[1] = ++vq_avail_idx;
    vio_w(base, VIO_QUEUE_NOTIFY, q);  /* the one exit */
    while (*(volatile u16 *)(VQ_USED + 2) == vq_used_seen)
        ;  /* the device has served it before the notify's exit returns: this does not spin */
    vq_used_seen++;
}

/* Read `count` sectors from `first` through the virtio-blk at `base`, `per` sectors a request, into
 * GUEST_DMA; the FNV-1a 64 hash of the bytes, and in *errors the requests whose status was not OK. */
static u64 virtio_blk_read(u64 base, u64 first, u64 count, u64 per, u64 *errors)
{
    volatile struct vq_desc *d = (volatile struct vq_desc *)VQ_DESC;
    u64 hash = 0xcbf29ce484222325UL;
    *errors = 0;
    if (vio_open(base, 2, 0) < 0 || !per || per * 512 > GUEST_DMA_SIZE) {
        *errors = ~0UL;
        return 0;
    }
    for (u64 s = first; s < first + count; s += per) {
        u64 n = first + count - s < per ? first + count - s : per;
        volatile u32 *hdr = (volatile u32 *)VQ_REQ;
        hdr[0] = 0;  /* VIRTIO_BLK_T_IN */
        hdr[1] = 0;
        *(volatile u64 *)(VQ_REQ + 8) = s;
        *(volatile u8 *)(VQ_REQ + 0x80) = 0xff;
        d[0] = (struct vq_desc){VQ_REQ, 16, DESC_F_NEXT, 1};
        d[1] = (struct vq_desc){GUEST_DMA, (u32)(n * 512), DESC_F_NEXT | DESC_F_WRITE, 2};
        d[2] = (struct vq_desc){VQ_REQ + 0x80, 1, DESC_F_WRITE, 0};
        vio_submit(base, 0);
        if (*(volatile u8 *)(VQ_REQ + 0x80) != 0)
            ++*errors;
        for (u64 i = 0; i < n * 512; i++)
            hash = (hash ^ *(volatile u8 *)(GUEST_DMA + i)) * 0x100000001b3UL;
    }
    return hash;
}

/* Send `len` bytes of the mailbox's text through the virtio-console at `base`, `per` bytes a buffer
 * (one notify each); the buffers sent. */
static u64 virtio_console_write(u64 base, u64 len, u64 per)
{
    volatile struct vq_desc *d = (volatile struct vq_desc *)VQ_DESC;
    u64 buffers = 0;
    if (vio_open(base, 3, 1) < 0 || !per)  /* queue 1: the transmitq of port 0 */
        return 0;
    for (u64 off = 0; off < len; off += per, buffers++) {
        u64 n = len - off < per ? len - off : per;
        d[0] = (struct vq_desc){GUEST_MAILBOX + MB_TEXT + off, (u32)n, 0, 0};
        vio_submit(base, 1);
    }
    return buffers;
}

#endif
