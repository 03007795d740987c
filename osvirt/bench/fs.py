"""File-system primitives: durable 4 KiB writes (osvirt.fs)."""
import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator

from osvirt.bench.harness import Primitive, rig
from osvirt.fs import durable_write
from osvirt.naming import private_dir, unique_name

__all__ = ["PRIMITIVES"]

BLOCK = 4096


@contextlib.contextmanager
def _scratch_file() -> Iterator[int]:
    """An exclusive 0600 file in the temp directory (its filesystem decides
    what fsync costs), removed afterwards; yields its fd."""
    path = os.path.join(tempfile.gettempdir(), unique_name("bench"))
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.unlink(path)  # the open fd keeps the file; nothing is left if we die
        yield fd
    finally:
        os.close(fd)


@rig
def _pwrite_fsync_python() -> Iterator[Callable[[], None]]:
    with _scratch_file() as fd:
        block = bytes(BLOCK)

        def pwrite_fsync() -> None:
            os.pwrite(fd, block, 0)
            os.fsync(fd)
        yield pwrite_fsync


@rig
def _pwrite_fsync_c() -> Iterator[tuple[int, bytes]]:
    with _scratch_file() as fd:
        yield fd, bytes(BLOCK)


@rig
def _durable_write_python() -> Iterator[Callable[[], None]]:
    with private_dir(tempfile.gettempdir()) as directory:
        path, block = os.path.join(directory, "target"), bytes(BLOCK)
        yield lambda: durable_write(path, block)


@rig
def _durable_write_bare() -> Iterator[Callable[[], None]]:
    """durable_write's system calls, bare: the target's mode read, the temp file
    given it, written and fsynced, renamed over the target, the directory fsynced."""
    with private_dir(tempfile.gettempdir()) as directory:
        target, temp, block = os.path.join(directory, "target"), os.path.join(directory, "tmp"), bytes(BLOCK)
        create = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC

        def write_rename_fsync() -> None:
            try:
                mode = os.stat(target).st_mode & 0o7777
            except FileNotFoundError:  # the first call only
                mode = 0o600
            fd = os.open(temp, create, 0o600)
            try:
                os.fchmod(fd, mode)
                os.write(fd, block)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, target)
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        yield write_rename_fsync


@rig
def _durable_write_c() -> Iterator[tuple[str, str, str, bytes]]:
    with private_dir(tempfile.gettempdir()) as directory:
        yield (directory, os.path.join(directory, "target"), os.path.join(directory, unique_name("tmp")),
               bytes(BLOCK))


PRIMITIVES = [
    Primitive("fsync-4k", "os.pwrite of 4 KiB at offset 0, then os.fsync, in the temp directory",
              python=_pwrite_fsync_python, c="pwrite_fsync", c_args=_pwrite_fsync_c,
              bytes_per_op=BLOCK),
    Primitive("durable-write", "osvirt.fs.durable_write of 4 KiB: temp file written and fsynced, "
                               "renamed over the target, the directory fsynced",
              python=_durable_write_python, c="durable_write", c_args=_durable_write_c,
              floor=("os.stat, open, fchmod, write, fsync, rename, directory fsync", _durable_write_bare),
              bytes_per_op=BLOCK,
              note="two fsyncs (the file's data, then the directory's rename), which make the row and "
                   "its noise (a batch's ms move with the disk); all three read the target's mode and "
                   "give it to the temp file (stat, fchmod), and make the same system calls but two "
                   "(strace -c): durable_write's getpid and getrandom for its unique temp name (1.6 us "
                   "with the name made). On tmpfs, where fsync costs nothing, durable_write costs 55-59 "
                   "us against the floor's 37-40: ~15-20 us of Python (its steps, the name, the paths), "
                   "1.5-2% of a write to ext4 here"),
]
