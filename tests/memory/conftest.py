"""Every memory test leaves no swap file of its own active.

/proc/swaps is machine-wide, and other test sessions may switch their own
swap files on and off meanwhile: a new osvirt swap file counts as left
behind when this process made it, or when the process that made it (named in
the file, osvirt-<pid>-...) is gone, as a demo run by a test is.
"""
import os

import psutil
import pytest

from osvirt.memory import swaps
from osvirt.naming import PREFIX


def _maker(path):
    name = os.path.basename(path)
    if not name.startswith(PREFIX):
        return None
    pid = name[len(PREFIX):].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


@pytest.fixture(autouse=True)
def no_swap_file_left_active():
    before = set(swaps())
    yield
    left = [p for p in set(swaps()) - before
            if _maker(p) is not None and (_maker(p) == os.getpid() or not psutil.pid_exists(_maker(p)))]
    assert not left, f"swap left active: {left}"
