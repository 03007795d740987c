"""Container primitives: a container's start, to its program's exit, next to runc's.

One bundle, `runc spec`'s config (its namespaces, mounts, three
capabilities, no_new_privs, a read-only root) with the host's /usr
bound read-only into an empty root and /bin, /lib... linked into it, runs
/bin/true: through osvirt.container.Container (create, start, wait, delete,
in this process) and through `runc run` of the same bundle (its binary's own
start included, as a caller of runc pays it). The C loop is the bare process
start a container wraps, posix_spawn and waitpid of /bin/true; the floor,
Container's own system calls for that bundle made bare from Python (the
bundle's mounts and what exists worked out once, before the timing), which
builds the same container (a test compares what a program sees inside).
"""
import itertools
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from osvirt import tracker
from osvirt.bench.harness import Primitive, rig
from osvirt.naming import private_dir

if TYPE_CHECKING:
    from osvirt.container import Container, oci

__all__ = ["PRIMITIVES", "bundle", "compare", "report"]

TRUE = "/bin/true"
_USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def bundle(directory: str, args: list[str]) -> str:
    """Write a bundle running `args` in `directory` (config.json and rootfs/); returns it.

    The config is `runc spec`'s (osvirt-runtime's spec()) with terminal off,
    the host's /usr bound read-only, and usrmerge's links as the host has them.
    """
    from osvirt.container import runtime
    rootfs = os.path.join(directory, "rootfs")
    os.mkdir(rootfs)
    for name in _USR_LINKS:
        if os.path.islink(f"/{name}"):
            os.symlink(os.readlink(f"/{name}"), os.path.join(rootfs, name))
    config = runtime.spec()
    config["process"].update(terminal=False, args=args)
    config["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr",
                             "options": ["rbind", "ro", "nosuid", "nodev"]})
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return directory


def _run_true(c: "Container") -> None:
    """create, start and wait for a container running /bin/true (RuntimeError unless it exits 0)."""
    c.create()
    c.start()
    if c.wait() != 0:
        raise RuntimeError(f"{c.spec.process and c.spec.process.args[0]} failed in the container")


def _osvirt_starts(args: list[str]) -> Iterator[Callable[[], None]]:
    """Container's create, start, wait and delete of a bundle running `args`, each time."""
    from osvirt.container import Container, oci
    with private_dir(tempfile.gettempdir()) as directory:
        spec = oci.load(bundle(directory, args))

        def start_to_exit() -> None:
            c = Container(spec)
            try:
                _run_true(c)
            finally:
                c.delete(force=True)
        yield start_to_exit


@rig
def _osvirt_start() -> Iterator[Callable[[], None]]:
    yield from _osvirt_starts([TRUE])


@rig
def _runc_run() -> Iterator[Callable[[], None]]:
    runc = shutil.which("runc")
    if runc is None:
        raise FileNotFoundError("runc is not installed")
    with private_dir(tempfile.gettempdir()) as directory:
        path = bundle(directory, [TRUE])
        root = os.path.join(directory, "runc-state")  # runc's own state, inside what is removed after
        ids = itertools.count()

        def runc_run() -> None:
            # not osvirt-*: runc names its cgroup after the id, and osvirt's names are the tracker's
            subprocess.run([runc, "--root", root, "run", "--bundle", path, f"bench-{os.getpid()}-{next(ids)}"],
                           check=True, stdin=subprocess.DEVNULL)
        yield runc_run


# -- the floor: the same kernel work in the barest calls ------------------------------------------
# The container process's calls, computed once per rig from the bundle: (call, args), where a call of the
# C extension answers -1 on failure and an os one raises.
Step = tuple[Callable[..., object], tuple[object, ...]]


def _touch(path: str) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def _floor_steps(spec: "oci.Spec", root: str) -> list[Step]:
    """What Container's container process does for `spec` (runc's order, see osvirt.container.container),
    as the bare calls, with what it looks up (mountinfo, statvfs, which paths exist) looked up here."""
    from osvirt._native import ffi, lib
    from osvirt.container import cgroups, mounts
    from osvirt.container._native import CLONE_NEW, MNT, MS
    from osvirt.container.rootfs import secure_join

    def c(text: str | None) -> object:
        return ffi.NULL if text is None else text.encode()

    def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> Step:
        return lib.osv_mount, (c(source), target.encode(), c(fstype), flags, c(data))

    bind, rec, ro, remount, relatime = MS["BIND"], MS["REC"], MS["RDONLY"], MS["REMOUNT"], MS["RELATIME"]
    plain = MS["NOSUID"] | MS["NODEV"] | MS["NOEXEC"] | relatime

    def rbind(source: str, target: str, flags: int) -> list[Step]:
        """An rbind, its options on it (a remount), and read-only on each mount it brought along (the
        host's under `source`, looked up here)."""
        below = [m.mount_point for m in mounts.mountinfo() if m.mount_point.startswith(source.rstrip("/") + "/")]
        return [mount(source, target, None, bind | rec),
                mount(None, target, None, bind | remount | flags | mounts._kept_flags(source))] + [
            mount(None, target + p[len(source):], None, bind | remount | ro | mounts._kept_flags(p)) for p in below]

    lx = spec.linux
    steps: list[Step] = [
        (lib.osv_unshare, (sum(CLONE_NEW[k] for k in ("NS", "UTS", "IPC", "NET")),)),
        (_loopback_up, ()),
        mount(None, "/", None, MS["SLAVE"] | rec),
        mount(root, root, None, bind | rec),
    ]
    made: list[str] = []  # tmpfs mounted here, fresh each time: what lies in them is made each time too
    hierarchies = cgroups.cgroup_mounts()
    for m in spec.mounts or ():
        target = secure_join(root, m.destination)
        if m.type == "cgroup" and any(h.point == "/sys/fs/cgroup" and h.version == 2 for h in hierarchies):
            steps.append(mount("cgroup2", target, "cgroup2", m.flags))  # a v2-only host's: mounted again
        elif m.type == "cgroup":  # a tmpfs holding each of the host's hierarchies, mounted again; read-only
            steps.append(mount("tmpfs", target, "tmpfs", m.flags & plain, "mode=755"))
            for h in hierarchies:
                if h.point.startswith("/sys/fs/cgroup/"):
                    sub = target + h.point[len("/sys/fs/cgroup"):]
                    options = ",".join(sorted(h.controllers)) or f"none,name={os.path.basename(h.point)}"
                    steps += [(os.mkdir, (sub,)),
                              mount("cgroup", sub, "cgroup", m.flags, options) if h.version == 1 else
                              mount("cgroup", sub, "cgroup2", m.flags)]
            steps.append(mount(None, target, None, remount | ro | m.flags & plain))
        elif m.is_bind:
            assert m.recursive and m.resolved_source and m.flags & ro  # the bundle's /usr
            steps += rbind(m.resolved_source, target, m.flags & ~(bind | rec))
        else:
            if any(m.destination.startswith(d + "/") for d in made):
                steps.append((os.mkdir, (target,)))
            steps.append(mount(m.source, target, m.type, m.flags, m.data))
            if m.type == "tmpfs":
                made.append(m.destination)
    steps += [(_touch, (f"{root}/dev/{name}",)) for name in mounts.DEVICES]
    steps += [mount(f"/dev/{name}", f"{root}/dev/{name}", None, bind) for name in mounts.DEVICES]
    steps += [(os.symlink, (target, f"{root}/dev/{name}")) for name, target in (
        ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"))]
    # pivot_root(2)'s own recipe for new_root == put_old, the old root made a slave first (as runc does)
    steps += [(os.chdir, (root,)), (lib.osv_pivot_root, (b".", b".")), mount(None, ".", None, MS["SLAVE"] | rec),
              (lib.osv_umount2, (b".", MNT["MNT_DETACH"])), (os.chdir, ("/",))]
    proc_kept = relatime  # the container's /proc: mounted with no flags, so relatime
    for path in lx.readonly_paths or ():
        if os.path.exists(path):
            steps += [mount(path, path, None, bind | rec), mount(None, path, None, bind | remount | ro | proc_kept)]
    for path in lx.masked_paths or ():
        if os.path.isdir(path):
            steps.append(mount("tmpfs", path, "tmpfs", ro))
        elif os.path.exists(path):
            steps.append(mount("/dev/null", path, None, bind))
    steps.append(mount(None, "/", None, bind | remount | ro | mounts._kept_flags(root)))
    return steps


def _loopback_up() -> None:
    """lo up in this network namespace (SIOCGIFFLAGS, SIOCSIFFLAGS with IFF_UP), as runc brings it up."""
    from osvirt._native import lib
    from osvirt.container._native import IFF
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        flags = lib.osv_ifflags_get(sock.fileno(), b"lo")
        if flags == -1 or lib.osv_ifflags_set(sock.fileno(), b"lo", flags | IFF["UP"]) == -1:
            raise OSError("ioctl(SIOCGIFFLAGS or SIOCSIFFLAGS, lo)")


@rig
def _bare_container() -> Iterator[Callable[[], None]]:
    yield from _bare_starts([TRUE])


def _bare_starts(args: list[str]) -> Iterator[Callable[[], None]]:
    """The floor: Container's create, start, wait and delete of the bundle as the bare calls, the same
    kernel work (state directory and exec.fifo, cgroup in each hierarchy, namespaces, mounts, pivot_root,
    capabilities, no_new_privs, exec, wait, removal) without the tracker, the checks, the spec or objects."""
    from osvirt import env
    from osvirt._native import ffi, lib
    from osvirt.container import cgroups, oci
    from osvirt.container._native import AMBIENT, CAPABILITIES, CLONE_NEW
    from osvirt.naming import unique_name
    with private_dir(tempfile.gettempdir()) as directory:
        spec = oci.load(bundle(directory, args))
        assert spec.process is not None
        root = spec.root.resolved
        for m in spec.mounts or ():  # what osvirt's first start makes in the root directory, made here
            if m.destination.count("/") == 1:
                os.makedirs(root + m.destination, exist_ok=True)
        steps = _floor_steps(spec, root)
        process, caps = spec.process, spec.process.capabilities
        assert caps is not None and not caps.usable("inheritable")  # so no ambient capability can be raised
        keep = {name: sum(1 << CAPABILITIES[c] for c in caps.usable(name)) for name in ("bounding", "effective",
                                                                                         "permitted")}
        held = env.capability_masks()["CapBnd"]
        drops = [nr for nr in range(held.bit_length()) if held >> nr & 1 and not keep["bounding"] >> nr & 1]
        sets = ffi.new("uint64_t[3]", [keep["effective"], keep["permitted"], 0])
        argv, environ = list(process.args), process.environ()
        rlimits = [(r.resource, (r.soft, r.hard)) for r in process.rlimits or ()]
        cgroups.Cgroup().close()  # v2: the controllers enabled for children once, as Container's first does
        name = unique_name()
        cgroup_dirs = list(dict.fromkeys(os.path.join(p.parent, name) for p in cgroups.placements().values()))
        state = os.path.join("/dev/shm", unique_name())
        fifo = f"{state}/exec.fifo"
        own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)

        def container_process(up: int, down: int, fifo_fd: int) -> None:
            lib.osv_set_pdeathsig(signal.SIGKILL, 0)
            for call, args in steps:
                if call(*args) == -1:
                    raise OSError(ffi.errno, os.strerror(ffi.errno), call.__name__)
            if os.read(down, 3) != b"go\n":  # moved into its cgroups
                return
            socket.sethostname(spec.hostname or "")
            for which, limits in rlimits:
                resource.setrlimit(which, limits)
            os.write(up, b"created\n")
            fifo_w = os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)  # until start opens it
            os.write(fifo_w, b"0")
            for nr in drops:
                lib.osv_capbset_drop(nr)
            lib.osv_cap_ambient(AMBIENT["CLEAR_ALL"], 0)
            lib.osv_capset(sets)
            lib.osv_prctl_set_no_new_privs()
            os.chdir(process.cwd)
            os.execve(argv[0], argv, environ)

        def start_to_exit() -> None:
            os.mkdir(state, 0o700)  # create
            os.mkfifo(fifo, 0o622)
            os.chmod(fifo, 0o622)
            up_r, up_w = os.pipe()
            down_r, down_w = os.pipe()
            fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC)
            lib.osv_unshare(CLONE_NEW["PID"])
            pid = os.fork()
            if pid == 0:
                try:
                    container_process(up_w, down_r, fifo_fd)
                finally:
                    os._exit(1)
            lib.osv_setns(own_pid_ns, CLONE_NEW["PID"])
            for fd in (up_w, down_r, fifo_fd):
                os.close(fd)
            for path in cgroup_dirs:  # while it builds its root, as Container does
                os.mkdir(path, 0o755)
            for path in cgroup_dirs:
                fd = os.open(f"{path}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
                os.write(fd, str(pid).encode())
                os.close(fd)
            os.write(down_w, b"go\n")
            created = os.read(up_r, 8)
            os.close(up_r)
            os.close(down_w)
            fd = os.open(f"{state}/state.json", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.write(fd, json.dumps({"id": name, "pid": pid, "status": "created"}).encode())
            os.close(fd)
            fd = os.open(fifo, os.O_RDONLY | os.O_CLOEXEC)  # start: "0", then EOF at its exec
            started = os.read(fd, 8)
            while chunk := os.read(fd, 8):
                started += chunk
            os.close(fd)
            os.unlink(fifo)
            status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])  # wait
            fd = os.open(f"{state}/exit-status", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.write(fd, b'{"exitStatus": %d}' % status)
            os.close(fd)
            for path in reversed(cgroup_dirs):  # delete
                os.rmdir(path)
            for file in ("state.json", "exit-status"):
                os.unlink(f"{state}/{file}")
            os.rmdir(state)
            if (created, started, status) != (b"created\n", b"0", 0):
                raise RuntimeError(f"{argv[0]} failed in the bare container: {created!r} {started!r} {status}")

        for path in cgroup_dirs:  # should this process be SIGKILLed mid-way
            tracker.register("cgroup", path)
        tracker.register("dir", state)
        try:
            yield start_to_exit
        finally:
            os.close(own_pid_ns)
            tracker.unregister("dir", state)
            for path in cgroup_dirs:
                tracker.unregister("cgroup", path)


PRIMITIVES = [
    Primitive(
        "container-start", "a container running /bin/true, from create to its exit and delete: "
                           "osvirt.container.Container on a `runc spec`-like bundle",
        python=_osvirt_start, c="spawn_wait", c_args=(TRUE,),
        floor=("the same system calls, bare (unshare, mount, pivot_root, cgroup writes, prctl, exec)",
               _bare_container),
        peer=("runc run (same bundle)", _runc_run) if shutil.which("runc") else None,
        needs=("cap_sys_admin", "mount_namespace"),
        note="the floor makes Container's system calls for this bundle, bare (a test checks that a program "
             "inside sees the same container either way: mounts, capabilities, cgroups, /dev): state "
             "directory and exec.fifo, a cgroup in each hierarchy, unshare, the bundle's mounts, pivot_root, "
             "capabilities, no_new_privs, exec, wait, removal; it leaves out Container's Python, ~1,700 calls "
             "a start here and ~1,800 in the child before its exec (paths resolved in the root, arguments "
             "checked, the resource tracker's 10 registrations: 1-2 ms, measured with them stubbed out), "
             "and what Python costs after fork(): each page it writes in either process is copied (minor "
             "faults a start: ~560 here and ~740 in the child, the floor's ~110 and ~430; ~2.5 us a copy "
             "here), about twice the floor's CPU time (~21 ms a start against ~11). The C loop is the bare "
             "process start a container wraps (posix_spawn + waitpid); runc's figure includes its binary's "
             "start, as any caller of runc pays it" + ("" if shutil.which("runc") else "; no peer: runc is not installed")),
]


def compare(runs: int = 20) -> dict[str, list[float]]:
    """Seconds for each of `runs` starts of the same bundle, osvirt's and runc's taken in turn (after one
    warm-up each): {"osvirt to exit", "osvirt to delete", "runc run"} (the last empty without runc)."""
    from osvirt.container import Container, oci
    runc = shutil.which("runc")
    times: dict[str, list[float]] = {"osvirt to exit": [], "osvirt to delete": [], "runc run": []}
    with private_dir(tempfile.gettempdir()) as directory:
        spec = oci.load(bundle(directory, [TRUE]))
        for i in range(runs + 1):
            t0 = time.perf_counter()
            c = Container(spec)
            try:
                _run_true(c)
                t1 = time.perf_counter()
            finally:
                c.delete(force=True)
            t2 = time.perf_counter()
            if runc:
                subprocess.run([runc, "--root", os.path.join(directory, "runc-state"), "run", "--bundle", directory,
                                f"bench-{os.getpid()}-{i}"], check=True, stdin=subprocess.DEVNULL)
            t3 = time.perf_counter()
            if i:
                times["osvirt to exit"].append(t1 - t0)
                times["osvirt to delete"].append(t2 - t0)
                if runc:
                    times["runc run"].append(t3 - t2)
    return times


def report(runs: int = 20) -> None:
    """Print compare(runs)'s medians: python -c 'from osvirt.bench import container; container.report()'."""
    for what, seconds in compare(runs).items():
        if seconds:
            print(f"{what:18} median {statistics.median(seconds) * 1e3:6.1f} ms  (min {min(seconds) * 1e3:.1f}, "
                  f"max {max(seconds) * 1e3:.1f}, {len(seconds)} runs)")
