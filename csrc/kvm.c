/* KVM: see kvm.h. */
#include "kvm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

long osv_kvm_ioctl(int fd, unsigned long request, void *arg)
{
    long r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}

long osv_kvm_ioctl_num(int fd, unsigned long request, unsigned long arg)
{
    long r = ioctl(fd, request, arg);
    return r < 0 ? -errno : r;
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* The answer of a pending IO in or MMIO read goes where the guest's instruction takes it from. */
static void complete_read(struct kvm_run *run, uint64_t value)
{
    if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_IN && run->io.count == 1
        && run->io.size <= 8)
        memcpy((char *)run + run->io.data_offset, &value, run->io.size);
    else if (run->exit_reason == KVM_EXIT_MMIO && !run->mmio.is_write && run->mmio.len <= 8)
        memcpy(run->mmio.data, &value, run->mmio.len);
}

static void copy_exit(const struct kvm_run *run, osv_kvm_exit *out)
{
    out->reason = run->exit_reason;
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        out->write = run->io.direction == KVM_EXIT_IO_OUT;
        out->size = run->io.size;
        out->count = run->io.count;
        out->addr = run->io.port;
        out->data_offset = run->io.data_offset;
        out->data = 0;
        if (out->write && run->io.count == 1 && run->io.size <= 8)
            memcpy(&out->data, (const char *)run + run->io.data_offset, run->io.size);
        break;
    case KVM_EXIT_MMIO:
        out->write = run->mmio.is_write;
        out->size = run->mmio.len;
        out->count = 1;
        out->addr = run->mmio.phys_addr;
        out->data = 0;
        if (run->mmio.is_write && run->mmio.len <= 8)
            memcpy(&out->data, run->mmio.data, run->mmio.len);
        break;
    case KVM_EXIT_INTERNAL_ERROR:
        out->suberror = run->internal.suberror;
        out->ndata = run->internal.ndata < 16 ? run->internal.ndata : 16;
        memcpy(out->extra, run->internal.data, out->ndata * sizeof(uint64_t));
        break;
    case KVM_EXIT_FAIL_ENTRY:
        out->suberror = run->fail_entry.hardware_entry_failure_reason;
        out->extra[0] = run->fail_entry.cpu;
        break;
    case KVM_EXIT_UNKNOWN:
        out->suberror = run->hw.hardware_exit_reason;
        break;
    case KVM_EXIT_SYSTEM_EVENT:
        out->suberror = run->system_event.type;
        break;
    }
}

int64_t osv_kvm_run(int vcpu_fd, struct kvm_run *run, uint64_t in_value, osv_kvm_exit *out)
{
    complete_read(run, in_value);
    int64_t start = now_ns();
    int r = ioctl(vcpu_fd, KVM_RUN, 0);
    int err = errno;
    int64_t ns = now_ns() - start;
    out->ns = ns;
    if (r < 0) {
        out->reason = (uint32_t)-1;
        if (err == EINTR) {
            out->eintr++;
            out->eintr_ns += ns;
        }
        return -err;
    }
    copy_exit(run, out);
    uint32_t reason = run->exit_reason;
    if (reason < OSV_KVM_REASONS) {
        out->counts[reason]++;
        out->ns_total[reason] += ns;
    }
    if (reason == KVM_EXIT_IO && out->count == 1 && out->size <= 4)
        return OSV_KVM_FAST_IO | (int64_t)out->write << 8 | (int64_t)out->size << 9 | (int64_t)out->addr << 13
               | (int64_t)out->data << 29;
    return reason;
}

void osv_kvm_io_data(struct kvm_run *run, const osv_kvm_exit *ex, uint8_t *buf, int to_run)
{
    size_t n = (size_t)ex->size * ex->count;
    if (to_run)
        memcpy((char *)run + ex->data_offset, buf, n);
    else
        memcpy(buf, (char *)run + ex->data_offset, n);
}

int osv_kvm_get_dirty_log(int vm_fd, uint32_t slot, uint64_t *bitmap)
{
    struct kvm_dirty_log log;
    memset(&log, 0, sizeof(log));
    log.slot = slot;
    log.dirty_bitmap = bitmap;
    return ioctl(vm_fd, KVM_GET_DIRTY_LOG, &log) < 0 ? -errno : 0;
}

int osv_kvm_set_supported_cpuid(int kvm_fd, int vcpu_fd)
{
    for (int nent = 64; nent <= 4096; nent *= 2) {
        struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + nent * sizeof(struct kvm_cpuid_entry2));
        if (!cpuid)
            return -ENOMEM;
        cpuid->nent = nent;
        if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) < 0) {
            int err = errno;
            free(cpuid);
            if (err == E2BIG)
                continue;
            return -err;
        }
        int r = ioctl(vcpu_fd, KVM_SET_CPUID2, cpuid) < 0 ? -errno : (int)cpuid->nent;
        free(cpuid);
        return r;
    }
    return -E2BIG;
}

int osv_kvm_msr_index_list(int kvm_fd, uint32_t *indices, int max)
{
    struct kvm_msr_list *list = calloc(1, sizeof(*list) + max * sizeof(uint32_t));
    if (!list)
        return -ENOMEM;
    list->nmsrs = max;
    int r = ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0 ? -errno : (int)list->nmsrs;
    if (r > 0)
        memcpy(indices, list->indices, r * sizeof(uint32_t));
    free(list);
    return r;
}

static struct kvm_msrs *msrs_new(int n, const uint32_t *indices, const uint64_t *values)
{
    struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + n * sizeof(struct kvm_msr_entry));
    if (!msrs)
        return NULL;
    msrs->nmsrs = n;
    for (int i = 0; i < n; i++) {
        msrs->entries[i].index = indices[i];
        msrs->entries[i].data = values ? values[i] : 0;
    }
    return msrs;
}

int osv_kvm_get_msrs(int vcpu_fd, int n, const uint32_t *indices, uint64_t *values)
{
    struct kvm_msrs *msrs = msrs_new(n, indices, NULL);
    if (!msrs)
        return -ENOMEM;
    int r = ioctl(vcpu_fd, KVM_GET_MSRS, msrs);
    r = r < 0 ? -errno : r;
    for (int i = 0; i < r; i++)
        values[i] = msrs->entries[i].data;
    free(msrs);
    return r;
}

int osv_kvm_set_msrs(int vcpu_fd, int n, const uint32_t *indices, const uint64_t *values)
{
    struct kvm_msrs *msrs = msrs_new(n, indices, values);
    if (!msrs)
        return -ENOMEM;
    int r = ioctl(vcpu_fd, KVM_SET_MSRS, msrs);
    r = r < 0 ? -errno : r;
    free(msrs);
    return r;
}

/* SIGRTMIN + 4: glibc keeps the first real-time signals for itself (SIGRTMIN is
 * already past them); Python's signal module uses none. */
int osv_kvm_kick_signal(void)
{
    return SIGRTMIN + 4;
}

static void kicked(int sig)
{
    (void)sig;  /* its only effect: the interrupted KVM_RUN returns EINTR */
}

int osv_kvm_install_kick(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kicked;  /* no SA_RESTART: KVM_RUN must return */
    sigemptyset(&sa.sa_mask);
    return sigaction(osv_kvm_kick_signal(), &sa, NULL) < 0 ? errno : 0;
}

int64_t osv_bench_vm_exit(int vcpu_fd, int mmap_size, uint64_t addr, int mmio, int64_t n)
{
    struct kvm_run *run = mmap(NULL, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, 0);
    if (run == MAP_FAILED)
        return -1;
    uint32_t want = mmio ? KVM_EXIT_MMIO : KVM_EXIT_IO;
    int err = 0;
    int64_t start = now_ns();
    for (int64_t i = 0; i < n && !err; i++) {
        complete_read(run, 0);
        if (ioctl(vcpu_fd, KVM_RUN, 0) < 0)
            err = errno;
        else if (run->exit_reason != want || (mmio ? run->mmio.phys_addr : run->io.port) != addr)
            err = EPROTO;
    }
    int64_t elapsed = now_ns() - start;
    munmap(run, mmap_size);
    if (err) {
        errno = err;
        return -1;
    }
    return elapsed;
}

void osv_spin(uint64_t n)
{
    __asm__ volatile("1: dec %0\n\tjnz 1b" : "+r"(n) : : "cc");
}
