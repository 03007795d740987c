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
    """durable_write's system calls, bare: the target's mode read, an unnamed inode
    (O_TMPFILE) given it, written and fsynced, linked beside the target through
    /proc/self/fd and renamed over it, the directory fsynced."""
    with private_dir(tempfile.gettempdir()) as directory:
        target, block = os.path.join(directory, "target"), bytes(BLOCK)
        unnamed = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC

        def write_link_rename_fsync() -> None:
            try:
                mode = os.stat(target).st_mode & 0o7777
            except FileNotFoundError:  # the first call only
                mode = 0o600
            fd = os.open(directory, unnamed, 0o600)
            try:
                os.fchmod(fd, mode)
                os.write(fd, block)
                os.fsync(fd)
                dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    # a dir fd: Python 3.11's os.link calls linkat(AT_SYMLINK_FOLLOW) only with one
                    os.link(f"/proc/self/fd/{fd}", "tmp", dst_dir_fd=dfd)
                    os.rename("tmp", "target", src_dir_fd=dfd, dst_dir_fd=dfd)
                    closing, fd = fd, -1
                    os.close(closing)
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            finally:
                if fd >= 0:
                    os.close(fd)
        yield write_link_rename_fsync


@rig
def _durable_write_c() -> Iterator[tuple[str, str, str, bytes]]:
    with private_dir(tempfile.gettempdir()) as directory:
        yield directory, os.path.join(directory, "target"), unique_name("tmp"), bytes(BLOCK)


PRIMITIVES = [
    Primitive("fsync-4k", "os.pwrite of 4 KiB at offset 0, then os.fsync, in the temp directory",
              python=_pwrite_fsync_python, c="pwrite_fsync", c_args=_pwrite_fsync_c,
              bytes_per_op=BLOCK),
    Primitive("durable-write", "osvirt.fs.durable_write of 4 KiB: an unnamed inode (O_TMPFILE) written and "
                               "fsynced, linked beside the target and renamed over it, the directory fsynced",
              python=_durable_write_python, c="durable_write", c_args=_durable_write_c,
              floor=("os.stat, open(O_TMPFILE), fchmod, write, fsync, link, rename, directory fsync",
                     _durable_write_bare),
              bytes_per_op=BLOCK,
              note="two fsyncs (the file's data, then the directory's rename), which make the row and "
                   "its noise (a batch's ms move with the disk); all three read the target's mode "
                   "(stat), open an unnamed inode (O_TMPFILE), fchmod, write and fsync it, linkat it "
                   "through /proc/self/fd, renameat it over the target and fsync the directory: the "
                   "same system calls (strace -c -f) but durable_write's five more: getpid twice and "
                   "getrandom for its temp name, and the two lines to osvirt.tracker's pipe that "
                   "register that name before it can exist and unregister it after the rename (the "
                   "tracker reads them in batches: they wake nobody). On ext4 here the disk's noise "
                   "outweighs the difference (three runs: durable_write 1.14-1.41 ms, the floor "
                   "1.03-1.22, C 0.92-1.15); on tmpfs, where fsync costs nothing, 94-98 us against "
                   "50-54 and 38-39: ~25-30 us are the tracker's two lines (durable_write timed with "
                   "register and unregister made no-ops), ~20 us Python (its steps, the name, the paths)"),
]
