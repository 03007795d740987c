"""The resource tracker: what a SIGKILLed owner leaves behind is removed after all.

A process cannot clean up after its own SIGKILL. So, as CPython's
multiprocessing.resource_tracker does, the first registration starts one
small tracker process, and every owner of a named kernel object registers it
there before creating it (a SysV id, which the kernel picks, right after)
and unregisters it once it is removed. The tracker reads a pipe whose write
end every client holds: forked children inherit it, which is right, since
they share their parent's objects; programs they exec do not (O_CLOEXEC).
EOF means the last process connected has died: the tracker then removes
what is still registered, says on stderr what it removed, and exits. It reads
the pipe in batches (main() says why), so it sees the EOF up to 20 ms late.

It acts only on what its own clients registered and osvirt named: POSIX IPC
names `/osvirt-<pid>-<random>[-suffix]`, paths of that name directly in a
temp directory or in such a directory there, a file written beside the one it
will replace (`DIR/.NAME.osvirt-<pid>-<random>`: osvirt.naming.replacing, osvirt.fs.durable_write), SysV ids whose key and creation
time are still the registered ones, osvirt-named cgroups inside a cgroup mount
(their processes killed first), veth pairs named `osv<pid>-<hex>` in its own
network namespace (the one its first client was in), the state directory of
an `osvirt-runtime run` (ROOT/ID, removed only while it holds nothing but
Container's own files, its state.json of that ID), and only on objects its
own uid owns. It
refuses any other name, and says so on stderr.

The kinds table (`KINDS`) maps each kind of object to its name check and its
remover; a new kind (a mount, a cgroup, a veth pair) is one more row.
"""
import contextlib
import os
import re
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple, TypeVar

__all__ = ["KINDS", "Kind", "register", "unregister", "tracked", "register_sysv", "make_sysv", "main"]

_NAME = r"osvirt-[0-9]+-[0-9a-f]{8}(-[^/\s]+)?"  # osvirt.naming.unique_name, with no white space
_POSIX_NAME = re.compile("/" + _NAME)
_PATH_NAME = re.compile(_NAME)
_BESIDE_NAME = re.compile(r"\.[^/]+\." + _NAME)  # osvirt.naming.replacing's: .NAME.<osvirt name>
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)  # the protocol's: \\ for a backslash, \n for a newline
_SYSV_NAME = re.compile(r"id=([0-9]+),key=(-?[0-9]+),ctime=([0-9]+)")
# What the protocol's one line must fit in: a write of at most PIPE_BUF bytes is
# atomic, so the lines of concurrent clients (threads, forked children) never mix.
_LINE_MAX = 4096
# How long the tracker lets lines gather in its pipe before it reads them (main()).
_BATCH_S = 0.02
# The pipe's size it asks for, so that a burst of lines meanwhile seldom fills it:
# 1 MiB, /proc/sys/fs/pipe-max-size's default, holds some 8,000 lines.
_PIPE_BYTES = 1 << 20


# -- names: checked by the client (ValueError before anything is made) and by the tracker ----
def _posix_name(facility: str, name: str) -> None:
    if not _POSIX_NAME.fullmatch(name):
        raise ValueError(f"{facility}: {name!r} is not an osvirt name (/osvirt-<pid>-<random>)")


def _temp_roots() -> set[str]:
    import tempfile  # here, as shutil and subprocess below: the calls that need them import them
    return {tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"}


def _temp_path(facility: str, path: str) -> None:
    """An osvirt-named path directly in a temp directory, or in an osvirt-named directory there."""
    if not os.path.isabs(path) or os.path.normpath(path) != path or not _PATH_NAME.fullmatch(os.path.basename(path)):
        raise ValueError(f"{facility}: {path!r} is not an absolute, normal path to an osvirt name")
    parent = os.path.dirname(path)
    if parent not in _temp_roots():
        try:
            _temp_path(facility, parent)
        except ValueError:
            raise ValueError(f"{facility}: {path!r} is not in a temp directory ({', '.join(sorted(_temp_roots()))})"
                             " nor in an osvirt directory there") from None


def _beside_path(facility: str, path: str) -> None:
    """An absolute, normal path whose last part is `.NAME.` then an osvirt name: a temp file anywhere."""
    if not os.path.isabs(path) or os.path.normpath(path) != path or \
            not _BESIDE_NAME.fullmatch(os.path.basename(path)):
        raise ValueError(f"{facility}: {path!r} is not an absolute, normal path to .NAME.<osvirt name>")


def _sysv_fields(facility: str, name: str) -> tuple[int, ...]:
    match = _SYSV_NAME.fullmatch(name)
    if not match:
        raise ValueError(f"{facility}: {name!r} is not 'id=<id>,key=<key>,ctime=<ctime>'")
    return tuple(map(int, match.groups()))


# -- removers, run by the tracker: True when removed, False when there was nothing to remove ----
def _owned(facility: str, uid: int) -> None:
    if uid != os.geteuid():
        raise PermissionError(f"{facility}: owned by uid {uid}, not {os.geteuid()}: not ours to remove")


def _remove_shm(name: str) -> bool:
    import posix_ipc
    try:
        shm = posix_ipc.SharedMemory(name, read_only=True)
    except posix_ipc.ExistentialError:
        return False
    try:
        _owned(f"shm_open({name})", os.fstat(shm.fd).st_uid)
    finally:
        shm.close_fd()
    posix_ipc.unlink_shared_memory(name)
    return True


def _remove_mqueue(name: str) -> bool:
    import posix_ipc
    try:
        mq = posix_ipc.MessageQueue(name)
    except posix_ipc.ExistentialError:
        return False
    try:
        _owned(f"mq_open({name})", os.fstat(mq.mqd).st_uid)  # a queue descriptor is a file descriptor on Linux
    finally:
        mq.close()
    posix_ipc.unlink_message_queue(name)
    return True


def _remove_sem(name: str) -> bool:
    import posix_ipc
    try:
        st = os.lstat("/dev/shm/sem." + name[1:])  # where glibc keeps a named semaphore
    except FileNotFoundError:
        return False
    _owned(f"sem_open({name})", st.st_uid)
    posix_ipc.unlink_semaphore(name)
    return True


def _exists_owned(facility: str, path: str, is_kind: Callable[[int], bool]) -> bool:
    """Whether `path` exists; PermissionError or ValueError unless it is our own object of that file type."""
    try:
        st = os.lstat(path)  # lstat: a symlink put in its place is not followed
    except FileNotFoundError:
        return False
    if not is_kind(st.st_mode):
        raise ValueError(f"{facility}: {path} is not of the kind registered")
    _owned(f"{facility}({path})", st.st_uid)
    return True


def _remove_dir(path: str) -> bool:
    if not _exists_owned("rmtree", path, stat.S_ISDIR):
        return False
    import shutil
    shutil.rmtree(path)  # fd-based on Linux: follows no symlink inside
    return True


def _remove_file(path: str) -> bool:
    if not _exists_owned("unlink", path, stat.S_ISREG):
        return False
    os.unlink(path)
    return True


def _remove_swap(path: str) -> bool:
    if not _exists_owned("swapoff", path, stat.S_ISREG):
        return False
    from osvirt.memory import _native, swaps
    if path in swaps():
        _native.swapoff(path)  # every page in it back to RAM first
    os.unlink(path)
    return True


def _cgroup_path(facility: str, path: str) -> None:
    from osvirt.container import cgroups  # what a cgroup mount is, read from mountinfo
    cgroups.check_path(facility, path)


def _remove_cgroup(path: str) -> bool:
    from osvirt.container import cgroups
    return cgroups.kill_and_rmdir(path)  # its processes SIGKILLed first: rmdir needs it empty


def _veth_name(facility: str, name: str) -> None:
    from osvirt.container import network  # its names: osv<pid>-<hex>, within IFNAMSIZ
    network.check_osvirt_name(facility, name)


def _remove_veth(name: str) -> bool:
    from osvirt.container import network
    return network.delete_veth(name)  # only a veth: the peer in the container's netns goes with it


def _state_dir_path(facility: str, path: str) -> None:
    from osvirt.container import runtime  # ROOT/ID, ID as runc checks it
    runtime.check_state_dir(facility, path)


def _remove_state_dir(path: str) -> bool:
    from osvirt.container import runtime
    return runtime.remove_state_dir(path)  # only a directory of Container's own files


def _sysv_row(table: str, ident: int) -> dict[str, int] | None:
    """The /proc/sysvipc/`table` (msg, sem, shm) row of id `ident` as {column: int}, or None."""
    with open(f"/proc/sysvipc/{table}") as f:
        header = f.readline().split()
        for line in f:
            row = dict(zip(header, map(int, line.split())))
            if row[header[1]] == ident:  # the id column: msqid, semid, shmid
                return row
    return None


def _sysv_remover(table: str, facility: str, call: str) -> Callable[[str], bool]:
    """The remover of a SysV kind: sysv_ipc.`call`(id) once /proc/sysvipc/`table` shows it is ours."""
    def remove(name: str) -> bool:
        ident, key, ctime = _sysv_fields(facility, name)
        row = _sysv_row(table, ident)
        if row is None or (row["key"], row["ctime"]) != (key, ctime):
            return False  # gone, and the id may name another object now
        _owned(f"{facility}(id {ident})", row["cuid"])
        import sysv_ipc
        getattr(sysv_ipc, call)(ident)
        return True
    return remove


class Kind(NamedTuple):
    """A kind of object: what it is, the call that makes it, its name check, its remover."""
    what: str
    facility: str
    check: Callable[[str, str], object]  # check(facility, name): ValueError for a name not osvirt's
    remove: Callable[[str], bool]  # remove(name): True when removed, False when there was nothing

KINDS = {
    "shm": Kind("POSIX shared memory", "shm_open", _posix_name, _remove_shm),
    "mqueue": Kind("POSIX message queue", "mq_open", _posix_name, _remove_mqueue),
    "sem": Kind("POSIX named semaphore", "sem_open", _posix_name, _remove_sem),
    "dir": Kind("directory", "mkdir", _temp_path, _remove_dir),
    "swap": Kind("swap file", "swapon", _temp_path, _remove_swap),
    "file": Kind("file written before a rename", "open", _beside_path, _remove_file),
    "cgroup": Kind("cgroup", "mkdir", _cgroup_path, _remove_cgroup),
    "veth": Kind("veth pair", "netlink RTM_NEWLINK", _veth_name, _remove_veth),
    "state-dir": Kind("container state directory", "osvirt-runtime run", _state_dir_path, _remove_state_dir),
    "sysv-msg": Kind("SysV message queue", "msgget", _sysv_fields,
                     _sysv_remover("msg", "msgget", "remove_message_queue")),
    "sysv-sem": Kind("SysV semaphore set", "semget", _sysv_fields,
                     _sysv_remover("sem", "semget", "remove_semaphore")),
    "sysv-shm": Kind("SysV shared memory segment", "shmget", _sysv_fields,
                     _sysv_remover("shm", "shmget", "remove_shared_memory")),
}
_SYSV_TABLES = {"sysv-msg": "msg", "sysv-sem": "sem", "sysv-shm": "shm"}


def _line(op: str, kind: str, name: str) -> bytes:
    """The protocol: one line `+kind name` (register) or `-kind name` (unregister). The name
    goes in the file system's encoding (a path's undecodable bytes as they were), its
    backslashes and newlines escaped (a path may hold a newline: it must not end the line)."""
    if kind not in KINDS:
        raise ValueError(f"resource tracker: unknown kind {kind!r} (known: {', '.join(KINDS)})")
    if not isinstance(name, str):
        raise TypeError(f"resource tracker: name must be str, not {type(name).__name__}")
    KINDS[kind].check(KINDS[kind].facility, name)
    try:
        line = f"{op}{kind} ".encode() + os.fsencode(name.replace("\\", "\\\\").replace("\n", "\\n")) + b"\n"
    except UnicodeEncodeError as e:
        raise ValueError(f"{KINDS[kind].facility}: {name!r} is not a path of this file system's encoding: {e}") \
            from None
    if len(line) > _LINE_MAX:
        raise ValueError(f"resource tracker: name of {len(name)} characters is too long")
    return line


# -- the client side -----------------------------------------------------------------------
_fd = -1  # the write end of the pipe to this process's tracker, once started
_lock = threading.Lock()


def _new_lock() -> None:
    global _lock
    _lock = threading.Lock()  # a thread that held it at fork does not exist in the child


os.register_at_fork(after_in_child=_new_lock)


def _start() -> int:
    """Start a tracker; the write end of its pipe."""
    import subprocess  # once a process: its first registration starts the tracker
    r, w = os.pipe()  # O_CLOEXEC: a program a client execs does not keep the tracker alive
    try:
        # sh starts the tracker in the background and exits at once (a double fork): the tracker
        # is nobody's child, so it is no caller's zombie nor in any list of its children. A new
        # session: a Ctrl-C at the terminal reaches the clients, not it. It runs in the
        # directory holding this osvirt package, which `-c` puts first on sys.path.
        subprocess.run(["/bin/sh", "-c", '"$@" &', "sh", sys.executable, "-c",
                        "import sys; from osvirt.tracker import main; main(int(sys.argv[1]))", str(r)],
                       pass_fds=(r,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), start_new_session=True)
    except BaseException:
        os.close(w)
        raise
    finally:
        os.close(r)
    return w


def _send(line: bytes) -> None:
    global _fd
    with _lock:
        if _fd < 0:
            _fd = _start()
        try:
            os.write(_fd, line)
        except BrokenPipeError:  # the tracker was killed: a new one tracks what is registered from now on
            os.close(_fd)
            _fd = -1  # should the start fail, the next call tries again
            _fd = _start()
            os.write(_fd, line)


def register(kind: str, name: str) -> None:
    """Have the tracker remove `name`, an object of `kind` (a key of KINDS), should every
    process connected to it die first. The first call starts the tracker."""
    _send(_line("+", kind, name))


def unregister(kind: str, name: str) -> None:
    """`name` was removed by its owner: the tracker forgets it."""
    _send(_line("-", kind, name))


@contextlib.contextmanager
def tracked(kind: str, name: str) -> Iterator[None]:
    """Register `name`, then run the block that creates it; unregistered again if the block fails.

    Registered first, so that there is no moment in which the object exists
    and a SIGKILL would leave it; a registration of nothing is harmless.
    """
    register(kind, name)
    try:
        yield
    except BaseException:
        unregister(kind, name)
        raise


def register_sysv(kind: str, ident: int) -> str:
    """Register the SysV object of `kind` with id `ident`, just made; the name to unregister it by.

    The kernel picks the id, so this comes right after the creation. The
    name holds the key and creation time /proc/sysvipc shows now, so that the
    tracker never removes a later object given the same id.
    """
    row = _sysv_row(_SYSV_TABLES[kind], ident)
    if row is None:
        raise ValueError(f"{KINDS[kind].facility}: no id {ident} in /proc/sysvipc/{_SYSV_TABLES[kind]}")
    name = f"id={ident},key={row['key']},ctime={row['ctime']}"
    register(kind, name)
    return name


_O = TypeVar("_O")


def make_sysv(kind: str, make: Callable[[], _O], ident: Callable[[_O], int]) -> tuple[_O, str]:
    """`make()` a SysV object of `kind` and register it, SIGINT and SIGTERM held off in
    between; the object, and the name to unregister it by.

    Only its id reaches an IPC_PRIVATE object: a Ctrl-C landing between its creation
    and its registration would leave it for good (the bench's Ctrl-C test caught a
    SysV queue so, once in three CI runs). Held off, the signal comes once both are
    done, and the tracker removes the object if the process then dies of it.
    """
    from osvirt.process.spawn import signals_deferred  # osvirt.process's modules import this one
    with signals_deferred():
        made = make()
        return made, register_sysv(kind, ident(made))


# -- the tracker process -------------------------------------------------------------------
def _say(text: str) -> None:
    try:
        os.write(2, f"osvirt resource tracker (pid {os.getpid()}): {text}\n".encode(errors="replace"))
    except OSError:
        pass  # the clients' stderr is gone (its reader stopped reading): the removals go on


def _parse(line: bytes) -> tuple[str, str, str]:
    """(op, kind, name) of a protocol line, checked as the client checks it; ValueError if not."""
    text = os.fsdecode(line.rstrip(b"\n"))
    op, (kind, _, escaped) = text[:1], text[1:].partition(" ")
    name = _ESCAPE.sub(lambda m: "\n" if m[1] == "n" else m[1], escaped)
    if op not in ("+", "-"):
        raise ValueError(f"not a protocol line: {text!r}")
    _line(op, kind, name)
    return op, kind, name


def _take(registered: dict[tuple[str, str], None], line: bytes) -> None:
    """Apply one protocol line to `registered`; a line that is not one is refused, on stderr."""
    try:
        op, kind, name = _parse(line)
    except ValueError as e:
        _say(f"refused: {e}")
        return
    if op == "+":
        registered[kind, name] = None
    else:
        registered.pop((kind, name), None)


def main(fd: int) -> None:
    """Track what the clients on pipe `fd` register; at EOF remove what is left, and exit.

    A registration is one write into the pipe, and a write that finds the
    tracker blocked in read() pays for waking it: 11 us here against 4.3 us for
    one that wakes nobody (median of 1,000 writes 0.5 ms apart, this 2-CPU VM).
    Nothing needs a line read at once, only the EOF, so the tracker reads in
    batches: having read, it sleeps _BATCH_S before it reads again, and the
    lines written meanwhile wake nobody (the pipe is enlarged, so that they
    seldom fill it; should they, the writer waits for the next read).
    """
    signal.pthread_sigmask(signal.SIG_SETMASK, ())  # a client may start it with SIGINT and SIGTERM blocked
    with contextlib.suppress(OSError):  # a smaller pipe-max-size, or the user's pipe pages used up: 64 KiB
        import fcntl
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
    registered: dict[tuple[str, str], None] = {}  # (kind, name) in order of registration (a dict is an ordered set)
    pending = b""
    while chunk := os.read(fd, _PIPE_BYTES):  # blocks while the pipe is empty; b"": every client is gone
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            _take(registered, line)
        time.sleep(_BATCH_S)
    os.close(fd)
    if pending:  # a last line without its newline: taken as any other (each client line is one atomic write)
        _take(registered, pending)
    # Newest first: what was made inside a directory goes before the directory.
    for kind, name in reversed(registered):
        what = KINDS[kind].what
        try:
            if KINDS[kind].remove(name):
                _say(f"removed {what} {name}: the processes that registered it died without removing it")
        except Exception as e:  # one object refused or failing must not keep the others
            _say(f"did not remove {what} {name}: {type(e).__name__}: {e}")
