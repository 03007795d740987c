"""How a container's processes report to the process creating it: the step each is at, an error as one
JSON line on the sync pipe (or exec.fifo), and a fork() whose child reports what ends it."""
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from osvirt.errors import ContainerError

__all__ = ["Step", "error_report", "fork", "raise_report", "open_fds"]


class Step:
    """Where the child is, for the error report: `step.now = "mount /proc"`."""
    now = "start"


def error_report(step: str, e: BaseException) -> bytes:
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


def fork(run: Callable[[], int], report: int, closes: Sequence[int] = (), mask: Iterable[int] | None = None,
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
            os.write(report, error_report(Step.now, e))
    finally:
        os._exit(code)


def raise_report(report: Mapping[str, Any]) -> None:
    raise ContainerError(str(report.get("error")), report.get("errno"), str(report.get("message")))


def open_fds() -> list[int]:
    try:
        return [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        return list(range(3, 1024))
