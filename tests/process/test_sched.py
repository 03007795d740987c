"""osvirt.process.sched against the kernel's own view: /proc/PID/sched and
/proc/PID/status, `chrt -p`, the stdlib's getters and the CPU-time clocks."""
import errno
import os
import pathlib
import re
import shutil
import subprocess
import time

import psutil
import pytest

import osvirt.process
from osvirt import env
from osvirt.naming import unique_name
from osvirt.process import BusyChildren, Children, Policy, sched

needs_chrt = pytest.mark.skipif(shutil.which("chrt") is None, reason="needs chrt (util-linux)")
refused_fifo = pytest.mark.skipif(bool(env.can("sched_fifo")), reason="SCHED_FIFO is allowed here")


def _read(path):
    return pathlib.Path(path).read_text()


def _proc_sched(pid):
    """/proc/PID/sched as {field: value}."""
    fields = {}
    for line in _read(f"/proc/{pid}/sched").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _chrt(pid):
    return subprocess.run(["chrt", "-p", str(pid)], capture_output=True, text=True, check=True).stdout


def _retry(measure, holds, tries=3):
    for _ in range(tries):
        figure = measure()
        if holds(figure):
            break
    return figure


@pytest.fixture
def held():
    """One child held at its gate (it never spins): a target for setting policies."""
    with Children() as kids, BusyChildren(kids, 1) as child:
        yield child.pids[0]


def test_all_names_are_exported():
    for name in sched.__all__:
        assert getattr(osvirt.process, name) is getattr(sched, name)
        assert name in osvirt.process.__all__


def test_policy_numbers_match_the_stdlibs():
    for name in ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_IDLE"):
        assert Policy[name] == getattr(os, name)
    assert Policy.SCHED_DEADLINE == 6  # include/uapi/linux/sched.h


# -- bad input: ValueError naming the facility, before any system call ---------
@pytest.mark.parametrize("call, facility", [
    (lambda: sched.sched_setscheduler(0, 42), "unknown policy"),
    (lambda: sched.sched_setscheduler(0, "SCHED_FIFO", 1), "unknown policy"),
    (lambda: sched.sched_setscheduler(0, Policy.SCHED_FIFO, 0), "SCHED_FIFO takes a priority in 1..99"),
    (lambda: sched.sched_setscheduler(0, Policy.SCHED_RR, 100), "SCHED_RR takes a priority in 1..99"),
    (lambda: sched.sched_setscheduler(0, Policy.SCHED_OTHER, 1), "SCHED_OTHER takes a priority in 0..0"),
    (lambda: sched.sched_setscheduler(0, Policy.SCHED_DEADLINE), "use sched_setattr"),
    (lambda: sched.sched_setscheduler(-1, Policy.SCHED_OTHER), "sched_setscheduler: pid"),
    (lambda: sched.setpriority(0, 20), "setpriority: nice must be"),
    (lambda: sched.setpriority(0, -21), "setpriority: nice must be"),
    (lambda: sched.setpriority(0, 1.5), "setpriority: nice must be"),
    (lambda: sched.getpriority("1"), "getpriority: pid"),
    (lambda: sched.sched_setaffinity(0, []), "sched_setaffinity: cpus"),
    (lambda: sched.sched_setaffinity(0, {os.cpu_count()}), "sched_setaffinity: cpus"),
    (lambda: sched.sched_setattr(0, Policy.SCHED_DEADLINE, runtime_ns=1023, deadline_ns=10**8), "at least 1024"),
    (lambda: sched.sched_setattr(0, Policy.SCHED_DEADLINE, runtime_ns=10**7, deadline_ns=10**6),
     "runtime_ns <= deadline_ns <= period_ns"),
    (lambda: sched.sched_setattr(0, Policy.SCHED_DEADLINE, runtime_ns=10**7, deadline_ns=10**8, period_ns=10**7),
     "runtime_ns <= deadline_ns <= period_ns"),
    (lambda: sched.sched_setattr(0, Policy.SCHED_DEADLINE, runtime_ns=10**7, deadline_ns=-1), "deadline_ns must be"),
    (lambda: sched.sched_setattr(0, Policy.SCHED_DEADLINE, runtime_ns=10**7, deadline_ns=2**63), "deadline_ns must be"),
    (lambda: sched.sched_setattr(0, Policy.SCHED_DEADLINE, runtime_ns=10**7, deadline_ns=10**8, period_ns=10**11),
     "sched_deadline_period_min_us and _max_us"),
    (lambda: sched.sched_setattr(0, Policy.SCHED_OTHER, runtime_ns=10**7), "are for SCHED_DEADLINE"),
    (lambda: sched.sched_setattr(0, Policy.SCHED_BATCH, nice=-21), "sched_setattr: nice"),
    (lambda: sched.cpu_shares([0], 0), "cpu_shares: window_s"),
    (lambda: BusyChildren(Children(), 0), "BusyChildren: count"),
])
def test_bad_input_is_refused_before_any_syscall(call, facility):
    before = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0), os.sched_getaffinity(0))
    with pytest.raises(ValueError, match=re.escape(facility)):
        call()
    assert (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0), os.sched_getaffinity(0)) == before


# -- setting and reading back ----------------------------------------------------
def test_affinity_is_what_proc_status_reports(held):
    cpu = max(os.sched_getaffinity(0))
    sched.sched_setaffinity(held, {cpu})
    assert os.sched_getaffinity(held) == {cpu}
    assert psutil.Process(held).cpu_affinity() == [cpu]


def test_raising_nice_needs_no_privilege_and_proc_stat_shows_it(held):
    sched.setpriority(held, 7)
    assert sched.getpriority(held) == 7
    assert int(_read(f"/proc/{held}/stat").rsplit(")", 1)[1].split()[16]) == 7  # field 19: nice


@pytest.mark.skipif("CAP_SYS_NICE" in env.capabilities(), reason="CAP_SYS_NICE may lower nice values")
def test_lowering_nice_unprivileged_is_refused_naming_the_capability(held):
    sched.setpriority(held, 5)
    with pytest.raises(PermissionError) as refused:
        sched.setpriority(held, 0)
    assert refused.value.errno == errno.EACCES
    assert "setpriority(PRIO_PROCESS" in str(refused.value) and "CAP_SYS_NICE" in str(refused.value)


@needs_chrt
@pytest.mark.parametrize("policy", [Policy.SCHED_BATCH, Policy.SCHED_IDLE])
def test_batch_and_idle_need_no_privilege_and_read_back(held, policy):
    sched.sched_setscheduler(held, policy)
    assert sched.sched_getscheduler(held) == policy == os.sched_getscheduler(held)
    assert int(_proc_sched(held)["policy"]) == policy
    assert f"current scheduling policy: {policy.name}" in _chrt(held)


@needs_chrt
@pytest.mark.needs("sched_fifo", "sched_rr")
@pytest.mark.parametrize("policy", [Policy.SCHED_FIFO, Policy.SCHED_RR])
def test_real_time_policies_read_back(held, policy):
    sched.sched_setscheduler(held, policy, 7)
    attr = sched.sched_getattr(held)
    assert (attr.policy, attr.priority) == (policy, 7)
    assert os.sched_getparam(held).sched_priority == 7
    fields = _proc_sched(held)
    assert (int(fields["policy"]), int(fields["prio"])) == (policy, 100 - 1 - 7)  # kernel prio: MAX_RT_PRIO - 1 - rt_priority
    out = _chrt(held)
    assert f"current scheduling policy: {policy.name}" in out and "current scheduling priority: 7" in out


@pytest.mark.needs("sched_rr")
def test_rr_interval_is_the_sysctl_time_slice(held):
    sched.sched_setscheduler(held, Policy.SCHED_RR, 1)
    slice_ms = int(_read("/proc/sys/kernel/sched_rr_timeslice_ms"))
    assert sched.sched_rr_get_interval(held) == pytest.approx(slice_ms / 1000, rel=0.05)


@refused_fifo
def test_fifo_refused_names_errno_and_capability(held):
    with pytest.raises(PermissionError) as refused:
        sched.sched_setscheduler(held, Policy.SCHED_FIFO, 1)
    assert refused.value.errno == errno.EPERM
    assert "sched_setscheduler" in str(refused.value) and "CAP_SYS_NICE" in str(refused.value)
    assert sched.sched_getscheduler(held) == Policy.SCHED_OTHER


@refused_fifo
def test_refused_probe_names_the_errno_and_the_cause():
    for what in ("sched_fifo", "sched_rr", "sched_deadline"):
        answer = env.can(what)
        assert not answer and "EPERM" in answer.reason and "CAP_SYS_NICE" in answer.reason


@needs_chrt
@pytest.mark.needs("sched_deadline")
def test_deadline_parameters_read_back(held):
    sched.sched_setattr(held, Policy.SCHED_DEADLINE, runtime_ns=5_000_000, deadline_ns=30_000_000,
                        period_ns=50_000_000)
    attr = sched.sched_getattr(held)
    assert (attr.policy, attr.runtime_ns, attr.deadline_ns, attr.period_ns) == \
        (Policy.SCHED_DEADLINE, 5_000_000, 30_000_000, 50_000_000)
    assert os.sched_getscheduler(held) == Policy.SCHED_DEADLINE
    assert int(_proc_sched(held)["policy"]) == Policy.SCHED_DEADLINE  # (its dl.runtime is what is left, not the reservation)
    assert "runtime/deadline/period parameters: 5000000/30000000/50000000" in _chrt(held)


CPU_CGROUP = "/sys/fs/cgroup/cpu"  # cgroup v1's cpu controller, where mounted so


@pytest.mark.needs("cap_sys_nice")
@pytest.mark.skipif(not os.path.exists(f"{CPU_CGROUP}/cpu.rt_runtime_us") or not os.access(CPU_CGROUP, os.W_OK),
                    reason="needs a writable cgroup v1 cpu controller with real-time group scheduling")
def test_fifo_in_a_cgroup_without_rt_runtime_is_refused_even_to_root(held):
    path = os.path.join(CPU_CGROUP, unique_name())
    os.mkdir(path)
    try:
        with open(f"{path}/cgroup.procs", "w") as f:
            f.write(str(held))
        assert _read(f"{path}/cpu.rt_runtime_us").strip() == "0"  # a new group gets no RT time
        with pytest.raises(PermissionError) as refused:
            sched.sched_setscheduler(held, Policy.SCHED_FIFO, 1)
        assert refused.value.errno == errno.EPERM
        assert "CAP_SYS_NICE is held" in str(refused.value) and "cpu.rt_runtime_us" in str(refused.value)
    finally:
        with open(f"{CPU_CGROUP}/cgroup.procs", "w") as f:  # back to the root group, so the new one can go
            f.write(str(held))
        os.rmdir(path)


def test_deadline_on_a_pinned_task_is_refused_even_with_privilege(held):
    """The kernel admits a deadline task only if its affinity spans its root
    domain (and without CAP_SYS_NICE not at all): EPERM either way."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 usable CPUs to pin to fewer than all")
    sched.sched_setaffinity(held, {max(os.sched_getaffinity(0))})
    with pytest.raises(PermissionError) as refused:
        sched.sched_setattr(held, Policy.SCHED_DEADLINE, runtime_ns=10**7, deadline_ns=10**8, period_ns=10**8)
    assert refused.value.errno == errno.EPERM
    assert "SCHED_DEADLINE" in str(refused.value)
    assert ("root domain" if "CAP_SYS_NICE" in env.capabilities() else "needs CAP_SYS_NICE") in str(refused.value)


def test_a_reaped_process_is_esrch_naming_the_facility():
    with Children() as kids:
        pid = kids.fork(lambda: 0)
        kids.wait(pid)
    for call in (sched.sched_getscheduler, sched.sched_getattr, sched.cpu_time_ns, sched.context_switches):
        with pytest.raises(ProcessLookupError, match=f"{pid}"):
            call(pid)


# -- observing ---------------------------------------------------------------------
def test_busy_children_wait_at_the_gate_with_rttime_bounded():
    with Children() as kids, BusyChildren(kids, 2, limit_s=2.0) as pair:
        for pid in pair.pids:
            limit = [line for line in _read(f"/proc/{pid}/limits").splitlines() if line.startswith("Max realtime timeout")][0]
            assert limit.split()[3:5] == ["2000000", "2000000"]  # us, soft and hard
        assert max(sched.cpu_shares(pair.pids, 0.2)) < 0.01  # blocked in read(2)
        assert {psutil.Process(p).status() for p in pair.pids} == {psutil.STATUS_SLEEPING}
        pair.start()
        assert min(sched.cpu_shares(pair.pids, 0.2)) > 0.03  # spinning (a shared, loaded machine: not 1.0)
        pids = list(pair.pids)
    for pid in pids:
        assert not psutil.pid_exists(pid)


def test_cpu_time_agrees_with_proc_stat_ticks():
    with Children() as kids, BusyChildren(kids, 1, limit_s=2.0) as child:
        pid = child.pids[0]
        child.start()
        time.sleep(0.3)
        ns = sched.cpu_time_ns(pid)
        times = psutil.Process(pid).cpu_times()  # /proc/PID/stat, in clock ticks
        assert ns > 0
        assert ns / 1e9 == pytest.approx(times.user + times.system, abs=0.05)


def test_nice_0_and_5_share_a_cpu_by_weight():
    cpu = max(os.sched_getaffinity(0))
    theory = sched.NICE_0_WEIGHT / sched.SCHED_PRIO_TO_WEIGHT[25]

    def ratio():
        with Children() as kids, BusyChildren(kids, 2, limit_s=3.0) as pair:
            for pid, nice in zip(pair.pids, (0, 5)):
                sched.sched_setaffinity(pid, {cpu})
                sched.setpriority(pid, nice)
            pair.start()
            first, second = sched.cpu_shares(pair.pids, 0.6)
        return first / max(second, 1e-9)

    assert _retry(ratio, lambda r: abs(r / theory - 1) <= 0.25) == pytest.approx(theory, rel=0.25)


def _status_switches(pid):
    fields = dict(line.split(":", 1) for line in _read(f"/proc/{pid}/status").splitlines())
    return int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"])


def _napper():
    for _ in range(5000):
        time.sleep(0.001)


def test_switch_counters_are_proc_status_and_grow():
    with Children() as kids:
        sleeper = kids.fork(_napper)
        first = sched.context_switches(sleeper)
        time.sleep(0.2)
        second = sched.context_switches(sleeper)
        assert first.voluntary <= _status_switches(sleeper)[0]
        gained = second - first
        assert gained.voluntary >= 30  # one per 1 ms nap: ~190 in 0.2 s, fewer under load
        assert second == pytest.approx(_status_switches(sleeper), abs=20)  # it keeps napping between reads


def test_busy_processes_sharing_a_cpu_are_preempted():
    cpu = max(os.sched_getaffinity(0))
    with Children() as kids, BusyChildren(kids, 2, limit_s=2.0) as pair:
        for pid in pair.pids:
            sched.sched_setaffinity(pid, {cpu})
        pair.start()
        before = [sched.context_switches(p) for p in pair.pids]
        time.sleep(0.3)
        gained = [sched.context_switches(p) - b for p, b in zip(pair.pids, before)]
    for counts in gained:
        assert counts.involuntary >= 5 and counts.voluntary <= 1
