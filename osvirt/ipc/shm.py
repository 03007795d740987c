"""Shared memory: POSIX (shm_open, through posix_ipc), System V (shmget, through sysv_ipc) and memfd.

Once two processes map the same pages, a store by one is a load by the
other: no system call and no copy through the kernel in between. Each class
here creates a new object exclusively, mode 0600, maps it, and on close()
unmaps it and (in the creating process) removes it: the POSIX one is
`/dev/shm/osvirt-<pid>-<random>`, the System V one has key IPC_PRIVATE, the
memfd has no name at all and is gone with its last descriptor and mapping.
Another process reaches them with `open(name)`, `attach(id)` or
`Memfd.open(path)` (path: /proc/<pid>/fd/<fd>).
"""
from __future__ import annotations

import errno
import mmap
import operator
import os
from typing import SupportsIndex

import posix_ipc
import sysv_ipc

from osvirt import naming, tracker
from osvirt.errors import kernel_error
from osvirt._owned import Owned

__all__ = ["PosixSharedMemory", "SysVSharedMemory", "Memfd"]


def _size(facility: str, size_bytes: SupportsIndex) -> int:
    size_bytes = operator.index(size_bytes)
    if size_bytes < 1:
        raise ValueError(f"{facility}: size_bytes must be >= 1, not {size_bytes}")
    return size_bytes


class _Mapped(Owned):
    """An object mapped into this process: `buffer` is a writable memoryview of it."""

    _closed = True  # until __init__ holds the object: what close() and __del__ see on a half-built one
    buffer: memoryview
    size_bytes: int

    def _map(self, fd: int, size_bytes: int) -> None:
        self._mmap = mmap.mmap(fd, size_bytes)  # MAP_SHARED, read-write
        self.buffer = memoryview(self._mmap)
        self.size_bytes = size_bytes

    def _unmap(self) -> None:
        if "buffer" in vars(self):  # __init__ may have failed before mapping
            self.buffer.release()
            self._mmap.close()  # BufferError while a slice of `buffer` is still in use

    def _remove(self) -> None:
        """Remove the object, each kind its own way (the creating process's close)."""
        raise NotImplementedError

    def close(self) -> None:
        """Unmap, and in the creating process remove the object. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._unmap()
        finally:
            if self._is_creator:
                self._remove()


class PosixSharedMemory(_Mapped):
    """A new POSIX shared memory object (shm_open O_CREAT|O_EXCL, 0600), mapped; close() unlinks it."""

    def __init__(self, size_bytes: int) -> None:
        size_bytes = _size("shm_open", size_bytes)
        self._closed = True
        self.name = "/" + naming.unique_name()
        with tracker.tracked("shm", self.name):
            shm = posix_ipc.SharedMemory(self.name, posix_ipc.O_CREX, mode=0o600, size=size_bytes)
        self._creator = os.getpid()
        self._closed = False
        try:
            self._map(shm.fd, size_bytes)
        except BaseException:
            self.close()
            raise
        finally:
            shm.close_fd()

    @classmethod
    def open(cls, name: str) -> PosixSharedMemory:
        """Map the existing object `name` (from another process); close() only unmaps it."""
        self = cls.__new__(cls)
        self._closed = True
        self.name = name
        try:
            shm = posix_ipc.SharedMemory(name)
        except posix_ipc.ExistentialError:  # posix_ipc's word for ENOENT from shm_open
            raise kernel_error(errno.ENOENT, f"shm_open({name})", filename=name) from None
        except posix_ipc.PermissionsError:
            raise kernel_error(errno.EACCES, f"shm_open({name})", filename=name) from None
        try:
            self._map(shm.fd, shm.size)
        finally:
            shm.close_fd()
        self._closed = False
        return self

    @property
    def path(self) -> str:
        return "/dev/shm" + self.name

    def _remove(self) -> None:
        posix_ipc.unlink_shared_memory(self.name)
        tracker.unregister("shm", self.name)

    def __repr__(self) -> str:
        return f"PosixSharedMemory({self.name!r}, {self.size_bytes})"


class SysVSharedMemory(_Mapped):
    """A new System V segment (shmget IPC_PRIVATE, IPC_CREAT|IPC_EXCL|0600), attached; close() removes it."""

    _tracked: str | None = None  # the name osvirt.tracker knows it by, once registered

    def __init__(self, size_bytes: int) -> None:
        size_bytes = _size("shmget", size_bytes)
        self._closed = True
        self._shm, self._tracked = tracker.make_sysv(
            "sysv-shm", lambda: sysv_ipc.SharedMemory(sysv_ipc.IPC_PRIVATE, sysv_ipc.IPC_CREX, mode=0o600,
                                                      size=size_bytes),
            lambda shm: shm.id)
        self.id = self._shm.id
        self._creator = os.getpid()
        self._closed = False
        self._attach_buffer()

    @classmethod
    def attach(cls, shmid: int) -> SysVSharedMemory:
        """Attach the existing segment `shmid` (from another process); close() only detaches it."""
        self = cls.__new__(cls)
        self._closed = True
        shmid = operator.index(shmid)
        try:
            self._shm = sysv_ipc.attach(shmid)
        except ValueError:  # sysv_ipc's word for EINVAL from shmat: no segment with that id
            raise kernel_error(errno.EINVAL, f"shmat({shmid})", "no segment with that id") from None
        except sysv_ipc.ExistentialError:
            raise kernel_error(errno.EIDRM, f"shmat({shmid})", "the segment was removed") from None
        except sysv_ipc.PermissionsError:
            raise kernel_error(errno.EACCES, f"shmat({shmid})") from None
        self.id = self._shm.id
        self._closed = False
        self._attach_buffer()
        return self

    def _attach_buffer(self) -> None:
        self.buffer = memoryview(self._shm)  # the attached segment itself (shmat), no copy
        self.size_bytes = self._shm.size

    def _unmap(self) -> None:
        if "buffer" in vars(self):
            self.buffer.release()
        self._shm.detach()

    def _remove(self) -> None:
        self._shm.remove()
        if self._tracked:
            tracker.unregister("sysv-shm", self._tracked)

    def __repr__(self) -> str:
        return f"SysVSharedMemory(id={self.id}, {self.size_bytes})"


class Memfd(_Mapped):
    """Anonymous memory with a descriptor (memfd_create, MFD_CLOEXEC), sized and mapped.

    It has no name to unlink: it lives while a descriptor or mapping holds it.
    Another process of the same user opens it by `path`; a forked child
    inherits `fd` (closed at exec).
    """

    def __init__(self, size_bytes: int, name: str = "osvirt") -> None:
        size_bytes = _size("memfd_create", size_bytes)
        self._closed = True
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        self._creator = os.getpid()
        self._closed = False
        try:
            os.ftruncate(self.fd, size_bytes)
            self._map(self.fd, size_bytes)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, path: str) -> Memfd:
        """Map a memfd another process holds, by its /proc/<pid>/fd/<fd> path."""
        self = cls.__new__(cls)
        self._closed = True
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._closed = False
        try:
            self._map(self.fd, os.fstat(self.fd).st_size)
        except BaseException:
            self.close()
            raise
        return self

    @property
    def path(self) -> str:
        """/proc/<pid>/fd/<fd>: how another process of this user opens it."""
        return f"/proc/{os.getpid()}/fd/{self.fd}"

    def _unmap(self) -> None:
        fd, self.fd = self.fd, -1
        try:
            super()._unmap()
        finally:
            os.close(fd)

    def _remove(self) -> None:
        pass  # nothing to unlink: the last descriptor and mapping gone, the memory is freed

    def __repr__(self) -> str:
        return f"Memfd({self.path!r}, {getattr(self, 'size_bytes', 0)})"
