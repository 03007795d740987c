"""Message queues: POSIX (mq_*, through posix_ipc) and System V (msg*, through sysv_ipc).

A POSIX queue hands out the oldest message of the highest priority first; a
System V queue lets the receiver choose by message type (msgrcv's msgtyp).
Each class here creates a new queue exclusively, mode 0600, and removes it on
close(): the POSIX one under a `/osvirt-<pid>-<random>` name, the System V one
with key IPC_PRIVATE (a new queue that only its id reaches).

Kernel refusals come out as the stdlib's OSError subclasses with errno
(BlockingIOError for EAGAIN, ...), not as posix_ipc's or sysv_ipc's own
exceptions, which carry no errno.
"""
import errno
import operator
import os

import posix_ipc
import sysv_ipc

from osvirt import naming
from osvirt.errors import kernel_error
from osvirt._owned import Owned

__all__ = ["MQ_PRIO_MAX", "mq_limits", "PosixMessageQueue", "SysVMessageQueue"]

MQ_PRIO_MAX = posix_ipc.QUEUE_PRIORITY_MAX + 1  # priorities are 0..MQ_PRIO_MAX-1
_MQUEUE_SYSCTL = "/proc/sys/fs/mqueue"
_LONG_MAX = 2**63 - 1


def mq_limits():
    """{"msg_max", "msgsize_max"}: the largest queue an unprivileged mq_open may ask for."""
    limits = {}
    for name in ("msg_max", "msgsize_max"):
        with open(f"{_MQUEUE_SYSCTL}/{name}") as f:
            limits[name] = int(f.read())
    return limits


def _positive(facility, name, value):
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{facility}: {name} must be >= 1, not {value}")
    return value


def _timeout(facility, timeout_s):
    if timeout_s is not None and timeout_s < 0:
        raise ValueError(f"{facility}: timeout_s must be >= 0, not {timeout_s}")
    return timeout_s


def _wait_s(block, timeout_s):
    """posix_ipc's timeout for a call: 0 when not blocking. A zero-timeout mq_timedsend or
    mq_timedreceive fails at once like O_NONBLOCK, without the mq_setattr syscall that
    toggling O_NONBLOCK costs on every call; and O_NONBLOCK lives in the open file
    description, which a forked child shares, so it is never set."""
    return timeout_s if block else 0


class PosixMessageQueue(Owned):
    """A new POSIX message queue (mq_open with O_CREAT|O_EXCL, mode 0600); close() unlinks it.

    `max_messages` defaults to /proc/sys/fs/mqueue/msg_max, the most an
    unprivileged process may ask for; above it mq_open fails with EINVAL
    unless the caller has CAP_SYS_RESOURCE.
    """

    _closed = True  # until __init__ holds the object: what close() and __del__ see on a half-built one

    def __init__(self, max_messages=None, max_message_size=1024):
        limits = mq_limits()
        max_messages = limits["msg_max"] if max_messages is None else _positive("mq_open", "max_messages", max_messages)
        max_message_size = _positive("mq_open", "max_message_size", max_message_size)
        self._closed = True
        self.name = "/" + naming.unique_name()
        try:
            self._mq = posix_ipc.MessageQueue(self.name, posix_ipc.O_CREX, mode=0o600,
                                              max_messages=max_messages, max_message_size=max_message_size)
        except ValueError:  # posix_ipc's word for EINVAL from mq_open
            raise kernel_error(errno.EINVAL, f"mq_open({self.name}, max_messages={max_messages}, "
                               f"max_message_size={max_message_size})",
                               f"above msg_max={limits['msg_max']} or msgsize_max={limits['msgsize_max']} "
                               f"in {_MQUEUE_SYSCTL} needs CAP_SYS_RESOURCE") from None
        except posix_ipc.ExistentialError:
            raise kernel_error(errno.EEXIST, f"mq_open({self.name}, O_CREAT|O_EXCL)") from None
        self._creator = os.getpid()
        self._closed = False

    def send(self, message, priority=0, block=True, timeout_s=None):
        """mq_send (mq_timedsend with `timeout_s`): BlockingIOError (EAGAIN) when full and not blocking,
        TimeoutError (ETIMEDOUT) after `timeout_s`."""
        priority = operator.index(priority)
        if not 0 <= priority < MQ_PRIO_MAX:
            raise ValueError(f"mq_send: priority must be in 0..{MQ_PRIO_MAX - 1}, not {priority}")
        message = bytes(message)
        if len(message) > self._mq.max_message_size:
            raise ValueError(f"mq_send: message of {len(message)} bytes exceeds the queue's "
                             f"max_message_size ({self._mq.max_message_size})")
        timeout_s = _timeout("mq_send", timeout_s)
        try:
            self._mq.send(message, timeout=_wait_s(block, timeout_s), priority=priority)
        except posix_ipc.BusyError:
            raise self._busy("mq_send", block, timeout_s) from None

    def receive(self, block=True, timeout_s=None):
        """mq_receive (mq_timedreceive with `timeout_s`): (message, priority) of the
        oldest message of the highest priority."""
        timeout_s = _timeout("mq_receive", timeout_s)
        try:
            return self._mq.receive(timeout=_wait_s(block, timeout_s))
        except posix_ipc.BusyError:
            raise self._busy("mq_receive", block, timeout_s) from None

    def _busy(self, facility, block, timeout_s):
        # posix_ipc's BusyError stands for EAGAIN (O_NONBLOCK) or ETIMEDOUT (a timed call).
        if block and timeout_s is not None:
            return kernel_error(errno.ETIMEDOUT, f"{facility}({self.name}, timeout_s={timeout_s})")
        return kernel_error(errno.EAGAIN, f"{facility}({self.name})", "O_NONBLOCK")

    def attributes(self):
        """mq_getattr: {"current_messages", "max_messages", "max_message_size"}."""
        return {"current_messages": self._mq.current_messages, "max_messages": self._mq.max_messages,
                "max_message_size": self._mq.max_message_size}

    def close(self):
        """Close the descriptor and, in the creating process, unlink the name. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._mq.close()
        finally:
            if self._is_creator:
                self._mq.unlink()

    def __repr__(self):
        return f"PosixMessageQueue({self.name!r})"


class SysVMessageQueue(Owned):
    """A new System V message queue (msgget(IPC_PRIVATE, IPC_CREAT|IPC_EXCL|0600)); close() removes it."""

    _closed = True  # until __init__ holds the object: what close() and __del__ see on a half-built one

    def __init__(self):
        self._closed = True
        self._mq = sysv_ipc.MessageQueue(sysv_ipc.IPC_PRIVATE, sysv_ipc.IPC_CREX, mode=0o600)
        self.id = self._mq.id
        self._creator = os.getpid()
        self._closed = False

    def send(self, message, type=1, block=True):
        """msgsnd with mtype `type` (>= 1): BlockingIOError (EAGAIN) when full and not blocking."""
        type = operator.index(type)
        if not 1 <= type <= _LONG_MAX:
            raise ValueError(f"msgsnd: type must be in 1..{_LONG_MAX}, not {type}")
        try:
            self._mq.send(bytes(message), block=block, type=type)
        except sysv_ipc.BusyError:
            raise kernel_error(errno.EAGAIN, f"msgsnd(id {self.id})", "queue full, non-blocking") from None

    def receive(self, type=0, block=True):
        """msgrcv: (message, type). `type` 0 takes the oldest message, > 0 the oldest
        of that type, < 0 the oldest of the lowest type <= |type|. Without a match
        and not blocking: OSError ENOMSG."""
        type = operator.index(type)
        if not -_LONG_MAX <= type <= _LONG_MAX:
            raise ValueError(f"msgrcv: type must be in -{_LONG_MAX}..{_LONG_MAX}, not {type}")
        try:
            return self._mq.receive(block=block, type=type)
        except sysv_ipc.BusyError:
            raise kernel_error(errno.ENOMSG, f"msgrcv(id {self.id}, type={type})", "non-blocking") from None

    @property
    def current_messages(self):
        """msg_qnum from msgctl(IPC_STAT)."""
        return self._mq.current_messages

    def close(self):
        """Remove the queue (msgctl IPC_RMID), in the creating process only. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._is_creator:
            self._mq.remove()

    def __repr__(self):
        return f"SysVMessageQueue(id={self.id})"
