/* Process-shared pthread objects and POSIX semaphores, placed by the caller
 * in shared memory (osvirt.sync checks every pointer first). Each function
 * makes one pthread/sem call and returns 0, or -1 with errno; the pthread
 * calls that return an error number have it moved to errno here. */
#ifndef OSV_SYNC_H
#define OSV_SYNC_H
#include "osv.h"
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <time.h>

/* pthread_mutex_clocklock, pthread_cond_clockwait and sem_clockwait came in
 * glibc 2.30; without them the deadline is on CLOCK_REALTIME. */
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 30)
#define OSV_HAS_CLOCKWAIT 1
#else
#define OSV_HAS_CLOCKWAIT 0
#endif

#ifdef OSV_CDEF
typedef struct { ...; } pthread_mutex_t;
typedef struct { ...; } pthread_cond_t;
typedef struct { ...; } sem_t;
static const int OSV_HAS_CLOCKWAIT;
static const int PTHREAD_MUTEX_ERRORCHECK;
static const int PTHREAD_MUTEX_NORMAL;
static const int PTHREAD_MUTEX_STALLED;
static const int PTHREAD_MUTEX_ROBUST;
static const int SEM_VALUE_MAX;
static const int EOWNERDEAD;
static const int ENOTRECOVERABLE;
#endif

/* The objects of the threading protocol that need more than one pthread
 * object, each laid out in one shared mapping. */
/* Condition: the futex word notify() advances; how many wait, how many notifies
 * are owed to them and the notify calls' count (csrc/inline/condition.h). */
typedef struct { uint32_t seq; int64_t waiters, owed, notifies; } osv_condition;
/* Event and Barrier: a robust mutex, a condition on it, and the words it guards. */
typedef struct { pthread_mutex_t mutex; pthread_cond_t cond; int64_t words[8]; } osv_monitor;
/* Event: one futex word (csrc/inline/event.h says how it is used). */
typedef struct { uint32_t word; } osv_event;
/* BoundedSemaphore: its release checks the bound and posts under `guard`. */
typedef struct { sem_t sem; pthread_mutex_t guard; } osv_bounded_sem;

/* The timed waits take a relative timeout_ns (>= 0) and wait until that
 * deadline on `clock` (osv_deadline): CLOCK_MONOTONIC when OSV_HAS_CLOCKWAIT,
 * else CLOCK_REALTIME, which is all the older calls take. */
int osv_mutex_init(pthread_mutex_t *m, int type, int robustness);
int osv_mutex_lock_for(pthread_mutex_t *m, int clock, int64_t timeout_ns);
int osv_mutex_trylock(pthread_mutex_t *m);
int osv_mutex_unlock(pthread_mutex_t *m);
int osv_mutex_consistent(pthread_mutex_t *m);
int osv_mutex_destroy(pthread_mutex_t *m);
/* Reads, no call: the holder's TID in a robust mutex's futex word (the word
 * the kernel's robust-futex protocol defines: TID | FUTEX_WAITERS |
 * FUTEX_OWNER_DIED), 0 when free. */
int osv_mutex_futex_word(pthread_mutex_t *m);
/* The holder's TID as glibc records it: what a non-robust mutex has instead. */
int osv_mutex_owner(pthread_mutex_t *m);

/* The condition's own clock is CLOCK_MONOTONIC (pthread_condattr_setclock). */
int osv_cond_init(pthread_cond_t *c);
int osv_cond_wait_for(pthread_cond_t *c, pthread_mutex_t *m, int64_t timeout_ns);
int osv_cond_signal(pthread_cond_t *c);
int osv_cond_broadcast(pthread_cond_t *c);

/* Event's calls (csrc/inline/event.h), for osvirt.sync and the C loop:
 * osv_event_set returns 0 or -1 and errno; osv_event_wait_for makes one
 * FUTEX_WAIT while the word is `seen`, for at most timeout_ns (< 0: no
 * timeout), and returns 0 (woken, or the word already differs), or -1 and
 * errno ETIMEDOUT or EINTR. */
int osv_event_set(osv_event *e);
void osv_event_clear(osv_event *e);
uint32_t osv_event_get(osv_event *e);
int osv_event_wait_for(osv_event *e, uint32_t seen, int64_t timeout_ns);

/* Condition's calls (csrc/inline/condition.h), each with the lock `m` held:
 * osv_condition_wait_for sleeps once, at most timeout_ns (< 0: no timeout),
 * and returns 0, or -1 and errno ETIMEDOUT, EINTR, EOWNERDEAD (the lock held
 * again in all three) or another (the lock not held); osv_condition_notify
 * returns 0 or -1 and errno. */
int64_t osv_condition_enter(osv_condition *c);
int osv_condition_wait_for(osv_condition *c, pthread_mutex_t *m, int64_t timeout_ns);
int osv_condition_take(osv_condition *c, int64_t notifies);
void osv_condition_leave(osv_condition *c);
int osv_condition_notify(osv_condition *c, int64_t n);

int osv_sem_init(sem_t *s, unsigned int value);
int osv_sem_wait_for(sem_t *s, int clock, int64_t timeout_ns);
int osv_sem_trywait(sem_t *s);
int osv_sem_post(sem_t *s);
int osv_sem_getvalue(sem_t *s, int *value);
int osv_sem_destroy(sem_t *s);

#endif
