"""Ctrl-C while fs-share's child holds a lock leaves no child and no file behind."""
import glob
import os
import re
import tempfile
import time


def test_sigint_while_a_child_holds_a_lock_leaves_nothing(lingering_demo):
    demo = lingering_demo("09_fs_share.py")
    text = demo.output_until("Ctrl-C now")
    paused = re.search(r"child pid (\d+) holds", text)
    assert paused, "the demo ended without pausing:\n" + text
    holder = int(paused[1])
    owned = glob.glob(os.path.join(tempfile.gettempdir(), f"osvirt-{demo.proc.pid}-*"))
    assert demo.alive(holder) and owned, text
    demo.interrupt()
    deadline = time.monotonic() + 5
    while demo.alive(holder) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not demo.alive(holder)
    assert not any(os.path.exists(p) for p in owned), owned  # the demo's private directory, with its files
