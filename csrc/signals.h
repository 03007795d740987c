/* Queued signals: sigqueue(3) with a value, sigtimedwait(2) reporting it.
 * The stdlib has neither: os.kill sends no value, and signal.struct_siginfo
 * has no si_value. */
#ifndef OSV_SIGNALS_H
#define OSV_SIGNALS_H
#include <signal.h>
#include "osv.h"

#ifdef OSV_CDEF
static const int SI_QUEUE;
static const int SI_USER;
#endif

/* What the kernel's siginfo_t said about one accepted signal. */
struct osv_siginfo {
    int signo;
    int code;    /* si_code: SI_QUEUE from sigqueue, SI_USER from kill */
    int value;   /* si_value.sival_int */
    pid_t pid;   /* the sender */
    uid_t uid;   /* the sender's real uid */
};

/* sigqueue(pid, sig, {.sival_int = value}): 0, or -1 with errno. */
int osv_sigqueue(pid_t pid, int sig, int value);

/* Accept one signal of `mask` (bit s - 1 stands for signal s: Linux numbers
 * them 1..64), which the caller keeps blocked: sigwaitinfo when
 * timeout_ns < 0, else sigtimedwait. Returns the signal number and fills
 * *info, or -1 with errno (EAGAIN on timeout, EINTR, EINVAL). */
int osv_sigtimedwait(uint64_t mask, long long timeout_ns, struct osv_siginfo *info);

#endif
