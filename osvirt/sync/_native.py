"""The one module of osvirt.sync that touches the C extensions.

Pointers reach C only through `pointer_to`, which checks size and
alignment against the mapping they point into. Each call returns 0, or an
errno the caller expects as an outcome (ETIMEDOUT, EBUSY, EOWNERDEAD), and
raises the errno's OSError, naming the pthread call, for anything else.
cffi's API-mode calls release the GIL, so a blocked lock or wait never stops
the other threads of the process. MutexFastPath and SemaphoreFastPath
(osvirt._fastlock) are the exception: `with` in C, for the calls that cannot block.
"""
import errno
import time

from osvirt._fastlock import MutexFastPath, SemaphoreFastPath
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

_HINTS = {
    errno.EPERM: "the calling thread does not hold the mutex",
    errno.EDEADLK: "the calling thread already holds the mutex (error-checking mutex)",
    ENOTRECOVERABLE: "a holder died and the next one unlocked it without make_consistent(): "
                     "the mutex can never be locked again",
}
UINT_MAX = 2 ** 32 - 1  # pthread_barrier_init's count is an unsigned int


def sizeof(ctype):
    return ffi.sizeof(ctype)


def pointer_to(mapping, ctype):
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


def address_of(ptr):
    """The address a pointer from `pointer_to` holds, for a FastPath's _bind."""
    return int(ffi.cast("uintptr_t", ptr))


def error(err, facility):
    """The OSError for `facility` failing with `err`, with a hint when one helps."""
    return kernel_error(err, facility, _HINTS.get(err))


def _outcome(rc, facility, expected=()):
    return rc if rc != -1 else expected_error(ffi.errno, facility, expected)


def expected_error(err, facility, expected=()):
    """`err` when the caller expects it as an outcome; else its OSError, raised."""
    if err in expected:
        return err
    raise error(err, facility)


# -- mutex -----------------------------------------------------------------------
def mutex_init(m, robust):
    robustness = lib.PTHREAD_MUTEX_ROBUST if robust else lib.PTHREAD_MUTEX_STALLED
    _outcome(lib.osv_mutex_init(m, lib.PTHREAD_MUTEX_ERRORCHECK, robustness), "pthread_mutex_init")


# The timed waits take a relative timeout_ns (>= 0, checked by the caller) that C
# turns into the deadline on the wait's clock.
def mutex_lock_for(m, timeout_ns):
    """0 (locked), ETIMEDOUT, or EOWNERDEAD (locked; its previous holder died holding it)."""
    return _outcome(lib.osv_mutex_lock_for(m, LOCK_CLOCK, timeout_ns), _MUTEX_TIMEDLOCK, (ETIMEDOUT, EOWNERDEAD))


TRYLOCK_OUTCOMES = (EBUSY, EDEADLK, EOWNERDEAD, ENOTRECOVERABLE)


def mutex_trylock(m):
    """0 (locked), EBUSY, EDEADLK (a robust mutex this thread holds), EOWNERDEAD (locked)
    or ENOTRECOVERABLE."""
    return _outcome(lib.osv_mutex_trylock(m), "pthread_mutex_trylock", TRYLOCK_OUTCOMES)


def mutex_unlock(m):
    _outcome(lib.osv_mutex_unlock(m), "pthread_mutex_unlock")


def mutex_consistent(m):
    if lib.osv_mutex_consistent(m) == -1:
        raise kernel_error(ffi.errno, "pthread_mutex_consistent",
                           "only a robust mutex just acquired with EOWNERDEAD can be made consistent")


def mutex_destroy(m):
    return _outcome(lib.osv_mutex_destroy(m), "pthread_mutex_destroy", (EBUSY,))


# -- condition -------------------------------------------------------------------
def cond_init(c):
    _outcome(lib.osv_cond_init(c), "pthread_cond_init")


def cond_wait_for(c, m, timeout_ns):
    """0 (woken), ETIMEDOUT, or EOWNERDEAD; the mutex is held again in all three cases."""
    return _outcome(lib.osv_cond_wait_for(c, m, timeout_ns), "pthread_cond_timedwait", (ETIMEDOUT, EOWNERDEAD))


def cond_signal(c):
    _outcome(lib.osv_cond_signal(c), "pthread_cond_signal")


def cond_broadcast(c):
    _outcome(lib.osv_cond_broadcast(c), "pthread_cond_broadcast")


# -- barrier ---------------------------------------------------------------------
def barrier_init(b, parties):
    _outcome(lib.osv_barrier_init(b, parties), "pthread_barrier_init")


def barrier_wait(b):
    """True for the one caller that got PTHREAD_BARRIER_SERIAL_THREAD."""
    return _outcome(lib.osv_barrier_wait(b), "pthread_barrier_wait") == 1


def barrier_destroy(b):
    return _outcome(lib.osv_barrier_destroy(b), "pthread_barrier_destroy", (EBUSY,))


# -- semaphore -------------------------------------------------------------------
def sem_init(s, value):
    _outcome(lib.osv_sem_init(s, value), "sem_init")


def sem_wait_for(s, timeout_ns):
    """0 (taken), ETIMEDOUT, or EINTR (a signal handler ran)."""
    return _outcome(lib.osv_sem_wait_for(s, LOCK_CLOCK, timeout_ns), _SEM_TIMEDWAIT, (ETIMEDOUT, EINTR))


def sem_trywait(s):
    """0 (taken) or EAGAIN."""
    return _outcome(lib.osv_sem_trywait(s), "sem_trywait", (EAGAIN,))


def sem_post(s):
    _outcome(lib.osv_sem_post(s), "sem_post")


def sem_getvalue(s):
    value = ffi.new("int *")
    _outcome(lib.osv_sem_getvalue(s, value), "sem_getvalue")
    return value[0]


def sem_destroy(s):
    _outcome(lib.osv_sem_destroy(s), "sem_destroy")
