"""The child side of a container's creation: the monitor, then the container process's set-up steps.

`Child(...).monitor(...)` runs in the monitor (a forked child of the
creating process): it joins or unshares the user, pid and time namespaces,
forks the container process and waits for it, recording its exit status.
`Child(...).container_process(...)` runs in the container process: the
other namespaces, the root filesystem, the console, hostname, rlimits, then
the wait on exec.fifo, and once started the user, capabilities, seccomp and
the exec (or osvirt's init, or a Python target). Each step is named in
`Step.now` for the error report the parent raises (osvirt.container.report).
"""
import contextlib
import fcntl
import json
import os
import resource
import signal
import socket
import struct
import termios
from collections.abc import Callable, Sequence
from typing import NoReturn

from osvirt import tracker
from osvirt.container import capabilities as _caps
from osvirt.container import cgroups as _cgroups
from osvirt.container import mounts as _mounts
from osvirt.container import namespaces as _ns
from osvirt.container import network as _network
from osvirt.container import oci
from osvirt.container import rootfs as _rootfs
from osvirt.container import seccomp as _seccomp
from osvirt.container import _native as _cnative
from osvirt.container.init import run_init, run_target
from osvirt.container.report import Step, error_report, fork, open_fds
from osvirt.errors import ContainerError
from osvirt.process import _native as _process_native

__all__ = ["Child", "WAITING_DEATHS", "MONITOR_KINDS", "env_caps"]

# Kinds the monitor joins or makes (they act on its children: pid, time; or must come first: user).
MONITOR_KINDS = ("user", "pid", "time")
# Kinds the container process joins or makes itself, in this order (cgroup after the cgroup move).
_PROCESS_KINDS = ("mount", "uts", "ipc", "network", "cgroup")
_RLIM_INFINITY_OCI = 2**64 - 1
WAITING_DEATHS = frozenset({signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGABRT, signal.SIGTERM})
"""The signals that end a created container's process as it waits on exec.fifo, with status 128 + N. A
namespace's PID 1 gets no default action for a signal it does not handle (the kernel drops it); runc's
waiting init, a Go program, dies of these (Go's runtime handles them and exits) and ignores the others."""


class Child:
    """What the monitor and the container process need of the Container: its spec, id, console socket,
    Python target (with its args), whether osvirt's init is PID 1, and its cgroup's directories."""

    _down = -1
    _moved = False

    def __init__(self, spec: oci.Spec, id: str, console_socket: str | None,
                 target: Callable[..., object] | None, target_args: Sequence[object], init: bool,
                 cgroup_paths: Sequence[str] = (), bounding: int | None = None,
                 cgroup_mounts: list[_cgroups.Mount] | None = None) -> None:
        self.spec = spec
        self.cgroup_paths = tuple(cgroup_paths)
        # What its creator knows before the fork, else read here: the capabilities its bounding set may
        # hold (all, when it may drop those it lacks), and the cgroup mounts of the mount namespace it
        # copies (for a cgroup mount in the spec).
        self.bounding = bounding
        self.cgroup_mounts = cgroup_mounts
        self.id = id
        self.console_socket = console_socket
        self.target = target
        self.target_args = tuple(target_args)
        self.init = init

    def monitor(self, parent: int, up: int, down: int, control: int, status_fd: int, fifo_fd: int) -> int:
        Step.now = "monitor: prctl(PR_SET_PDEATHSIG)"
        _process_native.set_pdeathsig(signal.SIGKILL, parent)
        lx = self.spec.linux
        for kind in MONITOR_KINDS:
            ns = lx.namespace(kind)
            if ns is not None and ns.path is not None:
                Step.now = f"setns({ns.path}, {kind})"
                _ns.setns(ns.path, kind)
        new = [kind for kind in MONITOR_KINDS if lx.new(kind)]
        if new:
            Step.now = f"unshare({', '.join(new)})"
            _ns.unshare(new)
        if lx.new("user"):
            os.write(up, b'{"step": "maps"}\n')
            if os.read(down, 3) != b"go\n":
                return 1
        exit_r, exit_w = os.pipe()  # osvirt's init -> here: the program's wait status
        Step.now = "fork the container process"
        pid = fork(lambda: self.container_process(up, down, fifo_fd, exit_w), up, (exit_r, control, status_fd))
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
            for fd in open_fds():
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
        if order == b"detach\n":
            # Its cgroup is no tracker's: should its state directory never see delete(), it would stay.
            # Removed once empty (rmdir refuses it while a process is left, which delete() then kills),
            # before the status is written: whoever waits sees both.
            for path in dict.fromkeys(self.cgroup_paths):
                with contextlib.suppress(OSError):
                    os.rmdir(path)
        os.write(status_fd, json.dumps({"exitStatus": code}).encode())
        os.close(status_fd)
        return code if code >= 0 else 128 - code

    # -- in the container process -----------------------------------------------------------------
    def container_process(self, up: int, down: int, fifo_fd: int, exit_w: int) -> int:
        spec = self.spec
        lx = spec.linux
        process = spec.process
        assert process is not None
        Step.now = "prctl(PR_SET_PDEATHSIG)"
        _process_native.set_pdeathsig(signal.SIGKILL, os.getppid())
        self._down = down
        for kind in _PROCESS_KINDS[:-1]:  # all but cgroup's: see _in_cgroup
            ns = lx.namespace(kind)
            if ns is not None and ns.path is not None:
                Step.now = f"setns({ns.path}, {kind})"
                _ns.setns(ns.path, kind)
        new = [kind for kind in _PROCESS_KINDS[:-1] if lx.new(kind)]
        if new:
            Step.now = f"unshare({', '.join(new)})"
            _ns.unshare(new)
        if lx.new("network"):  # runc brings a new network namespace's loopback up too
            Step.now = "loopback up"
            _network.loopback_up()
        if spec.hooks_of("prestart") or spec.hooks_of("createRuntime"):
            self._in_cgroup()
            os.write(up, b'{"step": "hooks"}\n')
            if os.read(down, 3) != b"go\n":
                return 1
        console = None
        if self.console_socket is not None:  # connected while the host's path is in reach
            Step.now = f"connect to the console socket {self.console_socket}"
            console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            console.connect(self.console_socket)
        if lx.new("mount") or lx.namespace("mount") is not None:
            self._build_root()
        self._in_cgroup()
        if console is not None:
            self._terminal(console, process)
        Step.now = "sethostname"
        if spec.hostname:
            _ns.sethostname(spec.hostname)
        if spec.domainname:
            Step.now = "setdomainname"
            _ns.setdomainname(spec.domainname)
        for rlimit in process.rlimits or ():
            Step.now = f"setrlimit({rlimit.type})"
            soft = resource.RLIM_INFINITY if rlimit.soft == _RLIM_INFINITY_OCI else rlimit.soft
            hard = resource.RLIM_INFINITY if rlimit.hard == _RLIM_INFINITY_OCI else rlimit.hard
            resource.setrlimit(rlimit.resource, (soft, hard))
        if process.oom_score_adj is not None:
            Step.now = "write /proc/self/oom_score_adj"
            _rootfs.write_file("/proc/self/oom_score_adj", str(process.oom_score_adj))
        Step.now = "mark inherited file descriptors close-on-exec"
        for fd in open_fds():
            if fd > 2:
                try:
                    os.set_inheritable(fd, False)
                except OSError:  # the descriptor listdir read /proc/self/fd through, now closed
                    pass
        Step.now = "open exec.fifo"
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
                os.write(fifo, error_report(Step.now, e))
            return 127 if isinstance(e, OSError) and Step.now.startswith("exec") else 1
        return 0  # not reached: _finish execs or exits

    def _terminal(self, console: socket.socket, process: oci.Process) -> None:
        """A pty of the container's own devpts as the controlling terminal and stdio; its master to the socket."""
        Step.now = "openpty (the container's /dev/ptmx)"
        master, slave = os.openpty()
        os.set_inheritable(master, False)
        if process.console_size:
            height, width = process.console_size
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
        Step.now = "setsid and TIOCSCTTY"
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        os.close(slave)
        Step.now = "send the pty master to the console socket"
        socket.send_fds(console, [b"/dev/ptmx"], [master])
        console.close()
        os.close(master)

    def _in_cgroup(self) -> None:
        """Wait until the parent has moved this process into the cgroup, then join or make the cgroup
        namespace (whose root is the cgroup this process is in then). The parent's writes to cgroup.procs
        (slow on v1: one per hierarchy) overlap the mounts made before this."""
        if self._moved:
            return
        Step.now = "wait for the cgroup"
        if os.read(self._down, 3) != b"go\n":
            raise ContainerError("wait for the cgroup", None, "the parent went away")
        self._moved = True
        ns = self.spec.linux.namespace("cgroup")
        if ns is not None:
            Step.now = f"setns({ns.path}, cgroup)" if ns.path else "unshare(cgroup)"
            _ns.setns(ns.path, "cgroup") if ns.path else _ns.unshare("cgroup")

    def _build_root(self) -> None:
        spec = self.spec
        lx = spec.linux
        root = spec.root.resolved
        # runc's default: rslave, so that nothing mounted here reaches the host, while the host's
        # mounts still reach a root bound from it
        Step.now = f"make / {lx.rootfs_propagation or 'rslave'}"
        _mounts.mount(None, "/", None, oci.PROPAGATION[lx.rootfs_propagation or "rslave"])
        if spec.annotations and spec.annotations.get(_rootfs.HOST_ROOT_ANNOTATION) == "host-usr":
            Step.now = f"host_usr_root({root})"
            _mounts.host_usr_root(root)  # a tmpfs: the mount point pivot_root wants
        else:
            Step.now = f"bind the root {root}"
            _mounts.bind(root, root)
        dev_is_tmpfs = False
        for m in spec.mounts or ():
            if m.type == "cgroup" and lx.namespace("cgroup") is not None:
                self._in_cgroup()  # its root is the cgroup namespace's (else the hierarchy's, moved or not)
            Step.now = f"mount {m.destination} ({m.type or 'bind'})"
            _rootfs.mount_one(root, m, self.cgroup_mounts)
            if m.destination.rstrip("/") == "/dev" and not m.is_bind:
                dev_is_tmpfs = True
        if dev_is_tmpfs:
            Step.now = "default devices in /dev"
            _rootfs.default_devices(root)
        state = None
        for hook in spec.hooks_of("createContainer"):
            Step.now = f"createContainer hook {hook.path}"
            state = state or oci.state(self.id, "creating", os.getpid(), spec.bundle, spec.annotations,
                                       spec.oci_version)
            oci.run_hook(hook, state, "createContainer")
        Step.now = f"pivot_root({root})"
        _mounts.pivot_root(root)
        for key, value in (lx.sysctl or {}).items():
            Step.now = f"sysctl {key}"
            _rootfs.write_file("/proc/sys/" + key.replace(".", "/"), value)
        Step.now = "readonlyPaths"
        _mounts.read_only(lx.readonly_paths or ())
        Step.now = "maskedPaths"
        _mounts.mask(lx.masked_paths or ())
        if spec.root.readonly:
            Step.now = "root read-only"
            _mounts._remount_read_only("/", recursive=False)

    def _finish(self, process: oci.Process, fifo: int, exit_w: int) -> None:
        """After start: hooks, user, capabilities, no_new_privs, seccomp, then exec (or the target)."""
        spec = self.spec
        for hook in spec.hooks_of("startContainer"):
            Step.now = f"startContainer hook {hook.path}"
            oci.run_hook(hook, oci.state(self.id, "created", os.getpid(), spec.bundle, spec.annotations,
                                         spec.oci_version), "startContainer")
        caps = process.capabilities
        seccomp = spec.linux.seccomp
        keep_admin = caps is not None and "CAP_SYS_ADMIN" in caps.usable("effective")
        filter_first = seccomp is not None and not process.no_new_privileges and not keep_admin \
            and "CAP_SYS_ADMIN" in env_caps()
        if filter_first:
            assert seccomp is not None
            Step.now = "seccomp (before the capabilities are dropped: no_new_privs is not asked for)"
            _cnative.seccomp_set_mode_filter(seccomp.filter.program,
                                             sum(_seccomp.FLAGS[flag] for flag in set(seccomp.flags or ())))
        user = process.user
        if caps is not None:
            Step.now = "capabilities: bounding set"
            held = self.bounding if self.bounding is not None else _env_cap_masks()["CapBnd"]
            keep = _caps.mask(caps.usable("bounding"))
            for nr in range(_caps.KERNEL_LAST_CAP + 1):
                if held >> nr & 1 and not keep >> nr & 1:
                    _cnative.capbset_drop(nr)
        if user.uid != 0 or user.gid != 0 or user.additional_gids:
            Step.now = "prctl(PR_SET_KEEPCAPS)"
            _caps.set_keepcaps(True)
            Step.now = f"setgroups({list(user.additional_gids or ())})"
            if user.additional_gids or _setgroups_allowed():
                os.setgroups(list(user.additional_gids or ()))
            Step.now = f"setgid({user.gid})"
            os.setresgid(user.gid, user.gid, user.gid)
            Step.now = f"setuid({user.uid})"
            os.setresuid(user.uid, user.uid, user.uid)
            _caps.set_keepcaps(False)
            _process_native.set_pdeathsig(signal.SIGKILL, os.getppid())  # a credential change cleared it
        if user.umask is not None:
            os.umask(user.umask)
        if caps is not None:
            Step.now = "capabilities: capset"
            _caps.ambient_clear()
            _caps.capset(caps.usable("effective"), caps.usable("permitted"), caps.usable("inheritable"))
            # Only what is both permitted and inheritable can be ambient: `runc spec` lists ambient
            # capabilities without inheritable ones, and runc, too, raises what the kernel allows.
            ambient = caps.usable("ambient") & caps.usable("permitted") & caps.usable("inheritable")
            if ambient:
                Step.now = "capabilities: ambient"
                _caps.ambient_raise(ambient)
        if process.no_new_privileges:
            Step.now = "prctl(PR_SET_NO_NEW_PRIVS)"
            _cnative.prctl_set_no_new_privs()
        Step.now = f"chdir({process.cwd})"
        os.chdir(process.cwd)
        if seccomp is not None and not filter_first:
            Step.now = "seccomp"
            _seccomp.install(seccomp.filter, seccomp.flags or ())
        env = process.environ()
        if self.init:
            run_init(lambda: self._exec(process, env, fifo), fifo, exit_w)
        else:
            os.close(exit_w)
            self._exec(process, env, fifo)

    def _exec(self, process: oci.Process, env: dict[str, str], fifo: int) -> NoReturn:
        """exec process.args, or run the Python target (after closing the FIFO, which an exec would close)."""
        if self.target is not None:
            Step.now = "the Python target"
            os.close(fifo)  # start() returns at its EOF
            os.environ.clear()
            os.environ.update(env)
            code = run_target(self.target, self.target_args)
            os._exit(code)
        Step.now = f"exec {list(process.args)}"
        os.execvpe(process.args[0], list(process.args), env)


def _die_of(signo: int, frame: object) -> NoReturn:
    """A created container's process, PID 1 of its namespace, ends at a signal that ends runc's."""
    os._exit(128 + signo)


def _setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except OSError:
        return True


def env_caps() -> frozenset[str]:
    from osvirt import env
    return env.capabilities()


def _env_cap_masks() -> dict[str, int]:
    from osvirt import env
    return env.capability_masks()
