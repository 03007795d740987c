"""Pipes: capacity, PIPE_BUF, and what concurrent writers can expect.

POSIX promises that a write of at most PIPE_BUF bytes to a pipe is atomic:
its bytes are never mixed with another writer's. Larger writes have no such
promise: a writer that finds the pipe full sleeps halfway, and another writer
may go in first. The capacity (65536 bytes by default on Linux, 16 pages) is
what a pipe holds before a writer blocks; F_SETPIPE_SZ changes it, up to
/proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE.
"""
import errno
import fcntl
import os
import select
import struct
from typing import NamedTuple

from osvirt.descriptors import HasFileno, fd_number
from osvirt.errors import kernel_error
from osvirt._owned import Owned
from osvirt.process.spawn import Children

__all__ = ["PIPE_BUF", "Pipe", "get_pipe_size", "set_pipe_size", "pipe_max_size", "fill",
           "ConcurrentWrites", "concurrent_writes"]

PIPE_BUF = select.PIPE_BUF  # <limits.h>'s PIPE_BUF: the atomic write size (4096 on Linux)

_PIPE_MAX_SIZE = "/proc/sys/fs/pipe-max-size"
_INT_MAX = 2**31 - 1


class Pipe(Owned):
    """A pipe(2) (O_CLOEXEC) that closes both ends on close()."""

    read_fd = write_fd = -1  # until pipe2 succeeds

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)

    def close_read(self) -> None:
        fd, self.read_fd = self.read_fd, -1  # -1 first: the number may be reused at once
        if fd >= 0:
            os.close(fd)

    def close_write(self) -> None:
        fd, self.write_fd = self.write_fd, -1
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        """Close both ends still open. Idempotent."""
        try:
            self.close_read()
        finally:
            self.close_write()

    def __repr__(self) -> str:
        return f"Pipe(read_fd={self.read_fd}, write_fd={self.write_fd})"


def get_pipe_size(fd: int | HasFileno) -> int:
    """The capacity of the pipe or FIFO open on `fd`, in bytes (fcntl F_GETPIPE_SZ)."""
    fd = fd_number(fd, "fcntl(F_GETPIPE_SZ)")
    try:
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    except OSError as e:
        assert e.errno is not None  # set by every failed system call
        raise kernel_error(e.errno, f"fcntl({fd}, F_GETPIPE_SZ)", "not a pipe" if e.errno == errno.EBADF else None) from None


def pipe_max_size() -> int:
    """/proc/sys/fs/pipe-max-size: the most F_SETPIPE_SZ grants without CAP_SYS_RESOURCE."""
    with open(_PIPE_MAX_SIZE) as f:
        return int(f.read())


def set_pipe_size(fd: int | HasFileno, size_bytes: int) -> int:
    """Ask for a capacity of at least `size_bytes`; returns what the kernel set (a power-of-two number of pages)."""
    fd = fd_number(fd, "fcntl(F_SETPIPE_SZ)")
    if not isinstance(size_bytes, int) or not 1 <= size_bytes <= _INT_MAX:
        raise ValueError(f"fcntl(F_SETPIPE_SZ): size_bytes must be an int in 1..{_INT_MAX}, not {size_bytes!r}")
    try:
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size_bytes)
    except OSError as e:
        assert e.errno is not None
        hint = {errno.EPERM: f"above {_PIPE_MAX_SIZE} ({pipe_max_size()}) needs CAP_SYS_RESOURCE",
                errno.EBUSY: "the pipe holds more than the new size"}.get(e.errno)
        raise kernel_error(e.errno, f"fcntl({fd}, F_SETPIPE_SZ, {size_bytes})", hint) from None


def fill(write_fd: int | HasFileno) -> int:
    """Write to the pipe until it is full (EAGAIN); returns the bytes it took, its measured capacity.

    The descriptor is made non-blocking for the fill and restored after.
    """
    write_fd = fd_number(write_fd, "fill")
    was_blocking = os.get_blocking(write_fd)
    os.set_blocking(write_fd, False)
    chunk = bytes(PIPE_BUF)  # one page: each write fills one pipe buffer slot exactly
    total = 0
    try:
        while True:
            try:
                total += os.write(write_fd, chunk)
            except BlockingIOError:
                break
    finally:
        os.set_blocking(write_fd, was_blocking)
    return total


class ConcurrentWrites(NamedTuple):
    """What the reader of concurrent writers found: records read, records
    whose bytes were mixed with another writer's (torn), and intact records
    that came out of their writer's order."""
    records: int
    torn: int
    out_of_order: int

_HEADER = struct.Struct("<HI")  # writer number, sequence number


def _record(writer: int, seq: int, record_bytes: int) -> bytes:
    header = _HEADER.pack(writer, seq)
    return header + bytes([0x41 + writer % 64]) * (record_bytes - len(header))


def _write_records(write_fd: int, writer: int, records: int, record_bytes: int) -> None:
    for seq in range(records):
        view = memoryview(_record(writer, seq, record_bytes))
        while view:  # a blocking write is whole unless a signal cuts it short
            view = view[os.write(write_fd, view):]


def concurrent_writes(children: Children, writers: int, records: int, record_bytes: int) -> ConcurrentWrites:
    """`writers` children (forked by `children`, an osvirt.process.Children) each write
    `records` records of `record_bytes` bytes, one write(2) each, into one pipe;
    this process reads them all and checks every record.

    A record is a header (writer, sequence) and a fill byte that names its
    writer, so a record mixed with another writer's bytes shows.
    """
    for name, value in (("writers", writers), ("records", records), ("record_bytes", record_bytes)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"concurrent_writes: {name} must be an int >= 1, not {value!r}")
    if writers > 64 or record_bytes < _HEADER.size:
        raise ValueError(f"concurrent_writes: needs writers <= 64 and record_bytes >= {_HEADER.size}")
    expected_total = writers * records * record_bytes
    data = bytearray(expected_total)
    with Pipe() as pipe:
        pids = [children.fork(_write_records, pipe.write_fd, w, records, record_bytes) for w in range(writers)]
        pipe.close_write()  # the children hold the only write ends now: EOF when they are done
        view, got = memoryview(data), 0
        while got < expected_total:
            n = os.readv(pipe.read_fd, [view[got:]])
            if n == 0:
                break
            got += n
    codes = [children.wait(pid) for pid in pids]
    if got != expected_total or any(codes):
        raise RuntimeError(f"concurrent_writes: read {got} of {expected_total} bytes; writers exited {codes}")
    torn = out_of_order = 0
    next_seq = [0] * writers
    for offset in range(0, expected_total, record_bytes):
        record = data[offset:offset + record_bytes]
        writer, seq = _HEADER.unpack_from(record)
        if writer >= writers or record != _record(writer, seq, record_bytes):
            torn += 1
            continue
        if seq != next_seq[writer]:
            out_of_order += 1
        next_seq[writer] = seq + 1
    return ConcurrentWrites(expected_total // record_bytes, torn, out_of_order)
