"""Fault and residency counters: what touching memory cost, measured.

`usage()` is one snapshot of this process: minor and major page faults from
getrusage(RUSAGE_SELF) (the kernel's min_flt/maj_flt, the same figures as
fields 10 and 12 of /proc/self/stat), and resident and swapped bytes from
/proc/self/status. Subtract two snapshots to see what the code between them
cost. `children_faults()` is what reaped children paid.
"""
import collections
import resource

from osvirt.memory import procfs

__all__ = ["Usage", "usage", "children_faults"]


class Usage(collections.namedtuple("Usage", "minflt majflt rss_bytes swap_bytes")):
    """Page faults so far (minor: no I/O; major: read from disk or swap), RSS and VmSwap."""

    def __sub__(self, other):
        return Usage(*(a - b for a, b in zip(self, other)))


def usage():
    """Faults, RSS and VmSwap of this process now."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    sizes = procfs.status()
    return Usage(ru.ru_minflt, ru.ru_majflt, sizes["VmRSS"], sizes.get("VmSwap", 0))


def children_faults():
    """(minor, major) faults of every child reaped so far (getrusage(RUSAGE_CHILDREN))."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_minflt, ru.ru_majflt
