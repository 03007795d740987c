"""The one module of osvirt.bench that touches the C extension.

Every C loop is `osv_bench_<name>(args..., n)` and returns the elapsed ns. A
buffer argument (bytes, bytearray, mmap, memoryview) is passed to C as a
pointer followed by its length, both taken from the object here, so C never
sees a length that does not match its buffer; a str (a path) is passed as a
NUL-terminated char *.
"""
import mmap
import os
from collections.abc import Iterable

from _cffi_backend import FFI

from osvirt._native import ffi, lib
from osvirt._owned import Owned
from osvirt.errors import kernel_error

__all__ = ["c_loop", "has_c_loop", "SharedPage", "pipe_echo", "pipe_drain", "mq_echo", "msg_echo", "cond_echo", "event_echo"]

MAX_N = 2 ** 62


def has_c_loop(name: str) -> bool:
    return hasattr(lib, f"osv_bench_{name}")


class SharedPage(Owned):
    """Shared memory (MAP_SHARED, anonymous: forked children share it) set up
    by osv_bench_shared_init with the mutex, condition and semaphore the C
    sync loops use. Pass it to c_loop as an argument; close() unmaps it."""

    ptr: FFI.CData | None = None  # until the page is mapped

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, -(-lib.osv_bench_shared_size() // mmap.PAGESIZE) * mmap.PAGESIZE)
        self.ptr = ffi.from_buffer(self._map)
        if lib.osv_bench_shared_init(self.ptr) == -1:
            err = ffi.errno
            self.close()
            raise kernel_error(err, "osv_bench_shared_init")

    def close(self) -> None:
        """Unmap. Idempotent."""
        ptr, self.ptr = self.ptr, None
        if ptr is not None:
            ffi.release(ptr)  # else mmap refuses to close while cffi holds its buffer
            self._map.close()


def _c_args(facility: str, args: Iterable[object]) -> list[object]:
    out: list[object] = []
    for arg in args:
        if isinstance(arg, SharedPage):
            if arg.ptr is None:
                raise ValueError(f"{facility}: the SharedPage is closed")
            out.append(arg.ptr)
        elif isinstance(arg, str):  # a path: a NUL-terminated char * (cffi passes bytes so)
            if "\0" in arg:
                raise ValueError(f"{facility}: {arg!r} holds a NUL byte")
            out.append(os.fsencode(arg))
        elif isinstance(arg, bool) or not isinstance(arg, int):
            try:
                view = memoryview(arg)  # type: ignore[arg-type]  # any object: TypeError if no buffer
            except TypeError:
                raise TypeError(f"{facility}: argument {arg!r} is neither an int, a str nor a buffer") from None
            if view.readonly and not isinstance(arg, bytes):
                raise TypeError(f"{facility}: buffer {arg!r} is read-only")
            out += [ffi.from_buffer(arg), view.nbytes]  # type: ignore[call-overload]  # a buffer: memoryview took it
        else:
            out.append(arg)
    return out


def c_loop(name: str, args: Iterable[object], n: int) -> int:
    """Run C loop osv_bench_<name>(*args, n); its elapsed ns."""
    facility = f"osv_bench_{name}"
    if not has_c_loop(name):
        raise ValueError(f"{facility}: no such C loop in osvirt._native")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise ValueError(f"{facility}: n must be an int in 1..2**62, not {n!r}")
    elapsed: int = getattr(lib, facility)(*_c_args(facility, args), n)
    if elapsed < 0:
        raise kernel_error(ffi.errno, facility)
    return elapsed


def _serve(facility: str, result: int) -> None:
    if result == -1:
        raise kernel_error(ffi.errno, facility)


def pipe_echo(rfd: int, wfd: int) -> None:
    """Echo each byte read from rfd to wfd, until end of file."""
    _serve("osv_bench_pipe_echo", lib.osv_bench_pipe_echo(rfd, wfd))


def pipe_drain(fd: int, size_bytes: int) -> None:
    """Read fd in size_bytes chunks until end of file."""
    buf = bytearray(size_bytes)
    _serve("osv_bench_pipe_drain", lib.osv_bench_pipe_drain(fd, *_c_args("osv_bench_pipe_drain", [buf])))


def mq_echo(mqd_from: int, mqd_to: int, msgsize: int) -> None:
    """Echo each POSIX message from one queue to the other, until a zero-length one."""
    buf = bytearray(msgsize)
    _serve("osv_bench_mq_echo", lib.osv_bench_mq_echo(mqd_from, mqd_to, *_c_args("osv_bench_mq_echo", [buf])))


def msg_echo(msqid: int) -> None:
    """Answer each SysV message of type 1 with type 2, until a zero-length one."""
    _serve("osv_bench_msg_echo", lib.osv_bench_msg_echo(msqid))


def cond_echo(page: SharedPage) -> None:
    """Answer each turn handed over on page's condition, until killed."""
    _serve("osv_bench_cond_echo", lib.osv_bench_cond_echo(page.ptr))


def event_echo(page: SharedPage) -> None:
    """Answer each set of page's ping event with a set of its pong, until killed."""
    _serve("osv_bench_event_echo", lib.osv_bench_event_echo(page.ptr))
