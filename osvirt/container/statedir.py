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

__all__ = ["STATE_FILE", "EXEC_FIFO", "EXIT_FILE", "now", "start_time", "alive", "atomic_write", "open_pidfd",
           "remove_state_dir"]

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
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] == b"Z" or fields[0] == b"X":  # a zombie has exited: it runs nothing any more
        return None
    return int(fields[19])


def alive(pid: int | None, start: int | None) -> bool:
    return pid is not None and start is not None and start_time(pid) == start


def atomic_write(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


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
