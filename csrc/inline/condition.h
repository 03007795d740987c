/* osvirt.sync.Condition on a futex word and three counts (csrc/sync.h's
 * osv_condition), every one changed with the condition's lock held. Included
 * by csrc/sync.c (osvirt._native, whose C loop calls it too) and
 * csrc/cpython/fastlock.c (osvirt._fastlock): one implementation under both.
 *
 * A waiter counts itself (enter), then sleeps any number of times (sleep:
 * give the lock up, FUTEX_WAIT while `seq` is what it read under the lock,
 * take the lock back) until take() finds a notify owed to it, and leaves.
 * notify(n) wakes min(n, the waiters not yet woken) with one FUTEX_WAKE_OP
 * that advances `seq`, then counts them owed: a waiter between giving up the
 * lock and sleeping sees `seq` moved and does not sleep, so none is missed; a
 * waiter woken without a notify owed to it (a spurious wake-up, or one more
 * than n woken) finds none to take and sleeps again, so notify(n) returns n
 * waiters, none twice. The wake-up comes before the counts: a notifier killed
 * in between left its waiters awake and blocked on the lock it held, which
 * hands them OwnerDead, rather than asleep on a count nobody will wake. An
 * untimed FUTEX_WAIT returns EINTR when a signal handler is to run, so no
 * timer is armed for Ctrl-C. */
#ifndef OSV_INLINE_CONDITION_H
#define OSV_INLINE_CONDITION_H
#include <pthread.h>

#include "futex.h"

/* With the lock held: one waiter more; the notify count to compare with in take(). */
static inline int64_t osv_cv_enter(osv_condition *c)
{
    c->waiters++;
    return c->notifies;
}

/* With the lock `m` held: give it up, sleep while no notify moved `seq` (until
 * `deadline` on CLOCK_MONOTONIC, NULL: none), take it back. The sleep's outcome
 * (0, ETIMEDOUT, EINTR), or the lock's error: EOWNERDEAD (taken from a holder
 * that died), any other (not held again). */
static inline int osv_cv_sleep(osv_condition *c, pthread_mutex_t *m, const struct timespec *deadline)
{
    uint32_t seen = __atomic_load_n(&c->seq, __ATOMIC_RELAXED);
    int err = pthread_mutex_unlock(m);
    if (err != 0)
        return err;
    int slept = osv_futex_sleep(&c->seq, seen, deadline);
    err = pthread_mutex_lock(m);
    return err != 0 ? err : slept;
}

/* With the lock held: whether a notify came since `notifies` (enter's) with one owed; takes it. */
static inline int osv_cv_take(osv_condition *c, int64_t notifies)
{
    if (c->owed <= 0 || c->notifies == notifies)
        return 0;
    c->owed--;
    return 1;
}

static inline void osv_cv_leave(osv_condition *c) { c->waiters--; }

/* With the lock held: wake up to `n` waiters not woken yet. 0, or the futex call's errno. */
static inline int osv_cv_wake(osv_condition *c, int64_t n)
{
    int64_t woken = c->waiters - c->owed;
    if (n < woken)
        woken = n;
    if (woken <= 0)
        return 0;
    int err = osv_futex_wake_op(&c->seq, woken < INT_MAX ? (int)woken : INT_MAX,
                                FUTEX_OP(FUTEX_OP_ADD, 1, FUTEX_OP_CMP_EQ, 0));
    if (err == 0) {
        c->owed += woken;
        c->notifies++;
    }
    return err;
}

#endif
