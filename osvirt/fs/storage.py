"""Storing a file: the fd table, offsets, durable replacement, space, copies.

`fd_table()` reads the process's open files the way the kernel lists them:
/proc/self/fd/N links to each target and /proc/self/fdinfo/N holds the open
file description's offset and flags. `pread`/`pwrite` move no offset.
`durable_write` replaces a file so that a crash at any moment leaves either
the old content or the new, never a mix, and a writer killed at any moment
leaves nothing else behind: the new bytes go to an unnamed inode in the same
directory (open(2) O_TMPFILE), are fsynced, given a name there by linkat(2)
through /proc/self/fd, renamed over the target (rename(2) is atomic within a
filesystem), and the directory is fsynced so the rename itself is on disk.
`durable_write_steps` is the same, one step at a time, so a test can kill
the writer between any two of them.
"""
import errno
import os
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from osvirt import tracker
from osvirt.errors import kernel_error
from osvirt.fs import _native
from osvirt.fs.inspect import Path, data_ranges
from osvirt.naming import unique_name

# No `from __future__ import annotations`: FdEntry's fields would be strings, and typing
# compiles each (the process's first compile() costs ~1.5 ms). Buffer is quoted instead.
if TYPE_CHECKING:  # typing_extensions is mypy's; collections.abc.Buffer is Python 3.12's
    from typing_extensions import Buffer

__all__ = ["FdEntry", "fd_table", "fd_entry", "open_flag_names", "pread", "pwrite",
           "durable_write", "durable_write_steps", "fallocate", "punch_hole",
           "copy_file_range", "copy_sparse"]

class FdEntry(NamedTuple):
    """One entry of the fd table: /proc/<pid>/fd/N's target, and from
    fdinfo the open file description's offset (`pos`), open flags and inode."""
    fd: int
    target: str
    pos: int
    flags: int
    flag_names: str
    inode: int  # -1: fdinfo has no ino line (older kernels)

_ACCESS = {os.O_RDONLY: "O_RDONLY", os.O_WRONLY: "O_WRONLY", os.O_RDWR: "O_RDWR"}
# Multi-bit flags before the bits they hold: O_TMPFILE is __O_TMPFILE | O_DIRECTORY, O_SYNC
# is __O_SYNC | O_DSYNC (each bit is taken off once named).
_FLAG_BITS = [(getattr(os, n), n) for n in (
    "O_APPEND", "O_CLOEXEC", "O_NONBLOCK", "O_SYNC", "O_DSYNC", "O_DIRECT", "O_NOATIME",
    "O_TMPFILE", "O_DIRECTORY", "O_NOFOLLOW", "O_PATH", "O_CREAT", "O_EXCL", "O_TRUNC")
    if getattr(os, n, 0)]


def open_flag_names(flags: int) -> str:
    """'O_RDWR|O_APPEND|...' for an fdinfo flags word; bits without a name stay octal.

    On 64-bit Linux the kernel sets O_LARGEFILE on every open; glibc defines
    it as 0, so it shows as a bare octal bit.
    """
    names = [_ACCESS.get(flags & os.O_ACCMODE, f"access {flags & os.O_ACCMODE}")]
    rest = flags & ~os.O_ACCMODE
    for bit, name in _FLAG_BITS:
        if rest & bit == bit:
            names.append(name)
            rest &= ~bit
    if rest:
        names.append(oct(rest))
    return "|".join(names)


def fd_entry(fd: int, pid: int | str = "self") -> FdEntry:
    """One fd of process `pid` as /proc/<pid>/fd and fdinfo show it."""
    if not isinstance(fd, int) or fd < 0:
        raise ValueError(f"/proc/{pid}/fdinfo: fd must be an int >= 0, not {fd!r}")
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            info = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError as e:
        assert e.errno is not None  # set by every failed system call
        raise kernel_error(e.errno, f"/proc/{pid}/fdinfo", f"fd {fd} not open" if e.errno == errno.ENOENT else None) from None
    flags = int(info["flags"], 8)
    return FdEntry(fd, target, int(info["pos"]), flags, open_flag_names(flags), int(info.get("ino", -1)))


def fd_table(pid: int | str = "self") -> list[FdEntry]:
    """Every open fd of process `pid`, in fd order."""
    entries = []
    for name in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            entries.append(fd_entry(int(name), pid))
        except FileNotFoundError:  # the listing's own directory fd, closed since
            continue
    return entries


def _offset(offset: int, facility: str) -> int:
    if not isinstance(offset, int) or not 0 <= offset <= _native.OFF_MAX:
        raise ValueError(f"{facility}: offset {offset!r} not in 0..{_native.OFF_MAX}")
    return offset


def pread(fd: int, length: int, offset: int) -> bytes:
    """Read `length` bytes at `offset` (fewer only at end of file); the fd's offset stays."""
    _offset(offset, "pread")
    if not isinstance(length, int) or length < 0:
        raise ValueError(f"pread: length {length!r} must be an int >= 0")
    chunks, done = [], 0
    while done < length:
        chunk = os.pread(fd, length - done, offset + done)
        if not chunk:
            break
        chunks.append(chunk)
        done += len(chunk)
    return b"".join(chunks)


def pwrite(fd: int, data: "Buffer", offset: int) -> int:
    """Write all of `data` at `offset`, looping over short writes; the fd's offset stays."""
    _offset(offset, "pwrite")
    view, done = memoryview(data).cast("B"), 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
    return done


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


_FD_DIR = "/proc/self/fd"  # its N links to fd N's file, named or not: what linkat follows to name it
# What open(O_TMPFILE) fails with where it is not supported: a filesystem without it
# (EOPNOTSUPP), a kernel before 3.11 (EISDIR: it saw O_DIRECTORY | O_WRONLY), some (EINVAL).
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL)
_NAME_MAX = 255  # bytes in one path component (ext4, tmpfs, xfs, btrfs)


def _temp_name(name: str) -> str:
    """`.NAME.osvirt-<pid>-<random>`: what osvirt.tracker takes for a file written before a rename,
    NAME cut to keep the whole within NAME_MAX."""
    suffix = "." + unique_name()
    stem = name
    while len(os.fsencode(stem)) > _NAME_MAX - 1 - len(suffix):
        stem = stem[:-1]
    return f".{stem}{suffix}"


def _open_named(temp: str, path: Path) -> int:
    try:
        return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        assert e.errno is not None
        raise kernel_error(e.errno, "durable_write: open temp file in the target's directory",
                           filename=path) from None


def durable_write_steps(path: Path, data: "Buffer", mode: int | None = None,
                        chunk_bytes: int = 1 << 20) -> Iterator[str]:
    """Replace `path` with `data` durably, yielding after each step (its name).

    Steps: "open temp" (an unnamed inode in the target's directory, open(2)
    O_TMPFILE), "write" (once per chunk of `chunk_bytes`), "fsync temp",
    "rename" (linkat(2) of /proc/self/fd/N to `.NAME.osvirt-<pid>-<random>`
    beside the target, then rename(2) over it), "fsync directory". The file
    keeps the mode of the file it replaces, or gets `mode` (default 0o600)
    when new.

    Nothing is left behind: a writer killed before the rename leaves an inode
    with no name, which the kernel frees; the name, which exists from the
    linkat to the rename, is registered with osvirt.tracker beforehand, which
    removes it should the writer be SIGKILLed between the two. Where the filesystem or
    kernel has no O_TMPFILE, or /proc is not mounted, the temp file is named
    from the start, registered the same way, and removed if the generator
    fails or is closed before the rename, or by the tracker after a SIGKILL.
    """
    view = memoryview(data).cast("B")
    if not isinstance(chunk_bytes, int) or chunk_bytes < 1:
        raise ValueError(f"durable_write: chunk_bytes must be an int >= 1, not {chunk_bytes!r}")
    directory, name = os.path.split(os.path.abspath(path))
    if not name:
        raise IsADirectoryError(errno.EISDIR, "durable_write: / is a directory, not a file to replace", path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o600 if mode is None else mode
    except OSError as e:
        assert e.errno is not None
        raise kernel_error(e.errno, "durable_write: stat", filename=path) from None
    temp_name = _temp_name(name)
    temp = os.path.join(directory, temp_name)
    creator = os.getpid()
    # Registered before any name can exist, for both ways: a SIGKILL at any moment leaves the
    # tracker a name to remove (or nothing there, which it passes over).
    tracker.register("file", temp)
    registered, fd, dir_fd = True, -1, -1
    named = replaced = False  # named: the temp name may exist (set before the call that makes it)
    try:
        try:
            fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except OSError as e:
            assert e.errno is not None
            if e.errno not in _NO_TMPFILE:
                raise kernel_error(e.errno, "durable_write: open temp file in the target's directory",
                                   filename=path) from None
            named = True
            fd = _open_named(temp, path)
        os.fchmod(fd, mode)  # the umask does not apply to fchmod
        yield "open temp"
        for start in range(0, len(view), chunk_bytes):
            _write_all(fd, view[start:start + chunk_bytes])
            yield "write"
        os.fsync(fd)
        yield "fsync temp"
        # One directory fd for the link, the rename and the fsync. It also makes
        # os.link call linkat(AT_SYMLINK_FOLLOW): without a dir fd Python 3.11's
        # calls link(2), which does not follow /proc/self/fd/N (EXDEV).
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if not named:
            named = True
            try:
                os.link(f"{_FD_DIR}/{fd}", temp_name, dst_dir_fd=dir_fd)
            except FileNotFoundError:  # no /proc/self/fd here: write a named temp file after all
                unnamed, fd = fd, -1
                os.close(unnamed)
                fd = _open_named(temp, path)
                os.fchmod(fd, mode)
                _write_all(fd, view)
                os.fsync(fd)
        try:
            os.rename(temp_name, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # right after the link
        except OSError as e:  # EISDIR: the target is a directory; EBUSY: a mount point
            assert e.errno is not None
            raise kernel_error(e.errno, "durable_write: rename over the target", filename=path) from None
        replaced = True
        written, fd = fd, -1  # -1 first: the number may be reused at once
        os.close(written)
        registered = False
        tracker.unregister("file", temp)
        yield "rename"
        os.fsync(dir_fd)  # the rename is a change to the directory: make it durable too
        yield "fsync directory"
    finally:
        for opened in (fd, dir_fd):
            if opened >= 0:
                os.close(opened)
        # A forked child's copy of this generator removes nothing (nor asks a getpid when done).
        if (registered or named and not replaced) and os.getpid() == creator:
            if named and not replaced:
                try:
                    os.unlink(temp)
                except FileNotFoundError:
                    pass
            if registered:
                tracker.unregister("file", temp)


def durable_write(path: Path, data: "Buffer", mode: int | None = None) -> None:
    """Replace `path` with `data` so that a crash leaves the old or the new content, never a mix."""
    for _ in durable_write_steps(path, data, mode):
        pass


def _range(offset: int, length: int, facility: str) -> None:
    _offset(offset, facility)
    if not isinstance(length, int) or not 1 <= length <= _native.OFF_MAX - offset:
        raise ValueError(f"{facility}: length {length!r} must be >= 1 and end by {_native.OFF_MAX}")


def fallocate(fd: int, offset: int, length: int, keep_size: bool = False) -> None:
    """fallocate(2): reserve blocks for [offset, offset+length) (zeros where there was a hole).

    With keep_size the file's size stays (the blocks lie past its end).
    """
    _range(offset, length, "fallocate")
    _native.fallocate(fd, _native.FALLOC_FL_KEEP_SIZE if keep_size else 0, offset, length)


def punch_hole(fd: int, offset: int, length: int) -> None:
    """fallocate(FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE): free the blocks, leave zeros and the size."""
    _range(offset, length, "fallocate(PUNCH_HOLE)")
    _native.fallocate(fd, _native.FALLOC_FL_PUNCH_HOLE | _native.FALLOC_FL_KEEP_SIZE, offset, length)


def copy_file_range(src_fd: int, dst_fd: int, length: int | None = None, src_offset: int = 0,
                    dst_offset: int = 0) -> int:
    """Copy `length` bytes (default: to the source's end) inside the kernel; returns bytes copied.

    Neither fd's offset moves. The kernel may copy by reflink (btrfs, xfs)
    or by splicing the data (ext4, tmpfs), which reads a hole as zeros and
    writes them: the copy of a sparse file is then not sparse.
    """
    _offset(src_offset, "copy_file_range")
    _offset(dst_offset, "copy_file_range")
    if length is None:
        length = max(0, os.fstat(src_fd).st_size - src_offset)
    elif not isinstance(length, int) or length < 0:
        raise ValueError(f"copy_file_range: length {length!r} must be an int >= 0")
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(src_fd, dst_fd, length - done, src_offset + done, dst_offset + done)
        except OSError as e:
            assert e.errno is not None
            raise kernel_error(e.errno, f"copy_file_range(fd {src_fd} -> fd {dst_fd})") from None
        if n == 0:  # end of the source
            break
        done += n
    return done


def copy_sparse(src_fd: int, dst_fd: int) -> int:
    """Copy a file keeping its holes: copy_file_range of each SEEK_DATA range, then ftruncate.

    Returns the bytes of data copied (less than the size by the holes).
    """
    copied = sum(copy_file_range(src_fd, dst_fd, end - start, start, start)
                 for start, end in data_ranges(src_fd))
    os.ftruncate(dst_fd, os.fstat(src_fd).st_size)  # a trailing hole: size without blocks
    return copied
