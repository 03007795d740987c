"""Names and private places for the kernel objects osvirt creates.

Every object gets `osvirt-<pid>-<random>`: the pid says which process made it
(so a leak can be traced), the random part makes it unguessable, and the
object is created exclusively (O_EXCL, IPC_CREAT|IPC_EXCL) so a name is never
shared with something that was already there. osvirt.tracker removes what a
SIGKILLed owner leaves, and only what is named so.
"""
import contextlib
import os
import signal
from collections.abc import Iterator
from typing import BinaryIO

from osvirt import tracker

__all__ = ["PREFIX", "unique_name", "private_dir", "replacing"]

PREFIX = "osvirt-"


def unique_name(suffix: str = "") -> str:
    """`osvirt-<pid>-<random>[-suffix]`, fit for a file, FIFO or POSIX IPC name."""
    if "/" in suffix or "\0" in suffix:
        raise ValueError(f"unique_name: suffix {suffix!r} may not hold '/' or NUL")
    name = f"{PREFIX}{os.getpid()}-{os.urandom(4).hex()}"  # secrets.token_hex(4), without importing hashlib
    return f"{name}-{suffix}" if suffix else name


@contextlib.contextmanager
def private_dir(parent: str | os.PathLike[str] | None = None) -> Iterator[str]:
    """A new directory, mode 0700, in `parent` (the temp dir by default), removed with all it holds.

    `parent` must be a temp directory (or an osvirt directory in one): the
    directory is registered with osvirt.tracker, which removes it should this
    process (and every child it forked) be SIGKILLed first.

    Only by the process that created it: a forked child holds a copy of this
    context, and its exit (or its garbage collector closing the copy) must not
    remove a directory the parent still uses.
    """
    import shutil  # imported by the calls that use them: with random, bz2 and lzma they
    import tempfile  # cost more than the rest of osvirt.naming's import
    creator = os.getpid()
    path = os.path.join(os.path.abspath(tempfile.gettempdir() if parent is None else parent), unique_name())
    tracker.register("dir", path)  # before mkdir: no moment in which it exists untracked
    # A Ctrl-C (or kill) right after mkdir would leave the directory made and
    # not yet owned: both signals wait until we are inside the try.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    made = False
    try:
        os.mkdir(path, 0o700)  # EEXIST rather than reuse a path
        made = True
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a pending signal is raised here
        yield path
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # when mkdir itself failed
        if os.getpid() == creator:
            if made:
                shutil.rmtree(path, ignore_errors=True)
            tracker.unregister("dir", path)


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A file open for writing `path`'s new contents: renamed over `path` when the block ends, so that a
    reader sees the old file or the whole new one, never half of it.

    It is written at `.NAME.osvirt-<pid>-<random>` beside `path` (the rename cannot cross file systems),
    registered with osvirt.tracker before it exists: removed if the block fails, and by the tracker should
    this process be SIGKILLed first.
    """
    path = os.path.abspath(path)
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f".{name}.{unique_name()}")
    creator = os.getpid()
    tracker.register("file", tmp)  # before the open: no moment in which it exists untracked
    made = False
    try:
        with open(tmp, "xb") as f:  # O_EXCL: never a file that was there
            made = True
            yield f
        os.replace(tmp, path)
        made = False
    finally:
        if os.getpid() == creator:
            if made:
                os.unlink(tmp)
            tracker.unregister("file", tmp)
