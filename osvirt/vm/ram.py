"""Guest physical memory: a writable buffer seen at guest physical addresses.

In a machine the buffer is an `osvirt.memory.Mapping` that KVM maps into the
guest (KVM_SET_USER_MEMORY_REGION): the guest's physical page at `base + n`
is the host's virtual page at `mapping.address + n`, the same memory both
ways. In tests it is a bytearray. Devices (virtqueues, loaders) read and
write guest memory only through a GuestRam, so every out-of-range address a
guest hands them raises GuestMemoryError instead of touching host memory.

Integers are little-endian, as on x86.

`dirty`, when a set, collects the page numbers (offset // 4096) the host
writes or hands out writable (write*, view): KVM's dirty log sees only the
guest's writes, and an incremental snapshot needs both.
"""
from __future__ import annotations

import ctypes
import struct
from typing import Protocol, runtime_checkable

from osvirt.vm.errors import GuestMemoryError

__all__ = ["GuestRam", "HasAddress"]

_U16, _U32, _U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")


@runtime_checkable
class HasAddress(Protocol):
    """What GuestRam takes besides a buffer: an object mapped at `address` for `size` bytes
    (osvirt.memory.Mapping)."""

    @property
    def address(self) -> int: ...

    @property
    def size(self) -> int: ...


def _memoryview(buffer: object) -> memoryview:
    if isinstance(buffer, HasAddress) and not isinstance(buffer, (bytes, bytearray, memoryview)):
        # a Mapping: a ctypes array over its pages, without a copy. The GuestRam keeps
        # `buffer` referenced, so the mapping outlives the view while the GuestRam lives.
        array = (ctypes.c_char * buffer.size).from_address(buffer.address)
        return memoryview(array).cast("B")
    view = memoryview(buffer)  # type: ignore[arg-type]  # any buffer-protocol object
    if view.readonly:
        raise TypeError(f"GuestRam: the buffer must be writable, not a read-only {type(buffer).__name__}")
    if not view.c_contiguous:
        raise TypeError("GuestRam: the buffer must be contiguous")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


class GuestRam:
    """Guest physical memory [base, base + size) over `buffer` (writable: a bytearray, a
    memoryview, an mmap, or an osvirt.memory.Mapping)."""

    dirty: set[int] | None = None

    def __init__(self, buffer: object, base: int = 0) -> None:
        if type(base) is not int or base < 0:
            raise ValueError(f"GuestRam: base must be an int >= 0, not {base!r}")
        self._buffer = buffer  # keeps a Mapping alive as long as this view of it
        self._mv = _memoryview(buffer)
        self.base = base
        self.size = len(self._mv)

    def __repr__(self) -> str:
        return f"GuestRam(base={self.base:#x}, size={self.size:#x})"

    def contains(self, gpa: int, length: int = 1) -> bool:
        """Whether [gpa, gpa + length) lies inside guest RAM."""
        return length >= 0 and self.base <= gpa and gpa + length <= self.base + self.size

    def offset(self, gpa: int, length: int = 1) -> int:
        """The buffer offset of gpa, checking that [gpa, gpa + length) is inside RAM."""
        off = gpa - self.base
        if off < 0 or length < 0 or off + length > self.size:
            raise GuestMemoryError(gpa, length, self.base, self.size)
        return off

    def _written(self, gpa: int, length: int) -> int:
        off = self.offset(gpa, length)
        if self.dirty is not None and length:
            self.dirty.update(range(off >> 12, ((off + length - 1) >> 12) + 1))
        return off

    def view(self, gpa: int, length: int) -> memoryview:
        """A writable memoryview of [gpa, gpa + length): no copy, writes go to guest memory."""
        off = self._written(gpa, length)
        return self._mv[off:off + length]

    def read(self, gpa: int, n: int) -> bytes:
        off = self.offset(gpa, n)
        return bytes(self._mv[off:off + n])

    def write(self, gpa: int, data: bytes | bytearray | memoryview) -> None:
        n = len(data) if not isinstance(data, memoryview) else data.nbytes
        off = self._written(gpa, n)
        self._mv[off:off + n] = data if not isinstance(data, memoryview) else data.cast("B")

    def read_u8(self, gpa: int) -> int:
        return self._mv[self.offset(gpa, 1)]

    def read_u16(self, gpa: int) -> int:
        return _U16.unpack_from(self._mv, self.offset(gpa, 2))[0]  # type: ignore[no-any-return]

    def read_u32(self, gpa: int) -> int:
        return _U32.unpack_from(self._mv, self.offset(gpa, 4))[0]  # type: ignore[no-any-return]

    def read_u64(self, gpa: int) -> int:
        return _U64.unpack_from(self._mv, self.offset(gpa, 8))[0]  # type: ignore[no-any-return]

    def write_u8(self, gpa: int, value: int) -> None:
        off = self._written(gpa, 1)
        self._mv[off] = value

    def write_u16(self, gpa: int, value: int) -> None:
        off = self._written(gpa, 2)
        _U16.pack_into(self._mv, off, value)

    def write_u32(self, gpa: int, value: int) -> None:
        off = self._written(gpa, 4)
        _U32.pack_into(self._mv, off, value)

    def write_u64(self, gpa: int, value: int) -> None:
        off = self._written(gpa, 8)
        _U64.pack_into(self._mv, off, value)

    def release(self) -> None:
        """Let go of the view (before the Mapping under it is unmapped)."""
        self._mv.release()
