"""Pseudo-terminals: a pair of ends the pty driver joins, and the ioctls on them.

Opening /dev/ptmx makes the kernel allocate a pair: the master end (the fd
from ptmx) and a slave /dev/pts/N (N from TIOCGPTN). Bytes written to the
master arrive at the slave as if typed, through the slave's line discipline
(echo, line editing); bytes written to the slave come out of the master. When
the master is closed the kernel releases the pair and N can be handed out
again.
"""
import os
import select
import signal
import struct
import termios
import time
from typing import Any, NamedTuple

from osvirt._owned import Owned
from osvirt.descriptors import HasFileno, fd_number
from osvirt.device.ioctl import TIOCEXCL, TIOCGEXCL, TIOCGPTN, TIOCGWINSZ, TIOCNXCL, TIOCSCTTY, TIOCSWINSZ, ioctl, ioctl_int
from osvirt.errors import kernel_error

__all__ = ["PseudoTerminal", "WindowSize", "get_window_size", "set_window_size", "set_raw",
           "set_exclusive", "is_exclusive", "set_controlling_terminal", "foreground_resize_watch",
           "read_line", "read_for", "open_errno"]

class WindowSize(NamedTuple):
    """struct winsize: a terminal's size in characters (and, if its program says, in pixels)."""
    rows: int
    cols: int
    xpixel: int = 0
    ypixel: int = 0


_WINSIZE = "HHHH"  # struct winsize: four unsigned shorts


def get_window_size(fd: int | HasFileno) -> WindowSize:
    """TIOCGWINSZ: the terminal's size as the driver keeps it."""
    return WindowSize(*struct.unpack(_WINSIZE, ioctl(fd, TIOCGWINSZ, bytes(8), name="TIOCGWINSZ")))


def set_window_size(fd: int | HasFileno, rows: int, cols: int, xpixel: int = 0, ypixel: int = 0) -> None:
    """TIOCSWINSZ: set the size; the driver signals SIGWINCH to the foreground process group."""
    for what, value in (("rows", rows), ("cols", cols), ("xpixel", xpixel), ("ypixel", ypixel)):
        if type(value) is not int or not 0 <= value <= 0xFFFF:
            raise ValueError(f"ioctl(TIOCSWINSZ): {what} must be an int in 0..65535, not {value!r}")
    ioctl(fd, TIOCSWINSZ, struct.pack(_WINSIZE, rows, cols, xpixel, ypixel), name="TIOCSWINSZ")


def set_raw(fd: int | HasFileno, *, vmin: int = 1, vtime: int = 0) -> list[Any]:
    """Raw mode through termios (what cfmakeraw does): no line buffering, no echo,
    no signal keys, no CR/NL translation, 8-bit characters. Returns the previous
    attributes, for termios.tcsetattr to restore."""
    if not 0 <= vmin <= 255 or not 0 <= vtime <= 255:
        raise ValueError(f"termios raw mode: vmin and vtime must be in 0..255, not {vmin}, {vtime}")
    fd = fd_number(fd, "tcgetattr")
    try:
        before = termios.tcgetattr(fd)
        iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(fd)
        iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
                   | termios.IGNCR | termios.ICRNL | termios.IXON)
        oflag &= ~termios.OPOST
        lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
        cflag = cflag & ~(termios.CSIZE | termios.PARENB) | termios.CS8
        cc[termios.VMIN], cc[termios.VTIME] = vmin, vtime
        termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, ispeed, ospeed, cc])
    except termios.error as e:
        raise kernel_error(e.args[0], "tcsetattr(raw)") from None
    return before


def set_exclusive(fd: int | HasFileno, exclusive: bool = True) -> None:
    """TIOCEXCL / TIOCNXCL: refuse (EBUSY) or allow further opens of this terminal.
    Processes with CAP_SYS_ADMIN are let through regardless."""
    if exclusive:
        ioctl(fd, TIOCEXCL, name="TIOCEXCL")
    else:
        ioctl(fd, TIOCNXCL, name="TIOCNXCL")


def is_exclusive(fd: int | HasFileno) -> bool:
    """TIOCGEXCL: whether the terminal is in exclusive mode."""
    return bool(ioctl_int(fd, TIOCGEXCL, name="TIOCGEXCL"))


def set_controlling_terminal(fd: int | HasFileno) -> None:
    """TIOCSCTTY: make this terminal the controlling terminal of the calling
    session leader (call os.setsid() first); its process group becomes the
    terminal's foreground group."""
    ioctl(fd, TIOCSCTTY, 0, name="TIOCSCTTY")


def foreground_resize_watch(slave_fd: int, report_fd: int, timeout_s: float = 10.0) -> int:
    """What a full-screen program does, for a child to run: become a session
    leader whose controlling terminal is `slave_fd` (so its group is the
    foreground group), write b"ready\n" to `report_fd`, wait for SIGWINCH,
    then write b"SIGWINCH rows cols\n" (the size it reads back) or b"timeout\n".
    Returns 0 when the signal came."""
    if not timeout_s > 0:
        raise ValueError(f"foreground_resize_watch: timeout_s must be > 0, not {timeout_s}")
    # Blocked, SIGWINCH stays pending until sigtimedwait takes it: no handler race.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGWINCH})
    os.setsid()
    set_controlling_terminal(slave_fd)
    os.write(report_fd, b"ready\n")
    if signal.sigtimedwait({signal.SIGWINCH}, timeout_s) is None:
        os.write(report_fd, b"timeout\n")
        return 1
    size = get_window_size(slave_fd)
    os.write(report_fd, f"SIGWINCH {size.rows} {size.cols}\n".encode())
    return 0


def read_line(fd: int | HasFileno, timeout_s: float = 5.0) -> bytes:
    """Read from fd up to and including b"\n"; TimeoutError if it takes longer than timeout_s.
    Reads a byte at a time, so nothing after the line is taken from the fd."""
    fd = fd_number(fd, "read_line")
    if not timeout_s > 0:
        raise ValueError(f"read_line: timeout_s must be > 0, not {timeout_s}")
    line, deadline = b"", time.monotonic() + timeout_s
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"read_line: no complete line within {timeout_s} s (got {line!r})")
        byte = os.read(fd, 1)
        if not byte:
            raise EOFError(f"read_line: end of file after {line!r}")
        line += byte
    return line


def read_for(fd: int | HasFileno, timeout_s: float, size: int | None = None) -> bytes:
    """What arrives on fd within timeout_s, stopping early once `size` bytes came."""
    fd = fd_number(fd, "read_for")
    if not timeout_s >= 0 or (size is not None and (type(size) is not int or size < 1)):
        raise ValueError(f"read_for: timeout_s must be >= 0 and size a positive int, not {timeout_s}, {size}")
    data, deadline = b"", time.monotonic() + timeout_s
    while size is None or len(data) < size:
        left = max(0.0, deadline - time.monotonic())
        if not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096 if size is None else size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def open_errno(path: str | os.PathLike[str]) -> int:
    """Open `path` read-write (O_NOCTTY) and close it: 0, or the errno the kernel gave."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC))
    except OSError as e:
        assert e.errno is not None  # set by every failed system call
        return e.errno
    return 0


class PseudoTerminal(Owned):
    """A pty pair, both ends owned: master and slave fds, N and /dev/pts/N.

    >>> with PseudoTerminal() as pty:
    ...     set_window_size(pty.master, 24, 80)
    ...     get_window_size(pty.slave).rows
    24
    """

    master = slave = -1

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()  # /dev/ptmx, unlockpt, open the slave; both O_CLOEXEC
        try:
            self.number = ioctl_int(self.master, TIOCGPTN, name="TIOCGPTN", fmt="I")
            self.path = os.ttyname(self.slave)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close both ends (the master last: that releases N). Idempotent."""
        for end in ("slave", "master"):
            fd: int = getattr(self, end)
            setattr(self, end, -1)  # first: the number may be reused at once
            if fd >= 0:
                os.close(fd)

    def __repr__(self) -> str:
        state = f"{self.path}" if self.master >= 0 else "closed"
        return f"<PseudoTerminal {state}>"

