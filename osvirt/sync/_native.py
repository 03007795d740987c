"""The one module of osvirt.sync that touches the C extensions.

Pointers reach C only through `pointer_to`, which checks size and
alignment against the mapping they point into. Each call returns 0, or an
errno the caller expects as an outcome (ETIMEDOUT, EBUSY, EOWNERDEAD, EINTR),
and raises the errno's OSError, naming the pthread or futex call, for anything
else.
cffi's API-mode calls release the GIL, so a blocked lock or wait never stops
the other threads of the process. The FastPath types (osvirt._fastlock) are
the exception: `with` and the hot methods in C, for the calls that cannot block
(and an Event's or Condition's untimed wait, the GIL released unless the
process has one thread: no other thread can want it then).
"""
import errno
import time
from typing import Any

# Re-exported (`as`): the public classes subclass them from here.
from osvirt._fastlock import ConditionFastPath as ConditionFastPath
from osvirt._fastlock import EventFastPath as EventFastPath
from osvirt._fastlock import MutexFastPath as MutexFastPath
from osvirt._fastlock import RLockFastPath as RLockFastPath
from osvirt._fastlock import SemaphoreFastPath as SemaphoreFastPath
from osvirt._native import ffi, lib
from osvirt.errors import kernel_error

# pthread_mutex_clocklock & co. (glibc >= 2.30) take CLOCK_MONOTONIC, which
# does not jump when the wall clock is set; the older calls only CLOCK_REALTIME.
HAS_CLOCKWAIT = bool(lib.OSV_HAS_CLOCKWAIT)
LOCK_CLOCK = time.CLOCK_MONOTONIC if HAS_CLOCKWAIT else time.CLOCK_REALTIME
_MUTEX_TIMEDLOCK = "pthread_mutex_clocklock" if HAS_CLOCKWAIT else "pthread_mutex_timedlock"
_SEM_TIMEDWAIT = "sem_clockwait" if HAS_CLOCKWAIT else "sem_timedwait"
SEM_VALUE_MAX = lib.SEM_VALUE_MAX
EOWNERDEAD = lib.EOWNERDEAD
ENOTRECOVERABLE = lib.ENOTRECOVERABLE
ETIMEDOUT = errno.ETIMEDOUT
EBUSY = errno.EBUSY
EAGAIN = errno.EAGAIN
EDEADLK = errno.EDEADLK
EINTR = errno.EINTR
EPERM = errno.EPERM
PTHREAD_MUTEX_ERRORCHECK = lib.PTHREAD_MUTEX_ERRORCHECK

_HINTS = {
    errno.EPERM: "the calling thread does not hold the mutex",
    errno.EDEADLK: "the calling thread already holds the mutex (error-checking mutex)",
    ENOTRECOVERABLE: "a holder died and the next one unlocked it without make_consistent(): "
                     "the mutex can never be locked again",
}


def sizeof(ctype: str) -> int:
    return int(ffi.sizeof(ctype))


def pointer_to(mapping: Any, ctype: str) -> Any:
    """`ctype *` to the start of a writable mapping (mmap), checked to fit and be aligned.

    The pointer holds a buffer export of the mapping itself (never of a
    memoryview, which the cycle collector may clear under it), so the
    mapping stays mapped as long as the pointer lives.
    """
    size, align = ffi.sizeof(ctype), ffi.alignof(ctype)
    if size > len(mapping):
        raise ValueError(f"{ctype}: {size} bytes do not fit in the {len(mapping)}-byte mapping")
    ptr = ffi.from_buffer(f"{ctype} *", mapping, require_writable=True)
    if int(ffi.cast("uintptr_t", ptr)) % align:
        raise ValueError(f"{ctype} at {ptr}: not aligned to {align} bytes")
    return ptr


def field(ptr: Any, name: str) -> Any:
    """A pointer to a field of the struct `ptr` points to. It does not keep the mapping
    mapped: use it only while `ptr` is held (a local of the calling method)."""
    return ffi.addressof(ptr[0], name)


def words(ptr: Any) -> Any:
    """An `int64_t *` to the `words` of the struct `ptr` points to (valid as `field`'s)."""
    return ffi.cast("int64_t *", ffi.addressof(ptr[0], "words"))


def following(ptr: Any, ctype: str) -> Any:
    """A `ctype *` just past the struct `ptr` points to (the caller checked that the
    mapping holds what it reads there); valid only while `ptr` is held, as `field`'s."""
    return ffi.cast(f"{ctype} *", ptr + 1)


def address_of(ptr: Any) -> int:
    """The address a pointer from `pointer_to` holds, for a FastPath's _bind."""
    return int(ffi.cast("uintptr_t", ptr))


def error(err: int, facility: str) -> OSError:
    """The OSError for `facility` failing with `err`, with a hint when one helps."""
    return kernel_error(err, facility, _HINTS.get(err))


def _outcome(rc: int, facility: str, expected: tuple[int, ...] = ()) -> int:
    return rc if rc != -1 else expected_error(ffi.errno, facility, expected)


def expected_error(err: int, facility: str, expected: tuple[int, ...] = ()) -> int:
    """`err` when the caller expects it as an outcome; else its OSError, raised."""
    if err in expected:
        return err
    raise error(err, facility)


# -- event (csrc/inline/event.h) -----------------------------------------------
def event_word(e: Any) -> int:
    """The event's futex word: bit 0 the flag, the bits above the clear() count."""
    return int(lib.osv_event_get(e))


def event_wait_for(e: Any, seen: int, timeout_ns: int) -> int:
    """Sleep while the word is `seen`, at most timeout_ns (< 0: no timeout): 0 (woken,
    possibly spuriously), ETIMEDOUT or EINTR (a signal handler is to run)."""
    return _outcome(lib.osv_event_wait_for(e, seen, timeout_ns), "futex(FUTEX_WAIT_BITSET)", (ETIMEDOUT, EINTR))


# -- condition (csrc/inline/condition.h), each call with the lock held -------------
def condition_enter(c: Any) -> int:
    """Count a waiter in; the notify count its take() compares with."""
    return int(lib.osv_condition_enter(c))


def condition_wait_for(c: Any, m: Any, timeout_ns: int) -> int:
    """Give `m` up, sleep at most timeout_ns (< 0: no timeout) or until a notify, take `m`
    back: 0 (possibly spurious), ETIMEDOUT, EINTR or EOWNERDEAD, `m` held in all four."""
    return _outcome(lib.osv_condition_wait_for(c, m, timeout_ns), "futex(FUTEX_WAIT_BITSET) on a condition",
                    (ETIMEDOUT, EINTR, EOWNERDEAD))


def condition_take(c: Any, notifies: int) -> bool:
    """Whether a notify came since `notifies` with one owed to this waiter (taken)."""
    return bool(lib.osv_condition_take(c, notifies))


def condition_leave(c: Any) -> None:
    lib.osv_condition_leave(c)


def condition_notify(c: Any, n: int) -> None:
    """Wake up to `n` waiters not woken yet."""
    _outcome(lib.osv_condition_notify(c, n), "futex(FUTEX_WAKE_OP) on a condition")


# -- mutex -----------------------------------------------------------------------
def mutex_init(m: Any, kind: int, robust: bool) -> None:
    """A process-shared mutex of `kind` (PTHREAD_MUTEX_ERRORCHECK or _RECURSIVE)."""
    robustness = lib.PTHREAD_MUTEX_ROBUST if robust else lib.PTHREAD_MUTEX_STALLED
    _outcome(lib.osv_mutex_init(m, kind, robustness), "pthread_mutex_init")


# The timed waits take a relative timeout_ns (>= 0, checked by the caller) that C
# turns into the deadline on the wait's clock.
def mutex_lock_for(m: Any, timeout_ns: int) -> int:
    """0 (locked), ETIMEDOUT, or EOWNERDEAD (locked; its previous holder died holding it)."""
    return _outcome(lib.osv_mutex_lock_for(m, LOCK_CLOCK, timeout_ns), _MUTEX_TIMEDLOCK, (ETIMEDOUT, EOWNERDEAD))


TRYLOCK_OUTCOMES = (EBUSY, EDEADLK, EOWNERDEAD, ENOTRECOVERABLE)


def mutex_trylock(m: Any) -> int:
    """0 (locked), EBUSY, EDEADLK (a robust mutex this thread holds), EOWNERDEAD (locked)
    or ENOTRECOVERABLE."""
    return _outcome(lib.osv_mutex_trylock(m), "pthread_mutex_trylock", TRYLOCK_OUTCOMES)


def mutex_unlock(m: Any) -> None:
    _outcome(lib.osv_mutex_unlock(m), "pthread_mutex_unlock")


def mutex_release(m: Any) -> int:
    """0 (unlocked) or EPERM (the calling thread does not hold it)."""
    return _outcome(lib.osv_mutex_unlock(m), "pthread_mutex_unlock", (EPERM,))


def mutex_futex_word(m: Any) -> int:
    """The robust futex word: the holder's TID | FUTEX_WAITERS | FUTEX_OWNER_DIED, 0 when free."""
    return int(lib.osv_mutex_futex_word(m)) & 0xFFFFFFFF


def mutex_owner(m: Any) -> int:
    """The holder's TID as glibc records it (__owner): a non-robust mutex's futex word has none."""
    return int(lib.osv_mutex_owner(m))


def mutex_consistent(m: Any) -> None:
    if lib.osv_mutex_consistent(m) == -1:
        raise kernel_error(ffi.errno, "pthread_mutex_consistent",
                           "only a robust mutex just acquired with EOWNERDEAD can be made consistent")


def mutex_destroy(m: Any) -> int:
    return _outcome(lib.osv_mutex_destroy(m), "pthread_mutex_destroy", (EBUSY,))


# -- condition -------------------------------------------------------------------
def cond_init(c: Any) -> None:
    _outcome(lib.osv_cond_init(c), "pthread_cond_init")


def cond_wait_for(c: Any, m: Any, timeout_ns: int) -> int:
    """0 (woken), ETIMEDOUT, or EOWNERDEAD; the mutex is held again in all three cases."""
    return _outcome(lib.osv_cond_wait_for(c, m, timeout_ns), "pthread_cond_timedwait", (ETIMEDOUT, EOWNERDEAD))


def cond_signal(c: Any) -> None:
    _outcome(lib.osv_cond_signal(c), "pthread_cond_signal")


def cond_broadcast(c: Any) -> None:
    _outcome(lib.osv_cond_broadcast(c), "pthread_cond_broadcast")


# -- semaphore -------------------------------------------------------------------
def sem_init(s: Any, value: int) -> None:
    _outcome(lib.osv_sem_init(s, value), "sem_init")


def sem_wait_for(s: Any, timeout_ns: int) -> int:
    """0 (taken), ETIMEDOUT, or EINTR (a signal handler ran)."""
    return _outcome(lib.osv_sem_wait_for(s, LOCK_CLOCK, timeout_ns), _SEM_TIMEDWAIT, (ETIMEDOUT, EINTR))


def sem_trywait(s: Any) -> int:
    """0 (taken) or EAGAIN."""
    return _outcome(lib.osv_sem_trywait(s), "sem_trywait", (EAGAIN,))


def sem_post(s: Any) -> None:
    _outcome(lib.osv_sem_post(s), "sem_post")


def sem_getvalue(s: Any) -> int:
    value = ffi.new("int *")
    _outcome(lib.osv_sem_getvalue(s, value), "sem_getvalue")
    return int(value[0])


def sem_destroy(s: Any) -> None:
    _outcome(lib.osv_sem_destroy(s), "sem_destroy")
