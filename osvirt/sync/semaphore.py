"""Counting semaphores shared between processes: POSIX (sem_init) and SysV (SEM_UNDO).

`Semaphore(value)` and `BoundedSemaphore(value)` speak threading's protocol;
each is an unnamed POSIX semaphore, sem_init(pshared=1), in a SharedRegion
(named unless `named=False`, so pickle and `open(name)` reach it), chosen over a named posix_ipc.Semaphore after measuring both.
Its acquire, release and `with` are C (osvirt._fastlock,
csrc/cpython/fastlock.c) for the calls that cannot block: sem_trywait and
sem_post with the GIL held, as posix_ipc's are; a wait, a timeout or an error
comes back to Python. Over cffi an uncontended release+acquire cost several
times posix_ipc's; `osvirt bench semaphore` measures both.
What decides is everything else: this semaphore lives where the other
osvirt.sync objects do, in an anonymous mapping for related processes
(no /dev/shm name to leak when its creator is SIGKILLed) or a named region
for unrelated ones; its timed wait is sem_clockwait on CLOCK_MONOTONIC
(posix_ipc's is sem_timedwait on CLOCK_REALTIME, which jumps when the wall
clock is set); and it waits in 0.1 s slices, so Ctrl-C gets through, like
Mutex.

A POSIX semaphore has no holder (any thread may release it), so nothing is
given back when a process that took it dies. `SysVSemaphore` is: taken with
SEM_UNDO (sysv_ipc's `undo`), the kernel records an adjustment per process
and reverts it in exit(), even after SIGKILL.
"""
import functools
import os
from typing import Any

import sysv_ipc

from osvirt import tracker
from osvirt.sync import _native
from osvirt.sync.mutex import wait_in_slices, wait_timeout
from osvirt.sync.region import SharedObject

__all__ = ["BoundedSemaphore", "Semaphore", "SysVSemaphore", "SEM_VALUE_MAX", "SYSV_VALUE_MAX"]

SEM_VALUE_MAX = _native.SEM_VALUE_MAX
SYSV_VALUE_MAX = sysv_ipc.SEMAPHORE_VALUE_MAX  # SEMVMX


def _check_value(facility: str, value: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{facility}: value must be an int, not {value!r}")
    if value < 0:
        raise ValueError("semaphore initial value must be >= 0")
    if value > maximum:
        raise ValueError(f"{facility}: value must be in 0..{maximum}, not {value}")
    return value


class Semaphore(_native.SemaphoreFastPath, SharedObject):
    """threading.Semaphore, process-shared: `acquire(blocking=True, timeout=None)`,
    `release(n=1)`, `with sem:` acquires and releases.

    >>> sem = Semaphore(2)
    >>> sem.acquire(), sem.acquire(), sem.acquire(timeout=0), sem.value
    (True, True, False, 0)
    >>> sem.release(2); sem.value
    2
    """

    _KIND = "sem"
    _CTYPE = "sem_t"
    _destroy = staticmethod(_native.sem_destroy)

    def __init__(self, value: int = 1, *, named: bool = True) -> None:
        _check_value("sem_init", value, SEM_VALUE_MAX)
        self._create(lambda ptr: _native.sem_init(ptr, value), named=named)

    @classmethod
    def open(cls, name: str) -> "Semaphore":
        """The semaphore another process created with a name, by its name."""
        sem: Semaphore = cls._opened(name)
        return sem

    @property
    def value(self) -> int:
        """The count now (sem_getvalue): a snapshot, stale as soon as it is read."""
        ptr = self._live()
        return _native.sem_getvalue(self._sem(ptr))

    def _sem(self, ptr: Any) -> Any:
        """The sem_t in the object `ptr` points to (hold `ptr` while using it)."""
        return ptr

    # acquire(), release() and `with` are SemaphoreFastPath's C methods (their docstrings
    # are there); what they cannot do in one sem_trywait or sem_post comes here.
    def _acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if not blocking and timeout is not None:
            raise ValueError("can't specify timeout for non-blocking acquire")
        timeout_s = wait_timeout("Semaphore.acquire", timeout) if blocking else 0.0
        ptr = self._live()
        sem = self._sem(ptr)
        if _native.sem_trywait(sem) == 0:
            return True
        if timeout_s == 0:
            return False
        return wait_in_slices(functools.partial(_native.sem_wait_for, sem), timeout_s) == 0

    def _release(self, n: int = 1) -> None:
        ptr = self._live()
        sem = self._sem(ptr)
        for _ in range(_check_n(n)):
            _native.sem_post(sem)

    def _enter_slow(self, err: int | None) -> None:
        if err is None or err == _native.EAGAIN:
            self._acquire()  # ValueError when used after close()
        else:
            raise _native.error(err, "sem_trywait")

    def _exit_slow(self, err: int | None) -> None:
        if err is None:
            self._live()  # raises ValueError: used after close()
        else:
            raise _native.error(err, "sem_post")

    def __repr__(self) -> str:
        value = "closed" if self.closed else f"value={self.value}"
        return f"<osvirt.sync.{type(self).__name__} at {id(self):#x}: {value}>"


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"Semaphore.release: n must be an int, not {n!r}")
    if n < 1:
        raise ValueError("n must be one or more")
    return n


class BoundedSemaphore(Semaphore):
    """threading.BoundedSemaphore, process-shared: a release past the initial value
    is a ValueError. The check and the posts are made under a robust mutex of its
    own, so two releases cannot both pass the check; acquires need no such lock
    (they only lower the count)."""

    _KIND = "bsem"
    _CTYPE = "osv_bounded_sem"

    def __init__(self, value: int = 1, *, named: bool = True) -> None:
        _check_value("sem_init", value, SEM_VALUE_MAX)

        def init(ptr: Any) -> None:
            _native.sem_init(_native.field(ptr, "sem"), value)
            _native.mutex_init(_native.field(ptr, "guard"), _native.PTHREAD_MUTEX_ERRORCHECK, True)
        self._create(init, named=named, metadata=value)
        self._bound = value

    @classmethod
    def open(cls, name: str) -> "BoundedSemaphore":
        sem: BoundedSemaphore = cls._opened(name)
        sem._bound = sem._held_region().metadata
        return sem

    def _hold(self, region: Any, ptr: Any) -> None:
        super()._hold(region, ptr)
        # Made once (ffi.addressof costs more than the call it feeds); they do not keep
        # the mapping mapped: every method holds `ptr` (self._live()) while it uses them.
        self._sem_p, self._guard_p = _native.field(ptr, "sem"), _native.field(ptr, "guard")

    def _sem(self, ptr: Any) -> Any:
        return self._sem_p

    @staticmethod
    def _destroy(ptr: Any) -> None:
        _native.sem_destroy(_native.field(ptr, "sem"))
        _native.mutex_destroy(_native.field(ptr, "guard"))

    def release(self, n: int = 1) -> None:
        """Increment by `n`, waking as many waiters; ValueError past the initial value."""
        self._release(n)

    def _release(self, n: int = 1) -> None:
        _check_n(n)
        ptr = self._live()
        guard, sem = self._guard_p, self._sem_p
        outcome = _native.mutex_trylock(guard)
        if outcome == _native.EBUSY:
            outcome = wait_in_slices(functools.partial(_native.mutex_lock_for, guard), None)
        if outcome == _native.EOWNERDEAD:  # a releaser died: it guards no state of its own
            _native.mutex_consistent(guard)
        try:
            if _native.sem_getvalue(sem) + n > self._bound:
                raise ValueError("Semaphore released too many times")
            for _ in range(n):
                _native.sem_post(sem)
        finally:
            _native.mutex_unlock(guard)
            del ptr  # held until here: the mapping guard and sem point into

    def __exit__(self, *exc: object) -> None:
        self._release()

    def __repr__(self) -> str:
        value = "closed" if self.closed else f"value={self.value}/{self._bound}"
        return f"<osvirt.sync.BoundedSemaphore at {id(self):#x}: {value}>"


class SysVSemaphore:
    """A SysV semaphore (one in a set of one), taken with SEM_UNDO by default.

    With `undo=True` every acquire/release is recorded by the kernel per
    process and reverted when that process exits, however it exits.
    `with sem:` acquires and releases; `close()` removes the set (creator only).
    """

    _tracked: str | None = None  # the name osvirt.tracker knows it by, once registered

    def __init__(self, value: int = 1, *, undo: bool = True) -> None:
        _check_value("semget", value, SYSV_VALUE_MAX)
        # key None: sysv_ipc picks a random key and creates with IPC_CREAT|IPC_EXCL.
        sem, self._tracked = tracker.make_sysv(
            "sysv-sem", lambda: sysv_ipc.Semaphore(None, sysv_ipc.IPC_CREX, mode=0o600, initial_value=value),
            lambda sem: sem.id)
        self._sem: sysv_ipc.Semaphore | None = sem
        sem.undo = bool(undo)
        self._creator: int | None = os.getpid()

    @classmethod
    def open(cls, key: int, *, undo: bool = True) -> "SysVSemaphore":
        """The semaphore another process created, by its SysV key."""
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError(f"semget: key must be an int, not {key!r}")
        self = cls.__new__(cls)
        self._sem = sysv_ipc.Semaphore(key)  # ExistentialError when there is none
        self._sem.undo = bool(undo)
        self._creator = None
        return self

    def _live(self) -> sysv_ipc.Semaphore:
        if self._sem is None:
            raise ValueError("SysVSemaphore: used after close()")
        return self._sem

    @property
    def key(self) -> int:
        return self._live().key

    @property
    def id(self) -> int:
        return self._live().id

    @property
    def where(self) -> str:
        sem = self._live()
        return f"SysV semaphore set id {sem.id}, key {sem.key:#x} (see ipcs -s)"

    @property
    def undo(self) -> bool:
        return self._live().undo

    @property
    def value(self) -> int:
        """semval as the kernel holds it now (semctl GETVAL)."""
        return self._live().value

    @property
    def last_pid(self) -> int:
        """The pid of the last process that operated on it (semctl GETPID)."""
        return self._live().last_pid

    def acquire(self, blocking: bool = True) -> bool:
        """Decrement (semop -1, with SEM_UNDO when `undo`); False when not blocking and it is 0."""
        sem = self._live()
        # This sysv_ipc may lack semtimedop (SEMAPHORE_TIMEOUT_SUPPORTED), so
        # non-blocking is IPC_NOWAIT through `block`, never a zero timeout.
        sem.block = bool(blocking)
        while True:
            try:
                sem.acquire()
                return True
            except sysv_ipc.BusyError:
                return False
            except sysv_ipc.Error as e:
                if type(e) is not sysv_ipc.Error:  # ExistentialError, PermissionsError, ...
                    raise
                continue  # EINTR: a signal handler ran (and did not raise): wait again

    def release(self) -> None:
        """Increment (semop +1, with SEM_UNDO when `undo`)."""
        self._live().release()

    def __enter__(self) -> "SysVSemaphore":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        """Remove the set (IPC_RMID, creator only); elsewhere only forget it. Idempotent."""
        sem, self._sem = getattr(self, "_sem", None), None
        if sem is not None and self._creator == os.getpid():
            try:
                sem.remove()
            except sysv_ipc.ExistentialError:
                pass
            if self._tracked:
                tracker.unregister("sysv-sem", self._tracked)

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SysVSemaphore {self.where if self._sem else 'closed'}>"
