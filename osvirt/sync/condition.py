"""threading's Condition, process-shared: a pthread condition on an osvirt lock.

The pthread_cond_t is PTHREAD_PROCESS_SHARED with CLOCK_MONOTONIC as its
clock, in its own SharedRegion beside a count of its waiters; its lock is a
Lock, RLock (the default, as in threading) or Mutex of osvirt.sync, robust,
so a holder that dies hands the lock on with OwnerDead, raised by `wait()` or
`with` with the lock held. The protocol is threading's: `wait(timeout=None)`,
`wait_for(predicate, timeout=None)`, `notify(n=1)`, `notify_all()`,
RuntimeError when the calling thread does not hold the lock.

`wait()` waits in slices of 0.1 s (SLICE_S) so that signal handlers (Ctrl-C)
run, and goes on waiting after each. A notify that comes as a slice times out
would be lost to that waiter (glibc reports the timeout), so notify(n) counts
what it owes beside the condition (`owed`, and its own count, `notifies`),
and a waiter returns True when a notify came since it began and one is owed,
however its slice ended: notify(n) wakes n waiters, none twice. A wait on an RLock held n times releases it entirely and
holds it n times again, as threading's does.
"""
from collections.abc import Callable
import time
from typing import Any, TypeVar

from osvirt.errors import OwnerDead
from osvirt.sync import _native
from osvirt.sync.lock import RLock
from osvirt.sync.mutex import SLICE_NS, BaseMutex, wait_timeout
from osvirt.sync.region import SharedObject

__all__ = ["Condition"]

_T = TypeVar("_T")
WAITERS, OWED, NOTIFIES = 0, 1, 2  # osv_condition's counts


class Condition(_native.ConditionFastPath, SharedObject):
    """threading.Condition over an osvirt.sync lock (a new RLock by default).

    >>> cond = Condition()
    >>> with cond:
    ...     cond.wait(timeout=0.01)   # nobody notifies: times out
    False
    """

    _KIND = "cond"
    _CTYPE = "osv_condition"

    @staticmethod
    def _destroy(ptr: Any) -> None:
        """Nothing: close() only unmaps. glibc's pthread_cond_destroy waits until every
        waiter has left the condition, and a waiter SIGKILLed inside wait() never
        leaves, so destroying would hang close() forever. A process-shared condition
        owns nothing outside its own mapping, which close() unmaps, so skipping the
        destroy leaks nothing."""

    def __init__(self, lock: BaseMutex | None = None, *, named: bool | None = None) -> None:
        """`named` defaults to the lock's: a named lock gets a named condition."""
        if lock is None:
            lock = RLock(named=True if named is None else named)
        _check_lock("Condition", lock)
        named = lock.name is not None if named is None else named
        self._create(lambda ptr: _native.cond_init(_native.field(ptr, "cond")), named=named)
        self._use_lock(lock)

    @classmethod
    def open(cls, name: str, lock: BaseMutex) -> "Condition":
        """The condition another process created with a name, on `lock` (opened by name too)."""
        _check_lock("Condition.open", lock)
        self: Condition = cls._opened(name)
        self._use_lock(lock)
        return self

    def _use_lock(self, lock: BaseMutex) -> None:
        """Wait on `lock`, whose mutex (and an RLock's count) the C path takes too."""
        self._lock = lock
        mutex = lock._live()
        count = _native.address_of(lock._count_p) if isinstance(lock, RLock) else 0
        self._bind_lock(mutex, _native.address_of(mutex), count)

    def __reduce__(self) -> tuple[Any, ...]:
        name, lock = super().__reduce__()[1][0], self._lock
        return (type(self).open, (name, lock))

    def _hold(self, region: Any, ptr: Any) -> None:
        super()._hold(region, ptr)
        # Made once (ffi.addressof costs more than the call it feeds); they do not keep
        # the mapping mapped: every method holds `ptr` (self._live()) while it uses them.
        self._cond_p = _native.field(ptr, "cond")
        self._counts = _native.field(ptr, "waiters")  # waiters, owed, notifies: three int64 in a row

    @property
    def lock(self) -> BaseMutex:
        return self._lock

    # -- the lock ----------------------------------------------------------------------
    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    # `with`, wait() and notify() are ConditionFastPath's C methods (their docstrings are
    # there): `with` takes the lock's mutex; what they leave comes here and to the lock.
    def _enter_slow(self, err: int | None) -> None:
        """OwnerDead propagates out of the `with` with the lock held."""
        if err is None:
            self._live()  # raises ValueError: used after close()
        self._lock._enter_slow(err)

    def _exit_slow(self, err: int | None) -> None:
        if err is None:
            self._live()  # raises ValueError: used after close()
        self._lock._exit_slow(err)

    # -- waiting and notifying -----------------------------------------------------------
    def _wait_on(self, err: int) -> bool:
        """After the C path's slice: wait on (ETIMEDOUT), or report a dead holder."""
        if err == _native.EOWNERDEAD:
            raise OwnerDead(self._lock.where)
        if err != _native.ETIMEDOUT:
            raise _native.error(err, "pthread_cond_timedwait")
        return self._wait(None)

    def _wait(self, timeout: float | None = None) -> bool:
        timeout_s = wait_timeout("Condition.wait", timeout)
        ptr, lock = self._live(), self._lock
        mutex = lock._live()
        if not lock._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        # An RLock's levels: the pthread wait gives up its mutex, whose next holders
        # write the count; ours comes back with the mutex.
        rlock = lock if isinstance(lock, RLock) else None
        levels = rlock._count_p[0] if rlock is not None else 0
        counts = self._counts
        notifies = counts[NOTIFIES]
        counts[WAITERS] += 1
        end = None if timeout_s is None else time.monotonic_ns() + int(timeout_s * 1e9)
        notified = False
        try:
            while True:
                slice_ns = SLICE_NS if end is None else max(min(end - time.monotonic_ns(), SLICE_NS), 0)
                outcome = _native.cond_wait_for(self._cond_p, mutex, slice_ns)
                if outcome == _native.EOWNERDEAD:
                    break
                # Notified: a notify came since we began and one is owed, whether glibc
                # woke us or our slice timed out as it came; a wake-up without one is
                # spurious, and we wait on.
                if counts[OWED] > 0 and counts[NOTIFIES] != notifies:
                    counts[OWED] -= 1
                    notified = True
                    break
                if end is not None and time.monotonic_ns() >= end:
                    break
        finally:  # the mutex is held again here, whatever the wait returned
            counts[WAITERS] -= 1
            if rlock is not None:
                rlock._count_p[0] = levels
            del ptr  # held until here: the mapping the cached pointers point into
        if outcome == _native.EOWNERDEAD:
            raise OwnerDead(lock.where)
        return notified

    def wait_for(self, predicate: Callable[[], _T], timeout: float | None = None) -> _T:
        """Wait until `predicate()` is true (called with the lock held); its last value."""
        end = None
        wait_s = wait_timeout("Condition.wait_for", timeout)
        result = predicate()
        while not result:
            if wait_s is not None:
                if end is None:
                    end = time.monotonic() + wait_s
                else:
                    wait_s = end - time.monotonic()
                    if wait_s <= 0:
                        break
            self.wait(wait_s)
            result = predicate()
        return result

    def _notify(self, n: int = 1) -> None:
        """Wake up to `n` waiters (pthread_cond_signal each, or one broadcast for all)."""
        ptr = self._live()
        if not self._lock._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        counts = self._counts
        waiting = counts[WAITERS] - counts[OWED]  # not woken yet
        woken = min(n, waiting)
        if woken > 0:
            counts[OWED] += woken
            counts[NOTIFIES] += 1
            if woken == waiting:
                _native.cond_broadcast(self._cond_p)
            else:
                for _ in range(woken):
                    _native.cond_signal(self._cond_p)
        del ptr  # held until here: the mapping the cached pointers point into

    def notify_all(self) -> None:
        """Wake every waiter (pthread_cond_broadcast)."""
        ptr = self._live()
        waiters = int(self._counts[WAITERS])
        del ptr
        self._notify(waiters)

    @property
    def _waiters(self) -> int:
        """How many wait now (threads of every process that shares it)."""
        ptr = self._live()
        waiters = int(self._counts[WAITERS])
        del ptr
        return waiters

    def __repr__(self) -> str:
        if self.closed:
            return f"<Condition({self._lock!r}), closed>"
        return f"<Condition({self._lock!r}, {self._waiters})>"


def _check_lock(facility: str, lock: object) -> BaseMutex:
    if not isinstance(lock, BaseMutex):
        raise TypeError(f"{facility}: needs a process-shared lock (osvirt.sync.Lock, RLock or Mutex), "
                        f"not {type(lock).__name__}")
    return lock
