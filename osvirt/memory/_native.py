"""The one module of osvirt.memory that touches the C extension.

It takes addresses and lengths that the public classes have already checked
(inside a mapping they own, aligned where the kernel needs it), and turns
-1/errno into `kernel_error` and a caught fault into `ProtectionFault`. The
three hot calls (mmap, munmap, mprotect) come from osvirt._quickcalls and
are also given bare, with the function that makes their error: see "the hot
calls" below.
"""
import errno
import os
from typing import Any

from osvirt import _quickcalls
# Mapping's base (its attributes in the object) and what makes its plain call and its
# finalizer C's: see csrc/cpython/quickcalls.c.
from osvirt._quickcalls import MappingBase as MappingBase, mapping_class as mapping_class
from osvirt._native import ffi, lib
from osvirt.errors import ProtectionFault, kernel_error

# Constants, from the C headers through the cdef.
PROT: dict[str, int] = {"PROT_NONE": lib.PROT_NONE, "PROT_READ": lib.PROT_READ,
        "PROT_WRITE": lib.PROT_WRITE, "PROT_EXEC": lib.PROT_EXEC}
MAP: dict[str, int] = {"MAP_PRIVATE": lib.MAP_PRIVATE, "MAP_SHARED": lib.MAP_SHARED,
       "MAP_ANONYMOUS": lib.MAP_ANONYMOUS, "MAP_POPULATE": lib.MAP_POPULATE,
       "MAP_NORESERVE": lib.MAP_NORESERVE}
# The advice a Mapping accepts: none of them can hurt memory outside the
# range (MADV_HWPOISON, MADV_REMOVE and the like are deliberately absent).
MADV: dict[str, int] = {name: getattr(lib, name) for name in (
    "MADV_NORMAL", "MADV_RANDOM", "MADV_SEQUENTIAL", "MADV_WILLNEED", "MADV_DONTNEED",
    "MADV_FREE", "MADV_HUGEPAGE", "MADV_NOHUGEPAGE", "MADV_COLD", "MADV_PAGEOUT",
    "MADV_DONTFORK", "MADV_DOFORK", "MADV_DONTDUMP", "MADV_DODUMP")}
SIGNALS: dict[int, str] = {lib.SIGSEGV: "SIGSEGV", lib.SIGBUS: "SIGBUS"}
SI_CODES: dict[tuple[int, int], str] = {
    (lib.SIGSEGV, lib.SEGV_MAPERR): "SEGV_MAPERR", (lib.SIGSEGV, lib.SEGV_ACCERR): "SEGV_ACCERR",
    (lib.SIGBUS, lib.BUS_ADRALN): "BUS_ADRALN", (lib.SIGBUS, lib.BUS_ADRERR): "BUS_ADRERR",
    (lib.SIGBUS, lib.BUS_OBJERR): "BUS_OBJERR",
}
SEGV_MAPERR: int = lib.SEGV_MAPERR
SEGV_ACCERR: int = lib.SEGV_ACCERR
SWAP_FLAG_PREFER: int = lib.SWAP_FLAG_PREFER


def _check(result: int, facility: str, hint: str | None = None) -> None:
    if result == -1:
        raise kernel_error(ffi.errno, facility, hint)


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _alignment_hint(addr: int) -> str | None:
    return "the address must be page-aligned" if addr % _PAGE_SIZE else None


# -- the hot calls, bare ---------------------------------------------------------
# Mapping 1 MiB and unmapping it costs ~3.1-3.3 us, an mprotect ~0.85 us. These
# three wait for nothing but the mm's lock, so osvirt._quickcalls makes them with
# the GIL held (except an mmap of a file or with MAP_POPULATE, which may wait for
# reads): a bare call costs ~1.07x the C loop's, against 1.2-1.3x over cffi
# (bench rows mmap-1m, mprotect). A Python wrapper around each call would add
# ~50-70 ns, so Mapping calls them itself and renames their OSError (errno only)
# with the matching *_error; mmap, mprotect and munmap below are for the rest.
quick_mmap, quick_mprotect, quick_munmap = _quickcalls.mmap, _quickcalls.mprotect, _quickcalls.munmap


def mmap_error(err: int, length: int, prot: int, flags: int, fd: int, offset: int) -> OSError:
    return kernel_error(err, f"mmap(NULL, {length}, {prot:#x}, {flags:#x}, {fd}, {offset})")


def munmap_error(err: int, addr: int, length: int) -> OSError:
    return kernel_error(err, f"munmap({addr:#x}, {length})", _alignment_hint(addr))


def mprotect_error(err: int, addr: int, length: int, prot: int) -> OSError:
    return kernel_error(err, f"mprotect({addr:#x}, {length}, {prot:#x})", _alignment_hint(addr))


def mmap(length: int, prot: int, flags: int, fd: int, offset: int) -> int:
    try:
        return quick_mmap(length, prot, flags, fd, offset)
    except OSError as e:
        assert e.errno is not None  # set by every failed system call
        raise mmap_error(e.errno, length, prot, flags, fd, offset) from None


def mprotect(addr: int, length: int, prot: int) -> None:
    try:
        quick_mprotect(addr, length, prot)
    except OSError as e:
        assert e.errno is not None
        raise mprotect_error(e.errno, addr, length, prot) from None


def munmap(addr: int, length: int) -> None:
    try:
        quick_munmap(addr, length)
    except OSError as e:
        assert e.errno is not None
        raise munmap_error(e.errno, addr, length) from None


def madvise(addr: int, length: int, advice: int, name: str) -> None:
    _check(lib.osv_madvise(addr, length, advice), f"madvise({addr:#x}, {length}, {name})")


def mincore(addr: int, length: int, pages: int) -> bytes:
    vec = ffi.new("unsigned char[]", pages)
    _check(lib.osv_mincore(addr, length, vec), f"mincore({addr:#x}, {length})")
    return bytes(ffi.buffer(vec))


def mlock(addr: int, length: int) -> None:
    _check(lib.osv_mlock(addr, length), f"mlock({addr:#x}, {length})",
           "RLIMIT_MEMLOCK caps what a process without CAP_IPC_LOCK may lock")


def munlock(addr: int, length: int) -> None:
    _check(lib.osv_munlock(addr, length), f"munlock({addr:#x}, {length})")


# `fault`: an osv_fault's cdata, whose fields (the cdef's) are unknown to mypy: Any.
def _fault(fault: Any, access: str) -> ProtectionFault:
    key = (fault.signo, fault.code)
    name = SI_CODES.get(key, f"{SIGNALS.get(fault.signo, fault.signo)} si_code {fault.code}")
    return ProtectionFault(access, fault.addr, fault.signo, fault.code, name)


def read(addr: int, length: int) -> bytes:
    """`length` bytes from `addr`, or ProtectionFault."""
    buf = ffi.new("unsigned char[]", length)
    fault = ffi.new("osv_fault *")
    if lib.osv_copy_guarded(int(ffi.cast("uintptr_t", buf)), addr, length, fault) == -1:
        raise _fault(fault, f"read of {length} bytes at {addr:#x}")
    return bytes(ffi.buffer(buf))


def write(addr: int, data: bytes | bytearray | memoryview) -> None:
    """Store `data` at `addr`, or ProtectionFault."""
    buf = ffi.from_buffer(data)
    fault = ffi.new("osv_fault *")
    if lib.osv_copy_guarded(addr, int(ffi.cast("uintptr_t", buf)), len(data), fault) == -1:
        raise _fault(fault, f"write of {len(data)} bytes at {addr:#x}")


def write_unguarded(addr: int, data: bytes | bytearray | memoryview) -> None:
    buf = ffi.from_buffer(data)
    lib.osv_copy_unguarded(addr, int(ffi.cast("uintptr_t", buf)), len(data))


def touch(addr: int, length: int, stride: int, write: bool) -> int:
    """How many bytes the loop reached, one every `stride`; or ProtectionFault."""
    touched = ffi.new("size_t *")
    fault = ffi.new("osv_fault *")
    if lib.osv_touch_guarded(addr, length, stride, int(write), touched, fault) == -1:
        raise _fault(fault, f"touch ({'write' if write else 'read'}) of byte {touched[0]} "
                            f"every {stride} from {addr:#x}")
    return int(touched[0])


def swapon(path: str | os.PathLike[str], flags: int) -> None:
    _check(lib.osv_swapon(os.fsencode(path), flags), f"swapon({path!r}, {flags:#x})",
           "needs CAP_SYS_ADMIN" if ffi.errno == errno.EPERM else None)


def swapoff(path: str | os.PathLike[str]) -> None:
    _check(lib.osv_swapoff(os.fsencode(path)), f"swapoff({path!r})")


UFFD_USER_MODE_ONLY: int = lib.UFFD_USER_MODE_ONLY


def userfaultfd(flags: int) -> int:
    fd = int(lib.osv_userfaultfd(flags))
    hint = "a seccomp filter (Docker's) may refuse it"
    if not flags & UFFD_USER_MODE_ONLY:
        hint = "without UFFD_USER_MODE_ONLY it needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1; " + hint
    _check(fd, f"userfaultfd({flags:#x})", hint if ffi.errno == errno.EPERM else None)
    return fd
