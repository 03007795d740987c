"""The leak guard's own rules (tests/conftest.py)."""
import contextlib
import functools
import gc
import importlib.util
import os
import signal
import subprocess
import tempfile
import time
import warnings

import posix_ipc
import psutil
import pytest
import sysv_ipc

from osvirt.container import namespaces, network
from osvirt.container.cgroups import Cgroup
from osvirt.device import loop
from osvirt.naming import private_dir, unique_name
from osvirt.process import Children

_spec = importlib.util.spec_from_file_location("leak_guard_rules", os.path.join(os.path.dirname(__file__), "conftest.py"))
guard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(guard)


def test_objects_count_for_this_process_its_children_and_gone_processes_only():
    live_before = set(psutil.pids())
    stranger = os.getppid()  # running before the test: another run's files are not ours
    assert stranger in live_before
    mine = "/tmp/" + unique_name("f")
    theirs = f"/tmp/osvirt-{stranger}-0123abcd-f"
    nameless = "/tmp/osvirt-notapid"
    # started during the test, alive, and no descendant of ours (setsid -f: reparented away),
    # as a second test run or a demo started meanwhile: its objects are not ours either
    with subprocess.Popen(["setsid", "-f", "sh", "-c", "echo $$; exec sleep 60"], stdout=subprocess.PIPE) as p:
        newcomer = int(p.stdout.readline())
    try:
        with Children() as kids:
            child = kids.fork(time.sleep, 60)  # a pid the kernel gave out after the snapshot
            assert child not in live_before and newcomer not in live_before
            childs = f"/dev/shm/osvirt-{child}-89abcdef"
            newcomers = f"/tmp/osvirt-{newcomer}-01234567"
            assert newcomer not in guard._children()
            counted = guard._made_during_test({mine, theirs, nameless, childs, newcomers}, live_before,
                                              guard._children())
        gone = guard._made_during_test({childs}, live_before, guard._children())  # reaped: gone, still ours
    finally:
        os.kill(newcomer, signal.SIGKILL)
    assert counted == {mine, nameless, childs} and gone == {childs}


def test_mqueue_mount_closes_proc_self_mounts():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        guard._mqueue_mount()
        gc.collect()
    assert [str(w.message) for w in seen if w.category is ResourceWarning] == []


# One real object of each kind the guard watches: (kind, how the guard names it).
@contextlib.contextmanager
def _child():
    with Children() as kids:
        yield "children", str(kids.fork(time.sleep, 60))


@contextlib.contextmanager
def _posix(cls, kind, **options):
    obj = cls("/" + unique_name(), posix_ipc.O_CREX, mode=0o600, **options)
    try:
        yield kind, obj.name[1:]
    finally:
        if cls is posix_ipc.SharedMemory:
            obj.close_fd()
        else:
            obj.close()
        obj.unlink()


@contextlib.contextmanager
def _sysv(cls, kind, **size):
    obj = cls(sysv_ipc.IPC_PRIVATE, sysv_ipc.IPC_CREX, mode=0o600, **size)
    try:
        yield "SysV IPC", f"{kind} key=0 id={obj.id}"  # IPC_PRIVATE is key 0
    finally:
        if kind == "shm":
            obj.detach()  # a removed segment stays listed while attached
        obj.remove()


@contextlib.contextmanager
def _loop_device():
    with private_dir() as d:
        backing = os.path.join(d, "disk.img")
        with open(backing, "wb") as f:
            f.truncate(1 << 20)
        with loop.LoopDevice(backing) as dev:
            yield "attached loop devices", f"/sys/block/loop{dev.number}"


@contextlib.contextmanager
def _temp_file():
    path = os.path.join(tempfile.gettempdir(), unique_name("f"))
    open(path, "x").close()
    try:
        yield "osvirt temp files", path
    finally:
        os.unlink(path)


@contextlib.contextmanager
def _cgroup():
    with Cgroup(("pids",)) as cg:
        yield "osvirt cgroups", cg.paths["pids"]


@contextlib.contextmanager
def _veth():
    with Children() as kids:  # the namespace's process, killed at the end: the peer's side
        started = namespaces.fork_in(kids, ["network"], signal.pause)
        with network.Veth(started.pid, check=False) as veth:
            yield "osvirt network interfaces", veth.host_name


@pytest.mark.parametrize("leak", [
    pytest.param(_child, id="child"),
    pytest.param(functools.partial(_posix, posix_ipc.SharedMemory, "/dev/shm", size=4096), id="posix-shm"),
    pytest.param(functools.partial(_posix, posix_ipc.MessageQueue, "POSIX message queues", max_messages=1,
                                   max_message_size=8), id="posix-mqueue"),
    pytest.param(functools.partial(_sysv, sysv_ipc.MessageQueue, "msg"), id="sysv-msg"),
    pytest.param(functools.partial(_sysv, sysv_ipc.Semaphore, "sem"), id="sysv-sem"),
    pytest.param(functools.partial(_sysv, sysv_ipc.SharedMemory, "shm", size=4096), id="sysv-shm"),
    pytest.param(_loop_device, id="loop", marks=pytest.mark.needs("loop")),
    pytest.param(_temp_file, id="temp-file"),
    pytest.param(_cgroup, id="cgroup", marks=pytest.mark.needs("cgroup_pids")),
    pytest.param(_veth, id="veth", marks=pytest.mark.needs("veth")),
])
def test_the_guard_names_a_live_object_of_each_kind_it_watches_and_forgets_it_once_gone(leak):
    live_before = set(psutil.pids())
    before = guard._snapshot()
    with leak() as (kind, name):
        if before[kind] is None:
            pytest.skip(f"the guard cannot list {kind} here")
        assert name in guard._leaks(before, guard._snapshot(), live_before).get(kind, []), kind
    assert name not in guard._leaks(before, guard._snapshot(), live_before).get(kind, [])
