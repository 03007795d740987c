"""Interrupting `osvirt demo sched` leaves no process behind: Ctrl-C (SIGINT)
lets it kill and reap its children; SIGKILL gives it no chance, and the
children die of PR_SET_PDEATHSIG."""
import signal
import subprocess
import sys
import time

import psutil
import pytest

from osvirt.process import Children


def _interrupt_mid_demo(signo):
    """Run the demo, record every descendant it has, send `signo` in the middle;
    returns (exit code, the descendants seen)."""
    seen = {}
    with Children() as kids:
        demo = kids.spawn([sys.executable, "-m", "osvirt", "demo", "sched"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        parent = psutil.Process(demo.pid)
        deadline = time.monotonic() + 10
        # Wait until the demo has busy children running (its first step), then a moment more.
        while len(seen) < 2 and time.monotonic() < deadline:
            seen.update({p.pid: p for p in parent.children(recursive=True)})
            time.sleep(0.02)
        time.sleep(0.3)
        seen.update({p.pid: p for p in parent.children(recursive=True)})
        demo.send_signal(signo)
        code = demo.wait(timeout=10)
    return code, seen


def _still_running(procs, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p.pid for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@pytest.mark.parametrize("signo, code", [(signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)])
def test_no_child_outlives_an_interrupted_demo(signo, code):
    exit_code, children = _interrupt_mid_demo(signo)
    assert len(children) >= 2, "the demo started no children before it was interrupted"
    assert exit_code == code
    assert _still_running(children.values()) == []
