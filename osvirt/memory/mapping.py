"""`Mapping`: one mmap region, owned, with the calls Python's mmap lacks.

Everything is addressed by offset into the mapping. Each call checks its
offset and length in Python (integers, inside the mapping, page-aligned where
the kernel needs it, clear of pages this mapping unmapped) and raises
ValueError or TypeError before the kernel or the C side sees them, so no
argument can make osvirt touch memory it does not own.

Reads and writes go through a C loop guarded against SIGSEGV/SIGBUS: an
access the kernel refuses raises `ProtectionFault` with the faulting address
and si_code, and the interpreter goes on. The guard is process-wide while it
runs (sigaction has no per-thread form), so guarded accesses from several
threads take turns; a fault on another thread meanwhile goes to the handler
that was there before. Not supported: guarded accesses from a signal
handler, and fork() while another thread is inside one (csrc/memory.c).
"""
from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, SupportsIndex

from osvirt._checked import checked_method
from osvirt._owned import Owned
from osvirt.memory import _native, procfs
from osvirt.memory._native import (MappingBase, mapping_class, mmap_error, mprotect_error, munmap_error,
                                   quick_mmap, quick_mprotect, quick_munmap)
from osvirt.memory.procfs import PageState, Vma

if TYPE_CHECKING:  # typing_extensions is mypy's; collections.abc.Buffer is Python 3.12's
    from typing_extensions import Buffer

    from osvirt.device.ioctl import HasFileno

__all__ = ["PAGE_SIZE", "PROT_NONE", "PROT_READ", "PROT_WRITE", "PROT_EXEC",
           "MADV", "SEGV_ACCERR", "SEGV_MAPERR", "Mapping", "huge_page_size"]

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PROT_NONE, PROT_READ, PROT_WRITE, PROT_EXEC = (_native.PROT[n] for n in
                                               ("PROT_NONE", "PROT_READ", "PROT_WRITE", "PROT_EXEC"))
MADV = dict(_native.MADV)  # the advice madvise() accepts, by name
SEGV_ACCERR, SEGV_MAPERR = _native.SEGV_ACCERR, _native.SEGV_MAPERR  # ProtectionFault.si_code
_PROT_ALL = PROT_READ | PROT_WRITE | PROT_EXEC
_NOT_PROT = ~_PROT_ALL  # bits no protection has (a negative number has some of them)
_PROTS = frozenset(p for p in range(_PROT_ALL + 1) if not p & _NOT_PROT)  # every valid prot
_PAGE_MASK = PAGE_SIZE - 1
_MAP_SHARED, _MAP_PRIVATE, _MAP_ANONYMOUS, _MAP_POPULATE = (
    _native.MAP[n] for n in ("MAP_SHARED", "MAP_PRIVATE", "MAP_ANONYMOUS", "MAP_POPULATE"))
# `x is _ZERO` is true only for the int 0 (one object in CPython): a default offset
# passes its type and value checks in one step; any other zero takes the full checks.
_ZERO = 0
_MAX_SIZE = procfs.ADDRESS_LIMIT  # no larger mapping can exist


def huge_page_size() -> int:
    """The transparent huge page size (PMD size), in bytes."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") as f:
            return int(f.read())
    except OSError:
        return 2 << 20  # x86-64 and arm64 with 4 KiB pages


def _int(value: SupportsIndex, facility: str, name: str) -> int:
    """`value` as an int (anything with __index__ but a bool); else TypeError naming both."""
    if type(value) is int:
        return value
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{facility}: {name} must be an int, not {type(value).__name__}")


def _prot(prot: int, facility: str) -> int:
    if type(prot) is not int:
        prot = _int(prot, facility, "prot")
    if prot & _NOT_PROT:
        raise ValueError(f"{facility}: prot {prot:#x} is not a combination of PROT_READ, PROT_WRITE, "
                         "PROT_EXEC (or PROT_NONE)")
    return prot


class Mapping(Owned, MappingBase):
    """An mmap region, unmapped by `close()` (idempotent; also on `with` exit and in __del__).

    Anonymous by default; with `fd`, the file's bytes from `offset` (a
    multiple of the page size). `shared` makes writes visible to other
    processes mapping it (and, for a file, written back to it); private is
    copy-on-write. `populate` asks MAP_POPULATE (prefault every page now).
    `hugepage` (anonymous only) aligns the region to the huge page size and
    advises MADV_HUGEPAGE, so the kernel may back it with transparent huge
    pages. Any use after close raises ValueError.
    """

    # These four live in the object (MappingBase's members, None until set; _holes () from
    # the start, for close() on an object whose __init__ raised).
    _address: int | None  # until mmap succeeds
    _size: int
    # (address, size) while all of the mapping is mapped, else None: the one attribute the
    # C paths of close() and mprotect(prot) read (each attribute read from C costs ~20 ns).
    _whole: tuple[int, int] | None
    _holes: Sequence[tuple[int, int]]  # (start, end) offsets this mapping unmapped itself
    shared = False  # MAP_SHARED
    file_backed = False  # mapped from a file, not anonymous

    # Mapping(size) is made in C (mapping_class, below: this __init__ takes every other call),
    # and close() when nothing was unmapped before, mprotect(prot) of the whole mapping: see
    # csrc/cpython/quickcalls.c.
    def __init__(self, size_bytes: int, *, prot: int = PROT_READ | PROT_WRITE, shared: bool = False,
                 fd: int | HasFileno | None = None, offset: int = 0, populate: bool = False,
                 hugepage: bool = False) -> None:
        # Each check passes a valid argument in a step or two and calls the helper that
        # explains a bad one only for it: map + unmap of 1 MiB costs ~3 us in C, so a
        # few hundred ns of checks would show (bench row mmap-1m).
        size = size_bytes if type(size_bytes) is int else _int(size_bytes, "mmap", "size_bytes")
        if not 0 < size <= _MAX_SIZE:
            raise ValueError(f"mmap: size_bytes must be in 1..{_MAX_SIZE}, not {size}")
        if type(prot) is not int or prot & _NOT_PROT:
            prot = _prot(prot, "mmap")
        if offset is not _ZERO:
            offset = _int(offset, "mmap", "offset")
            if not 0 <= offset <= _MAX_SIZE or offset & _PAGE_MASK:
                raise ValueError(f"mmap: offset {offset} must be in 0..{_MAX_SIZE} and a multiple of {PAGE_SIZE}")
        flags = _MAP_SHARED if shared else _MAP_PRIVATE
        if fd is None:
            flags |= _MAP_ANONYMOUS
            fd = -1
        else:
            fd = fd.fileno() if hasattr(fd, "fileno") else _int(fd, "mmap", "fd")
            if not 0 <= fd < 1 << 31:
                raise ValueError(f"mmap: fd {fd} is not a file descriptor number")
            if hugepage:
                raise ValueError("mmap: hugepage advice applies to anonymous mappings only")
            self.file_backed = True
        if populate:
            flags |= _MAP_POPULATE
        if shared:
            self.shared = True
        if size & _PAGE_MASK:  # whole pages (an aligned size, the usual one, skips the arithmetic)
            size = (size | _PAGE_MASK) + 1
        self._size = size
        if hugepage:
            self._address = self._map_aligned(huge_page_size(), prot, flags)
            self.madvise(MADV["MADV_HUGEPAGE"])
        else:
            try:  # free unless it raises (Python 3.11's exception tables)
                self._address = quick_mmap(size, prot, flags, fd, offset)
            except OSError as e:
                assert e.errno is not None  # set by every failed system call
                raise mmap_error(e.errno, size, prot, flags, fd, offset) from None
        self._whole = (self._address, size)

    def _map_aligned(self, align: int, prot: int, flags: int) -> int:
        # Map `align` bytes more than needed, then give back the ends that fall outside
        # the aligned part: the kernel picks addresses only page-aligned.
        base = _native.mmap(self._size + align, prot, flags, -1, 0)
        start = -(-base // align) * align
        if start > base:
            _native.munmap(base, start - base)
        tail = base + self._size + align - (start + self._size)
        if tail:
            _native.munmap(start + self._size, tail)
        return start

    # -- what it is ---------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._address is None

    @property
    def address(self) -> int:
        """The first byte's address."""
        return self._open()

    @property
    def size(self) -> int:
        """The length in bytes (the requested size rounded up to whole pages)."""
        self._open()
        return self._size

    @property
    def pages(self) -> int:
        return self.size // PAGE_SIZE

    def __repr__(self) -> str:
        address = self._address
        if address is None:
            return "<Mapping closed>"
        return f"<Mapping {address:#x}-{address + self._size:#x} ({self._size} bytes)>"

    # -- checks every call makes before the kernel sees anything --------------
    def _open(self) -> int:
        """The address, or ValueError once closed."""
        address = self._address
        if address is None:
            raise ValueError("operation on a closed Mapping")
        return address

    def _range(self, facility: str, offset: int, length: int | None, *, aligned: bool = False,
               holes_ok: bool = False) -> tuple[int, int]:
        """(address, length) of a checked sub-range; length None means "to the end"."""
        address = self._address
        if address is None:
            address = self._open()  # ValueError
        if type(offset) is not int:  # the type checks only for what is not already an int
            offset = _int(offset, facility, "offset")
        if length is None:
            length = self._size - offset
        elif type(length) is not int:
            length = _int(length, facility, "length")
        if offset < 0 or length < 0 or offset + length > self._size:
            raise ValueError(f"{facility}: offset {offset} + length {length} is outside the "
                             f"mapping's {self._size} bytes")
        if aligned and offset % PAGE_SIZE:
            raise ValueError(f"{facility}: offset {offset} is not a multiple of the page size "
                             f"{PAGE_SIZE} (the kernel needs a page-aligned address)")
        if self._holes and not holes_ok:
            for start, end in self._holes:
                if offset < end and offset + length > start:
                    raise ValueError(f"{facility}: [{offset}, {offset + length}) overlaps bytes "
                                     f"[{start}, {end}) this mapping unmapped")
        return address + offset, length

    # -- the kernel calls -----------------------------------------------------
    # kernel_checks_alignment is not keyword-only, though meant to be passed by keyword:
    # Python 3.11 does not specialize a call to a function with keyword-only parameters,
    # and the unspecialized call costs ~55 ns more of a ~1 us mprotect (bench row mprotect).
    @checked_method("mapping_mprotect", "_mprotect_error")
    def mprotect(self, prot: int, offset: int = 0, length: int | None = None,
                 kernel_checks_alignment: bool = False) -> None:
        """Change the protection of [offset, offset+length) (whole pages).

        An unaligned offset is a ValueError, unless `kernel_checks_alignment`
        (by keyword): then it goes to the kernel as it is, which refuses it
        with EINVAL (raised as an OSError naming mprotect).
        """
        if offset is _ZERO and length is None and not self._holes:
            # The whole mapping (the default), all of it still mapped, and a valid prot value:
            # the checks below would pass it, and each costs ~10-50 ns of a ~0.9 us call (bench
            # row mprotect). The C call refuses, before the syscall, what is not exactly an int:
            # a closed mapping's address (None), a prot that only equals one (True, 1.0).
            try:  # free unless it raises (Python 3.11's exception tables)
                if prot in _PROTS:
                    quick_mprotect(self._address, self._size, prot)  # type: ignore[arg-type]  # None: refused, below
                    return
            except OSError as e:
                assert e.errno is not None  # the call was made
                raise self._mprotect_error(e.errno, prot) from None
            except TypeError:
                pass  # refused (or prot unhashable): the checks below say why
        prot = _prot(prot, "mprotect")
        _native.mprotect(*self._range("mprotect", offset, length, aligned=not kernel_checks_alignment), prot)

    # The errors of the calls made in C (and of mprotect's here).
    def _map_error(self, err: int, size: int) -> OSError:
        return mmap_error(err, size, PROT_READ | PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0)

    def _mprotect_error(self, err: int, prot: int) -> OSError:
        assert self._address is not None  # the call was made
        return mprotect_error(err, self._address, self._size, prot)

    def _munmap_error(self, err: int, address: int) -> OSError:
        return munmap_error(err, address, self._size)

    def madvise(self, advice: int, offset: int = 0, length: int | None = None) -> None:
        """Give the kernel `advice` (a value of MADV) about [offset, offset+length)."""
        advice = _int(advice, "madvise", "advice")
        names = {v: n for n, v in MADV.items()}
        if advice not in names:
            raise ValueError(f"madvise: advice {advice} is not one of {', '.join(MADV)}")
        addr, length = self._range("madvise", offset, length, aligned=True)
        _native.madvise(addr, length, advice, names[advice])

    def mincore(self, offset: int = 0, length: int | None = None) -> list[bool]:
        """Per page of [offset, offset+length): is it in RAM (page cache or swap cache)?"""
        addr, length = self._range("mincore", offset, length, aligned=True)
        pages = -(-length // PAGE_SIZE)
        return [bool(b & 1) for b in _native.mincore(addr, length, pages)] if pages else []

    def mlock(self, offset: int = 0, length: int | None = None) -> None:
        """Lock [offset, offset+length) in RAM (faulting it in), within RLIMIT_MEMLOCK."""
        _native.mlock(*self._range("mlock", offset, length))

    def munlock(self, offset: int = 0, length: int | None = None) -> None:
        _native.munlock(*self._range("munlock", offset, length))

    def unmap(self, offset: int, length: int, *, kernel_checks_alignment: bool = False) -> None:
        """munmap [offset, offset+length): the kernel removes whole pages (the length is
        rounded up), leaving a hole that faults SEGV_MAPERR.

        The hole stays this mapping's to account for: only `read` may reach
        into it (the kernel may hand the addresses to a later mmap, and a
        read cannot harm that), and `close` skips it. An unaligned offset is
        a ValueError, unless `kernel_checks_alignment` (then EINVAL from the kernel).
        """
        addr, length = self._range("munmap", offset, length, aligned=not kernel_checks_alignment)
        _native.munmap(addr, length)
        end = min(self._size, offset + -(-length // PAGE_SIZE) * PAGE_SIZE)
        self._whole = None
        self._holes = [*self._holes, (offset, end)]

    # -- accesses through the fault guard ---------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes at `offset`; ProtectionFault if the kernel refuses the access."""
        return _native.read(*self._range("read", offset, length, holes_ok=True))

    def write(self, offset: int, data: Buffer) -> None:
        """Store the bytes of `data` at `offset`; ProtectionFault if the kernel refuses."""
        view = memoryview(data).cast("B")
        addr, _ = self._range("write", offset, len(view))
        _native.write(addr, view)

    def write_unguarded(self, offset: int, data: Buffer) -> None:
        """Store `data` at `offset` with no fault guard: if the kernel refuses, this process
        dies of the signal, exactly as a C program would. Meant for a child that is
        expected to die (its parent reads the signal from waitpid)."""
        view = memoryview(data).cast("B")
        addr, _ = self._range("write", offset, len(view))
        _native.write_unguarded(addr, view)

    def touch(self, stride: int = PAGE_SIZE, *, write: bool = False, offset: int = 0,
              length: int | None = None) -> int:
        """Read (or, with `write`, rewrite in place) one byte every `stride` bytes; returns
        how many bytes were touched. Data is unchanged; each first touch of a page faults."""
        stride = _int(stride, "touch", "stride")
        addr, length = self._range("touch", offset, length)
        if not 0 < stride <= self._size:  # bounded: the C loop's index cannot wrap around
            raise ValueError(f"touch: stride must be in 1..{self._size}, not {stride}")
        return _native.touch(addr, length, stride, write)

    # -- what /proc says about it ----------------------------------------------
    def maps(self) -> list[Vma]:
        """The /proc/self/maps lines (Vma) overlapping this mapping."""
        address = self._open()
        return procfs.maps(address, address + self._size)

    def smaps(self) -> list[Vma]:
        """The /proc/self/smaps entries (Vma with fields) overlapping this mapping."""
        address = self._open()
        return procfs.smaps(address, address + self._size)

    def pagemap(self, offset: int = 0, length: int | None = None) -> list[PageState]:
        """Per page, the PageState (present, swapped, file) /proc/self/pagemap reports."""
        addr, length = self._range("pagemap", offset, length, aligned=True, holes_ok=True)
        return procfs.pagemap(addr, -(-length // PAGE_SIZE))

    # -- ownership ---------------------------------------------------------------
    @checked_method("mapping_close", "_munmap_error")
    def close(self) -> None:
        """munmap what is still mapped. Idempotent."""
        address, self._address, self._whole = self._address, None, None
        if address is None:
            return
        if not self._holes:  # the common case, in one call
            try:
                quick_munmap(address, self._size)
            except OSError as e:
                assert e.errno is not None
                raise self._munmap_error(e.errno, address) from None
            return
        start = 0
        for hole_start, hole_end in sorted(self._holes) + [(self._size, self._size)]:
            if hole_start > start:
                _native.munmap(address + start, hole_start - start)
            start = max(start, hole_end)

    # Owned's __del__ calls close(): here close() itself, which mapping_class (below) makes
    # C's finalizer (close() in C while all is mapped); a subclass gets Python's __del__.
    __del__ = close


mapping_class(Mapping)  # Mapping(size) and its finalizer made in C: see csrc/cpython/quickcalls.c
