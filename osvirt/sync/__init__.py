"""Process synchronization (seed §4.1.3): threading's classes, process-shared and robust.

`Lock`, `RLock`, `Condition`, `Semaphore`, `BoundedSemaphore`, `Event`,
`Barrier` and `BrokenBarrierError` speak threading's protocol (the same
constructors, methods, exceptions and repr forms), and more: every object
lives in shared memory, named by default (another process opens it with
`X.open(obj.name)`, pickle sends the name, so a multiprocessing.Process gets
it under fork and spawn alike; `named=False`: an anonymous mapping, shared
with forked children only), works between threads as between processes, and
a holder that dies hands a lock on with `OwnerDead`. `Mutex` is the
pthread-level object under Lock and RLock, with the pthread calls' names and
errors; `SysVSemaphore` a SysV semaphore the kernel gives back after a
holder's death (SEM_UNDO); `SharedRegion` the shared memory they live in.

Each object is destroyed once, by the process that created it: `close()`
elsewhere only unmaps, and an object no longer referenced is closed. `with`
means what it means in `threading` (a lock, semaphore or condition is
acquired and released); a Barrier, Event or SharedRegion is closed at the
end of its `with`.
"""
from osvirt.errors import OwnerDead
from osvirt.sync.barrier import Barrier, BrokenBarrierError
from osvirt.sync.condition import Condition
from osvirt.sync.event import Event
from osvirt.sync.lock import Lock, RLock
from osvirt.sync.mutex import Mutex
from osvirt.sync.region import SharedRegion
from osvirt.sync.semaphore import SEM_VALUE_MAX, SYSV_VALUE_MAX, BoundedSemaphore, Semaphore, SysVSemaphore

__all__ = ["Barrier", "BoundedSemaphore", "BrokenBarrierError", "Condition", "Event", "Lock", "Mutex", "OwnerDead",
           "RLock", "SEM_VALUE_MAX", "SYSV_VALUE_MAX", "Semaphore", "SharedRegion", "SysVSemaphore"]
