"""threading's protocol, tested as CPython tests its own classes (Lib/test/lock_tests.py's
shapes, written afresh): contended acquire, timeouts within bounds, reacquire, notify
counts, barrier abort/reset/action/timeout, repr, weak references; each party a thread
or a forked process (`how`), what they saw kept in shared memory. Then what threading
lacks: a SIGKILLed holder of each class, the futex word the kernel reads, pickling into
multiprocessing's spawn and fork children, and the tracker removing a killed creator's names.
"""
import gc
import json
import multiprocessing
from multiprocessing import resource_tracker
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
import weakref

import pytest

from osvirt.process import Children
from osvirt.sync import (Barrier, BoundedSemaphore, BrokenBarrierError, Condition, Event, Lock, OwnerDead, RLock,
                         Semaphore, SharedRegion, _native)
from osvirt.sync.mutex import FUTEX_TID_MASK, SLICE_S

FUTEX_OWNER_DIED = 0x40000000  # linux/futex.h
HOW = ["thread", "process"]
WAIT_S = 30                       # what a loaded machine may take to do what should be instant
STILL_S = 0.1                     # how long a party that must stay blocked is watched


def until(predicate, what, timeout_s=WAIT_S):
    """Poll `predicate` until true; AssertionError naming `what` after `timeout_s`."""
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, f"after {timeout_s} s still not: {what}"
        time.sleep(0.002)


class Parties:
    """`fn(i)` for i in range(n), each in a thread or a forked process."""

    def __init__(self, how, fn, n=1):
        self.how, self.errors = how, []
        if how == "thread":
            def run(i):
                try:
                    fn(i)
                except BaseException as e:  # re-raised by finish()
                    self.errors.append(e)
            self.threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
            for t in self.threads:
                t.start()
        else:
            self.kids = Children()
            self.pids = [self.kids.fork(fn, i) for i in range(n)]

    def finish(self, timeout_s=WAIT_S):
        if self.how == "thread":
            for t in self.threads:
                t.join(timeout_s)
                assert not t.is_alive(), "a party thread still runs"
            if self.errors:
                raise self.errors[0]
        else:
            with self.kids:
                assert [self.kids.wait(pid, timeout_s) for pid in self.pids] == [0] * len(self.pids)


@pytest.fixture
def shared():
    """64 int64 counters every party sees."""
    with SharedRegion(8 * 64) as region:
        view = region.view("q")
        yield view


@pytest.fixture
def made():
    """made(obj) -> obj, closed (with a Condition's lock) at teardown."""
    objs = []

    def make(obj):
        objs.append(obj)
        return obj
    yield make
    for obj in reversed(objs):
        obj.close()
        if isinstance(obj, Condition):
            obj.lock.close()


# -- Lock and RLock ---------------------------------------------------------------------
LOCKS = [Lock, RLock]


@pytest.mark.parametrize("locktype", LOCKS)
def test_repr_unlocked_and_locked(locktype, made):
    lock = made(locktype())
    assert re.fullmatch(r"<unlocked .* object (.*)?at .*>", repr(lock))
    with lock:
        assert re.fullmatch(r"<locked .* object (.*)?at .*>", repr(lock))


@pytest.mark.parametrize("locktype", LOCKS)
def test_acquire_release_and_the_futex_word_names_the_holder(locktype, made):
    lock = made(locktype())
    assert lock.acquire() is True and lock.locked()
    word = _native.mutex_futex_word(lock._ptr)
    assert word & FUTEX_TID_MASK == threading.get_native_id()      # the robust-futex protocol's holder
    lock.release()
    assert _native.mutex_futex_word(lock._ptr) == 0 and not lock.locked()


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("locktype", LOCKS)
def test_try_acquire_contended(locktype, how, made, shared):
    lock = made(locktype())
    lock.acquire()
    parties = Parties(how, lambda i: shared.__setitem__(0, 1 + lock.acquire(False)))
    parties.finish()
    assert shared[0] == 1                       # 1 + False: not acquired
    lock.release()


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("locktype", LOCKS)
@pytest.mark.parametrize("use_with", [False, True])
def test_acquire_contended_waits_for_the_release(locktype, how, use_with, made, shared):
    lock, n = made(locktype()), 5
    lock.acquire()

    def take(i):
        with lock if use_with else _Acquired(lock):
            shared[1] += 1                      # under the lock: no update is lost
    parties = Parties(how, take, n)
    time.sleep(STILL_S)
    assert shared[1] == 0                       # none got it while we held it
    lock.release()
    parties.finish()
    assert shared[1] == n


class _Acquired:
    """acquire()/release() spelled out, for the tests that compare them with `with`."""

    def __init__(self, lock):
        self.lock = lock

    def __enter__(self):
        assert self.lock.acquire() is True

    def __exit__(self, *exc):
        self.lock.release()


@pytest.mark.parametrize("locktype", LOCKS)
def test_timeout_arguments_as_threading_checks_them(locktype, made):
    lock = made(locktype())
    with pytest.raises(ValueError, match="non-blocking"):
        lock.acquire(False, 1)
    with pytest.raises(ValueError):
        lock.acquire(timeout=-100)
    with pytest.raises(OverflowError):
        lock.acquire(timeout=1e100)
    with pytest.raises(OverflowError):
        lock.acquire(timeout=threading.TIMEOUT_MAX + 1)
    with pytest.raises(TypeError):
        lock.acquire(timeout="1")
    assert lock.acquire(timeout=threading.TIMEOUT_MAX)   # free: taken at once
    lock.release()
    assert not lock.locked()


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("locktype", LOCKS)
def test_a_timed_acquire_of_a_held_lock_returns_false_after_its_timeout(locktype, how, made, shared):
    lock = made(locktype())
    lock.acquire()

    def timed(i):
        t0 = time.monotonic_ns()
        shared[0] = 1 + lock.acquire(timeout=0.3)
        shared[1] = time.monotonic_ns() - t0
    Parties(how, timed).finish()
    assert shared[0] == 1                      # False
    assert 0.3 <= shared[1] / 1e9 < 0.3 + WAIT_S  # never early; late only by what the machine's load costs
    lock.release()


def test_lock_reacquire_after_release_by_its_holder(made):
    lock, phase = made(Lock()), []
    lock.acquire()

    def f():
        lock.acquire()
        phase.append(None)
        lock.acquire(timeout=0.05)             # held by this thread: cannot succeed
        phase.append(None)
        lock.release()
    t = threading.Thread(target=f)
    t.start()
    time.sleep(STILL_S)
    assert phase == []
    lock.release()
    t.join(WAIT_S)
    assert len(phase) == 2 and not lock.locked()


def test_lock_acquire_by_its_holder_without_timeout_is_runtime_error_not_a_hang(made):
    lock = made(Lock())
    with lock:
        assert lock.acquire(False) is False
        t0 = time.monotonic()
        assert lock.acquire(timeout=0.1) is False and time.monotonic() - t0 >= 0.1
        with pytest.raises(RuntimeError, match="would wait forever"):
            lock.acquire()
        with pytest.raises(RuntimeError, match="would wait forever"):
            with lock:
                pass


@pytest.mark.parametrize("locktype", LOCKS)
def test_release_unlocked_and_release_by_a_non_holder_are_runtime_errors(locktype, made):
    """threading.Lock lets any thread release it; a robust mutex only its holder (the note says why)."""
    lock = made(locktype())
    with pytest.raises(RuntimeError, match="release unlocked lock|un-acquired lock"):
        lock.release()
    lock.acquire()
    caught = []

    def other():
        try:
            lock.release()
        except RuntimeError as e:
            caught.append(e)
    t = threading.Thread(target=other)
    t.start()
    t.join(WAIT_S)
    assert len(caught) == 1 and lock.locked() and lock._is_owned()
    lock.release()


@pytest.mark.parametrize("locktype", LOCKS)
def test_weak_references(locktype):
    lock = locktype()
    ref = weakref.ref(lock)
    assert ref() is lock
    name = lock.name
    del lock
    gc.collect()
    assert ref() is None
    assert not os.path.exists("/dev/shm" + name)   # collected: closed, and its name unlinked


def test_rlock_recursion_owner_and_count(made, shared):
    lock = made(RLock())
    assert lock._recursion_count() == 0 and not lock._is_owned()
    lock.acquire()
    lock.acquire()
    with lock:
        assert lock._recursion_count() == 3 and lock._is_owned()
        assert f"owner={threading.get_native_id()} count=3" in repr(lock)
    lock.release()
    assert lock._recursion_count() == 1

    def try_in_child(i):
        shared[0] = 1 + lock.acquire(timeout=0.05)
        shared[1] = lock._recursion_count()
    Parties("process", try_in_child).finish()
    assert (shared[0], shared[1]) == (1, 0)    # held here, so neither acquired nor owned there
    lock.release()
    assert "<unlocked" in repr(lock) and "count=0" in repr(lock)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("locktype", LOCKS)
def test_a_holder_that_dies_hands_the_lock_on_with_owner_dead(locktype, how, made):
    lock = made(locktype())

    def die_holding(i):
        lock.acquire()
        if how == "process":
            os.kill(os.getpid(), signal.SIGKILL)
    if how == "thread":
        Parties(how, die_holding).finish()     # the thread ends holding it
    else:
        with Children() as kids:
            assert kids.wait(kids.fork(die_holding, 0), WAIT_S) == -signal.SIGKILL
    # What the kernel leaves when it walks the dead thread's robust list (a joined
    # Python thread may not have ended in the kernel yet: waited for).
    until(lambda: _native.mutex_futex_word(lock._ptr) & FUTEX_OWNER_DIED, "FUTEX_OWNER_DIED in the futex word")
    assert _native.mutex_futex_word(lock._ptr) & FUTEX_TID_MASK == 0
    with pytest.raises(OwnerDead):
        lock.acquire()
    assert lock._is_owned()                    # OwnerDead: acquired
    lock.make_consistent()
    lock.release()
    assert lock.acquire(timeout=1)             # healthy again
    lock.release()


# -- Semaphore and BoundedSemaphore ------------------------------------------------------------
SEMAPHORES = [Semaphore, BoundedSemaphore]


@pytest.mark.parametrize("semtype", SEMAPHORES)
def test_semaphore_constructor_and_repr(semtype, made):
    with pytest.raises(ValueError, match="initial value must be >= 0"):
        semtype(-1)
    sem = made(semtype(2))
    bound = "/2" if semtype is BoundedSemaphore else ""
    assert re.fullmatch(rf"<osvirt\.sync\.{semtype.__name__} at 0x[0-9a-f]+: value=2{bound}>", repr(sem))
    with pytest.raises(ValueError, match="can't specify timeout"):
        sem.acquire(False, timeout=1)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("semtype", SEMAPHORES)
def test_semaphore_release_n_wakes_n_waiters(semtype, how, made, shared):
    sem = made(semtype(3))
    for _ in range(3):
        assert sem.acquire()
    assert sem.acquire(False) is False and sem.acquire(timeout=0) is False

    def take(i):
        assert sem.acquire(timeout=WAIT_S)
        shared[1 + i] = 1
    parties = Parties(how, take, 3)
    time.sleep(STILL_S)
    assert sum(shared[1:4]) == 0
    sem.release(2)
    until(lambda: sum(shared[1:4]) == 2, "two of the three waiters woken by release(2)")
    time.sleep(STILL_S)
    assert sum(shared[1:4]) == 2               # and not a third
    sem.release()
    parties.finish()
    assert sum(shared[1:4]) == 3 and sem.value == 0
    with pytest.raises(ValueError, match="n must be one or more"):
        sem.release(0)


def test_bounded_semaphore_refuses_a_release_past_its_bound_even_from_another_process(made, shared):
    sem = made(BoundedSemaphore(2))
    sem.acquire()
    sem.release()
    with pytest.raises(ValueError, match="released too many times"):
        sem.release()

    def over(i):
        try:
            sem.release()
        except ValueError:
            shared[0] = 1
    Parties("process", over).finish()
    assert shared[0] == 1 and sem.value == 2
    with sem:
        assert sem.value == 1
    assert sem.value == 2


def test_bounded_semaphore_release_recovers_from_a_releaser_killed_inside_it(made):
    sem = made(BoundedSemaphore(1))
    sem.acquire()
    with Children() as kids:
        def hold_guard_and_die():
            _native.mutex_trylock(_native.field(sem._ptr, "guard"))   # as a release killed mid-way
            os.kill(os.getpid(), signal.SIGKILL)
        assert kids.wait(kids.fork(hold_guard_and_die), WAIT_S) == -signal.SIGKILL
    sem.release()                               # EOWNERDEAD on the guard, recovered
    assert sem.value == 1


# -- Condition -----------------------------------------------------------------------------------
@pytest.mark.parametrize("locktype", [None, Lock, RLock])
def test_condition_repr_and_unacquired_use(locktype, made):
    cond = made(Condition(None if locktype is None else locktype()))
    assert isinstance(cond.lock, RLock if locktype is None else locktype)
    assert re.fullmatch(r"<Condition\(<unlocked .* object .*>, 0\)>", repr(cond))
    with pytest.raises(RuntimeError, match="cannot wait on un-acquired lock"):
        cond.wait(0)
    with pytest.raises(RuntimeError, match="cannot notify on un-acquired lock"):
        cond.notify()
    with pytest.raises(RuntimeError, match="cannot notify on un-acquired lock"):
        cond.notify_all()


@pytest.mark.parametrize("how", HOW)
def test_notify_wakes_as_many_waiters_as_it_says(how, made, shared):
    """lock_tests' _check_notify: 5 wait; notify(3) wakes 3, notify(5) the other 2, notify_all all."""
    cond, n = made(Condition()), 5
    READY, WOKEN, PHASE, TRUE = 0, 1, 2, 3

    def waiter(i):
        for _ in range(2):
            with cond:
                shared[READY] += 1
                result = cond.wait()
                shared[TRUE] += result is True
                shared[WOKEN] += 1
    parties = Parties(how, waiter, n)

    def settled(ready, waiting):
        until(lambda: shared[READY] == ready, f"{ready} waits begun")
        with cond:                              # each counted itself holding the lock, then waits
            assert cond._waiters == waiting

    settled(n, n)
    with cond:
        cond.notify(3)
    until(lambda: shared[WOKEN] == 3, "3 woken by notify(3)")
    time.sleep(STILL_S)
    assert shared[WOKEN] == 3
    settled(n + 3, n)                           # the 3 wait again, beside the 2 not woken
    with cond:
        cond.notify(5)
    until(lambda: shared[WOKEN] == 8, "5 more woken by notify(5), in their first or second wait")
    settled(2 * n, 2)
    with cond:
        cond.notify_all()
    parties.finish()
    assert shared[WOKEN] == 2 * n and shared[TRUE] == 2 * n


@pytest.mark.parametrize("how", HOW)
def test_condition_wait_times_out_holding_the_lock_and_wait_for(how, made, shared):
    cond = made(Condition(Lock()))

    def timed(i):
        with cond:
            t0 = time.monotonic_ns()
            shared[0] = 1 + cond.wait(0.2)
            shared[1] = time.monotonic_ns() - t0
            shared[2] = cond.lock._is_owned()
            t0 = time.monotonic_ns()
            shared[3] = 1 + cond.wait_for(lambda: False, timeout=0.2)
            shared[4] = time.monotonic_ns() - t0
    Parties(how, timed).finish()
    assert (shared[0], shared[2], shared[3]) == (1, 1, 1)
    assert 0.2 <= shared[1] / 1e9 < WAIT_S and 0.2 <= shared[4] / 1e9 < WAIT_S


@pytest.mark.parametrize("how", HOW)
def test_wait_on_an_rlock_held_twice_releases_it_entirely(how, made, shared):
    cond = made(Condition(RLock()))

    def notify_when_taken(i):
        until(lambda: shared[0] == 1, "the waiter holds the lock")
        with cond:                              # free only if every level was released
            shared[1] = 1
            cond.notify()
    with cond, cond:
        parties = Parties(how, notify_when_taken)
        shared[0] = 1
        assert cond.wait_for(lambda: shared[1] == 1, timeout=WAIT_S)
        assert cond.lock._recursion_count() == 2
    parties.finish()
    assert not cond.lock.locked()


def test_a_lock_holder_killed_while_a_wait_returns_gives_owner_dead(made, shared):
    cond = made(Condition(Lock()))
    with Children() as kids:
        def notify_and_die():
            until(lambda: shared[0] == 1, "the parent waits")
            cond.acquire()
            cond.notify()
            os.kill(os.getpid(), signal.SIGKILL)  # holding the lock the waiter needs back
        with cond:
            pid = kids.fork(notify_and_die)
            shared[0] = 1
            with pytest.raises(OwnerDead):
                cond.wait(WAIT_S)
            assert cond.lock._is_owned()
            cond.lock.make_consistent()
        assert kids.wait(pid, WAIT_S) == -signal.SIGKILL


# -- Event ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", HOW)
def test_event_set_wakes_every_waiter(how, made, shared):
    event, n = made(Event()), 4
    assert re.fullmatch(r"<osvirt\.sync\.Event at 0x[0-9a-f]+: unset>", repr(event))

    def waiter(i):
        shared[10 + i] = 1                      # about to wait
        shared[i] = 1 + event.wait()
    parties = Parties(how, waiter, n)
    until(lambda: all(shared[10:10 + n]), "every waiter started")
    time.sleep(STILL_S)
    assert list(shared[:n]) == [0] * n
    event.set()
    parties.finish()
    assert list(shared[:n]) == [2] * n and event.is_set() and "set>" in repr(event)
    event.clear()
    assert not event.is_set()


@pytest.mark.parametrize("how", HOW)
def test_event_wait_times_out_and_a_set_undone_at_once_still_wakes(how, made, shared):
    event = made(Event())

    def waiter(i):
        t0 = time.monotonic_ns()
        shared[0] = 1 + event.wait(0.2)
        shared[1] = time.monotonic_ns() - t0
        shared[2] = 1
        shared[3] = 1 + event.wait(WAIT_S)      # woken by a set() that a clear() follows
    parties = Parties(how, waiter)
    until(lambda: shared[2] == 1, "the first wait timed out")
    time.sleep(STILL_S)
    event.set()
    event.clear()
    parties.finish()
    assert shared[0] == 1 and 0.2 <= shared[1] / 1e9 < WAIT_S and shared[3] == 2


@pytest.mark.needs("seccomp_filter")
def test_a_setter_killed_entering_its_system_call_raised_nothing(made, shared):
    """Nothing is held in an Event, and set() is one futex(FUTEX_WAKE_OP): the kernel
    raises the flag and wakes the waiters together. A setter killed as it enters its
    first futex call (a seccomp filter's verdict) leaves the flag down and the waiter
    waiting, for the next set(); had the flag been stored before a wake-up call, it
    would be up, with the waiter asleep on it."""
    from osvirt.container import seccomp
    event = made(Event())
    parties = Parties("thread", lambda i: shared.__setitem__(0, 1 + event.wait()))
    kill_at_futex = seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["futex"], "action": "SCMP_ACT_KILL_PROCESS"}]})

    def set_under_the_filter():
        seccomp.install(kill_at_futex)
        event.set()
    with Children() as kids:
        assert kids.wait(kids.fork(set_under_the_filter), WAIT_S) == -signal.SIGSYS
    time.sleep(STILL_S)
    assert not event.is_set() and shared[0] == 0
    event.set()
    parties.finish()
    assert shared[0] == 2


# -- Barrier -------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", HOW)
def test_barrier_indexes_per_phase(how, made, shared):
    n, phases = 3, 4
    barrier = made(Barrier(n))
    assert re.fullmatch(rf"<osvirt\.sync\.Barrier at 0x[0-9a-f]+: waiters=0/{n}>", repr(barrier))

    def party(i):
        for phase in range(phases):
            shared[phase * n + barrier.wait(WAIT_S)] += 1   # indexes differ: no two parties add to one
    parties = Parties(how, party, n - 1)
    party(n - 1)
    parties.finish()
    assert list(shared[:phases * n]) == [1] * (phases * n)   # each index 0..n-1 once a phase
    assert not barrier.broken and barrier.n_waiting == 0


def test_barrier_action_runs_once_per_phase_in_the_last_party(made):
    runs, n = [], 4
    barrier = made(Barrier(n, action=lambda: runs.append(threading.get_ident())))
    results = []
    threads = [threading.Thread(target=lambda: results.append(barrier.wait(WAIT_S))) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert sorted(results) == list(range(n)) and len(runs) == 1


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("breaker", ["abort", "reset", "timeout"])
def test_abort_reset_and_timeout_break_every_waiter(breaker, how, made, shared):
    n = 3
    barrier = made(Barrier(n))

    def party(i):
        try:
            barrier.wait(0.3 if breaker == "timeout" and i == 0 else WAIT_S)
        except BrokenBarrierError:
            shared[i] = 1
    parties = Parties(how, party, n - 1)
    until(lambda: barrier.n_waiting == n - 1 or barrier.broken, "two parties wait")
    if breaker == "abort":
        barrier.abort()
    elif breaker == "reset":
        barrier.reset()
    parties.finish()
    assert list(shared[:n - 1]) == [1] * (n - 1)
    assert barrier.broken == (breaker != "reset")
    if barrier.broken:
        assert "broken>" in repr(barrier) and barrier.n_waiting == 0
        with pytest.raises(BrokenBarrierError):
            barrier.wait()
        barrier.reset()
    assert not barrier.broken                   # usable again: a full phase passes
    threads = [threading.Thread(target=barrier.wait, args=(WAIT_S,)) for _ in range(n - 1)]
    for t in threads:
        t.start()
    assert barrier.wait(WAIT_S) in range(n)
    for t in threads:
        t.join(WAIT_S)


def test_barrier_default_timeout_and_a_failing_action(made):
    barrier = made(Barrier(2, timeout=0.1))
    t0 = time.monotonic()
    with pytest.raises(BrokenBarrierError):
        barrier.wait()
    assert time.monotonic() - t0 >= 0.1 and barrier.broken
    failing = made(Barrier(2, action=lambda: 1 / 0))
    other = []
    t = threading.Thread(target=lambda: other.append(pytest.raises(BrokenBarrierError, failing.wait, WAIT_S)))
    t.start()
    until(lambda: failing.n_waiting == 1, "the other party waits")
    with pytest.raises(ZeroDivisionError):
        failing.wait(WAIT_S)                    # the last party runs the action: its exception
    t.join(WAIT_S)
    assert len(other) == 1 and failing.broken  # the other: BrokenBarrierError


@pytest.mark.parametrize("where", ["waiting", "holding its mutex"])
def test_a_party_killed_breaks_the_barrier_instead_of_hanging_it(where, made, shared):
    barrier = made(Barrier(3))
    with Children() as kids:
        def party():
            if where == "waiting":
                barrier.wait()
            else:
                _native.mutex_trylock(_native.field(barrier._ptr, "mutex"))
                shared[0] = 1
                time.sleep(WAIT_S)
        pid = kids.fork(party)
        until(lambda: barrier.n_waiting == 1 or shared[0] == 1, "the party arrived")
        os.kill(pid, signal.SIGKILL)
        assert kids.wait(pid, WAIT_S) == -signal.SIGKILL
        t0 = time.monotonic()
        with pytest.raises(BrokenBarrierError):
            barrier.wait(WAIT_S)               # the third party never comes: broken, not hung
        assert time.monotonic() - t0 < WAIT_S and barrier.broken


# -- across processes: by name, pickled, and after a SIGKILL ----------------------------------------
def _use_everything(lock, rlock, sem, bsem, cond, event, barrier):
    """In a multiprocessing child: each object, reached through pickle (spawn) or fork."""
    with lock, rlock, rlock:
        pass
    sem.release(2)
    bsem.acquire()
    barrier.wait(WAIT_S)                      # the parent waits too
    with cond:
        event.set()
        cond.wait_for(lambda: not event.is_set(), WAIT_S)   # the parent clears it, then notifies


@pytest.fixture(scope="module")
def mp_tracker():
    """multiprocessing's own resource tracker, which spawn starts and keeps: started
    before the leak guard's first snapshot, stopped after the module."""
    resource_tracker.ensure_running()
    yield
    resource_tracker._resource_tracker._stop()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_every_class_reaches_a_multiprocessing_child(method, mp_tracker, made):
    objs = [made(x) for x in (Lock(), RLock(), Semaphore(0), BoundedSemaphore(1), Condition(), Event(), Barrier(2))]
    lock, rlock, sem, bsem, cond, event, barrier = objs
    child = multiprocessing.get_context(method).Process(target=_use_everything, args=objs)
    child.start()
    try:
        assert barrier.wait(WAIT_S) in (0, 1)
        assert event.wait(WAIT_S)
        with cond:
            event.clear()
            cond.notify()
        child.join(WAIT_S)
        assert child.exitcode == 0
        assert sem.value == 2 and bsem.value == 0 and not lock.locked() and not rlock.locked()
    finally:
        if child.is_alive():
            child.kill()
            child.join()


def test_pickle_sends_the_name_and_an_anonymous_object_refuses(made):
    lock = made(Lock())
    clone = pickle.loads(pickle.dumps(lock))
    try:
        assert clone.name == lock.name
        with lock:
            assert clone.locked()
    finally:
        clone.close()
    with pytest.raises(TypeError, match="anonymous"):
        pickle.dumps(made(Event(named=False)))


CREATE_AND_HANG = """
import sys, time
from osvirt.sync import *
objs = [Lock(), RLock(), Semaphore(), BoundedSemaphore(), Condition(Lock()), Event(), Barrier(2)]
print(" ".join(o.name for o in objs) + " " + objs[4].lock.name, flush=True)
time.sleep(60)
"""


def test_a_sigkilled_creator_leaves_no_name_behind():
    proc = subprocess.Popen([sys.executable, "-c", CREATE_AND_HANG], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        names = proc.stdout.readline().split()
        assert len(names) == 8 and all(os.path.exists("/dev/shm" + n) for n in names)
    finally:
        proc.kill()
        proc.wait()
    until(lambda: not any(os.path.exists("/dev/shm" + n) for n in names), "the tracker removed them")
    proc.stdout.close()
    proc.stderr.close()


# -- the C paths (osvirt._fastlock): an untimed wait, and signals during one -----------------------
def _waiters(made):
    """(wait, wake) pairs: an Event's and a Condition's untimed wait, and what ends it."""
    event, cond = made(Event()), made(Condition(Lock()))

    def cond_wait():
        with cond:
            return cond.wait(), cond.lock._is_owned()

    def cond_notify():
        with cond:
            cond.notify()
    return [(lambda: (event.wait(), True), event.set), (cond_wait, cond_notify)]


def test_an_untimed_wait_lasts_until_woken(made):
    for wait, wake in _waiters(made):
        timer = threading.Timer(3 * SLICE_S, wake)   # longer than any slice a lock's wait takes
        t0 = time.monotonic()
        timer.start()
        assert wait() == (True, True)
        assert time.monotonic() - t0 >= 3 * SLICE_S
        timer.join()


class _Interrupted(Exception):
    pass


def test_a_signal_handler_runs_during_an_untimed_wait(made):
    """What Ctrl-C needs: the futex wait returns EINTR for the handler to run; its exception
    ends it (a Condition's with the lock held again, as threading's)."""
    def interrupt(*_):
        raise _Interrupted
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        for wait, _ in _waiters(made):
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            t0 = time.monotonic()
            with pytest.raises(_Interrupted):
                wait()
            assert 0.2 <= time.monotonic() - t0 < WAIT_S    # ended by the handler, not hung
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


SINGLE_THREADED_WAITS = r"""
import ctypes, json, os, signal, sys, threading, time
from osvirt.process import Children
from osvirt.sync import Condition, Event, Lock

def single_threaded():
    return ctypes.c_char.in_dll(ctypes.CDLL(None), "__libc_single_threaded").value == b"\x01"

class Interrupted(Exception):
    pass

def interrupt(*_):
    raise Interrupted

seen = {"single_threaded_at_start": single_threaded()}
cond, event = Condition(Lock()), Event()
# A forked child notifies: the parent's untimed waits sleep with the GIL kept.
with Children() as kids:
    with cond:
        def notify():
            with cond:
                cond.notify()
        pid = kids.fork(notify)
        seen["condition_notified_from_a_process"] = cond.wait()
    kids.wait(pid, 30)
    pid = kids.fork(event.set)
    seen["event_set_from_a_process"] = event.wait()
    kids.wait(pid, 30)
event.clear()
# A signal handler's exception ends them, a Condition's with its lock held again.
signal.signal(signal.SIGALRM, interrupt)
ended = []
for wait, held in ((event.wait, lambda: True), (cond.wait, lambda: not cond.lock.acquire(blocking=False))):
    signal.setitimer(signal.ITIMER_REAL, 0.1)
    with cond:
        t0 = time.monotonic()
        try:
            wait()
        except Interrupted:
            ended.append(0.1 <= time.monotonic() - t0 < 30 and held())
seen["ended_by_a_signal_handler"] = ended
seen["single_threaded_before_a_thread"] = single_threaded()
# Once a thread was made, the waits give the GIL up: the thread notifies the waiter.
def notify_later():
    time.sleep(0.1)
    with cond:
        cond.notify()
    time.sleep(0.1)
    event.set()
thread = threading.Thread(target=notify_later)
thread.start()
seen["single_threaded_with_a_thread"] = single_threaded()
with cond:
    seen["condition_notified_from_a_thread"] = cond.wait()
seen["event_set_from_a_thread"] = event.wait()
thread.join()
cond.close(); cond.lock.close(); event.close()
print(json.dumps(seen))
"""


def test_untimed_waits_of_a_single_threaded_process_keep_the_gil_until_it_has_threads():
    """A process with one thread (glibc's __libc_single_threaded) sleeps in Condition.wait()
    and Event.wait() with the GIL kept: no other thread can want it, or come to be. What
    such waits must still do: wake for a notify from another process, end with a signal
    handler's exception; and once a thread exists, give the GIL up (else the thread's
    notify could never run)."""
    out = subprocess.run([sys.executable, "-c", SINGLE_THREADED_WAITS], capture_output=True, text=True,
                         timeout=WAIT_S)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "single_threaded_at_start": True, "condition_notified_from_a_process": True,
        "event_set_from_a_process": True, "ended_by_a_signal_handler": [True, True],
        "single_threaded_before_a_thread": True, "single_threaded_with_a_thread": False,
        "condition_notified_from_a_thread": True, "event_set_from_a_thread": True}


def test_a_forked_child_does_not_hold_what_its_parent_holds(made, shared):
    """The C path keeps each thread's TID (gettid is a system call); a fork gives the
    child's thread another, so the lock its parent holds is not the child's."""
    cond = made(Condition(Lock()))

    def notify_in_child(i):
        try:
            cond.notify()
        except RuntimeError:
            shared[0] = 1
    with cond:
        cond.notify()                          # the parent's TID is kept now
        Parties("process", notify_in_child).finish()
    assert shared[0] == 1


def test_closing_an_opened_lock_whose_holder_died_leaves_it_recoverable(made):
    """A process that only opened the lock (a spawned child's pickled copy, collected)
    must not unlock a dead holder's mutex: that would make it unrecoverable for all."""
    lock = made(Lock())
    with Children() as kids:
        def die_holding():
            lock.acquire()
            os.kill(os.getpid(), signal.SIGKILL)
        assert kids.wait(kids.fork(die_holding), WAIT_S) == -signal.SIGKILL
    Lock.open(lock.name).close()
    with pytest.raises(OwnerDead):
        lock.acquire()
    lock.make_consistent()
    lock.release()
