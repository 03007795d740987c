"""osvirt.container.oci: a config.json read into checked objects; bad fields named before any system call.

No privilege is needed: reading and checking a spec makes no system call but
opening the file. runc's own `runc spec` output and docker.oci_config's
dict round-trip; the seccomp section is compiled by osvirt's compiler.
"""
import copy
import json
import os
import shutil
import subprocess

import pytest

from osvirt.container import docker, oci, seccomp
from osvirt.errors import SpecError


def _docker(**kw):
    return docker.oci_config("/srv/rootfs", ["sh", "-c", "true"], **kw)


def test_docker_oci_config_round_trips():
    config = _docker(binds=[("/etc", "/host-etc", True)], network=True)
    spec = oci.parse(config, "/srv")
    assert spec.to_dict() == config
    assert spec.process.args == ("sh", "-c", "true")
    assert spec.process.capabilities.usable("effective") <= set(docker.CAPABILITIES)
    assert [ns.type for ns in spec.linux.namespaces] == ["pid", "ipc", "uts", "mount", "network"]
    bind = spec.mounts[-1]
    assert bind.is_bind and bind.recursive and bind.resolved_source == "/etc"


def test_the_seccomp_section_is_compiled_by_osvirts_compiler():
    config = _docker()
    spec = oci.parse(config, "/srv")
    assert spec.linux.seccomp.filter == seccomp.compile_filter(config["linux"]["seccomp"])
    assert spec.linux.seccomp.default_errno_ret == 1


@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
@pytest.mark.parametrize("rootless", [False, True])
def test_runc_spec_round_trips(tmp_path, rootless):
    subprocess.run(["runc", "spec"] + (["--rootless"] if rootless else []), cwd=tmp_path, check=True)
    with open(tmp_path / "config.json") as f:
        config = json.load(f)
    spec = oci.load(tmp_path)
    assert spec.to_dict() == config
    assert spec.root.resolved == str(tmp_path / "rootfs")  # relative to the bundle
    assert spec.process.rlimits[0].type == "RLIMIT_NOFILE"
    assert spec.linux.new("user") is rootless


def test_mount_options_become_flags_propagation_and_data():
    from osvirt.container.mounts import MS
    config = _docker()
    config["mounts"].append({"destination": "/data", "type": "tmpfs", "source": "tmpfs",
                             "options": ["ro", "nosuid", "rw", "rprivate", "size=1m", "mode=700"]})
    m = oci.parse(config, "/srv").mounts[-1]
    assert m.flags == MS["NOSUID"]  # a later rw clears the earlier ro, as mount(8) reads them
    assert m.propagation == (MS["PRIVATE"] | MS["REC"],)
    assert m.data == "size=1m,mode=700"


def test_unknown_fields_are_ignored():
    config = _docker()
    config["vm"] = {"hypervisor": {"path": "/x"}}
    config["process"]["apparmorProfile"] = "p"
    config["linux"]["intelRdt"] = {"closID": "x"}
    spec = oci.parse(config, "/srv")
    assert spec.raw["vm"] == {"hypervisor": {"path": "/x"}}
    assert "vm" not in spec.to_dict()


def _bad(path, value):
    config = _docker()
    target = config
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is _DELETE:
        del target[keys[-1]]
    else:
        target[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
    return config


_DELETE = object()


@pytest.mark.parametrize("path, value, field", [
    ("ociVersion", "2.0.0", "ociVersion"),
    ("ociVersion", "one", "ociVersion"),
    ("root", _DELETE, "root"),
    ("process.args", [], "process.args"),
    ("process.args", "sh", "process.args"),
    ("process.cwd", "relative", "process.cwd"),
    ("process.user.uid", -1, "process.user.uid"),
    ("process.user.gid", "0", "process.user.gid"),
    ("process.env", ["NOEQUALS"], "process.env[0]"),
    ("process.capabilities.effective", ["CAP_NOPE"], "process.capabilities.effective[0]"),
    ("process.rlimits", [{"type": "RLIMIT_NOPE", "soft": 1, "hard": 1}], "process.rlimits[0].type"),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": 2, "hard": 1}], "process.rlimits[0]"),
    ("process.oomScoreAdj", 5000, "process.oomScoreAdj"),
    ("process.terminal", "yes", "process.terminal"),
    ("mounts.0.destination", 5, "mounts[0].destination"),
    ("mounts.0.type", _DELETE, "mounts[0].type"),
    ("mounts.0.options", ["idmap"], "mounts[0].options[0]"),
    ("linux.namespaces", [{"type": "pid"}, {"type": "pid"}], "linux.namespaces[1].type"),
    ("linux.namespaces", [{"type": "nope"}], "linux.namespaces[0].type"),
    ("linux.namespaces", [{"type": "net", "path": "x"}], "linux.namespaces[0].type"),
    ("linux.namespaces", [{"type": "network", "path": "relative"}], "linux.namespaces[0].path"),
    ("linux.uidMappings", [{"containerID": 0, "hostID": 0, "size": 0}], "linux.uidMappings[0].size"),
    ("linux.resources.memory", {"limit": 1024}, "linux.resources.memory.limit"),
    ("linux.resources.cpu", {"period": 10}, "linux.resources.cpu.period"),
    ("linux.resources.pids", {"limit": "16"}, "linux.resources.pids.limit"),
    ("linux.seccomp.defaultAction", "SCMP_ACT_NOPE", "linux.seccomp"),
    ("linux.seccomp.defaultAction", "SCMP_ACT_NOTIFY", "linux.seccomp"),
    ("linux.seccomp.syscalls", [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                                 "args": [{"index": 9, "value": 0, "op": "SCMP_CMP_EQ"}]}],
     "linux.seccomp.syscalls[0].args[0].index"),
    ("linux.seccomp.flags", ["SECCOMP_FILTER_FLAG_NOPE"], "linux.seccomp.flags[0]"),
    ("linux.maskedPaths", ["proc/kcore"], "linux.maskedPaths[0]"),
    ("linux.sysctl", {"vm.swappiness": "1"}, "linux.sysctl.vm.swappiness"),
    ("linux.sysctl", {"net.ipv4.ip_forward": "1"}, "linux.sysctl.net.ipv4.ip_forward"),
    ("hooks", {"poststop": [{"path": "rel"}]}, "hooks.poststop[0].path"),
    ("hooks", {"prestart": [{"path": "/bin/true", "timeout": 0}]}, "hooks.prestart[0].timeout"),
    ("annotations", {"a": 1}, "annotations.a"),
])
def test_a_bad_field_is_named(path, value, field):
    with pytest.raises(SpecError) as raised:
        oci.parse(_bad(path, value), "/srv")
    assert raised.value.field == field, str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert str(raised.value).startswith(f"config.json {field}: ")


def test_hostname_needs_a_uts_namespace():
    config = _docker()
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "uts"]
    with pytest.raises(SpecError, match="UTS namespace") as raised:
        oci.parse(config, "/srv")
    assert raised.value.field == "hostname"


def test_a_user_namespace_needs_its_maps():
    config = _docker()
    config["linux"]["namespaces"].append({"type": "user"})
    with pytest.raises(SpecError) as raised:
        oci.parse(config, "/srv")
    assert raised.value.field == "linux.uidMappings"
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 1}]
    assert oci.parse(config, "/srv").linux.new("user")


def test_a_non_json_file_is_a_spec_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(SpecError, match="not JSON"):
        oci.load(tmp_path)


def test_resources_become_cgroup_limits():
    config = _docker()
    config["linux"]["resources"].update(memory={"limit": 64 << 20}, cpu={"quota": 20000, "period": 100000,
                                                                          "shares": 1024}, pids={"limit": 16})
    limits = oci.parse(config, "/srv").linux.resources.limits
    assert limits["memory_max_bytes"] == 64 << 20
    assert limits["cpu_quota"] == (20000, 100000)
    assert limits["pids_max"] == 16
    from osvirt.container import cgroups
    assert abs(cgroups.weight_to_shares(limits["cpu_weight"]) - 1024) < 30  # the two conversions invert


def test_state_json_is_the_specs():
    state = oci.state("c1", "running", 42, "/b", {"k": "v"})
    assert state == {"ociVersion": "1.0.2", "id": "c1", "status": "running", "pid": 42, "bundle": "/b",
                     "annotations": {"k": "v"}}
    assert "pid" not in oci.state("c1", "stopped", 42, "/b")
    with pytest.raises(ValueError):
        oci.state("c1", "paused", 1, "/b")


def test_a_hook_reads_the_state_on_stdin(tmp_path):
    out = tmp_path / "seen"
    hook = oci.Hook("/bin/sh", ("sh", "-c", f'{{ cat; echo; echo "$X"; }} > {out}'), ("X=from-env",), 5)
    state = oci.state("c1", "created", os.getpid(), "/b")
    oci.run_hook(hook, state)
    text = out.read_text().splitlines()
    assert json.loads(text[0]) == state and text[1] == "from-env"


def test_a_failing_or_slow_hook_raises_naming_it():
    from osvirt.errors import ContainerError
    with pytest.raises(ContainerError, match="exited with status 3"):
        oci.run_hook(oci.Hook("/bin/sh", ("sh", "-c", "exit 3")), {}, "poststop")
    with pytest.raises(ContainerError, match="timed out") as raised:
        oci.run_hook(oci.Hook("/bin/sh", ("sh", "-c", "sleep 5"), timeout=1), {}, "createRuntime")
    assert raised.value.step == "createRuntime hook /bin/sh"


def test_parse_does_not_change_its_argument():
    config = _docker()
    before = copy.deepcopy(config)
    oci.parse(config, "/srv")
    assert config == before
