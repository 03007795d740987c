"""Ctrl-C in the middle of the ipc demo leaves no queue, segment, FIFO or child behind.

The demo runs with --linger, which makes it pause while it holds every kind
of object and list them; the test checks each one exists, sends SIGINT, and
checks each one is gone.
"""
import glob
import os
import re
import stat
import tempfile
import time

import posix_ipc

def _sysv_ids(kind):
    with open(f"/proc/sysvipc/{kind}") as f:
        return {int(line.split()[1]) for line in list(f)[1:]}


def _mq_exists(name):
    try:
        posix_ipc.MessageQueue(name).close()
    except posix_ipc.ExistentialError:
        return False
    return True


def _existence(text, alive):
    """(kind, name) -> whether it exists now, for every object named in the demo's listing."""
    found = {}
    for path in re.findall(r"Fifo\('([^']+)'\)", text):
        found["fifo", path] = os.path.exists(path) and stat.S_ISFIFO(os.stat(path).st_mode)
        found["private dir", os.path.dirname(path)] = os.path.isdir(os.path.dirname(path))
    for name in re.findall(r"PosixMessageQueue\('([^']+)'\)", text):
        found["POSIX mq", name] = _mq_exists(name)
    for ident in re.findall(r"SysVMessageQueue\(id=(\d+)\)", text):
        found["SysV msq", ident] = int(ident) in _sysv_ids("msg")
    for name in re.findall(r"PosixSharedMemory\('([^']+)'", text):
        found["/dev/shm", name] = os.path.exists(f"/dev/shm{name}")
    for ident in re.findall(r"SysVSharedMemory\(id=(\d+)", text):
        found["SysV shm", ident] = int(ident) in _sysv_ids("shm")
    for pid in re.findall(r"child pid (\d+)", text):
        found["child", pid] = alive(int(pid))
    return found


def test_sigint_while_holding_everything_leaves_nothing(lingering_demo):
    demo = lingering_demo("02_ipc.py")
    listing = demo.output_until("(pausing")
    held = _existence(listing, demo.alive)
    assert {kind for kind, _ in held} == {"fifo", "private dir", "POSIX mq", "SysV msq", "/dev/shm",
                                          "SysV shm", "child"}, listing
    assert all(held.values()), f"not there before SIGINT: {held}"
    demo.interrupt()
    deadline = time.monotonic() + 5  # the orphaned child, if any, may take a moment to be reaped
    while any((left := _existence(listing, demo.alive)).values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(left.values()), f"left behind after SIGINT: {[k for k, v in left.items() if v]}"
    assert not glob.glob(os.path.join(tempfile.gettempdir(), f"osvirt-{demo.proc.pid}-*"))
