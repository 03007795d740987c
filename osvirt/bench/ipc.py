"""IPC primitives: pipes, signals, POSIX and SysV message queues (osvirt.ipc)."""
from __future__ import annotations

import contextlib
import functools
import multiprocessing
import multiprocessing.connection
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from types import FrameType

import posix_ipc

from osvirt.bench import _native
from osvirt.bench.harness import Batch, Primitive, rig, time_ops
from osvirt.errors import OsvirtError
from osvirt.ipc import PosixMessageQueue, SysVMessageQueue, blocked, sigqueue, sigtimedwait
from osvirt.ipc import _native as _ipc_native
from osvirt.process import Children

__all__ = ["PRIMITIVES"]

CHUNK = 64 * 1024  # a pipe's default capacity: one write fills it


def _serve_pipes(serve: Callable[[int, int], None], rfd: int, wfd: int, parent_ends: Iterable[int]) -> None:
    for fd in parent_ends:  # else the child would never see end of file
        os.close(fd)
    serve(rfd, wfd)


@contextlib.contextmanager
def _pipes_to_child(serve: Callable[[int, int], None]) -> Iterator[tuple[int, int]]:
    """Two pipes to a forked child running serve(rfd, wfd); yields this end's
    (wfd, rfd). Closing them gives the child end of file, and it exits."""
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    with Children() as kids:
        try:
            pid = kids.fork(_serve_pipes, serve, to_r, from_w, (to_w, from_r))
        finally:
            os.close(to_r)
            os.close(from_w)
        try:
            yield to_w, from_r
        finally:
            os.close(to_w)
            os.close(from_r)
        kids.wait(pid, timeout_s=5)


def _echo_python(rfd: int, wfd: int) -> None:
    while byte := os.read(rfd, 1):
        os.write(wfd, byte)


@rig
def _pipe_round_trip_python() -> Iterator[Callable[[], None]]:
    with _pipes_to_child(_echo_python) as (w, r):
        def round_trip() -> None:
            os.write(w, b"x")
            os.read(r, 1)
        yield round_trip


@rig
def _pipe_round_trip_c() -> Iterator[tuple[int, int]]:
    with _pipes_to_child(_native.pipe_echo) as ends:
        yield ends


@rig
def _connection_round_trip() -> Iterator[Callable[[], None]]:
    """multiprocessing.Pipe: the stdlib's message channel between processes."""
    here, there = multiprocessing.Pipe()
    with here, there, Children() as kids:
        kids.fork(_echo_connection, there)

        def round_trip() -> None:
            here.send_bytes(b"x")
            here.recv_bytes()
        yield round_trip


def _echo_connection(conn: multiprocessing.connection.Connection) -> None:
    while True:
        conn.send_bytes(conn.recv_bytes())


def _drain(rfd: int, wfd: int) -> None:
    """The reading end of both pipe-bw series: the same C loop, so that the two
    rows differ only in the writer."""
    _native.pipe_drain(rfd, CHUNK)


@rig
def _pipe_write_python() -> Iterator[Callable[[], int]]:
    with _pipes_to_child(_drain) as (w, _):
        chunk = bytes(CHUNK)
        yield lambda: os.write(w, chunk)


@rig
def _pipe_write_c() -> Iterator[tuple[int, bytes]]:
    with _pipes_to_child(_drain) as (w, _):
        yield w, bytes(CHUNK)


@rig
def _kill_self_python() -> Iterator[Batch]:
    """A Batch: os.kill(self, SIGUSR1) n times in the loop every Python series
    uses, then the check that the handler ran n times, once per batch as the C
    loop checks its count.

    The operation is os.kill itself (a partial, as the getppid row passes
    os.getppid), not a Python function around it: the handler is given the
    frame it interrupted, and a frame object made for a function that returns
    right after costs ~85 ns a signal that kill inline in a loop does not pay."""
    delivered: list[int] = []

    def handler(signo: int, frame: FrameType | None) -> None:
        delivered.append(signo)
    old = signal.signal(signal.SIGUSR1, handler)
    try:
        kill_self = functools.partial(os.kill, os.getpid(), signal.SIGUSR1)

        def batch(n: int) -> int:
            delivered.clear()
            elapsed = time_ops(kill_self, n)
            if len(delivered) != n:  # never a silent miss
                raise OsvirtError(f"os.kill: {n} SIGUSR1 sent to self, the handler ran {len(delivered)} times")
            return elapsed
        yield Batch(batch)
    finally:
        signal.signal(signal.SIGUSR1, old)


@rig
def _sigqueue_self_python() -> Iterator[Callable[[], None]]:
    signo, pid = signal.SIGRTMIN, os.getpid()
    signals = frozenset({signo})  # made once, as the floor's mask is
    with blocked(signals):
        def sigqueue_wait() -> None:
            sigqueue(pid, signo, 7)
            if sigtimedwait(signals).value != 7:
                raise OsvirtError("sigtimedwait: the value sent with sigqueue did not come back")
        yield sigqueue_wait


@rig
def _sigqueue_self_bare() -> Iterator[Callable[[], None]]:
    signo, pid = int(signal.SIGRTMIN), os.getpid()
    mask, queue, wait = 1 << (signo - 1), _ipc_native.sigqueue, _ipc_native.sigtimedwait
    with blocked({signo}):
        def sigqueue_wait() -> None:
            queue(pid, signo, 7)
            accepted = wait(mask, -1)  # (signo, code, value, pid, uid); None only after a timeout
            if accepted is None or accepted[2] != 7:  # checked, as the Python path does
                raise OsvirtError("sigtimedwait: the value sent with sigqueue did not come back")
        yield sigqueue_wait


@rig
def _sigqueue_self_c() -> Iterator[tuple[int]]:
    with blocked({signal.SIGRTMIN}):
        yield (signal.SIGRTMIN,)


@contextlib.contextmanager
def _posix_queues() -> Iterator[tuple[PosixMessageQueue, PosixMessageQueue]]:
    """Two osvirt.ipc POSIX message queues, there and back."""
    with PosixMessageQueue(max_messages=1, max_message_size=64) as there, \
            PosixMessageQueue(max_messages=1, max_message_size=64) as back:
        yield there, back


def _echo_posix(there: PosixMessageQueue, back: PosixMessageQueue) -> None:
    while True:
        back.send(there.receive()[0])


@rig
def _mq_round_trip_python() -> Iterator[Callable[[], None]]:
    with _posix_queues() as (there, back), Children() as kids:
        kids.fork(_echo_posix, there, back)

        def round_trip() -> None:
            there.send(b"x")
            back.receive()
        yield round_trip


@contextlib.contextmanager
def _posix_descriptors() -> Iterator[tuple[int, int, int]]:
    """Two POSIX queues as bare mqd_t descriptors (posix_ipc opens osvirt's queues
    by name): (there, back, max message size)."""
    with _posix_queues() as queues, contextlib.ExitStack() as descriptors:
        there, back = (posix_ipc.MessageQueue(q.name) for q in queues)
        for q in (there, back):
            descriptors.callback(q.close)
        yield there.mqd, back.mqd, there.max_message_size


@rig
def _mq_round_trip_c() -> Iterator[tuple[int, int, bytearray]]:
    with _posix_descriptors() as (there, back, size), Children() as kids:
        kids.fork(_native.mq_echo, there, back, size)
        yield there, back, bytearray(size)


def _echo_posix_bare(there: int, back: int, size: int) -> None:
    r, buf = _ipc_native.mq_receiver(there, size)
    receive, send, unpack = _ipc_native.raw_mq_receive, _ipc_native.raw_mq_send, _ipc_native.unpack
    while True:
        n = receive(r)
        send(back, unpack(buf, n), n, 0, -1)


@rig
def _mq_round_trip_bare() -> Iterator[Callable[[], None]]:
    with _posix_descriptors() as (there, back, size), Children() as kids:
        kids.fork(_echo_posix_bare, there, back, size)
        r, buf = _ipc_native.mq_receiver(back, size)
        receive, send, unpack = _ipc_native.raw_mq_receive, _ipc_native.raw_mq_send, _ipc_native.unpack

        def round_trip() -> None:
            send(there, b"x", 1, 0, -1)
            unpack(buf, receive(r))
        yield round_trip


@rig
def _mp_queue_round_trip() -> Iterator[Callable[[], None]]:
    """multiprocessing.Queue: pickled, sent by a feeder thread over a pipe."""
    there: multiprocessing.Queue[bytes] = multiprocessing.Queue()
    back: multiprocessing.Queue[bytes] = multiprocessing.Queue()
    try:
        with Children() as kids:
            kids.fork(_echo_mp_queue, there, back)

            def round_trip() -> None:
                there.put(b"x")
                back.get()
            yield round_trip
    finally:
        for q in (there, back):
            q.close()
            q.join_thread()


def _echo_mp_queue(there: multiprocessing.Queue[bytes], back: multiprocessing.Queue[bytes]) -> None:
    while True:
        back.put(there.get())


def _echo_sysv(q: SysVMessageQueue) -> None:
    while True:
        q.send(q.receive(type=1)[0], type=2)


@rig
def _msg_round_trip_python() -> Iterator[Callable[[], None]]:
    with SysVMessageQueue() as q, Children() as kids:
        kids.fork(_echo_sysv, q)

        def round_trip() -> None:
            q.send(b"x", type=1)
            q.receive(type=2)
        yield round_trip


def _echo_sysv_bare(msqid: int) -> None:
    m, text = _ipc_native.msg_buffer(msqid, 64)
    receive, send, unpack = _ipc_native.raw_msgrcv, _ipc_native.raw_msgsnd, _ipc_native.unpack
    while True:
        n = receive(m, 1, 0)
        send(m, 2, unpack(text, n), n, 0)


@rig
def _msg_round_trip_bare() -> Iterator[Callable[[], None]]:
    with SysVMessageQueue() as q, Children() as kids:
        kids.fork(_echo_sysv_bare, q.id)
        m, text = _ipc_native.msg_buffer(q.id, 64)
        receive, send, unpack = _ipc_native.raw_msgrcv, _ipc_native.raw_msgsnd, _ipc_native.unpack

        def round_trip() -> None:
            send(m, 1, b"x", 1, 0)
            unpack(text, receive(m, 2, 0))
        yield round_trip


@rig
def _msg_round_trip_c() -> Iterator[tuple[int]]:
    with SysVMessageQueue() as q, Children() as kids:
        kids.fork(_native.msg_echo, q.id)
        yield (q.id,)


_MQ_NOTE = ("four library calls a round trip, two in each process, and the same system calls in all three "
            "(strace -c: two sends and two receives). osvirt's send and receive make theirs in C with "
            "their checks (osvirt._quickcalls.checked, the GIL released for the wait): no Python frame "
            "and no cffi argument conversion, which puts them under the bare cffi floor. floor/C: each "
            "side's interpreter work sits between the context switches, and costs more than it does "
            "alone. With each side either C or Python, one CPU, batches interleaved (POSIX queues, "
            "medians): C both sides 10.0 us; a bare-cffi writer with a C echo 11.6, a C writer with "
            "a bare-cffi echo 12.0, both bare-cffi 13.6 (the floor): ~1.6-2 us a Python side, for two "
            "calls and a loop's iteration that take ~0.3 us in a loop of their own")
_PIPE_RTT_NOTE = ("same system calls in both (strace -c: two writes, two reads a round trip); os.write + "
                  "os.read are the bare calls, so Python is its own floor. Python/C: each side's "
                  "interpreter work sits between the context switches and costs more than it does "
                  "alone. With each side either C or Python, pinned, batches interleaved: C both sides "
                  "6.67-7.04 us (min 6.13), a Python writer with a C echo 7.04-8.34 (min 6.53), a C "
                  "writer with a Python echo 7.83-8.12 (min 6.69-6.78), Python both sides 8.04-9.47 (min "
                  "7.20-7.40): ~0.4-0.6 us a Python side (min), for a call of os.write and os.read whose "
                  "Python part (two builtin calls, no system call) takes ~0.11 us alone")
_PIPE_BW = "one 64 KiB os.write to a pipe that another process (a C loop) drains"
_PIPE_RTT = "1-byte round trip through two pipes to a process that echoes it: os.write + os.read"

PRIMITIVES = [
    Primitive("pipe-rtt-pinned", _PIPE_RTT + ", both on one CPU",
              python=_pipe_round_trip_python, c="pipe_round_trip", c_args=_pipe_round_trip_c,
              peer=("multiprocessing.Pipe", _connection_round_trip), pin=True, note=_PIPE_RTT_NOTE),
    Primitive("pipe-rtt", _PIPE_RTT + ", unpinned",
              python=_pipe_round_trip_python, c="pipe_round_trip", c_args=_pipe_round_trip_c,
              peer=("multiprocessing.Pipe", _connection_round_trip),
              note="unpinned, the scheduler places the two processes: a wake-up on the other CPU "
                   "costs several times one on the same CPU, so this row depends on where they land "
                   "(Python/C 1.23, 4.5 and 1.32 in three runs here); pinned, see pipe-rtt-pinned"),
    Primitive("pipe-bw-pinned", _PIPE_BW + ", both on one CPU",
              python=_pipe_write_python, c="pipe_write", c_args=_pipe_write_c, bytes_per_op=CHUNK,
              pin=True,
              note="same system calls in both (strace -c: one 64 KiB write an operation, the C reader's "
                   "reads); os.write is the bare call, so Python is its own floor, and Python/C "
                   "(1.0-1.15 in six runs) is the call's ~0.1 us and the switch to the reader and "
                   "back, with the interpreter's memory to bring back, next to ~24 us of copying"),
    Primitive("pipe-bw", _PIPE_BW + ", unpinned",
              python=_pipe_write_python, c="pipe_write", c_args=_pipe_write_c, bytes_per_op=CHUNK,
              note="unpinned, whether the reader drains on the other CPU while the writer writes, "
                   "or each waits for the other, changes from run to run (15 to 90 µs a write here, "
                   "C or Python alike): compare the pinned row"),
    Primitive("signal-self", "os.kill(os.getpid(), SIGUSR1), its handler run",
              python=_kill_self_python, c="kill_self", c_args=(signal.SIGUSR1,),
              note="CPython's own per-signal work is most of the difference: its C handler only "
                   "flags the signal, then os.kill scans the flags, builds the (signo, frame) "
                   "arguments and calls the handler; what the handler does costs little"),
    Primitive("rt-signal", "osvirt.ipc.sigqueue(self, SIGRTMIN, value), then sigtimedwait accepts it "
                           "(blocked: no handler runs) and the value is checked",
              python=_sigqueue_self_python, c="sigqueue_self", c_args=_sigqueue_self_c,
              floor=("osvirt._quickcalls sigqueue + sigtimedwait", _sigqueue_self_bare),
              note="same system calls in all three (strace -c: sigqueue's getpid and getuid, "
                   "rt_sigqueueinfo, rt_sigtimedwait). osvirt's two calls are made in C with their "
                   "checks (osvirt._quickcalls.checked: no Python frame, a call 3.11 specializes); over "
                   "the floor (in one process, batches interleaved: 1.03-1.06x; in the bench's workers, "
                   "one process a series, 0.97-1.20 in eight runs at load 1.5-3) are the signal set "
                   "walked in C, QueuedSignal made and .value read (~27 ns against 15 for an index). "
                   "floor/C (1.2-1.5 in runs here): in one process, interleaved, the floor costs "
                   "0.5-0.9 us more than the C loop, and its Python alone (the same function with its "
                   "two calls made to builtins that make no system call) 0.41-0.49 us: the rest is the "
                   "two calls' arguments and answer, and the system calls slowed by the interpreter's "
                   "work between them"),
    # Message queues are pinned: unpinned, a round trip costs 6 or 50 us
    # depending on where the scheduler puts the echo (see pipe-rtt).
    Primitive("posix-mq", "1-byte round trip through two POSIX message queues to an echoing "
                          "process on the same CPU: osvirt.ipc.PosixMessageQueue send + receive",
              python=_mq_round_trip_python, c="mq_round_trip", c_args=_mq_round_trip_c,
              floor=("the bare cffi mq_send + mq_receive, both sides", _mq_round_trip_bare),
              peer=("multiprocessing.Queue", _mp_queue_round_trip), pin=True,
              note=_MQ_NOTE),
    Primitive("sysv-mq", "1-byte round trip through a SysV message queue (type 1 there, type 2 "
                         "back) to an echoing process on the same CPU: osvirt.ipc.SysVMessageQueue send + receive",
              python=_msg_round_trip_python, c="msg_round_trip", c_args=_msg_round_trip_c, pin=True,
              floor=("the bare cffi msgsnd + msgrcv, both sides", _msg_round_trip_bare),
              note=_MQ_NOTE),
]
