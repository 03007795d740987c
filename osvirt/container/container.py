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
   osvirt.container.cgroups); on the direct path (below) the cgroup is made
   once the container process is forked, while it builds its root.
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
`INITS`) the container's PID 1 is osvirt's own tiny init, which forwards
signals, reaps orphans and exits with the program (osvirt.container.init
says why). With `init=False` (the OCI runtime's default: runc's
behaviour, which tools driving a runtime expect) process.args is PID 1
itself, and the state's pid is its pid.

Cleanup: with `state_root` None (the Python API) the container belongs to
this process: its monitor and process die with it (PR_SET_PDEATHSIG, even
on SIGKILL), the cgroup and the private state directory are registered with
osvirt.tracker, and close() (the context manager's exit, or garbage
collection) kills, reaps and removes everything. With `state_root` (the
runtime), the container outlives the process that created it: once created
it is deliberately not tracked; it belongs to its state directory until
`delete()`, but for its cgroup, which its monitor removes once the
container's last process has exited (a state directory removed without
delete() left it before). Mounts live in the container's mount namespace
and go with it.

process.terminal needs `console_socket` (runc's protocol: the pty's master
goes to that socket); without it the process inherits the caller's stdio.

The code: this module is the parent's side (the Container class);
osvirt.container.child runs in the monitor and the container process (the
set-up steps), .init is osvirt's PID 1, .rootfs builds the root's mounts,
.statedir holds the state directory's files and exec.fifo, .report the
children's reports to the parent, .run_spec the spec of `Container.run`.

Not done: linux.devices (only runc's default devices are made), cgroupsPath
(the cgroup is always osvirt-<pid>-<random> under this process's own cgroup,
where osvirt.tracker and delete() may remove it: the tracker takes only
osvirt-named cgroups, since it kills what is inside before the rmdir, so a
cgroup of the spec's naming would be left by a create or run SIGKILLed
before the state directory took it over; the paths are in the state's
cgroupPaths), the device cgroup rules in resources.devices.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from osvirt import tracker
from osvirt._owned import Owned
from osvirt.container import _native as _cnative
from osvirt.container import capabilities as _caps
from osvirt.container import cgroups as _cgroups
from osvirt.container import namespaces as _ns
from osvirt.container import network as _network
from osvirt.container import oci
from osvirt.container.child import WAITING_DEATHS, Child
from osvirt.container.init import INITS
from osvirt.container.report import fork, raise_report
from osvirt.container.rootfs import HOST_ROOT_ANNOTATION
from osvirt.container.run_spec import parse_size, spec_for
from osvirt.container.statedir import (EXEC_FIFO, EXIT_FILE, STATE_FILE, alive, atomic_write, now, open_pidfd,
                                       remove_state_dir, start_time, write_file)
from osvirt.errors import ContainerError, SpecError
from osvirt.naming import unique_name
from osvirt.process.spawn import signals_deferred

# The names Container's callers knew here before the split, where they are now.
__all__ = ["Container", "ContainerError", "SpecError", "HOST_ROOT_ANNOTATION", "INITS", "WAITING_DEATHS",
           "STATE_FILE", "EXEC_FIFO", "EXIT_FILE", "spec_for", "parse_size"]


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

    def _child_side(self, bounding: int | None = None, cgroup_mounts: list[_cgroups.Mount] | None = None) -> Child:
        """What the monitor and the container process run (osvirt.container.child)."""
        return Child(self.spec, self.id, self.console_socket, self.target, self.target_args, self.init,
                     list(self._cgroup_paths.values()), bounding, cgroup_mounts)

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
        atomic_write(self._path(STATE_FILE), self._record())

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
        if not alive(self.pid, self._pid_start):
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
        effective = _cnative.capget(0)[0]  # capget(2): the effective set the container process inherits
        admin = bool(effective >> _caps.CAPABILITIES["CAP_SYS_ADMIN"] & 1)
        # With CAP_SETPCAP it may drop from its bounding set each capability it is not to keep, whether it
        # holds it or not: which it holds (/proc/self/status) need not be read, here or there.
        bounding = _caps.ALL if effective >> _caps.CAPABILITIES["CAP_SETPCAP"] & 1 else None
        self._check_runnable(admin)
        direct = self._direct(admin)
        try:
            self._make_state_dir()
            if not direct:  # the monitor removes it, once detached: it must exist before the fork
                self._make_cgroup(admin)
            fifo = self._path(EXEC_FIFO)
            os.mkfifo(fifo, 0o622)
            os.chmod(fifo, 0o622)  # whatever the umask: the container's root may be another uid
            self._spawn_direct(admin, bounding) if direct else self._spawn()
        except BaseException:
            self._destroy()
            raise

    def _check_runnable(self, admin: bool) -> None:
        spec = self.spec
        lx = spec.linux
        if lx.namespaces and lx.namespace("user") is None and not admin:
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

    def _make_cgroup(self, admin: bool, mounts: list[_cgroups.Mount] | None = None) -> None:
        resources = self.spec.linux.resources
        limits = resources.limits if resources else {}
        try:
            self._cgroup = _cgroups.Cgroup(**limits, mounts=mounts)
        except (PermissionError, FileNotFoundError) as e:
            if limits:
                raise
            if admin:
                raise
            # rootless without limits: no cgroup of its own, as runc rootless without resources (the
            # pid namespace's end still kills what is left)
            del e
            self._cgroup = None
            return
        self._cgroup_paths = dict(self._cgroup.paths)

    def _direct(self, admin: bool) -> bool:
        """Whether this process forks the container process itself, with no monitor between.

        So when the container belongs to this process (attached), needs no
        user namespace (which only a child may unshare: this process's own
        must not change), and no pid or time namespace to join: a new pid
        namespace is unshared here, for the one fork, and this process's own
        set back (setns) at once. One fork less, and one process less to
        hand the set-up over: what a container's start costs is mostly such
        hand-overs. The window between unshare and setns is this thread's;
        another thread forking within it would put its child in the new
        namespace. The cgroup is made once the process is forked, while it
        builds its root (which needs no cgroup), rather than before.
        """
        lx = self.spec.linux
        return (self.attached and lx.namespace("user") is None and lx.namespace("time") is None
                and (lx.namespace("pid") is None or lx.new("pid")) and admin)

    def _spawn(self) -> None:
        """Fork the monitor, which forks the container process, and lead the set-up."""
        up_r, up_w = os.pipe()  # children -> here: JSON lines
        down_r, down_w = os.pipe()  # here -> children
        monitor_r, monitor_w = os.pipe()  # here -> the monitor: "detach" or "stay"
        status_fd = os.open(self._path(EXIT_FILE), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        fifo_fd = os.open(self._path(EXEC_FIFO), os.O_PATH | os.O_CLOEXEC)
        parent = os.getpid()
        try:
            with signals_deferred() as mask:
                child = self._child_side()
                pid = fork(lambda: child.monitor(parent, up_w, down_r, monitor_r, status_fd, fifo_fd), up_w,
                           (up_r, down_w, monitor_w), mask)
                self._monitor_pid = pid
        finally:
            for fd in (up_w, down_r, monitor_r, status_fd, fifo_fd):
                os.close(fd)
        self._monitor_start = start_time(pid)
        try:
            with os.fdopen(up_r, "rb") as up:
                self._lead(up, down_w)
            self._status = "created"
            self._created = now()
            self._save()
            if not self.attached:
                self._detach()
            os.write(monitor_w, b"detach\n" if not self.attached else b"stay\n")
        finally:
            os.close(down_w)
            os.close(monitor_w)

    def _spawn_direct(self, admin: bool, bounding: int | None) -> None:
        up_r, up_w = os.pipe()
        down_r, down_w = os.pipe()
        exit_r, exit_w = os.pipe()  # osvirt's init -> here: the program's wait status
        fifo_fd = os.open(self._path(EXEC_FIFO), os.O_PATH | os.O_CLOEXEC)
        new_pid = self.spec.linux.new("pid")
        own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC) if new_pid else -1
        # A cgroup mount in a copy of this mount namespace mounts the hierarchies this process sees: read
        # once, here, for it and for the cgroup made below.
        mounts = _cgroups.cgroup_mounts() if self.spec.linux.new("mount") and any(
            m.type == "cgroup" for m in self.spec.mounts or ()) else None
        forked = False
        try:
            with signals_deferred() as mask:
                if new_pid:
                    _ns.unshare("pid")  # for the next fork only: set back below
                try:
                    child = self._child_side(bounding, mounts)
                    pid = fork(lambda: child.container_process(up_w, down_r, fifo_fd, exit_w), up_w,
                               (up_r, down_w, exit_r) + ((own,) if own >= 0 else ()), mask)
                finally:
                    if new_pid:
                        _ns.setns(own, "pid")
                self.pid, self._exit_r, self._child = pid, exit_r, True
                forked = True
        finally:
            for fd in (up_w, down_r, exit_w, fifo_fd) + ((own,) if own >= 0 else ()) + (
                    () if forked else (up_r, down_w, exit_r)):
                os.close(fd)
        self._pid_start = start_time(pid)
        with os.fdopen(up_r, "rb") as up:
            try:
                self._make_cgroup(admin, mounts)  # while the process builds its root
                if self._cgroup is not None:
                    self._cgroup.add(pid)
                os.write(down_w, b"go\n")  # the cgroup is its own now: its cgroup namespace may follow
                self._lead(up, down_w)
                self._status = "created"
                self._created = now()
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
                raise_report(report)
            elif report.get("step") == "maps":
                _ns.write_id_maps(self._monitor_pid or 0,
                                  [(m.container_id, m.host_id, m.size) for m in lx.uid_mappings or ()],
                                  [(m.container_id, m.host_id, m.size) for m in lx.gid_mappings or ()])
                os.write(down, b"go\n")
            elif report.get("step") == "pid":
                self.pid = int(report["pid"])
                self._pid_start = start_time(self.pid)
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

    # -- start, kill, wait, delete ----------------------------------------------------------------
    def start(self) -> None:
        """Let the created container exec its program; ContainerError if the exec (or what precedes it) fails."""
        status = self.status
        if status != "created":
            raise ContainerError("start", None, f"container {self.id} is {status}, not created")
        assert self.pid is not None
        fifo_path = self._path(EXEC_FIFO)
        fd = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        pidfd = open_pidfd(self.pid)
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
                elif (pidfd is not None and pidfd in ready) or not alive(self.pid, self._pid_start):
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
            raise_report(json.loads(rest.splitlines()[0]))
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
        pidfd = open_pidfd(self.pid)
        if pidfd is None or not alive(self.pid, self._pid_start):
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
        pidfd = open_pidfd(pid)
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
            pidfd = open_pidfd(pid)
            if pidfd is not None and alive(pid, self._monitor_start):
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
        reported = b""
        try:  # osvirt's init wrote the program's status before it exited (EOF at once without one)
            while chunk := os.read(self._exit_r, 64):
                reported += chunk
        finally:
            os.close(self._exit_r)
            self._exit_r = -1
        self._exit = os.waitstatus_to_exitcode(int(reported) if reported else status)
        with contextlib.suppress(OSError):
            write_file(self._path(EXIT_FILE), b'{"exitStatus": %d}' % self._exit)
        return self._exit

    def _wait_elsewhere(self, timeout_s: float | None) -> None:
        """Wait for a container another process forked directly: its exit, then that process's record of it."""
        assert self.pid is not None
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        pidfd = open_pidfd(self.pid)
        if pidfd is not None:
            try:
                while alive(self.pid, self._pid_start):
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
        code = None if self._child else self._read_exit()  # a child of ours: its status is ours to record
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
        hooks = self.spec.hooks_of("poststop")
        state = oci.state(self.id, "stopped", None, self.spec.bundle, self.spec.annotations,
                          self.spec.oci_version) if hooks else {}
        for hook in hooks:
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
            if self.pid is not None and self._exit is None and alive(self.pid, self._pid_start):
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
                if alive(self._monitor_pid, self._monitor_start) and (self.attached or self._status == "creating"):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(self._monitor_pid, signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    self._reap_monitor(10.0)
            if self.state_dir:
                remove_state_dir(self.state_dir)
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
