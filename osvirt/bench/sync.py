"""Synchronization primitives: osvirt.sync's locks, semaphore, condition and event, next to multiprocessing's."""
from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator
from typing import Any, ContextManager, Protocol

import posix_ipc

from osvirt import tracker
from osvirt._native import lib
from osvirt.bench import _native
from osvirt.bench.harness import Primitive, rig
from osvirt.errors import OsvirtError
from osvirt.naming import unique_name
from osvirt.process import Children
from osvirt.sync import Condition, Event, Lock, Mutex, RLock, Semaphore, SharedRegion
from osvirt.sync._native import LOCK_CLOCK

# The floors' blocking calls are timed, as osvirt's waits are (their 0.1 s
# slices): a deadline far enough never to pass.
_FOREVER_NS = 3600 * 10**9

__all__ = ["PRIMITIVES"]


class _Condition(Protocol):
    """What the round trip asks of a condition: osvirt's and multiprocessing's alike."""

    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: Any) -> Any: ...
    def wait(self, timeout: float | None = None) -> bool: ...
    def notify(self, n: int = 1) -> None: ...


class _Event(Protocol):
    def set(self) -> None: ...
    def clear(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


def _say_started_then(wfd: int, loop: Callable[..., object], *args: object) -> None:
    os.write(wfd, b"1")
    os.close(wfd)
    loop(*args)


def _start_partner(kids: Children, loop: Callable[..., object], *args: object) -> None:
    """Fork a child that runs loop(*args) until killed; return once it runs,
    so that the first batch is contended too."""
    r, w = os.pipe()
    try:
        kids.fork(_say_started_then, w, loop, *args)
        os.close(w)
        w = -1
        if os.read(r, 1) != b"1":
            raise OsvirtError("the partner process ended before it started its loop")
    finally:
        os.close(r)
        if w != -1:
            os.close(w)


def _lock_unlock_forever(lock: ContextManager[object]) -> None:
    while True:
        with lock:
            pass


def _lock_unlock(lock: ContextManager[object]) -> Callable[[], None]:
    def lock_unlock() -> None:
        with lock:
            pass
    return lock_unlock


@rig
def _mutex_python() -> Iterator[Callable[[], None]]:
    with contextlib.closing(Mutex()) as m:
        yield _lock_unlock(m)


@rig
def _mutex_bare() -> Iterator[Callable[[], None]]:
    """The uncontended lock's barest calls: pthread_mutex_trylock and unlock over cffi."""
    with contextlib.closing(Mutex()) as m:
        ptr, trylock, unlock = m._ptr, lib.osv_mutex_trylock, lib.osv_mutex_unlock

        def lock_unlock() -> None:
            trylock(ptr)
            unlock(ptr)
        yield lock_unlock


@rig
def _mutex_contended_bare() -> Iterator[Callable[[], None]]:
    with contextlib.closing(Mutex()) as m, Children() as kids:
        _start_partner(kids, _lock_unlock_forever, m)
        ptr, lock_for, unlock = m._ptr, lib.osv_mutex_lock_for, lib.osv_mutex_unlock

        def lock_unlock() -> None:
            lock_for(ptr, LOCK_CLOCK, _FOREVER_NS)
            unlock(ptr)
        yield lock_unlock


@rig
def _mutex_contended_python() -> Iterator[Callable[[], None]]:
    with contextlib.closing(Mutex()) as m, Children() as kids:
        _start_partner(kids, _lock_unlock_forever, m)
        yield _lock_unlock(m)


@rig
def _lock_python() -> Iterator[Callable[[], None]]:
    with contextlib.closing(Lock()) as lock:
        yield _lock_unlock(lock)


@rig
def _rlock_python() -> Iterator[Callable[[], None]]:
    with contextlib.closing(RLock()) as lock:
        yield _lock_unlock(lock)


@rig
def _mp_rlock() -> Iterator[Callable[[], None]]:
    """multiprocessing.RLock: a POSIX semaphore with an owner and a count kept beside it."""
    yield _lock_unlock(multiprocessing.RLock())


@rig
def _mp_lock() -> Iterator[Callable[[], None]]:
    """multiprocessing.Lock: a POSIX semaphore (not robust: a holder's death leaves it held)."""
    yield _lock_unlock(multiprocessing.Lock())


@rig
def _mp_lock_contended() -> Iterator[Callable[[], None]]:
    lock = multiprocessing.Lock()
    with Children() as kids:
        _start_partner(kids, _lock_unlock_forever, lock)
        yield _lock_unlock(lock)


@rig
def _shared_page() -> Iterator[tuple[_native.SharedPage]]:
    with _native.SharedPage() as page:
        yield (page,)


@rig
def _shared_page_contended() -> Iterator[tuple[_native.SharedPage]]:
    with _native.SharedPage() as page, Children() as kids:
        _start_partner(kids, _native.c_loop, "mutex_lock_unlock", (page,), _native.MAX_N)
        yield (page,)


@rig
def _semaphore_python() -> Iterator[Callable[[], None]]:
    with contextlib.closing(Semaphore(0)) as sem:
        def post_wait() -> None:
            sem.release()
            sem.acquire()
        yield post_wait


@rig
def _semaphore_bare() -> Iterator[Callable[[], None]]:
    with contextlib.closing(Semaphore(0)) as sem:
        ptr, post, trywait = sem._ptr, lib.osv_sem_post, lib.osv_sem_trywait

        def post_wait() -> None:
            post(ptr)
            trywait(ptr)
        yield post_wait


@rig
def _posix_ipc_semaphore() -> Iterator[Callable[[], None]]:
    name = "/" + unique_name()
    with tracker.tracked("sem", name):
        sem = posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=0o600, initial_value=0)
    try:
        def post_wait() -> None:
            sem.release()
            sem.acquire()
        yield post_wait
    finally:
        sem.unlink()
        tracker.unregister("sem", name)
        sem.close()


PING, STOP = 1, 2  # the turn word: 0 is the measuring side's turn


def _echo_turns(cond: _Condition, turn: memoryview) -> None:
    with cond:
        while True:
            while turn[0] == 0:
                cond.wait()
            if turn[0] == STOP:
                return
            turn[0] = 0
            cond.notify()


def _cond_round_trips(cond: _Condition) -> Iterator[Callable[[], None]]:
    """Fork the echo on `cond` (osvirt's or multiprocessing's: one protocol) and yield
    the round trip; the echo is stopped, not killed, so it leaves its wait and exits 0."""
    with SharedRegion(4) as region, Children() as kids:
        turn = region.view("i")
        pid = kids.fork(_echo_turns, cond, turn)

        def round_trip() -> None:
            with cond:
                turn[0] = PING
                cond.notify()
                while turn[0] == PING:
                    cond.wait()
        try:
            yield round_trip
        finally:
            with cond:
                turn[0] = STOP
                cond.notify()
            kids.wait(pid, timeout_s=5)


@rig
def _cond_round_trip_python() -> Iterator[Callable[[], None]]:
    with contextlib.closing(Lock()) as lock, contextlib.closing(Condition(lock)) as cond:
        yield from _cond_round_trips(cond)


def _bare_cond_wait(c: Any, mutex: Any) -> None:
    """Condition.wait() in csrc/sync.c's condition calls over cffi, as the C loop's cond_wait."""
    notifies = lib.osv_condition_enter(c)
    while lib.osv_condition_wait_for(c, mutex, -1) in (0, -1) and not lib.osv_condition_take(c, notifies):
        pass
    lib.osv_condition_leave(c)


def _echo_turns_bare(mutex: Any, c: Any, turn: memoryview) -> None:
    lib.osv_mutex_lock_for(mutex, LOCK_CLOCK, _FOREVER_NS)
    while True:
        while turn[0] == 0:
            _bare_cond_wait(c, mutex)
        if turn[0] == STOP:
            return
        turn[0] = 0
        lib.osv_condition_notify(c, 1)


@rig
def _cond_round_trip_bare() -> Iterator[Callable[[], None]]:
    """The round trip's barest calls, both sides: csrc/sync.c's mutex and condition calls over cffi."""
    with contextlib.closing(Lock()) as lock, contextlib.closing(Condition(lock)) as cond, \
            SharedRegion(4) as region, Children() as kids:
        mutex, c, turn = lock._ptr, cond._ptr, region.view("i")
        pid = kids.fork(_echo_turns_bare, mutex, c, turn)
        lock_for, unlock, notify = lib.osv_mutex_lock_for, lib.osv_mutex_unlock, lib.osv_condition_notify

        def round_trip() -> None:
            lock_for(mutex, LOCK_CLOCK, _FOREVER_NS)
            turn[0] = PING
            notify(c, 1)
            while turn[0] == PING:
                _bare_cond_wait(c, mutex)
            unlock(mutex)
        try:
            yield round_trip
        finally:
            with lock:
                turn[0] = STOP
                cond.notify()
            kids.wait(pid, timeout_s=5)


@rig
def _mp_cond_round_trip() -> Iterator[Callable[[], None]]:
    yield from _cond_round_trips(multiprocessing.Condition(multiprocessing.Lock()))


@rig
def _cond_round_trip_c() -> Iterator[tuple[_native.SharedPage]]:
    with _native.SharedPage() as page, Children() as kids:
        kids.fork(_native.cond_echo, page)
        yield (page,)


def _echo_events(ping: _Event, pong: _Event) -> None:
    while True:
        ping.wait()
        ping.clear()
        pong.set()


def _event_round_trips(ping: _Event, pong: _Event) -> Iterator[Callable[[], None]]:
    with Children() as kids:
        kids.fork(_echo_events, ping, pong)

        def round_trip() -> None:
            ping.set()
            pong.wait()
            pong.clear()
        yield round_trip


@rig
def _event_round_trip_python() -> Iterator[Callable[[], None]]:
    with Event() as ping, Event() as pong:
        yield from _event_round_trips(ping, pong)


class _BareEvent:
    """An osvirt.sync.Event's futex word driven by the barest calls, as the C loop's
    event_wait and osv_event_set/clear do: csrc/sync.c's calls over cffi."""

    def __init__(self, event: Event) -> None:
        self.ptr = event._ptr

    def set(self) -> None:
        lib.osv_event_set(self.ptr)

    def clear(self) -> None:
        lib.osv_event_clear(self.ptr)

    def wait(self, timeout: float | None = None) -> bool:
        seen = lib.osv_event_get(self.ptr)
        while not seen & 1 and lib.osv_event_get(self.ptr) == seen:
            lib.osv_event_wait_for(self.ptr, seen, -1)
        return True


@rig
def _event_round_trip_bare() -> Iterator[Callable[[], None]]:
    with Event() as ping, Event() as pong:
        yield from _event_round_trips(_BareEvent(ping), _BareEvent(pong))


@rig
def _mp_event_round_trip() -> Iterator[Callable[[], None]]:
    yield from _event_round_trips(multiprocessing.Event(), multiprocessing.Event())


@rig
def _event_round_trip_c() -> Iterator[tuple[_native.SharedPage]]:
    with _native.SharedPage() as page, Children() as kids:
        kids.fork(_native.event_echo, page)
        yield (page,)


# Why the lock rows' floor is 15-40x their C loop: a lock and an unlock are two atomic
# instructions in C, and any call from Python costs more than that. Measured with
# timeit on the 2-CPU EPYC VM: a trivial cffi call (lib.osv_event_get) 245 ns, as it
# converts its argument and releases and retakes the GIL; a trivial C method that
# keeps the GIL (Event.is_set) 53 ns, the empty loop's no-op call 48 ns.
_LOCK_NOTE = ("C locks and unlocks with two atomic instructions (~18 ns); the floor's two "
              "cffi calls each convert a pointer and release and retake the GIL (a trivial "
              "cffi call costs ~245 ns by timeit here, a C method keeping the GIL ~53 ns), "
              "which is floor/C; osvirt's `with` is one C call each way that keeps the GIL "
              "(osvirt._fastlock), so it is under its floor")

PRIMITIVES = [
    Primitive("mutex", "with osvirt.sync.Mutex(): lock and unlock, uncontended (process-shared, robust)",
              python=_mutex_python, c="mutex_lock_unlock", c_args=_shared_page,
              floor=("pthread_mutex_trylock + unlock over cffi", _mutex_bare),
              peer=("multiprocessing.Lock", _mp_lock),
              note=_LOCK_NOTE),
    Primitive("lock", "with osvirt.sync.Lock(): acquire and release, uncontended (threading's protocol; "
                      "the same robust pthread mutex as Mutex)",
              python=_lock_python, c="mutex_lock_unlock", c_args=_shared_page,
              floor=("pthread_mutex_trylock + unlock over cffi", _mutex_bare),
              peer=("multiprocessing.Lock", _mp_lock),
              note=_LOCK_NOTE),
    Primitive("rlock", "with osvirt.sync.RLock(): acquire and release, uncontended (the robust pthread "
                       "mutex and a count beside it)",
              python=_rlock_python, c="mutex_lock_unlock", c_args=_shared_page,
              floor=("pthread_mutex_trylock + unlock over cffi", _mutex_bare),
              peer=("multiprocessing.RLock", _mp_rlock),
              note=_LOCK_NOTE),
    Primitive("mutex-contended", "the same while another process locks and unlocks it in a loop "
                                 "(unpinned: two CPUs)",
              python=_mutex_contended_python, c="mutex_lock_unlock", c_args=_shared_page_contended,
              floor=("pthread_mutex_clocklock + unlock over cffi", _mutex_contended_bare),
              peer=("multiprocessing.Lock", _mp_lock_contended),
              note="each series' partner runs its own kind of loop (C's is C, so it holds the "
                   "lock for a few ns at a time), so floor/C mixes the call cost of the rows above "
                   "with a different contention; within Python, the lock's cache line moving "
                   "between the CPUs is most of the cost. Sleeps are rare: voluntary context "
                   "switches per operation (/proc/self/status, 200k operations, twice) were "
                   "0.0004-0.0008 for osvirt, 0-0.0025 for the floor and 0.029-0.037 for "
                   "multiprocessing.Lock, whose semaphore sleeps in sem_wait ~50x as often"),
    Primitive("semaphore", "osvirt.sync.Semaphore release (sem_post) then acquire (sem_wait), uncontended",
              python=_semaphore_python, c="sem_post_wait", c_args=_shared_page,
              floor=("sem_post + sem_trywait over cffi", _semaphore_bare),
              peer=("posix_ipc.Semaphore", _posix_ipc_semaphore),
              note=_LOCK_NOTE),
    Primitive("event-wake", "osvirt.sync.Event round trip: set an event a process waits on, wait for "
                            "its answer on a second one, clear it; both on one CPU",
              python=_event_round_trip_python, c="event_round_trip", c_args=_event_round_trip_c, pin=True,
              floor=("csrc/sync.c's event calls over cffi, both sides", _event_round_trip_bare),
              peer=("multiprocessing.Event", _mp_event_round_trip),
              note="an Event is one futex word (csrc/inline/event.h), the C loop's too: set() is one "
                   "FUTEX_WAKE_OP, clear() a compare-and-swap, a wait() that blocks one FUTEX_WAIT, "
                   "untimed (a signal handler ends it with EINTR); all four methods are C "
                   "(osvirt._fastlock), set and clear with the GIL held, and the wait too in a process "
                   "with one thread (as both sides are here), so what remains above the C loop is "
                   "each side's interpreter work between the context switches"),
    Primitive("cond-rtt", "osvirt.sync.Condition round trip: under its Lock, hand a turn word to a "
                          "process waiting on the condition, notify, wait for it back; both on one CPU",
              python=_cond_round_trip_python, c="cond_round_trip", c_args=_cond_round_trip_c, pin=True,
              floor=("csrc/sync.c's mutex and condition calls over cffi, both sides", _cond_round_trip_bare),
              peer=("multiprocessing.Condition", _mp_cond_round_trip),
              note="a Condition is a futex word and three counts (csrc/inline/condition.h), the C "
                   "loop's too; about four context switches a round trip, C's too (the woken echo "
                   "preempts the notifier and blocks on the lock it still holds), and each side's "
                   "interpreter work runs between them; `with`, notify() and an untimed wait() are "
                   "C (osvirt._fastlock), the wait with the GIL kept in a process with one thread (as "
                   "both sides are here; released where there are more); the peer's Condition is "
                   "Python over semaphores"),
]
