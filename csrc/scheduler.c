#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "scheduler.h"

int osv_sched_setattr(pid_t pid, struct osv_sched_attr *attr)
{
    attr->size = sizeof(*attr);  /* the kernel reads the ABI version from the size */
    return (int)syscall(SYS_sched_setattr, pid, attr, 0U);
}

int osv_sched_getattr(pid_t pid, struct osv_sched_attr *attr)
{
    return (int)syscall(SYS_sched_getattr, pid, attr, (unsigned int)sizeof(*attr), 0U);
}

int osv_clock_getcpuclockid(pid_t pid, clockid_t *clock)
{
    int err = clock_getcpuclockid(pid, clock);  /* returns the error, errno untouched */
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}
