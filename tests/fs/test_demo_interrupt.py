"""Ctrl-C while fs-share's child holds a lock leaves no child and no file behind."""
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_sigint_while_a_child_holds_a_lock_leaves_nothing():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, os.path.join("demos", "09_fs_share.py"), "--linger", "60"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        text = ""
        for line in proc.stdout:
            text += line
            if "Ctrl-C now" in line:
                break
        paused = re.search(r"child pid (\d+) holds", text)
        assert paused, "the demo ended without pausing:\n" + text
        holder = int(paused[1])
        owned = glob.glob(os.path.join(tempfile.gettempdir(), f"osvirt-{proc.pid}-*"))
        assert _alive(holder) and owned, text
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "interrupted, children reaped and objects removed" in err
    deadline = time.monotonic() + 5
    while _alive(holder) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(holder)
    assert not any(os.path.exists(p) for p in owned), owned  # the demo's private directory, with its files
