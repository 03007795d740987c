"""`osvirt-runtime`: runc's command line for the OCI runtime-spec, over osvirt's Container.

Tools written for runc (containerd's shim, podman, CRI-O's conmon, scripts)
call a runtime as `RUNTIME [global options] COMMAND [options] ID [...]` and
depend on runc's flags, its exit statuses, its `state` JSON and the texts of
its errors ("container does not exist", "container not running"): this
module gives them those, as runc 1.1 has them, so that it can stand in
runc's place. The container itself is osvirt.container.container.Container:
`create` leaves the container's process waiting, before it execs, on
`exec.fifo` in the container's state directory (ROOT/ID); `start` opens that
FIFO; every later command re-attaches with `Container.load(ROOT/ID)`.

runc's command line is Go's flag syntax as urfave/cli parses it: `-name`
and `--name` alike, `--name=value`, booleans as `--force` or `--force=false`,
and a command's flags before or after its arguments (`create ID --bundle B`).
A global flag goes before the command. Errors are written as runc writes
them: to --log (stderr by default) as logrus does, a line of `time=...
level=error msg=...` text or, with --log-format json, a JSON object with
level, msg and time; with --log, the message goes to stderr as well. Every
failure exits with status 1, as runc's do; `run` exits with the
container's status (128 + N when signal N killed it).

A foreground `run` owns its container: it dies with the runtime, and
osvirt.tracker removes its cgroup and its state directory (kind
"state-dir") should the runtime be SIGKILLed. A detached one (`create`,
`run --detach`) belongs to its state directory until `delete`. A terminal
(process.terminal) goes to --console-socket (runc's protocol) when
detached; in the foreground the runtime proxies it to its own stdio.
Not supported, and said so: exec, pause, resume, update, events,
checkpoint, restore, features; --no-pivot, --preserve-fds, and systemd's
cgroups.

Python's start-up is most of what a command costs, so this module imports
only os and sys at the top, and each command what it needs.
"""
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from osvirt.errors import OsvirtError  # ContainerError's base: os and errno only

if TYPE_CHECKING:
    import socket
    from contextlib import ExitStack

    from osvirt.container.container import Container

__all__ = ["COMMANDS", "Failure", "main", "validate_id", "parse_signal", "default_root", "spec", "check_state_dir",
           "remove_state_dir"]

PROG = "osvirt-runtime"
VERSION = "0.1.0"  # osvirt's
OCI_VERSION = "1.0.2"  # the runtime-spec version `spec` writes and Container reads


class Failure(Exception):
    """A command failed: its message is logged as runc logs it, and the exit status is 1."""


class _Usage(Failure):
    """Bad flags or arguments: runc prints "Incorrect Usage." and the command's usage first."""


# -- container ids --------------------------------------------------------------------------------
def validate_id(container_id: str) -> None:
    """runc's check (libcontainer validateID): ^[\\w+-\\.]+$ in ASCII, and not . or .. (Failure if bad).

    The class is Go's: `+-\\.` there is the range from + to ., so a comma passes too.
    """
    if not container_id:
        raise Failure("container id cannot be empty")
    if (not all(c.isascii() and (c.isalnum() or c in "_+,-.") for c in container_id)
            or container_id in (".", "..")):
        raise Failure("invalid container ID format")


# -- signals --------------------------------------------------------------------------------------
def parse_signal(raw: str) -> int:
    """runc's parseSignal: a number as it is (the kernel judges it), else a name, SIG optional, any case."""
    import signal
    try:
        return int(raw, 10)
    except ValueError:
        pass
    name = raw.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    number = getattr(signal.Signals, name, None) if name.isidentifier() else None
    if not isinstance(number, signal.Signals):
        raise Failure(f"unknown signal {_go_quote(raw)}")
    return int(number)


# -- flags ----------------------------------------------------------------------------------------
class _Command(NamedTuple):
    """A command: its flags (name -> takes a value), one-letter aliases, argument counts, usage line."""
    flags: Mapping[str, bool]
    short: Mapping[str, str]
    args: tuple[int, int | None]  # at least, at most (None: any number)
    usage: str
    run: Callable[["_Options", dict[str, Any], list[str]], int]


class _Options(NamedTuple):
    """The global options every command sees."""
    root: str
    log: "_Log"
    systemd_cgroup: bool


_GLOBAL_FLAGS = {"debug": False, "log": True, "log-format": True, "root": True, "criu": True,
                 "systemd-cgroup": False, "rootless": True, "help": False, "version": False}
_GLOBAL_SHORT = {"h": "help", "v": "version"}
_TRUE = ("1", "t", "T", "TRUE", "true", "True")  # Go's strconv.ParseBool
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def _parse_flags(argv: Sequence[str], flags: Mapping[str, bool], short: Mapping[str, str],
                 stop_at_argument: bool) -> tuple[dict[str, Any], list[str]]:
    """Go's flag syntax: ({flag: value}, the other arguments).

    A command's flags may follow its arguments (urfave/cli moves them ahead);
    the global ones end at the first argument, the command's name
    (`stop_at_argument`). "--" ends the flags.
    """
    values: dict[str, Any] = {}
    args: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            args += argv[i:]
            break
        if len(arg) < 2 or arg[0] != "-":
            args.append(arg)
            if stop_at_argument:
                args += argv[i:]
                break
            continue
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, eq, value = body.partition("=")
        if not name or name[0] in "-=":
            raise _Usage(f"bad flag syntax: {arg}")
        name = short.get(name, name)
        if name not in flags:
            raise _Usage(f"flag provided but not defined: -{name}")
        if flags[name]:
            if not eq:
                if i == len(argv):
                    raise _Usage(f"flag needs an argument: -{name}")
                value = argv[i]
                i += 1
            values[name] = value
        elif eq and value not in _TRUE + _FALSE:
            raise _Usage(f'invalid boolean value "{value}" for -{name}: parse error')
        else:
            values[name] = not eq or value in _TRUE
    return values, args


# -- logging --------------------------------------------------------------------------------------
def _go_quote(text: str) -> str:
    """Go's %q, enough for messages: backslash, quote and control characters escaped."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _rfc3339(seconds: float) -> str:
    """Go's time.RFC3339 in local time, as logrus stamps a line."""
    import time
    tm = time.localtime(seconds)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", tm)
    offset = tm.tm_gmtoff or 0
    if not offset:
        return text + "Z"
    sign = "+" if offset > 0 else "-"
    return f"{text}{sign}{abs(offset) // 3600:02d}:{abs(offset) % 3600 // 60:02d}"


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._/@^+")


class _Log:
    """runc's logrus: `text` or `json` lines to --log (stderr by default); debug lines with --debug."""

    def __init__(self, path: str | None, fmt: str, debug: bool) -> None:
        if fmt not in ("text", "json"):
            raise Failure(f"invalid log-format: {fmt}")
        self.json = fmt == "json"
        self.debugging = debug
        self.to_stderr = path is None
        self.file: IO[str] = sys.stderr
        if path is not None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_SYNC | os.O_CLOEXEC, 0o644)
            self.file = os.fdopen(fd, "w", buffering=1)

    def _write(self, level: str, msg: str) -> None:
        import time
        now = _rfc3339(time.time())
        if self.json:
            import json
            line = json.dumps({"level": level, "msg": msg, "time": now}, separators=(",", ":"), ensure_ascii=False)
        else:
            shown = msg if msg and all(c in _SAFE for c in msg) else _go_quote(msg)
            line = f'time="{now}" level={level} msg={shown}'
        self.file.write(line + "\n")
        self.file.flush()

    def debug(self, msg: str) -> None:
        if self.debugging:
            self._write("debug", msg)

    def error(self, msg: str) -> None:
        """As runc's fatal(): to the log, and to stderr too when the log is a file."""
        self._write("error", msg)
        if not self.to_stderr:
            print(msg, file=sys.stderr, flush=True)


# -- where state lives ----------------------------------------------------------------------------
def default_root() -> str:
    """runc's default --root, for osvirt-runtime: $XDG_RUNTIME_DIR/osvirt-runtime for a caller
    other than root (when set), else /run/osvirt-runtime."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.geteuid() != 0:
        return os.path.join(xdg, PROG)
    return f"/run/{PROG}"


def _state_dir(options: _Options, container_id: str) -> str:
    validate_id(container_id)
    return os.path.join(options.root, container_id)


def _make_root(root: str) -> None:
    """The root directory, made 0700 as runc makes its own (on every command but spec)."""
    try:
        os.makedirs(root, 0o700, exist_ok=True)
    except OSError as e:
        raise Failure(f"mkdir {root}: {e.strerror.lower() if e.strerror else e}") from None


def check_state_dir(facility: str, path: str) -> None:
    """osvirt.tracker's name check of kind "state-dir": ROOT/ID, absolute and normal, ID runc's (ValueError if not)."""
    try:
        if not os.path.isabs(path) or os.path.normpath(path) != path:
            raise Failure("not an absolute, normal path")
        validate_id(os.path.basename(path))
    except Failure as e:
        raise ValueError(f"{facility}: {path!r} is not a container's state directory: {e}") from None


def remove_state_dir(path: str) -> bool:
    """osvirt.tracker's remover of kind "state-dir": a `run`'s state directory, once its runtime died.

    Only a directory holding nothing but Container's own files (state.json,
    its temporary copies, exec.fifo, exit-status), and a state.json of this
    id, is emptied and removed: never a tree, nor another's. False if gone.
    """
    import json
    import stat
    from osvirt.container.statedir import EXEC_FIFO, EXIT_FILE, STATE_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise PermissionError(f"rmdir({path}): owned by uid {st.st_uid}, not {os.geteuid()}: not ours to remove")
        names = os.listdir(fd)
        for name in names:
            temporary = name.startswith(STATE_FILE + ".") and name.endswith(".tmp")
            if (name not in (STATE_FILE, EXEC_FIFO, EXIT_FILE) and not temporary
                    or stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)):
                raise ValueError(f"rmdir({path}): {name} is not a container's state: left as it is")
        if STATE_FILE in names:
            with open(os.open(STATE_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)) as f:
                if json.load(f).get("id") != os.path.basename(path):
                    raise ValueError(f"rmdir({path}): its {STATE_FILE} is another container's: left as it is")
        for name in names:
            os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)
    return True


# -- the commands -----------------------------------------------------------------------------------
def _load(options: _Options, container_id: str) -> "Container":
    """Container.load of an existing container, or runc's "container does not exist"."""
    state_dir = _state_dir(options, container_id)
    if not os.path.exists(os.path.join(state_dir, "state.json")):  # container.STATE_FILE, before importing it
        raise Failure("container does not exist")
    from osvirt.container.container import Container
    return Container.load(state_dir)


def _write_pid_file(path: str, pid: int) -> None:
    """runc's createPidFile: the pid, no newline, written beside and renamed into place."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_SYNC | os.O_CLOEXEC, 0o666)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _chdir_error(path: str) -> Failure:
    """Go's error for chdir(path), as runc reports a bad --bundle."""
    return Failure(f"chdir {path}: {'not a directory' if os.path.exists(path) else 'no such file or directory'}")


def _new_container(options: _Options, container_id: str, flags: Mapping[str, Any], attached: bool,
                   stack: "ExitStack | None" = None) -> "tuple[Container, socket.socket | None]":
    """create and run's shared part: runc's checks, then Container.create (the process waits on exec.fifo).

    `attached`: the container dies with this process (run in the foreground),
    else it outlives it, kept by its state directory until delete. With
    `stack`, a foreground run's process.terminal gets a console socket of
    this process's own, in a private directory `stack` removes: the
    listening socket is returned, the pty's master to be accepted there.
    """
    state_dir = _state_dir(options, container_id)
    bundle = os.path.abspath(flags.get("bundle") or ".")
    if not os.path.isdir(bundle):
        raise _chdir_error(bundle)
    if not os.path.exists(os.path.join(bundle, "config.json")):
        raise Failure("JSON specification file config.json not found")
    for flag, why in (("no-pivot", "the root is always pivot_root's"), ("preserve-fds", "")):
        if flags.get(flag) and flags[flag] != "0":
            raise Failure(f"--{flag} is not supported" + (f" ({why})" if why else ""))
    if options.systemd_cgroup:
        raise Failure("--systemd-cgroup is not supported (osvirt-runtime makes cgroupfs cgroups itself)")
    from osvirt.container import oci
    from osvirt.container.container import Container
    spec = oci.load(bundle)
    terminal = spec.process is not None and spec.process.terminal
    console_socket = flags.get("console-socket") or None
    if terminal and not attached and console_socket is None:  # runc's checkTerminal
        raise Failure("cannot allocate tty if runc will detach without setting console socket")
    if console_socket is not None and (attached or not terminal):
        raise Failure("cannot use console socket if runc will not detach or allocate tty")
    listening = None
    if terminal and stack is not None:  # runc run's own pty, proxied to this process's stdio
        import socket
        from osvirt.naming import private_dir
        console_socket = os.path.join(stack.enter_context(private_dir()), "console.sock")
        listening = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC))
        listening.bind(console_socket)
        listening.listen(1)
    _make_root(options.root)
    if os.path.lexists(state_dir):
        raise Failure("container with given ID already exists")
    options.log.debug(f"create {container_id}: bundle {bundle}, state {state_dir}")
    container = Container(spec, container_id, state_root=options.root, attached=attached,
                          console_socket=os.path.abspath(console_socket) if console_socket else None)
    if attached:  # it dies with this process: so does its state directory, even after a SIGKILL
        from osvirt import tracker
        tracker.register("state-dir", state_dir)
    try:
        container.create()  # which removes what it made if it fails
    except BaseException:
        if attached:  # the directory may be another's, made in between
            tracker.unregister("state-dir", state_dir)
        raise
    if flags.get("pid-file"):
        assert container.pid is not None
        _write_pid_file(os.path.abspath(flags["pid-file"]), container.pid)
    return container, listening


def _create(options: _Options, flags: dict[str, Any], args: list[str]) -> int:
    _new_container(options, args[0], flags, attached=False)
    return 0


def _start(options: _Options, flags: dict[str, Any], args: list[str]) -> int:
    container = _load(options, args[0])
    status = container.status
    if status == "stopped":
        raise Failure("cannot start a container that has stopped")
    if status == "running":
        raise Failure("cannot start an already running container")
    if status != "created":
        raise Failure(f"cannot start a container in the {status} state")
    container.start()
    return 0


def _run(options: _Options, flags: dict[str, Any], args: list[str]) -> int:
    """create and start; in the foreground, wait (signals forwarded to the container), delete, and
    exit with the container's status (128 + N: killed by signal N).

    The handlers go in once the container is created: a signal before that
    ends this process as usual, and the container, attached, with it. With
    process.terminal in the foreground, as runc does: the program's pty is
    proxied to this process's stdio, a terminal there made raw meanwhile and
    its size passed on (SIGWINCH).
    """
    import signal
    from contextlib import ExitStack
    detach = bool(flags.get("detach"))
    with ExitStack() as stack:
        container, listening = _new_container(options, args[0], flags, attached=not detach,
                                              stack=None if detach else stack)
        try:
            if not detach:
                def forward(signum: int, frame: object) -> None:
                    try:
                        container.kill(signum)
                    except ProcessLookupError:  # it has just exited: wait() says how
                        pass
                # Every signal, as runc forwards them, but those about this process (SIGCHLD, SIGWINCH)
                # and those no handler gets (SIGKILL, SIGSTOP).
                for signum in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD,
                                                         signal.SIGWINCH}:
                    try:
                        signal.signal(signum, forward)
                    except (OSError, ValueError):  # one the interpreter keeps (SIGSEGV's faulthandler, ...)
                        pass
            proxy = _Proxy(stack, listening) if listening is not None else None
            container.start()
            if detach:
                return 0
            status = container.wait()
            if proxy is not None:
                proxy.drain()
            if not flags.get("keep"):
                container.delete(force=True)
        except BaseException:
            container.delete(force=True)
            raise
        finally:
            if not detach:  # deleted, or kept (--keep): the tracker's no more
                from osvirt import tracker
                tracker.unregister("state-dir", container.state_dir)
    return status if status >= 0 else 128 - status


class _Proxy:
    """A foreground run's terminal: stdin to the pty's master, the master to stdout, in a thread,
    until every holder of the slave has closed it (EIO); a terminal on stdin raw meanwhile."""

    def __init__(self, stack: "ExitStack", listening: "socket.socket") -> None:
        import signal
        import socket
        import threading
        connection, _ = listening.accept()  # Container sent the master before create() returned
        with connection:
            _, fds, _, _ = socket.recv_fds(connection, 4096, 1)
        if len(fds) != 1:
            raise Failure("the container sent no pty master to the console socket")
        self.master = fds[0]
        stack.callback(os.close, self.master)
        if os.isatty(0):
            import termios
            import tty
            saved = termios.tcgetattr(0)
            stack.callback(termios.tcsetattr, 0, termios.TCSADRAIN, saved)
            tty.setraw(0)
            self.resize(signal.SIGWINCH, None)
            signal.signal(signal.SIGWINCH, self.resize)
        self.thread = threading.Thread(target=self.pump, name="osvirt-runtime terminal", daemon=True)
        self.thread.start()

    def resize(self, signum: int, frame: object) -> None:
        import fcntl
        import termios
        size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)

    def pump(self) -> None:
        import select
        sources = [self.master, 0]
        while True:
            for fd in select.select(sources, [], [])[0]:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO from the master: the program and all its children are gone
                    data = b""
                if fd == self.master and not data:
                    return
                if not data:  # stdin's end: the program keeps its terminal
                    sources.remove(0)
                    continue
                target = 1 if fd == self.master else self.master
                while data:
                    data = data[os.write(target, data):]

    def drain(self) -> None:
        """What the program wrote before it exited, out before this process exits."""
        self.thread.join(timeout=5.0)


def _state(options: _Options, flags: dict[str, Any], args: list[str]) -> int:
    import json
    sys.stdout.write(json.dumps(_runc_state(_load(options, args[0]), owner=""), indent=2))  # no newline: runc's
    sys.stdout.flush()
    return 0


def _runc_state(container: "Container", owner: str) -> dict[str, Any]:
    """The spec's state in runc's order, with runc's own fields (rootfs, created, owner).

    runc prints pid 0 once stopped, and no annotations when there are none.
    """
    state = container.state()
    shown: dict[str, Any] = {"ociVersion": state["ociVersion"], "id": state["id"], "pid": state.get("pid", 0),
                             "status": state["status"], "bundle": state["bundle"], "rootfs": state["rootfs"],
                             "created": state["created"]}
    if state.get("annotations"):
        shown["annotations"] = state["annotations"]
    shown["owner"] = owner
    return shown


def _kill(options: _Options, flags: dict[str, Any], args: list[str]) -> int:
    import signal
    container = _load(options, args[0])
    signum = parse_signal(args[1]) if len(args) > 1 else int(signal.SIGTERM)
    if container.status not in ("created", "running"):
        raise Failure("container not running")
    try:
        container.kill(signum, all=bool(flags.get("all")))
    except ProcessLookupError:
        raise Failure("container not running") from None
    except ValueError:  # a number the kernel has no signal for: runc passes it on and gets EINVAL
        raise Failure("unable to signal init: invalid argument") from None
    return 0


def _delete(options: _Options, flags: dict[str, Any], args: list[str]) -> int:
    """runc's delete: a stopped container is removed; a created one killed and removed (runc does so,
    though the spec asks for an error); a running one only with --force (SIGKILL). --force on an id
    without a container removes whatever a failed create left in its state directory."""
    state_dir = _state_dir(options, args[0])
    force = bool(flags.get("force"))
    try:
        container = _load(options, args[0])
    except Failure:
        if not force:
            raise
        import shutil
        shutil.rmtree(state_dir, ignore_errors=True)
        return 0
    status = container.status
    if status == "running" and not force:
        raise Failure(f"cannot delete container {args[0]} that is not stopped: {status}")
    container.delete(force=True)
    return 0


def _list(options: _Options, flags: dict[str, Any], args: list[str]) -> int:
    fmt = flags.get("format", "table")
    if fmt not in ("table", "json"):
        raise Failure("invalid format option")
    _make_root(options.root)
    import pwd
    states = []
    for entry in sorted(os.scandir(options.root), key=lambda e: e.name):
        if not entry.is_dir(follow_symlinks=False):
            continue
        uid = entry.stat(follow_symlinks=False).st_uid
        try:
            owner = pwd.getpwuid(uid).pw_name
        except KeyError:
            owner = f"#{uid}"
        try:
            states.append(_runc_state(_load(options, entry.name), owner))
        except (Failure, OSError, ValueError) as e:  # runc's list says so on stderr and goes on
            print(f"load container {entry.name}: {e}", file=sys.stderr)
    if flags.get("quiet"):
        sys.stdout.write("".join(s["id"] + "\n" for s in states))
    elif fmt == "json":
        import json
        sys.stdout.write(json.dumps(states or None, separators=(",", ":")) + "\n")
    else:
        rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
        rows += [[s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"]] for s in states]
        sys.stdout.write(_tabwriter(rows))
    return 0


def _tabwriter(rows: list[list[str]], min_width: int = 12, padding: int = 3) -> str:
    """Go's text/tabwriter as runc's list uses it: each column as wide as its widest cell plus the
    padding (at least min_width); the last cell of a row is not padded."""
    widths = [max(min_width, max(len(row[col]) for row in rows) + padding) for col in range(len(rows[0]) - 1)]
    return "".join("".join(cell.ljust(w) for cell, w in zip(row, widths)) + row[-1] + "\n" for row in rows)


def _pids(container: "Container") -> list[int]:
    """The container's processes: those in its cgroup, or (without one: rootless) those in its PID
    namespace, as this host numbers them."""
    procs: set[int] = set()
    for path in container.state()["cgroupPaths"].values():
        with open(os.path.join(path, "cgroup.procs")) as f:
            procs.update(map(int, f.read().split()))
    if procs or container.pid is None:
        return sorted(procs)
    own = os.stat(f"/proc/{container.pid}/ns/pid").st_ino
    if own == os.stat("/proc/self/ns/pid").st_ino:
        return [container.pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/pid").st_ino == own:
                    procs.add(int(entry))
            except OSError:  # gone, or not ours to look at
                pass
    return sorted(procs)


def _ps(options: _Options, flags: dict[str, Any], args: list[str]) -> int:
    """The container's processes: their pids as JSON, or `ps -ef` (or the ps options given) cut to them."""
    fmt = flags.get("format", "table")
    if fmt not in ("table", "json"):
        raise Failure("invalid format option")
    container = _load(options, args[0])
    if container.status == "stopped":
        raise Failure("container not running")
    pids = _pids(container)
    if fmt == "json":
        import json
        sys.stdout.write(json.dumps(pids) + "\n")
        return 0
    import subprocess
    out = subprocess.run(["ps", *(args[1:] or ["-ef"])], capture_output=True, text=True, check=False)
    if out.returncode:
        raise Failure(f"ps: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    try:
        column = lines[0].split().index("PID")
    except (IndexError, ValueError):
        raise Failure("couldn't find PID field in ps output") from None
    shown = [lines[0]] + [line for line in lines[1:] if int(line.split()[column]) in pids]
    sys.stdout.write("".join(line + "\n" for line in shown))
    return 0


# -- spec -----------------------------------------------------------------------------------------
_SPEC_CAPABILITIES = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def spec(rootless: bool = False) -> dict[str, Any]:
    """The starter config.json runc spec writes (libcontainer/specconv's Example), osvirt's version.

    With `rootless`, runc's ToRootless: a user namespace mapping uid and gid
    0 to this process's own, no network namespace, /sys an rbind of the
    host's, no uid=/gid= mount options, no resources.
    """
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]
    namespaces = ["pid", "network", "ipc", "uts", "mount"]
    linux: dict[str, Any] = {"resources": {"devices": [{"allow": False, "access": "rwm"}]}}
    if rootless:
        namespaces = [ns for ns in namespaces if ns != "network"] + ["user"]
        linux = {"uidMappings": [{"containerID": 0, "hostID": os.geteuid(), "size": 1}],
                 "gidMappings": [{"containerID": 0, "hostID": os.getegid(), "size": 1}]}
        for mount in mounts:
            if mount["destination"] == "/sys":
                mount.update(type="none", source="/sys", options=["rbind", "nosuid", "noexec", "nodev", "ro"])
            elif "options" in mount:
                mount["options"] = [o for o in mount["options"] if not o.startswith(("uid=", "gid="))]
    linux["namespaces"] = [{"type": ns} for ns in namespaces]
    linux["maskedPaths"] = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                            "/proc/scsi"]
    linux["readonlyPaths"] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {kind: list(_SPEC_CAPABILITIES) for kind in ("bounding", "effective", "permitted",
                                                                         "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "osvirt",
        "mounts": mounts,
        "linux": linux,
    }


def _spec(options: _Options, flags: dict[str, Any], args: list[str]) -> int:
    import json
    bundle = flags.get("bundle")
    if bundle is not None and not os.path.isdir(bundle):
        raise _chdir_error(bundle)
    path = os.path.join(bundle or ".", "config.json")
    text = json.dumps(spec(rootless=bool(flags.get("rootless"))), indent="\t")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    except FileExistsError:
        raise Failure("File config.json exists. Remove it first") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return 0


# -- the command table and main ---------------------------------------------------------------------
COMMANDS: dict[str, _Command] = {
    "create": _Command({"bundle": True, "console-socket": True, "pid-file": True, "no-pivot": False,
                       "no-new-keyring": False, "preserve-fds": True, "help": False},
                      {"b": "bundle", "h": "help"}, (1, 1), "create [command options] <container-id>", _create),
    "run": _Command({"bundle": True, "console-socket": True, "pid-file": True, "no-pivot": False,
                    "no-new-keyring": False, "preserve-fds": True, "detach": False, "keep": False,
                    "no-subreaper": False, "help": False},
                   {"b": "bundle", "d": "detach", "h": "help"}, (1, 1), "run [command options] <container-id>", _run),
    "start": _Command({"help": False}, {"h": "help"}, (1, 1), "start <container-id>", _start),
    "state": _Command({"help": False}, {"h": "help"}, (1, 1), "state <container-id>", _state),
    "kill": _Command({"all": False, "help": False}, {"a": "all", "h": "help"}, (1, 2),
                    "kill [command options] <container-id> [signal]", _kill),
    "delete": _Command({"force": False, "help": False}, {"f": "force", "h": "help"}, (1, 1),
                      "delete [command options] <container-id>", _delete),
    "list": _Command({"format": True, "quiet": False, "help": False}, {"f": "format", "q": "quiet", "h": "help"},
                    (0, 0), "list [command options]", _list),
    "ps": _Command({"format": True, "help": False}, {"f": "format", "h": "help"}, (1, None),
                  "ps [command options] <container-id> [ps options]", _ps),
    "spec": _Command({"bundle": True, "rootless": False, "help": False}, {"b": "bundle", "h": "help"}, (0, 0),
                    "spec [command options]", _spec),
}

# runc 1.1's other commands: named as such, rather than as an unknown word.
_NOT_SUPPORTED = ("checkpoint", "events", "exec", "features", "pause", "restore", "resume", "update")

_USAGE = f"""NAME:
   {PROG} - an OCI runtime with runc's command line (osvirt.container)

USAGE:
   {PROG} [global options] command [command options] [arguments...]

COMMANDS:
   {", ".join(COMMANDS)}

GLOBAL OPTIONS:
   --debug, --log FILE, --log-format text|json, --root DIR (default: {default_root()}),
   --systemd-cgroup (refused at create), --rootless true|false|auto, --help, --version
"""


def _command_help(command: _Command) -> str:
    """Its usage line and flags, as urfave/cli lists them."""
    aliases = {name: letter for letter, name in command.short.items()}
    lines = [f"--{name}{' value' if value else ''}" + (f", -{aliases[name]}{' value' if value else ''}"
                                                       if name in aliases else "")
             for name, value in command.flags.items()]
    return f"USAGE:\n   {PROG} {command.usage}\n\nOPTIONS:\n" + "".join(f"   {line}\n" for line in lines)


def _check_args(name: str, command: _Command, args: list[str]) -> None:
    """runc's checkArgs, with its messages."""
    least, most = command.args
    if least == most and len(args) != least:
        raise _Usage(f'{PROG}: "{name}" requires exactly {least} argument(s)')
    if len(args) < least:
        raise _Usage(f'{PROG}: "{name}" requires a minimum of {least} argument(s)')
    if most is not None and len(args) > most:
        raise _Usage(f'{PROG}: "{name}" requires a maximum of {most} argument(s)')


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line (default: sys.argv[1:]); the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    log = _Log(None, "text", False)
    name = ""
    try:
        flags, rest = _parse_flags(argv, _GLOBAL_FLAGS, _GLOBAL_SHORT, stop_at_argument=True)
        log = _Log(flags.get("log"), flags.get("log-format", "text"), bool(flags.get("debug")))
        if flags.get("version"):
            print(f"{PROG} version {VERSION}\nspec: {OCI_VERSION}")
            return 0
        if flags.get("help") or not rest or rest[0] in ("help", "h"):
            print(_USAGE, end="")
            return 0
        if rest[0] in _NOT_SUPPORTED:
            raise Failure(f"{rest[0]}: runc's command is not supported by {PROG}")
        if rest[0] not in COMMANDS:
            raise _Usage(f"No help topic for '{rest[0]}'")
        name, command = rest[0], COMMANDS[rest[0]]
        rootless = flags.get("rootless", "auto")  # runc's: whether to ignore cgroup errors; Container decides
        if rootless not in ("true", "false", "auto"):
            raise Failure(f"invalid value for --rootless: {rootless}")
        options = _Options(os.path.abspath(flags.get("root") or default_root()), log,
                          bool(flags.get("systemd-cgroup")))
        try:
            cmd_flags, args = _parse_flags(rest[1:], command.flags, command.short, stop_at_argument=False)
            if cmd_flags.get("help"):
                print(_command_help(command))
                return 0
            _check_args(name, command, args)
        except _Usage:
            print(f"Incorrect Usage.\n\n{_command_help(command)}")
            raise
        return command.run(options, cmd_flags, args)
    except (Failure, OSError, ValueError, OsvirtError) as e:  # OSError: a kernel refusal, named by its facility
        message = str(e)
        if name in ("create", "run") and not isinstance(e, _Usage):
            message = f"{PROG} {name} failed: {message}"  # as runc's "runc create failed: ..."
        log.error(message)
        return 1


if __name__ == "__main__":
    sys.exit(main())
