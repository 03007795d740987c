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
import collections
import errno
import fcntl
import os
import time

from osvirt.errors import kernel_error
from osvirt.fs import _native
from osvirt.process.spawn import ready

__all__ = ["LockHolder", "flock", "setlk", "getlk", "hold_in_child"]

LockHolder = collections.namedtuple("LockHolder", ["pid", "start", "length", "kind"])
LockHolder.__doc__ = """The lock F_GETLK found in the way: the holder's pid (-1 for an
open-file-description lock), the range it covers (length 0: to the end of
the file, however long) and its kind ("read" or "write")."""

_FLOCK = {"exclusive": fcntl.LOCK_EX, "shared": fcntl.LOCK_SH, "unlock": fcntl.LOCK_UN}
_LTYPE = {"read": fcntl.F_RDLCK, "write": fcntl.F_WRLCK, "unlock": fcntl.F_UNLCK}
_KIND = {v: k for k, v in _LTYPE.items()}


def _choice(value, table, facility, what):
    try:
        return table[value]
    except (KeyError, TypeError):
        raise ValueError(f"{facility}: {what} {value!r} not one of {', '.join(table)}") from None


def flock(fd, kind="exclusive", wait=True):
    """flock(2) the whole file: "exclusive", "shared" or "unlock".

    With wait=False a conflicting lock raises BlockingIOError (EWOULDBLOCK).
    """
    op = _choice(kind, _FLOCK, "flock", "kind")
    facility = f"flock(fd {fd}, {kind}{'' if wait else ', LOCK_NB'})"
    try:
        fcntl.flock(fd, op if wait or kind == "unlock" else op | fcntl.LOCK_NB)
    except OSError as e:
        raise kernel_error(e.errno, facility,
                           "another open file description holds a conflicting lock"
                           if e.errno == errno.EWOULDBLOCK else None) from None


def _flock_struct(kind, start, length, facility):
    for name, value in (("start", start), ("length", length)):
        if not isinstance(value, int) or not 0 <= value <= _native.OFF_MAX:
            raise ValueError(f"{facility}: {name} {value!r} not in 0..{_native.OFF_MAX}")
    return _native.pack_flock(_choice(kind, _LTYPE, facility, "kind"), os.SEEK_SET, start, length)


def _span(start, length):
    return f"[{start}, {'EOF' if length == 0 else start + length})"


def setlk(fd, start, length, kind="write", wait=False, ofd=False):
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
        raise kernel_error(e.errno, facility, hint) from None


def getlk(fd, start, length, kind="write", ofd=False):
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
        raise kernel_error(e.errno, facility) from None
    l_type, _, l_start, l_len, l_pid = _native.unpack_flock(answer)
    if l_type == fcntl.F_UNLCK:
        return None
    return LockHolder(l_pid, l_start, l_len, _KIND[l_type])


def _hold(path, lock, hold_s, ready_fd):
    fd = os.open(path, os.O_RDWR)
    lock(fd)
    ready(ready_fd)
    time.sleep(hold_s)


def hold_in_child(children, path, lock, hold_s=60.0):
    """Fork a child (owned by `children`, an osvirt.process.Children) that opens `path`
    read-write, calls `lock(fd)` and keeps the lock for `hold_s` or until killed.

    Returns the child's pid once it holds the lock, so another process can
    meet it (flock, setlk, getlk) without racing its start.
    """
    try:
        return children.fork_ready(_hold, path, lock, hold_s)
    except ChildProcessError as e:
        raise RuntimeError(f"lock holder exited before taking its lock on {path}: {e}") from None
