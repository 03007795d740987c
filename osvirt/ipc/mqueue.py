"""Message queues: POSIX (mq_*) and System V (msg*).

A POSIX queue hands out the oldest message of the highest priority first; a
System V queue lets the receiver choose by message type (msgrcv's msgtyp).
Each class here creates a new queue exclusively, mode 0600, and removes it on
close(): the POSIX one under a `/osvirt-<pid>-<random>` name, the System V one
with key IPC_PRIVATE (a new queue that only its id reaches).

posix_ipc and sysv_ipc create, remove and describe the queues; send and
receive are one C call each (csrc/msgqueue.c), one kernel call, on a buffer
that a queue allocates once and a receive borrows from a pool (so two
threads never share one). Kernel refusals come out as the stdlib's OSError
subclasses with the kernel's own errno (BlockingIOError for EAGAIN,
TimeoutError for ETIMEDOUT, ...). A blocked call that a signal interrupts
(EINTR) runs the signal's Python handler, so Ctrl-C raises
KeyboardInterrupt, and otherwise resumes with the time it has left.

What a call costs (`osvirt bench posix-mq sysv-mq`: a round trip is four
calls, two processes on one CPU; 2026-11-24, 2-CPU AMD EPYC VM): POSIX
8.7 us against C's 5.8 us, SysV 9.8 us against 6.4 us. The same round trip
with the bare cffi calls and no Python method around them takes 7.3 and
8.1 us (posix_ipc's own C methods: 7.1 us): each call from Python pays
~0.35 us over C's for the call itself (the GIL released and taken back,
errno saved, caches cold after the process switch), ~0.2 us for a Python
method, and ~0.15 us for the argument checks and the buffer pool.
"""
from __future__ import annotations

import errno
import operator
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, SupportsIndex

import posix_ipc
import sysv_ipc

from osvirt import naming, tracker
from osvirt.errors import kernel_error
from osvirt._checked import checked_method
from osvirt.ipc import _native
from osvirt._owned import Owned

if TYPE_CHECKING:  # typing_extensions is mypy's; collections.abc.Buffer is Python 3.12's
    from _cffi_backend import FFI
    from typing_extensions import Buffer

__all__ = ["MQ_PRIO_MAX", "mq_limits", "PosixMessageQueue", "SysVMessageQueue"]

MQ_PRIO_MAX = posix_ipc.QUEUE_PRIORITY_MAX + 1  # priorities are 0..MQ_PRIO_MAX-1
_MQUEUE_SYSCTL = "/proc/sys/fs/mqueue"
_MSGMAX_SYSCTL = "/proc/sys/kernel/msgmax"
_LONG_MAX = 2**63 - 1
_LONG_MIN1 = -_LONG_MAX  # the lowest msgrcv msgtyp (LONG_MIN + 1: its absolute value must be a long)
_class_of = type  # the builtin, for SysVMessageQueue's methods, whose msgtyp argument is named `type`
MAX_TIMEOUT_S = 1e9  # the C side takes int64 ns: a longer timeout is a mistake (None waits forever)
_mq_send, _mq_receive, _msgsnd, _msgrcv = (_native.raw_mq_send, _native.raw_mq_receive,
                                           _native.raw_msgsnd, _native.raw_msgrcv)
_unpack = _native.unpack
_IPC_NOWAIT = _native.IPC_NOWAIT


def mq_limits() -> dict[str, int]:
    """{"msg_max", "msgsize_max"}: the largest queue an unprivileged mq_open may ask for."""
    limits = {}
    for name in ("msg_max", "msgsize_max"):
        with open(f"{_MQUEUE_SYSCTL}/{name}") as f:
            limits[name] = int(f.read())
    return limits


def _msgmax() -> int:
    """kernel.msgmax: the longest message msgsnd accepts in this IPC namespace."""
    with open(_MSGMAX_SYSCTL) as f:
        return int(f.read())


def _positive(facility: str, name: str, value: SupportsIndex) -> int:
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{facility}: {name} must be >= 1, not {value}")
    return value


def _timeout(facility: str, timeout_s: float | None) -> float | None:
    if timeout_s is not None and not 0 <= timeout_s <= MAX_TIMEOUT_S:
        raise ValueError(f"{facility}: timeout_s must be in 0..{MAX_TIMEOUT_S:g}, not {timeout_s}")
    return timeout_s


def _message(facility: str, message: Buffer) -> bytes:
    """`message` (any bytes-like object) as bytes; TypeError for anything else (a str, an int)."""
    try:
        return bytes(memoryview(message))
    except TypeError:
        raise TypeError(f"{facility}: message must be bytes-like, not {type(message).__name__}") from None


def _call(call: Callable[[int], int], timeout_s: float | None) -> int:
    """call(timeout_ns) (-1: no timeout) until it fails with anything but EINTR, each time with
    what is left of `timeout_s` (None: forever). The interrupting signal's Python handler runs
    before the retry, so a KeyboardInterrupt it raises ends the wait. The call's result
    (>= 0), or minus the errno it failed with."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        timeout_ns = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1e9))
        result = call(timeout_ns)
        if result != -1:
            return result
        err = _native.last_errno()
        if err != errno.EINTR:
            return -err


class PosixMessageQueue(Owned):
    """A new POSIX message queue (mq_open with O_CREAT|O_EXCL, mode 0600); close() unlinks it.

    `max_messages` defaults to /proc/sys/fs/mqueue/msg_max, the most an
    unprivileged process may ask for; above it mq_open fails with EINVAL
    unless the caller has CAP_SYS_RESOURCE.

    It holds two descriptors of the queue: blocking calls use the first, and
    `block=False` the second, opened with O_NONBLOCK, so the kernel's EAGAIN
    is what a non-blocking call reports. (Toggling O_NONBLOCK per call would
    cost an mq_setattr syscall, and would reach a forked child's calls too:
    the flag lives in the open file description, which fork shares.)

    `timeout_s` runs on CLOCK_MONOTONIC across retries after EINTR. The kernel
    takes only an absolute CLOCK_REALTIME deadline (mq_timedsend,
    mq_timedreceive): C computes it from the time left just before the call,
    so only a wall-clock jump during the call itself moves it.
    """

    _closed = True  # until __init__ holds the object: what close() and __del__ see on a half-built one
    _mq: posix_ipc.MessageQueue  # held once _closed is False
    _nonblocking: posix_ipc.MessageQueue | None = None
    _mqd = _nonblocking_mqd = -1

    def __init__(self, max_messages: int | None = None, max_message_size: int = 1024) -> None:
        limits = mq_limits()
        max_messages = limits["msg_max"] if max_messages is None else _positive("mq_open", "max_messages", max_messages)
        max_message_size = _positive("mq_open", "max_message_size", max_message_size)
        self.name = "/" + naming.unique_name()
        try:
            with tracker.tracked("mqueue", self.name):
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
        self._nonblocking = posix_ipc.MessageQueue(self.name)  # close() closes both if this raises
        self._nonblocking.block = False
        self._nonblocking_mqd = self._nonblocking.mqd
        self._mqd = self._mq.mqd
        self._msgsize = self._mq.max_message_size  # mq_getattr's mq_msgsize: what the kernel set
        self._receivers: list[_native.Receiver] = []  # (struct osv_mq_receive, its buffer) not in use by a receive now

    @checked_method("mq_send", "_send_error")  # send(bytes) and send(bytes, priority) made in C
    def send(self, message: Buffer, priority: int = 0, block: bool = True, timeout_s: float | None = None) -> None:
        """mq_send (mq_timedsend with `timeout_s`): BlockingIOError (EAGAIN) when full and not blocking,
        TimeoutError (ETIMEDOUT) after `timeout_s`."""
        # The common case (bytes, an int priority, blocking) costs type tests and one C call.
        if type(message) is not bytes:
            message = _message("mq_send", message)
        if type(priority) is not int or not 0 <= priority < MQ_PRIO_MAX:
            priority = operator.index(priority)
            if not 0 <= priority < MQ_PRIO_MAX:
                raise ValueError(f"mq_send: priority must be in 0..{MQ_PRIO_MAX - 1}, not {priority}")
        size = len(message)
        if size > self._msgsize:
            raise ValueError(f"mq_send: message of {size} bytes exceeds the queue's "
                             f"max_message_size ({self._msgsize})")
        if block and timeout_s is None:
            if _mq_send(self._mqd, message, size, priority, -1) == 0:
                return
            self._check_eintr("mq_send", _native.last_errno())
        self._send_slow(message, size, priority, block, timeout_s)

    # The slow paths are methods of their own: a lambda in send() or receive() would make
    # their variables closure cells, which every call would pay for.
    def _send_slow(self, message: bytes, size: int, priority: int, block: bool, timeout_s: float | None) -> None:
        """send() when it waits for a time, or not at all, or after EINTR."""
        self._wait(lambda mqd, timeout_ns: _mq_send(mqd, message, size, priority, timeout_ns),
                   "mq_send", block, timeout_s)

    @checked_method("mq_receive", "_receive_error")  # receive() made in C
    def receive(self, block: bool = True, timeout_s: float | None = None) -> tuple[bytes, int]:
        """mq_receive (mq_timedreceive with `timeout_s`): (message, priority) of the
        oldest message of the highest priority. BlockingIOError (EAGAIN) when empty and
        not blocking, TimeoutError (ETIMEDOUT) after `timeout_s`."""
        receivers = self._receivers  # a receive takes one, so concurrent threads use their own
        try:
            receiver = receivers.pop()
        except IndexError:
            receiver = self._receiver()
        r, buf = receiver
        if block and timeout_s is None:
            size = _mq_receive(r)
            if size >= 0:
                received = _unpack(buf, size), r.priority
                receivers.append(receiver)
                return received
        try:
            return self._receive_slow(r, buf, block, timeout_s)
        finally:
            receivers.append(receiver)

    def _receive_slow(self, r: Any, buf: FFI.CData, block: bool, timeout_s: float | None) -> tuple[bytes, int]:
        """receive() when it waits for a time, or not at all, or when its call failed."""
        if block and timeout_s is None:
            self._check_eintr("mq_receive", _native.last_errno())
        size = self._wait(lambda mqd, timeout_ns: _native.mq_receive_with(r, mqd, timeout_ns),
                          "mq_receive", block, timeout_s)
        return _unpack(buf, size), r.priority

    def _wait(self, call: Callable[[int, int], int], facility: str, block: bool, timeout_s: float | None) -> int:
        """call(mqd, timeout_ns) on the descriptor `block` picks, with `timeout_s` when blocking,
        again after EINTR: its result; the errno's OSError when it fails otherwise."""
        if block:
            mqd, timeout_s = self._mqd, _timeout(facility, timeout_s)
        else:
            mqd, timeout_s = self._nonblocking_mqd, None
        result = _call(lambda timeout_ns: call(mqd, timeout_ns), timeout_s)
        if result < 0:
            raise self._error(-result, facility, timeout_s)
        return result

    def _check_eintr(self, facility: str, err: int) -> None:
        """After a blocking call without a timeout failed with `err`: return to retry on
        EINTR, else raise."""
        if err != errno.EINTR:
            raise self._error(err, facility, None)

    # What send() and receive() made in C raise when their call fails (osvirt.ipc._native.checked_method).
    def _send_error(self, err: int) -> ValueError | OSError:
        return self._error(err, "mq_send", None)

    def _receive_error(self, err: int) -> ValueError | OSError:
        return self._error(err, "mq_receive", None)

    def _receiver(self) -> _native.Receiver:
        if self._closed:
            raise ValueError(f"mq_receive: {self!r} is closed")
        return _native.mq_receiver(self._mqd, self._msgsize)

    def _error(self, err: int, facility: str, timeout_s: float | None) -> ValueError | OSError:
        if self._closed:
            return ValueError(f"{facility}: {self!r} is closed")
        if err == errno.ETIMEDOUT:
            return kernel_error(err, f"{facility}({self.name}, timeout_s={timeout_s})")
        if err == errno.EAGAIN:
            return kernel_error(err, f"{facility}({self.name})", "O_NONBLOCK")
        return kernel_error(err, f"{facility}({self.name})")

    def attributes(self) -> dict[str, int]:
        """mq_getattr: {"current_messages", "max_messages", "max_message_size"}."""
        return {"current_messages": self._mq.current_messages, "max_messages": self._mq.max_messages,
                "max_message_size": self._mq.max_message_size}

    def close(self) -> None:
        """Close both descriptors and, in the creating process, unlink the name. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._mqd = self._nonblocking_mqd = -1  # first: the numbers may be reused at once
        self._receivers = []  # receivers taken after this find it empty, and see _closed
        try:
            if self._nonblocking is not None:
                self._nonblocking.close()
            self._mq.close()
        finally:
            if self._is_creator:
                self._mq.unlink()
                tracker.unregister("mqueue", self.name)

    def __repr__(self) -> str:
        return f"PosixMessageQueue({self.name!r})"


class SysVMessageQueue(Owned):
    """A new System V message queue (msgget(IPC_PRIVATE, IPC_CREAT|IPC_EXCL|0600)); close() removes it.

    A message may be up to kernel.msgmax bytes (/proc/sys/kernel/msgmax, read when
    the queue is made): msgsnd refuses longer ones with EINVAL.
    """

    _closed = True  # until __init__ holds the object: what close() and __del__ see on a half-built one
    _tracked: str | None = None  # the name osvirt.tracker knows it by, once registered

    def __init__(self) -> None:
        self._msgmax = _msgmax()
        self._mq, self._tracked = tracker.make_sysv(
            "sysv-msg", lambda: sysv_ipc.MessageQueue(sysv_ipc.IPC_PRIVATE, sysv_ipc.IPC_CREX, mode=0o600),
            lambda mq: mq.id)
        self.id = self._mq.id
        self._creator = os.getpid()
        self._closed = False
        self._buffers: list[_native.MsgBuffer] = []  # (struct osv_msg, its text) not in use by a call now

    @checked_method("msgsnd", "_send_error")  # bytes, an int type and a bool block made in C
    def send(self, message: Buffer, type: int = 1, block: bool = True) -> None:
        """msgsnd with mtype `type` (>= 1): BlockingIOError (EAGAIN) when full and not blocking."""
        if _class_of(message) is not bytes:
            message = _message("msgsnd", message)
        if _class_of(type) is not int or not 1 <= type <= _LONG_MAX:
            type = operator.index(type)
            if not 1 <= type <= _LONG_MAX:
                raise ValueError(f"msgsnd: type must be in 1..{_LONG_MAX}, not {type}")
        size = len(message)
        if size > self._msgmax:  # every buffer has room for msgmax bytes
            raise ValueError(f"msgsnd: message of {size} bytes exceeds msgmax ({self._msgmax}, {_MSGMAX_SYSCTL})")
        buffers = self._buffers  # a call takes one, so concurrent threads use their own
        try:
            buffer = buffers.pop()
        except IndexError:
            buffer = self._buffer()
        m = buffer[0]
        flags = 0 if block else _IPC_NOWAIT
        if _msgsnd(m, type, message, size, flags) == 0:
            buffers.append(buffer)
            return
        try:
            self._send_again(m, type, message, size, flags, _native.last_errno())
        finally:
            buffers.append(buffer)

    # The slow paths are methods of their own: a lambda in send() or receive() would make
    # their variables closure cells, which every call would pay for.
    def _send_again(self, m: Any, type: int, message: bytes, size: int, flags: int, err: int) -> None:
        """Finish a msgsnd that failed with `err`: again after EINTR, else raise."""
        if err == errno.EINTR:
            err = -_call(lambda _: _msgsnd(m, type, message, size, flags), None)
        if err:
            raise self._send_error(err)

    # What send() and receive() raise when their call fails, made in C or here.
    def _send_error(self, err: int) -> ValueError | OSError:
        return self._error(err, f"msgsnd(id {self.id})", "queue full, non-blocking" if err == errno.EAGAIN else None)

    def _receive_error(self, err: int, type: int) -> ValueError | OSError:
        return self._error(err, f"msgrcv(id {self.id}, type={type})", "non-blocking" if err == errno.ENOMSG else None)

    @checked_method("msgrcv", "_receive_error")  # an int type and a bool block made in C
    def receive(self, type: int = 0, block: bool = True) -> tuple[bytes, int]:
        """msgrcv: (message, type). `type` 0 takes the oldest message, > 0 the oldest
        of that type, < 0 the oldest of the lowest type <= |type|. Without a match
        and not blocking: OSError ENOMSG."""
        if _class_of(type) is not int or not _LONG_MIN1 <= type <= _LONG_MAX:
            type = operator.index(type)
            if not _LONG_MIN1 <= type <= _LONG_MAX:
                raise ValueError(f"msgrcv: type must be in {_LONG_MIN1}..{_LONG_MAX}, not {type}")
        buffers = self._buffers  # a call takes one, so concurrent threads use their own
        try:
            buffer = buffers.pop()
        except IndexError:
            buffer = self._buffer()
        m, text = buffer
        flags = 0 if block else _IPC_NOWAIT
        size = _msgrcv(m, type, flags)
        if size >= 0:
            received = _unpack(text, size), m.mtype
            buffers.append(buffer)
            return received
        try:
            buffer, size = self._receive_again(buffer, type, flags, _native.last_errno())
            m, text = buffer
            return _unpack(text, size), m.mtype
        finally:
            buffers.append(buffer)

    def _receive_again(self, buffer: _native.MsgBuffer, type: int, flags: int, err: int) -> tuple[_native.MsgBuffer, int]:
        """Finish a msgrcv that failed with `err`: again after EINTR, or into a larger buffer
        after E2BIG (a message longer than msgmax was when this queue was made). The
        buffer used and the message's size."""
        while err in (errno.EINTR, errno.E2BIG):
            if err == errno.E2BIG:
                buffer = _native.msg_buffer(self.id, max(2 * buffer[0].size, _msgmax()))
            m = buffer[0]
            size = _call(lambda _: _msgrcv(m, type, flags), None)
            if size >= 0:
                return buffer, size
            err = -size
        raise self._receive_error(err, type)

    def _buffer(self) -> _native.MsgBuffer:
        if self._closed:
            raise ValueError(f"{self!r} is closed")
        return _native.msg_buffer(self.id, self._msgmax)

    def _error(self, err: int, facility: str, hint: str | None = None) -> ValueError | OSError:
        if self._closed:
            return ValueError(f"{facility}: {self!r} is closed")
        return kernel_error(err, facility, hint)

    @property
    def current_messages(self) -> int:
        """msg_qnum from msgctl(IPC_STAT)."""
        return self._mq.current_messages

    def close(self) -> None:
        """Remove the queue (msgctl IPC_RMID), in the creating process only. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._buffers = []  # buffers taken after this find it empty, and see _closed
        if self._is_creator:
            self._mq.remove()
            if self._tracked:
                tracker.unregister("sysv-msg", self._tracked)

    def __repr__(self) -> str:
        return f"SysVMessageQueue(id={self.id})"
