"""osvirt's init, PID 1 of a container (Container's `init=True`, like `docker run --init`).

The container process, already a forked Python process, forks the program
and then only waits: every signal it gets (kill(), a Ctrl-C forwarded) goes
to the program, every orphan reparented to it is reaped, and it exits with
the program's status once the program exits, which ends the namespace. Why:
a program written without PID 1 in mind, made PID 1, gets no default action
for the signals it does not handle (the kernel protects a namespace's init:
SIGTERM and SIGINT do nothing), and never waits for orphans, whose zombies
pile up and count against pids.max. Forking the running process costs a
fork, not a new interpreter or a binary to ship.
"""
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from osvirt.container.report import Step, fork

__all__ = ["INITS", "run_init", "shell_code", "run_target"]

INITS = frozenset({"init", "tini", "docker-init", "dumb-init", "catatonit", "systemd", "s6-svscan", "runit-init"})
"""Programs written to be PID 1 (they reap orphans and handle signals): Container.run runs them without
osvirt's init."""


def run_init(program: Callable[[], NoReturn], fifo: int, exit_w: int) -> NoReturn:
    """PID 1 as osvirt's init: fork the program, forward signals to it, reap everything, exit with it."""
    every = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, every)
    Step.now = "fork the program (osvirt's init)"
    child = fork(program, fifo, (exit_w,), previous, failed=127)
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
                os._exit(shell_code(status))
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, info.si_signo)


def shell_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def run_target(target: Callable[..., object], args: tuple[object, ...]) -> int:
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
