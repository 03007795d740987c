/* Scheduling the stdlib lacks: sched_setattr/sched_getattr (the only way to
 * SCHED_DEADLINE's runtime/deadline/period) and another process's CPU clock.
 * Named scheduler.h, not sched.h: with -Icsrc, <sched.h> (which system
 * headers include too) would find this file instead of the C library's. */
#ifndef OSV_SCHEDULER_H
#define OSV_SCHEDULER_H
#include <sched.h>
#include <time.h>
#include "osv.h"

#ifdef OSV_CDEF
typedef int... clockid_t;
static const int SCHED_OTHER;
static const int SCHED_FIFO;
static const int SCHED_RR;
static const int SCHED_BATCH;
static const int SCHED_IDLE;
static const int SCHED_DEADLINE;
static const int SCHED_RESET_ON_FORK;
#endif

/* The kernel's struct sched_attr (include/uapi/linux/sched/types.h, layout
 * SCHED_ATTR_SIZE_VER0, 48 bytes). glibc before 2.41 does not declare it and
 * the kernel header's copy clashes with newer glibc's, so it has its own name. */
struct osv_sched_attr {
    uint32_t size;
    uint32_t sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime;   /* ns, SCHED_DEADLINE only */
    uint64_t sched_deadline;  /* ns */
    uint64_t sched_period;    /* ns */
};

/* sched_setattr(2) / sched_getattr(2) through syscall(2): 0, or -1 with errno. */
int osv_sched_setattr(pid_t pid, struct osv_sched_attr *attr);
int osv_sched_getattr(pid_t pid, struct osv_sched_attr *attr);

/* clock_getcpuclockid(3): the clock that counts pid's CPU time in ns (read it
 * with clock_gettime). 0, or -1 with errno. */
int osv_clock_getcpuclockid(pid_t pid, clockid_t *clock);

#endif
