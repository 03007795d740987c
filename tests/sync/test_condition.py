import os
import signal
import threading
import time

import pytest

from osvirt.process import Children
from osvirt.sync import Condition, Mutex, SharedRegion, workloads


@pytest.fixture
def cond():
    m = Mutex()
    c = Condition(m)
    yield c
    c.close()
    m.close()


def test_wait_times_out_and_returns_holding_the_mutex(cond):
    with cond:
        start = time.monotonic()
        assert cond.wait(timeout=0.05) is False
        assert time.monotonic() - start >= 0.045
        assert not cond.lock.try_lock()       # held again by this thread


def test_wait_or_notify_without_holding_the_lock_is_runtime_error(cond):
    with pytest.raises(RuntimeError, match="un-acquired lock"):
        cond.wait(timeout=0.01)
    with pytest.raises(RuntimeError, match="un-acquired lock"):
        cond.notify()


def test_notify_from_another_process_wakes_the_waiter(cond):
    with SharedRegion(16) as region:
        flag = region.view("q")                # [set, the waiter holds the mutex]

        def set_and_notify():
            while flag[1] == 0:
                time.sleep(0.001)
            with cond:                         # free only once the waiter's wait released it
                flag[0] = 1
                cond.notify()
        with Children() as kids:
            pid = kids.fork(set_and_notify)
            with cond:
                flag[1] = 1                    # the child sets flag[0] only after our wait releases the mutex,
                assert flag[0] == 0            # so the wait below really waits (a fixed sleep did not, under load)
                assert cond.wait_for(lambda: flag[0] == 1, timeout=30)
            assert kids.wait(pid, timeout_s=30) == 0


def test_wait_for_gives_up_after_its_timeout(cond):
    with cond:
        start = time.monotonic()
        assert cond.wait_for(lambda: False, timeout=0.25) is False
        assert 0.24 <= time.monotonic() - start < 2


def test_notify_all_wakes_every_waiting_process(cond):
    with SharedRegion(16) as region:
        state = region.view("q")               # [go, woken]

        def waiter():
            with cond:
                cond.wait_for(lambda: state[0] == 1, timeout=10)
                state[1] += 1
        with Children() as kids:
            pids = [kids.fork(waiter) for _ in range(3)]
            time.sleep(0.1)
            with cond:
                state[0] = 1
                cond.notify_all()
            assert [kids.wait(pid, timeout_s=10) for pid in pids] == [0, 0, 0]
        assert state[1] == 3


def test_producer_and_consumer_pass_every_item_once_in_order(cond):
    not_empty = Condition(cond.lock)
    capacity, count = 3, 500
    with SharedRegion(8 * (2 + capacity)) as ring, SharedRegion(8 * count) as got:
        received = got.view("q")
        with Children() as kids:
            pids = [kids.fork(workloads.produce, cond, not_empty, ring.view("q"), capacity, range(1, count + 1)),
                    kids.fork(workloads.consume, cond, not_empty, ring.view("q"), capacity, count, received)]
            assert [kids.wait(pid, timeout_s=30) for pid in pids] == [0, 0]
        assert list(received)[:count] == list(range(1, count + 1))
    not_empty.close()


def test_a_waiting_thread_does_not_hold_the_gil(cond):
    woke = []

    def wait():
        with cond:
            woke.append(cond.wait_for(lambda: woke == ["go"] or len(woke) > 1, timeout=5))
    thread = threading.Thread(target=wait)
    thread.start()
    spins, end = 0, time.monotonic() + 0.2
    while time.monotonic() < end:
        spins += 1
    assert spins > 10_000 and thread.is_alive()
    with cond:
        woke.append("go")
        cond.notify()
    thread.join(5)
    assert woke[-1] is True


def test_close_returns_after_a_waiter_was_sigkilled(cond):
    with SharedRegion(8) as region:
        waiting = region.view("q")

        def wait_forever():
            with cond:
                waiting[0] = 1
                cond.wait_for(lambda: False)
        with Children() as kids:
            pid = kids.fork(wait_forever)
            deadline = time.monotonic() + 10
            while waiting[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            with cond:                         # acquired only once the child waits on cond
                os.kill(pid, signal.SIGKILL)   # killed inside pthread_cond_wait
                assert kids.wait(pid, timeout_s=10) == -signal.SIGKILL
    closer = threading.Thread(target=cond.close, daemon=True)
    closer.start()
    closer.join(5)
    assert not closer.is_alive() and cond.closed


def test_named_condition_follows_its_named_mutex_and_opens_by_name():
    m = Mutex(named=True)
    c = Condition(m)
    try:
        assert c.name is not None and c.where.startswith("/dev/shm/")
        other = Condition.open(c.name, Mutex.open(m.name))
        with other:
            assert other.wait(timeout=0.01) is False
        other.lock.close()
        other.close()
    finally:
        c.close()
        m.close()


def test_bad_use_is_refused(cond):
    with pytest.raises(TypeError, match="process-shared lock"):
        Condition(threading.Lock())
    with pytest.raises(TypeError, match="timeout"):
        cond.wait(timeout="0.1")
    cond.close()
    with pytest.raises(ValueError, match="after close"):
        cond.notify()
