/* osvirt.sync.Event on one futex word: bit 0 is the flag, the bits above
 * count the clear() calls that lowered it. Included by csrc/sync.c
 * (osvirt._native, whose C loop calls it too) and csrc/cpython/fastlock.c
 * (osvirt._fastlock): one implementation under both. Not a csrc/<topic>.h,
 * so cffi's cdef never reads these bodies.
 *
 * Why a futex and no mutex: nothing is held between or inside calls, so a
 * process killed anywhere leaves the event working. set() is one
 * futex(FUTEX_WAKE_OP) call: the kernel raises the flag and wakes every
 * waiter under one hash-bucket lock, so a setter killed in set() did both or
 * neither (with a store, then FUTEX_WAKE, a setter killed between the two
 * would leave the waiters asleep on a raised flag). clear() is one
 * compare-and-swap. A waiter sleeps in FUTEX_WAIT while the word is the one
 * it read: the word changes only when set() raises the flag, or when clear()
 * lowers it and counts, so a changed word means a set() came, even one a
 * clear() undid since (threading's Event.wait returns True then too). An
 * untimed FUTEX_WAIT returns EINTR when a signal handler runs (Python's
 * handlers are installed without SA_RESTART), which is how Ctrl-C ends a wait
 * without a timer armed for it. */
#ifndef OSV_INLINE_EVENT_H
#define OSV_INLINE_EVENT_H
#include "futex.h"

static inline uint32_t osv_event_word(osv_event *e) { return __atomic_load_n(&e->word, __ATOMIC_ACQUIRE); }

/* 0, or the futex call's errno. */
static inline int osv_event_raise(osv_event *e)
{
    if (osv_event_word(e) & 1)
        return 0;
    return osv_futex_wake_op(&e->word, INT_MAX, FUTEX_OP(FUTEX_OP_OR, 1, FUTEX_OP_CMP_EQ, 0));
}

static inline void osv_event_lower(osv_event *e)
{
    uint32_t seen = osv_event_word(e);
    while ((seen & 1) && !__atomic_compare_exchange_n(&e->word, &seen, seen + 1, 0,
                                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        ;
}

#endif
