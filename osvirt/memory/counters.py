"""Fault and residency counters: what touching memory cost, measured.

`usage()` is one snapshot of this process: minor and major page faults from
getrusage(RUSAGE_SELF) (the kernel's min_flt/maj_flt, the same figures as
fields 10 and 12 of /proc/self/stat), and resident and swapped bytes from
/proc/self/status. Subtract two snapshots to see what the code between them
cost. `children_faults()` is what reaped children paid.
"""
import resource
from typing import NamedTuple

from osvirt.memory import procfs

__all__ = ["Usage", "usage", "children_faults"]


class Usage(NamedTuple):
    """Page faults so far (minor: no I/O; major: read from disk or swap), RSS and VmSwap."""
    minflt: int
    majflt: int
    rss_bytes: int
    swap_bytes: int

    def __sub__(self, other: "Usage") -> "Usage":  # quoted: Usage's fields must not be strings (ForwardRefs)
        return Usage(*(a - b for a, b in zip(self, other)))


def usage() -> Usage:
    """Faults, RSS and VmSwap of this process now."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    sizes = procfs.status()
    return Usage(ru.ru_minflt, ru.ru_majflt, sizes["VmRSS"], sizes.get("VmSwap", 0))


def children_faults() -> tuple[int, int]:
    """(minor, major) faults of every child reaped so far (getrusage(RUSAGE_CHILDREN))."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_minflt, ru.ru_majflt
