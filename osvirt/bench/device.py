"""Device primitives: an ioctl answered by a driver, the pipe's (osvirt.device)."""
import array
import contextlib
import fcntl
import functools
import os
import termios
from collections.abc import Callable, Iterator

from osvirt import _quickcalls
from osvirt.bench.harness import Primitive, rig
from osvirt.device.ioctl import FIONREAD, ioctl_int
from osvirt.errors import OsvirtError

__all__ = ["PRIMITIVES"]


@contextlib.contextmanager
def _pipe_holding_one_byte() -> Iterator[int]:
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        yield r
    finally:
        os.close(r)
        os.close(w)


@rig
def _fionread_python() -> Iterator[Callable[[], int]]:
    with _pipe_holding_one_byte() as r:
        if ioctl_int(r, FIONREAD, name="FIONREAD") != 1:
            raise OsvirtError("ioctl(FIONREAD) on a pipe holding 1 byte did not say 1")
        yield lambda: ioctl_int(r, FIONREAD, name="FIONREAD")


@rig
def _fionread_bare() -> Iterator[Callable[[], int]]:
    with _pipe_holding_one_byte() as r:
        yield functools.partial(_quickcalls.ioctl_int, r, FIONREAD)


@rig
def _fionread_fcntl() -> Iterator[Callable[[], object]]:
    """The stdlib's fastest way: fcntl.ioctl filling a preallocated array in place."""
    with _pipe_holding_one_byte() as r:
        avail = array.array("i", [0])
        yield lambda: fcntl.ioctl(r, termios.FIONREAD, avail)


@rig
def _fionread_c() -> Iterator[tuple[int]]:
    with _pipe_holding_one_byte() as r:
        yield (r,)


PRIMITIVES = [
    Primitive("fionread", "ioctl(FIONREAD) on a pipe holding a byte: osvirt.device.ioctl.ioctl_int",
              python=_fionread_python, c="fionread", c_args=_fionread_c,
              floor=("osvirt._quickcalls.ioctl_int", _fionread_bare),
              peer=("fcntl.ioctl into an array", _fionread_fcntl),
              note="same system calls in all three (strace -c: one ioctl each). ioctl_int's valid call "
                   "is made in C with its checks and the GIL kept (osvirt._quickcalls.checked), and the "
                   "call itself is one Python 3.11 specializes (ioctl_int is a class whose call is the "
                   "C path): in one process, batches interleaved, the Python path costs 1.05x the floor "
                   "(in the bench's workers 1.01-1.11 in seven runs) "
                   "(1.13-1.15x when ioctl_int was an instance, whose call with a keyword 3.11 makes "
                   "the generic way); a lambda calling the bare function costs what the floor's "
                   "partial does (374-402 ns against 378-397). floor/C (1.3-1.4 here): the loop's own "
                   "Python iteration (the loop row, ~40-55 ns) and a builtin's call with its two ints "
                   "parsed and one made, next to an ioctl of ~300 ns"),
]
