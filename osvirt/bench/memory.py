"""Memory primitives: minor page faults, mapping, protection (osvirt.memory)."""
import mmap
import time
from collections.abc import Callable, Iterator

from osvirt import _quickcalls
from osvirt.bench.harness import Batch, Primitive, rig
from osvirt.memory import MADV, PAGE_SIZE, PROT_READ, PROT_WRITE, Mapping
from osvirt.memory import _native as _memory_native

_PRIVATE_ANONYMOUS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS

__all__ = ["PRIMITIVES"]

MIB = 1 << 20


def _touch_fresh(shared: bool) -> Batch:
    """A Batch: osvirt.memory's Mapping.touch writes one byte in each page of a
    fresh n-page anonymous mapping; only the touch is timed. MADV_NOHUGEPAGE,
    as in C: each 4 KiB page faults on its own, not a 2 MiB huge page at once."""
    def batch(n: int) -> int:
        with Mapping(n * PAGE_SIZE, shared=shared) as m:
            m.madvise(MADV["MADV_NOHUGEPAGE"])
            t0 = time.perf_counter_ns()
            m.touch(write=True)
            return time.perf_counter_ns() - t0
    return Batch(batch)


def _touch_fresh_bare(shared: bool) -> Batch:
    """A Batch: the calls under Mapping.touch, bare: mmap, madvise, the C touch loop, munmap."""
    flags = (mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE) | mmap.MAP_ANONYMOUS
    no_huge = MADV["MADV_NOHUGEPAGE"]

    def batch(n: int) -> int:
        length = n * PAGE_SIZE
        addr = _quickcalls.mmap(length, PROT_READ | PROT_WRITE, flags, -1, 0)
        try:
            _memory_native.madvise(addr, length, no_huge, "MADV_NOHUGEPAGE")
            t0 = time.perf_counter_ns()
            _memory_native.touch(addr, length, PAGE_SIZE, True)
            return time.perf_counter_ns() - t0
        finally:
            _quickcalls.munmap(addr, length)
    return Batch(batch)


def _mmap_writes(flags: int) -> Batch:
    """A Batch: the stdlib's way, a Python loop writing a byte per page of an mmap.mmap."""
    def batch(n: int) -> int:
        m = mmap.mmap(-1, n * PAGE_SIZE, flags=flags)
        try:
            m.madvise(mmap.MADV_NOHUGEPAGE)
            t0 = time.perf_counter_ns()
            for offset in range(0, n * PAGE_SIZE, PAGE_SIZE):
                m[offset] = 1
            return time.perf_counter_ns() - t0
        finally:
            m.close()
    return Batch(batch)


def _map_unmap() -> None:
    Mapping(MIB).close()


def _mmap_close() -> None:
    mmap.mmap(-1, MIB, flags=_PRIVATE_ANONYMOUS).close()


_READ_WRITE = PROT_READ | PROT_WRITE  # computed once, as C's constant is


def _bare_mmap_munmap() -> None:
    _quickcalls.munmap(_quickcalls.mmap(MIB, _READ_WRITE, _PRIVATE_ANONYMOUS, -1, 0), MIB)


@rig
def _mprotect_python() -> Iterator[Callable[[], None]]:
    read_write = PROT_READ | PROT_WRITE  # computed once, as C's constant is
    with Mapping(PAGE_SIZE) as m:
        def mprotect_there_and_back() -> None:
            m.mprotect(PROT_READ)
            m.mprotect(read_write)
        yield mprotect_there_and_back


@rig
def _bare_mprotect() -> Iterator[Callable[[], None]]:
    read_write, mprotect = PROT_READ | PROT_WRITE, _quickcalls.mprotect
    with Mapping(PAGE_SIZE) as m:
        addr = m.address

        def mprotect_there_and_back() -> None:
            mprotect(addr, PAGE_SIZE, PROT_READ)
            mprotect(addr, PAGE_SIZE, read_write)
        yield mprotect_there_and_back


PRIMITIVES = [
    Primitive("page-fault", "a write to each page of a fresh MAP_PRIVATE anonymous "
                            "osvirt.memory.Mapping, by Mapping.touch: one minor fault a page",
              python=_touch_fresh(shared=False), c="touch_fresh", c_args=(0,),
              floor=("the C touch loop on a bare mmap", _touch_fresh_bare(shared=False)),
              peer=("mmap.mmap(MAP_PRIVATE), a Python loop", _mmap_writes(_PRIVATE_ANONYMOUS)),
              note="Mapping.touch is a C loop: one call for the whole batch"),
    Primitive("page-fault-shared", "the same with MAP_SHARED, what mmap.mmap(-1, size) gives by default",
              python=_touch_fresh(shared=True), c="touch_fresh", c_args=(1,),
              floor=("the C touch loop on a bare mmap", _touch_fresh_bare(shared=True)),
              peer=("mmap.mmap default, a Python loop", _mmap_writes(mmap.MAP_SHARED)),
              note="shared anonymous memory is shmem (a file in the kernel): its faults cost more "
                   "than private ones; pass flags=MAP_PRIVATE to mmap.mmap for private memory"),
    Primitive("mmap-1m", "osvirt.memory.Mapping of 1 MiB (MAP_PRIVATE, anonymous), then close (munmap)",
              python=_map_unmap, c="mmap_munmap", c_args=(MIB,),
              floor=("osvirt._quickcalls mmap + munmap", _bare_mmap_munmap),
              peer=("mmap.mmap(MAP_PRIVATE) + close", _mmap_close),
              note="the two bare calls (osvirt._quickcalls, the GIL kept) cost ~1.07-1.1x the C loop; "
                   "Mapping(size), close() and its __del__ are made in C (osvirt._quickcalls.checked), "
                   "yet the Python object (a class instance with attributes and a finalizer, made and "
                   "collected) keeps this row above 1.10x its floor: in one process's loop a minimal "
                   "Python owner around the same calls (__init__ that maps, close that unmaps, "
                   "__del__ = close) costs 1.12-1.24x them, Mapping 1.14-1.20x (1.24x before its C "
                   "paths); in bench workers 1.25-1.6x, with batches that move by 30% with the "
                   "worker's memory layout (the 1 MiB region merges with a neighbouring mapping)"),
    Primitive("mprotect", "Mapping.mprotect of one page to PROT_READ and back to read-write (two calls)",
              python=_mprotect_python, c="mprotect",
              floor=("osvirt._quickcalls.mprotect twice", _bare_mprotect),
              note="the two bare calls (osvirt._quickcalls, the GIL kept) cost ~1.07-1.2x the C loop; "
                   "Mapping.mprotect(prot) of the whole mapping is made in C with its checks "
                   "(osvirt._quickcalls.checked), which gains little over the Python method: in one "
                   "process's loop 2.19 us against 2.22 and the bare calls' 1.98 (1.11x); the method "
                   "call and its three attribute reads are what is left (bench: 1.0-1.4x with the load)"),
]
