/* Devices: what osvirt.device takes from the kernel's headers. Most device
 * calls are ioctls that fcntl.ioctl makes; an ioctl whose answer is one int
 * goes through osvirt._quickcalls.ioctl_int (csrc/cpython/quickcalls.c),
 * which returns the int itself: no buffer object to make, fill and unpack.
 * The compiler gives the layout of the structs the loop ioctls copy and the
 * KVM capability numbers. */
#ifndef OSV_DEVICE_H
#define OSV_DEVICE_H
#include "osv.h"
#include <linux/kvm.h>
#include <linux/loop.h>
#include <sys/ioctl.h>

/* The room the kernel may write into: as much as fcntl.ioctl gives, so a
 * request that copies out more than an int cannot overrun the stack. */
#define OSV_IOCTL_ARG_MAX 1024

#ifdef OSV_CDEF
typedef int... __u32;
typedef int... __u64;
/* Only the fields osvirt sets; `...` lets cffi take offsets and size from C. */
struct loop_info64 {
    __u64 lo_offset;
    __u64 lo_sizelimit;
    __u32 lo_flags;
    unsigned char lo_file_name[...];
    ...;
};
struct loop_config {
    __u32 fd;
    __u32 block_size;
    struct loop_info64 info;
    ...;
};
static const int LO_NAME_SIZE;
static const int LO_FLAGS_READ_ONLY;
static const int LO_FLAGS_AUTOCLEAR;
static const int LO_FLAGS_DIRECT_IO;

static const int KVM_API_VERSION;
static const int KVM_CAP_IRQCHIP;
static const int KVM_CAP_HLT;
static const int KVM_CAP_USER_MEMORY;
static const int KVM_CAP_NR_VCPUS;
static const int KVM_CAP_MAX_VCPUS;
static const int KVM_CAP_NR_MEMSLOTS;
static const int KVM_CAP_IOEVENTFD;
static const int KVM_CAP_IRQFD;

static const int OSV_IOCTL_ARG_MAX;
#endif

#endif
