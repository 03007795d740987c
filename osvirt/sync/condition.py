"""A process-shared condition variable bound to a Mutex.

The pthread_cond_t is PTHREAD_PROCESS_SHARED with CLOCK_MONOTONIC as its
clock, in its own SharedRegion (anonymous or named, like its mutex's).
`wait()` must be called with the mutex held (else PermissionError, EPERM,
from the error-checking mutex) and returns with it held.

As with every condition variable, a wait may return without a notify
(spurious wakeup): wait in a loop on the predicate, or use `wait_for`.
A wait returns after at most 0.1 s (`SLICE_S`) so that signal handlers
(Ctrl-C) run; it does not wait again by itself, because a notify sent while
it re-acquired the mutex would be lost; `wait_for` loops on the predicate.
"""
import time

from osvirt.errors import OwnerDead
from osvirt.sync import _native
from osvirt.sync.mutex import SLICE_NS, Mutex, check_timeout
from osvirt.sync.region import SharedObject

__all__ = ["Condition"]


def _check_mutex(facility, mutex):
    if not isinstance(mutex, Mutex):
        raise TypeError(f"{facility}: needs an osvirt.sync.Mutex, not {type(mutex).__name__}")
    return mutex


class Condition(SharedObject):
    """Wait for a state guarded by `mutex` to change; `with cond:` locks and unlocks the mutex.

    >>> m = Mutex(); cond = Condition(m)
    >>> with cond:
    ...     cond.wait(timeout_s=0.01)   # nobody notifies: times out
    False
    >>> cond.close(); m.close()
    """

    _KIND = "cond"
    _CTYPE = "pthread_cond_t"

    @staticmethod
    def _destroy(ptr):
        """Nothing: close() only unmaps. glibc's pthread_cond_destroy waits until every
        waiter has left the condition, and a waiter SIGKILLed inside wait() never
        leaves, so destroying would hang close() forever. A process-shared condition
        owns nothing outside its own mapping, which close() unmaps, so skipping the
        destroy leaks nothing."""

    def __init__(self, mutex, *, named=None):
        """`named` defaults to the mutex's: a named mutex gets a named condition."""
        self._mutex = _check_mutex("Condition", mutex)
        named = mutex.name is not None if named is None else named
        self._create(_native.cond_init, named=named)

    @classmethod
    def open(cls, name, mutex):
        """The condition another process created with a name, bound to `mutex` (opened by name too)."""
        _check_mutex("Condition.open", mutex)
        self = cls._opened(name)
        self._mutex = mutex
        return self

    @property
    def mutex(self):
        return self._mutex

    def wait(self, timeout_s=None):
        """Release the mutex, wait for a notify, re-acquire; False only when `timeout_s` passed.

        May return True early (spurious wakeup, or the 0.1 s slice): re-check the predicate.
        Raises OwnerDead (mutex held) if a holder of the robust mutex died meanwhile.
        """
        if timeout_s is None:
            wait_ns = SLICE_NS
        else:
            timeout_s = check_timeout("Condition.wait", timeout_s)
            wait_ns = min(int(timeout_s * 1e9), SLICE_NS)
        cond, mutex = self._ptr, self._mutex._ptr
        if cond is None or mutex is None:
            cond, mutex = self._live(), self._mutex._live()  # ValueError: used after close()
        outcome = _native.cond_wait_for(cond, mutex, wait_ns)
        if outcome == _native.EOWNERDEAD:
            raise OwnerDead(self._mutex.where)
        return outcome == 0 or timeout_s is None or timeout_s * 1e9 > wait_ns

    def wait_for(self, predicate, timeout_s=None):
        """Wait until `predicate()` is true (called with the mutex held); its last value."""
        timeout_s = check_timeout("Condition.wait_for", timeout_s)
        end = None if timeout_s is None else time.monotonic_ns() + int(timeout_s * 1e9)
        result = predicate()
        while not result:
            if end is None:
                self.wait()
            else:
                left_ns = end - time.monotonic_ns()
                if left_ns <= 0:
                    break
                self.wait(left_ns / 1e9)
            result = predicate()
        return result

    def notify(self):
        """Wake one waiter (pthread_cond_signal)."""
        _native.cond_signal(self._live())

    def notify_all(self):
        """Wake every waiter (pthread_cond_broadcast)."""
        _native.cond_broadcast(self._live())

    def __enter__(self):
        self._mutex.__enter__()  # the mutex's C path: OwnerDead propagates with it held
        return self

    def __exit__(self, *exc):
        self._mutex.__exit__(None, None, None)
