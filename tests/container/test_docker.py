"""osvirt.container.docker: the tables against Docker's own profile, and the
confinement they describe as the kernel applies it (in CI's docker-like pass).
"""
import collections
import ctypes
import errno
import json
import os
import stat

import pytest

from osvirt.container import docker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Docker's own profile (moby/profiles seccomp/default.json), kept beside the
# checkout in shared/ by the project, not shipped with osvirt.
REFERENCE = os.path.join(os.path.dirname(ROOT), "shared", "containers", "docker-default-seccomp.json")
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}  # what Docker compares `arches` with


@pytest.fixture(scope="module")
def reference():
    if not os.path.exists(REFERENCE):
        pytest.skip(f"Docker's profile is not at {REFERENCE} (it lives in the project's shared/, beside the checkout)")
    with open(REFERENCE) as f:
        return json.load(f)


def _verdict(rule):
    args = tuple((a["index"], a["op"], a["value"], a.get("valueTwo", 0)) for a in rule.get("args") or ())
    return rule["action"], rule.get("errnoRet"), args


def _docker_resolves(profile, machine, caps, kernel):
    """name -> set of verdicts, as moby's setupSeccomp resolves the profile at `docker run`."""
    arch = GOARCH[machine]
    verdicts = collections.defaultdict(set)
    for rule in profile["syscalls"]:
        inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
        if inc.get("arches") and arch not in inc["arches"] or arch in (exc.get("arches") or ()):
            continue
        if any(c not in caps for c in inc.get("caps") or ()) or any(c in caps for c in exc.get("caps") or ()):
            continue
        if "minKernel" in inc and kernel < tuple(int(p) for p in inc["minKernel"].split(".")):
            continue
        for name in rule["names"]:
            verdicts[name].add(_verdict(rule))
    return verdicts


def _ours(machine, caps, kernel):
    verdicts = collections.defaultdict(set)
    for rule in docker.seccomp(machine, caps, kernel)["syscalls"]:
        for name in rule["names"]:
            verdicts[name].add(_verdict(rule))
    return verdicts


CAP_SETS = {
    "docker's 14": docker.CAPABILITIES,
    "none": (),
    "all (--privileged)": docker._ALL_CAPABILITIES,
    **{f"14 + {cap}": docker.CAPABILITIES + (cap,) for cap in docker.SECCOMP_ALLOW_WITH},
}


@pytest.mark.parametrize("machine", sorted(docker.ARCHITECTURES))
@pytest.mark.parametrize("kernel", [(4, 7), (6, 1)])
@pytest.mark.parametrize("caps", CAP_SETS.values(), ids=CAP_SETS.keys())
def test_every_syscall_gets_dockers_verdict(reference, machine, kernel, caps):
    theirs = _docker_resolves(reference, machine, caps, kernel)
    ours = _ours(machine, caps, kernel)
    differ = {name: (sorted(ours.get(name, ())), sorted(theirs.get(name, ())))
              for name in set(ours) | set(theirs) if ours.get(name) != theirs.get(name)}
    assert not differ, f"osvirt's verdict vs Docker's: {differ}"


@pytest.mark.parametrize("machine", sorted(docker.ARCHITECTURES))
def test_default_action_and_architectures_are_dockers(reference, machine):
    ours = docker.seccomp(machine)
    assert (ours["defaultAction"], ours["defaultErrnoRet"]) == (reference["defaultAction"], reference["defaultErrnoRet"])
    native = docker.ARCHITECTURES[machine][0]
    entry = next(a for a in reference["archMap"] if a["architecture"] == native)
    assert ours["architectures"] == [native] + entry["subArchitectures"]


def test_capabilities_are_the_14_and_known():
    assert len(set(docker.CAPABILITIES)) == 14
    assert set(docker.CAPABILITIES) <= set(docker._ALL_CAPABILITIES)
    assert set(docker.SECCOMP_ALLOW_WITH) <= set(docker._ALL_CAPABILITIES)


def test_bad_input_is_refused_before_anything_runs():
    with pytest.raises(ValueError, match="seccomp: no profile for machine"):
        docker.seccomp("mips64")
    with pytest.raises(ValueError, match="seccomp: unknown capabilities"):
        docker.seccomp("x86_64", ("CAP_SYS_ADMN",))
    with pytest.raises(ValueError, match="seccomp Arg"):
        docker.Arg(6, "eq", 0)
    with pytest.raises(ValueError, match="oci_config: rootfs"):
        docker.oci_config("rootfs", ["true"])
    with pytest.raises(ValueError, match="oci_config: args"):
        docker.oci_config("/rootfs", [])


def test_oci_config_describes_dockers_container():
    config = docker.oci_config("/srv/rootfs", ["make", "test"], cwd="/src", env=["A=1"],
                               binds=[("/etc/resolv.conf", "/etc/resolv.conf", True)])
    process, linux = config["process"], config["linux"]
    assert process["args"] == ["make", "test"] and process["cwd"] == "/src" and process["env"] == ["A=1"]
    assert process["capabilities"] == {k: list(docker.CAPABILITIES) for k in ("bounding", "effective", "permitted")}
    assert {ns["type"] for ns in linux["namespaces"]} == {"pid", "ipc", "uts", "mount"}
    mounts = {m["destination"]: m for m in config["mounts"]}
    assert f"size={docker.SHM_SIZE_BYTES}" in mounts["/dev/shm"]["options"]
    assert mounts["/dev/mqueue"]["type"] == "mqueue" and "ro" in mounts["/sys"]["options"]
    assert mounts["/etc/resolv.conf"] == {"destination": "/etc/resolv.conf", "type": "bind",
                                          "source": "/etc/resolv.conf", "options": ["rbind", "ro"]}
    assert linux["maskedPaths"] == list(docker.MASKED_PATHS) and "/proc/sys" in linux["readonlyPaths"]
    assert linux["seccomp"] == docker.seccomp()


# --- the kernel's side: CI runs the suite once in a container made from these
# tables (.ci/run), and says so in OSVIRT_DOCKER_LIKE; there, the confinement must be real.
docker_like = pytest.mark.skipif(os.environ.get("OSVIRT_DOCKER_LIKE") != "1",
                                 reason="not inside CI's docker-like container (OSVIRT_DOCKER_LIKE=1)")
_libc = ctypes.CDLL(None, use_errno=True)
SYS_UNSHARE, SYS_CLONE3 = {"x86_64": (272, 435), "aarch64": (97, 435)}[os.uname().machine]


def _syscall_errno(number, *args):
    ctypes.set_errno(0)
    result = _libc.syscall(number, *args)
    return 0 if result == 0 else ctypes.get_errno()


def _status(field):
    with open("/proc/self/status") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith(field + ":"))


@docker_like
def test_inside_docker_like_the_filter_refuses_what_the_profile_refuses():
    assert _status("Seccomp") == "2"  # SECCOMP_MODE_FILTER
    assert _syscall_errno(SYS_UNSHARE, 0x00020000) == errno.EPERM  # unshare(CLONE_NEWNS)
    assert _syscall_errno(SYS_CLONE3, None, 0) == errno.ENOSYS


@docker_like
def test_inside_docker_like_the_capabilities_are_the_14():
    bits = {name: number for number, name in enumerate(docker._ALL_CAPABILITIES)}
    expected = sum(1 << bits[cap] for cap in docker.CAPABILITIES)
    assert int(_status("CapEff"), 16) == expected
    assert int(_status("CapBnd"), 16) == expected


@docker_like
def test_inside_docker_like_paths_are_masked_and_read_only():
    masked = {path: os.stat(path) for path in docker.MASKED_PATHS if os.path.exists(path)}
    files = [p for p, st in masked.items() if stat.S_ISCHR(st.st_mode)]
    dirs = [p for p, st in masked.items() if stat.S_ISDIR(st.st_mode)]
    assert files and dirs and len(files) + len(dirs) == len(masked)  # this kernel has some of each
    for path in files:  # /dev/null bound over it
        assert masked[path].st_rdev == os.makedev(1, 3), path
        with open(path, "rb") as f:
            assert f.read(16) == b"", path
    for path in dirs:  # an empty read-only tmpfs over it
        assert os.listdir(path) == [] and os.statvfs(path).f_flag & os.ST_RDONLY, path
    with pytest.raises(OSError) as refused:
        open("/proc/sys/kernel/hostname", "w").close()
    assert refused.value.errno == errno.EROFS
    shm = os.statvfs("/dev/shm")
    assert shm.f_blocks * shm.f_frsize == docker.SHM_SIZE_BYTES
    assert not os.path.exists("/dev/kvm") and not os.path.exists("/dev/loop-control")
