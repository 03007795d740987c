"""threading's Event, process-shared: one futex word (csrc/inline/event.h).

`set()` raises the flag and wakes every waiter, `clear()` lowers it,
`wait(timeout=None)` returns True once it is set (or was set while it
waited, even if cleared since, as threading's does) and False when the
timeout passed. Nothing is held, between calls or inside one: set() is one
futex call that raises the flag and wakes the waiters together, clear() one
compare-and-swap, so a process killed anywhere leaves the event working.
Named by default; `Event.open(name)` in another process, and pickled by name.
"""
import time
from typing import Any

from osvirt.sync import _native
from osvirt.sync.mutex import wait_timeout
from osvirt.sync.region import SharedObject

__all__ = ["Event"]


class Event(_native.EventFastPath, SharedObject):
    """threading.Event, process-shared.

    >>> event = Event()
    >>> event.wait(timeout=0.01), event.set(), event.wait(), event.is_set()
    (False, None, True, True)
    """

    _KIND = "event"
    _CTYPE = "osv_event"

    def __init__(self, *, named: bool = True) -> None:
        self._create(lambda ptr: None, named=named)  # a new mapping is zeros: unset

    @classmethod
    def open(cls, name: str) -> "Event":
        """The event another process created, by its name."""
        event: Event = cls._opened(name)
        return event

    @staticmethod
    def _destroy(ptr: Any, /) -> None:
        """Nothing to destroy: a futex word is kernel state only while a waiter sleeps on it."""

    # set, clear, is_set and an untimed wait are EventFastPath's C methods (their
    # docstrings are there); a wait with a timeout is this.
    def _wait(self, timeout: float | None = None) -> bool:
        timeout_s = wait_timeout("Event.wait", timeout)
        ptr = self._live()
        seen = _native.event_word(ptr)
        end = None if timeout_s is None else time.monotonic_ns() + int(timeout_s * 1e9)
        while not seen & 1 and _native.event_word(ptr) == seen:
            if end is None:
                _native.event_wait_for(ptr, seen, -1)
            elif (left_ns := end - time.monotonic_ns()) > 0:
                _native.event_wait_for(ptr, seen, left_ns)
            else:
                return False
        return True

    def __repr__(self) -> str:
        state = "closed" if self.closed else "set" if self.is_set() else "unset"
        return f"<osvirt.sync.Event at {id(self):#x}: {state}>"
