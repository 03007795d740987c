/* KVM: the virtual machine monitor's calls into /dev/kvm (osvirt.vm.kvm).
 *
 * Every struct a KVM ioctl copies is declared here with `...`: cffi takes
 * its size and field offsets from <linux/kvm.h> when the extension is built,
 * so no offset is typed by hand; those whose fields Python never reads
 * (FPU, LAPIC, irqchip, PIT, events) are opaque blobs of the header's size,
 * saved and restored whole. The ioctl numbers are the header's macros.
 *
 * kvm_run's exit data lives in an anonymous union of anonymous structs,
 * which cffi cannot declare partially: osv_kvm_run copies what an exit says
 * into osv_kvm_exit, a flat struct of osvirt's own, after the ioctl. */
#ifndef OSV_KVM_H
#define OSV_KVM_H
#include "osv.h"
#include <linux/kvm.h>
#include <signal.h>
#include <sys/ioctl.h>

#ifdef OSV_CDEF
static const int OSV_KVM_REASONS, OSV_KVM_FAST_IO;
typedef int... __u8;
typedef int... __u16;
static const unsigned long KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_GET_VCPU_MMAP_SIZE, KVM_CHECK_EXTENSION;
static const unsigned long KVM_GET_SUPPORTED_CPUID, KVM_GET_MSR_INDEX_LIST;
static const unsigned long KVM_CREATE_VCPU, KVM_SET_USER_MEMORY_REGION, KVM_GET_DIRTY_LOG;
static const unsigned long KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2, KVM_IRQ_LINE, KVM_SET_TSS_ADDR;
static const unsigned long KVM_SET_IDENTITY_MAP_ADDR, KVM_GET_IRQCHIP, KVM_SET_IRQCHIP;
static const unsigned long KVM_GET_PIT2, KVM_SET_PIT2, KVM_GET_CLOCK, KVM_SET_CLOCK;
static const unsigned long KVM_RUN, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS;
static const unsigned long KVM_GET_FPU, KVM_SET_FPU, KVM_GET_MSRS, KVM_SET_MSRS, KVM_GET_LAPIC, KVM_SET_LAPIC;
static const unsigned long KVM_SET_CPUID2, KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS;
static const unsigned long KVM_GET_MP_STATE, KVM_SET_MP_STATE;
static const int KVM_MEM_LOG_DIRTY_PAGES, KVM_PIT_SPEAKER_DUMMY, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT;
static const int KVM_CAP_SET_TSS_ADDR, KVM_CAP_SET_IDENTITY_MAP_ADDR, KVM_CAP_PIT2, KVM_CAP_IMMEDIATE_EXIT;
static const int KVM_CAP_EXT_CPUID, KVM_CAP_IRQCHIP, KVM_CAP_USER_MEMORY, KVM_CAP_SYNC_MMU;
static const int KVM_CAP_NR_MEMSLOTS, KVM_CAP_MAX_VCPUS, KVM_CAP_NR_VCPUS, KVM_CAP_PIT_STATE2;
static const int KVM_CAP_VCPU_EVENTS, KVM_CAP_ADJUST_CLOCK;
static const int KVM_NR_INTERRUPTS;

struct kvm_regs {
    __u64 rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    __u64 r8, r9, r10, r11, r12, r13, r14, r15;
    __u64 rip, rflags;
    ...;
};
struct kvm_segment {
    __u64 base;
    __u32 limit;
    __u16 selector;
    __u8 type, present, dpl, db, s, l, g, avl, unusable;
    ...;
};
struct kvm_dtable {
    __u64 base;
    __u16 limit;
    ...;
};
struct kvm_sregs {
    struct kvm_segment cs, ds, es, fs, gs, ss, tr, ldt;
    struct kvm_dtable gdt, idt;
    __u64 cr0, cr2, cr3, cr4, cr8, efer, apic_base;
    ...;
};
struct kvm_userspace_memory_region {
    __u32 slot;
    __u32 flags;
    __u64 guest_phys_addr;
    __u64 memory_size;
    __u64 userspace_addr;
    ...;
};
struct kvm_irq_level {
    __u32 irq;
    __u32 level;
    ...;
};
struct kvm_pit_config {
    __u32 flags;
    ...;
};
/* Saved and restored whole: their fields are the kernel's business. */
struct kvm_fpu { ...; };
struct kvm_lapic_state { ...; };
struct kvm_irqchip { __u32 chip_id; ...; };
struct kvm_pit_state2 { ...; };
struct kvm_vcpu_events { ...; };
struct kvm_mp_state { __u32 mp_state; ...; };
struct kvm_clock_data { __u64 clock; __u32 flags; ...; };
static const int KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC;
struct kvm_run { __u8 immediate_exit; __u32 exit_reason; ...; };
#endif

/* What a KVM_RUN ended with, copied out of kvm_run by osv_kvm_run. */
typedef struct {
    uint32_t reason;     /* exit_reason (KVM_EXIT_*) */
    uint32_t write;      /* IO: direction == KVM_EXIT_IO_OUT; MMIO: is_write */
    uint32_t size;       /* IO: size of one access; MMIO: len */
    uint32_t count;      /* IO: count (more than 1: a rep ins/outs, its data in kvm_run at data_offset) */
    uint64_t addr;       /* IO: port; MMIO: phys_addr */
    uint64_t data;       /* IO out (count 1) and MMIO write: the value, little-endian */
    uint64_t data_offset;/* IO: where the data is in kvm_run */
    uint64_t suberror;   /* INTERNAL_ERROR: suberror; FAIL_ENTRY: hardware_entry_failure_reason;
                            UNKNOWN: hardware_exit_reason; SYSTEM_EVENT: type */
    uint32_t ndata;      /* INTERNAL_ERROR: how many of data[] are set */
    uint64_t extra[16];  /* INTERNAL_ERROR: internal.data; FAIL_ENTRY: [0] the cpu */
    int64_t ns;          /* the KVM_RUN call's duration (CLOCK_MONOTONIC) */
    /* every KVM_RUN so far, counted here so that Python's loop need not: by exit reason (below
     * OSV_KVM_REASONS), and those that returned EINTR (a kick, or immediate_exit) */
    uint64_t counts[64];    /* OSV_KVM_REASONS */
    uint64_t ns_total[64];
    uint64_t eintr;
    uint64_t eintr_ns;
} osv_kvm_exit;

#define OSV_KVM_REASONS 64
/* osv_kvm_run's answer for an IO exit of one access of up to 4 bytes, packed into one integer so
 * that Python reads no struct field: OSV_KVM_FAST_IO (bit 12) set, bit 8 the direction (1: out),
 * bits 9-11 the size, bits 13-28 the port, bits 29-60 the value written (the sign bit stays clear:
 * a negative answer is an errno). */
#define OSV_KVM_FAST_IO 0x1000

/* ioctl(fd, request, arg): 0 or more, else -errno. arg a pointer, or a number
 * up to an unsigned long (KVM_SET_TSS_ADDR's 0xfffbd000 overflows a C int). */
long osv_kvm_ioctl(int fd, unsigned long request, void *arg);
long osv_kvm_ioctl_num(int fd, unsigned long request, unsigned long arg);

/* KVM_RUN on vcpu_fd. Before it, the answer to a pending IO in or MMIO read
 * (the previous exit) is stored in kvm_run as the guest expects it:
 * `in_value`'s low `size` bytes. Returns the exit reason, an IO exit of one
 * access packed (OSV_KVM_FAST_IO), or -errno (-EINTR: a signal, or
 * immediate_exit set); fills *out either way and counts the exit there. */
int64_t osv_kvm_run(int vcpu_fd, struct kvm_run *run, uint64_t in_value, osv_kvm_exit *out);

/* A rep ins/outs: copy count * size bytes between kvm_run's data area and buf. */
void osv_kvm_io_data(struct kvm_run *run, const osv_kvm_exit *ex, uint8_t *buf, int to_run);

/* KVM_GET_DIRTY_LOG of `slot` into bitmap (its dirty_bitmap sits in an anonymous union): 0 or -errno. */
int osv_kvm_get_dirty_log(int vm_fd, uint32_t slot, uint64_t *bitmap);

/* KVM_GET_SUPPORTED_CPUID on the system fd, then KVM_SET_CPUID2 on the vCPU:
 * the guest sees what the host CPU and KVM offer. Returns the number of entries or -errno. */
int osv_kvm_set_supported_cpuid(int kvm_fd, int vcpu_fd);

/* KVM_GET_MSR_INDEX_LIST into indices (room for max): the count, or -errno (-E2BIG: more than max). */
int osv_kvm_msr_index_list(int kvm_fd, uint32_t *indices, int max);
/* KVM_GET_MSRS / KVM_SET_MSRS of n MSRs: how many the kernel read or wrote (it stops at the first it
 * refuses), or -errno. */
int osv_kvm_get_msrs(int vcpu_fd, int n, const uint32_t *indices, uint64_t *values);
int osv_kvm_set_msrs(int vcpu_fd, int n, const uint32_t *indices, const uint64_t *values);

/* A signal whose handler does nothing, installed without SA_RESTART: sent
 * to a vCPU thread (pthread_kill) with immediate_exit set, it ends KVM_RUN
 * with EINTR even while the guest sits in the in-kernel HLT. */
int osv_kvm_kick_signal(void);
int osv_kvm_install_kick(void);

/* The C loop of the bench rows vm-exit-pio and vm-exit-mmio: n KVM_RUNs on
 * vcpu_fd (its kvm_run mapped here, mmap_size bytes), each ending in an IO
 * (mmio 0) or MMIO (mmio 1) exit at `addr`, a read answered with 0 as a
 * device would, a write dropped. Returns the elapsed ns, or -1 with errno
 * (EPROTO: an exit of another kind or address). */
int64_t osv_bench_vm_exit(int vcpu_fd, int mmap_size, uint64_t addr, int mmio, int64_t n);

/* The same instruction loop as the guest's (csrc/kvm.c, vm/guest/guest.c): n
 * iterations of `dec; jnz`, on the host: the host side of the CPL3 ratio. */
void osv_spin(uint64_t n);

/* KVM_EXIT_* and KVM_INTERNAL_ERROR_* names, from the header (_build_native writes the tables). */
typedef struct {
    const char *name;
    int number;
} osv_kvm_name;
extern const osv_kvm_name osv_kvm_exits[];
extern const int osv_kvm_exit_count;
extern const osv_kvm_name osv_kvm_internal_errors[];
extern const int osv_kvm_internal_error_count;

#endif
