"""Queued signals: `sigqueue` sends a value, `sigtimedwait` receives it.

A standard signal (1..31) is one bit in the pending mask: while it is
blocked, a second one sent is lost, however many are sent. A real-time
signal (SIGRTMIN..SIGRTMAX) is queued: each one sent is kept, in order, with
its si_value and the sender's pid, up to RLIMIT_SIGPENDING per user (beyond
it sigqueue fails with EAGAIN). The stdlib can neither send a value (os.kill
has none) nor read one (signal.struct_siginfo has no si_value).

Receive synchronously: keep the signals blocked (`blocked`) and accept them
with `sigtimedwait`, so no handler runs and nothing is lost to Python's own
handler, which records only that a signal came, not how many times.
"""
import contextlib
import operator
import signal
import time
import typing
from collections.abc import Iterable, Iterator
from typing import overload

from osvirt.ipc import _native

__all__ = ["QueuedSignal", "SI_QUEUE", "SI_USER", "sigqueue", "sigtimedwait", "accept_pending", "blocked"]

SI_QUEUE: int = _native.SI_QUEUE  # si_code of a signal sent by sigqueue
SI_USER = _native.SI_USER    # si_code of a signal sent by kill

_INT_MIN, _INT_MAX = -2**31, 2**31 - 1
# Fixed for the life of the process; signal.valid_signals() costs ~65 µs a call.
_VALID_SIGNALS: frozenset[int] = frozenset(signal.valid_signals())
# Signal s is bit s - 1 of the mask C takes (Linux numbers them 1..64).
_SIGNAL_BIT: dict[int, int] = {signo: 1 << (signo - 1) for signo in _VALID_SIGNALS}
# Each valid number as a plain int, for the C call, which takes nothing else
# (signal.SIGRTMIN is a signal.Signals, which finds its number here by hash).
_SIGNO: dict[int, int] = {signo: int(signo) for signo in _VALID_SIGNALS}
# Types the fast paths take as they are. Others go through operator.index: a
# float such as 34.0 hashes like 34 and would otherwise pass a lookup.
_PLAIN_INTS = (int, signal.Signals)
_SETS = (set, frozenset)
_new_tuple = tuple.__new__
_sigqueue, _sigtimedwait = _native.sigqueue, _native.sigtimedwait  # module globals: one lookup each


class QueuedSignal(typing.NamedTuple):
    """One accepted signal, as the kernel's siginfo_t described it.

    A named tuple: made ~8x faster than a dataclass instance, which was the
    largest single cost of accepting a signal.
    """
    signo: int
    code: int    # SI_QUEUE, SI_USER, ...
    value: int   # si_value.sival_int (meaningful when code is SI_QUEUE)
    pid: int     # the sender
    uid: int     # the sender's real uid


def _index(facility: str, what: str, x: typing.SupportsIndex) -> int:
    try:
        return operator.index(x)
    except TypeError:
        raise TypeError(f"{facility}: {what} must be an int, not {x!r}") from None


def _signo(facility: str, signo: typing.SupportsIndex) -> int:
    signo = _index(facility, "a signal number", signo)
    if signo not in _VALID_SIGNALS:
        raise ValueError(f"{facility}: signal {signo} is not a valid signal number "
                         f"(1..{signal.NSIG - 1}, without the C library's reserved ones)")
    return signo


def _signal_set(facility: str, signals: Iterable[typing.SupportsIndex]) -> set[int]:
    if isinstance(signals, int):
        raise TypeError(f"{facility}: signals must be a collection of signal numbers, not one int")
    chosen = {_signo(facility, s) for s in signals}
    if not chosen:
        raise ValueError(f"{facility}: the set of signals is empty")
    return chosen


def _signal_mask(facility: str, signals: Iterable[typing.SupportsIndex]) -> int:
    """`signals` as the mask osv_sigtimedwait takes, checked as _signal_set checks them."""
    if type(signals) in _SETS:  # the usual {signo}: plain ints, looked up
        mask = 0
        for signo in signals:
            if type(signo) not in _PLAIN_INTS or signo not in _SIGNAL_BIT:
                break
            mask |= _SIGNAL_BIT[signo]
        else:
            if mask:
                return mask
    mask = 0  # anything else: the full checks, which raise on a bad one
    for signo in _signal_set(facility, signals):
        mask |= _SIGNAL_BIT[signo]
    return mask


# Valid positional calls are made in C (osvirt.ipc._native.checked_sigqueue); this takes the others.
@_native.checked_sigqueue
def sigqueue(pid: int, signo: int, value: int = 0) -> None:
    """Send `signo` to process `pid` with the int `value` (si_value.sival_int)."""
    if not (type(pid) is int and 1 <= pid <= _INT_MAX and type(signo) in _PLAIN_INTS
            and (number := _SIGNO.get(signo)) is not None and type(value) is int
            and _INT_MIN <= value <= _INT_MAX):
        pid, number, value = _sigqueue_arguments(pid, signo, value)
    try:
        _sigqueue(pid, number, value)
    except OSError as e:
        assert e.errno is not None  # set by every failed system call
        raise _native.sigqueue_error(e.errno, pid, number, value) from None


def _sigqueue_arguments(pid: int, signo: int, value: int) -> tuple[int, int, int]:
    """The checks of sigqueue's arguments, for those its fast test did not pass."""
    pid, value = _index("sigqueue", "pid", pid), _index("sigqueue", "value", value)
    signo = _signo("sigqueue", signo)
    if not 1 <= pid <= _INT_MAX:
        raise ValueError(f"sigqueue: pid must be in 1..{_INT_MAX}, not {pid}")
    if not _INT_MIN <= value <= _INT_MAX:
        raise ValueError(f"sigqueue: value {value} does not fit in a C int ({_INT_MIN}..{_INT_MAX})")
    return pid, signo, value


@overload
def sigtimedwait(signals: Iterable[int], timeout_s: None = None) -> QueuedSignal: ...
@overload
def sigtimedwait(signals: Iterable[int], timeout_s: float) -> QueuedSignal | None: ...
# Untimed calls on a set of valid signals are made in C (osvirt.ipc._native.checked_sigtimedwait);
# this takes the others.
@_native.checked_sigtimedwait(QueuedSignal)
def sigtimedwait(signals: Iterable[int], timeout_s: float | None = None) -> QueuedSignal | None:
    """Accept one pending signal of `signals`; a QueuedSignal, or None after `timeout_s`.

    The signals must be blocked in the calling thread (see `blocked`), or the
    kernel delivers them to their handler instead. `timeout_s=None` waits
    forever (sigwaitinfo), 0 only polls. A signal with a Python handler (such
    as SIGINT's KeyboardInterrupt) interrupts the wait and its handler runs.
    """
    mask = _signal_mask("sigtimedwait", signals)
    if timeout_s is not None:
        if timeout_s < 0:
            raise ValueError(f"sigtimedwait: timeout_s must be >= 0, not {timeout_s}")
        deadline = time.monotonic() + timeout_s
    while True:
        timeout_ns = -1 if timeout_s is None else max(0, int((deadline - time.monotonic()) * 1e9))
        try:
            accepted = _sigtimedwait(mask, timeout_ns)
        except InterruptedError:  # EINTR: a handled signal came; Python runs its handler here
            continue
        except OSError as e:
            assert e.errno is not None
            raise _native.sigtimedwait_error(e.errno, timeout_ns) from None
        return None if accepted is None else _new_tuple(QueuedSignal, accepted)


def accept_pending(signals: Iterable[int]) -> list[QueuedSignal]:
    """Accept every pending signal of `signals` (blocked), in the kernel's order: a list of QueuedSignal.

    A standard signal comes out once however often it was sent; real-time
    signals come out one per sigqueue, lowest number first, in sending order.
    """
    accepted: list[QueuedSignal] = []
    while (queued := sigtimedwait(signals, 0)) is not None:
        accepted.append(queued)
    return accepted


@contextlib.contextmanager
def blocked(signals: Iterable[int]) -> Iterator[None]:
    """Block `signals` in this thread; on exit, discard those still pending, then restore the mask.

    Discarding (accepting and dropping) is deliberate: unblocking a pending
    SIGUSR1 or SIGRTMIN with its default action would kill the process.
    """
    chosen = _signal_set("pthread_sigmask", signals)
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, chosen)
    try:
        yield
    finally:
        newly = chosen - previous
        if newly:
            accept_pending(newly)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
