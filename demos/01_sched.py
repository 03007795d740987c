"""How Linux shares CPUs between processes, measured (seed §4.1.1, `schedule`).

The article's `schedule()` is empty; here the kernel's scheduler does the work
and the demo measures what it did. Two CPU-bound children pinned to one CPU
share it in the ratio of their nice values' load weights. The policies are
set on children and read back: SCHED_BATCH and SCHED_IDLE (anyone may ask),
SCHED_FIFO and SCHED_RR (with the RR time slice) and SCHED_DEADLINE, whose
runtime/period reservation only `sched_setattr` can carry. A SCHED_FIFO child
starves a SCHED_OTHER one on its CPU, up to the real-time throttle; a
SCHED_DEADLINE child gets its reserved share. A sleeper gives up the CPU
itself (voluntary switches); busy processes sharing a CPU are preempted
(involuntary switches); a process waiting on an empty pipe is not run at all
and keeps its pages resident. Last, the article's `fork(); fork();`, counted.
Real-time children are bounded: RLIMIT_RTTIME and a wall-time limit end them,
and this process moves off their CPU while they run.

Usage: python demos/01_sched.py [--json]
"""
import contextlib
import os
import pathlib
import resource
import signal
import sys
import time

import psutil

from osvirt import env
from osvirt.demo import run
from osvirt.memory import PAGE_SIZE, Mapping, procfs
from osvirt.process import ready, sched, set_pdeathsig
from osvirt.process.sched import Policy

NAME = "sched"
SEED = "4.1.1 schedule"
SUMMARY = "nice weights, FIFO/RR/BATCH/IDLE/DEADLINE policies and context switches, measured"

WINDOW_S = 1.0  # one RT throttle period: short windows see its 50 ms slots unevenly
WAITER_BYTES = 16 << 20  # what the waiting process holds in memory
NAPS = 250  # the sleeper's 1 ms sleeps


def _sysctl(name):
    return pathlib.Path("/proc/sys/kernel", name).read_text()


def _within(observed, theory, tolerance=0.25):
    return abs(observed / theory - 1) <= tolerance


@contextlib.contextmanager
def _away_from(cpu):
    """Keep this process off `cpu` while a real-time child owns it."""
    allowed = os.sched_getaffinity(0)
    sched.sched_setaffinity(0, allowed - {cpu})
    try:
        yield
    finally:
        sched.sched_setaffinity(0, allowed)


def _nice_ratio(demo, cpu, nice):
    with sched.BusyChildren(demo.children, 2, limit_s=WINDOW_S + 2) as pair:
        for pid, value in zip(pair.pids, (0, nice)):
            sched.sched_setaffinity(pid, {cpu})
            sched.setpriority(pid, value)
        pair.start()
        first, second = sched.cpu_shares(pair.pids, WINDOW_S)
    return first / max(second, 1e-9)


def _sleeper(naps, report_w):
    """Sleep 1 ms `naps` times; report the context switches the kernel counted for this
    process meanwhile (getrusage: voluntary, involuntary)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(naps):
        time.sleep(0.001)
    after = resource.getrusage(resource.RUSAGE_SELF)
    os.write(report_w, f"{after.ru_nvcsw - before.ru_nvcsw} {after.ru_nivcsw - before.ru_nivcsw}".encode())


def _nap_switches(demo, naps):
    """ContextSwitches of a child over `naps` sleeps of 1 ms."""
    report_r, report_w = os.pipe()
    with os.fdopen(report_r, "rb") as report:
        try:
            pid = demo.children.fork(_sleeper, naps, report_w)
        finally:
            os.close(report_w)
        counts = report.read()  # EOF: the child reported and exited
    demo.children.wait(pid)
    return sched.ContextSwitches(*map(int, counts.split()))


def _waiter(region, resource_r, ready_fd):
    """A process that waits for a resource: it writes every page of `region` (its own copies
    from now on), then blocks reading a pipe nobody writes to."""
    region.touch(write=True)
    ready(ready_fd)
    os.read(resource_r, 1)


def _waiting(pid, region):
    """What the kernel says of a waiting process: its state, its CPU time (ns), its context
    switches and how many pages of `region` are resident and swapped in its address space
    (/proc/PID/pagemap: exactly the region's pages, where smaps would count a VMA the
    kernel merged with a neighbour)."""
    pages = procfs.pagemap(region.address, WAITER_BYTES // PAGE_SIZE, pid)
    return {"state": psutil.Process(pid).status(), "cpu_ns": sched.cpu_time_ns(pid),
            "switches": sched.context_switches(pid),
            "resident": sum(p.present for p in pages), "swapped": sum(p.swapped for p in pages)}


def _one_per_nap(switches):
    # A nap whose deadline passed before its process blocked (preempted, or its virtual
    # CPU stalled) costs no switch; more so on a busy machine.
    return 0.75 * NAPS <= switches.voluntary <= NAPS


def _preempted(switches):
    return switches.involuntary >= 10 and switches.voluntary < switches.involuntary


def _resident(waited):
    return all((w["state"], w["resident"], w["swapped"]) == (psutil.STATUS_SLEEPING, WAITER_BYTES // PAGE_SIZE, 0)
               for w in waited)


def _not_run(waited):
    first, last = waited
    return first["cpu_ns"] == last["cpu_ns"] and first["switches"] == last["switches"]


def _busy_and_waiting(demo, cpu):
    """Over half a window: the context switches of two busy children pinned to `cpu`, and
    what the kernel says of a waiting process at its start and its end."""
    region = demo.own(Mapping(WAITER_BYTES))  # mapped here, written only by the waiter
    resource_r, resource_w = os.pipe()
    try:
        waiter = demo.children.fork_ready(_waiter, region, resource_r)
        with sched.BusyChildren(demo.children, 2, limit_s=WINDOW_S + 2) as pair:
            for pid in pair.pids:
                sched.sched_setaffinity(pid, {cpu})
            pair.start()
            _until_asleep(waiter)
            before, waited = [sched.context_switches(pid) for pid in pair.pids], [_waiting(waiter, region)]
            time.sleep(WINDOW_S / 2)
            busy = [sched.context_switches(pid) - b for pid, b in zip(pair.pids, before)]
            waited.append(_waiting(waiter, region))
        os.kill(waiter, signal.SIGKILL)
        demo.children.wait(waiter)
    finally:
        os.close(resource_r)
        os.close(resource_w)
    region.close()
    return busy, waited


def _until_asleep(pid, timeout_s=10.0):
    """Wait until `pid` is asleep: between ready() and blocking in read(2) it still runs."""
    deadline = time.monotonic() + timeout_s
    while psutil.Process(pid).status() != psutil.STATUS_SLEEPING and time.monotonic() < deadline:
        time.sleep(0.001)


def _c_fork():
    """fork(2) as C has it: it returns in parent and child; the child dies with its parent."""
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        set_pdeathsig(signal.SIGKILL, parent)
    return pid


def _seed_main(report_w):
    """§4.1.1's main: `pid_t pid1 = fork(); pid_t pid2 = fork();`, then the next line."""
    pid1 = _c_fork()
    pid2 = _c_fork()
    os.write(report_w, f"{os.getpid()} {pid1} {pid2}\n".encode())  # < PIPE_BUF: one atomic write
    with contextlib.suppress(ChildProcessError):
        while True:
            os.wait()


def body(demo):
    cpu = max(os.sched_getaffinity(0))

    for nice in (5, 10):
        theory = sched.NICE_0_WEIGHT / sched.SCHED_PRIO_TO_WEIGHT[20 + nice]
        with demo.step(f"two CPU-bound children at nice 0 and nice {nice}, pinned to one CPU",
                       asked=f"sched_setaffinity(pid, {{{cpu}}}); setpriority(PRIO_PROCESS, pid, {nice})"):
            ratio = demo.retry(lambda: _nice_ratio(demo, cpu, nice), lambda r: _within(r, theory))
            demo.check(f"CPU time ratio nice 0 : nice {nice}",
                       f"{theory:.2f} (weights {sched.NICE_0_WEIGHT}:{sched.SCHED_PRIO_TO_WEIGHT[20 + nice]}) within 25 %",
                       f"{ratio:.2f}", _within(ratio, theory))

    with demo.step("SCHED_BATCH and SCHED_IDLE set on a child and read back",
                   asked="sched_setscheduler(pid, SCHED_BATCH|SCHED_IDLE, 0); sched_getscheduler(pid)"):
        with sched.BusyChildren(demo.children, 1) as child:
            for policy in (Policy.SCHED_BATCH, Policy.SCHED_IDLE):  # BATCH first: leaving IDLE needs privilege
                sched.sched_setscheduler(child.pids[0], policy)
                seen = sched.sched_getscheduler(child.pids[0])
                demo.check(f"{policy.name} read back", policy.name, seen.name, seen == policy)

    with demo.step("SCHED_FIFO and SCHED_RR set on a child and read back; the RR time slice",
                   asked="sched_setscheduler(pid, SCHED_FIFO|SCHED_RR, 1); sched_getattr(pid); sched_rr_get_interval(pid)"):
        demo.require(env.can("sched_fifo"))
        demo.require(env.can("sched_rr"))
        with sched.BusyChildren(demo.children, 1) as child:  # held at its gate: it never spins at RT
            pid = child.pids[0]
            for policy in (Policy.SCHED_FIFO, Policy.SCHED_RR):
                sched.sched_setscheduler(pid, policy, 1)
                seen = sched.sched_getattr(pid)
                demo.check(f"{policy.name} read back", f"{policy.name} priority 1",
                           f"{seen.policy.name} priority {seen.priority}",
                           (seen.policy, seen.priority) == (policy, 1))
            slice_ms = sched.sched_rr_get_interval(pid) * 1000
            theory_ms = int(_sysctl("sched_rr_timeslice_ms"))
            demo.check("SCHED_RR time slice", f"{theory_ms} ms (/proc/sys/kernel/sched_rr_timeslice_ms)",
                       f"{slice_ms:g} ms", _within(slice_ms, theory_ms, 0.05))

    with demo.step("a SCHED_FIFO busy child and a SCHED_OTHER busy child on one CPU",
                   asked=f"sched_setaffinity(both, {{{cpu}}}); sched_setscheduler(fifo, SCHED_FIFO, 1)"):
        demo.require(env.can("sched_fifo"))
        if len(os.sched_getaffinity(0)) < 2:
            demo.require(env.Answer(False, "needs 2 usable CPUs: this process must stay off the real-time child's CPU"))
        rt_runtime = int(_sysctl("sched_rt_runtime_us"))
        rt_period = int(_sysctl("sched_rt_period_us"))
        # Each throttle period leaves (period - runtime) to other tasks; a window of
        # one period can hold that slot twice, at its two edges.
        demo.require(env.Answer(rt_runtime >= 0, "real-time throttling is off (sched_rt_runtime_us is -1): "
                                "a SCHED_FIFO spinner would hold its CPU until RLIMIT_RTTIME kills it"))
        left = (rt_period - rt_runtime) / rt_period
        most = left * (1 + rt_period / 1e6 / WINDOW_S)

        def starve():
            with _away_from(cpu), sched.BusyChildren(demo.children, 2, limit_s=WINDOW_S + 2) as pair:
                fifo, other = pair.pids
                for pid in pair.pids:
                    sched.sched_setaffinity(pid, {cpu})
                sched.sched_setscheduler(fifo, Policy.SCHED_FIFO, 1)
                pair.start()
                return sched.cpu_shares(pair.pids, WINDOW_S)

        fifo_share, other_share = demo.retry(starve, lambda s: s[1] <= most and s[0] >= 1 - most)
        demo.say(f"sched_rt_runtime_us = {rt_runtime} of sched_rt_period_us = {rt_period}: "
                 f"real-time tasks may use {rt_runtime / rt_period:.0%} of each period")
        demo.check("SCHED_OTHER child's share of the CPU", f"<= {left:.0%} of each period ({most:.0%} over a "
                   f"{WINDOW_S:g} s window), against 50 % if both were SCHED_OTHER",
                   f"{other_share:.1%}", other_share <= most)
        demo.check("SCHED_FIFO child's share of the CPU", f">= {1 - most:.0%}",
                   f"{fifo_share:.1%}", fifo_share >= 1 - most)

    with demo.step("SCHED_DEADLINE: runtime 10 ms every 100 ms for a busy child",
                   asked="sched_setattr(pid, {SCHED_DEADLINE, runtime 10 ms, deadline 100 ms, period 100 ms}); sched_getattr(pid)"):
        demo.require(env.can("sched_deadline"))
        runtime_ns, period_ns = 10_000_000, 100_000_000

        def reserved():
            # Not pinned: the kernel admits a deadline task only if its affinity spans its root domain.
            with sched.BusyChildren(demo.children, 1, limit_s=WINDOW_S + 2) as child:
                pid = child.pids[0]
                sched.sched_setattr(pid, Policy.SCHED_DEADLINE, runtime_ns=runtime_ns,
                                    deadline_ns=period_ns, period_ns=period_ns)
                attr = sched.sched_getattr(pid)
                child.start()
                return attr, sched.cpu_shares(child.pids, WINDOW_S)[0]

        attr, share = demo.retry(reserved, lambda r: _within(r[1], runtime_ns / period_ns))
        demo.check("sched_getattr reads back", "SCHED_DEADLINE 10000000 / 100000000 / 100000000 ns",
                   f"{attr.policy.name} {attr.runtime_ns} / {attr.deadline_ns} / {attr.period_ns} ns",
                   (attr.policy, attr.runtime_ns, attr.deadline_ns, attr.period_ns)
                   == (Policy.SCHED_DEADLINE, runtime_ns, period_ns, period_ns))
        demo.check("busy child's CPU share", "10 % (runtime / period) within 25 %",
                   f"{share:.1%}", _within(share, runtime_ns / period_ns))

    with demo.step("a sleeper, a waiter, and two busy children sharing one CPU",
                   asked=f"clock_nanosleep(1 ms) x {NAPS}, getrusage(RUSAGE_SELF) around them; read(2) on an "
                         "empty pipe; /proc/PID/status voluntary_ctxt_switches, nonvoluntary_ctxt_switches, State; "
                         "/proc/PID/pagemap present and swapped bits; clock_gettime(the waiter's CPU clock)"):
        slept = demo.retry(lambda: _nap_switches(demo, NAPS), _one_per_nap)
        demo.check("sleeper: voluntary switches", f"one per nap at most: {NAPS}, and at least 75 % of that",
                   f"{slept.voluntary} voluntary, {slept.involuntary} involuntary over {NAPS} naps",
                   _one_per_nap(slept))
        busy, waited = demo.retry(lambda: _busy_and_waiting(demo, cpu),
                                  lambda r: all(map(_preempted, r[0])) and _resident(r[1]) and _not_run(r[1]))
        for n, counts in enumerate(busy, 1):
            demo.check(f"busy child {n}: involuntary switches", "preempted at least every 50 ms (>= 10), "
                       "hardly ever yields", f"{counts.involuntary} involuntary, {counts.voluntary} voluntary",
                       _preempted(counts))
        first, last = waited
        demo.check(f"the waiter stays in memory for the {WINDOW_S / 2:g} s it waits",
                   f"state sleeping; all {WAITER_BYTES >> 20} MiB it wrote resident ({WAITER_BYTES // PAGE_SIZE} "
                   "pages present in its pagemap, none swapped), at the start and at the end",
                   " -> ".join(f"state {w['state']}, {w['resident']} present, {w['swapped']} swapped"
                               for w in waited), _resident(waited))
        switched = last["switches"] - first["switches"]
        demo.check("the waiter is not run while it waits", "off the run queue: CPU time +0 ns, no context switch",
                   f"CPU time +{last['cpu_ns'] - first['cpu_ns']} ns, {switched.voluntary} voluntary, "
                   f"{switched.involuntary} involuntary switches", _not_run(waited))
        demo.say("Erratum: the article (§3.1.1) says a process that waits is removed from memory, its "
                 "state saved to the process table, and that switching happens when a process waits. "
                 "Linux only takes a waiting process off the run queue: it is not run, and its pages stay "
                 "resident. And busy processes that never wait are switched too, preempted: the "
                 "involuntary switches above.")

    with demo.step("the seed's fork(); fork();",
                   asked="fork(); fork(); then each process writes its pid to a pipe"):
        report_r, report_w = os.pipe()
        with os.fdopen(report_r, "rb") as reports:
            try:
                pid = demo.children.fork(_seed_main, report_w)
            finally:
                os.close(report_w)
            lines = reports.read().decode().split("\n")[:-1]  # EOF: all four wrote and exited
        demo.children.wait(pid)
        rows = [tuple(map(int, line.split())) for line in lines]
        for me, pid1, pid2 in sorted(rows, key=lambda r: (r[1] == 0, r[2] == 0)):
            demo.say(f"pid {me}: pid1 = {pid1}, pid2 = {pid2}")
        distinct = len({me for me, _, _ in rows})
        demo.check("processes reaching the line after both forks", "4 (each fork doubles them: 2 x 2)",
                   f"{distinct}", distinct == 4)
        demo.say("Erratum: the article says this code creates two processes. The first fork makes a child, "
                 "then parent and child both run the second fork: four processes, three of them new.")


def main(argv=None):
    return run(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
