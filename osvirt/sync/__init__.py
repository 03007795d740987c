"""Process synchronization: process-shared mutex, condition, barrier, semaphores (seed §4.1.3).

Every object lives in shared memory, anonymous (shared with forked children)
or named (`named=True`; another process opens it with `X.open(obj.name)`),
says where (`.where`), and is destroyed once, by the process that created it:
`close()` elsewhere only unmaps. `with` means what it means in `threading`:
a Mutex, Semaphore or SysVSemaphore is acquired and released, a Condition
locks its mutex; a Barrier or SharedRegion is closed at the end of its `with`.
Anything else is ended with `close()` (or `contextlib.closing`).
"""
from osvirt.errors import OwnerDead
from osvirt.sync.barrier import Barrier
from osvirt.sync.condition import Condition
from osvirt.sync.mutex import Mutex
from osvirt.sync.region import SharedRegion
from osvirt.sync.semaphore import SEM_VALUE_MAX, SYSV_VALUE_MAX, Semaphore, SysVSemaphore

__all__ = ["Barrier", "Condition", "Mutex", "OwnerDead", "SEM_VALUE_MAX", "SYSV_VALUE_MAX",
           "Semaphore", "SharedRegion", "SysVSemaphore"]
