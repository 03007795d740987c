/* Types and helpers shared by every csrc/ topic. In the cdef (see
 * osvirt/_build_native.py) the `...` lets cffi take each type's size from the
 * C compiler. */
#ifndef OSV_H
#define OSV_H
#include <mqueue.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#ifdef OSV_CDEF
typedef int... pid_t;
typedef int... uid_t;
typedef int... off_t;
typedef int... mqd_t;
#endif

/* *deadline = `timeout_ns` (>= 0) from now on `clock`: the absolute time the
 * timed calls (pthread_*_clocklock, sem_clockwait, mq_timed*) take. Read in C,
 * just before the call, rather than in Python, which would cost a call per wait. */
void osv_deadline(int clock, int64_t timeout_ns, struct timespec *deadline);

#endif
