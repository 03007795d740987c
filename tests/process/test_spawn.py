import os
import signal
import subprocess
import time

import psutil
import pytest

from osvirt.process import Children, fork, ready, set_pdeathsig


def _gone(pid, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


def test_exit_code_is_the_targets_result():
    with Children() as kids:
        assert kids.wait(kids.fork(lambda: 7)) == 7
        assert kids.wait(kids.fork(lambda: None)) == 0


def test_an_exception_in_the_child_exits_1_and_never_unwinds_into_the_parent(capfd):
    marker = []
    with Children() as kids:
        try:
            pid = kids.fork(lambda: 1 / 0)
        finally:
            marker.append(os.getpid())  # would also run in the child if it unwound
        assert kids.wait(pid) == 1
    assert marker == [os.getpid()]
    assert "ZeroDivisionError" in capfd.readouterr().err


def test_wait_reports_the_killing_signal():
    with Children() as kids:
        pid = kids.fork(time.sleep, 60)
        os.kill(pid, signal.SIGTERM)
        assert kids.wait(pid) == -signal.SIGTERM


def test_wait_with_timeout_raises_and_keeps_the_child():
    with Children() as kids:
        pid = kids.fork(time.sleep, 60)
        with pytest.raises(TimeoutError):
            kids.wait(pid, timeout_s=0.05)
        assert pid in kids.pids
    assert _gone(pid)


def test_close_kills_and_reaps_every_child():
    kids = Children()
    pids = [kids.fork(time.sleep, 60) for _ in range(3)]
    proc = kids.spawn(["sleep", "60"])
    kids.close()
    for pid in pids + [proc.pid]:
        with pytest.raises(psutil.NoSuchProcess):  # reaped: not even a zombie
            psutil.Process(pid)
    kids.close()  # idempotent


def _parent_of_a_sleeper(pipe_w):
    pid = fork(time.sleep, 60)
    os.write(pipe_w, str(pid).encode())
    time.sleep(60)


def test_pdeathsig_kills_the_child_of_a_sigkilled_parent():
    r, w = os.pipe()
    with Children() as kids:
        parent = kids.fork(_parent_of_a_sleeper, w)
        os.close(w)
        grandchild = int(os.read(r, 32))
        os.close(r)
        assert psutil.Process(grandchild).ppid() == parent
        assert psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE
        os.kill(parent, signal.SIGKILL)  # no Python code of the parent runs
        assert kids.wait(parent) == -signal.SIGKILL
    assert _gone(grandchild), "the grandchild outlived its SIGKILLed parent"


def test_spawned_program_dies_with_its_parent():
    r, w = os.pipe()

    def parent():
        kids = Children()
        os.write(w, str(kids.spawn(["sleep", "60"]).pid).encode())
        time.sleep(60)

    with Children() as kids:
        pid = kids.fork(parent)
        sleeper = int(os.read(r, 32))
        os.close(r)
        os.close(w)
        os.kill(pid, signal.SIGKILL)
        kids.wait(pid)
    assert _gone(sleeper)


@pytest.mark.parametrize("bad", [0, -1, signal.NSIG, 10_000])
def test_bad_signal_numbers_are_refused_before_any_syscall(bad):
    with pytest.raises(ValueError, match="PR_SET_PDEATHSIG"):
        set_pdeathsig(bad)
    with pytest.raises(ValueError, match="PR_SET_PDEATHSIG"):
        fork(lambda: 0, pdeathsig=bad)


def test_waiting_for_a_stranger_is_refused():
    with Children() as kids:
        with pytest.raises(ValueError, match="not a child owned here"):
            kids.wait(1)


def _mask(status_line, status=None):
    """A signal set from /proc/<pid>/status (SigBlk, ShdPnd, ...), as a set of signal numbers."""
    if status is None:
        with open("/proc/self/status") as f:
            status = f.read()
    bits = int(next(line for line in status.splitlines() if line.startswith(status_line + ":")).split()[1], 16)
    return {n for n in range(1, 65) if bits >> (n - 1) & 1}


def test_sigint_between_fork_and_registration_waits_until_the_child_is_owned(monkeypatch):
    seen = {}
    real_fork = os.fork

    def fork_then_ctrl_c():
        pid = real_fork()
        if pid:  # the parent, in the window before Children registers the pid
            os.kill(os.getpid(), signal.SIGINT)
            seen["pending"] = _mask("ShdPnd")  # held by the kernel, not delivered
        return pid

    monkeypatch.setattr(os, "fork", fork_then_ctrl_c)
    kids = Children()
    with pytest.raises(KeyboardInterrupt):
        kids.fork(time.sleep, 60)
    monkeypatch.undo()
    assert signal.SIGINT in seen["pending"]
    (pid,) = kids.pids  # the interrupt came once the child was owned
    assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    kids.close()
    assert _gone(pid)
    assert not {signal.SIGINT, signal.SIGTERM} & _mask("SigBlk")  # the caller's mask is back


def test_forked_child_and_spawned_program_start_with_the_callers_signal_mask():
    before = _mask("SigBlk")
    assert not {signal.SIGINT, signal.SIGTERM} & before
    r, w = os.pipe()

    def report_mask():
        with open("/proc/self/status") as f:
            os.write(w, f.read().encode())

    with Children() as kids:
        assert kids.wait(kids.fork(report_mask), timeout_s=10) == 0
        os.close(w)
        with os.fdopen(r) as f:
            forked = _mask("SigBlk", f.read())
        proc = kids.spawn(["cat", "/proc/self/status"], stdout=subprocess.PIPE, text=True)
        spawned = _mask("SigBlk", proc.communicate(timeout=10)[0])
    assert forked == before
    assert spawned == before
    assert _mask("SigBlk") == before


def test_fork_ready_returns_once_the_child_is_ready():
    with Children() as kids:
        pid = kids.fork_ready(_set_nice_then_ready, 7)
        assert psutil.Process(pid).nice() == 7  # done before ready(): the parent never races it
        kids.wait(pid, timeout_s=10)


def _set_nice_then_ready(nice, ready_fd):
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    ready(ready_fd)
    time.sleep(1)


def test_fork_ready_reports_a_child_that_died_first():
    with Children() as kids:
        with pytest.raises(ChildProcessError, match="before it was ready"):
            kids.fork_ready(lambda fd: None)


def test_fork_ready_times_out_with_the_child_still_owned():
    with Children() as kids:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="not ready after 0.2 s"):
            kids.fork_ready(lambda fd: time.sleep(60), timeout_s=0.2)
        assert time.monotonic() - started >= 0.2
        (pid,) = kids.pids
    assert _gone(pid)


@pytest.mark.parametrize("bad", [0, -1, 1e9])
def test_fork_ready_rejects_a_bad_timeout(bad):
    with Children() as kids:
        with pytest.raises(ValueError, match="timeout_s"):
            kids.fork_ready(lambda fd: None, timeout_s=bad)
        assert kids.pids == []
