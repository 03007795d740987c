"""What Barrier is built on: a robust mutex, a condition on it and the
words they guard, in one shared mapping (csrc/sync.h's osv_monitor).

Each word is written with the mutex held and by one store, so a holder that
dies leaves the words consistent: taking the mutex with EOWNERDEAD only needs
`pthread_mutex_consistent`, and then `_owner_died()` (a Barrier breaks).
"""
import contextlib
import functools
from collections.abc import Iterator
from typing import Any

from osvirt.sync import _native
from osvirt.sync.mutex import unmappable, wait_in_slices
from osvirt.sync.region import SharedObject

__all__ = ["Monitor"]


class Monitor(SharedObject):
    """A SharedObject whose payload starts with an osv_monitor; subclasses use its words
    (`self._words[i]`). `ptr`, the object's pointer, is passed to every helper by a
    method that holds it for the length of the call."""

    _CTYPE = "osv_monitor"

    def _create_monitor(self, *, named: bool, metadata: int = 0, size_bytes: int | None = None) -> None:
        def init(ptr: Any) -> None:
            _native.mutex_init(_native.field(ptr, "mutex"), _native.PTHREAD_MUTEX_ERRORCHECK, True)
            _native.cond_init(_native.field(ptr, "cond"))
            self._init_more(ptr)
        self._create(init, named=named, metadata=metadata, size_bytes=size_bytes)

    def _hold(self, region: Any, ptr: Any) -> None:
        super()._hold(region, ptr)
        # Made once (ffi.addressof costs more than the call it feeds); they do not keep
        # the mapping mapped: every method holds `ptr` (self._live()) while it uses them.
        self._mutex_p, self._cond_p = _native.field(ptr, "mutex"), _native.field(ptr, "cond")
        self._words = _native.words(ptr)

    def _word(self, i: int) -> int:
        """Word `i` now, read without the mutex (one aligned load: a snapshot)."""
        ptr = self._live()
        value = int(self._words[i])
        del ptr  # the mapping stays mapped until the read is done
        return value

    def _init_more(self, ptr: Any) -> None:
        """What a subclass keeps past the osv_monitor, initialised before the region is published."""

    @staticmethod
    def _destroy(ptr: Any) -> None:
        """The mutex only: pthread_cond_destroy would wait for a waiter SIGKILLed
        inside its wait forever (see Condition._destroy)."""
        _native.mutex_destroy(_native.field(ptr, "mutex"))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[Any]:
        """`with self._locked() as ptr:` the mutex held, and the object's pointer with it."""
        ptr = self._live()
        self._lock(ptr)
        try:
            yield ptr
        finally:
            self._unlock(ptr)

    def _lock(self, ptr: Any) -> None:
        """Take the mutex; a holder that died is recovered from here."""
        mutex = self._mutex_p
        outcome = _native.mutex_trylock(mutex)
        if outcome == _native.EBUSY:
            outcome = wait_in_slices(functools.partial(_native.mutex_lock_for, mutex), None)
        if outcome == _native.EOWNERDEAD:
            _native.mutex_consistent(mutex)
            self._owner_died(ptr)
        elif outcome:
            raise _native.error(outcome, "pthread_mutex_lock")

    def _owner_died(self, ptr: Any) -> None:
        """Called with the mutex taken from a holder that died."""

    def _unlock(self, ptr: Any) -> None:
        _native.mutex_unlock(self._mutex_p)

    def _cond_wait(self, ptr: Any, timeout_ns: int) -> int:
        """One pthread_cond_timedwait of at most `timeout_ns`: 0, ETIMEDOUT (the mutex
        held again in both cases); a holder's death is recovered from."""
        mutex = self._mutex_p
        outcome = _native.cond_wait_for(self._cond_p, mutex, timeout_ns)
        if outcome == _native.EOWNERDEAD:
            _native.mutex_consistent(mutex)
            self._owner_died(ptr)
            return 0
        return outcome

    def _broadcast(self, ptr: Any) -> None:
        _native.cond_broadcast(self._cond_p)

    def _mutexes(self, ptr: Any) -> list[Any]:
        """The robust mutexes in the mapping."""
        return [_native.field(ptr, "mutex")]

    def _safe_to_unmap(self, ptr: Any) -> bool:
        return unmappable(*self._mutexes(ptr))
