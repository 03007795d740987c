/* The two futex calls osvirt.sync's Event and Condition are made of
 * (csrc/inline/event.h, condition.h). Shared futexes (no FUTEX_PRIVATE_FLAG):
 * the word is in a shared mapping, and the kernel keys it by the file and
 * offset, so waiters of every process that maps it meet. */
#ifndef OSV_INLINE_FUTEX_H
#define OSV_INLINE_FUTEX_H
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../sync.h"

/* One FUTEX_WAIT while *word is `seen`, until `deadline` on CLOCK_MONOTONIC
 * (FUTEX_WAIT_BITSET takes it absolute; NULL: none): 0 when woken or the word
 * already differs, ETIMEDOUT, EINTR. A 0 can be spurious: the caller looks at
 * the word again. */
static inline int osv_futex_sleep(uint32_t *word, uint32_t seen, const struct timespec *deadline)
{
    long rc = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, seen, deadline, NULL, FUTEX_BITSET_MATCH_ANY);
    return rc == 0 || errno == EAGAIN ? 0 : errno;
}

/* FUTEX_WAKE_OP on one word: the kernel applies `op` (FUTEX_OP(...)) to it and
 * wakes up to `n` of its waiters under one hash-bucket lock, so a caller
 * killed in the call did both or neither. 0, or the errno. */
static inline int osv_futex_wake_op(uint32_t *word, int n, int op)
{
    return syscall(SYS_futex, word, FUTEX_WAKE_OP, n, NULL, word, op) < 0 ? errno : 0;
}

#endif
