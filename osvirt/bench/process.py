"""Process primitives: the null system call, process creation, a context switch."""
import os
import shutil
import signal
from collections.abc import Callable, Iterator

from osvirt.bench import _native
from osvirt.bench.harness import Primitive, rig
from osvirt.process import Children, fork
from osvirt.process import _native as _process_native

__all__ = ["PRIMITIVES"]


def _nothing() -> int:
    return 0


def _fork_exit_wait() -> None:
    os.waitpid(fork(_nothing), 0)


_DEFERRED = {signal.SIGINT, signal.SIGTERM}


def _bare_fork_exit_wait() -> None:
    """The kernel work of osvirt's fork, in bare calls: SIGINT and SIGTERM blocked around
    os.fork (no Ctrl-C before the pid is owned), the child's mask restored and
    prctl(PR_SET_PDEATHSIG) with the parent checked (it dies with its parent)."""
    parent = os.getpid()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    pid = os.fork()
    if pid == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _process_native.set_pdeathsig(signal.SIGKILL, parent)
        os._exit(0)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.waitpid(pid, 0)


@rig
def _posix_spawn_wait() -> Iterator[Callable[[], None]]:
    true = shutil.which("true") or "/bin/true"
    spawn, waitpid, argv = os.posix_spawn, os.waitpid, [true]
    environ: dict[str, str] = {}

    def spawn_wait() -> None:
        waitpid(spawn(true, argv, environ), 0)
    yield spawn_wait


def _yield_forever_python() -> None:
    while True:
        os.sched_yield()


@rig
def _yielding_partner_python() -> Iterator[Callable[[], None]]:
    """A second process on the same CPU that does nothing but sched_yield."""
    with Children() as kids:
        kids.fork(_yield_forever_python)
        yield os.sched_yield


@rig
def _yielding_partner_c() -> Iterator[tuple[()]]:
    with Children() as kids:
        kids.fork(_native.c_loop, "sched_yield", (), _native.MAX_N)  # until killed
        yield ()


PRIMITIVES = [
    Primitive("getppid", "null system call: os.getppid()", python=os.getppid, c="getppid"),
    Primitive(
        "fork", "fork, the child exits at once, the parent waits: osvirt.process.fork + os.waitpid",
        python=_fork_exit_wait, c="fork", floor=("os.fork, signal masks, prctl(PR_SET_PDEATHSIG), os.waitpid", _bare_fork_exit_wait),
        peer=("os.posix_spawn(true) + waitpid", _posix_spawn_wait),
        note="all three make the same kernel calls (strace -c; the C loop too: SIGINT and SIGTERM "
             "blocked across fork, the child's mask restored, PR_SET_PDEATHSIG and getppid), but "
             "the interpreter's own after-fork work in a Python child (getrandom, gettid). What "
             "floor/C (2-2.9 here) is made of is copy-on-write: after a fork, each page a process "
             "writes first faults and is copied, and Python writes many (reference counts). Per fork, "
             "the parent's minor faults: osvirt 77, the floor 64-66, C 2; the child's: 295, "
             "273-281, 18-19 (resource.getrusage, 400 forks, twice). osvirt's fork blocked and "
             "restored SIGINT/SIGTERM through a context manager until 104 faults a fork in the "
             "parent: its objects were ~20 more pages to copy; what remains over the floor "
             "(~12 pages, at ~3-4 us a fault) is its second Python frame and the child's "
             "exit handling; the row's Python/floor moves by +-0.1 between runs; to run a program use "
             "os.posix_spawn (or subprocess), whose child copies nothing and only loads the "
             "program; fork from Python only to run Python code in the child"),
    Primitive(
        "ctx-switch", "os.sched_yield() with a second process yielding on the same CPU: "
                      "a switch to it and back",
        python=_yielding_partner_python, c="sched_yield", c_args=_yielding_partner_c, pin=True,
        note="two context switches and two sched_yield calls per operation"),
]
