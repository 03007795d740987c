"""Counting semaphores shared between processes: POSIX (sem_init) and SysV (SEM_UNDO).

`Semaphore(value)` is an unnamed POSIX semaphore, sem_init(pshared=1), in a
SharedRegion, chosen over a named posix_ipc.Semaphore after measuring both.
Its acquire, release and `with` are C (osvirt._fastlock,
csrc/cpython/fastlock.c) for the calls that cannot block: sem_trywait and
sem_post with the GIL held, as posix_ipc's are; a wait, a timeout or an error
comes back to Python. Over cffi an uncontended release+acquire cost ~0.28 µs,
3x posix_ipc's; the figures now are in the README's `osvirt bench` table.
What decides is everything else: this semaphore lives where the other
osvirt.sync objects do, in an anonymous mapping for related processes
(no /dev/shm name to leak when its creator is SIGKILLed) or a named region
for unrelated ones; its timed wait is sem_clockwait on CLOCK_MONOTONIC
(posix_ipc's is sem_timedwait on CLOCK_REALTIME, which jumps when the wall
clock is set); and it waits in 0.1 s slices, so Ctrl-C gets through, like
Mutex.

Neither kind is given back when a holder dies. `SysVSemaphore` is: taken with
SEM_UNDO (sysv_ipc's `undo`), the kernel records an adjustment per process
and reverts it in exit(), even after SIGKILL.
"""
import functools
import os

import sysv_ipc

from osvirt import tracker
from osvirt.sync import _native
from osvirt.sync.mutex import check_timeout, wait_in_slices
from osvirt.sync.region import SharedObject

__all__ = ["Semaphore", "SysVSemaphore", "SEM_VALUE_MAX", "SYSV_VALUE_MAX"]

SEM_VALUE_MAX = _native.SEM_VALUE_MAX
SYSV_VALUE_MAX = sysv_ipc.SEMAPHORE_VALUE_MAX  # SEMVMX


def _check_value(facility, value, maximum):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{facility}: value must be an int, not {value!r}")
    if not 0 <= value <= maximum:
        raise ValueError(f"{facility}: value must be in 0..{maximum}, not {value}")
    return value


class Semaphore(_native.SemaphoreFastPath, SharedObject):
    """A process-shared counting semaphore; `with sem:` acquires and releases.

    >>> sem = Semaphore(2)
    >>> sem.acquire(), sem.acquire(), sem.acquire(timeout_s=0), sem.value
    (True, True, False, 0)
    >>> sem.release(); sem.release(); sem.close()
    """

    _KIND = "sem"
    _CTYPE = "sem_t"
    _destroy = staticmethod(_native.sem_destroy)

    def __init__(self, value=1, *, named=False):
        _check_value("sem_init", value, SEM_VALUE_MAX)
        self._create(lambda ptr: _native.sem_init(ptr, value), named=named)

    @classmethod
    def open(cls, name):
        """The semaphore another process created with `named=True`, by its name."""
        return cls._opened(name)

    @property
    def value(self):
        """The count now (sem_getvalue): a snapshot, stale as soon as it is read."""
        return _native.sem_getvalue(self._live())

    # acquire(), release() and `with` are SemaphoreFastPath's C methods (their docstrings
    # are there); what they cannot do in one sem_trywait or sem_post comes here.
    def _acquire(self, timeout_s=None):
        timeout_s = check_timeout("Semaphore.acquire", timeout_s)
        ptr = self._live()
        if _native.sem_trywait(ptr) == 0:
            return True
        return wait_in_slices(functools.partial(_native.sem_wait_for, ptr), timeout_s) == 0

    def _enter_slow(self, err):
        if err is None or err == _native.EAGAIN:
            self._acquire()  # ValueError when used after close()
        else:
            raise _native.error(err, "sem_trywait")

    def _exit_slow(self, err):
        if err is None:
            self._live()  # ValueError: used after close()
        raise _native.error(err, "sem_post")


class SysVSemaphore:
    """A SysV semaphore (one in a set of one), taken with SEM_UNDO by default.

    With `undo=True` every acquire/release is recorded by the kernel per
    process and reverted when that process exits, however it exits.
    `with sem:` acquires and releases; `close()` removes the set (creator only).
    """

    _tracked = None  # the name osvirt.tracker knows it by, once registered

    def __init__(self, value=1, *, undo=True):
        _check_value("semget", value, SYSV_VALUE_MAX)
        # key None: sysv_ipc picks a random key and creates with IPC_CREAT|IPC_EXCL.
        self._sem = sysv_ipc.Semaphore(None, sysv_ipc.IPC_CREX, mode=0o600, initial_value=value)
        self._sem.undo = bool(undo)
        self._creator = os.getpid()
        self._tracked = tracker.register_sysv("sysv-sem", self._sem.id)

    @classmethod
    def open(cls, key, *, undo=True):
        """The semaphore another process created, by its SysV key."""
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError(f"semget: key must be an int, not {key!r}")
        self = cls.__new__(cls)
        self._sem = sysv_ipc.Semaphore(key)  # ExistentialError when there is none
        self._sem.undo = bool(undo)
        self._creator = None
        return self

    def _live(self):
        if self._sem is None:
            raise ValueError("SysVSemaphore: used after close()")
        return self._sem

    @property
    def key(self):
        return self._live().key

    @property
    def id(self):
        return self._live().id

    @property
    def where(self):
        sem = self._live()
        return f"SysV semaphore set id {sem.id}, key {sem.key:#x} (see ipcs -s)"

    @property
    def undo(self):
        return self._live().undo

    @property
    def value(self):
        """semval as the kernel holds it now (semctl GETVAL)."""
        return self._live().value

    @property
    def last_pid(self):
        """The pid of the last process that operated on it (semctl GETPID)."""
        return self._live().last_pid

    def acquire(self, blocking=True):
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

    def release(self):
        """Increment (semop +1, with SEM_UNDO when `undo`)."""
        self._live().release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def close(self):
        """Remove the set (IPC_RMID, creator only); elsewhere only forget it. Idempotent."""
        sem, self._sem = getattr(self, "_sem", None), None
        if sem is not None and self._creator == os.getpid():
            try:
                sem.remove()
            except sysv_ipc.ExistentialError:
                pass
            if self._tracked:
                tracker.unregister("sysv-sem", self._tracked)

    def __del__(self):
        self.close()

    def __repr__(self):
        return f"<SysVSemaphore {self.where if self._sem else 'closed'}>"
