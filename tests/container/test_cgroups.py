"""osvirt.container.cgroups: limits as the kernel enforces them, on the hierarchy (v1 or v2)
each controller has here, and no cgroup left behind."""
import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from osvirt import tracker
from osvirt.container import cgroups
from osvirt.container.cgroups import Cgroup
from osvirt.naming import unique_name
from osvirt.process import Children

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MiB = 1 << 20
ATTEMPTS = 3  # timing checks: the machine is shared, so a share is measured again before failing


def _after_go(go_r, target, *args):
    """In the child: wait until the parent has moved it into the cgroup, then run."""
    if not os.read(go_r, 1):  # the parent closed the pipe without a go: it failed to add us
        return 1
    os.close(go_r)
    return target(*args)


def _in_cgroup(kids, cg, target, *args):
    """Fork `target(*args)` and move it into `cg` before it runs a line of it; its pid."""
    go_r, go_w = os.pipe()
    try:
        pid = kids.fork(_after_go, go_r, target, *args)
    finally:
        os.close(go_r)
    try:
        cg.add(pid)
        os.write(go_w, b"!")
    finally:
        os.close(go_w)
    return pid


def _gone(paths, timeout_s=0.0):
    deadline = time.monotonic() + timeout_s
    while any(map(os.path.exists, paths)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in paths if os.path.exists(p)]


# -- memory ----------------------------------------------------------------------------------
def _touch(size_bytes):
    data = b"\x01" * size_bytes  # written byte by byte: every page touched, so charged
    return len(data) & 0


@pytest.mark.needs("cgroup_memory")
def test_memory_max_oom_kills_the_child_past_it_and_the_peak_stops_at_the_limit():
    limit = 64 * MiB
    with Children() as kids, Cgroup(("memory",), memory_max_bytes=limit) as cg:
        assert cg.oom_kill_count() == 0
        pid = _in_cgroup(kids, cg, _touch, 128 * MiB)
        assert kids.wait(pid, timeout_s=60) == -signal.SIGKILL  # the OOM killer's signal
        assert cg.oom_kill_count() == 1
        peak = cg.memory_peak_bytes()
        assert abs(peak - limit) <= 0.1 * limit, f"peak {peak / MiB:.1f} MiB, limit {limit / MiB:.0f} MiB"
        assert cg.memory_current_bytes() < limit  # the killed child's pages were freed


@pytest.mark.needs("cgroup_memory")
def test_a_child_within_the_memory_limit_runs_to_its_end():
    with Children() as kids, Cgroup(("memory",), memory_max_bytes=64 * MiB) as cg:
        pid = _in_cgroup(kids, cg, _touch, 16 * MiB)
        assert kids.wait(pid, timeout_s=60) == 0
        assert cg.oom_kill_count() == 0
        assert cg.memory_peak_bytes() >= 16 * MiB


# -- pids ------------------------------------------------------------------------------------
def _fork_until_refused(limit, report_w):
    """Fork sleepers until fork fails; report how many forks succeeded and the errno."""
    with Children() as sleepers:
        for forked in range(limit + 10):  # bounded: a limit that does not hold is no fork bomb
            try:
                sleepers.fork(time.sleep, 60)
            except OSError as e:
                os.write(report_w, json.dumps([forked, e.errno]).encode())
                break
        else:
            os.write(report_w, json.dumps([limit + 10, 0]).encode())
        os.close(report_w)
        time.sleep(60)  # holding them while the parent counts


def _forks_in(kids, cg, limit):
    """(forks that succeeded, errno of the one refused) of a child in `cg` forking sleepers."""
    report_r, report_w = os.pipe()
    try:
        _in_cgroup(kids, cg, _fork_until_refused, limit, report_w)
    finally:
        os.close(report_w)
    try:
        return json.loads(os.read(report_r, 100))  # its one write; the sleepers hold the write end open
    finally:
        os.close(report_r)


@pytest.mark.needs("cgroup_pids")
def test_pids_max_makes_the_fork_past_it_fail_with_eagain():
    limit = 16
    with Children() as kids, Cgroup(("pids",), pids_max=limit) as cg:
        forked, err = _forks_in(kids, cg, limit)
        assert err == errno.EAGAIN
        assert forked == limit - 1  # the forking child is one of the `limit`
        assert cg.pids_current() == limit
        assert len(cg.procs()) == limit


@pytest.mark.needs("cgroup_pids")
def test_a_cgroup_made_under_a_given_parent_is_bound_by_the_parents_limit():
    limit = 4
    with Children() as kids, Cgroup(("pids",), pids_max=limit) as outer:
        placement = cgroups.Placement("pids", outer.versions["pids"], outer.paths["pids"])
        with Cgroup(("pids",), where={"pids": placement}) as inner:  # no limit of its own
            assert os.path.dirname(inner.paths["pids"]) == outer.paths["pids"]
            forked, err = _forks_in(kids, inner, limit)
            assert (forked, err) == (limit - 1, errno.EAGAIN)  # the limit holds for the whole subtree
            assert inner.pids_current() == outer.pids_current() == limit


# -- cpu -------------------------------------------------------------------------------------
def _busy(cpu=None):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    while True:
        pass


def _cpu_shares(groups, window_s=2.0):
    """Each cgroup's CPU time over a `window_s` wall-clock window, as a fraction of that window."""
    time.sleep(0.3)  # past the start: the children running, the first periods over
    before, start = [cg.cpu_usage_us() for cg in groups], time.monotonic()
    time.sleep(window_s)
    after, wall_us = [cg.cpu_usage_us() for cg in groups], (time.monotonic() - start) * 1e6
    return [(a - b) / wall_us for a, b in zip(after, before)]


@pytest.mark.needs("cgroup_cpu")
def test_cpu_quota_of_a_fifth_gives_a_busy_loop_a_fifth_of_a_cpu():
    quota_us, period_us = 20000, 100000
    expected = quota_us / period_us  # theory: at most quota_us of CPU each period_us, and a busy loop takes it all
    measured = []
    for _ in range(ATTEMPTS):
        with Children() as kids, Cgroup(("cpu",), cpu_quota=(quota_us, period_us)) as cg:
            _in_cgroup(kids, cg, _busy)
            [share] = _cpu_shares([cg])
        measured.append(share)
        if abs(share - expected) <= 0.25 * expected:
            break
    else:
        pytest.fail(f"CPU share under a {expected:.0%} quota: {', '.join(f'{s:.1%}' for s in measured)}")


@pytest.mark.needs("cgroup_cpu")
def test_cpu_weights_100_and_300_divide_one_cpu_1_to_3():
    cpu = max(os.sched_getaffinity(0))  # both pinned to one CPU: they contend for it
    measured = []
    for _ in range(ATTEMPTS):
        with Children() as kids, Cgroup(("cpu",), cpu_weight=100) as light, Cgroup(("cpu",), cpu_weight=300) as heavy:
            # Theory: CFS divides a contended CPU in proportion to the weights the kernel holds:
            # cpu.weight on v2, on v1 the cpu.shares they were converted to.
            if light.versions["cpu"] == 2:
                expected = 300 / 100
            else:
                expected = cgroups.weight_to_shares(300) / cgroups.weight_to_shares(100)
            for cg in (light, heavy):
                _in_cgroup(kids, cg, _busy, cpu)
            light_share, heavy_share = _cpu_shares([light, heavy])
        ratio = heavy_share / light_share
        measured.append(ratio)
        if abs(ratio - expected) <= 0.25 * expected:
            break
    else:
        pytest.fail(f"CPU ratio of weights 300 : 100, expected {expected:.2f}: "
                    f"{', '.join(f'{r:.2f}' for r in measured)}")


# -- removal ---------------------------------------------------------------------------------
@pytest.mark.needs("cgroup_memory", "cgroup_cpu", "cgroup_pids")
def test_close_kills_what_is_inside_and_removes_every_directory():
    with Children() as kids:
        cg = Cgroup(memory_max_bytes=64 * MiB, cpu_weight=100, pids_max=16)
        paths = sorted(set(cg.paths.values()))
        assert {"memory", "cpu", "pids"} <= set(cg.paths)
        assert all(os.path.isdir(p) for p in paths)
        pid = _in_cgroup(kids, cg, time.sleep, 60)
        assert all(str(pid) in open(os.path.join(p, "cgroup.procs")).read().split() for p in paths)
        cg.close()
        assert _gone(paths) == []
        assert kids.wait(pid, timeout_s=10) == -signal.SIGKILL
        cg.close()  # idempotent
        with pytest.raises(ValueError, match="closed"):
            cg.add(pid)


@pytest.mark.needs("cgroup_memory", "cgroup_cpu", "cgroup_pids")
def test_an_exception_in_the_with_block_removes_every_directory():
    with pytest.raises(RuntimeError):
        with Cgroup(pids_max=16) as cg:
            paths = sorted(set(cg.paths.values()))
            raise RuntimeError("in the block")
    assert paths and _gone(paths) == []


_OWNER = textwrap.dedent("""
    import json, time
    from osvirt.container.cgroups import Cgroup
    from osvirt.process import Children
    with Children() as kids, Cgroup(pids_max=16) as cg:
        cg.add(kids.fork(time.sleep, 60))
        print(json.dumps(sorted(set(cg.paths.values()))), flush=True)
        time.sleep(60)
""")


@pytest.mark.needs("cgroup_memory", "cgroup_cpu", "cgroup_pids")
@pytest.mark.parametrize("signo, remover", [(signal.SIGINT, "close"), (signal.SIGKILL, "tracker")])
def test_every_directory_is_removed_by_close_after_ctrl_c_and_by_the_tracker_after_sigkill(signo, remover):
    owner = subprocess.Popen([sys.executable, "-c", _OWNER], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = owner.stdout.readline()
        assert line, f"the owner ended before it made its cgroup: {owner.communicate(timeout=30)[1]}"
        paths = json.loads(line)
        assert paths and all(os.path.isdir(p) for p in paths)
        owner.send_signal(signo)
        # stderr ends when the tracker, its last holder, exits: after any removal of its own
        _, err = owner.communicate(timeout=30)
    finally:
        owner.kill()
        owner.communicate()
    assert _gone(paths, timeout_s=10) == []
    by_tracker = [p for p in paths if f"removed cgroup {p}" in err]
    assert by_tracker == (paths if remover == "tracker" else []), err  # after Ctrl-C, close() left it nothing


# -- cgroup v2, for real where this machine has a writable v2 hierarchy ----------------------
def _disable(subtree_control, controller):
    with contextlib.suppress(OSError):  # EBUSY: another run's cgroup uses it now, and keeps it
        with open(subtree_control, "w") as f:
            f.write(f"-{controller}")


@pytest.mark.needs("cgroup_v2")
def test_a_v2_cgroup_holds_its_process_and_cgroup_kill_ends_it():
    parent, offered = cgroups.v2_own()
    controller = sorted(offered)[0]
    subtree = os.path.join(parent, "cgroup.subtree_control")
    enabled_before = controller in open(subtree).read().split()
    with Children() as kids, contextlib.ExitStack() as restore:
        if not enabled_before:  # Cgroup enables it and leaves it so (as runc does); the test leaves no trace
            restore.callback(_disable, subtree, controller)
        cg = Cgroup((controller,))
        assert cg.versions == {controller: 2}
        path = cg.paths[controller]
        assert os.path.dirname(path) == parent
        # A child cgroup's cgroup.controllers is what its parent enabled in cgroup.subtree_control.
        assert controller in open(os.path.join(path, "cgroup.controllers")).read().split()
        pid = _in_cgroup(kids, cg, time.sleep, 60)
        assert cg.procs() == [pid]
        assert open(f"/proc/{pid}/cgroup").read().splitlines()[-1] == f"0::{path[len(cgroups.mount_of(path).point):]}"
        cg.close()  # cgroup.kill (Linux >= 5.14), then rmdir
        assert kids.wait(pid, timeout_s=10) == -signal.SIGKILL
        assert not os.path.exists(path)


# -- what is written where: both versions, without a kernel ----------------------------------
def test_limit_writes_map_each_limit_to_the_files_of_each_version():
    limits = dict(memory_max_bytes=64 * MiB, cpu_quota=(20000, 100000), cpu_weight=300, pids_max=16)
    assert cgroups.limit_writes(2, **limits) == {
        "memory": [("memory.max", str(64 * MiB)), ("memory.swap.max", "0")],
        "cpu": [("cpu.max", "20000 100000"), ("cpu.weight", "300")],
        "pids": [("pids.max", "16")],
    }
    assert cgroups.limit_writes(1, **limits) == {
        "memory": [("memory.limit_in_bytes", str(64 * MiB)), ("memory.memsw.limit_in_bytes", str(64 * MiB))],
        "cpu": [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "20000"),
                ("cpu.shares", str(cgroups.weight_to_shares(300)))],
        "pids": [("pids.max", "16")],
    }
    assert cgroups.limit_writes(2) == {}


@pytest.mark.parametrize("version, files, cpuacct", [
    (2, {"memory.current": "5242880\n", "memory.peak": "67108864\n", "pids.current": "3\n",
         "memory.events": "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n",
         "cpu.stat": "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n"}, {}),
    (1, {"memory.usage_in_bytes": "5242880\n", "memory.max_usage_in_bytes": "67108864\n", "pids.current": "3\n",
         "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"}, {"cpuacct.usage": "1500999\n"}),
])
def test_readings_parse_each_versions_files(tmp_path, version, files, cpuacct):
    """The readers on files shaped as each version's kernel writes them (a v2 memory and cpu
    controller does not exist on every machine that runs this suite)."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "acct").mkdir()
    for name, text in cpuacct.items():
        (tmp_path / "acct" / name).write_text(text)
    cg = Cgroup.__new__(Cgroup)  # readers only: no directory made, and close() removes nothing not its own
    cg.paths = {"memory": str(tmp_path), "cpu": str(tmp_path), "pids": str(tmp_path), "cpuacct": str(tmp_path / "acct")}
    cg.versions = {c: version for c in cg.paths}
    assert (cg.memory_current_bytes(), cg.memory_peak_bytes(), cg.oom_kill_count(), cg.cpu_usage_us(),
            cg.pids_current()) == (5 * MiB, 64 * MiB, 1, 1500, 3)


@pytest.mark.needs("cgroup_pids", "cap_chown")
def test_kill_and_rmdir_refuses_a_cgroup_another_uid_owns():
    parent = cgroups.placements(("pids",))["pids"].parent
    path = os.path.join(parent, unique_name())
    os.mkdir(path)
    try:
        os.chown(path, 65534, 65534)
        with pytest.raises(PermissionError, match="not ours to remove"):
            cgroups.kill_and_rmdir(path)
        assert os.path.isdir(path)
    finally:
        os.rmdir(path)


def test_weight_to_shares_maps_the_ranges_end_to_end_and_keeps_ratios():
    assert cgroups.weight_to_shares(1) == 2
    assert cgroups.weight_to_shares(10000) == 262144
    assert cgroups.weight_to_shares(100) == 2597
    assert cgroups.weight_to_shares(300) / cgroups.weight_to_shares(100) == pytest.approx(3, rel=0.01)


@pytest.mark.parametrize("limits, facility", [
    (dict(memory_max_bytes=-1), "memory.max"),
    (dict(memory_max_bytes=0), "memory.max"),
    (dict(cpu_weight=0), "cpu.weight"),
    (dict(cpu_weight=10001), "cpu.weight"),
    (dict(cpu_quota=(999, 100000)), "cpu.max quota_us"),
    (dict(cpu_quota=(20000, 999)), "cpu.max period_us"),
    (dict(cpu_quota=(20000, 1000001)), "cpu.max period_us"),
    (dict(pids_max=-1), "pids.max"),
    (dict(pids_max=(1 << 22) + 1), "pids.max"),
])
def test_bad_limits_raise_value_error_naming_the_file_before_any_write(monkeypatch, limits, facility):
    def refuse(*args):
        raise AssertionError(f"written before the check: {args}")
    monkeypatch.setattr(cgroups.os, "mkdir", refuse)
    monkeypatch.setattr(cgroups, "_write", refuse)
    with pytest.raises(ValueError, match=f"cgroup {facility}"):
        Cgroup(**limits)


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError, match="cpu.weight"):
        Cgroup(cpu_weight=1.5)
    with pytest.raises(TypeError, match="cpu.max"):
        Cgroup(cpu_quota=20000)


def test_mountinfo_and_proc_cgroup_parsed_with_co_mounted_controllers(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "30 23 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
        "31 30 0:27 / /sys/fs/cgroup/unified rw shared:9 - cgroup2 cgroup2 rw,nsdelegate\n"
        "32 30 0:28 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw shared:10 - cgroup cgroup rw,cpu,cpuacct\n"
        "33 30 0:29 / /sys/fs/cgroup/my\\040memory ro master:3 - cgroup cgroup rw,memory\n")
    assert cgroups.cgroup_mounts(str(mountinfo)) == [
        cgroups.Mount("/sys/fs/cgroup/unified", "/", 2, frozenset(), False),
        cgroups.Mount("/sys/fs/cgroup/cpu,cpuacct", "/docker/abc", 1, frozenset({"cpu", "cpuacct"}), False),
        cgroups.Mount("/sys/fs/cgroup/my memory", "/", 1, frozenset({"memory"}), True),
    ]
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("4:memory:/a/b\n2:cpu,cpuacct:/docker/abc/c\n1:name=systemd:/s\n0::/u\n")
    assert cgroups.own_cgroups(str(cgroup)) == {"memory": "/a/b", "cpu": "/docker/abc/c",
                                                "cpuacct": "/docker/abc/c", "name=systemd": "/s", "": "/u"}


def test_the_tracker_takes_only_osvirt_named_directories_inside_a_cgroup_mount():
    for path in ("/tmp/osvirt-1-0123abcd", "/sys/fs/cgroup/memory/not-osvirt", "relative/osvirt-1-0123abcd",
                 "/sys/fs/cgroup/x/../osvirt-1-0123abcd"):
        with pytest.raises(ValueError):
            tracker.register("cgroup", path)


@pytest.mark.needs("cgroup_pids")
def test_check_path_takes_statfs_word_for_a_cgroup_directory_and_mountinfo_for_the_rest(tmp_path, monkeypatch):
    parent = cgroups.placements(("pids",))["pids"].parent
    path = os.path.join(parent, unique_name())
    real_mount_of = cgroups.mount_of

    def no_mountinfo(path):
        raise AssertionError("mountinfo read for a path statfs answers for")
    monkeypatch.setattr(cgroups, "mount_of", no_mountinfo)
    cgroups.check_path("mkdir", path)  # before mkdir, as the tracker checks a registration
    os.mkdir(path)
    try:
        cgroups.check_path("rmdir", path)
        assert cgroups.kill_and_rmdir(path) and not os.path.exists(path)  # empty: removed at once
        assert not cgroups.kill_and_rmdir(path)  # nothing there any more
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(path)
    monkeypatch.setattr(cgroups, "mount_of", real_mount_of)
    outside = tmp_path / unique_name()  # statfs: not a cgroup filesystem; mountinfo: in no cgroup mount
    with pytest.raises(ValueError, match="not inside a cgroup mount"):
        cgroups.check_path("mkdir", str(outside))
