"""The one module of osvirt.process that touches the C extension."""
from typing import Any

from osvirt._native import ffi, lib
from osvirt.errors import kernel_error

# Policy numbers from <sched.h>, through the cdef (csrc/scheduler.h).
SCHED_POLICIES: dict[str, int] = {name: getattr(lib, name) for name in (
    "SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_IDLE", "SCHED_DEADLINE")}
SCHED_RESET_ON_FORK: int = lib.SCHED_RESET_ON_FORK


def set_pdeathsig(signo: int, expected_parent: int) -> None:
    if lib.osv_set_pdeathsig(signo, expected_parent) == -1:
        raise kernel_error(ffi.errno, f"prctl(PR_SET_PDEATHSIG, {signo})")


# osvirt.process.sched checks every value first; cffi would still refuse any
# that does not fit its field (OverflowError), and no caller pointer reaches C.
def sched_setattr(pid: int, policy: int, flags: int, nice: int, priority: int, runtime_ns: int, deadline_ns: int,
                  period_ns: int) -> None:
    attr = ffi.new("struct osv_sched_attr *", {
        "sched_policy": policy, "sched_flags": flags, "sched_nice": nice,
        "sched_priority": priority, "sched_runtime": runtime_ns,
        "sched_deadline": deadline_ns, "sched_period": period_ns})
    if lib.osv_sched_setattr(pid, attr) == -1:
        raise kernel_error(ffi.errno, f"sched_setattr(pid {pid})")


def sched_getattr(pid: int) -> tuple[int, int, int, int, int, int, int]:
    """(policy, flags, nice, priority, runtime_ns, deadline_ns, period_ns) of `pid`."""
    attr: Any = ffi.new("struct osv_sched_attr *")  # a struct's cdata: its fields (the cdef's) are unknown to mypy
    if lib.osv_sched_getattr(pid, attr) == -1:
        raise kernel_error(ffi.errno, f"sched_getattr(pid {pid})")
    return (attr.sched_policy, attr.sched_flags, attr.sched_nice, attr.sched_priority,
            attr.sched_runtime, attr.sched_deadline, attr.sched_period)


def clock_getcpuclockid(pid: int) -> int:
    clock = ffi.new("clockid_t *")
    if lib.osv_clock_getcpuclockid(pid, clock) == -1:
        raise kernel_error(ffi.errno, f"clock_getcpuclockid(pid {pid})")
    return int(clock[0])
