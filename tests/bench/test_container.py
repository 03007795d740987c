"""The container-start row: each of its ways starts /bin/true in a container built from one bundle."""
import contextlib
import json
import re
import shutil

import pytest

from osvirt.bench import _native, container, harness
from osvirt.container import oci

ROW = next(p for p in container.PRIMITIVES if p.name == "container-start")


def test_the_bundle_is_runc_specs_with_the_hosts_usr(tmp_path):
    spec = oci.load(container.bundle(str(tmp_path), ["/bin/true"]))
    assert spec.root.readonly and spec.process.no_new_privileges
    assert [ns.type for ns in spec.linux.namespaces] == ["pid", "network", "ipc", "uts", "mount"]
    assert any(m.destination == "/usr" and m.is_bind for m in spec.mounts)
    with open(tmp_path / "config.json") as f:
        assert spec.to_dict() == json.load(f)


def test_the_c_loop_spawns_and_waits():
    assert _native.c_loop("spawn_wait", (container.TRUE,), 3) > 0


@pytest.mark.needs(*ROW.needs)
@pytest.mark.parametrize("variant", ["python", "floor"] + (["peer"] if ROW.peer else []))
def test_each_way_runs_true_in_a_container(variant):
    result = harness.measure(ROW, variant, batches=1, n=2, min_batch_ns=1_000_000)
    assert result["n"] >= 2 and min(result["elapsed_ns"]) > 0


def test_without_runc_the_row_says_so():
    if shutil.which("runc"):
        assert ROW.peer is not None and ROW.peer[0] == "runc run (same bundle)"
    else:
        assert ROW.peer is None and "runc is not installed" in ROW.note


@pytest.mark.needs(*ROW.needs)
def test_compare_takes_both_in_turn():
    times = container.compare(2)
    assert len(times["osvirt to exit"]) == len(times["osvirt to delete"]) == 2
    assert all(a < b for a, b in zip(times["osvirt to exit"], times["osvirt to delete"]))
    assert len(times["runc run"]) == (2 if ROW.peer else 0)


# What a program sees of the container it runs in: its mounts (ids aside), capabilities, no_new_privs,
# seccomp, hostname, cgroups, rlimit, /dev, user, directory, environment and network interfaces.
_LOOK = ("cut -d' ' -f4- /proc/self/mountinfo; grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status; "
         "hostname; cat /proc/self/cgroup; ulimit -n; stat -c '%N %F %a %t:%T' /dev/*; id; pwd; env | sort; "
         "cat /sys/class/net/*/flags")


@pytest.mark.needs(*ROW.needs)
def test_the_floor_builds_the_container_osvirt_builds(capfd):
    """The floor is a floor of the same work: what runs inside sees the same container either way."""
    seen = []
    for starts in (container._osvirt_starts, container._bare_starts):
        with contextlib.contextmanager(starts)(["/bin/sh", "-c", _LOOK]) as start:
            start()
        out = capfd.readouterr().out
        seen.append(re.sub(r"osvirt-[0-9]+-[0-9a-f]{8}", "NAME", out))  # bundle directories, cgroups
    assert seen[0] == seen[1]
    assert "/rootfs / ro," in seen[0] and "/usr /usr ro,nosuid,nodev," in seen[0]  # the root, /usr read-only
    assert "NoNewPrivs:\t1" in seen[0] and "osvirt\n" in seen[0]  # no_new_privs, the hostname
    assert "CapBnd:\t0000000020000420" in seen[0]  # CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE
    assert seen[0].count("NAME") >= 2  # the root's bundle directory, and a cgroup of its own
