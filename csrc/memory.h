/* Memory: mappings on any address, residency, locking, swap, and memory
 * accesses that turn a SIGSEGV/SIGBUS into a reported fault.
 * Addresses cross the boundary as uintptr_t; Python checks every one of them
 * (inside a mapping it owns, aligned where the kernel needs it) first. */
#ifndef OSV_MEMORY_H
#define OSV_MEMORY_H
#include "osv.h"
#include <signal.h>
#include <sys/mman.h>
#include <sys/swap.h>
#include <linux/userfaultfd.h>

#ifdef OSV_CDEF
static const int PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC;
static const int MAP_PRIVATE, MAP_SHARED, MAP_ANONYMOUS, MAP_POPULATE, MAP_NORESERVE;
static const int MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL, MADV_WILLNEED, MADV_DONTNEED;
static const int MADV_FREE, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_COLD, MADV_PAGEOUT;
static const int MADV_DONTFORK, MADV_DOFORK, MADV_DONTDUMP, MADV_DODUMP;
static const int MCL_CURRENT;
static const int SIGSEGV, SIGBUS, SEGV_MAPERR, SEGV_ACCERR, BUS_ADRALN, BUS_ADRERR, BUS_OBJERR;
static const int SWAP_FLAG_PREFER;
static const int UFFD_USER_MODE_ONLY;
#endif

/* What a guarded access met: the faulting address (si_addr), the signal
 * and its si_code. */
typedef struct {
    uintptr_t addr;
    int signo;
    int code;
} osv_fault;

/* mmap, munmap and mprotect are osvirt._quickcalls' (csrc/cpython/quickcalls.c):
 * made with the GIL held, which cffi cannot do. */
int osv_madvise(uintptr_t addr, size_t len, int advice);
int osv_mincore(uintptr_t addr, size_t len, unsigned char *vec);
int osv_mlock(uintptr_t addr, size_t len);
int osv_munlock(uintptr_t addr, size_t len);

/* Guarded accesses: while they run, SIGSEGV and SIGBUS are caught; a fault
 * returns -1 with errno EFAULT and *fault filled, and the previous handlers
 * are back in place either way. One guarded access runs at a time in the
 * process (sigaction is process-wide); see memory.c for what that means. */
int osv_copy_guarded(uintptr_t dst, uintptr_t src, size_t len, osv_fault *fault);
/* Reads (write=0) or rewrites in place (write=1) one byte every `stride`
 * bytes of [addr, addr+len); *touched counts the bytes reached. */
int osv_touch_guarded(uintptr_t addr, size_t len, size_t stride, int write,
                      size_t *touched, osv_fault *fault);
/* The same copy with no guard: a fault delivers the signal as it would to
 * any C program (used by a child that is meant to die of it). */
void osv_copy_unguarded(uintptr_t dst, uintptr_t src, size_t len);

int osv_swapon(const char *path, int flags);
int osv_swapoff(const char *path);

/* userfaultfd(2) (glibc has no wrapper): a new fd, or -1 with errno. */
int osv_userfaultfd(int flags);

#endif
