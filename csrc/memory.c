#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/swap.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "memory.h"

int osv_madvise(uintptr_t addr, size_t len, int advice) { return madvise((void *)addr, len, advice); }
int osv_mincore(uintptr_t addr, size_t len, unsigned char *vec) { return mincore((void *)addr, len, vec); }
int osv_mlock(uintptr_t addr, size_t len) { return mlock((void *)addr, len); }
int osv_munlock(uintptr_t addr, size_t len) { return munlock((void *)addr, len); }
int osv_swapon(const char *path, int flags) { return swapon(path, flags); }
int osv_swapoff(const char *path) { return swapoff(path); }
int osv_userfaultfd(int flags) { return (int)syscall(SYS_userfaultfd, flags); }

/* The fault guard.
 *
 * sigaction is per process, so the handlers are installed only around one
 * access and the previous ones put back after it, and `guard_lock` lets one
 * guarded access run at a time. The jump target and the fault record are
 * per thread (__thread): the handler runs on the thread that faulted and
 * jumps only if that thread armed the guard. A fault on another thread
 * while the guard is up is not ours: the handler puts the previous handlers
 * back and returns, the access faults again and meets them (so that thread
 * dies, or is handled, as it would have been without osvirt).
 * Not supported: guarded accesses from a signal handler, and fork() while
 * another thread holds the guard (the child would inherit a taken lock). */
static pthread_mutex_t guard_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigaction guard_previous[2];  /* SIGSEGV, SIGBUS */
static __thread sigjmp_buf guard_jump;
static __thread osv_fault *volatile guard_fault;

static void guard_restore(void)
{
    sigaction(SIGSEGV, &guard_previous[0], NULL);
    sigaction(SIGBUS, &guard_previous[1], NULL);
}

static void guard_handler(int signo, siginfo_t *info, void *context)
{
    osv_fault *fault = guard_fault;
    if (fault == NULL) {  /* another thread faulted: hand it to the previous handlers */
        guard_restore();
        return;
    }
    fault->addr = (uintptr_t)info->si_addr;
    fault->signo = signo;
    fault->code = info->si_code;
    siglongjmp(guard_jump, 1);  /* sigsetjmp(.., 1) saved the mask: SIGSEGV is unblocked again */
}

static void guard_arm(osv_fault *fault)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = guard_handler;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    pthread_mutex_lock(&guard_lock);
    guard_fault = fault;
    sigaction(SIGSEGV, &sa, &guard_previous[0]);
    sigaction(SIGBUS, &sa, &guard_previous[1]);
}

static int guard_disarm(int faulted)
{
    guard_restore();
    guard_fault = NULL;
    pthread_mutex_unlock(&guard_lock);
    if (faulted)
        errno = EFAULT;
    return faulted ? -1 : 0;
}

int osv_copy_guarded(uintptr_t dst, uintptr_t src, size_t len, osv_fault *fault)
{
    guard_arm(fault);
    if (sigsetjmp(guard_jump, 1) != 0)
        return guard_disarm(1);
    osv_copy_unguarded(dst, src, len);
    return guard_disarm(0);
}

int osv_touch_guarded(uintptr_t addr, size_t len, size_t stride, int write,
                      size_t *touched, osv_fault *fault)
{
    volatile unsigned char *p = (volatile unsigned char *)addr;
    volatile size_t *count = touched;  /* read after a longjmp: must live in memory */
    *count = 0;
    guard_arm(fault);
    if (sigsetjmp(guard_jump, 1) != 0)
        return guard_disarm(1);
    for (size_t i = 0; i < len; i += stride, ++*count) {
        if (write)  /* one atomic read-modify-write: a single write fault, data unchanged */
            __atomic_fetch_or((unsigned char *)&p[i], 0, __ATOMIC_RELAXED);
        else
            (void)p[i];  /* volatile: the read really happens */
    }
    return guard_disarm(0);
}

void osv_copy_unguarded(uintptr_t dst, uintptr_t src, size_t len)
{
    volatile unsigned char *d = (volatile unsigned char *)dst;
    const volatile unsigned char *s = (const volatile unsigned char *)src;
    for (size_t i = 0; i < len; i++)
        d[i] = s[i];
}
