"""Ctrl-C in the middle of the device demos leaves no loop device, pty user or child behind."""
import contextlib
import os
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


def test_ctrl_c_while_device_serves_its_sensor():
    """SIGINT at a few moments after the demo starts: exit 130 (or 0 if it was done), no child left."""
    for delay_s in (0.0, 0.05, 0.15):
        with _running("demos/10_device.py") as proc:
            time.sleep(delay_s)
            err, kids = _interrupt(proc)
        assert proc.returncode in (0, 128 + signal.SIGINT), err  # 0: it had already finished
        assert not _survivors(kids)
