"""A process-shared pthread mutex, robust by default; the one implementation
under Mutex and the threading protocol's Lock and RLock (osvirt.sync.lock).

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
Over cffi (a Python __enter__ and a cffi call each way) it cost more than
`with multiprocessing.Lock():`; `osvirt bench mutex lock rlock` measures both.
"""
from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from osvirt.errors import OwnerDead
from osvirt.sync import _native
from osvirt.sync.region import SharedObject

__all__ = ["BaseMutex", "Mutex", "check_timeout", "threading_timeout", "unmappable", "wait_timeout", "wait_in_slices",
           "SLICE_S", "FUTEX_TID_MASK"]

# How long one blocking C call may last before Python gets to run signal handlers.
SLICE_S = 0.1
SLICE_NS = int(SLICE_S * 1e9)
# Deadlines are int64 nanoseconds: a longer timeout is a mistake (None waits forever).
MAX_TIMEOUT_S = 1e9
# The robust futex word's holder: the kernel's FUTEX_TID_MASK (linux/futex.h).
FUTEX_TID_MASK = 0x3FFFFFFF
_GO_ON = (_native.ETIMEDOUT, _native.EINTR)


def check_timeout(facility: str, timeout_s: float | None) -> float | None:
    """`timeout_s` as a float, or None; ValueError/TypeError for anything else."""
    if timeout_s is None:
        return None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
        raise TypeError(f"{facility}: timeout_s must be a number of seconds or None, not {timeout_s!r}")
    if not 0 <= timeout_s <= MAX_TIMEOUT_S:  # also rejects NaN and infinity
        raise ValueError(f"{facility}: timeout_s must be in 0..{MAX_TIMEOUT_S:g} "
                         f"(None waits forever), not {timeout_s!r}")
    return float(timeout_s)


def wait_in_slices(wait_for: Callable[[int], int], timeout_s: float | None) -> int:
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


class BaseMutex(_native.MutexFastPath, SharedObject):
    """What Mutex, Lock and RLock share: a process-shared pthread mutex, error-checking
    or recursive, robust unless created otherwise, with threading's acquire/release.

    `with` is C (MutexFastPath); its slow paths and the methods are here.
    """

    _CTYPE = "pthread_mutex_t"
    _TYPE = _native.PTHREAD_MUTEX_ERRORCHECK
    _destroy = staticmethod(_native.mutex_destroy)
    _robust = True
    _unrecoverable = False  # this process saw ENOTRECOVERABLE

    def _create_mutex(self, robust: bool, named: bool) -> None:
        self._create(lambda ptr: _native.mutex_init(ptr, self._TYPE, robust), named=named, metadata=int(robust))
        self._robust = robust

    @classmethod
    def open(cls: type[_M], name: str) -> _M:
        """The lock another process created with a name (`named=True`), by its name."""
        self = cls._opened(name)
        self._robust = bool(self._held_region().metadata)
        return self

    @property
    def robust(self) -> bool:
        return self._robust

    # -- the threading protocol ------------------------------------------------------
    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire, waiting while another thread or process holds it (threading's
        arguments); True, or False when not blocking or when `timeout` passed first.

        Raises OwnerDead (holding it) when the previous holder died holding it.
        """
        timeout_s = threading_timeout(f"{type(self).__name__}.acquire", blocking, timeout)
        ptr = self._live()
        outcome = _native.mutex_trylock(ptr)
        if outcome == _native.EDEADLK:
            return self._acquire_own(timeout_s)
        if outcome == _native.EBUSY and timeout_s != 0:
            outcome = wait_in_slices(functools.partial(_native.mutex_lock_for, ptr), timeout_s)
        return self._acquired(outcome)

    def _acquire_own(self, timeout_s: float | None) -> bool:
        """An acquire by the thread that holds it, which only it may release: as with
        threading.Lock, it cannot succeed. A timeout passes; forever is an error."""
        if timeout_s is None:
            raise RuntimeError(f"{type(self).__name__}.acquire: this thread holds it already, "
                               "and only its holder may release it: it would wait forever")
        time.sleep(timeout_s)
        return False

    def release(self) -> None:
        """Release; RuntimeError when this thread does not hold it."""
        self._release_outcome(_native.mutex_release(self._live()))

    def _release_outcome(self, err: int) -> None:
        if err == _native.EPERM:
            holder = self._holder()
            if holder == 0:
                raise RuntimeError("release unlocked lock")
            raise RuntimeError(f"cannot release un-acquired lock: thread {holder} holds it, and a robust "
                               "mutex is released only by its holder")
        if err:
            raise _native.error(err, "pthread_mutex_unlock")

    def locked(self) -> bool:
        """Whether a thread (here or in another process) holds it: its futex word names one."""
        return self._holder() != 0

    def _holder(self) -> int:
        """The TID of the holding thread (in whichever process), 0 when free: from the
        robust futex word, which the kernel reads too; a non-robust one's from glibc."""
        ptr = self._live()
        if self._robust:
            return _native.mutex_futex_word(ptr) & FUTEX_TID_MASK
        return _native.mutex_owner(ptr)

    def _is_owned(self) -> bool:
        """Whether the calling thread holds it (threading.Condition asks this)."""
        return self._holder() == threading.get_native_id()

    def make_consistent(self) -> None:
        """After OwnerDead, once the guarded state is repaired: mark the mutex usable again."""
        _native.mutex_consistent(self._live())

    def _acquired(self, outcome: int) -> bool:
        if outcome == _native.EOWNERDEAD:
            raise OwnerDead(self.where)
        if outcome == _native.ENOTRECOVERABLE:
            self._unrecoverable = True
            raise _native.error(outcome, "pthread_mutex_lock")
        return outcome == 0

    # `with` runs MutexFastPath's C __enter__/__exit__; anything but a 0 from
    # pthread_mutex_trylock/unlock lands here with its error number (None: closed).
    def _enter_slow(self, err: int | None) -> None:
        """OwnerDead propagates out of the `with` with the mutex held."""
        if err is None:
            self.acquire()  # ValueError: used after close()
            return
        outcome = _native.expected_error(err, "pthread_mutex_trylock", _native.TRYLOCK_OUTCOMES)
        if outcome == _native.EDEADLK:
            self._acquire_own(None)  # raises
        elif outcome == _native.EBUSY:
            outcome = wait_in_slices(functools.partial(_native.mutex_lock_for, self._ptr), None)
        self._acquired(outcome)

    def _exit_slow(self, err: int | None) -> None:
        if err is None:
            self.release()  # ValueError: used after close()
        else:
            self._release_outcome(err)

    def _safe_to_unmap(self, ptr: Any) -> bool:
        if not self._robust or self._unrecoverable:
            # glibc's trylock of an unrecoverable mutex leaves it locked by the caller but
            # in no robust list: unlocking it then would walk the list looking for it.
            return True
        return unmappable(ptr)


# Bound to the class itself, not to its name (see osvirt._owned).
_M = TypeVar("_M", bound=BaseMutex)


def unmappable(*mutexes: Any) -> bool:
    """Whether robust mutexes may be unmapped now. One a thread holds is linked into
    that thread's robust list, which glibc walks on its later locks and unlocks: one
    this thread holds is unlocked first (every level of a recursive one); one another
    thread of this process holds (its TID is in /proc/self/task) keeps the mapping
    for the life of the process. One that is free, held by another process or left
    by a dead holder is not touched: its next acquirer there gets it, with OwnerDead."""
    me = threading.get_native_id()
    for mutex in mutexes:
        holder = _native.mutex_futex_word(mutex) & FUTEX_TID_MASK
        while holder == me:
            _native.mutex_unlock(mutex)
            holder = _native.mutex_futex_word(mutex) & FUTEX_TID_MASK
        if holder and os.path.exists(f"/proc/self/task/{holder}"):
            return False
    return True


def threading_timeout(facility: str, blocking: object, timeout: object) -> float | None:
    """threading.Lock.acquire's (blocking, timeout) as a timeout in seconds: None for
    forever, 0 for a try; its exceptions, with its messages, for bad ones."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{facility}: timeout must be a number of seconds, not {timeout!r}")
    if not blocking:
        if timeout != -1:
            raise ValueError("can't specify a timeout for a non-blocking call")
        return 0.0
    if timeout == -1:
        return None
    if not timeout >= 0:  # also NaN
        raise ValueError("timeout value must be positive")
    if timeout > threading.TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")
    return float(timeout)


def wait_timeout(facility: str, timeout: object) -> float | None:
    """A `timeout` of threading's waits (Semaphore, Condition, Event, Barrier) in seconds:
    None waits forever, a negative one does not wait; OverflowError past TIMEOUT_MAX."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout != timeout:
        raise TypeError(f"{facility}: timeout must be a number of seconds or None, not {timeout!r}")
    if timeout > threading.TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")
    return max(float(timeout), 0.0)


class Mutex(BaseMutex):
    """A process-shared, error-checking mutex; robust unless `robust=False`.

    `with mutex:` locks and unlocks, as with threading.Lock; `close()` (or
    `contextlib.closing(mutex)`) ends it. lock/try_lock/unlock are the pthread
    calls' names and errors; acquire/release threading's (osvirt.sync.Lock).

    >>> m = Mutex()
    >>> with m:
    ...     m.try_lock()        # held by this thread: not acquired again
    False
    >>> m.close()
    """

    _KIND = "mutex"

    def __init__(self, robust: bool = True, *, named: bool = False) -> None:
        if not isinstance(robust, bool):
            raise TypeError(f"Mutex: robust must be True or False, not {robust!r}")
        self._create_mutex(robust, named)

    def lock(self, timeout_s: float | None = None) -> bool:
        """Acquire; True, or False when `timeout_s` passed first.

        Raises OwnerDead (holding the mutex) when the previous holder died holding it.
        """
        timeout_s = check_timeout("Mutex.lock", timeout_s)
        ptr = self._live()
        return self._lock_after(_native.mutex_trylock(ptr), ptr, timeout_s)

    def _lock_after(self, outcome: int, ptr: Any, timeout_s: float | None) -> bool:
        """Finish a lock whose first try (the uncontended case, without reading a clock) gave `outcome`."""
        if outcome in (_native.EBUSY, _native.EDEADLK):  # waiting again raises EDEADLK if it is ours
            outcome = wait_in_slices(functools.partial(_native.mutex_lock_for, ptr), timeout_s)
        return self._acquired(outcome)

    def try_lock(self) -> bool:
        """Acquire if free, without waiting; True when acquired."""
        return self._acquired(_native.mutex_trylock(self._live()))

    def unlock(self) -> None:
        """Release; PermissionError (EPERM) when this thread does not hold it."""
        _native.mutex_unlock(self._live())

    # The pthread errors, not threading's: EDEADLK for a second lock, EPERM for a foreign unlock.
    def _enter_slow(self, err: int | None) -> None:
        """OwnerDead propagates out of the `with` with the mutex held."""
        if err is None:
            self.lock()  # ValueError: used after close()
        else:
            self._lock_after(_native.expected_error(err, "pthread_mutex_trylock", _native.TRYLOCK_OUTCOMES),
                             self._ptr, None)

    def _exit_slow(self, err: int | None) -> None:
        if err is None:
            self.unlock()  # ValueError: used after close()
        else:
            raise _native.error(err, "pthread_mutex_unlock")

    def __repr__(self) -> str:
        return f"<Mutex robust={self._robust} in {self.where}{', closed' if self.closed else ''}>"
