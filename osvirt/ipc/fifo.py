"""Named pipes (FIFOs): a pipe that unrelated processes find by its path.

A FIFO is one byte stream, like a pipe: whatever any process writes, any
reader may read, the writer included. It is not full duplex: two processes
that want to talk both ways need two FIFOs, one per direction.

Run as a program (`python -m osvirt.ipc.fifo REQUEST REPLY`) it is an echo
peer for two-way talk over two FIFOs: it reads one line from REQUEST and
writes `<its pid> <the line>` to REPLY.
"""
import contextlib
import os
import stat
import sys

from osvirt import naming
from osvirt.ipc._owned import Owned

__all__ = ["Fifo", "echo"]


class Fifo(Owned):
    """A FIFO, mode 0600, in a new private directory (mode 0700); close() removes both.

    mkfifo fails with EEXIST rather than reuse a path, and the directory is
    new and private, so no other user can have put anything there first.
    """

    def __init__(self, name="fifo", parent=None):
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
    def mode(self):
        """The FIFO's permission bits as the kernel reports them (stat)."""
        return stat.S_IMODE(os.stat(self.path).st_mode)

    def close(self):
        """Remove the FIFO and its directory (in the creating process only). Idempotent."""
        if self._closed:
            return
        self._closed = True
        # A forked copy leaves the stack alone: the directory is its parent's to remove.
        # (naming.private_dir is a generator, so the copy must also never be garbage
        # collected, which would run its cleanup: children leave through os._exit.)
        if self._is_creator:
            self._stack.close()

    def __repr__(self):
        return f"Fifo({self.path!r})"


def echo(request_path, reply_path):
    """Read one line from the FIFO `request_path`, write `<pid> <line>` to the FIFO `reply_path`."""
    with open(request_path, "rb") as request:
        line = request.readline()
    with open(reply_path, "wb") as reply:
        reply.write(b"%d %s" % (os.getpid(), line))


if __name__ == "__main__":
    echo(*sys.argv[1:3])
