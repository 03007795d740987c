"""The one module of osvirt.ipc that touches the C extension.

Callers (osvirt.ipc.signals) have checked every argument's type and range.
"""
from osvirt._native import ffi, lib
from osvirt.errors import kernel_error

SI_QUEUE = lib.SI_QUEUE
SI_USER = lib.SI_USER


def sigqueue(pid, signo, value):
    if lib.osv_sigqueue(pid, signo, value) == -1:
        raise kernel_error(ffi.errno, f"sigqueue({pid}, {signo}, {value})")


def sigtimedwait(signals, timeout_ns):
    """(signo, code, value, pid, uid) of one accepted signal; timeout_ns < 0 waits forever."""
    info = ffi.new("struct osv_siginfo *")
    if lib.osv_sigtimedwait(ffi.new("int[]", signals), len(signals), timeout_ns, info) == -1:
        raise kernel_error(ffi.errno, "sigtimedwait" if timeout_ns >= 0 else "sigwaitinfo")
    return info.signo, info.code, info.value, info.pid, info.uid
