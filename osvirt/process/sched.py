"""Scheduling: policies, nice values, CPU affinity, SCHED_DEADLINE, and what a process got.

Setting: `sched_setaffinity` (pin to CPUs), `setpriority` (nice),
`sched_setscheduler` (SCHED_OTHER/FIFO/RR/BATCH/IDLE), `sched_setattr`
(every policy, and the only way to SCHED_DEADLINE's runtime/deadline/period).
Reading back: `getpriority`, `sched_getscheduler`, `sched_getattr`,
`sched_rr_get_interval`. Observing: `cpu_time_ns` (the kernel's count of a
process's CPU time, in ns), `context_switches` (voluntary and involuntary),
`cpu_shares` (CPU time over wall time in a window), and `BusyChildren`,
CPU-bound children held at a gate until their scheduling is set.

Bad arguments raise ValueError before any system call. A refusal raises the
errno's OSError subclass naming the facility and the likely cause, e.g.
`PermissionError: sched_setscheduler(pid 0, SCHED_FIFO, priority 1): Operation
not permitted (needs CAP_SYS_NICE (not in effective set), or RLIMIT_RTPRIO >= 1: it is 0)`.
"""
import contextlib
import enum
import errno
import os
import resource
import signal
import time
import typing
from collections.abc import Iterable, Iterator

from osvirt import env
from osvirt._owned import Owned
from osvirt.errors import kernel_error
from osvirt.process import _native
from osvirt.process.spawn import Children, ready

__all__ = [
    "Policy", "SchedAttr", "ContextSwitches", "NICE_0_WEIGHT", "SCHED_PRIO_TO_WEIGHT",
    "sched_setaffinity", "setpriority", "getpriority", "sched_setscheduler", "sched_getscheduler",
    "sched_setattr", "sched_getattr", "sched_rr_get_interval",
    "cpu_time_ns", "context_switches", "cpu_shares", "spin", "BusyChildren",
]


class Policy(enum.IntEnum):
    """Scheduling policies (SCHED_OTHER ... SCHED_DEADLINE); the numbers come from <sched.h>."""
    SCHED_OTHER = _native.SCHED_POLICIES["SCHED_OTHER"]
    SCHED_FIFO = _native.SCHED_POLICIES["SCHED_FIFO"]
    SCHED_RR = _native.SCHED_POLICIES["SCHED_RR"]
    SCHED_BATCH = _native.SCHED_POLICIES["SCHED_BATCH"]
    SCHED_IDLE = _native.SCHED_POLICIES["SCHED_IDLE"]
    SCHED_DEADLINE = _native.SCHED_POLICIES["SCHED_DEADLINE"]


_REAL_TIME = (Policy.SCHED_FIFO, Policy.SCHED_RR)
_FAIR = (Policy.SCHED_OTHER, Policy.SCHED_BATCH)  # the policies a nice value weighs

# The CFS/EEVDF load weight of each nice value -20..19: sched_prio_to_weight[]
# in kernel/sched/core.c (no user-space header has it). Each step is ~1.25x,
# so that one nice level is ~10 % of CPU between two competitors.
SCHED_PRIO_TO_WEIGHT = (
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916,
    9548, 7620, 6100, 4904, 3906, 3121, 2501, 1991, 1586, 1277,
    1024, 820, 655, 526, 423, 335, 272, 215, 172, 137,
    110, 87, 70, 56, 45, 36, 29, 23, 18, 15,
)
NICE_0_WEIGHT = SCHED_PRIO_TO_WEIGHT[20]


class SchedAttr(typing.NamedTuple):
    """What sched_getattr reports: a policy and its parameters (times in ns).

    For SCHED_DEADLINE, runtime/deadline/period are the reservation; for the
    fair policies the kernel reports in runtime_ns the task's time slice.
    """
    policy: Policy
    priority: int = 0
    nice: int = 0
    runtime_ns: int = 0
    deadline_ns: int = 0
    period_ns: int = 0


class ContextSwitches(typing.NamedTuple):
    """Counts of a task's context switches: it gave up the CPU itself (voluntary:
    it blocked or slept) or the scheduler took it away (involuntary: preempted)."""
    voluntary: int
    involuntary: int

    def __sub__(self, other: "ContextSwitches") -> "ContextSwitches":
        return ContextSwitches(self.voluntary - other.voluntary, self.involuntary - other.involuntary)


# -- argument checks (before any system call) ----------------------------------
def _pid(pid: int, facility: str) -> int:
    if type(pid) is not int or not 0 <= pid < 2**31:
        raise ValueError(f"{facility}: pid must be an int in 0..2**31-1 (0: this process), not {pid!r}")
    return pid


def _policy(policy: int, facility: str) -> Policy:
    try:
        return Policy(policy)
    except ValueError:
        known = ", ".join(f"{p.name}={p.value}" for p in Policy)
        raise ValueError(f"{facility}: unknown policy {policy!r}; known: {known}") from None


def _nice(nice: int, facility: str) -> int:
    if type(nice) is not int or not -20 <= nice <= 19:
        raise ValueError(f"{facility}: nice must be an int in -20..19, not {nice!r}")
    return nice


def _priority(policy: Policy, priority: int, facility: str) -> int:
    low, high = os.sched_get_priority_min(policy), os.sched_get_priority_max(policy)  # the kernel's range
    if type(priority) is not int or not low <= priority <= high:
        raise ValueError(f"{facility}: {policy.name} takes a priority in {low}..{high}, not {priority!r}")
    return priority


def _deadline_ns(runtime_ns: int, deadline_ns: int, period_ns: int, facility: str) -> None:
    """The checks the kernel's __checkparam_dl makes, as clear errors."""
    for name, value in (("runtime_ns", runtime_ns), ("deadline_ns", deadline_ns), ("period_ns", period_ns)):
        if type(value) is not int or not 0 <= value < 2**63:
            raise ValueError(f"{facility}: {name} must be an int in 0..2**63-1, not {value!r}")
    if runtime_ns < 1024:
        raise ValueError(f"{facility}: runtime_ns must be at least 1024 (the kernel's resolution), not {runtime_ns}")
    period = period_ns or deadline_ns  # a period of 0 means "equal to the deadline"
    if not runtime_ns <= deadline_ns <= period:
        raise ValueError(f"{facility}: needs runtime_ns <= deadline_ns <= period_ns, "
                         f"not {runtime_ns} / {deadline_ns} / {period_ns}")
    low, high = (_sysctl_int(f"sched_deadline_period_{end}_us") for end in ("min", "max"))
    if low is not None and high is not None and not low * 1000 <= period <= high * 1000:
        raise ValueError(f"{facility}: period {period} ns is outside {low * 1000}..{high * 1000} ns "
                         f"(/proc/sys/kernel/sched_deadline_period_min_us and _max_us)")


def _sysctl_int(name: str) -> int | None:
    try:
        with open(f"/proc/sys/kernel/{name}") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


# -- refusals: the errno's OSError, naming the facility and the likely cause ----
def _rlimit(name: str) -> int | str:
    soft = resource.getrlimit(getattr(resource, name))[0]
    return "unlimited" if soft == resource.RLIM_INFINITY else soft


def _cause(err: int, pid: int, policy: Policy | None = None, nice: int | None = None) -> str | None:
    has_nice = "CAP_SYS_NICE" in env.capabilities()
    if err == errno.ESRCH:
        return f"no process {pid}"
    if err == errno.EBUSY and policy == Policy.SCHED_DEADLINE:
        return ("deadline admission control: the root domain has no bandwidth left under "
                "sched_rt_runtime_us/sched_rt_period_us for this runtime/period")
    if err not in (errno.EPERM, errno.EACCES):
        return None
    import psutil  # an error path's look-up; psutil costs more to import than all of osvirt.process
    with contextlib.suppress(psutil.Error):
        if pid and not has_nice and psutil.Process(pid).uids().real != os.getuid():
            return "the process belongs to another user"
    if not has_nice:
        if policy in _REAL_TIME:
            return f"needs CAP_SYS_NICE (not in effective set), or RLIMIT_RTPRIO >= 1: it is {_rlimit('RLIMIT_RTPRIO')}"
        if nice is not None:
            return (f"lowering a nice value needs CAP_SYS_NICE (not in effective set), "
                    f"or RLIMIT_NICE >= {20 - nice}: it is {_rlimit('RLIMIT_NICE')}")
        return "needs CAP_SYS_NICE (not in effective set)"
    if policy == Policy.SCHED_DEADLINE:
        return ("CAP_SYS_NICE is held, so likely the task's CPU affinity does not span its root "
                "domain, or its cpu cgroup grants no real-time runtime (cpu.rt_runtime_us)")
    if policy in _REAL_TIME:
        return ("CAP_SYS_NICE is held, so likely the task's cpu cgroup grants no real-time "
                "runtime (cgroup v1 cpu.rt_runtime_us is 0 below the root)")
    return None


@contextlib.contextmanager
def _refusal(facility: str, pid: int, policy: Policy | None = None, nice: int | None = None) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        assert e.errno is not None  # set by every failed system call
        raise kernel_error(e.errno, facility, _cause(e.errno, pid, policy, nice)) from None


# -- setting --------------------------------------------------------------------
def sched_setaffinity(pid: int, cpus: Iterable[int]) -> None:
    """Pin `pid` (0: this process) to the CPUs in `cpus` (CPU numbers)."""
    _pid(pid, "sched_setaffinity")
    wanted = set(cpus)
    count = os.cpu_count() or 1  # None only where the count is unknowable, never on Linux
    if not wanted or not all(type(c) is int and 0 <= c < count for c in wanted):
        raise ValueError(f"sched_setaffinity: cpus must be a non-empty set of ints in "
                         f"0..{count - 1}, not {sorted(wanted, key=str)}")
    with _refusal(f"sched_setaffinity(pid {pid}, {sorted(wanted)})", pid):
        os.sched_setaffinity(pid, wanted)


def setpriority(pid: int, nice: int) -> None:
    """Set the nice value of process `pid` (0: this process), -20..19."""
    _pid(pid, "setpriority")
    _nice(nice, "setpriority")
    with _refusal(f"setpriority(PRIO_PROCESS, pid {pid}, {nice})", pid, nice=nice):
        os.setpriority(os.PRIO_PROCESS, pid, nice)


def getpriority(pid: int) -> int:
    """The nice value of process `pid` (0: this process)."""
    _pid(pid, "getpriority")
    with _refusal(f"getpriority(PRIO_PROCESS, pid {pid})", pid):
        return os.getpriority(os.PRIO_PROCESS, pid)


def sched_setscheduler(pid: int, policy: int, priority: int = 0) -> None:
    """Set `pid`'s policy: SCHED_FIFO/RR with a priority 1..99, the others with 0.

    SCHED_DEADLINE needs parameters this call cannot carry: use sched_setattr.
    """
    _pid(pid, "sched_setscheduler")
    policy = _policy(policy, "sched_setscheduler")
    if policy == Policy.SCHED_DEADLINE:
        raise ValueError("sched_setscheduler: SCHED_DEADLINE needs runtime/deadline/period: use sched_setattr")
    _priority(policy, priority, "sched_setscheduler")
    with _refusal(f"sched_setscheduler(pid {pid}, {policy.name}, priority {priority})", pid, policy):
        os.sched_setscheduler(pid, policy, os.sched_param(priority))


def sched_getscheduler(pid: int) -> Policy:
    """`pid`'s policy, as a Policy (the SCHED_RESET_ON_FORK flag left out)."""
    _pid(pid, "sched_getscheduler")
    with _refusal(f"sched_getscheduler(pid {pid})", pid):
        return Policy(os.sched_getscheduler(pid) & ~_native.SCHED_RESET_ON_FORK)


def sched_setattr(pid: int, policy: int, *, priority: int = 0, nice: int = 0, runtime_ns: int = 0, deadline_ns: int = 0,
                  period_ns: int = 0) -> None:
    """sched_setattr(2): set any policy with its parameters; for SCHED_DEADLINE,
    the task gets `runtime_ns` of CPU in every `period_ns`, within `deadline_ns`
    of the period's start (period_ns 0: equal to deadline_ns)."""
    facility = "sched_setattr"
    _pid(pid, facility)
    policy = _policy(policy, facility)
    _priority(policy, priority, facility)
    _nice(nice, facility)
    if policy == Policy.SCHED_DEADLINE:
        _deadline_ns(runtime_ns, deadline_ns, period_ns, facility)
        facility = (f"sched_setattr(pid {pid}, SCHED_DEADLINE, runtime {runtime_ns} ns, "
                    f"deadline {deadline_ns} ns, period {period_ns} ns)")
    elif runtime_ns or deadline_ns or period_ns:
        raise ValueError(f"sched_setattr: runtime/deadline/period are for SCHED_DEADLINE, not {policy.name}")
    else:
        facility = f"sched_setattr(pid {pid}, {policy.name}, priority {priority}, nice {nice})"
    with _refusal(facility, pid, policy, nice if policy in _FAIR else None):
        _native.sched_setattr(pid, policy, 0, nice, priority, runtime_ns, deadline_ns, period_ns)


def sched_getattr(pid: int) -> SchedAttr:
    """sched_getattr(2): `pid`'s policy and parameters, as a SchedAttr."""
    _pid(pid, "sched_getattr")
    with _refusal(f"sched_getattr(pid {pid})", pid):
        policy, _flags, nice, priority, runtime, deadline, period = _native.sched_getattr(pid)
    return SchedAttr(Policy(policy), priority, nice, runtime, deadline, period)


def sched_rr_get_interval(pid: int) -> float:
    """The time slice, in seconds, that `pid` gets under SCHED_RR
    (/proc/sys/kernel/sched_rr_timeslice_ms unless changed)."""
    _pid(pid, "sched_rr_get_interval")
    with _refusal(f"sched_rr_get_interval(pid {pid})", pid):
        return os.sched_rr_get_interval(pid)


# -- observing --------------------------------------------------------------------
def cpu_time_ns(pid: int) -> int:
    """The CPU time process `pid` has used, in ns: its CPU-time clock
    (clock_getcpuclockid), the scheduler's own count, not the 10 ms ticks of /proc/PID/stat."""
    _pid(pid, "cpu_time_ns")
    with _refusal(f"clock_gettime(clock_getcpuclockid(pid {pid}))", pid):
        return time.clock_gettime_ns(_native.clock_getcpuclockid(pid))


def context_switches(pid: int) -> ContextSwitches:
    """ContextSwitches(voluntary, involuntary) of `pid` so far (/proc/PID/status, via psutil)."""
    _pid(pid, "context_switches")
    import psutil  # here, not at import: a before/after pair pays it once, before its first reading
    try:
        return ContextSwitches(*psutil.Process(pid or os.getpid()).num_ctx_switches())
    except psutil.NoSuchProcess:
        raise kernel_error(errno.ESRCH, f"/proc/{pid}/status", f"no process {pid}") from None


def cpu_shares(pids: Iterable[int], window_s: float) -> list[float]:
    """Each process's CPU time during the next `window_s` seconds, over that
    wall time (1.0: one whole CPU)."""
    if not 0 < window_s <= 60:
        raise ValueError(f"cpu_shares: window_s must be in (0, 60], not {window_s!r}")
    pids = list(pids)
    wall0, before = time.monotonic_ns(), [cpu_time_ns(p) for p in pids]
    time.sleep(window_s)
    after, wall1 = [cpu_time_ns(p) for p in pids], time.monotonic_ns()
    return [(b - a) / (wall1 - wall0) for a, b in zip(before, after)]


def spin(duration_s: float) -> None:
    """Burn CPU for `duration_s` seconds of wall time, never blocking."""
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        pass


def _busy_child(gate_r: int, gate_w: int, limit_s: float, ready_fd: int) -> None:
    os.close(gate_w)
    # The kernel SIGKILLs this process after limit_s of CPU at a real-time
    # policy without blocking: a SCHED_FIFO spinner cannot hold a CPU forever.
    limit_us = int(limit_s * 1e6)
    resource.setrlimit(resource.RLIMIT_RTTIME, (limit_us, limit_us))
    ready(ready_fd)
    os.read(gate_r, 1)  # blocks until the parent closes the gate (EOF)
    spin(limit_s)


class BusyChildren(Owned):
    """`count` CPU-bound children, held at a gate while their parent sets their
    scheduling, then released together by `start()`.

    When the constructor returns, each child has its RLIMIT_RTTIME set to
    `limit_s` (so it cannot spend longer than that at a real-time policy
    without blocking) and is about to block in read(2) on a pipe, until
    `start()` closes its write end; then it spins for at most `limit_s`
    seconds of wall time. Forked through `children` (a `Children`), so they
    die with their parent; `close()` kills and reaps them.
    """

    def __init__(self, children: Children, count: int, limit_s: float = 5.0) -> None:
        if type(count) is not int or not 1 <= count <= 64:
            raise ValueError(f"BusyChildren: count must be an int in 1..64, not {count!r}")
        if not 0 < limit_s <= 60:
            raise ValueError(f"BusyChildren: limit_s must be in (0, 60], not {limit_s!r}")
        self._children = children
        self.pids: list[int] = []
        gate_r, self._gate_w = os.pipe()
        try:
            for _ in range(count):
                self.pids.append(children.fork_ready(_busy_child, gate_r, self._gate_w, limit_s))
        except BaseException:
            self.close()
            raise
        finally:
            os.close(gate_r)

    def start(self) -> None:
        """Open the gate: every child starts spinning. Idempotent."""
        fd, self._gate_w = self._gate_w, -1
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        """Kill and reap the children, then close the gate. Idempotent."""
        for pid in self.pids:  # killed at the gate: a child given a real-time policy never spins
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if pid in self._children.pids:  # not already reaped by the Children's own close
                self._children.wait(pid)
        self.pids = []
        self.start()

    def __del__(self) -> None:
        if getattr(self, "_gate_w", -1) >= 0:
            os.close(self._gate_w)
            self._gate_w = -1
