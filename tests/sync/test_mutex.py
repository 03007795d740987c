import errno
import os
import pickle
import random
import signal
import sys
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from osvirt.process import Children
from osvirt.sync import Mutex, OwnerDead, SharedRegion, workloads
from osvirt.sync.workloads import PAIR


@pytest.fixture
def mutex():
    m = Mutex()
    yield m
    m.close()


@pytest.fixture
def counters():
    region = SharedRegion(64)
    yield region.view("q")
    region.close()


def test_four_processes_times_100_000_increments_are_exact(mutex, counters):
    with Children() as kids:
        pids = [kids.fork(workloads.increment, counters, 100_000, mutex) for _ in range(4)]
        assert [kids.wait(pid, timeout_s=60) for pid in pids] == [0] * 4
    assert counters[0] == 400_000


def _increment_on_go(go, *args):
    os.read(go, 1)  # every child forked before any starts: a fork slowed by load must not serialize them
    workloads.increment(*args)


def test_without_the_mutex_the_same_increments_lose_updates(counters):
    # Updates are lost only where two read-yield-writes overlap: with all four
    # released at once they do, but a run the scheduler happened to serialize
    # loses none, so a few runs are allowed before the test fails.
    totals = []
    for _ in range(3):
        counters[0] = 0
        go_read, go_write = os.pipe()
        try:
            with Children() as kids:
                pids = [kids.fork(_increment_on_go, go_read, counters, 2000, None, True) for _ in range(4)]
                os.write(go_write, b"x" * 4)
                assert [kids.wait(pid, timeout_s=60) for pid in pids] == [0] * 4
        finally:
            os.close(go_read)
            os.close(go_write)
        totals.append(counters[0])
        if totals[-1] < 8000:
            break
    assert totals[-1] < 8000, f"no update lost in {len(totals)} runs: {totals}"


def test_holder_killed_at_random_points_50_times_the_mutex_is_always_recovered(mutex, counters):
    rng = random.Random(4132)
    owner_died = half_updated = 0
    with Children() as kids:
        for _ in range(50):
            pid = kids.fork_ready(workloads.update_pair, mutex, counters, None)
            time.sleep(rng.uniform(0, 0.003))
            assert workloads.kill_and_reap(kids, pid) == -signal.SIGKILL
            died, (first, second) = workloads.repair_pair(mutex, counters)
            owner_died += died
            half_updated += first != second
            assert not died or mutex.robust
            assert first - second in (0, 1)       # killed between the halves at worst
            assert counters[PAIR["first"]] == counters[PAIR["second"]]
            assert mutex.lock(timeout_s=1)       # usable again, no EOWNERDEAD
            mutex.unlock()
    assert counters[PAIR["repairs"]] == owner_died
    assert owner_died >= 10, f"the holder died holding the mutex only {owner_died} times of 50"


def test_owner_dead_leaves_the_caller_holding_and_unrepaired_it_becomes_unrecoverable(mutex):
    with Children() as kids:
        pid = kids.fork(lambda: (mutex.lock(), os.kill(os.getpid(), signal.SIGKILL)))
        assert kids.wait(pid) == -signal.SIGKILL
    with pytest.raises(OwnerDead) as caught:
        mutex.lock()
    assert caught.value.errno == errno.EOWNERDEAD
    assert mutex.where in str(caught.value)
    assert not mutex.try_lock()                 # we hold it: not acquired twice
    mutex.unlock()                              # without make_consistent()
    with pytest.raises(OSError) as caught:
        mutex.lock(timeout_s=1)
    assert caught.value.errno == errno.ENOTRECOVERABLE
    assert "never be locked again" in str(caught.value)


def test_owner_dead_pickles():
    e = pickle.loads(pickle.dumps(OwnerDead("somewhere")))
    assert isinstance(e, OwnerDead) and e.errno == errno.EOWNERDEAD and "somewhere" in str(e)


def test_make_consistent_on_a_healthy_mutex_is_einval(mutex):
    with mutex:
        with pytest.raises(OSError) as caught:
            mutex.make_consistent()
    assert caught.value.errno == errno.EINVAL


def test_unlocking_a_mutex_not_held_is_eperm(mutex):
    with pytest.raises(PermissionError, match="does not hold"):
        mutex.unlock()
    held = threading.Event()
    done = threading.Event()

    def hold():
        with mutex:
            held.set()
            done.wait(5)
    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    with pytest.raises(PermissionError):      # held, but by another thread
        mutex.unlock()
    done.set()
    thread.join()


def test_locking_twice_from_one_thread_is_edeadlk(mutex):
    with mutex:
        with pytest.raises(OSError) as caught:
            mutex.lock()
    assert caught.value.errno == errno.EDEADLK


@pytest.mark.parametrize("robust", [True, False])
def test_lock_times_out_while_another_process_holds_it(robust):
    m = Mutex(robust=robust)
    try:
        with Children() as kids:
            kids.fork_ready(_hold, m)
            start = time.monotonic()
            assert m.lock(timeout_s=0.2) is False
            waited = time.monotonic() - start
            assert 0.19 <= waited < 2.0
            assert m.try_lock() is False
            assert m.lock(timeout_s=0) is False
            kids.close()
        if robust:
            with pytest.raises(OwnerDead):
                m.lock()
            m.make_consistent()
        else:
            assert m.lock(timeout_s=0.2) is False   # a non-robust mutex stays held by the dead
            return
        m.unlock()
    finally:
        m.close()


def _hold(m, ready_fd):
    m.lock()
    os.write(ready_fd, b".")
    time.sleep(60)


@pytest.mark.parametrize("timeout_s, error", [(-1, ValueError), (float("nan"), ValueError),
                                              (float("inf"), ValueError), (1e300, ValueError), ("1", TypeError), (True, TypeError)])
def test_bad_timeouts_are_refused_before_any_call(mutex, timeout_s, error):
    with pytest.raises(error, match="timeout_s"):
        mutex.lock(timeout_s=timeout_s)
    assert mutex.try_lock()                    # nothing was locked
    mutex.unlock()


def _hold_until_released(m, release_fd, ready_fd):
    with m:
        os.write(ready_fd, b".")
        os.read(release_fd, 1)  # held until the parent says, not for a fixed time a loaded parent may overrun


def test_a_blocked_lock_releases_the_gil(mutex):
    outcome = []

    def lock_and_unlock():
        outcome.append(mutex.lock(timeout_s=30))
        mutex.unlock()
    r, w = os.pipe()
    try:
        with Children() as kids:
            pid = kids.fork_ready(_hold_until_released, mutex, r)
            thread = threading.Thread(target=lock_and_unlock)
            thread.start()
            spins, end = 0, time.monotonic() + 0.3
            while time.monotonic() < end:          # Python runs here while the thread waits in C
                spins += 1
            assert thread.is_alive() and spins > 10_000
            os.write(w, b".")
            thread.join(30)
            assert kids.wait(pid, timeout_s=30) == 0
    finally:
        os.close(r)
        os.close(w)
    assert outcome == [True]


def test_a_thread_that_dies_holding_a_robust_mutex_is_an_owner_death_too(mutex):
    thread = threading.Thread(target=mutex.lock)
    thread.start()
    thread.join()
    with pytest.raises(OwnerDead):
        mutex.lock(timeout_s=1)
    mutex.make_consistent()
    mutex.unlock()


def test_closing_a_robust_mutex_another_thread_holds_keeps_its_memory_mapped():
    # glibc links a held robust mutex into its holder thread's robust list, and
    # unlocking an older entry walks the list through it: had close() unmapped
    # it, that walk would crash the process.
    m, other = Mutex(), Mutex()
    held, done, seen = threading.Event(), threading.Event(), []

    def hold_both():
        other.lock()
        m.lock()                               # the list now runs: head -> m -> other
        held.set()
        done.wait(5)
        other.unlock()                         # found by walking through m
        try:
            m.unlock()
        except ValueError as e:                # closed meanwhile: refused, not touched
            seen.append(str(e))
    thread = threading.Thread(target=hold_both)
    thread.start()
    held.wait(5)
    m.close()
    done.set()
    thread.join(5)
    assert not thread.is_alive() and "used after close" in seen[0]
    assert other.lock(timeout_s=1)
    other.unlock()
    other.close()


def test_used_after_close_raises_value_error(mutex):
    mutex.close()
    for call in (mutex.lock, mutex.unlock, mutex.try_lock, mutex.make_consistent,
                 mutex.__enter__, lambda: mutex.__exit__(None, None, None)):
        with pytest.raises(ValueError, match="after close"):
            call()
    with pytest.raises(ValueError, match="after close"):
        with mutex:
            pass
    mutex.close()                              # idempotent


# `with mutex:` is C (osvirt._fastlock); everything but a free mutex takes its Python slow path.
def test_with_raises_owner_dead_holding_the_mutex(mutex):
    with Children() as kids:
        pid = kids.fork(lambda: (mutex.lock(), os.kill(os.getpid(), signal.SIGKILL)))
        assert kids.wait(pid) == -signal.SIGKILL
    with pytest.raises(OwnerDead):
        with mutex:
            pytest.fail("the block runs only when the mutex was acquired cleanly")
    assert not mutex.try_lock()                # held by this thread since the OwnerDead
    mutex.make_consistent()
    mutex.unlock()
    with mutex:
        assert not mutex.try_lock()


def _hold_then_stamp_the_unlock(mutex, fd):
    mutex.lock()
    os.write(fd, b"1")
    time.sleep(0.3)
    unlocking = time.monotonic_ns()
    mutex.unlock()
    os.write(fd, b"%d" % unlocking)


def test_with_waits_for_a_holder_in_another_process(mutex):
    # Judged by order, not by a duration from when we saw the child lock: a
    # parent preempted meanwhile would measure less than the child's hold.
    r, w = os.pipe()
    with Children() as kids:
        kids.fork(_hold_then_stamp_the_unlock, mutex, w)
        assert os.read(r, 1) == b"1"            # the child holds it now
        with mutex:
            acquired = time.monotonic_ns()      # CLOCK_MONOTONIC is one clock for every process
        unlocked = int(os.read(r, 32))
        os.close(r)
        os.close(w)
    assert unlocked <= acquired, f"`with` took the mutex {(unlocked - acquired) / 1e6:.3f} ms before the child unlocked it"


def test_with_reports_the_unlock_the_block_made_impossible(mutex):
    with pytest.raises(PermissionError, match="pthread_mutex_unlock") as caught:
        with mutex:
            mutex.unlock()                     # so __exit__'s unlock finds it not held
    assert caught.value.errno == errno.EPERM


def test_with_locking_twice_from_one_thread_is_edeadlk(mutex):
    with mutex:
        with pytest.raises(OSError) as caught:
            with mutex:
                pass
        assert caught.value.errno == errno.EDEADLK


def _mapped(address):
    with open("/proc/self/maps") as maps:
        for line in maps:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if start <= address < end:
                return True
    return False


def test_close_unmaps_the_memory_the_c_path_used(mutex):
    from osvirt.sync import _native
    address = _native.address_of(mutex._ptr)
    with mutex:
        pass
    assert _mapped(address)
    mutex.close()                              # unbinds the C path, which lets go of the mapping
    assert not _mapped(address)


def test_a_forked_childs_close_only_unmaps(mutex, counters):
    with Children() as kids:
        pid = kids.fork(lambda: (mutex.close(), mutex.closed or 1)[1] and 0)
        assert kids.wait(pid) == 0
    assert mutex.try_lock()                    # not destroyed by the child
    mutex.unlock()


def test_unrelated_processes_share_a_named_mutex(counters):
    m = Mutex(named=True)
    region = SharedRegion(8, named=True)
    try:
        assert m.where == f"/dev/shm{m.name} (named POSIX shared memory)"
        assert os.path.exists(f"/dev/shm{m.name}")
        script = ("import sys\nfrom osvirt.sync import Mutex, SharedRegion, workloads\n"
                  "m, r = Mutex.open(sys.argv[1]), SharedRegion.open(sys.argv[2])\n"
                  "workloads.increment(r.view('q'), 20000, m)\nm.close(); r.close()\n")
        with Children() as kids:
            procs = [kids.spawn([sys.executable, "-c", script, m.name, region.name]) for _ in range(2)]
            workloads.increment(region.view("q"), 20000, m)
            assert [p.wait(60) for p in procs] == [0, 0]
        assert region.view("q")[0] == 60000
        assert os.path.exists(f"/dev/shm{m.name}")   # the openers did not unlink it
    finally:
        m.close()
        region.close()
    assert not os.path.exists(f"/dev/shm{m.name}")


def test_opening_a_name_of_another_kind_is_value_error():
    region = SharedRegion(64, named=True)
    try:
        with pytest.raises(ValueError, match="not an osvirt.sync 'mutex'"):
            Mutex.open(region.name)
    finally:
        region.close()


@pytest.mark.parametrize("robust", [1, None, "yes"])
def test_robust_must_be_a_bool(robust):
    with pytest.raises(TypeError, match="robust"):
        Mutex(robust=robust)


class _Interrupted(Exception):
    pass


def _raise_interrupted(signo, frame):
    raise _Interrupted


def test_a_signal_handler_runs_within_a_slice_while_lock_waits(mutex):
    # What Ctrl-C needs: the untimed wait returns to Python every SLICE_S.
    previous = signal.signal(signal.SIGUSR1, _raise_interrupted)
    try:
        with Children() as kids:
            kids.fork_ready(_hold, mutex)
            timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
            timer.start()
            start = time.monotonic()
            with pytest.raises(_Interrupted):
                mutex.lock()
            assert time.monotonic() - start < 0.2 + 0.1 + 0.5   # the slice, and slack for load
            timer.join()
    finally:
        signal.signal(signal.SIGUSR1, previous)


@settings(max_examples=200, deadline=None)
@given(timeout_s=st.one_of(st.none(), st.floats(allow_nan=True), st.integers(), st.text(max_size=3),
                           st.booleans()))
def test_no_timeout_crashes_anything(timeout_s):
    m = Mutex()
    try:
        try:
            acquired = m.lock(timeout_s=timeout_s)
        except (TypeError, ValueError):
            assert m.try_lock()                # refused before anything was locked
        else:
            assert acquired is True
        m.unlock()
    finally:
        m.close()
