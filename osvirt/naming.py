"""Names and private places for the kernel objects osvirt creates.

Every object gets `osvirt-<pid>-<random>`: the pid says which process made it
(so a leak can be traced), the random part makes it unguessable, and the
object is created exclusively (O_EXCL, IPC_CREAT|IPC_EXCL) so a name is never
shared with something that was already there.
"""
import contextlib
import os
import secrets
import shutil
import signal
import tempfile

__all__ = ["PREFIX", "unique_name", "private_dir"]

PREFIX = "osvirt-"


def unique_name(suffix=""):
    """`osvirt-<pid>-<random>[-suffix]`, fit for a file, FIFO or POSIX IPC name."""
    if "/" in suffix or "\0" in suffix:
        raise ValueError(f"unique_name: suffix {suffix!r} may not hold '/' or NUL")
    name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    return f"{name}-{suffix}" if suffix else name


@contextlib.contextmanager
def private_dir(parent=None):
    """A new directory, mode 0700, in `parent` (the temp dir by default), removed with all it holds.

    Only by the process that created it: a forked child holds a copy of this
    context, and its exit (or its garbage collector closing the copy) must not
    remove a directory the parent still uses.
    """
    creator = os.getpid()
    # A Ctrl-C (or kill) while mkdtemp runs would leave the directory made
    # and not yet owned: both signals wait until we are inside the try.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    path = None
    try:
        path = tempfile.mkdtemp(prefix=unique_name() + "-", dir=parent)  # mkdtemp: O_EXCL, 0700
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a pending signal is raised here
        yield path
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # when mkdtemp itself failed
        if path is not None and os.getpid() == creator:
            shutil.rmtree(path, ignore_errors=True)
