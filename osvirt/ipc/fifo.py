"""Named pipes (FIFOs): a pipe that unrelated processes find by its path.

A FIFO is one byte stream, like a pipe: whatever any process writes, any
reader may read, the writer included. It is not full duplex: two processes
that want to talk both ways need two FIFOs, one per direction.
"""
from __future__ import annotations

import contextlib
import errno
import os
import select
import stat
import time
from typing import TYPE_CHECKING

from osvirt import naming
from osvirt._owned import Owned

if TYPE_CHECKING:  # typing_extensions is mypy's; collections.abc.Buffer is Python 3.12's
    from typing_extensions import Buffer

__all__ = ["Fifo"]


class Fifo(Owned):
    """A FIFO, mode 0600, in a new private directory (mode 0700); close() removes both.

    mkfifo fails with EEXIST rather than reuse a path, and the directory is
    new and private, so no other user can have put anything there first.
    """

    _closed = True  # until __init__ holds the object: what close() and __del__ see on a half-built one

    def __init__(self, name: str = "fifo", parent: str | os.PathLike[str] | None = None) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"mkfifo: name {name!r} must be one path component")
        self._closed = True
        self._creator = os.getpid()
        self._stack = contextlib.ExitStack()
        directory = self._stack.enter_context(naming.private_dir(parent))
        self._closed = False
        self.path = os.path.join(directory, name)
        try:
            os.mkfifo(self.path, 0o600)
            os.chmod(self.path, 0o600)  # exactly 0600, whatever the umask
        except BaseException:
            self.close()
            raise

    @property
    def mode(self) -> int:
        """The FIFO's permission bits as the kernel reports them (stat)."""
        return stat.S_IMODE(os.stat(self.path).st_mode)

    def write_all(self, data: Buffer, timeout_s: float = 10.0) -> None:
        """Open for writing, write `data`, close: TimeoutError if no reader opens it within `timeout_s`.

        A plain open(O_WRONLY) would wait for a reader forever; O_NONBLOCK
        fails with ENXIO while there is none, so this retries until the deadline.
        """
        deadline = _deadline("write", timeout_s)
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                break
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                if time.monotonic() > deadline:
                    raise TimeoutError(errno.ETIMEDOUT, f"open({self.path}, O_WRONLY): no reader "
                                       f"within {timeout_s} s") from None
                time.sleep(0.005)
        try:
            os.set_blocking(fd, True)
            view = memoryview(bytes(data))
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def read_all(self, timeout_s: float = 10.0) -> bytes:
        """Open for reading and read until every writer has closed (EOF): TimeoutError after `timeout_s`.

        Opened with O_NONBLOCK so that the open itself never waits; Linux reports
        the FIFO readable only once a writer has come (with data, or gone: EOF).
        """
        deadline = _deadline("read", timeout_s)
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        chunks: list[bytes] = []
        try:
            while True:
                if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    raise TimeoutError(errno.ETIMEDOUT, f"read({self.path}): no EOF within {timeout_s} s")
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Remove the FIFO and its directory (in the creating process only). Idempotent."""
        if self._closed:
            return
        self._closed = True
        # A forked copy leaves the stack alone: the directory is its parent's to remove.
        # (naming.private_dir is a generator, so the copy must also never be garbage
        # collected, which would run its cleanup: children leave through os._exit.)
        if self._is_creator:
            self._stack.close()

    def __repr__(self) -> str:
        return f"Fifo({self.path!r})"


def _deadline(what: str, timeout_s: float) -> float:
    if timeout_s is None or timeout_s < 0:
        raise ValueError(f"Fifo.{what}: timeout_s must be a number >= 0, not {timeout_s!r}")
    return time.monotonic() + timeout_s
