/* seccomp: install a classic BPF filter that osvirt compiled
 * (osvirt/container/seccomp.py), and the numbers such a filter compares:
 * system calls, audit architectures, actions, BPF opcodes. */
#ifndef OSV_SECCOMP_H
#define OSV_SECCOMP_H
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/syscall.h>

#ifndef OSV_CDEF
/* The audit architecture the kernel reports (seccomp_data.arch) for this
 * build's own system calls; 0 where osvirt has none (the compiler refuses). */
#if defined(__x86_64__) && !defined(__ILP32__)
#define OSV_AUDIT_ARCH AUDIT_ARCH_X86_64
/* x32 shares AUDIT_ARCH_X86_64 and marks its numbers with this bit. */
#define OSV_X32_SYSCALL_BIT __X32_SYSCALL_BIT
#elif defined(__aarch64__)
#define OSV_AUDIT_ARCH AUDIT_ARCH_AARCH64
#define OSV_X32_SYSCALL_BIT 0
#else
#define OSV_AUDIT_ARCH 0
#define OSV_X32_SYSCALL_BIT 0
#endif
#endif

#ifdef OSV_CDEF
static const unsigned int OSV_AUDIT_ARCH, OSV_X32_SYSCALL_BIT;
static const unsigned int AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, AUDIT_ARCH_AARCH64, AUDIT_ARCH_ARM;
static const unsigned int SECCOMP_RET_KILL_PROCESS, SECCOMP_RET_KILL_THREAD, SECCOMP_RET_TRAP;
static const unsigned int SECCOMP_RET_ERRNO, SECCOMP_RET_LOG, SECCOMP_RET_ALLOW;
static const unsigned int SECCOMP_RET_ACTION_FULL, SECCOMP_RET_DATA;
static const unsigned int SECCOMP_FILTER_FLAG_TSYNC, SECCOMP_FILTER_FLAG_LOG, SECCOMP_FILTER_FLAG_SPEC_ALLOW;
static const int BPF_LD, BPF_W, BPF_ABS, BPF_ALU, BPF_AND, BPF_JMP, BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE;
static const int BPF_K, BPF_RET, BPF_MAXINSNS;
/* The layout the filter reads: nr, arch, then six 64-bit arguments. */
struct seccomp_data { int nr; uint32_t arch; uint64_t args[6]; ...; };
#endif

/* Every system call this build's headers name (each __NR_<name> of
 * <sys/syscall.h>), sorted by name. Defined by osvirt/_build_native.py,
 * which lists the macros and lets the C compiler number them. */
typedef struct {
    const char *name;
    int nr;
} osv_syscall;
extern const osv_syscall osv_syscalls[];
extern const int osv_syscall_count;

int osv_prctl_set_no_new_privs(void);
/* seccomp(SECCOMP_SET_MODE_FILTER, flags, {count, program}): `program` holds
 * `count` struct sock_filter (8 bytes each), checked by the caller; `flags`
 * an OR of SECCOMP_FILTER_FLAG_* (0: the calling thread alone). */
int osv_seccomp_set_mode_filter(const void *program, unsigned short count, unsigned int flags);

#endif
