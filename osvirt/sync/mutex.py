"""A process-shared pthread mutex, robust by default.

The mutex is PTHREAD_PROCESS_SHARED and PTHREAD_MUTEX_ERRORCHECK, in a
SharedRegion: anonymous (shared with forked children) or named (opened by
unrelated processes with `Mutex.open(name)`). Error checking turns misuse
into errors instead of undefined behaviour: unlocking a mutex this thread
does not hold raises PermissionError (EPERM), locking it again from the
thread that holds it raises OSError(EDEADLK).

Robustness: when a holder dies holding a robust mutex, the kernel (through
the robust futex list every thread registers with set_robust_list) marks it
owner-died, and the next `lock()` acquires it and raises `OwnerDead`. An
exception, not a return flag, because the data the mutex guards may be half
updated and an ignored flag would hide that: the caller holds the mutex when
OwnerDead arrives, repairs the data, calls `make_consistent()` and unlocks.
Unlocking without `make_consistent()` makes the mutex unrecoverable: every
later lock raises OSError(ENOTRECOVERABLE), which says so.

A lock without timeout waits in slices of 0.1 s on CLOCK_MONOTONIC
(pthread_mutex_clocklock), so a signal handler (Ctrl-C) runs within 0.1 s;
the GIL is released during each wait, so other threads keep running.

`with mutex:` is C (osvirt._fastlock, csrc/cpython/fastlock.c): the
uncontended lock and the unlock are one pthread call each with the GIL held,
as multiprocessing.Lock's are; waiting, OwnerDead and errors come back here.
Over cffi (a Python __enter__ and a cffi call each way) it cost ~0.30 µs,
1.35x `with multiprocessing.Lock():`; the figures now are in the README's
`osvirt bench` table.
"""
import functools
import time

from osvirt.errors import OwnerDead
from osvirt.sync import _native
from osvirt.sync.region import SharedObject

__all__ = ["Mutex", "check_timeout", "wait_in_slices", "SLICE_S"]

# How long one blocking C call may last before Python gets to run signal handlers.
SLICE_S = 0.1
SLICE_NS = int(SLICE_S * 1e9)
# Deadlines are int64 nanoseconds: a longer timeout is a mistake (None waits forever).
MAX_TIMEOUT_S = 1e9
_GO_ON = (_native.ETIMEDOUT, _native.EINTR)


def check_timeout(facility, timeout_s):
    """`timeout_s` as a float, or None; ValueError/TypeError for anything else."""
    if timeout_s is None:
        return None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
        raise TypeError(f"{facility}: timeout_s must be a number of seconds or None, not {timeout_s!r}")
    if not 0 <= timeout_s <= MAX_TIMEOUT_S:  # also rejects NaN and infinity
        raise ValueError(f"{facility}: timeout_s must be in 0..{MAX_TIMEOUT_S:g} "
                         f"(None waits forever), not {timeout_s!r}")
    return float(timeout_s)


def wait_in_slices(wait_for, timeout_s):
    """Call `wait_for(timeout_ns)` with at most SLICE_NS until it returns anything but
    ETIMEDOUT or EINTR, or `timeout_s` (None: forever) has passed; its last result.
    Between slices Python runs its signal handlers: Ctrl-C ends a wait within
    SLICE_S, and a handler that returns (EINTR) lets the wait go on to the same end."""
    if timeout_s is None:
        while (outcome := wait_for(SLICE_NS)) in _GO_ON:
            pass
        return outcome
    end = time.monotonic_ns() + int(timeout_s * 1e9)
    while True:
        left = max(end - time.monotonic_ns(), 0)
        outcome = wait_for(min(left, SLICE_NS))
        if outcome == _native.EINTR:
            continue
        if outcome != _native.ETIMEDOUT or left <= SLICE_NS:
            return outcome


class Mutex(_native.MutexFastPath, SharedObject):
    """A process-shared, error-checking mutex; robust unless `robust=False`.

    `with mutex:` locks and unlocks, as with threading.Lock; `close()` (or
    `contextlib.closing(mutex)`) ends it.

    >>> m = Mutex()
    >>> with m:
    ...     m.try_lock()        # held by this thread: not acquired again
    False
    >>> m.close()
    """

    _KIND = "mutex"
    _CTYPE = "pthread_mutex_t"
    _destroy = staticmethod(_native.mutex_destroy)
    _unrecoverable = False  # this process saw ENOTRECOVERABLE

    def __init__(self, robust=True, *, named=False):
        if not isinstance(robust, bool):
            raise TypeError(f"Mutex: robust must be True or False, not {robust!r}")
        self._create(lambda ptr: _native.mutex_init(ptr, robust), named=named, metadata=int(robust))
        self._robust = robust

    @classmethod
    def open(cls, name):
        """The mutex another process created as `Mutex(named=True)`, by its name."""
        self = cls._opened(name)
        self._robust = bool(self._region.metadata)
        return self

    @property
    def robust(self):
        return self._robust

    def lock(self, timeout_s=None):
        """Acquire; True, or False when `timeout_s` passed first.

        Raises OwnerDead (holding the mutex) when the previous holder died holding it.
        """
        timeout_s = check_timeout("Mutex.lock", timeout_s)
        ptr = self._live()
        return self._lock_after(_native.mutex_trylock(ptr), ptr, timeout_s)

    def _lock_after(self, outcome, ptr, timeout_s):
        """Finish a lock whose first try (the uncontended case, without reading a clock) gave `outcome`."""
        if outcome in (_native.EBUSY, _native.EDEADLK):  # waiting again raises EDEADLK if it is ours
            outcome = wait_in_slices(functools.partial(_native.mutex_lock_for, ptr), timeout_s)
        return self._acquired(outcome)

    def try_lock(self):
        """Acquire if free, without waiting; True when acquired."""
        return self._acquired(_native.mutex_trylock(self._live()))

    def _acquired(self, outcome):
        if outcome == _native.EOWNERDEAD:
            raise OwnerDead(self.where)
        if outcome == _native.ENOTRECOVERABLE:
            self._unrecoverable = True
            raise _native.error(outcome, "pthread_mutex_lock")
        return outcome == 0

    def unlock(self):
        """Release; PermissionError (EPERM) when this thread does not hold it."""
        _native.mutex_unlock(self._live())

    def make_consistent(self):
        """After OwnerDead, once the guarded state is repaired: mark the mutex usable again."""
        _native.mutex_consistent(self._live())

    # `with mutex:` runs MutexFastPath's C __enter__/__exit__; anything but a 0 from
    # pthread_mutex_trylock/unlock lands here with its error number (None: closed).
    def _enter_slow(self, err):
        """OwnerDead propagates out of the `with` with the mutex held."""
        if err is None:
            self.lock()  # ValueError: used after close()
        else:
            self._lock_after(_native.expected_error(err, "pthread_mutex_trylock", _native.TRYLOCK_OUTCOMES),
                             self._ptr, None)

    def _exit_slow(self, err):
        if err is None:
            self.unlock()  # ValueError: used after close()
        else:
            raise _native.error(err, "pthread_mutex_unlock")

    def _safe_to_unmap(self, ptr):
        """A robust mutex a thread holds is linked into that thread's robust list, which
        glibc walks on later locks and unlocks: it may be unmapped only once no thread
        here holds it. Free, or held by this thread: unlock it. Held elsewhere (EBUSY:
        another thread, or another process): keep it mapped for the life of the process."""
        if not self._robust or self._unrecoverable:
            # glibc's trylock of an unrecoverable mutex leaves it locked by the caller but
            # in no robust list: unlocking it then would walk the list looking for it.
            return True
        outcome = _native.mutex_trylock(ptr)
        if outcome == _native.EBUSY:
            return False
        if outcome != _native.ENOTRECOVERABLE:
            _native.mutex_unlock(ptr)
        return True

    def __repr__(self):
        return f"<Mutex robust={self._robust} in {self.where}{', closed' if self.closed else ''}>"
