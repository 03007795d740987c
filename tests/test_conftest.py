"""The leak guard's own rules (tests/conftest.py)."""
import gc
import importlib.util
import os
import time
import warnings

import psutil

from osvirt.naming import unique_name
from osvirt.process import Children

_spec = importlib.util.spec_from_file_location("leak_guard_rules", os.path.join(os.path.dirname(__file__), "conftest.py"))
guard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(guard)


def test_temp_files_count_only_for_this_process_and_processes_started_during_the_test():
    live_before = set(psutil.pids())
    stranger = os.getppid()  # running before the test: another run's files are not ours
    assert stranger in live_before
    mine = "/tmp/" + unique_name("f")
    theirs = f"/tmp/osvirt-{stranger}-0123abcd-f"
    nameless = "/tmp/osvirt-notapid"
    with Children() as kids:
        child = kids.fork(time.sleep, 60)  # a pid the kernel gave out after the snapshot
        assert child not in live_before
        childs = f"/dev/shm/osvirt-{child}-89abcdef"
        counted = guard._made_during_test({mine, theirs, nameless, childs}, live_before)
    assert counted == {mine, nameless, childs}


def test_mqueue_mount_closes_proc_self_mounts():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        guard._mqueue_mount()
        gc.collect()
    assert [str(w.message) for w in seen if w.category is ResourceWarning] == []
