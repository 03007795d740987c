"""threading's Event, process-shared: a flag under a robust mutex, and a condition.

`set()` raises the flag and wakes every waiter, `clear()` lowers it,
`wait(timeout=None)` returns True once it is set (or was set while it
waited, even if cleared since, as threading's does) and False when the
timeout passed. Nothing is held between calls, so a process that dies does
no harm; one that dies inside a call leaves the flag either set or not, and
the next caller takes the mutex over (EOWNERDEAD, made consistent at once).
Named by default; `Event.open(name)` in another process, and pickled by name.
"""
import time
from typing import Any

from osvirt.sync import _native
from osvirt.sync.monitor import Monitor
from osvirt.sync.mutex import SLICE_NS, wait_timeout

__all__ = ["Event"]

# The monitor's words: the flag, and how many times set() raised it (a waiter
# woken by a set() that a clear() undid before it ran still returns True).
FLAG, SETS = 0, 1


class Event(_native.EventFastPath, Monitor):
    """threading.Event, process-shared.

    >>> event = Event()
    >>> event.wait(timeout=0.01), event.set(), event.wait(), event.is_set()
    (False, None, True, True)
    """

    _KIND = "event"

    def __init__(self, *, named: bool = True) -> None:
        self._create_monitor(named=named)

    @classmethod
    def open(cls, name: str) -> "Event":
        """The event another process created, by its name."""
        event: Event = cls._opened(name)
        return event

    # set, clear, is_set and wait are EventFastPath's C methods (their docstrings are
    # there): the uncontended calls and a first slice of wait(); the rest is here.
    def _is_set(self) -> bool:
        return bool(self._word(FLAG))

    def _set(self) -> None:
        with self._locked() as ptr:
            if self._words[FLAG]:
                return
            self._words[FLAG] = 1
            self._words[SETS] += 1
        self._broadcast(ptr)  # after the unlock, as the C path does (fastlock.c says why)

    def _clear(self) -> None:
        with self._locked():
            self._words[FLAG] = 0

    def _wait(self, timeout: float | None = None, sets: int | None = None) -> bool:
        """`sets`: the count of set() calls when the C path's slice began."""
        timeout_s = wait_timeout("Event.wait", timeout)
        with self._locked() as ptr:
            return self._wait_for_set(ptr, timeout_s, self._words[SETS] if sets is None else sets)

    def _wait_for_set(self, ptr: Any, timeout_s: float | None, sets: int) -> bool:
        end = None if timeout_s is None else time.monotonic_ns() + int(timeout_s * 1e9)
        while not self._words[FLAG] and self._words[SETS] == sets:
            if end is None:
                self._cond_wait(ptr, SLICE_NS)
            elif (left_ns := end - time.monotonic_ns()) > 0:
                self._cond_wait(ptr, min(left_ns, SLICE_NS))
            else:
                return False
        return True

    def __repr__(self) -> str:
        state = "closed" if self.closed else "set" if self.is_set() else "unset"
        return f"<osvirt.sync.Event at {id(self):#x}: {state}>"
