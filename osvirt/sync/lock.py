"""threading's Lock and RLock, process-shared and robust.

Both are a pthread mutex (PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST) in
shared memory, the implementation under Mutex (osvirt.sync.mutex): Lock an
error-checking one, RLock a recursive one, whose count glibc keeps in the
mutex. They speak threading's protocol: `acquire(blocking=True, timeout=-1)`,
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
from osvirt.sync import _native
from osvirt.sync.mutex import BaseMutex

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


class RLock(BaseMutex):
    """threading.RLock, process-shared and robust: its holder may acquire it again,
    and releases it as often; `owner` in its repr is the holder's TID.

    >>> rlock = RLock()
    >>> with rlock, rlock:
    ...     rlock._recursion_count()
    2
    """

    _KIND = "rlock"
    _TYPE = _native.PTHREAD_MUTEX_RECURSIVE

    def __init__(self, *, named: bool = True) -> None:
        self._create_mutex(True, named)

    def _release_outcome(self, err: int) -> None:
        if err == _native.EPERM:
            raise RuntimeError("cannot release un-acquired lock")
        super()._release_outcome(err)

    def _recursion_count(self) -> int:
        """How many times the calling thread holds it (0: it does not)."""
        return _native.mutex_count(self._live()) if self._is_owned() else 0

    def __repr__(self) -> str:
        if self.closed:
            return f"<closed osvirt.sync.RLock object at {id(self):#x}>"
        ptr, owner = self._live(), self._holder()
        count = _native.mutex_count(ptr) if owner else 0
        return (f"<{'locked' if owner else 'unlocked'} osvirt.sync.RLock object owner={owner} count={count} "
                f"name={self.name!r} at {id(self):#x}>")
