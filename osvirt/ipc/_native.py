"""The one module of osvirt.ipc that touches the C extension.

Callers (osvirt.ipc.signals, osvirt.ipc.mqueue) have checked every argument's type and range.
"""
import struct

from osvirt._native import ffi, lib
from osvirt.errors import kernel_error

SI_QUEUE = lib.SI_QUEUE
SI_USER = lib.SI_USER

# For the fast path of ipc.sigqueue, which acts only on 0: -1 goes to sigqueue_error,
# which reads the errno cffi saved right after the call.
raw_sigqueue = lib.osv_sigqueue


def sigqueue_error(pid, signo, value):
    """The OSError for osv_sigqueue having returned -1."""
    return kernel_error(ffi.errno, f"sigqueue({pid}, {signo}, {value})")


def _struct_format(ctype):
    """A `struct` module format for a C struct of integer fields, read from the cdef."""
    codes = {(4, True): "i", (4, False): "I", (8, True): "q", (8, False): "Q"}
    fmt = "@" + "".join(codes[ffi.sizeof(f.type), int(ffi.cast(f.type, -1)) < 0]
                        for _, f in ffi.typeof(ctype).fields)
    if struct.calcsize(fmt) != ffi.sizeof(ctype):
        raise ImportError(f"osvirt.ipc: {ctype} is not laid out as {fmt!r}")
    return fmt


# (signo, code, value, pid, uid) out of a filled struct osv_siginfo, in one call.
_unpack_siginfo = struct.Struct(_struct_format("struct osv_siginfo")).unpack_from
# sigtimedwait's out-struct and a buffer over it: making both per call (ffi.new,
# ffi.buffer) costs ~220 ns, taking them from this free list ~60 ns. list.pop and
# list.append are atomic under the GIL: each thread, and a signal handler that
# calls sigtimedwait between another's C call and its unpack, takes its own.
_free_siginfo = []


def sigtimedwait(mask, timeout_ns):
    """(signo, code, value, pid, uid) of one accepted signal of `mask` (bit s - 1 for
    signal s); timeout_ns < 0 waits forever."""
    try:
        info, view = _free_siginfo.pop()
    except IndexError:
        info = ffi.new("struct osv_siginfo *")
        view = ffi.buffer(info)
    if lib.osv_sigtimedwait(mask, timeout_ns, info) == -1:
        err = ffi.errno
        _free_siginfo.append((info, view))
        raise kernel_error(err, "sigtimedwait" if timeout_ns >= 0 else "sigwaitinfo")
    accepted = _unpack_siginfo(view)
    _free_siginfo.append((info, view))
    return accepted


# -- message queues (osvirt.ipc.mqueue) --------------------------------------------
# The raw calls, for the send and receive fast paths, which pass what they hold and
# act on the result alone: -1 sends them to last_errno(), the errno cffi saved
# right after the call. Each takes a buffer from mq_receiver or msg_buffer, whose
# size fields are set here from the allocation itself, so C never writes past it.
raw_mq_send = lib.osv_mq_send
raw_mq_receive = lib.osv_mq_receive
raw_msgsnd = lib.osv_msgsnd
raw_msgrcv = lib.osv_msgrcv
unpack = ffi.unpack  # unpack(char *, n): the n bytes there, as bytes
IPC_NOWAIT = lib.IPC_NOWAIT


def last_errno():
    return ffi.errno


def mq_receiver(mqd, size):
    """A struct osv_mq_receive with a `size`-byte buffer, set to mq_receive from mqd
    without a timeout; and a char * to the buffer, for unpack."""
    r = ffi.new("struct osv_mq_receive *", {"mqd": mqd, "timeout_ns": -1, "size": size, "buf": size})
    return r, r.buf


def mq_receive_with(r, mqd, timeout_ns):
    """osv_mq_receive on r from descriptor mqd with timeout_ns (< 0: none); r is set back
    as mq_receiver left it."""
    fast_mqd = r.mqd
    r.mqd, r.timeout_ns = mqd, timeout_ns
    try:
        return lib.osv_mq_receive(r)
    finally:
        r.mqd, r.timeout_ns = fast_mqd, -1


def msg_buffer(msqid, size):
    """A struct osv_msg for queue msqid with room for `size` bytes of text; and a char * to
    the text, for unpack."""
    m = ffi.new("struct osv_msg *", {"msqid": msqid, "size": size, "mtext": size})
    return m, m.mtext
