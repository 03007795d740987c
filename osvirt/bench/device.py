"""Device primitives: an ioctl answered by a driver (the pipe's)."""
import array
import contextlib
import fcntl
import os
import termios

from osvirt.bench.harness import Primitive, rig
from osvirt.errors import OsvirtError

__all__ = ["PRIMITIVES"]


@contextlib.contextmanager
def _pipe_holding_one_byte():
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        yield r
    finally:
        os.close(r)
        os.close(w)


@rig
def _fionread_python():
    with _pipe_holding_one_byte() as r:
        avail = array.array("i", [0])
        fcntl.ioctl(r, termios.FIONREAD, avail)
        if avail[0] != 1:
            raise OsvirtError(f"ioctl(FIONREAD) on a pipe holding 1 byte said {avail[0]}")
        yield lambda: fcntl.ioctl(r, termios.FIONREAD, avail)


@rig
def _fionread_c():
    with _pipe_holding_one_byte() as r:
        yield (r,)


PRIMITIVES = [
    Primitive("fionread", "ioctl(FIONREAD) on a pipe holding a byte: fcntl.ioctl into an array",
              python=_fionread_python, c="fionread", c_args=_fionread_c),
]
