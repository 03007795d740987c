"""Memory primitives: minor page faults, mapping, protection (osvirt.memory)."""
import contextlib
import mmap
import time
from collections.abc import Callable, Iterator

from osvirt import _quickcalls
from osvirt.bench.harness import Batch, Primitive, rig
from osvirt.errors import OsvirtError
from osvirt.memory import MADV, PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE, Mapping
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


# -- mmap-1m and mprotect: the same kernel work in every series, whatever the process's layout
#
# The kernel merges a new anonymous mapping with an adjacent anonymous one of the same
# protection (a 1 MiB mmap in a worker was seen extending a 1 MiB neighbour into one 2
# MiB VMA), and mprotect of a page splits it out of such a VMA and merges it back: more
# work than a VMA of its own, and whether it happens depends on what each worker process
# mapped before. So each series works where no neighbour can merge: between PROT_NONE
# guard pages (mmap-1m), or on a page whose VMA is its own with no anonymous neighbour.

def _vmas() -> list[tuple[int, int, str]]:
    """(start, end, rest of the line) of each VMA in /proc/self/maps."""
    vmas = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, rest = line.split(" ", 1)
            start, end = span.split("-")
            vmas.append((int(start, 16), int(end, 16), rest))
    return vmas


def _alone(addr: int, length: int) -> bool:
    """[addr, addr+length) is one VMA of its own, and no anonymous VMA (no file name) touches it."""
    for start, end, rest in _vmas():
        if start <= addr < end and (start, end) != (addr, addr + length):
            return False
        if (end == addr or start == addr + length) and len(rest.split()) < 5:
            return False
    return True


@contextlib.contextmanager
def _guarded_hole(size: int) -> Iterator[None]:
    """A free `size` bytes between two PROT_NONE guard pages, where the next mmap of
    `size` lands: the kernel takes the highest gap that fits, and a gap above the hole
    that fits `size` (but not the reserve) is filled until the hole is the highest."""
    base = _quickcalls.mmap(size + 2 * PAGE_SIZE, PROT_NONE, _PRIVATE_ANONYMOUS, -1, 0)
    plugs: list[int] = []
    try:
        _quickcalls.munmap(base + PAGE_SIZE, size)
        for _ in range(16):
            trial = _quickcalls.mmap(size, PROT_NONE, _PRIVATE_ANONYMOUS, -1, 0)
            if trial == base + PAGE_SIZE:
                _quickcalls.munmap(trial, size)
                break
            plugs.append(trial)
        else:
            raise OsvirtError(f"mmap({size}): 16 gaps above the guarded hole at {base + PAGE_SIZE:#x}")
        yield
    finally:
        for plug in plugs:
            _quickcalls.munmap(plug, size)
        _quickcalls.munmap(base, size + 2 * PAGE_SIZE)


def _in_hole(operation: Callable[[], object]) -> Callable[[], Iterator[Callable[[], object]]]:
    """A @rig's generator function: `operation`, with a 1 MiB guarded hole for its mapping."""
    def opened() -> Iterator[Callable[[], object]]:
        with _guarded_hole(MIB):
            yield operation
    opened.__name__ = operation.__name__
    return opened


@rig
def _mmap_munmap_c() -> Iterator[tuple[int]]:
    with _guarded_hole(MIB):
        yield (MIB,)


def _map_unmap() -> None:
    Mapping(MIB).close()


def _mmap_close() -> None:
    mmap.mmap(-1, MIB, flags=_PRIVATE_ANONYMOUS).close()


_READ_WRITE = PROT_READ | PROT_WRITE  # computed once, as C's constant is


def _bare_mmap_munmap() -> None:
    _quickcalls.munmap(_quickcalls.mmap(MIB, _READ_WRITE, _PRIVATE_ANONYMOUS, -1, 0), MIB)


@contextlib.contextmanager
def _page_alone() -> Iterator[Mapping]:
    """A Mapping of one page that is a VMA of its own with no anonymous neighbour; the
    pages made before it that were not are kept, PROT_NONE, until the end (else the
    next would land where they were)."""
    with contextlib.ExitStack() as spares:
        for _ in range(16):
            m = spares.enter_context(Mapping(PAGE_SIZE))
            if _alone(m.address, PAGE_SIZE):
                yield m
                return
            m.mprotect(PROT_NONE)
        raise OsvirtError("mmap: no page of 16 made got a VMA of its own without an anonymous neighbour")


@rig
def _mprotect_python() -> Iterator[Callable[[], None]]:
    read_write = _READ_WRITE
    with _page_alone() as m:
        def mprotect_there_and_back() -> None:
            m.mprotect(PROT_READ)
            m.mprotect(read_write)
        yield mprotect_there_and_back


@rig
def _bare_mprotect() -> Iterator[Callable[[], None]]:
    read_write, mprotect = _READ_WRITE, _quickcalls.mprotect
    with _page_alone() as m:
        addr = m.address

        def mprotect_there_and_back() -> None:
            mprotect(addr, PAGE_SIZE, PROT_READ)
            mprotect(addr, PAGE_SIZE, read_write)
        yield mprotect_there_and_back


@rig
def _mprotect_c() -> Iterator[tuple[int]]:
    with _page_alone() as m:
        yield (m.address,)


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
              python=rig(_in_hole(_map_unmap)), c="mmap_munmap", c_args=_mmap_munmap_c,
              floor=("osvirt._quickcalls mmap + munmap", rig(_in_hole(_bare_mmap_munmap))),
              peer=("mmap.mmap(MAP_PRIVATE) + close", rig(_in_hole(_mmap_close))),
              note="every series maps into the same kind of hole, between PROT_NONE guards, so that "
                   "none extends a neighbouring VMA (before, whether one did depended on what each worker "
                   "had mapped); same system calls in all four (strace -c). Mapping(size) and its "
                   "finalizer are C's, and its address, size and holes live in the object "
                   "(osvirt._quickcalls.MappingBase), close() is made in C: as a Python class with a "
                   "__dict__ and a __del__ (close() and __init__ in C already) Mapping cost what any "
                   "such object does next to the same calls, 1.20-1.26x the floor in one process, "
                   "batches interleaved; now 1.08-1.12x, and under mmap.mmap's 1.19-1.30x (bench "
                   "runs at load ~1: 0.98, 0.99, 1.16). What is left is the object, made and freed: a "
                   "Python object costs more next to mmap + munmap than alone (a plain one: 0.47 us "
                   "alone, ~0.9 us next to them), the calls leaving the interpreter's memory cold. "
                   "floor/C 0.9-1.15: two builtin calls next to ~5 us of kernel work"),
    Primitive("mprotect", "Mapping.mprotect of one page to PROT_READ and back to read-write (two calls)",
              python=_mprotect_python, c="mprotect", c_args=_mprotect_c,
              floor=("osvirt._quickcalls.mprotect twice", _bare_mprotect),
              note="all three work on a page whose VMA is its own with no anonymous neighbour (a page "
                   "merged with its neighbour is split out and merged back at each call: twice the "
                   "kernel work, seen when two such pages sat side by side); same system calls "
                   "(strace -c: two mprotect an operation). Mapping.mprotect(prot) of the whole mapping "
                   "is made in C with its checks (osvirt._quickcalls.checked) and reads the mapping's "
                   "fields in the object (three attributes before: ~70 ns a call); what is left over "
                   "the bare calls is two method calls to a callable Python 3.11 does not specialize "
                   "(in one process, batches interleaved: 1.03-1.04x, once 1.18 with the load; bench "
                   "runs at load ~1: 1.02, 1.07, 1.05). floor/C 1.06-1.18: two "
                   "builtin calls and the loop's iteration next to two mprotect of ~1.3 us"),
]
