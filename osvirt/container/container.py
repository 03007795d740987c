"""`Container`: an OCI spec (osvirt.container.oci) run the way runc runs one.

    >>> from osvirt.container import Container
    >>> with Container.run(["sh", "-c", "hostname; echo $$"], hostname="box") as c:
    ...     c.wait()                     # prints box, then 2 (osvirt's init is 1)
    0

The life cycle is the runtime-spec's (runtime.md), each step a method, and
each may run in a different process (the `osvirt-runtime` CLI does so):

    c = Container(spec, "web", state_root="/run/osvirt")   # nothing made yet
    c.create()        # namespaces, cgroup, root filesystem, ...: the process waits before exec
    c.start()         # it execs process.args (ContainerError if that fails)
    c.state()         # the OCI state: {"ociVersion", "id", "status", "pid", "bundle", "annotations"}
    c.kill(signal.SIGTERM)
    c.wait()          # its exit status: the code, or -N when signal N killed it
    c.delete()        # cgroup and state directory removed (force=True kills a running one)
    Container.load("/run/osvirt/web")   # the same container, from another process

`Container.run(argv or callable, ...)` builds a spec (docker.oci_config with
the keyword arguments: rootfs, memory, cpus, pids, hostname, rootless,
seccomp, net, volumes), creates and starts it, and as a context manager
kills, waits for and deletes it on exit.

What `create()` does, in order (runc's order):

1. Checks: the Spec was checked when parsed (oci.parse: SpecError naming the
   field), its seccomp profile compiled; nothing has been done yet.
2. The state directory (`state_root`/id, or a private directory in
   /dev/shm), the exec FIFO in it, and the cgroup (memory, cpu and pids
   wherever this machine has each controller, v1 or v2; see
   osvirt.container.cgroups).
3. The monitor: a forked child that joins the namespaces the spec gives a
   path for (user, pid, time) and unshares new user, pid and time
   namespaces (the parent writes the uid and gid maps once it has), then
   forks the container process, waits for it, and records its exit status
   in the state directory (so `wait()` works from any process, and a pid
   namespace's PID 1 is the container's own process, not the monitor).
   When this process owns the container and it needs no user namespace
   (root's usual case), there is no monitor: this process unshares the pid
   namespace for the one fork, sets its own back, and waits itself.
4. The container process: it joins or unshares the mount, UTS, IPC and
   network namespaces (lo up, as runc brings it up) and, while the parent
   moves it into the cgroup (a write per v1 hierarchy), mounts; it joins
   or unshares the cgroup namespace once moved (so its cgroup is the
   namespace's root, and a cgroup mount shows it). After the prestart and
   createRuntime hooks (run by the parent), it builds the root: the root
   made a mount point (or the host's /usr view, see HOST_ROOT_ANNOTATION), the spec's mounts in order (bind and
   rbind with their flags, proc, sysfs, devpts newinstance, mqueue, tmpfs,
   cgroup), runc's default devices in /dev (null, zero, full, random,
   urandom, tty bound from the host: no mknod, so it works rootless) and its
   links (ptmx -> pts/ptmx, fd, stdin, stdout, stderr), the createContainer
   hooks, pivot_root; then sysctl, readonlyPaths, maskedPaths, the root
   read-only, the console (`console_socket`), hostname and domainname,
   rlimits, oomScoreAdj. It reports
   "created" to the parent through the sync pipe (an error instead: the
   parent raises ContainerError naming the step and errno), and opens
   exec.fifo for writing, which blocks until `start()` opens it for
   reading, from whichever process. While it waits, SIGTERM, SIGINT, SIGHUP,
   SIGQUIT and SIGABRT end it with status 128 + N, as they end runc's
   (`WAITING_DEATHS`): as PID 1 of its namespace it would otherwise ignore them.
5. Once started: the startContainer hooks, then user (setgroups, setgid,
   setuid), capabilities (the five sets, as limit_to), no_new_privs and the
   seccomp filter, then exec. The filter is the last step when the spec
   asks for no_new_privs; otherwise it goes before the capabilities are
   dropped, as runc does, since without CAP_SYS_ADMIN installing a filter
   needs no_new_privs, which the spec did not ask for. An exec failure
   (ENOENT, EACCES) comes back through the FIFO: `start()` raises it.

PID 1 inside. With `init=True` (Container.run's and `osvirt container run`'s
default, like `docker run --init`, unless the program is an init itself:
`INITS`) the container's PID 1 is osvirt's own
tiny init: the container process itself, already a forked Python process,
forks the program and then only waits: every signal it gets (kill(), a
Ctrl-C forwarded) goes to the program, every orphan reparented to it is
reaped, and it exits with the program's status once the program exits,
which ends the namespace. Why: a program written without PID 1 in mind,
made PID 1, gets no default action for the signals it does not handle (the
kernel protects a namespace's init: SIGTERM and SIGINT do nothing), and
never waits for orphans, whose zombies pile up and count against pids.max.
Forking the already-running process costs a fork, not a new interpreter
or a binary to ship. With `init=False` (the OCI runtime's default: runc's
behaviour, which tools driving a runtime expect) process.args is PID 1
itself, and the state's pid is its pid.

Cleanup: with `state_root` None (the Python API) the container belongs to
this process: its monitor and process die with it (PR_SET_PDEATHSIG, even
on SIGKILL), the cgroup and the private state directory are registered with
osvirt.tracker, and close() (the context manager's exit, or garbage
collection) kills, reaps and removes everything. With `state_root` (the
runtime), the container outlives the process that created it: once created
it is deliberately not tracked; it belongs to its state directory until
`delete()`. Mounts live in the container's mount namespace and go with it.

process.terminal needs `console_socket` (runc's protocol: the pty's master
goes to that socket); without it the process inherits the caller's stdio.

Not done: linux.devices (only runc's default devices are made), cgroupsPath
(the cgroup is always osvirt-<pid>-<random> under this process's own cgroup,
where osvirt.tracker and delete() may remove it; the paths are in the
state's cgroupPaths), the device cgroup rules in resources.devices.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import resource
import select
import signal
import socket
import struct
import sys
import termios
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, NoReturn

from osvirt import tracker
from osvirt._owned import Owned
from osvirt.container import capabilities as _caps
from osvirt.container import cgroups as _cgroups
from osvirt.container import mounts as _mounts
from osvirt.container import namespaces as _ns
from osvirt.container import network as _network
from osvirt.container import oci
from osvirt.container import seccomp as _seccomp
from osvirt.container import _native as _cnative
from osvirt.container._native import MS
from osvirt.errors import ContainerError, SpecError
from osvirt.naming import unique_name
from osvirt.process import _native as _process_native
from osvirt.process.spawn import signals_deferred

__all__ = ["Container", "ContainerError", "SpecError", "HOST_ROOT_ANNOTATION", "INITS", "WAITING_DEATHS",
           "STATE_FILE", "EXEC_FIFO", "EXIT_FILE", "spec_for", "parse_size"]

STATE_FILE = "state.json"
EXEC_FIFO = "exec.fifo"
EXIT_FILE = "exit-status"
HOST_ROOT_ANNOTATION = "org.osvirt.root"
"""An annotation: "host-usr" makes the root a read-only view of the host's /usr (mounts.host_usr_root),
built on root.path, instead of binding root.path."""

# Kinds the monitor joins or makes (they act on its children: pid, time; or must come first: user).
_MONITOR_KINDS = ("user", "pid", "time")
# Kinds the container process joins or makes itself, in this order (cgroup after the cgroup move).
_PROCESS_KINDS = ("mount", "uts", "ipc", "network", "cgroup")
_RLIM_INFINITY_OCI = 2**64 - 1
_DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WAITING_DEATHS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGABRT, signal.SIGTERM})
"""The signals that end a created container's process as it waits on exec.fifo, with status 128 + N. A
namespace's PID 1 gets no default action for a signal it does not handle (the kernel drops it); runc's
waiting init, a Go program, dies of these (Go's runtime handles them and exits) and ignores the others."""
INITS = frozenset({"init", "tini", "docker-init", "dumb-init", "catatonit", "systemd", "s6-svscan", "runit-init"})
"""Programs written to be PID 1 (they reap orphans and handle signals): Container.run runs them without
osvirt's init."""


def _now() -> str:
    import datetime  # imported here, as what follows: an osvirt-runtime command that does not need them
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot): with the pid, names one process for good."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] == b"Z" or fields[0] == b"X":  # a zombie has exited: it runs nothing any more
        return None
    return int(fields[19])


def _alive(pid: int | None, start: int | None) -> bool:
    return pid is not None and start is not None and _start_time(pid) == start


def _atomic_write(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


class _Step:
    """Where the child is, for the error report: `step.now = "mount /proc"`."""
    now = "start"


def _error_report(step: str, e: BaseException) -> bytes:
    """One JSON line: the step, the errno (None when `e` is no OSError) and what `e` says."""
    if isinstance(e, ContainerError):
        step, err, message = f"{step}: {e.step}", e.errno, e.message
    elif isinstance(e, OSError):
        err = e.errno
        message = e.strerror or str(e)
        if e.filename is not None and os.fsdecode(e.filename) not in message:
            message += f": {os.fsdecode(e.filename)}"
    else:
        err, message = None, f"{type(e).__name__}: {e}"
    return json.dumps({"error": step, "errno": err, "message": message}).encode() + b"\n"


def _fork(run: Callable[[], int], report: int, closes: Sequence[int] = (), mask: Iterable[int] | None = None,
          failed: int = 1) -> int:
    """os.fork(); in the child: restore `mask`, close `closes`, and _exit with run()'s status, or with
    `failed` after writing the exception to `report` (the sync pipe, or the FIFO). The pid, here."""
    sys.stdout.flush()  # else written twice, by both processes
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = failed
    try:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in closes:
            os.close(fd)
        code = run()
    except BaseException as e:
        with contextlib.suppress(BaseException):
            os.write(report, _error_report(_Step.now, e))
    finally:
        os._exit(code)


def _raise_report(report: Mapping[str, Any]) -> None:
    raise ContainerError(str(report.get("error")), report.get("errno"), str(report.get("message")))


# -- mounts in the container's namespace -------------------------------------------------------
def _secure_join(root: str, path: str) -> str:
    """`path` inside `root`, its symlinks resolved as if `root` were `/` (so none leads out of it)."""
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root + "/" + "/".join(resolved + [part])
        if os.path.islink(candidate):
            links += 1
            if links > 40:
                raise OSError(errno.ELOOP, "too many symbolic links", candidate)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return root + "/" + "/".join(resolved) if resolved else root


def _make_target(source: str | None, target: str, is_file: bool) -> None:
    if is_file:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    else:
        os.makedirs(target, exist_ok=True)


_BIND_KEEP = MS["BIND"] | MS["REC"]


def _bind(source: str, target: str, flags: int, recursive: bool) -> None:
    _mounts.mount(source, target, None, MS["BIND"] | (MS["REC"] if recursive else 0))
    extra = flags & ~_BIND_KEEP & ~MS["REMOUNT"]
    if extra:  # a bind takes its source's flags: the options need a remount, per mount the rbind made
        if recursive and extra & MS["RDONLY"]:
            _mounts._remount_read_only(target, recursive=True)
            extra &= ~MS["RDONLY"]
        if extra:
            _mounts.mount(None, target, None, MS["BIND"] | MS["REMOUNT"] | extra | _mounts._kept_flags(target)
                          | (MS["RDONLY"] if flags & MS["RDONLY"] else 0))


def _cgroup_mount(target: str, flags: int) -> None:
    """/sys/fs/cgroup as runc makes it: cgroup2 on a v2-only host, else a tmpfs with each v1 hierarchy
    (and the unified one) mounted again; where the kernel refuses (a user namespace), binds of the host's."""
    hierarchies = [m for m in _cgroups.cgroup_mounts() if m.point.startswith("/sys/fs/cgroup")]
    plain = flags & (MS["NOSUID"] | MS["NODEV"] | MS["NOEXEC"] | MS["RELATIME"])
    if any(m.version == 2 and m.point == "/sys/fs/cgroup" for m in hierarchies):
        try:
            _mounts.mount("cgroup2", target, "cgroup2", flags)
        except PermissionError:
            _bind("/sys/fs/cgroup", target, flags, True)
        return
    _mounts.mount("tmpfs", target, "tmpfs", plain, "mode=755")
    for m in hierarchies:
        name = os.path.relpath(m.point, "/sys/fs/cgroup")
        if name == ".":
            continue
        sub = os.path.join(target, name)
        os.makedirs(sub, exist_ok=True)
        options = None
        if m.version == 1:  # its controllers, or for a named hierarchy (name=systemd) its name
            options = ",".join(sorted(m.controllers)) or f"none,name={os.path.basename(m.point)}"
        try:
            _mounts.mount("cgroup", sub, "cgroup" if m.version == 1 else "cgroup2", flags, options)
        except OSError:
            _bind(m.point, sub, flags, False)
    if flags & MS["RDONLY"]:
        _mounts.mount(None, target, None, MS["REMOUNT"] | MS["RDONLY"] | plain)


def _mount_one(root: str, m: oci.Mount) -> None:
    target = _secure_join(root, m.destination)
    flags = m.flags
    if m.is_bind:
        source = m.resolved_source or ""
        _make_target(source, target, not os.path.isdir(source))
        _bind(source, target, flags, m.recursive)
    elif m.type == "cgroup":
        os.makedirs(target, exist_ok=True)
        _cgroup_mount(target, flags)
    else:
        os.makedirs(target, exist_ok=True)
        try:
            _mounts.mount(m.source or m.type, target, m.type, flags, m.data)
        except PermissionError:
            if m.type == "sysfs":  # a user namespace without a network namespace of its own: runc binds /sys
                _bind("/sys", target, flags, True)
            elif m.type == "mqueue":  # a user namespace without an IPC namespace of its own
                _bind("/dev/mqueue", target, flags, False)
            else:
                raise
        except OSError as e:
            if e.errno == errno.EINVAL and m.type == "devpts" and m.data and "gid=" in m.data:
                # gid=5 (tty) is not mapped in a rootless user namespace: `runc spec --rootless` drops it too
                data = ",".join(o for o in m.data.split(",") if not o.startswith("gid="))
                _mounts.mount(m.source or m.type, target, m.type, flags, data or None)
            else:
                raise
    for propagation in m.propagation:
        _mounts.mount(None, target, None, propagation)


def _default_devices(root: str) -> None:
    """runc's default devices in root/dev, bound from the host's (a bind works rootless, mknod does not)."""
    dev = root + "/dev"
    os.makedirs(dev, exist_ok=True)
    for name in _mounts.DEVICES:
        path = f"{dev}/{name}"
        if os.path.lexists(path) and not os.path.isfile(path):
            continue
        if not os.path.exists(f"/dev/{name}"):
            continue
        _make_target(None, path, True)
        _mounts.mount(f"/dev/{name}", path, None, MS["BIND"])
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")):
        path = f"{dev}/{name}"
        if name == "ptmx" and os.path.lexists(path) and not os.path.islink(path):
            continue  # a ptmx node the spec bound: kept
        if not os.path.lexists(path):
            os.symlink(target, path)


def _write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


# -- the spec for the simple case ---------------------------------------------------------------
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes from an int or "64m", "1.5G", "512KiB" (binary units, as `docker run --memory` reads them)."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _SIZE.fullmatch(str(text))
    if not match:
        raise ValueError(f"size {text!r}: a number of bytes, or with k, m, g or t (binary units)")
    return int(float(match.group(1)) * (1 << (10 * " kmgt".index(match.group(2).lower() or " "))))


def spec_for(argv: Sequence[str], *, rootfs: str | None = None, memory: int | str | None = None,
             cpus: float | None = None, pids: int | None = None, hostname: str = "osvirt",
             rootless: bool | None = None, seccomp: str = "docker-default", net: str = "none",
             volumes: Iterable[tuple[str, str, bool]] = (), env: Iterable[str] | None = None, cwd: str = "/",
             readonly: bool = False) -> oci.Spec:
    """The Spec `osvirt container run` and Container.run give a command: docker.oci_config's, and the flags.

    `rootfs` None: the host's /usr, read-only, with private /tmp, /proc and
    /dev (mounts.host_usr_root, built on /mnt in the container's mount
    namespace). `rootless` None: when this process lacks CAP_SYS_ADMIN,
    uid 0 inside mapped to this process's uid (a user namespace). `net`:
    "none", "loopback" or "veth" (a network namespace of its own, lo up as
    runc brings it up; Container.run adds the veth pair) or "host" (the
    host's); `volumes` are (host, guest, read_only).
    """
    from osvirt import env as _env
    from osvirt.container import docker
    if rootless is None:
        rootless = "CAP_SYS_ADMIN" not in _env.capabilities()
    if seccomp not in ("docker-default", "none"):
        raise ValueError(f"seccomp: {seccomp!r} is not docker-default or none")
    if net not in ("none", "loopback", "host", "veth"):
        raise ValueError(f"net: {net!r} is not none, loopback, veth or host")
    volumes = [(os.path.abspath(h), g, bool(ro)) for h, g, ro in volumes]
    root = os.path.abspath(rootfs) if rootfs else "/mnt"
    environment = list(env) if env is not None else [_DEFAULT_PATH, "HOME=/root", f"HOSTNAME={hostname}"]
    config: dict[str, Any] = docker.oci_config(root, list(argv), cwd=cwd, env=environment, binds=volumes,
                                               hostname=hostname, network=net != "host")
    linux: dict[str, Any] = config["linux"]
    if seccomp == "none":
        del linux["seccomp"]
    if rootfs is None:
        config["annotations"] = {HOST_ROOT_ANNOTATION: "host-usr"}
        first_bind = next((i for i, m in enumerate(config["mounts"]) if m["type"] == "bind"), len(config["mounts"]))
        config["mounts"].insert(first_bind, {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                                             "options": ["nosuid", "nodev", "mode=1777"]})  # under the volumes
    config["root"]["readonly"] = readonly
    resources: dict[str, Any] = {}
    if memory is not None:
        resources["memory"] = {"limit": parse_size(memory)}
    if cpus is not None:
        if not cpus > 0:
            raise ValueError(f"cpus: {cpus!r} must be above 0")
        resources["cpu"] = {"quota": int(cpus * 100000), "period": 100000}
    if pids is not None:
        resources["pids"] = {"limit": pids}
    if resources:
        linux["resources"] = {**linux.get("resources", {}), **resources}
    if rootless:
        linux["namespaces"].append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
        for m in config["mounts"]:
            if m["type"] == "devpts":
                m["options"] = [o for o in m["options"] if not o.startswith("gid=")]
        # as runc's rootless spec: the device cgroup is not ours to set
        if resources:
            linux["resources"].pop("devices", None)
        else:
            linux.pop("resources", None)
    return oci.parse(config, os.getcwd())


# -- the container --------------------------------------------------------------------------------
class Container(Owned):
    """An OCI container: see the module's docstring for the life cycle and what each step does.

    `spec`: an oci.Spec (oci.load(bundle) or oci.parse(dict, bundle)).
    `id`: its name (default: an osvirt unique name). `state_root`: where
    its state directory goes (`state_root`/id), for a container that
    outlives this process (a runtime); None: a private temp directory, the
    container owned by this process. `target`: a Python callable run in the
    container instead of exec'ing process.args (with `args`). `init`: osvirt's
    init as PID 1 (see the module's docstring). `console_socket`: with
    process.terminal, the path of a listening AF_UNIX socket (runc's
    --console-socket): the container process opens a pty of its own devpts
    instance, makes its slave its controlling terminal and stdio, and sends
    the master there (SCM_RIGHTS, with the name "/dev/ptmx") before create()
    returns; the receiver proxies it. Without one the process inherits this
    process's stdio, terminal or not.
    """

    _monitor_pid: int | None = None
    _cgroup: _cgroups.Cgroup | None = None
    _private_dir: str | None = None
    _destroyed = False
    _child = False  # the container process is this process's own child (the direct path)
    _exit_r = -1  # direct path: the read end of osvirt's init's report of the program's status
    veth: _network.Veth | None = None  # Container.run(net="veth")'s pair to the host

    def __init__(self, spec: oci.Spec, id: str | None = None, *, state_root: str | None = None,
                 target: Callable[..., object] | None = None, args: Sequence[object] = (),
                 init: bool = False, attached: bool | None = None, console_socket: str | None = None) -> None:
        if not isinstance(spec, oci.Spec):
            raise TypeError(f"Container: spec must be an oci.Spec, not {type(spec).__name__}")
        if spec.process is None:
            raise SpecError("process", "is required to run a container")
        if id is not None and (not id or "/" in id or id in (".", "..") or "\0" in id):
            raise ValueError(f"Container: id {id!r} must be a non-empty name without '/'")
        if target is not None and not callable(target):
            raise TypeError("Container: target must be callable")
        self.spec = spec
        self.id = id or unique_name()
        self.state_root = os.path.abspath(state_root) if state_root else None
        self.state_dir = os.path.join(self.state_root, self.id) if self.state_root else ""
        self.attached = self.state_root is None if attached is None else attached
        if console_socket is not None and not (spec.process.terminal and isinstance(console_socket, str)):
            raise ValueError("Container: console_socket is a path, for a spec whose process.terminal is true")
        self.console_socket = console_socket
        self.target = target
        self.target_args = tuple(args)
        self.init = bool(init)
        self.pid: int | None = None
        self._pid_start: int | None = None
        self._monitor_start: int | None = None
        self._creator = os.getpid()
        self._created = ""
        self._cgroup_paths: dict[str, str] = {}
        self._status: str | None = None  # None: not created yet
        self._exit: int | None = None

    # -- paths and the state file ---------------------------------------------------------------
    def _path(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    def _record(self) -> dict[str, Any]:
        return {
            "ociVersion": self.spec.oci_version, "id": self.id, "status": self._status, "pid": self.pid,
            "pidStart": self._pid_start, "monitorPid": self._monitor_pid, "monitorStart": self._monitor_start,
            "bundle": self.spec.bundle, "created": self._created, "cgroupPaths": self._cgroup_paths,
            "annotations": self.spec.annotations or {}, "init": self.init, "attached": self.attached,
            "creator": self._creator,
            # for load() in another process (a runtime's containers); a private one is not loaded elsewhere,
            # and its config (Docker's seccomp profile: a hundred rules) would cost its start the encoding
            "config": dict(self.spec.raw) if self.state_root is not None else None,
        }

    def _save(self) -> None:
        _atomic_write(self._path(STATE_FILE), self._record())

    @classmethod
    def load(cls, state_dir: str) -> Container:
        """The container whose state directory is `state_dir`, re-attached (FileNotFoundError if none)."""
        with open(os.path.join(state_dir, STATE_FILE)) as f:
            record = json.load(f)
        if record.get("config") is None:
            raise ContainerError("load", None, f"container {record['id']} belongs to process {record.get('creator')} "
                                 "(created with no state_root): it cannot be loaded elsewhere")
        spec = oci.parse(record["config"], record["bundle"])
        state_dir = os.path.abspath(state_dir)
        self = cls(spec, record["id"], state_root=os.path.dirname(state_dir), init=record.get("init", False),
                   attached=False)
        self.state_dir = state_dir
        self.pid, self._pid_start = record["pid"], record["pidStart"]
        self._monitor_pid, self._monitor_start = record["monitorPid"], record["monitorStart"]
        self._created, self._cgroup_paths = record["created"], dict(record["cgroupPaths"])
        self._status = record["status"]
        self._creator = record.get("creator") or 0
        return self

    # -- state ----------------------------------------------------------------------------------
    @property
    def cgroup(self) -> _cgroups.Cgroup | None:
        """The container's cgroup, for its usage (memory_peak_bytes, oom_kill_count, pids_current, ...):
        while this process owns it (attached); None without one, or once deleted."""
        return self._cgroup

    @property
    def status(self) -> str:
        """creating, created, running or stopped, as the kernel says now."""
        if self._status is None:
            return "creating"
        if self._status == "stopped" or self.pid is None:
            return "stopped"
        if not _alive(self.pid, self._pid_start):
            return "stopped"
        return "created" if os.path.exists(self._path(EXEC_FIFO)) else "running"

    def state(self) -> dict[str, Any]:
        """The OCI state JSON (runtime.md), with osvirt's extra fields: created, cgroupPaths, rootfs."""
        status = self.status
        out = oci.state(self.id, status, self.pid, self.spec.bundle, self.spec.annotations,
                        self.spec.oci_version)
        out["created"] = self._created
        out["rootfs"] = self.spec.root.resolved
        out["cgroupPaths"] = dict(self._cgroup_paths)
        if status == "stopped":
            code = self._read_exit()
            if code is not None:
                out["exitStatus"] = code
        return out

    def __repr__(self) -> str:
        return f"<Container {self.id} {self.status} pid {self.pid}>"

    # -- create ---------------------------------------------------------------------------------
    def create(self) -> None:
        """Make the container, its process waiting before exec (see the module's docstring).

        ContainerError (the step and errno) when the set-up in the child fails,
        OSError for what fails here (the cgroup, the state directory); every
        part made is removed again before the exception leaves.
        """
        if self._status is not None:
            raise ValueError(f"container {self.id}: create() was called already")
        spec = self.spec
        assert spec.process is not None
        self._check_runnable()
        try:
            self._make_state_dir()
            self._make_cgroup()
            fifo = self._path(EXEC_FIFO)
            os.mkfifo(fifo, 0o622)
            os.chmod(fifo, 0o622)  # whatever the umask: the container's root may be another uid
            self._spawn()
        except BaseException:
            self._destroy()
            raise

    def _check_runnable(self) -> None:
        spec = self.spec
        lx = spec.linux
        if lx.namespaces and lx.namespace("user") is None and "CAP_SYS_ADMIN" not in _env_caps():
            raise PermissionError(errno.EPERM, f"container {self.id}: without CAP_SYS_ADMIN its namespaces need a "
                                  "user namespace of its own (rootless: add {\"type\": \"user\"} and uid and "
                                  "gid mappings to linux.namespaces)")
        if self.state_root is not None:
            if os.path.lexists(self.state_dir):
                raise FileExistsError(errno.EEXIST, f"container {self.id} exists already", self.state_dir)
        if not os.path.isdir(spec.root.resolved):  # the root, or where the host's /usr view is built
            raise SpecError("root.path", f"{spec.root.resolved} is not a directory")

    def _make_state_dir(self) -> None:
        if self.state_root is None:
            # /dev/shm when there is one: a tmpfs, where the state's files cost no journal
            import tempfile
            path = os.path.join("/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(), unique_name())
            tracker.register("dir", path)  # before mkdir: no moment in which it exists untracked
            with signals_deferred():
                try:
                    os.mkdir(path, 0o700)
                except BaseException:
                    tracker.unregister("dir", path)
                    raise
                self._private_dir = self.state_dir = path
        else:
            os.makedirs(self.state_root, 0o700, exist_ok=True)
            os.mkdir(self.state_dir, 0o700)
        self._status = "creating"

    def _make_cgroup(self) -> None:
        resources = self.spec.linux.resources
        limits = resources.limits if resources else {}
        try:
            self._cgroup = _cgroups.Cgroup(**limits)
        except (PermissionError, FileNotFoundError) as e:
            if limits:
                raise
            if "CAP_SYS_ADMIN" in _env_caps():
                raise
            # rootless without limits: no cgroup of its own, as runc rootless without resources (the
            # pid namespace's end still kills what is left)
            del e
            self._cgroup = None
            return
        self._cgroup_paths = dict(self._cgroup.paths)

    def _direct(self) -> bool:
        """Whether this process forks the container process itself, with no monitor between.

        So when the container belongs to this process (attached), needs no
        user namespace (which only a child may unshare: this process's own
        must not change), and no pid or time namespace to join: a new pid
        namespace is unshared here, for the one fork, and this process's own
        set back (setns) at once. One fork less, and one process less to
        hand the set-up over: what a container's start costs is mostly such
        hand-overs. The window between unshare and setns is this thread's;
        another thread forking within it would put its child in the new
        namespace.
        """
        lx = self.spec.linux
        return (self.attached and lx.namespace("user") is None and lx.namespace("time") is None
                and (lx.namespace("pid") is None or lx.new("pid")) and "CAP_SYS_ADMIN" in _env_caps())

    def _spawn(self) -> None:
        """Fork the container process (through the monitor unless `_direct`), and lead the set-up."""
        if self._direct():
            self._spawn_direct()
            return
        up_r, up_w = os.pipe()  # children -> here: JSON lines
        down_r, down_w = os.pipe()  # here -> children
        monitor_r, monitor_w = os.pipe()  # here -> the monitor: "detach" or "stay"
        status_fd = os.open(self._path(EXIT_FILE), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        fifo_fd = os.open(self._path(EXEC_FIFO), os.O_PATH | os.O_CLOEXEC)
        parent = os.getpid()
        try:
            with signals_deferred() as mask:
                pid = _fork(lambda: self._monitor(parent, up_w, down_r, monitor_r, status_fd, fifo_fd), up_w,
                            (up_r, down_w, monitor_w), mask)
                self._monitor_pid = pid
        finally:
            for fd in (up_w, down_r, monitor_r, status_fd, fifo_fd):
                os.close(fd)
        self._monitor_start = _start_time(pid)
        try:
            with os.fdopen(up_r, "rb") as up:
                self._lead(up, down_w)
            self._status = "created"
            self._created = _now()
            self._save()
            if not self.attached:
                self._detach()
            os.write(monitor_w, b"detach\n" if not self.attached else b"stay\n")
        finally:
            os.close(down_w)
            os.close(monitor_w)

    def _spawn_direct(self) -> None:
        up_r, up_w = os.pipe()
        down_r, down_w = os.pipe()
        exit_r, exit_w = os.pipe()  # osvirt's init -> here: the program's wait status
        fifo_fd = os.open(self._path(EXEC_FIFO), os.O_PATH | os.O_CLOEXEC)
        new_pid = self.spec.linux.new("pid")
        own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC) if new_pid else -1
        try:
            with signals_deferred() as mask:
                if new_pid:
                    _ns.unshare("pid")  # for the next fork only: set back below
                try:
                    pid = _fork(lambda: self._container_process(up_w, down_r, fifo_fd, exit_w), up_w,
                                (up_r, down_w, exit_r) + ((own,) if own >= 0 else ()), mask)
                finally:
                    if new_pid:
                        _ns.setns(own, "pid")
                self.pid, self._exit_r, self._child = pid, exit_r, True
        finally:
            for fd in (up_w, down_r, exit_w, fifo_fd) + ((own,) if own >= 0 else ()):
                os.close(fd)
        self._pid_start = _start_time(pid)
        try:
            if self._cgroup is not None:
                self._cgroup.add(pid)
            os.write(down_w, b"go\n")  # the cgroup is its own now: its cgroup namespace may follow
            with os.fdopen(up_r, "rb") as up:
                self._lead(up, down_w)
            self._status = "created"
            self._created = _now()
            self._save()
        finally:
            os.close(down_w)

    def _lead(self, up: IO[bytes], down: int) -> None:
        """The parent's side of the set-up: maps, cgroup, hooks, until "created" or an error."""
        lx = self.spec.linux
        while True:
            line = up.readline()
            if not line:
                code = self._reap_monitor() if self._monitor_pid is not None else self._reap_direct()
                raise ContainerError("set-up", None, f"the container's processes exited before it was created "
                                     f"(status {code})")
            report = json.loads(line)
            if "error" in report:
                _raise_report(report)
            elif report.get("step") == "maps":
                _ns.write_id_maps(self._monitor_pid or 0,
                                  [(m.container_id, m.host_id, m.size) for m in lx.uid_mappings or ()],
                                  [(m.container_id, m.host_id, m.size) for m in lx.gid_mappings or ()])
                os.write(down, b"go\n")
            elif report.get("step") == "pid":
                self.pid = int(report["pid"])
                self._pid_start = _start_time(self.pid)
                if self._cgroup is not None:
                    self._cgroup.add(self.pid)
                os.write(down, b"go\n")  # the cgroup is its own now: its cgroup namespace may follow
            elif report.get("step") == "hooks":
                state = oci.state(self.id, "creating", self.pid, self.spec.bundle, self.spec.annotations,
                                  self.spec.oci_version)
                for kind in ("prestart", "createRuntime"):
                    for hook in self.spec.hooks_of(kind):
                        oci.run_hook(hook, state, kind)
                os.write(down, b"go\n")
            elif report.get("step") == "created":
                return

    def _detach(self) -> None:
        """The container outlives this process: not tracked here any more, its cgroup the state dir's."""
        if self._cgroup is not None:
            for path in dict.fromkeys(self._cgroup.paths.values()):
                tracker.unregister("cgroup", path)
            self._cgroup.paths = {}
            self._cgroup = None

    # -- in the monitor --------------------------------------------------------------------------
    def _monitor(self, parent: int, up: int, down: int, control: int, status_fd: int, fifo_fd: int) -> int:
        _Step.now = "monitor: prctl(PR_SET_PDEATHSIG)"
        _process_native.set_pdeathsig(signal.SIGKILL, parent)
        lx = self.spec.linux
        for kind in _MONITOR_KINDS:
            ns = lx.namespace(kind)
            if ns is not None and ns.path is not None:
                _Step.now = f"setns({ns.path}, {kind})"
                _ns.setns(ns.path, kind)
        new = [kind for kind in _MONITOR_KINDS if lx.new(kind)]
        if new:
            _Step.now = f"unshare({', '.join(new)})"
            _ns.unshare(new)
        if lx.new("user"):
            os.write(up, b'{"step": "maps"}\n')
            if os.read(down, 3) != b"go\n":
                return 1
        exit_r, exit_w = os.pipe()  # osvirt's init -> here: the program's wait status
        _Step.now = "fork the container process"
        pid = _fork(lambda: self._container_process(up, down, fifo_fd, exit_w), up, (exit_r, control, status_fd))
        os.close(exit_w)
        os.close(fifo_fd)
        os.write(up, json.dumps({"step": "pid", "pid": pid}).encode() + b"\n")
        os.close(up)
        os.close(down)
        with os.fdopen(control, "rb") as f:
            order = f.readline()
        if order == b"detach\n":
            _process_native.set_pdeathsig(0, os.getppid())
            os.setsid()
            if tracker._fd >= 0:  # the creator's tracker is not this container's any more
                os.close(tracker._fd)
                tracker._fd = -1
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
            keep = {exit_r, status_fd}
            for fd in _open_fds():
                if fd > 2 and fd not in keep:
                    with contextlib.suppress(OSError):
                        os.close(fd)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        _, status = os.waitpid(pid, 0)
        with os.fdopen(exit_r, "rb") as f:
            reported = f.read()
        if reported:
            status = int(reported)
        code = os.waitstatus_to_exitcode(status)
        os.write(status_fd, json.dumps({"exitStatus": code}).encode())
        os.close(status_fd)
        return code if code >= 0 else 128 - code

    # -- in the container process -----------------------------------------------------------------
    def _container_process(self, up: int, down: int, fifo_fd: int, exit_w: int) -> int:
        spec = self.spec
        lx = spec.linux
        process = spec.process
        assert process is not None
        _Step.now = "prctl(PR_SET_PDEATHSIG)"
        _process_native.set_pdeathsig(signal.SIGKILL, os.getppid())
        self._down = down
        for kind in _PROCESS_KINDS[:-1]:  # all but cgroup's: see _in_cgroup
            ns = lx.namespace(kind)
            if ns is not None and ns.path is not None:
                _Step.now = f"setns({ns.path}, {kind})"
                _ns.setns(ns.path, kind)
        new = [kind for kind in _PROCESS_KINDS[:-1] if lx.new(kind)]
        if new:
            _Step.now = f"unshare({', '.join(new)})"
            _ns.unshare(new)
        if lx.new("network"):  # runc brings a new network namespace's loopback up too
            _Step.now = "loopback up"
            _network.loopback_up()
        if spec.hooks_of("prestart") or spec.hooks_of("createRuntime"):
            self._in_cgroup()
            os.write(up, b'{"step": "hooks"}\n')
            if os.read(down, 3) != b"go\n":
                return 1
        console = None
        if self.console_socket is not None:  # connected while the host's path is in reach
            _Step.now = f"connect to the console socket {self.console_socket}"
            console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            console.connect(self.console_socket)
        if lx.new("mount") or lx.namespace("mount") is not None:
            self._rootfs()
        self._in_cgroup()
        if console is not None:
            self._terminal(console, process)
        _Step.now = "sethostname"
        if spec.hostname:
            _ns.sethostname(spec.hostname)
        if spec.domainname:
            _Step.now = "setdomainname"
            _ns.setdomainname(spec.domainname)
        for rlimit in process.rlimits or ():
            _Step.now = f"setrlimit({rlimit.type})"
            soft = resource.RLIM_INFINITY if rlimit.soft == _RLIM_INFINITY_OCI else rlimit.soft
            hard = resource.RLIM_INFINITY if rlimit.hard == _RLIM_INFINITY_OCI else rlimit.hard
            resource.setrlimit(rlimit.resource, (soft, hard))
        if process.oom_score_adj is not None:
            _Step.now = "write /proc/self/oom_score_adj"
            _write_file("/proc/self/oom_score_adj", str(process.oom_score_adj))
        _Step.now = "mark inherited file descriptors close-on-exec"
        for fd in _open_fds():
            if fd > 2:
                with contextlib.suppress(OSError):
                    os.set_inheritable(fd, False)
        _Step.now = "open exec.fifo"
        fifo_path = f"/proc/self/fd/{fifo_fd}"
        handlers = {signo: signal.signal(signo, _die_of) for signo in WAITING_DEATHS}
        mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, WAITING_DEATHS)
        os.write(up, b'{"step": "created"}\n')
        os.close(up)
        os.close(down)
        fifo = os.open(fifo_path, os.O_WRONLY | os.O_CLOEXEC)  # blocks until start() opens it for reading
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for signo, handler in handlers.items():
            signal.signal(signo, handler)
        os.close(fifo_fd)
        try:
            os.write(fifo, b"0")
            self._finish(process, fifo, exit_w)
        except BaseException as e:
            with contextlib.suppress(BaseException):
                os.write(fifo, _error_report(_Step.now, e))
            return 127 if isinstance(e, OSError) and _Step.now.startswith("exec") else 1
        return 0  # not reached: _finish execs or exits

    _down = -1
    _moved = False

    def _terminal(self, console: socket.socket, process: oci.Process) -> None:
        """A pty of the container's own devpts as the controlling terminal and stdio; its master to the socket."""
        _Step.now = "openpty (the container's /dev/ptmx)"
        master, slave = os.openpty()
        os.set_inheritable(master, False)
        if process.console_size:
            height, width = process.console_size
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        _Step.now = "setsid and TIOCSCTTY"
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        os.close(slave)
        _Step.now = "send the pty master to the console socket"
        socket.send_fds(console, [b"/dev/ptmx"], [master])
        console.close()
        os.close(master)

    def _in_cgroup(self) -> None:
        """Wait until the parent has moved this process into the cgroup, then join or make the cgroup
        namespace (whose root is the cgroup this process is in then). The parent's writes to cgroup.procs
        (slow on v1: one per hierarchy) overlap the mounts made before this."""
        if self._moved:
            return
        _Step.now = "wait for the cgroup"
        if os.read(self._down, 3) != b"go\n":
            raise ContainerError("wait for the cgroup", None, "the parent went away")
        self._moved = True
        ns = self.spec.linux.namespace("cgroup")
        if ns is not None:
            _Step.now = f"setns({ns.path}, cgroup)" if ns.path else "unshare(cgroup)"
            _ns.setns(ns.path, "cgroup") if ns.path else _ns.unshare("cgroup")

    def _rootfs(self) -> None:
        spec = self.spec
        lx = spec.linux
        root = spec.root.resolved
        # runc's default: rslave, so that nothing mounted here reaches the host, while the host's
        # mounts still reach a root bound from it
        _Step.now = f"make / {lx.rootfs_propagation or 'rslave'}"
        _mounts.mount(None, "/", None, oci.PROPAGATION[lx.rootfs_propagation or "rslave"])
        if spec.annotations and spec.annotations.get(HOST_ROOT_ANNOTATION) == "host-usr":
            _Step.now = f"host_usr_root({root})"
            _mounts.host_usr_root(root)  # a tmpfs: the mount point pivot_root wants
        else:
            _Step.now = f"bind the root {root}"
            _mounts.bind(root, root)
        dev_is_tmpfs = False
        for m in spec.mounts or ():
            if m.type == "cgroup":
                self._in_cgroup()  # its root is the cgroup namespace's
            _Step.now = f"mount {m.destination} ({m.type or 'bind'})"
            _mount_one(root, m)
            if m.destination.rstrip("/") == "/dev" and not m.is_bind:
                dev_is_tmpfs = True
        if dev_is_tmpfs:
            _Step.now = "default devices in /dev"
            _default_devices(root)
        state = None
        for hook in spec.hooks_of("createContainer"):
            _Step.now = f"createContainer hook {hook.path}"
            state = state or oci.state(self.id, "creating", os.getpid(), spec.bundle, spec.annotations,
                                       spec.oci_version)
            oci.run_hook(hook, state, "createContainer")
        _Step.now = f"pivot_root({root})"
        _mounts.pivot_root(root)
        for key, value in (lx.sysctl or {}).items():
            _Step.now = f"sysctl {key}"
            _write_file("/proc/sys/" + key.replace(".", "/"), value)
        _Step.now = "readonlyPaths"
        _mounts.read_only(lx.readonly_paths or ())
        _Step.now = "maskedPaths"
        _mounts.mask(lx.masked_paths or ())
        if spec.root.readonly:
            _Step.now = "root read-only"
            _mounts._remount_read_only("/", recursive=False)

    def _finish(self, process: oci.Process, fifo: int, exit_w: int) -> None:
        """After start: hooks, user, capabilities, no_new_privs, seccomp, then exec (or the target)."""
        spec = self.spec
        for hook in spec.hooks_of("startContainer"):
            _Step.now = f"startContainer hook {hook.path}"
            oci.run_hook(hook, oci.state(self.id, "created", os.getpid(), spec.bundle, spec.annotations,
                                         spec.oci_version), "startContainer")
        caps = process.capabilities
        seccomp = spec.linux.seccomp
        keep_admin = caps is not None and "CAP_SYS_ADMIN" in caps.usable("effective")
        filter_first = seccomp is not None and not process.no_new_privileges and not keep_admin \
            and "CAP_SYS_ADMIN" in _env_caps()
        if filter_first:
            assert seccomp is not None
            _Step.now = "seccomp (before the capabilities are dropped: no_new_privs is not asked for)"
            _cnative.seccomp_set_mode_filter(seccomp.filter.program,
                                             sum(_seccomp.FLAGS[flag] for flag in set(seccomp.flags or ())))
        user = process.user
        if caps is not None:
            _Step.now = "capabilities: bounding set"
            held, keep = _env_cap_masks()["CapBnd"], _caps.mask(caps.usable("bounding"))
            for nr in range(_caps.KERNEL_LAST_CAP + 1):
                if held >> nr & 1 and not keep >> nr & 1:
                    _cnative.capbset_drop(nr, f"prctl(PR_CAPBSET_DROP, {nr})")
        if user.uid != 0 or user.gid != 0 or user.additional_gids:
            _Step.now = "prctl(PR_SET_KEEPCAPS)"
            _caps.set_keepcaps(True)
            _Step.now = f"setgroups({list(user.additional_gids or ())})"
            if user.additional_gids or _setgroups_allowed():
                os.setgroups(list(user.additional_gids or ()))
            _Step.now = f"setgid({user.gid})"
            os.setresgid(user.gid, user.gid, user.gid)
            _Step.now = f"setuid({user.uid})"
            os.setresuid(user.uid, user.uid, user.uid)
            _caps.set_keepcaps(False)
            _process_native.set_pdeathsig(signal.SIGKILL, os.getppid())  # a credential change cleared it
        if user.umask is not None:
            os.umask(user.umask)
        if caps is not None:
            _Step.now = "capabilities: capset"
            _caps.ambient_clear()
            _caps.capset(caps.usable("effective"), caps.usable("permitted"), caps.usable("inheritable"))
            # Only what is both permitted and inheritable can be ambient: `runc spec` lists ambient
            # capabilities without inheritable ones, and runc, too, raises what the kernel allows.
            ambient = caps.usable("ambient") & caps.usable("permitted") & caps.usable("inheritable")
            if ambient:
                _Step.now = "capabilities: ambient"
                _caps.ambient_raise(ambient)
        if process.no_new_privileges:
            _Step.now = "prctl(PR_SET_NO_NEW_PRIVS)"
            _cnative.prctl_set_no_new_privs()
        _Step.now = f"chdir({process.cwd})"
        os.chdir(process.cwd)
        if seccomp is not None and not filter_first:
            _Step.now = "seccomp"
            _seccomp.install(seccomp.filter, seccomp.flags or ())
        env = process.environ()
        if self.init:
            self._init(process, env, fifo, exit_w)
        else:
            os.close(exit_w)
            self._exec(process, env, fifo)

    def _exec(self, process: oci.Process, env: dict[str, str], fifo: int) -> NoReturn:
        """exec process.args, or run the Python target (after closing the FIFO, which an exec would close)."""
        if self.target is not None:
            _Step.now = "the Python target"
            os.close(fifo)  # start() returns at its EOF
            os.environ.clear()
            os.environ.update(env)
            code = _run_target(self.target, self.target_args)
            os._exit(code)
        _Step.now = f"exec {list(process.args)}"
        os.execvpe(process.args[0], list(process.args), env)

    def _init(self, process: oci.Process, env: dict[str, str], fifo: int, exit_w: int) -> None:
        """PID 1 as osvirt's init: fork the program, forward signals to it, reap everything, exit with it."""
        every = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, every)
        _Step.now = "fork the program (osvirt's init)"
        child = _fork(lambda: self._exec(process, env, fifo), fifo, (exit_w,), previous, failed=127)
        os.close(fifo)  # the program's copy is the last: start() sees EOF once it has exec'd
        for fd in (0, 1, 2):  # the init writes nothing: the program's stdio is its own
            with contextlib.suppress(OSError):
                os.close(fd)
        status: int | None = None
        while True:
            info = signal.sigwaitinfo(every)
            if info.si_signo == signal.SIGCHLD:
                while True:
                    try:
                        pid, wstatus = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    if pid == child:
                        status = wstatus
                if status is not None:
                    os.write(exit_w, str(status).encode())
                    os._exit(_shell_code(status))
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, info.si_signo)

    # -- start, kill, wait, delete ----------------------------------------------------------------
    def start(self) -> None:
        """Let the created container exec its program; ContainerError if the exec (or what precedes it) fails."""
        status = self.status
        if status != "created":
            raise ContainerError("start", None, f"container {self.id} is {status}, not created")
        assert self.pid is not None
        fifo_path = self._path(EXEC_FIFO)
        fd = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        pidfd = _pidfd(self.pid)
        try:
            # "0" once the process has opened the FIFO, then EOF once it has exec'd (O_CLOEXEC) or, after
            # a failure, the error it wrote; the pidfd turns readable should it die first.
            data = b""
            while True:
                watched = [fd] if pidfd is None else [fd, pidfd]
                ready = select.select(watched, [], [], 1.0)[0]
                if fd in ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    data += chunk
                elif (pidfd is not None and pidfd in ready) or not _alive(self.pid, self._pid_start):
                    with contextlib.suppress(BlockingIOError):
                        data += os.read(fd, 65536)
                    break
        finally:
            os.close(fd)
            if pidfd is not None:
                os.close(pidfd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fifo_path)
        if not data.startswith(b"0"):
            self._status = "stopped"
            self._save()
            raise ContainerError("start", None, f"container {self.id}'s process exited before it was started")
        self._status = "running"  # not saved: the FIFO's absence and the live pid say so
        rest = data[1:].strip()
        if rest:
            self._status = "stopped"
            self._save()
            _raise_report(json.loads(rest.splitlines()[0]))
        state = self.state() if self.spec.hooks_of("poststart") else {}
        for hook in self.spec.hooks_of("poststart"):
            try:
                oci.run_hook(hook, state, "poststart")
            except ContainerError as e:
                print(f"osvirt: container {self.id}: {e}", file=sys.stderr)

    def kill(self, sig: int = signal.SIGTERM, all: bool = False) -> None:
        """Send `sig` to the container's process (PID 1 inside); `all`: to every process in its cgroup.

        ProcessLookupError when it has stopped.
        """
        sig = int(sig)
        if not 0 <= sig < signal.NSIG:
            raise ValueError(f"kill: signal {sig} not in 0..{signal.NSIG - 1}")
        if all and self._cgroup_paths:
            path = next(iter(self._cgroup_paths.values()))
            with open(os.path.join(path, "cgroup.procs")) as f:
                for pid in map(int, f.read().split()):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
            return
        if self.pid is None:
            raise ProcessLookupError(errno.ESRCH, f"kill: container {self.id} has no process")
        pidfd = _pidfd(self.pid)
        if pidfd is None or not _alive(self.pid, self._pid_start):
            if pidfd is not None:
                os.close(pidfd)
            raise ProcessLookupError(errno.ESRCH, f"kill: container {self.id} is not running")
        try:
            signal.pidfd_send_signal(pidfd, sig)
        finally:
            os.close(pidfd)

    def _read_exit(self) -> int | None:
        if self._exit is not None:
            return self._exit
        try:
            with open(self._path(EXIT_FILE)) as f:
                text = f.read()
        except OSError:
            return None
        if not text:
            return None
        self._exit = int(json.loads(text)["exitStatus"])
        return self._exit

    def _exited_within(self, pid: int, timeout_s: float | None) -> None:
        """TimeoutError unless process `pid` exits within `timeout_s` (None: no wait here)."""
        if timeout_s is None:
            return
        pidfd = _pidfd(pid)
        if pidfd is not None:
            try:
                if not select.select([pidfd], [], [], timeout_s)[0]:
                    raise TimeoutError(f"wait: container {self.id} still running after {timeout_s} s")
            finally:
                os.close(pidfd)

    def _reap_monitor(self, timeout_s: float | None = None) -> int | None:
        """Wait for the monitor (reaped when it is this process's child); its exit status, or None."""
        pid = self._monitor_pid
        if pid is None:
            return None
        self._exited_within(pid, timeout_s)
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # another process's child: wait until it is gone
            pidfd = _pidfd(pid)
            if pidfd is not None and _alive(pid, self._monitor_start):
                try:
                    select.select([pidfd], [], [], timeout_s)
                finally:
                    os.close(pidfd)
            elif pidfd is not None:
                os.close(pidfd)
            return None
        self._monitor_pid = None
        return os.waitstatus_to_exitcode(status)

    def _reap_direct(self, timeout_s: float | None = None) -> int | None:
        """Reap the container process, this process's child on the direct path; its status, recorded."""
        if not self._child or self.pid is None:
            return self._exit
        self._exited_within(self.pid, timeout_s)
        _, status = os.waitpid(self.pid, 0)
        self._child = False
        with os.fdopen(self._exit_r, "rb") as f:  # osvirt's init wrote the program's status before it exited
            reported = f.read()
        self._exit_r = -1
        self._exit = os.waitstatus_to_exitcode(int(reported) if reported else status)
        with contextlib.suppress(OSError):
            with open(self._path(EXIT_FILE), "w") as out:
                json.dump({"exitStatus": self._exit}, out)
        return self._exit

    def _wait_elsewhere(self, timeout_s: float | None) -> None:
        """Wait for a container another process forked directly: its exit, then that process's record of it."""
        assert self.pid is not None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        pidfd = _pidfd(self.pid)
        if pidfd is not None:
            try:
                while _alive(self.pid, self._pid_start):
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"wait: container {self.id} still running after {timeout_s} s")
                    select.select([pidfd], [], [], 1.0 if left is None else min(left, 1.0))
            finally:
                os.close(pidfd)
        for _ in range(200):  # its parent reaps it and writes the status at once, if it is alive
            if self._read_exit() is not None:
                return
            time.sleep(0.01)

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait until the container's process exits; its exit status: the code, or -N for signal N.

        TimeoutError after `timeout_s` (the container still running).
        """
        if self._status is None:
            raise ValueError(f"container {self.id}: not created")
        code = self._read_exit()
        if code is not None:
            return code
        if self._child:
            self._reap_direct(timeout_s)
        elif self._monitor_pid is None and self.pid is not None:
            self._wait_elsewhere(timeout_s)
        self._reap_monitor(timeout_s)
        code = self._read_exit()
        if code is None:
            raise ContainerError("wait", None, f"container {self.id}'s monitor died without its exit status")
        self._status = "stopped"  # not saved: the dead pid says so
        return code

    def delete(self, force: bool = False) -> None:
        """Remove a stopped container: its cgroup, then its state directory (poststop hooks after).

        `force` kills a running or created one first; otherwise ContainerError.
        """
        status = self.status
        if status in ("created", "running") and not force:
            raise ContainerError("delete", None, f"container {self.id} is {status}: stop it first, or force")
        self._destroy()
        state = oci.state(self.id, "stopped", None, self.spec.bundle, self.spec.annotations, self.spec.oci_version)
        for hook in self.spec.hooks_of("poststop"):
            try:
                oci.run_hook(hook, state, "poststop")
            except ContainerError as e:
                print(f"osvirt: container {self.id}: {e}", file=sys.stderr)

    def _destroy(self) -> None:
        """Kill everything, reap the monitor, remove the cgroup and the state directory. Idempotent."""
        with signals_deferred():
            if self.veth is not None:
                self.veth.close()
                self.veth = None
            if self.pid is not None and _alive(self.pid, self._pid_start):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(self.pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):  # PID 1 exits once the kernel has reaped its namespace
                    self._exited_within(self.pid, 10.0)
            if self._cgroup is not None:
                self._cgroup.close()  # kills what is left in it, rmdir, unregistered
                self._cgroup = None
            else:
                for path in dict.fromkeys(self._cgroup_paths.values()):
                    with contextlib.suppress(FileNotFoundError):
                        _cgroups.kill_and_rmdir(path)
            self._cgroup_paths = {}
            if self._child:
                with contextlib.suppress(TimeoutError):
                    self._reap_direct(10.0)
            if self._monitor_pid is not None:
                if _alive(self._monitor_pid, self._monitor_start) and (self.attached or self._status == "creating"):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(self._monitor_pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    self._reap_monitor(10.0)
            if self.state_dir and os.path.isdir(self.state_dir):
                import shutil
                shutil.rmtree(self.state_dir, ignore_errors=True)
            if self._private_dir is not None:
                tracker.unregister("dir", self._private_dir)
                self._private_dir = None
            self._status = "stopped"
            self._destroyed = True

    def close(self) -> None:
        """Kill, reap and remove everything this process owns of the container (attached only). Idempotent."""
        if sys.is_finalizing():  # no builtins left to do it with: PR_SET_PDEATHSIG and the tracker will
            return
        if self._is_creator and self.attached and self._status is not None and not self._destroyed:
            self._destroy()

    # -- the simple case --------------------------------------------------------------------------
    @classmethod
    def run(cls, target: Sequence[str] | Callable[..., object], *args: object, init: bool | None = None,
            **options: Any) -> Container:
        """Create and start a container running `target`: an argv, or a Python callable (with `args`).

        `init` None: osvirt's init as PID 1 unless argv[0] names an init (`INITS`), which reaps and
        handles signals itself.

        `options` are spec_for's (rootfs, memory, cpus, pids, hostname,
        rootless, seccomp, net, volumes, env, cwd, readonly); net="veth" links
        it to the host with a network.Veth (`veth`) before it starts. Use it as a
        context manager: the exit kills, reaps and removes it all.
        """
        if callable(target):
            name = getattr(target, "__qualname__", type(target).__name__)
            spec = spec_for([f"<python {name}>"], **options)
            container = cls(spec, target=target, args=args, init=True if init is None else init)
        else:
            if isinstance(target, str) or not target:
                raise TypeError("Container.run: target must be a non-empty argv list or a callable")
            if args:
                raise TypeError("Container.run: args are for a callable target")
            if init is None:
                init = os.path.basename(target[0]) not in INITS
            container = cls(spec_for(list(target), **options), init=init)
        try:
            container.create()
            if options.get("net") == "veth":
                assert container.pid is not None
                container.veth = _network.Veth(container.pid)
            container.start()
        except BaseException:
            container.close()
            raise
        return container


def _die_of(signo: int, frame: object) -> NoReturn:
    """A created container's process, PID 1 of its namespace, ends at a signal that ends runc's."""
    os._exit(128 + signo)


def _shell_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def _run_target(target: Callable[..., object], args: tuple[object, ...]) -> int:
    try:
        result = target(*args)
        code = result if type(result) is int else 0
    except SystemExit as e:
        code = e.code if type(e.code) is int else (0 if e.code is None else 1)
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    return code & 0xFF


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def _open_fds() -> list[int]:
    try:
        return [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 1024))


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except OSError:
        return True


def _env_caps() -> frozenset[str]:
    from osvirt import env
    return env.capabilities()


def _env_cap_masks() -> dict[str, int]:
    from osvirt import env
    return env.capability_masks()
