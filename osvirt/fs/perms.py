"""Protection: mode bits, the umask, and who the kernel lets in.

A new file's mode is the mode open(2) or mkdir(2) asks for with the
process's umask bits cleared: `new_file_mode(requested, mask)` is that
rule, and a file created under `umask(mask)` shows whether the kernel
followed it. The permission check the kernel makes at open(2) first needs
search (x) permission on every directory of the path, then the file's
owner, group or other bits for the caller's fsuid; CAP_DAC_OVERRIDE (root)
skips both. `drop_to(uid, gid)` makes a process another user so that the
check can be seen refusing.
"""
import contextlib
import os
import stat
from collections.abc import Callable, Iterator

from osvirt.errors import kernel_error
from osvirt.fs.inspect import Path
from osvirt.naming import private_dir

__all__ = ["current_umask", "umask", "new_file_mode", "unsearchable_ancestor", "searchable_dir",
           "drop_to"]


def _mode_bits(value: int, facility: str, what: str) -> int:
    if not isinstance(value, int) or not 0 <= value <= 0o7777:
        raise ValueError(f"{facility}: {what} {value!r} not in 0o0..0o7777")
    return value


def current_umask() -> int:
    """This process's umask, read from /proc/self/status without changing it."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # a kernel without the Umask: line (before 4.7)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def umask(mask: int) -> Iterator[int]:
    """Set the umask for the `with` block (yields the previous one), then restore it."""
    previous = os.umask(_mode_bits(mask, "umask", "mask"))
    try:
        yield previous
    finally:
        os.umask(previous)


def new_file_mode(requested: int, mask: int) -> int:
    """The mode a new file gets: what open(2) asks for, minus the umask's bits."""
    return _mode_bits(requested, "open", "mode") & ~_mode_bits(mask, "umask", "mask")


def unsearchable_ancestor(path: Path) -> str | None:
    """The first directory on `path`'s way from / that "other" may not search (no o+x), or None.

    open(2) as a user who neither owns nor shares a group with those
    directories fails there with EACCES, before the file's own bits count.
    """
    directory = os.path.dirname(os.path.abspath(path))
    chain = []
    while True:
        chain.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for directory in reversed(chain):
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return directory
    return None


@contextlib.contextmanager
def searchable_dir(parent: Path | None = None) -> Iterator[str]:
    """A private directory (osvirt-*, removed after) that every user may search but not list: 0711.

    Under `parent` (default: the temp dir, or /tmp when some directory above
    the temp dir is closed to others), so that another user's open(2) of a
    file inside is decided by the file's own mode bits.
    """
    if parent is None:
        import tempfile  # with shutil and random, for the one call that asks it
        parent = tempfile.gettempdir()
        if unsearchable_ancestor(os.path.join(parent, "x")):
            parent = "/tmp"
    with private_dir(parent) as path:
        os.chmod(path, 0o711)
        yield path


def drop_to(uid: int, gid: int) -> None:
    """Become `uid`:`gid` for good, with no supplementary groups (setgroups, setgid, setuid).

    The order matters: after setuid the process could no longer change its
    groups. Needs CAP_SETGID and CAP_SETUID; meant for a forked child.
    """
    for name, value in (("uid", uid), ("gid", gid)):
        if not isinstance(value, int) or not 0 <= value < 2 ** 32 - 1:
            raise ValueError(f"drop_to: {name} {value!r} not in 0..{2 ** 32 - 2}")
    steps: tuple[tuple[str, Callable[[], None], str], ...] = (
        ("setgroups([])", lambda: os.setgroups([]), "CAP_SETGID"),
        (f"setgid({gid})", lambda: os.setgid(gid), "CAP_SETGID"),
        (f"setuid({uid})", lambda: os.setuid(uid), "CAP_SETUID"))
    for facility, call, cap in steps:
        try:
            call()
        except OSError as e:
            assert e.errno is not None  # set by every failed system call
            raise kernel_error(e.errno, facility, f"needs {cap}") from None
