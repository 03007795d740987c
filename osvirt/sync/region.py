"""Shared memory that every osvirt.sync object lives in.

A `SharedRegion` is a MAP_SHARED mapping, either anonymous (`mmap(-1, n)`
is MAP_SHARED|MAP_ANONYMOUS: a forked child inherits it, nobody else can
reach it) or a named POSIX shared memory object, `/dev/shm/osvirt-<pid>-<random>`,
that an unrelated process maps with `SharedRegion.open(name)`.

The payload comes first, at the page-aligned start of the mapping, so the
pointer C gets is a buffer export of the mmap itself. A 64-byte header
follows the payload (rounded up to 64 bytes): a magic word, the kind of
object the region holds (so opening a mutex's name as a barrier is a
ValueError, not a corrupted futex), the creator's pid and one integer of
metadata. The creator writes the magic last, so an opener never sees a
half-initialised object.

Only the creator destroys: its `close()` runs the object's destroy call
(pthread_mutex_destroy, ...) and unlinks the name; in a forked child or
another process `close()` only unmaps. The pointers C receives own a
reference to the mapping (cffi's from_buffer), so the munmap happens when
the last of them goes: a call still blocked in another thread when close()
runs never touches unmapped memory, and a call made after close() raises
ValueError before reaching C.
"""
from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Callable
from typing import Any, TypeVar

import posix_ipc

from osvirt import tracker
from osvirt._owned import Owned
from osvirt.naming import unique_name
from osvirt.sync import _native

__all__ = ["SharedRegion", "SharedObject"]


_MAGIC = b"osvsync1"
_HEADER = struct.Struct("=8s8sqq")  # magic, kind, creator pid, metadata
HEADER_BYTES = 64
_KEPT_MAPPED: list[mmap.mmap] = []  # mappings close() may not unmap (see SharedRegion.close)


def _kind(kind: str) -> bytes:
    if not isinstance(kind, str) or not kind.isascii() or not 0 < len(kind) <= 8:
        raise ValueError(f"SharedRegion: kind must be 1-8 ASCII characters, not {kind!r}")
    return kind.encode().ljust(8, b"\0")


class SharedRegion(Owned):
    """`size_bytes` (rounded up to a multiple of 64) of shared memory; anonymous, or named when `named=True`.

    `with SharedRegion(n) as region:` closes it at the end.

    >>> with SharedRegion(16) as region:
    ...     counters = region.view("q")
    ...     counters[0] = 41
    ...     counters[0] + 1
    42
    """

    def __init__(self, size_bytes: int, *, named: bool = False, kind: str = "data", metadata: int = 0,
                 ready: bool = True) -> None:
        """`ready=False` leaves it unpublished until `publish()` (an object still to be initialised)."""
        if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes <= 0:
            raise ValueError(f"SharedRegion: size_bytes must be a positive int, not {size_bytes!r}")
        kind_bytes = _kind(kind)
        self._mm: mmap.mmap | None = None
        self._name: str | None = None
        self._views: list[memoryview] = []
        self._header = -(-size_bytes // HEADER_BYTES) * HEADER_BYTES
        total = self._header + HEADER_BYTES
        if named:
            name = "/" + unique_name("sync")
            with tracker.tracked("shm", name):
                shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=total)
            try:
                self._mm = _map(shm, total)
            except BaseException:
                shm.unlink()
                tracker.unregister("shm", name)
                raise
            self._name = name
        else:
            self._mm = mmap.mmap(-1, total)  # MAP_SHARED | MAP_ANONYMOUS
        self._size_bytes = self._header  # rounded up: what an opener sees too
        self._creator = self._creator_pid = os.getpid()
        _HEADER.pack_into(self._mm, self._header, bytes(8), kind_bytes, self._creator_pid, metadata)
        if ready:
            self.publish()

    def publish(self) -> None:
        """Mark the object initialised (the creator calls it last): openers may use it from now on."""
        self._mapping()[self._header:self._header + 8] = _MAGIC

    @classmethod
    def open(cls, name: str, kind: str = "data") -> "SharedRegion":
        """Map the named region another process created; ValueError unless it holds `kind`."""
        if not isinstance(name, str) or not name.startswith("/") or "/" in name[1:] or len(name) < 2:
            raise ValueError(f"shm_open: name must look like '/osvirt-...', not {name!r}")
        kind_bytes = _kind(kind)
        shm = posix_ipc.SharedMemory(name)  # ExistentialError when there is no such object
        size = shm.size
        if size < 2 * HEADER_BYTES or size % HEADER_BYTES:
            shm.close_fd()
            raise ValueError(f"shm_open({name}): {size} bytes, not the size of an osvirt.sync object")
        mm = _map(shm, size)
        header = size - HEADER_BYTES
        magic, found, creator, _ = _HEADER.unpack_from(mm, header)
        if magic != _MAGIC or found != kind_bytes:
            mm.close()
            what = found.rstrip(b"\0").decode(errors="replace") if magic == _MAGIC else "nothing initialised"
            raise ValueError(f"shm_open({name}): holds {what!r}, not an osvirt.sync {kind!r}")
        self = cls.__new__(cls)
        self._mm, self._name, self._views, self._header = mm, name, [], header
        self._size_bytes = header
        self._creator_pid = creator  # _creator stays None, even in the creator's own process: that instance destroys
        return self

    # -- what it is ----------------------------------------------------------
    @property
    def name(self) -> str | None:
        """The POSIX shared memory name (`/osvirt-...`), or None for an anonymous mapping."""
        return self._name

    @property
    def where(self) -> str:
        """Where the object lives, for people: its /dev/shm path, or the anonymous mapping."""
        if self._name:
            return f"/dev/shm{self._name} (named POSIX shared memory)"
        return "an anonymous shared mapping (MAP_SHARED|MAP_ANONYMOUS, inherited across fork)"

    @property
    def size_bytes(self) -> int:
        return self._size_bytes

    @property
    def creator_pid(self) -> int:
        return self._creator_pid

    @property
    def is_creator(self) -> bool:
        """True for the instance that created it, in its own process (not in a forked
        child, not when opened by name): only it destroys and unlinks."""
        return self._is_creator

    @property
    def metadata(self) -> int:
        return int(_HEADER.unpack_from(self._mapping(), self._header)[3])

    @property
    def closed(self) -> bool:
        return self._mm is None

    def _mapping(self) -> mmap.mmap:
        mm = self._mm
        if mm is None:
            raise ValueError(f"SharedRegion in {self.where}: used after close()")
        return mm

    # -- the memory ------------------------------------------------------------
    def view(self, fmt: str = "B") -> memoryview:
        """The payload as a memoryview of `fmt` items (struct codes such as 'q'); released by close()."""
        payload = memoryview(self._mapping())[:self._size_bytes]
        try:
            view: memoryview = payload.cast(fmt)  # type: ignore[call-overload]  # any struct code, not typeshed's literals
        except (TypeError, ValueError) as e:
            payload.release()
            raise ValueError(f"SharedRegion.view: cannot view {self._size_bytes} bytes as {fmt!r}: {e}") from None
        self._views.append(view)
        return view

    def pointer(self, ctype: str) -> Any:
        """A `ctype *` to the payload, checked to fit, that keeps the mapping alive while it lives."""
        if _native.sizeof(ctype) > self._size_bytes:
            raise ValueError(f"{ctype} does not fit in the {self._size_bytes}-byte payload")
        return _native.pointer_to(self._mapping(), ctype)

    # -- the end ---------------------------------------------------------------
    def close(self, keep_mapped: bool = False) -> None:
        """Unmap (once nothing points into it) and, in the creator, unlink the name. Idempotent.

        `keep_mapped` leaves the memory mapped for the life of the process: for a
        robust mutex another thread may still hold, whose robust-list links glibc
        would follow into unmapped memory.
        """
        mm, self._mm = getattr(self, "_mm", None), None
        if mm is None:
            return
        if keep_mapped:
            _KEPT_MAPPED.append(mm)
        for view in self._views:
            try:
                view.release()
            except BufferError:
                pass  # the caller sliced it: that slice keeps the mapping until it goes
        self._views.clear()
        try:
            if not keep_mapped:
                mm.close()
        except BufferError:
            pass  # a pointer in use by another thread: unmapped when it is dropped
        if self._name and self.is_creator:
            try:
                posix_ipc.unlink_shared_memory(self._name)
            except posix_ipc.ExistentialError:
                pass  # already unlinked by hand
            tracker.unregister("shm", self._name)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._size_bytes} bytes"
        return f"<SharedRegion in {self.where}, {state}, created by pid {self._creator_pid}>"


def _map(shm: posix_ipc.SharedMemory, size: int) -> mmap.mmap:
    try:
        return mmap.mmap(shm.fd, size)  # MAP_SHARED
    finally:
        shm.close_fd()


class SharedObject(Owned):
    """What Mutex, Condition, Barrier and Semaphore share: one pthread object in its own region.

    Subclasses set _KIND (the header's kind), _CTYPE and _destroy (the
    pthread destroy call, run once, by the creator).
    """

    _KIND = _CTYPE = ""
    _ptr: Any = None
    _region: SharedRegion | None = None

    @staticmethod
    def _destroy(ptr: Any, /) -> object:
        raise NotImplementedError

    def _create(self, init: Callable[[Any], None], *, named: bool, metadata: int = 0,
                size_bytes: int | None = None) -> None:
        """Map a region (of `size_bytes`, else the object's size), run `init(ptr)` on the
        object in it, then publish it."""
        size = _native.sizeof(self._CTYPE) if size_bytes is None else size_bytes
        region = SharedRegion(size, named=named, kind=self._KIND, metadata=metadata, ready=False)
        try:
            ptr = region.pointer(self._CTYPE)
            init(ptr)
        except BaseException:
            region.close()
            raise
        self._hold(region, ptr)
        region.publish()

    @classmethod
    def _opened(cls: type[_S], name: str) -> _S:
        """A new instance on the named object another process created."""
        self = cls.__new__(cls)
        region = SharedRegion.open(name, cls._KIND)
        self._hold(region, region.pointer(cls._CTYPE))
        return self

    def _hold(self, region: SharedRegion, ptr: Any) -> None:
        self._region, self._ptr = region, ptr
        self._bind(ptr, _native.address_of(ptr))

    # A C `with` path (osvirt._fastlock) overrides these two: it is handed the
    # object's address (and the pointer, which keeps the mapping alive) and told
    # when close() takes it away.
    def _bind(self, keeper: object, address: int) -> None:
        pass

    def _unbind(self) -> None:
        pass

    @property
    def name(self) -> str | None:
        """Its /dev/shm name for `open(name)` in another process, or None when anonymous."""
        return self._held_region().name

    @property
    def where(self) -> str:
        """Where it lives: an anonymous shared mapping or its /dev/shm path."""
        return self._held_region().where

    @property
    def creator_pid(self) -> int:
        return self._held_region().creator_pid

    @property
    def closed(self) -> bool:
        return self._ptr is None

    def _held_region(self) -> SharedRegion:
        region = self._region
        if region is None:
            raise ValueError(f"{type(self).__name__}: never created")
        return region

    def _live(self) -> Any:
        """The object's pointer (hold it for the length of the C call), or ValueError after close()."""
        ptr = self._ptr
        if ptr is None:
            raise ValueError(f"{type(self).__name__} in {self.where if self._region else '?'}: used after close()")
        return ptr

    def close(self) -> None:
        """Destroy it (creator only) and unmap it; elsewhere (a forked child) only unmap. Idempotent."""
        ptr, self._ptr = self._ptr, None
        if ptr is None:
            return
        self._unbind()
        keep_mapped = True  # unless shown safe: a leaked mapping beats a crash
        try:
            keep_mapped = not self._safe_to_unmap(ptr)
            if self._held_region().is_creator:
                self._destroy(ptr)
        except OSError:
            pass  # close() must not raise (it runs in __del__); the memory is handled below
        finally:
            del ptr  # the region unmaps once no pointer into it is left
            self._held_region().close(keep_mapped)

    def _safe_to_unmap(self, ptr: Any) -> bool:
        """Whether no thread of this process can still be using the object's memory."""
        return True

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled by name (multiprocessing's spawn start method, a Queue): the
        unpickler opens the named object, which its creator must not have closed."""
        if self._region is None or self.name is None:
            raise TypeError(f"cannot pickle an anonymous {type(self).__name__}: it is shared with forked "
                            "children only (create it with named=True)")
        return (getattr(type(self), "open"), (self.name,))

    def __repr__(self) -> str:
        where = self._region.where if self._region else "nowhere"
        return f"<{type(self).__name__} in {where}{', closed' if self.closed else ''}>"


# Bound to the class itself, not to its name (see osvirt._owned).
_S = TypeVar("_S", bound=SharedObject)
