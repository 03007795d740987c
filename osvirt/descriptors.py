"""What osvirt's calls take for a file descriptor: an int, or an object with fileno()."""
from typing import Protocol, cast

__all__ = ["HasFileno", "FD_MAX", "fd_number"]

FD_MAX = (1 << 31) - 1  # a C int


class HasFileno(Protocol):
    """What an fd may also be: an object with fileno() (a file, a socket)."""
    def fileno(self) -> int: ...


def fd_number(fd: "int | HasFileno", facility: str) -> int:
    """`fd` as the int the kernel takes: TypeError for what is neither an int (bool is not)
    nor has fileno(), ValueError for a number no descriptor can have; before any syscall."""
    if type(fd) is not int and not hasattr(fd, "fileno"):
        raise TypeError(f"{facility}: fd must be an int or have fileno(), not {type(fd).__name__}")
    fd = fd if type(fd) is int else cast(HasFileno, fd).fileno()  # checked above: it has one
    if type(fd) is not int or not 0 <= fd <= FD_MAX:
        raise ValueError(f"{facility}: fd {fd!r} is not an open descriptor")
    return fd
