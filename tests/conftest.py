"""Suite-wide fixtures: the `needs(what)` marker and the leak guard.

The leak guard snapshots, before and after every test, what the kernel holds
that osvirt could leak: the test process's children, /dev/shm, POSIX message
queues, SysV IPC objects, attached loop devices, osvirt-* temp files,
osvirt-* cgroups and osvirt's network interfaces (osv<pid>-...: a veth's host
end). A test that leaves any of them behind fails, naming what it left.

Temp files live in directories other people's processes share (/tmp,
/var/tmp, /dev/shm), cgroups in hierarchies they share (the v1 cpu and
pids roots), and interfaces a network namespace they share, so a new osvirt
entry counts as this test's leak only
if the pid in its name (`osvirt-<pid>-...`, see osvirt.naming; `osv<pid>-...`
for an interface) is the test
process's own, or a pid that did not exist when the test started (a child
the test started, or a descendant of one). An entry named by a process that
was already running belongs to someone else: another engineer's run. Simple
and strict: a name without a pid counts, and a stranger's process started
during the test would count too (on CI nobody else runs).
"""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

import psutil
import pytest

from osvirt import env
from osvirt.container import network
from osvirt.container.cgroups import cgroup_directory, cgroup_mounts, own_cgroups
from osvirt.naming import PREFIX


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs"):
        for what in mark.args:
            answer = env.can(what)
            if not answer:
                pytest.skip(f"needs {what}: {answer.reason}")


def _mqueue_mount():
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[2] == "mqueue":
                return fields[1]
    return None


def _mqueues():
    """POSIX message queue names, or None when this environment cannot list them."""
    mount = _mqueue_mount()
    if mount:
        return set(os.listdir(mount))
    if not env.can("cap_sys_admin"):  # unshare -m and mount need it
        return None
    # No mqueue filesystem mounted: mount one privately, in a mount namespace of its own.
    script = 'd=$(mktemp -d) && mount -t mqueue none "$d" && ls -A "$d"; umount "$d"; rmdir "$d"'
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    return set(proc.stdout.split()) if proc.returncode == 0 else None


def _sysv():
    objects = set()
    for kind in ("msg", "sem", "shm"):
        with open(f"/proc/sysvipc/{kind}") as f:
            for line in list(f)[1:]:
                key, ident = line.split()[:2]
                objects.add(f"{kind} key={key} id={ident}")
    return objects


def _loops():
    return {os.path.dirname(os.path.dirname(p)) for p in glob.glob("/sys/block/loop*/loop/backing_file")}


def _temp_files():
    dirs = {tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"}
    return {p for d in dirs for p in glob.glob(os.path.join(d, PREFIX + "*"))}


def _cgroups():
    """osvirt-* cgroups in this process's own cgroup of every hierarchy: where osvirt.container.cgroups
    makes them (their names carry a pid, as temp files' do)."""
    own = own_cgroups()
    paths = set()
    for mount in cgroup_mounts():
        for controller in mount.controllers or {""}:  # "": the v2 hierarchy's line
            directory = cgroup_directory(mount, own[controller]) if controller in own else None
            if directory is not None:
                paths.update(glob.glob(os.path.join(directory, PREFIX + "*")))
    return paths


def _interfaces():
    """osvirt's interfaces in this network namespace (a veth's host end: `osv<pid>-<hex>`), from the kernel."""
    return {name for _, name in socket.if_nameindex() if name.startswith(network.PREFIX)}


def _named_pid(path):
    """The pid in an `osvirt-<pid>-...` name (`osv<pid>-...` for an interface), or None."""
    name = os.path.basename(path)
    prefix = PREFIX if name.startswith(PREFIX) else network.PREFIX
    pid = name[len(prefix):].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _made_during_test(paths, live_before, children):
    """The objects named by this process, its children, or a process started during the test
    and gone since (a child already reaped): not those of another live process (a second
    test run, a demo) that happened to start meanwhile."""
    me = os.getpid()
    return {p for p in paths if (pid := _named_pid(p)) is None or pid == me or pid in children
            or (pid not in live_before and not psutil.pid_exists(pid))}


def _children():
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _snapshot():
    return {
        "children": _children(),
        "/dev/shm": set(os.listdir("/dev/shm")),
        "POSIX message queues": _mqueues(),
        "SysV IPC": _sysv(),
        "attached loop devices": _loops(),
        "osvirt temp files": _temp_files(),
        "osvirt cgroups": _cgroups(),
        "osvirt network interfaces": _interfaces(),
    }


def _leaks(before, after, live_before):
    """{kind: what `after` holds that `before` did not}, for each kind listed both times."""
    kids = after["children"]
    after = {**after, "osvirt temp files": _made_during_test(after["osvirt temp files"], live_before, kids),
             "osvirt cgroups": _made_during_test(after["osvirt cgroups"], live_before, kids),
             "osvirt network interfaces": _made_during_test(after["osvirt network interfaces"], live_before, kids)}
    return {kind: sorted(map(str, after[kind] - before[kind])) for kind in after
            if after[kind] is not None and before[kind] is not None and after[kind] - before[kind]}


@pytest.fixture(autouse=True)
def leak_guard():
    live_before = set(psutil.pids())  # first: a process started after this made its files during the test
    before = _snapshot()
    yield
    deadline = time.monotonic() + 2.0  # children killed at teardown may take a moment to go
    while True:
        after = _snapshot()
        leaks = _leaks(before, after, live_before)
        if not leaks or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in after["children"] - before["children"]:  # stop and reap them: later tests start clean
        try:
            psutil.Process(pid).kill()
            os.waitpid(pid, 0)
        except (psutil.NoSuchProcess, ChildProcessError):
            pass
    if leaks:
        pytest.fail("left behind: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in leaks.items()),
                    pytrace=False)


def pytest_terminal_summary(terminalreporter):
    """At session end, the osvirt cgroups anyone left (`find /sys/fs/cgroup -maxdepth 4 -name 'osvirt-*'`:
    depth 4 reaches a v1 memory cgroup nested like /sys/fs/cgroup/memory/a/b/osvirt-...)."""
    left = sorted(p for depth in range(4) for p in glob.glob(os.path.join("/sys/fs/cgroup", *["*"] * depth, PREFIX + "*")))
    if left:
        terminalreporter.write_sep("=", "osvirt cgroups under /sys/fs/cgroup")
        for path in left:
            terminalreporter.write_line(path)


class LingeringDemo:
    """A demo started with `--linger 60` (it pauses while it holds its objects), to Ctrl-C."""

    def __init__(self, script):
        self.text = ""
        self.proc = subprocess.Popen([sys.executable, os.path.join("demos", script), "--linger", "60"], cwd=ROOT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def output_until(self, marker):
        """Its output up to the line that completes `marker` (its pause), with each run of white
        space made one space: Demo.say wraps at spaces, so a marker, pid or path may span two
        lines. AssertionError if it ends first."""
        for line in self.proc.stdout:
            self.text += line
            joined = " ".join(self.text.split())
            if marker in joined:
                return joined
        raise AssertionError("the demo ended without pausing:\n" + self.text)

    def interrupt(self):
        """SIGINT it: it must exit 130 saying it cleaned up. Returns its stderr."""
        os.kill(self.proc.pid, signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 128 + signal.SIGINT, err
        assert "interrupted, children reaped and objects removed" in err
        return err

    @staticmethod
    def alive(pid):
        """Whether `pid` runs (a zombie does not)."""
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def lingering_demo():
    """`lingering_demo("02_ipc.py")` starts a LingeringDemo, killed at teardown if still running."""
    started = []

    def start(script):
        started.append(LingeringDemo(script))
        return started[-1]

    yield start
    for demo in started:
        demo.close()


# -- Debian's packages: the kernel (tests/vm) and busybox (tests/vm, a container's rootfs) ------------
# Fetched once into a cache that outlives the run.
#
# `apt-get download` needs only apt's package lists (.ci/run's `apt-get update`
# as root makes them) and a writable directory, so it works unprivileged too.
# The cache is /var/cache/osvirt-ci where it exists or can be made (root), else
# ~/.cache/osvirt (for uid 65534 in CI, HOME is the tree's copy): a file found
# in either is used. Only the file needed is kept from a package (the kernel's
# /boot/vmlinuz-*, 8 MiB of its 400 MiB of modules); the .deb is deleted once
# it is out.
CACHES = ("/var/cache/osvirt-ci", os.path.join(os.path.expanduser("~"), ".cache", "osvirt"))
META_PACKAGE = "linux-image-amd64"


def _cached(pattern):
    for cache in CACHES:
        found = sorted(glob.glob(os.path.join(cache, "debian", pattern)))
        if found:
            return found[-1]
    return None


def _writable_cache():
    for cache in CACHES:
        try:
            os.makedirs(os.path.join(cache, "debian"), exist_ok=True)
        except OSError:
            continue
        if os.access(os.path.join(cache, "debian"), os.W_OK):
            return os.path.join(cache, "debian")
    return None


def _fetch(package, member, name):
    """Fetch `package` with apt-get download and keep its file `member` (a path in the package) in the
    cache as `name`: that path, or (None, the reason it cannot be had)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        return None, "apt-get and dpkg-deb are not installed (not a Debian system)"
    target = _writable_cache()
    if target is None:
        return None, f"no writable cache directory among {', '.join(CACHES)}"
    fetched = subprocess.run(["apt-get", "download", package], cwd=target, capture_output=True, text=True)
    debs = glob.glob(os.path.join(target, f"{package}_*.deb"))
    if fetched.returncode != 0 or not debs:
        return None, (f"apt-get download {package} failed (apt's lists missing? `apt-get update` as root makes "
                      f"them): {fetched.stderr.strip()[-300:]}")
    try:
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", debs[0]], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL) as proc:
            assert proc.stdout is not None
            with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                for entry in tar:
                    if entry.isfile() and entry.name.lstrip("./") == member:
                        partial = os.path.join(target, ".partial")
                        with open(partial, "wb") as out:
                            shutil.copyfileobj(tar.extractfile(entry), out)
                        os.chmod(partial, entry.mode & 0o755)
                        os.replace(partial, os.path.join(target, name))
                        break
            proc.stdout.close()  # the rest of the package is not needed: dpkg-deb ends on EPIPE
    finally:
        for deb in debs:
            os.unlink(deb)
    path = os.path.join(target, name)
    return (path, None) if os.path.exists(path) else (None, f"{os.path.basename(debs[0])} holds no {member}")


def _kernel_package():
    """The kernel package linux-image-amd64 depends on (linux-image-<release>), or None."""
    depends = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True, text=True)
    for line in depends.stdout.splitlines():
        if line.strip().startswith("Depends:") and "linux-image-" in line:
            return line.split(":", 1)[1].strip()
    return None


@pytest.fixture(scope="session")
def debian_kernel():
    """The path of Debian's bzImage (package linux-image-amd64), or a skip saying why there is none."""
    path = _cached("vmlinuz-*")
    if path is None:
        package = _kernel_package() if shutil.which("apt-cache") else None
        if package is None:
            pytest.skip(f"Debian's kernel cannot be had: apt-cache finds no package {META_PACKAGE} depends on "
                        "(not Debian, or apt's lists missing: `apt-get update` as root makes them)")
        release = package.removeprefix("linux-image-")
        path, reason = _fetch(package, f"boot/vmlinuz-{release}", f"vmlinuz-{release}")
        if path is None:
            pytest.skip(f"Debian's kernel cannot be had: {reason}")
    return path


@pytest.fixture(scope="session")
def debian_busybox():
    """The path of Debian's static busybox (package busybox-static), or a skip saying why there is none."""
    path = _cached("busybox")
    if path is None:
        path, reason = _fetch("busybox-static", "bin/busybox", "busybox")
        if path is None:
            pytest.skip(f"Debian's busybox-static cannot be had: {reason}")
    return path
