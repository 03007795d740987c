"""A process-shared pthread barrier.

`Barrier(parties)` holds every caller of `wait()` until `parties` of them
have arrived, then releases them all; exactly one of them is told it was the
serial one (PTHREAD_BARRIER_SERIAL_THREAD), e.g. to do the work between two
phases. The barrier is ready for the next phase at once.

POSIX has no timed barrier wait, so `wait()` blocks until the last party
arrives, and a signal handler (Ctrl-C) runs only then. Parties that may die
should be watched from outside (the demo waits for its children with a
timeout and kills them).
"""
from osvirt.sync import _native
from osvirt.sync.region import SharedObject

__all__ = ["Barrier"]


class Barrier(SharedObject):
    """`parties` processes (or threads) meet at `wait()`; `with Barrier(n) as b:` closes it at the end.

    >>> with Barrier(1) as b:
    ...     b.wait()                # the only party is the serial one
    True
    """

    _KIND = "barrier"
    _CTYPE = "pthread_barrier_t"
    _destroy = staticmethod(_native.barrier_destroy)

    def __init__(self, parties, *, named=False):
        if isinstance(parties, bool) or not isinstance(parties, int):
            raise TypeError(f"Barrier: parties must be an int, not {parties!r}")
        if not 1 <= parties <= _native.UINT_MAX:
            raise ValueError(f"pthread_barrier_init: parties must be in 1..{_native.UINT_MAX}, not {parties}")
        self._create(lambda ptr: _native.barrier_init(ptr, parties), named=named, metadata=parties)
        self._parties = parties

    @classmethod
    def open(cls, name):
        """The barrier another process created with `named=True`, by its name."""
        self = cls._opened(name)
        self._parties = self._region.metadata
        return self

    @property
    def parties(self):
        return self._parties

    def wait(self):
        """Block until all parties have arrived; True for the one serial caller."""
        return _native.barrier_wait(self._live())
