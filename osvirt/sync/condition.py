"""threading's Condition, process-shared: a futex word and three counts on an osvirt lock.

The condition (csrc/inline/condition.h says how it works) lives in its own
SharedRegion; its lock is a Lock, RLock (the default, as in threading) or
Mutex of osvirt.sync, robust, so a holder that dies hands the lock on with
OwnerDead, raised by `wait()` or `with` with the lock held. The protocol is
threading's: `wait(timeout=None)`, `wait_for(predicate, timeout=None)`,
`notify(n=1)`, `notify_all()`, RuntimeError when the calling thread does not
hold the lock.

notify(n) wakes n waiters, none twice: it counts what it owes (`owed`, and its
own count, `notifies`), and a waiter returns True only when a notify came
since it began and one is owed to it; any other wake-up is spurious and it
sleeps again. A wait sleeps in an untimed futex wait, which a signal handler
(Ctrl-C) interrupts; its exception ends the wait with the lock held again. A
wait on an RLock held n times releases it entirely and holds it n times again,
as threading's does.
"""
from collections.abc import Callable
import time
from typing import Any, TypeVar

from osvirt.errors import OwnerDead
from osvirt.sync import _native
from osvirt.sync.lock import RLock
from osvirt.sync.mutex import BaseMutex, wait_timeout
from osvirt.sync.region import SharedObject

__all__ = ["Condition"]

_T = TypeVar("_T")
WAITERS = 0  # osv_condition's counts: waiters, owed, notifies
_ALL = 2**63 - 1  # notify(n)'s n past every waiter there can be (an int64_t in C)


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
        """Nothing to destroy: a futex word is kernel state only while a waiter sleeps on it."""

    def __init__(self, lock: BaseMutex | None = None, *, named: bool | None = None) -> None:
        """`named` defaults to the lock's: a named lock gets a named condition."""
        if lock is None:
            lock = RLock(named=True if named is None else named)
        _check_lock("Condition", lock)
        named = lock.name is not None if named is None else named
        self._create(lambda ptr: None, named=named)  # a new mapping is zeros: no waiters
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
        """What the C path's wait ended with, other than a notify: a dead holder, an error."""
        if err == _native.EOWNERDEAD:
            raise OwnerDead(self._lock.where)
        raise _native.error(err, "futex(FUTEX_WAIT_BITSET) on a condition")

    def _wait(self, timeout: float | None = None) -> bool:
        timeout_s = wait_timeout("Condition.wait", timeout)
        ptr, lock = self._live(), self._lock
        mutex = lock._live()
        if not lock._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        # An RLock's levels: the wait gives up its mutex, whose next holders write the
        # count; ours comes back with the mutex.
        rlock = lock if isinstance(lock, RLock) else None
        levels = rlock._count_p[0] if rlock is not None else 0
        end = None if timeout_s is None else time.monotonic_ns() + int(timeout_s * 1e9)
        notifies = _native.condition_enter(ptr)
        notified = False
        try:
            while True:
                left_ns = -1 if end is None else max(end - time.monotonic_ns(), 0)
                outcome = _native.condition_wait_for(ptr, mutex, left_ns)
                if outcome == _native.EOWNERDEAD:
                    break
                if _native.condition_take(ptr, notifies):
                    notified = True
                    break
                if end is not None and time.monotonic_ns() >= end:
                    break
        finally:  # the lock is held again here, whatever the wait returned
            _native.condition_leave(ptr)
            if rlock is not None:
                rlock._count_p[0] = levels
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
        """Wake up to `n` waiters not woken yet."""
        ptr = self._live()
        if not self._lock._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        if n > 0:
            _native.condition_notify(ptr, min(n, _ALL))

    def notify_all(self) -> None:
        """Wake every waiter."""
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
