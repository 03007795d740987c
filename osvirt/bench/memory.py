"""Memory primitives: minor page faults, mapping and unmapping."""
import mmap
import time

from osvirt.bench.harness import Batch, Primitive

__all__ = ["PRIMITIVES"]

PAGE = mmap.PAGESIZE
MIB = 1 << 20
PRIVATE = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS


def _touch_fresh(flags):
    """A Batch: one write per page of a fresh n-page anonymous mapping, only
    the writes timed. MADV_NOHUGEPAGE, as C does: each 4 KiB page faults on
    its own rather than a 2 MiB huge page at once."""
    def batch(n):
        m = mmap.mmap(-1, n * PAGE, flags=flags)
        try:
            m.madvise(mmap.MADV_NOHUGEPAGE)
            t0 = time.perf_counter_ns()
            for offset in range(0, n * PAGE, PAGE):
                m[offset] = 1
            return time.perf_counter_ns() - t0
        finally:
            m.close()
    return Batch(batch)


def _mmap_munmap():
    mmap.mmap(-1, MIB, flags=PRIVATE).close()


PRIMITIVES = [
    Primitive("page-fault", "a write to a fresh page of a MAP_PRIVATE anonymous mmap.mmap: one minor fault",
              python=_touch_fresh(PRIVATE), c="touch_fresh",
              peer=("mmap.mmap default (MAP_SHARED)", _touch_fresh(mmap.MAP_SHARED)),
              note="mmap.mmap(-1, size) is MAP_SHARED by default: shared anonymous memory is "
                   "shmem, whose faults cost more; pass flags=MAP_PRIVATE for private memory"),
    Primitive("mmap-1m", "mmap.mmap of 1 MiB (MAP_PRIVATE, anonymous), then close (munmap)",
              python=_mmap_munmap, c="mmap_munmap", c_args=(MIB,)),
]
