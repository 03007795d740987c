"""Ctrl-C in the middle of the device demos leaves no loop device, pty user or child behind."""
import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time

import psutil
import pytest

from osvirt.device import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@contextlib.contextmanager
def _running(*argv):
    proc = subprocess.Popen([sys.executable, "-u", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("osvirt demo")  # past interpreter start-up
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _interrupt(proc):
    """SIGINT the demo; its stderr and the children it had then."""
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=30)[1], kids


def _survivors(kids):
    """The demo's children (and theirs) still there once it has exited. Children
    blocks SIGINT from fork to owning the pid, so the demo killed and reaped
    every child before it exited: none is left, not even a zombie."""
    return [k for k in kids if k.is_running()]


@pytest.mark.needs("loop")
def test_ctrl_c_while_device_alloc_holds_loop_devices():
    with _running("demos/11_device_alloc.py", "--hold-s", "60") as proc:
        mark = f"/osvirt-{proc.pid}-"
        deadline = time.monotonic() + 30
        held = {}
        while len(held) < 2 and time.monotonic() < deadline and proc.poll() is None:
            held = {n: f for n, f in loop.attached().items() if mark in f}
            time.sleep(0.02)
        assert len(held) == 2, f"the demo never held its two loop devices: {proc.poll()}"
        err, kids = _interrupt(proc)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "interrupted, children reaped and objects removed" in err
    assert not {n: f for n, f in loop.attached().items() if mark in f}
    assert not any(os.path.exists(os.path.dirname(f)) for f in held.values())  # the private dir went too
    assert not _survivors(kids)


def _stopped_in_step(proc, title):
    """Read the demo's output until the step `title` begins, then SIGSTOP it: (the step's number, all
    it printed before the stop took effect)."""
    fd, out = proc.stdout.fileno(), b""
    while not (heading := re.search(rb"^\[(\d+)\] " + re.escape(title.encode()), out, re.M)):
        chunk = os.read(fd, 65536)
        assert chunk, f"the demo ended before the step {title!r}:\n{out.decode()}"
        out += chunk
    proc.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while psutil.Process(proc.pid).status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE):
        assert time.monotonic() < deadline, "SIGSTOP did not stop the demo"
        time.sleep(0.001)
    while select.select([fd], [], [], 0)[0] and (chunk := os.read(fd, 65536)):  # what it wrote before stopping
        out += chunk
    return int(heading[1]), out.decode()


@pytest.mark.parametrize("title", [
    "the window size set on a pty master",  # a child watches for SIGWINCH
    "termios raw mode",                     # it waits 0.3 s for an echo that never comes
    "a virtual serial sensor",              # a child serves the sensor
])
def test_ctrl_c_lands_in_a_step_of_the_device_demo_and_leaves_no_child(title):
    """The demo, stopped (SIGSTOP) while still in the step, gets SIGINT and SIGCONT: the
    interrupt lands there, so it exits 130 saying it cleaned up, before its next step and its verdict."""
    for _ in range(3):  # the stop may take effect only after the step ended (a loaded machine): again
        proc = subprocess.Popen([sys.executable, "-u", "demos/10_device.py"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            step, out = _stopped_in_step(proc, title)
            kids = psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(signal.SIGINT)  # held pending while stopped, delivered on SIGCONT
            proc.send_signal(signal.SIGCONT)
            rest, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert not _survivors(kids)
        if f"\n[{step + 1}] " not in out:
            break
    else:
        pytest.fail(f"the demo was past the step {title!r} each time SIGSTOP took effect")
    out, err = out + rest.decode(), err.decode()
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "interrupted, children reaped and objects removed" in err
    assert f"\n[{step + 1}] " not in out and not re.search(r"^(PASSED|FAILED) ", out, re.M), out
