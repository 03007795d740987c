"""threading's Lock and RLock, process-shared and robust.

Both are an error-checking pthread mutex (PTHREAD_PROCESS_SHARED,
PTHREAD_MUTEX_ROBUST) in shared memory, the implementation under Mutex
(osvirt.sync.mutex); RLock keeps its recursion count beside it. They speak threading's protocol: `acquire(blocking=True, timeout=-1)`,
`release()`, `locked()`, `with`, its exceptions and messages, its repr. They
are named by default (`named=False`: an anonymous mapping, shared with
forked children only), so another process opens one with `Lock.open(name)`
and pickle sends the name: a multiprocessing.Process gets the same lock
under the spawn start method as under fork.

What a robust mutex changes: the kernel knows the holder (its TID is in the
futex word, and the mutex in that thread's robust list), so a holder that
dies, thread or process, hands it to the next acquirer with OwnerDead
(acquired; repair, `make_consistent()`, release), and only the holder may
release it: a Lock released by another thread raises RuntimeError, where
threading.Lock allows it. An acquire by the thread that holds a Lock cannot
succeed: with a timeout it waits that long and returns False; without one it
raises RuntimeError rather than hang.
"""
from typing import Any

from osvirt.sync import _native
from osvirt.sync.mutex import BaseMutex
from osvirt.sync.region import SharedRegion

__all__ = ["Lock", "RLock"]


class Lock(BaseMutex):
    """threading.Lock, process-shared and robust.

    >>> lock = Lock()
    >>> with lock:
    ...     lock.locked(), lock.acquire(False)
    (True, False)
    """

    _KIND = "lock"

    def __init__(self, *, named: bool = True) -> None:
        self._create_mutex(True, named)

    def __repr__(self) -> str:
        if self.closed:
            return f"<closed osvirt.sync.Lock object at {id(self):#x}>"
        return (f"<{'locked' if self.locked() else 'unlocked'} osvirt.sync.Lock object "
                f"name={self.name!r} at {id(self):#x}>")


class RLock(_native.RLockFastPath, BaseMutex):
    """threading.RLock, process-shared and robust: its holder may acquire it again,
    and releases it as often; `owner` in its repr is the holder's TID.

    An error-checking mutex and a count beside it, which only the holder writes:
    a Condition's wait gives up every level with one pthread wait and puts the
    count back after it, where glibc's recursive type gives up one level a call.

    >>> rlock = RLock()
    >>> with rlock, rlock:
    ...     rlock._recursion_count()
    2
    """

    _KIND = "rlock"

    def __init__(self, *, named: bool = True) -> None:
        self._create(lambda ptr: _native.mutex_init(ptr, self._TYPE, True), named=named, metadata=1,
                     size_bytes=_native.sizeof("pthread_mutex_t") + _native.sizeof("int64_t"))

    def _hold(self, region: SharedRegion, ptr: Any) -> None:
        super()._hold(region, ptr)
        # Valid while `ptr` is held (as the other cached pointers of osvirt.sync).
        self._count_p = _native.following(ptr, "int64_t")

    # `with` is RLockFastPath's C; acquire/release and the slow paths are here.
    def _acquire_own(self, timeout_s: float | None) -> bool:
        """Held by this thread already: one level more."""
        self._count_p[0] += 1
        return True

    def _acquired(self, outcome: int) -> bool:
        if outcome in (0, _native.EOWNERDEAD):
            self._count_p[0] = 1  # a dead holder's levels are gone with it
        return super()._acquired(outcome)

    def release(self) -> None:
        """Release one level; RuntimeError when this thread does not hold it."""
        ptr = self._live()
        if not self._is_owned():
            raise RuntimeError("cannot release un-acquired lock")
        count = self._count_p
        if count[0] > 1:
            count[0] -= 1
        else:
            count[0] = 0  # before the unlock: the next holder sets it
            self._release_outcome(_native.mutex_release(ptr))

    def _release_outcome(self, err: int) -> None:
        if err == _native.EPERM:
            raise RuntimeError("cannot release un-acquired lock")
        super()._release_outcome(err)

    def _recursion_count(self) -> int:
        """How many times the calling thread holds it (0: it does not)."""
        ptr = self._live()
        count = int(self._count_p[0]) if self._is_owned() else 0
        del ptr  # held while the count was read
        return count

    def __repr__(self) -> str:
        if self.closed:
            return f"<closed osvirt.sync.RLock object at {id(self):#x}>"
        ptr, owner = self._live(), self._holder()
        count = int(self._count_p[0]) if owner else 0
        del ptr
        return (f"<{'locked' if owner else 'unlocked'} osvirt.sync.RLock object owner={owner} count={count} "
                f"name={self.name!r} at {id(self):#x}>")
