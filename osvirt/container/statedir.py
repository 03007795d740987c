"""A container's state directory (runc's layout): the state file, exec.fifo, the exit status.

`create()` leaves the container's process blocked opening EXEC_FIFO for
writing; `start()`, from whichever process, opens it for reading (the
handshake: "0" once the process is there, then EOF at its exec, or the error
it wrote). A process is named for good by its pid and its start time
(`start_time`): a pid alone may be reused once it has exited.
"""
import json
import os
import time
from typing import Any

__all__ = ["STATE_FILE", "EXEC_FIFO", "EXIT_FILE", "now", "start_time", "alive", "atomic_write", "write_file",
           "open_pidfd", "remove_state_dir"]

STATE_FILE = "state.json"
EXEC_FIFO = "exec.fifo"
EXIT_FILE = "exit-status"


def now() -> str:
    """UTC now in RFC 3339 with microseconds ("2026-11-27T04:08:21.511547Z"), as runc's state's created.

    Through time, not datetime: importing datetime cost every osvirt-runtime create or run milliseconds.
    """
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns // 1000 % 10**6:06d}Z"


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks after boot): with the pid, names one process for good."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)  # one read: the kernel makes the whole line at once (~300 bytes)
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] == b"Z" or fields[0] == b"X":  # a zombie has exited: it runs nothing any more
        return None
    return int(fields[19])


def alive(pid: int | None, start: int | None) -> bool:
    return pid is not None and start is not None and start_time(pid) == start


def atomic_write(path: str, data: dict[str, Any]) -> None:
    write_file(f"{path}.{os.getpid()}.tmp", json.dumps(data).encode())
    os.replace(f"{path}.{os.getpid()}.tmp", path)


def write_file(path: str, data: bytes) -> None:
    """Create or truncate `path` (mode 0666 less the umask, as open(path, "w")) holding `data`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None


def remove_state_dir(path: str) -> None:
    """Remove a state directory, whatever fails (as rmtree with ignore_errors): its files, then itself.

    Container writes only files there; shutil (with bz2 and lzma, milliseconds to import on every
    osvirt-runtime run) only for a directory someone else put in it.
    """
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        try:
            os.unlink(os.path.join(path, name))
        except FileNotFoundError:
            pass
        except OSError:
            import shutil
            shutil.rmtree(path, ignore_errors=True)
            return
    try:
        os.rmdir(path)
    except OSError:
        pass
