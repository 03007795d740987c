"""File locks: whole-file flock(2), and fcntl(2) byte-range locks.

flock locks belong to the open file description and cover the whole file.
fcntl record locks (F_SETLK, F_SETLKW, F_GETLK) cover a byte range and
belong to the process: any close of the file by that process drops them,
and they are released when it dies. Open-file-description locks
(F_OFD_SETLK, F_OFD_SETLKW, F_OFD_GETLK) cover a byte range but belong to
the open file description, like flock's. F_GETLK answers with the lock that
would block a request; for an OFD lock there is no owning process, and the
kernel reports its pid as -1.
"""
import errno
import fcntl
import os
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple, TypeVar

from osvirt.errors import kernel_error
from osvirt.fs import _native
from osvirt.fs.inspect import Path
from osvirt.process.spawn import Children, ready

__all__ = ["LockHolder", "flock", "setlk", "getlk", "hold_in_child"]

_V = TypeVar("_V")


class LockHolder(NamedTuple):
    """The lock F_GETLK found in the way: the holder's pid (-1 for an
    open-file-description lock), the range it covers (length 0: to the end of
    the file, however long) and its kind ("read" or "write")."""
    pid: int
    start: int
    length: int
    kind: str

_FLOCK = {"exclusive": fcntl.LOCK_EX, "shared": fcntl.LOCK_SH, "unlock": fcntl.LOCK_UN}
_LTYPE = {"read": fcntl.F_RDLCK, "write": fcntl.F_WRLCK, "unlock": fcntl.F_UNLCK}
_KIND = {v: k for k, v in _LTYPE.items()}


def _choice(value: str, table: Mapping[str, _V], facility: str, what: str) -> _V:
    try:
        return table[value]
    except (KeyError, TypeError):
        raise ValueError(f"{facility}: {what} {value!r} not one of {', '.join(table)}") from None


def flock(fd: int, kind: str = "exclusive", wait: bool = True) -> None:
    """flock(2) the whole file: "exclusive", "shared" or "unlock".

    With wait=False a conflicting lock raises BlockingIOError (EWOULDBLOCK).
    """
    op = _choice(kind, _FLOCK, "flock", "kind")
    facility = f"flock(fd {fd}, {kind}{'' if wait else ', LOCK_NB'})"
    try:
        fcntl.flock(fd, op if wait or kind == "unlock" else op | fcntl.LOCK_NB)
    except OSError as e:
        assert e.errno is not None  # set by every failed system call
        raise kernel_error(e.errno, facility,
                           "another open file description holds a conflicting lock"
                           if e.errno == errno.EWOULDBLOCK else None) from None


def _flock_struct(kind: str, start: int, length: int, facility: str) -> bytes:
    for name, value in (("start", start), ("length", length)):
        if not isinstance(value, int) or not 0 <= value <= _native.OFF_MAX:
            raise ValueError(f"{facility}: {name} {value!r} not in 0..{_native.OFF_MAX}")
    return _native.pack_flock(_choice(kind, _LTYPE, facility, "kind"), os.SEEK_SET, start, length)


def _span(start: int, length: int) -> str:
    return f"[{start}, {'EOF' if length == 0 else start + length})"


def setlk(fd: int, start: int, length: int, kind: str = "write", wait: bool = False, ofd: bool = False) -> None:
    """Take ("read", "write") or drop ("unlock") a byte-range lock on [start, start+length).

    length 0 means to the end of the file, however it grows. wait=False is
    F_SETLK: a conflict raises BlockingIOError at once. wait=True is
    F_SETLKW: sleep until the range is free (EDEADLK if that would deadlock).
    ofd=True uses the open-file-description variants (F_OFD_SETLK[W]).
    """
    name = ("F_OFD_SETLKW" if ofd else "F_SETLKW") if wait else ("F_OFD_SETLK" if ofd else "F_SETLK")
    facility = f"fcntl(fd {fd}, {name}, {kind} {_span(start, length)})"
    request = _flock_struct(kind, start, length, facility)
    try:
        fcntl.fcntl(fd, getattr(fcntl, name), request)
    except OSError as e:
        hint = ("a conflicting lock is held (getlk names its holder)"
                if e.errno in (errno.EAGAIN, errno.EACCES) else None)  # POSIX allows either
        assert e.errno is not None
        raise kernel_error(e.errno, facility, hint) from None


def getlk(fd: int, start: int, length: int, kind: str = "write", ofd: bool = False) -> LockHolder | None:
    """F_GETLK (F_OFD_GETLK with ofd=True): the lock that would block this request, or None.

    A process never conflicts with its own fcntl locks, so ask from another
    process (or another open file description, for OFD locks).
    """
    if kind == "unlock":
        raise ValueError("fcntl(F_GETLK): kind must be 'read' or 'write'")
    name = "F_OFD_GETLK" if ofd else "F_GETLK"
    facility = f"fcntl(fd {fd}, {name}, {kind} {_span(start, length)})"
    request = _flock_struct(kind, start, length, facility)
    try:
        answer = fcntl.fcntl(fd, getattr(fcntl, name), request)
    except OSError as e:
        assert e.errno is not None
        raise kernel_error(e.errno, facility) from None
    l_type, _, l_start, l_len, l_pid = _native.unpack_flock(answer)
    if l_type == fcntl.F_UNLCK:
        return None
    return LockHolder(l_pid, l_start, l_len, _KIND[l_type])


def _hold(path: Path, lock: Callable[[int], object], hold_s: float, ready_fd: int) -> None:
    fd = os.open(path, os.O_RDWR)
    lock(fd)
    ready(ready_fd)
    time.sleep(hold_s)


def hold_in_child(children: Children, path: Path, lock: Callable[[int], object], hold_s: float = 60.0) -> int:
    """Fork a child (owned by `children`, an osvirt.process.Children) that opens `path`
    read-write, calls `lock(fd)` and keeps the lock for `hold_s` or until killed.

    Returns the child's pid once it holds the lock, so another process can
    meet it (flock, setlk, getlk) without racing its start.
    """
    try:
        return children.fork_ready(_hold, path, lock, hold_s)
    except ChildProcessError as e:
        raise RuntimeError(f"lock holder exited before taking its lock on {path}: {e}") from None
