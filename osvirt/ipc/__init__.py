"""Process communication: pipes, FIFOs, message queues, signals, shared memory (seed §4.1.2).

Thin over the stdlib, posix_ipc and sysv_ipc; the C extension adds sigqueue
with a value, sigtimedwait that reports it, and message-queue send and
receive that cost one kernel call each and report the kernel's errno. Every kernel object
created here is new (created exclusively), mode 0600, named
`osvirt-<pid>-<random>` or IPC_PRIVATE, and owned by a context manager whose
close() removes it.
"""
from osvirt.ipc.fifo import Fifo
from osvirt.ipc.mqueue import MQ_PRIO_MAX, PosixMessageQueue, SysVMessageQueue, mq_limits
from osvirt.ipc.pipe import (PIPE_BUF, ConcurrentWrites, Pipe, concurrent_writes, fill, get_pipe_size,
                             pipe_max_size, set_pipe_size)
from osvirt.ipc.shm import Memfd, PosixSharedMemory, SysVSharedMemory
from osvirt.ipc.signals import SI_QUEUE, SI_USER, QueuedSignal, accept_pending, blocked, sigqueue, sigtimedwait

__all__ = [
    "Pipe", "PIPE_BUF", "get_pipe_size", "set_pipe_size", "pipe_max_size", "fill",
    "ConcurrentWrites", "concurrent_writes",
    "Fifo",
    "PosixMessageQueue", "SysVMessageQueue", "MQ_PRIO_MAX", "mq_limits",
    "PosixSharedMemory", "SysVSharedMemory", "Memfd",
    "sigqueue", "sigtimedwait", "accept_pending", "blocked", "QueuedSignal", "SI_QUEUE", "SI_USER",
]
