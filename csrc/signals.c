#include <errno.h>
#include <signal.h>
#include <time.h>

#include "signals.h"

int osv_sigqueue(pid_t pid, int sig, int value)
{
    union sigval sv = { .sival_int = value };
    return sigqueue(pid, sig, sv);
}

int osv_sigtimedwait(uint64_t mask, long long timeout_ns, struct osv_siginfo *info)
{
    sigset_t set;
    siginfo_t si;
    struct timespec ts = { timeout_ns / 1000000000LL, timeout_ns % 1000000000LL };
    int sig;

    sigemptyset(&set);
    for (int signo = 1; mask; signo++, mask >>= 1)
        if ((mask & 1) && sigaddset(&set, signo) == -1)
            return -1;
    sig = timeout_ns < 0 ? sigwaitinfo(&set, &si) : sigtimedwait(&set, &si, &ts);
    if (sig == -1)
        return -1;
    info->signo = si.si_signo;
    info->code = si.si_code;
    info->value = si.si_value.sival_int;
    info->pid = si.si_pid;
    info->uid = si.si_uid;
    return sig;
}
