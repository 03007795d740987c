"""Children that never outlive their parent.

`fork()` runs a Python callable in a child that always leaves through
`os._exit`: it never unwinds into its parent's stack, whose `finally` blocks
would free objects the parent still owns. Each child asks the kernel for
PR_SET_PDEATHSIG, so it dies with its parent even when the parent is
SIGKILLed and no Python code runs. `Children` owns the children a caller
starts; leaving it kills whatever still runs and reaps everything, so no
zombie and no orphan is left.

`Children` keeps SIGINT and SIGTERM blocked (pthread_sigmask) from before
fork(2) until the new pid is registered: a Ctrl-C in that window stays
pending in the kernel and interrupts the caller only once the child is
owned, so close() kills it. The child restores the caller's mask before it
runs anything, and a spawned program starts with the caller's mask too.
(The mask is per thread: a SIGINT another thread takes in the window is
still handled by the main thread, possibly inside it.)
"""
import contextlib
import functools
import os
import select
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from osvirt._owned import Owned
from osvirt.process import _native

if TYPE_CHECKING:  # imported by spawn(), the one call that needs it
    import subprocess

__all__ = ["set_pdeathsig", "signals_deferred", "fork", "ready", "Children"]


def _signo(signo: int) -> int:
    signo = int(signo)
    if not 1 <= signo < signal.NSIG:
        raise ValueError(f"prctl(PR_SET_PDEATHSIG): signal {signo} not in 1..{signal.NSIG - 1}")
    return signo


def set_pdeathsig(signo: int = signal.SIGKILL, expected_parent: int | None = None) -> None:
    """Ask the kernel to send `signo` to this process when its parent dies.

    `expected_parent` (the parent's pid as seen before fork) closes the race
    in which the parent dies before the call: then ProcessLookupError.
    """
    _native.set_pdeathsig(_signo(signo), os.getppid() if expected_parent is None else expected_parent)


_DEFERRED = {signal.SIGINT, signal.SIGTERM}  # what a Ctrl-C or a kill(1) sends


@contextlib.contextmanager
def signals_deferred() -> Iterator[set[int | signal.Signals]]:
    """Block SIGINT and SIGTERM in this thread; yields the mask to restore,
    which the exit restores (a signal held pending is delivered then)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield previous
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _exec_setup(signo: int, parent: int, mask: set[int | signal.Signals]) -> None:
    """A spawned child's preexec_fn: PDEATHSIG, then the caller's signal mask back."""
    set_pdeathsig(signo, parent)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _child_exit_code(target: Callable[..., object], args: tuple[object, ...], signo: int, parent: int) -> int:
    try:
        set_pdeathsig(signo, parent)
        result = target(*args)
        return result if type(result) is int else 0
    except SystemExit as e:
        return e.code if type(e.code) is int else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BaseException:
        import traceback  # in the child, on its way out
        traceback.print_exc()
        return 1


def fork(target: Callable[..., object], *args: object, pdeathsig: int = signal.SIGKILL) -> int:
    """fork(2) a child that runs `target(*args)` and exits; returns its pid.

    The child's exit status is target's int result (0 for any other result),
    1 after an uncaught exception (its traceback goes to stderr).
    """
    return _fork(target, args, _signo(pdeathsig))


def _fork(target: Callable[..., object], args: tuple[object, ...], signo: int,
          own: Callable[[int], object] | None = None) -> int:
    """fork() with SIGINT and SIGTERM blocked until the parent has called `own(pid)`
    (no Ctrl-C between the two); the child restores the caller's mask first.

    Blocked and restored by hand, not by signals_deferred(): each object the parent
    touches after fork() while the child lives is a page the kernel copies, and the
    context manager's were ~20 of them a fork (minor faults, `osvirt bench fork`).
    """
    parent = os.getpid()
    # Unflushed output would be written twice: by the parent and by the child.
    sys.stdout.flush()
    sys.stderr.flush()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        pid = os.fork()
        if pid == 0:
            _child(target, args, signo, parent, mask)
        if own is not None:
            own(pid)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return pid


def _child(target: Callable[..., object], args: tuple[object, ...], signo: int, parent: int,
           mask: set[int | signal.Signals]) -> NoReturn:
    """The forked child: the caller's mask back, `target(*args)`, exit with its code."""
    code = 1
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        code = _child_exit_code(target, args, signo, parent)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)


def ready(ready_fd: int) -> None:
    """In a child started by `Children.fork_ready`: tell the parent it is ready."""
    os.write(ready_fd, b".")
    os.close(ready_fd)


class Children(Owned):
    """Owns the processes it starts: on close, kills and reaps those still running.

    >>> with Children() as kids:
    ...     pid = kids.fork(print, "hello from the child")
    ...     kids.wait(pid)
    0
    """

    def __init__(self) -> None:
        self._creator = os.getpid()
        self._pids: set[int] = set()
        self._popens: list[subprocess.Popen[Any]] = []

    def fork(self, target: Callable[..., object], *args: object, pdeathsig: int = signal.SIGKILL) -> int:
        """`fork()`, owned: see the module function."""
        return _fork(target, args, _signo(pdeathsig), own=self._pids.add)  # no Ctrl-C before it is owned

    def fork_ready(self, target: Callable[..., object], *args: object, timeout_s: float = 10.0,
                   pdeathsig: int = signal.SIGKILL) -> int:
        """Fork `target(*args, ready_fd)`; return its pid once it has called `ready(ready_fd)`.

        So the parent never races the child's set-up (a lock taken, a limit
        set). ChildProcessError if the child exits before it is ready;
        TimeoutError (the child still owned) if it is not ready after `timeout_s`.
        """
        if not 0 < timeout_s <= 3600:
            raise ValueError(f"fork: timeout_s must be in (0, 3600], not {timeout_s!r}")
        what = getattr(target, "__name__", repr(target))
        r, w = os.pipe()  # O_CLOEXEC: a program the child execs does not hold it
        try:
            pid = self.fork(target, *args, w, pdeathsig=pdeathsig)
        finally:
            os.close(w)  # the child's copy is the last write end: EOF once it exits
        try:
            if not select.select([r], [], [], timeout_s)[0]:
                raise TimeoutError(f"child {pid} ({what}) not ready after {timeout_s} s")
            if not os.read(r, 1):
                raise ChildProcessError(f"child {pid} ({what}) exited before it was ready")
        finally:
            os.close(r)
        return pid

    # popen_kwargs: any of subprocess.Popen's, whose types differ (Any) and make
    # its output bytes or str (Popen[Any]).
    def spawn(self, argv: Sequence[str | os.PathLike[str]], pdeathsig: int = signal.SIGKILL,
              **popen_kwargs: Any) -> "subprocess.Popen[Any]":
        """Start a program (fork + exec, an unrelated image) as subprocess.Popen, owned."""
        import subprocess
        signo = _signo(pdeathsig)
        with signals_deferred() as mask:  # no Ctrl-C between fork and owning the Popen
            popen_kwargs["preexec_fn"] = functools.partial(_exec_setup, signo, os.getpid(), mask)
            proc = subprocess.Popen(argv, **popen_kwargs)
            self._popens.append(proc)
        return proc

    @property
    def pids(self) -> list[int]:
        """The pids of the children not yet reaped."""
        return sorted(self._pids | {p.pid for p in self._popens if p.returncode is None})

    def wait(self, pid: int, timeout_s: float | None = None) -> int:
        """Reap forked child `pid`; its exit code, or -N when signal N killed it.

        With `timeout_s`, raises TimeoutError (the child still owned) if it is
        still running then.
        """
        if pid not in self._pids:
            raise ValueError(f"waitpid: {pid} is not a child owned here")
        if timeout_s is not None:
            if timeout_s < 0:
                raise ValueError(f"waitpid: timeout_s must be >= 0, not {timeout_s}")
            with os.fdopen(os.pidfd_open(pid), "rb", buffering=0) as pidfd:
                if not select.select([pidfd], [], [], timeout_s)[0]:
                    raise TimeoutError(f"waitpid: child {pid} still running after {timeout_s} s")
        _, status = os.waitpid(pid, 0)
        self._pids.discard(pid)
        return os.waitstatus_to_exitcode(status)

    def close(self) -> None:
        """SIGKILL every child still running and reap them all. Idempotent."""
        if not self._is_creator:  # a forked child holds a copy: not its to close
            return
        for pid in list(self._pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self._pids.discard(pid)
        for proc in self._popens:
            if proc.returncode is None:
                proc.kill()
            proc.wait()
        self._popens.clear()
