import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from osvirt.memory import MADV, PAGE_SIZE, Mapping, SwapFile, swaps, usage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("size, error", [(0, ValueError), (2**21, ValueError), ("8", TypeError),
                                         (True, TypeError)])
def test_bad_sizes_are_refused_before_any_file(size, error):
    with pytest.raises(error):
        SwapFile(size)


@pytest.mark.needs("not_cap_sys_admin")
def test_swapon_without_cap_sys_admin_is_refused_and_the_file_removed():
    with pytest.raises(PermissionError, match="swapon"):
        SwapFile(1)


@pytest.mark.needs("cap_sys_admin")
def test_anonymous_pages_go_to_swap_one_by_one_and_come_back_intact():
    pages = 1024
    with Mapping(pages * PAGE_SIZE) as m:
        data = os.urandom(pages * PAGE_SIZE)
        m.write(0, data)
        with SwapFile(16) as swap:
            assert swap.path in swaps()
            for _attempt in range(3):  # another process's swapon/swapoff meanwhile moves pages: again
                active = swaps()
                before = usage()
                m.madvise(MADV["MADV_PAGEOUT"], 0, pages // 2 * PAGE_SIZE)
                states = m.pagemap()
                grew = usage().swap_bytes - before.swap_bytes
                back = m.read(0, pages * PAGE_SIZE)
                if swaps() == active:
                    break
            assert sum(s.swapped for s in states[:pages // 2]) >= pages // 2 * 0.9
            assert not any(s.swapped for s in states[pages // 2:])
            assert all(s.present for s in states[pages // 2:])
            assert grew >= pages // 2 * PAGE_SIZE * 0.9
            assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
            assert not any(s.swapped for s in m.pagemap())
            path = swap.path
        assert path not in swaps() and not os.path.exists(path)


@pytest.mark.needs("cap_sys_admin")
def test_the_swap_demo_with_a_swap_file_shows_pages_in_swap():
    proc = subprocess.run([sys.executable, "demos/06_swap.py", "--json", "--swapfile", "32"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, (result, proc.stderr)
    assert not [s for s in result["skipped"] if "swap" in s["name"].lower()], result["skipped"]
    assert any("VmSwap" in c["name"] for c in result["checks"])


@pytest.mark.needs("cap_sys_admin")
def test_ctrl_c_while_the_swap_demo_holds_its_swap_file_disables_and_removes_it():
    mark = None
    for _attempt in range(3):  # the file is active for ~0.1 s: catch it with a 1 ms poll
        proc = subprocess.Popen([sys.executable, "demos/06_swap.py", "--swapfile", "64"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            mark = f"/osvirt-{proc.pid}-"
            held = []
            while not held and proc.poll() is None:
                held = [p for p in swaps() if mark in p]
                time.sleep(0.001)
            if held:
                proc.send_signal(signal.SIGINT)
                err = proc.communicate(timeout=60)[1]
                break
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    assert held, "the demo never showed its swap file in /proc/swaps"
    assert proc.returncode == 128 + signal.SIGINT, err
    assert not [p for p in swaps() if mark in p]
    assert not os.path.exists(held[0])
