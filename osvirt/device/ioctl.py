"""ioctl request numbers, encoded and decoded as the kernel does it.

An ioctl request is one 32-bit number with four fields (x86 layout of
<asm-generic/ioctl.h>): bits 0-7 the command number, 8-15 the type (a
driver's "magic" letter), 16-29 the size of the argument the command copies,
30-31 the direction of that copy seen from user space (none, write = user to
kernel, read = kernel to user). `IO`, `IOW`, `IOR` and `IOWR` build it like
the `_IO*` macros; `decode` takes it apart again.

The terminal numbers (TIOC*, FIONREAD) predate the encoding: their values
are plain `'T' << 8 | nr` even when they copy a struct, which `decode` shows
as direction none and size 0. The loop numbers too (<linux/loop.h> writes
them as bare hex). tests/device/test_ioctl.py checks every constant here
against the value the C compiler takes from the system headers.

`ioctl(fd, request, arg, name=...)` is fcntl.ioctl with the request
checked first and a refusal raised as the OSError subclass naming it;
`ioctl_int` is the same for a request whose answer is one integer, and makes
the call in C, without releasing the GIL, when that integer is a C int.
"""
import fcntl
import struct
from typing import NamedTuple, overload

from osvirt.descriptors import FD_MAX, HasFileno, fd_number
from osvirt.device._native import checked_ioctl_int, ioctl_error, quick_ioctl_int

__all__ = [
    "NONE", "WRITE", "READ", "IOC", "IO", "IOW", "IOR", "IOWR", "Request", "HasFileno", "decode", "describe",
    "ioctl", "ioctl_int",
    "TIOCSCTTY", "TIOCGWINSZ", "TIOCSWINSZ", "TIOCEXCL", "TIOCNXCL", "TIOCGEXCL", "TIOCGPTN",
    "FIONREAD",
    "LOOP_SET_FD", "LOOP_CLR_FD", "LOOP_SET_STATUS64", "LOOP_GET_STATUS64", "LOOP_CONFIGURE",
    "LOOP_CTL_GET_FREE",
    "BLKSSZGET", "BLKGETSIZE64",
    "KVM_GET_API_VERSION", "KVM_CHECK_EXTENSION",
    "FS_IOC_FIEMAP",
]

NR_BITS, TYPE_BITS, SIZE_BITS, DIR_BITS = 8, 8, 14, 2
NR_SHIFT = 0
TYPE_SHIFT = NR_SHIFT + NR_BITS
SIZE_SHIFT = TYPE_SHIFT + TYPE_BITS
DIR_SHIFT = SIZE_SHIFT + SIZE_BITS

NONE, WRITE, READ = 0, 1, 2  # _IOC_NONE, _IOC_WRITE, _IOC_READ; READ | WRITE is both
_DIRECTIONS = {NONE: "none", WRITE: "write", READ: "read", READ | WRITE: "read|write"}

class Request(NamedTuple):
    """An ioctl request number taken apart: direction (NONE/WRITE/READ/both), type, number, size."""
    direction: int
    type: int
    number: int
    size: int


def _field(what: str, value: int, bits: int) -> int:
    if type(value) is not int:
        raise TypeError(f"ioctl encoding: {what} must be an int, not {type(value).__name__}")
    if not 0 <= value < 1 << bits:
        raise ValueError(f"ioctl encoding: {what} {value} not in 0..{(1 << bits) - 1} ({bits} bits)")
    return value


def _type(magic: str | int) -> int:
    """A driver's type: a one-character string ('T') or its code (0xAE)."""
    if isinstance(magic, str):
        if len(magic) != 1:
            raise ValueError(f"ioctl encoding: type {magic!r} must be one character")
        magic = ord(magic)
    return _field("type", magic, TYPE_BITS)


def _size(size: int | str) -> int:
    """The argument's size: bytes, or a struct format whose size is taken (like sizeof)."""
    if isinstance(size, str):
        size = struct.calcsize(size)
    return _field("size", size, SIZE_BITS)


def IOC(direction: int, magic: str | int, number: int, size: int | str) -> int:
    """_IOC(dir, type, nr, size): the four fields packed into one request number."""
    return (_field("direction", direction, DIR_BITS) << DIR_SHIFT
            | _type(magic) << TYPE_SHIFT
            | _field("number", number, NR_BITS) << NR_SHIFT
            | _size(size) << SIZE_SHIFT)


def IO(magic: str | int, number: int) -> int:
    """_IO: no argument copied (or, in legacy numbers, one the driver copies itself)."""
    return IOC(NONE, magic, number, 0)


def IOW(magic: str | int, number: int, size: int | str) -> int:
    """_IOW: user space writes `size` bytes to the kernel (size: bytes or a struct format)."""
    return IOC(WRITE, magic, number, size)


def IOR(magic: str | int, number: int, size: int | str) -> int:
    """_IOR: the kernel returns `size` bytes to user space."""
    return IOC(READ, magic, number, size)


def IOWR(magic: str | int, number: int, size: int | str) -> int:
    """_IOWR: `size` bytes go in and come back."""
    return IOC(READ | WRITE, magic, number, size)


def decode(request: int) -> Request:
    """A request number taken apart into its fields, as a Request."""
    request = _field("request", request, DIR_SHIFT + DIR_BITS)
    return Request(direction=request >> DIR_SHIFT & (1 << DIR_BITS) - 1,
                   type=request >> TYPE_SHIFT & (1 << TYPE_BITS) - 1,
                   number=request >> NR_SHIFT & (1 << NR_BITS) - 1,
                   size=request >> SIZE_SHIFT & (1 << SIZE_BITS) - 1)


def describe(request: int) -> str:
    """'_IOR(0x12, 114, 8)'-style text for a request number."""
    d = decode(request)
    kind = {NONE: "_IO", WRITE: "_IOW", READ: "_IOR", READ | WRITE: "_IOWR"}[d.direction]
    magic = f"'{chr(d.type)}'" if 0x20 < d.type < 0x7F else f"{d.type:#04x}"
    return f"{kind}({magic}, {d.number:#04x}" + (f", {d.size})" if d.direction else ")")


def _checked_fd(fd: int | HasFileno, request: int, name: str) -> int:
    """`fd` as an int, once it and `request` passed their checks; the error text is built
    only for an error, so the checks cost next to nothing on the way to the syscall."""
    if type(fd) is not int or not 0 <= fd <= FD_MAX:
        fd = fd_number(fd, f"ioctl({name})")
    if type(request) is not int or not 0 <= request < _REQUEST_LIMIT:
        decode(request)  # raises the range check's TypeError or ValueError
    return fd


_REQUEST_LIMIT = 1 << DIR_SHIFT + DIR_BITS
_ARG_MAX = 1024  # fcntl.ioctl's buffer


def _check_arg_size(size: int, name: str) -> None:
    if size > _ARG_MAX:
        raise ValueError(f"ioctl({name}): arg of {size} bytes is larger than fcntl.ioctl's {_ARG_MAX}")


def _fcntl_ioctl(fd: int, request: int, arg: int | bytes | bytearray, name: str, mutate: bool = False) -> int | bytes:
    try:
        return fcntl.ioctl(fd, request, arg, mutate)
    except OSError as e:
        assert e.errno is not None  # set by every failed system call
        raise ioctl_error(e.errno, name) from None


@overload
def ioctl(fd: int | HasFileno, request: int, arg: int = 0, *, name: str) -> int: ...
@overload
def ioctl(fd: int | HasFileno, request: int, arg: bytes | bytearray, *, name: str) -> bytes: ...
def ioctl(fd: int | HasFileno, request: int, arg: int | bytes | bytearray = 0, *, name: str) -> int | bytes:
    """fcntl.ioctl(fd, request, arg); a refusal is the OSError subclass naming `name`.

    `arg` is an int passed by value, or bytes copied in and returned (the
    kernel's answer) as fcntl.ioctl does.
    """
    fd = _checked_fd(fd, request, name)
    if type(arg) is not int:
        if not isinstance(arg, (bytes, bytearray)):
            raise TypeError(f"ioctl({name}): arg must be an int or bytes, not {type(arg).__name__}")
        _check_arg_size(len(arg), name)
        arg = bytes(arg)
    return _fcntl_ioctl(fd, request, arg, name)


# fmt -> its struct.Struct, made once per format.
_INT_LAYOUTS: dict[str, struct.Struct] = {}


# Its valid 'i' call (an int fd and request in range, name by keyword) is made in C by
# checked_ioctl_int, with no Python frame; this function takes every other call.
@checked_ioctl_int
def ioctl_int(fd: int | HasFileno, request: int, *, name: str, fmt: str = "i") -> int:
    """An ioctl that fills in one integer of struct format `fmt` ('i' int, 'Q' u64): its value.

    A C int ('i', the default) is asked by a C call that returns it and keeps
    the GIL (osvirt._quickcalls): ~350 ns a call, against ~870 through
    fcntl.ioctl and a buffer to unpack (bench row fionread). So it is for
    requests the driver answers at once (FIONREAD, TIOCGEXCL, BLKSSZGET, ...);
    a request that waits for an event belongs in `ioctl`, which lets other
    threads run meanwhile. Other formats go through fcntl.ioctl. Either way
    the kernel may write up to 1024 bytes (as fcntl.ioctl allows) and the
    first integer is the answer.
    """
    if fmt == "i":
        # Here when checked_ioctl_int's C path did not take the call (an object's fileno(),
        # fmt passed positionally...). The C call takes an int (not a bool) fd in 0.._FD_MAX
        # and request below _REQUEST_LIMIT and refuses anything else before the syscall
        # (TypeError, OverflowError); a refused one goes through the checks, which explain it.
        try:  # free unless it raises (Python 3.11's exception tables)
            return quick_ioctl_int(fd, request)  # type: ignore[arg-type]  # an object with fileno() raises TypeError, caught below
        except OSError as e:
            assert e.errno is not None
            raise ioctl_error(e.errno, name) from None
        except (TypeError, OverflowError):
            return ioctl_int(_checked_fd(fd, request, name), request, name=name)
    fd = _checked_fd(fd, request, name)
    layout = _INT_LAYOUTS.get(fmt)
    if layout is None:
        layout = struct.Struct(fmt)
        _check_arg_size(layout.size, name)
        _INT_LAYOUTS[fmt] = layout
    # The kernel writes straight into a writable buffer (fcntl.ioctl's mutate): no
    # copy back into new bytes. A new one per call, so no two threads share it.
    answer = bytearray(layout.size)
    _fcntl_ioctl(fd, request, answer, name, True)
    value: int = layout.unpack_from(answer)[0]  # fmt is an integer's format
    return value


# -- terminals (<asm-generic/ioctls.h>: legacy numbers, type 'T', no size) ----------
TIOCSCTTY = IO("T", 0x0E)
TIOCGWINSZ = IO("T", 0x13)
TIOCSWINSZ = IO("T", 0x14)
FIONREAD = IO("T", 0x1B)
TIOCEXCL = IO("T", 0x0C)
TIOCNXCL = IO("T", 0x0D)
TIOCGPTN = IOR("T", 0x30, "I")   # the newer ones are encoded
TIOCGEXCL = IOR("T", 0x40, "i")

# -- loop devices (<linux/loop.h>: bare numbers, type 'L') --------------------------
LOOP_SET_FD = IO("L", 0x00)
LOOP_CLR_FD = IO("L", 0x01)
LOOP_SET_STATUS64 = IO("L", 0x04)
LOOP_GET_STATUS64 = IO("L", 0x05)
LOOP_CONFIGURE = IO("L", 0x0A)
LOOP_CTL_GET_FREE = IO("L", 0x82)

# -- block devices (<linux/fs.h>, type 0x12) ---------------------------------------
BLKSSZGET = IO(0x12, 104)
BLKGETSIZE64 = IOR(0x12, 114, "N")  # the header says size_t, though it returns a u64

# -- KVM (<linux/kvm.h>, KVMIO = 0xAE) ---------------------------------------------
KVM_GET_API_VERSION = IO(0xAE, 0x00)
KVM_CHECK_EXTENSION = IO(0xAE, 0x03)

# -- filesystems (<linux/fs.h>: struct fiemap is 32 bytes before its extents) -------
FS_IOC_FIEMAP = IOWR("f", 11, "QQIIII")
