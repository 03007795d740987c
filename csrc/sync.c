#include "sync.h"
#include "inline/condition.h"
#include "inline/event.h"

/* pthread_* calls return an error number; the osv_* convention is -1 and errno. */
static int osv_pthread_result(int err)
{
    if (err == 0)
        return 0;
    errno = err;
    return -1;
}

int osv_mutex_init(pthread_mutex_t *m, int type, int robustness)
{
    pthread_mutexattr_t attr;
    int err = pthread_mutexattr_init(&attr);
    if (err == 0)
        err = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (err == 0)
        err = pthread_mutexattr_settype(&attr, type);
    if (err == 0)
        err = pthread_mutexattr_setrobust(&attr, robustness);
    if (err == 0)
        err = pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
    return osv_pthread_result(err);
}

int osv_mutex_lock_for(pthread_mutex_t *m, int clock, int64_t timeout_ns)
{
    struct timespec ts;
    osv_deadline(clock, timeout_ns, &ts);
#if OSV_HAS_CLOCKWAIT
    return osv_pthread_result(pthread_mutex_clocklock(m, clock, &ts));
#else
    return osv_pthread_result(pthread_mutex_timedlock(m, &ts));
#endif
}

int osv_mutex_trylock(pthread_mutex_t *m) { return osv_pthread_result(pthread_mutex_trylock(m)); }
int osv_mutex_unlock(pthread_mutex_t *m) { return osv_pthread_result(pthread_mutex_unlock(m)); }
int osv_mutex_consistent(pthread_mutex_t *m) { return osv_pthread_result(pthread_mutex_consistent(m)); }
int osv_mutex_destroy(pthread_mutex_t *m) { return osv_pthread_result(pthread_mutex_destroy(m)); }

/* glibc's struct __pthread_mutex_s: __lock is the futex word, __owner the holder's TID. */
int osv_mutex_futex_word(pthread_mutex_t *m) { return __atomic_load_n(&m->__data.__lock, __ATOMIC_RELAXED); }
int osv_mutex_owner(pthread_mutex_t *m) { return __atomic_load_n(&m->__data.__owner, __ATOMIC_RELAXED); }

int osv_cond_init(pthread_cond_t *c)
{
    pthread_condattr_t attr;
    int err = pthread_condattr_init(&attr);
    if (err == 0)
        err = pthread_condattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (err == 0)
        err = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (err == 0)
        err = pthread_cond_init(c, &attr);
    pthread_condattr_destroy(&attr);
    return osv_pthread_result(err);
}

int osv_cond_wait_for(pthread_cond_t *c, pthread_mutex_t *m, int64_t timeout_ns)
{
    struct timespec ts;
    osv_deadline(CLOCK_MONOTONIC, timeout_ns, &ts);
    return osv_pthread_result(pthread_cond_timedwait(c, m, &ts));
}

int osv_cond_signal(pthread_cond_t *c) { return osv_pthread_result(pthread_cond_signal(c)); }
int osv_cond_broadcast(pthread_cond_t *c) { return osv_pthread_result(pthread_cond_broadcast(c)); }

int osv_event_set(osv_event *e) { return osv_pthread_result(osv_event_raise(e)); }
void osv_event_clear(osv_event *e) { osv_event_lower(e); }
uint32_t osv_event_get(osv_event *e) { return osv_event_word(e); }

int osv_event_wait_for(osv_event *e, uint32_t seen, int64_t timeout_ns)
{
    struct timespec ts;
    if (timeout_ns >= 0)
        osv_deadline(CLOCK_MONOTONIC, timeout_ns, &ts);
    return osv_pthread_result(osv_futex_sleep(&e->word, seen, timeout_ns >= 0 ? &ts : NULL));
}

int64_t osv_condition_enter(osv_condition *c) { return osv_cv_enter(c); }
int osv_condition_take(osv_condition *c, int64_t notifies) { return osv_cv_take(c, notifies); }
void osv_condition_leave(osv_condition *c) { osv_cv_leave(c); }
int osv_condition_notify(osv_condition *c, int64_t n) { return osv_pthread_result(osv_cv_wake(c, n)); }

int osv_condition_wait_for(osv_condition *c, pthread_mutex_t *m, int64_t timeout_ns)
{
    struct timespec ts;
    if (timeout_ns >= 0)
        osv_deadline(CLOCK_MONOTONIC, timeout_ns, &ts);
    return osv_pthread_result(osv_cv_sleep(c, m, timeout_ns >= 0 ? &ts : NULL));
}

int osv_sem_init(sem_t *s, unsigned int value) { return sem_init(s, 1, value); }

int osv_sem_wait_for(sem_t *s, int clock, int64_t timeout_ns)
{
    struct timespec ts;
    osv_deadline(clock, timeout_ns, &ts);
#if OSV_HAS_CLOCKWAIT
    return sem_clockwait(s, clock, &ts);
#else
    return sem_timedwait(s, &ts);
#endif
}

int osv_sem_trywait(sem_t *s) { return sem_trywait(s); }
int osv_sem_post(sem_t *s) { return sem_post(s); }
int osv_sem_getvalue(sem_t *s, int *value) { return sem_getvalue(s, value); }
int osv_sem_destroy(sem_t *s) { return sem_destroy(s); }
