"""The one module of osvirt.ipc that touches the C extensions (osvirt._native, osvirt._quickcalls).

Callers (osvirt.ipc.signals, osvirt.ipc.mqueue) have checked every argument's type and range.
"""
from collections.abc import Callable
from typing import Any, TypeVar, cast

from _cffi_backend import FFI

from osvirt import _quickcalls
from osvirt._native import ffi, lib
from osvirt.errors import kernel_error

SI_QUEUE: int = lib.SI_QUEUE
SI_USER: int = lib.SI_USER

# sigqueue and sigtimedwait are osvirt._quickcalls': each one C call with the GIL held
# (a sigtimedwait that must wait for its signal releases it), raising a plain OSError
# that these name after the call. Over cffi, with sigtimedwait's out-struct from a
# free list and a struct unpack, the bench row rt-signal cost 3.5 µs (2.1x the C
# loop); with them 2.8 µs (1.7x), of which the two bare calls are 1.95 µs (1.16x):
# the rest was the two Python functions around them (their frames, the checks, the
# signal set made a mask, QueuedSignal made): so their valid calls are made in C too
# (checked_sigqueue, checked_sigtimedwait), and the Python functions take the others.
sigqueue = _quickcalls.sigqueue
sigtimedwait = _quickcalls.sigtimedwait
_F = TypeVar("_F", bound=Callable[..., Any])


def sigqueue_error(err: int, pid: int, signo: int, value: int) -> OSError:
    return kernel_error(err, f"sigqueue({pid}, {signo}, {value})")


def sigtimedwait_error(err: int, timeout_ns: int) -> OSError:
    return kernel_error(err, "sigtimedwait" if timeout_ns >= 0 else "sigwaitinfo")


def checked_sigqueue(function: _F) -> _F:
    """`function` (osvirt.ipc.sigqueue), with its valid positional calls made in C."""
    return cast(_F, _quickcalls.checked("sigqueue", function, sigqueue_error))


def checked_sigtimedwait(result_type: type[tuple[Any, ...]]) -> Callable[[_F], _F]:
    """A decorator: `function` (osvirt.ipc.sigtimedwait), with its untimed calls on a set made
    in C, the signal accepted returned as a `result_type` (a typing.NamedTuple)."""
    def decorate(function: _F) -> _F:
        return cast(_F, _quickcalls.checked("sigtimedwait", function, sigtimedwait_error, result_type))
    return decorate


# -- message queues (osvirt.ipc.mqueue) --------------------------------------------
# The raw calls, for the send and receive fast paths, which pass what they hold and
# act on the result alone: -1 sends them to last_errno(), the errno cffi saved
# right after the call. Each takes a buffer from mq_receiver or msg_buffer, whose
# size fields are set here from the allocation itself, so C never writes past it.
# A struct osv_mq_receive or struct osv_msg is cdata whose fields (the cdef's) mypy
# cannot see: Any. A receiver or a buffer is one with a char * to its bytes.
Receiver = tuple[Any, FFI.CData]
MsgBuffer = tuple[Any, FFI.CData]
raw_mq_send: Callable[[int, bytes, int, int, int], int] = lib.osv_mq_send  # (mqd, msg, len, priority, timeout_ns)
raw_mq_receive: Callable[[Any], int] = lib.osv_mq_receive  # (struct osv_mq_receive *): the size, or -1
raw_msgsnd: Callable[[Any, int, bytes, int, int], int] = lib.osv_msgsnd  # (struct osv_msg *, type, msg, len, flags)
raw_msgrcv: Callable[[Any, int, int], int] = lib.osv_msgrcv  # (struct osv_msg *, type, flags): the size, or -1
unpack = cast("Callable[[FFI.CData, int], bytes]", ffi.unpack)  # unpack(char *, n): the n bytes there, as bytes
IPC_NOWAIT: int = lib.IPC_NOWAIT


def last_errno() -> int:
    return ffi.errno


def mq_receiver(mqd: int, size: int) -> Receiver:
    """A struct osv_mq_receive with a `size`-byte buffer, set to mq_receive from mqd
    without a timeout; and a char * to the buffer, for unpack."""
    r: Any = ffi.new("struct osv_mq_receive *", {"mqd": mqd, "timeout_ns": -1, "size": size, "buf": size})
    return r, r.buf


def mq_receive_with(r: Any, mqd: int, timeout_ns: int) -> int:
    """osv_mq_receive on r from descriptor mqd with timeout_ns (< 0: none); r is set back
    as mq_receiver left it."""
    fast_mqd = r.mqd
    r.mqd, r.timeout_ns = mqd, timeout_ns
    try:
        size: int = lib.osv_mq_receive(r)
        return size
    finally:
        r.mqd, r.timeout_ns = fast_mqd, -1


def msg_buffer(msqid: int, size: int) -> MsgBuffer:
    """A struct osv_msg for queue msqid with room for `size` bytes of text; and a char * to
    the text, for unpack."""
    m: Any = ffi.new("struct osv_msg *", {"msqid": msqid, "size": size, "mtext": size})
    return m, m.mtext
