"""Namespaces: what a process sees of the host, made private one kind at a time.

Each kind (`KINDS`: OCI's names) gives a process its own copy of one part of
the system: `uts` a hostname, `ipc` SysV IPC and POSIX message queues, `mount`
a mount table, `network` interfaces and sockets, `pid` process ids, `user`
uids, gids and capabilities, `cgroup` the cgroup root, `time` the boot and
monotonic clocks. A namespace is a kernel object: /proc/PID/ns/<file> shows
which one a process is in, and two processes share one exactly when that file
has the same inode and device (`identity`, what `readlink` shows as
`uts:[4026531838]`).

`unshare(kinds)` moves the caller into new namespaces; `setns(target, kinds)`
into existing ones, through a /proc/PID/ns file or (Linux 5.8+) a pidfd, which
enters several at once. `fork_in(children, kinds, target)` starts a child in
new namespaces. `write_id_maps(pid, uid_map, gid_map)` gives a new user
namespace its uid and gid maps: mapping uid 0 inside to one's own uid outside
is how an unprivileged user is root inside (rootless).

unshare and setns are osvirt's C (csrc/namespaces.c) rather than the stdlib's
os.unshare and os.setns, which Python 3.12 added and osvirt, supporting 3.10,
cannot rely on: one path, the same on every version. `sethostname` is the
stdlib's `socket.sethostname`; setdomainname, which the stdlib lacks, is C.
"""
import errno
import os
import select
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from types import MappingProxyType
from typing import NamedTuple

from osvirt.container import _native
from osvirt.errors import kernel_error
from osvirt.process.spawn import Children, _child_exit_code

__all__ = ["Kind", "KINDS", "Identity", "Started", "identity", "unshare", "setns", "fork_in",
           "write_id_maps", "sethostname", "setdomainname"]


class Kind(NamedTuple):
    """A kind of namespace: its OCI name, its CLONE_NEW* flag, its file in /proc/PID/ns."""
    name: str
    flag: int
    file: str


KINDS: MappingProxyType[str, Kind] = MappingProxyType({kind.name: kind for kind in (
    Kind("cgroup", _native.CLONE_NEW["CGROUP"], "cgroup"),
    Kind("ipc", _native.CLONE_NEW["IPC"], "ipc"),
    Kind("mount", _native.CLONE_NEW["NS"], "mnt"),  # the first namespace (2002): "new namespace" meant mounts
    Kind("network", _native.CLONE_NEW["NET"], "net"),
    Kind("pid", _native.CLONE_NEW["PID"], "pid"),
    Kind("time", _native.CLONE_NEW["TIME"], "time"),
    Kind("user", _native.CLONE_NEW["USER"], "user"),
    Kind("uts", _native.CLONE_NEW["UTS"], "uts"),
)})

# An id map has at most this many lines (340 since Linux 4.15, 5 before).
_MAX_MAP_LINES = 340
_U32 = 0xFFFFFFFF


class Identity(NamedTuple):
    """Which namespace of a kind a process is in: the inode and device of /proc/PID/ns/<file>."""
    kind: str
    inode: int
    device: int

    def __str__(self) -> str:
        return f"{KINDS[self.kind].file}:[{self.inode}]"  # as readlink(/proc/PID/ns/<file>) shows it


def _kinds(kinds: str | Iterable[str], facility: str) -> list[Kind]:
    names = [kinds] if isinstance(kinds, str) else list(kinds)
    if not names:
        raise ValueError(f"{facility}: no namespace kind given (one or more of {sorted(KINDS)})")
    for name in names:
        if name not in KINDS:
            raise ValueError(f"{facility}: {name!r} is not a namespace kind (one of {sorted(KINDS)})")
    return [KINDS[name] for name in dict.fromkeys(names)]


_FLAG_NAMES = {flag: f"CLONE_NEW{name}" for name, flag in _native.CLONE_NEW.items()}


def _flags(kinds: list[Kind]) -> tuple[int, str]:
    """The CLONE_NEW* flags of `kinds`, or'ed, and their names for messages."""
    flags = 0
    for kind in kinds:
        flags |= kind.flag
    return flags, "|".join(_FLAG_NAMES[kind.flag] for kind in kinds)


def identity(pid: int, kind: str) -> Identity:
    """The namespace of `kind` process `pid` (0: this one) is in, from /proc/PID/ns."""
    (found,) = _kinds(kind, "identity")
    st = os.stat(f"/proc/{pid or 'self'}/ns/{found.file}")  # follows the link to the nsfs inode
    return Identity(found.name, st.st_ino, st.st_dev)


def _hint(kinds: list[Kind]) -> str:
    if any(kind.name == "user" for kind in kinds):
        return ("a new user namespace needs none, but user.max_user_namespaces, a seccomp filter (Docker's "
                "refuses unshare without CAP_SYS_ADMIN) or a threaded caller (EINVAL) may refuse it")
    return "needs CAP_SYS_ADMIN (in a new user namespace of one's own, created first, one has it)"


def unshare(kinds: str | Iterable[str]) -> None:
    """unshare(2): move this process into new namespaces of `kinds`.

    With `user` among them the kernel makes the user namespace first and the
    others owned by it, so an unprivileged process may ask for all at once.
    A new `pid` or `time` namespace is for the children forked after: this
    process stays where it is (/proc/self/ns/pid_for_children changes).
    """
    found = _kinds(kinds, "unshare")
    flags, names = _flags(found)
    _native.unshare(flags, f"unshare({names})", _hint(found))


def setns(target: int | str | os.PathLike[str], kinds: str | Iterable[str]) -> None:
    """setns(2): move this process into the namespaces `target` names.

    `target` is a path (a /proc/PID/ns file, opened here) or an open file
    descriptor: a namespace file (one kind), or a pidfd (`os.pidfd_open`,
    Linux 5.8+), through which one call enters every kind listed.
    Entering a user namespace needs CAP_SYS_ADMIN in it (its owner has it);
    any other kind, CAP_SYS_ADMIN in the user namespace owning it and in
    one's own.
    """
    found = _kinds(kinds, "setns")
    flags, names = _flags(found)
    if isinstance(target, bool) or not isinstance(target, (int, str, os.PathLike)):
        raise TypeError(f"setns: target must be a path or a file descriptor, not {type(target).__name__}")
    if isinstance(target, int):
        if target < 0:
            raise ValueError(f"setns: file descriptor {target} is negative")
        _native.setns(target, flags, f"setns(fd {target}, {names})", _SETNS_HINT)
        return
    if len(found) > 1:
        raise ValueError(f"setns: a namespace file enters one kind, not {names} (a pidfd enters several)")
    fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _native.setns(fd, flags, f"setns({os.fspath(target)}, {names})", _SETNS_HINT)
    finally:
        os.close(fd)


_SETNS_HINT = ("needs CAP_SYS_ADMIN over the target namespace (and in one's own user namespace); EINVAL: "
               "the file is of another kind, or a threaded caller asked for a user or mount namespace")


class Started(NamedTuple):
    """A child `fork_in` started: `pid` runs the target, `owned` is the child to wait for (`Children.wait`).

    Both are pids as the caller's PID namespace sees them; they differ when
    a new PID namespace was asked for (`owned` is then the process that
    unshared and forked `pid`, PID 1 inside).
    """
    pid: int
    owned: int


def fork_in(children: Children, kinds: str | Iterable[str], target: Callable[..., object], *args: object,
            uid_map: Sequence[tuple[int, int, int]] = (), gid_map: Sequence[tuple[int, int, int]] = ()) -> Started:
    """Run `target(*args)` in a child in new namespaces of `kinds`; `owned`'s exit status is its.

    The child forks (os.fork), then unshares. With `user`, it waits while
    this process writes its maps (`write_id_maps`, when `uid_map` or
    `gid_map` is given). With `pid` or `time` it forks once more, so that
    `target` runs in them, as PID 1 of a new PID namespace: unshare moves
    only the caller's later children there, and the middle process waits
    for that child and exits with its status (as `unshare --fork` does).
    Why not clone3(2)
    with the flags, which makes PID 1 in one step: it returns into the child
    as a raw fork would, without CPython's own fork handling (os.fork resets
    the interpreter's lock and threads in the child, and runs
    os.register_at_fork hooks), and Docker's seccomp profile answers clone3
    with ENOSYS.

    Children's PR_SET_PDEATHSIG chains: PID 1 dies with the middle process,
    which dies with this one, and with PID 1 the kernel kills the whole PID
    namespace.
    """
    found = _kinds(kinds, "fork_in")
    flags, names = _flags(found)
    user = any(kind.name == "user" for kind in found)
    if (uid_map or gid_map) and not user:
        raise ValueError("fork_in: uid_map and gid_map are for a new user namespace: add 'user' to kinds")
    _check_map(uid_map, "uid_map")
    _check_map(gid_map, "gid_map")
    reports_r, reports_w = os.pipe()  # child -> here: "u" once unshared, then the target's pid
    go_r, go_w = os.pipe()  # here -> child: "g" once the maps are written
    try:
        owned = children.fork(_unshare_and_run, flags, names, _hint(found), user, reports_w, go_r, target, args)
    finally:
        os.close(reports_w)  # the child's copy is the last: EOF if it exits early
        os.close(go_r)
    try:
        with os.fdopen(reports_r, "rb", closefd=False) as reports:
            if user:
                if reports.read(1) != b"u":
                    raise ChildProcessError(f"fork_in: child {owned} exited before unshare({names}) "
                                            "(its exit status says why)")
                if uid_map or gid_map:
                    write_id_maps(owned, uid_map, gid_map)
                os.write(go_w, b"g")
            line = reports.readline()
        if not line:
            raise ChildProcessError(f"fork_in: child {owned} exited before it started the target")
        return Started(int(line), owned)
    finally:
        os.close(reports_r)
        os.close(go_w)


def _unshare_and_run(flags: int, names: str, hint: str, user: bool, report: int, go: int,
                     target: Callable[..., object], args: tuple[object, ...]) -> int:
    """In fork_in's child: unshare, wait for the maps, start the target (PID 1 of a new PID namespace)."""
    _native.unshare(flags, f"unshare({names})", hint)
    if user:
        os.write(report, b"u")
        if os.read(go, 1) != b"g":  # the parent failed writing the maps: stop here
            return 1
    os.close(go)
    new_pid = flags & _native.CLONE_NEW["PID"]
    if not flags & (_native.CLONE_NEW["PID"] | _native.CLONE_NEW["TIME"]):
        os.write(report, f"{os.getpid()}\n".encode())
        os.close(report)
        result = target(*args)
        return result if type(result) is int else 0

    alive_r, alive_w = os.pipe()  # EOF once this process is gone
    sys.stdout.flush()  # else written twice, by both processes
    sys.stderr.flush()
    pid = os.fork()  # (PID 1 of a new PID namespace;) `pid` is its number in the caller's
    if pid == 0:
        os.close(alive_w)
        os.close(report)
        # PID 1's parent is outside its PID namespace: there getppid() says 0, not this pid.
        parent = 0 if new_pid else os.getppid()
        os._exit(_child_exit_code(_unless_parent_gone, (alive_r, target, args), signal.SIGKILL, parent) & 0xFF)
    os.close(alive_r)
    os.write(report, f"{pid}\n".encode())
    os.close(report)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says


def _unless_parent_gone(alive_r: int, target: Callable[..., object], args: tuple[object, ...]) -> object:
    """PID 1's target, unless its parent died before PR_SET_PDEATHSIG was set (no one would kill it then)."""
    if select.select([alive_r], [], [], 0)[0]:
        return 1
    os.close(alive_r)
    return target(*args)


def _check_map(lines: Sequence[tuple[int, int, int]], what: str) -> None:
    """The kernel's rules for /proc/PID/uid_map and gid_map, checked before any write."""
    if len(lines) > _MAX_MAP_LINES:
        raise ValueError(f"write_id_maps: {what} has {len(lines)} lines; the kernel takes at most {_MAX_MAP_LINES}")
    spans: list[tuple[int, int, str]] = []
    for line in lines:
        if len(line) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) for n in line):
            raise TypeError(f"write_id_maps: {what} line {line!r} is not (inside, outside, count) ints")
        inside, outside, count = line
        if count < 1 or not 0 <= inside <= _U32 - count or not 0 <= outside <= _U32 - count:
            raise ValueError(f"write_id_maps: {what} line {line!r}: count >= 1 and both ranges within 0..2**32-2")
        spans += [(inside, inside + count, "inside"), (outside, outside + count, "outside")]
    for side in ("inside", "outside"):
        ranges = sorted((a, b) for a, b, s in spans if s == side)
        if any(b > c for (_, b), (c, _) in zip(ranges, ranges[1:])):
            raise ValueError(f"write_id_maps: {what}'s {side} ranges overlap")


def _write_once(path: str, text: str, hint: str | None) -> None:
    """One write(2): the kernel takes a map whole, from a single write, and only once."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        assert e.errno is not None
        raise kernel_error(e.errno, f"open({path})", "the process is another user's, or not dumpable", path) from None
    try:
        os.write(fd, text.encode())
    except OSError as e:
        assert e.errno is not None
        raise kernel_error(e.errno, f"write({path}, {text.strip()!r})", hint, path) from None
    finally:
        os.close(fd)


def write_id_maps(pid: int, uid_map: Sequence[tuple[int, int, int]], gid_map: Sequence[tuple[int, int, int]],
                  deny_setgroups: bool | None = None) -> None:
    """Write /proc/PID/uid_map and gid_map: lines of (first id inside, first id outside, count).

    Without CAP_SETUID (CAP_SETGID) over the parent user namespace, a map may
    hold one line only, mapping the writer's own euid (egid). Such a gid_map
    needs setgroups(2) denied in the namespace first (/proc/PID/setgroups:
    "deny"), else a process could drop a supplementary group that was
    denying it access: `deny_setgroups` None denies it when this process
    lacks CAP_SETGID. Each map is written once; an empty one is not written.
    """
    _check_map(uid_map, "uid_map")
    _check_map(gid_map, "gid_map")
    if deny_setgroups is None:
        from osvirt import env  # env imports osvirt.container lazily too
        deny_setgroups = "CAP_SETGID" not in env.capabilities()
    own = f"/proc/{pid}"
    if uid_map:
        _write_once(f"{own}/uid_map", _map_text(uid_map), _MAP_HINT.format(cap="CAP_SETUID", id="euid"))
    if deny_setgroups:
        _write_once(f"{own}/setgroups", "deny", "only before gid_map is written")
    if gid_map:
        _write_once(f"{own}/gid_map", _map_text(gid_map),
                    _MAP_HINT.format(cap="CAP_SETGID", id="egid") + ", and setgroups denied first")


_MAP_HINT = ("written already, or without {cap} over the parent user namespace only one line mapping "
             "the writer's own {id}")


def _map_text(lines: Sequence[tuple[int, int, int]]) -> str:
    return "".join(f"{inside} {outside} {count}\n" for inside, outside, count in lines)


def sethostname(name: str) -> None:
    """sethostname(2) in this process's UTS namespace (socket.sethostname)."""
    if not isinstance(name, str):
        raise TypeError(f"sethostname: name must be a str, not {type(name).__name__}")
    if not 0 < len(name.encode()) <= 64:  # HOST_NAME_MAX
        raise ValueError(f"sethostname: {name!r} must be 1 to 64 bytes")
    try:
        socket.sethostname(name)
    except OSError as e:
        assert e.errno is not None
        raise kernel_error(e.errno, f"sethostname({name!r})",
                           "needs CAP_SYS_ADMIN over the UTS namespace" if e.errno == errno.EPERM else None) from None


def setdomainname(name: str) -> None:
    """setdomainname(2) (the NIS domain `uname -a` does not show, `domainname` does) in this UTS namespace."""
    if not isinstance(name, str):
        raise TypeError(f"setdomainname: name must be a str, not {type(name).__name__}")
    if len(name.encode()) > 64:  # __NEW_UTS_LEN
        raise ValueError(f"setdomainname: {name!r} is longer than 64 bytes")
    _native.setdomainname(name.encode())
