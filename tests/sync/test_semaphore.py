import errno
import signal
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st
import sysv_ipc

from osvirt.process import Children
from osvirt.sync import SEM_VALUE_MAX, SYSV_VALUE_MAX, Mutex, Semaphore, SharedRegion, SysVSemaphore, workloads
from osvirt.sync.workloads import OCCUPANCY


def test_a_semaphore_of_k_admits_exactly_k_of_more_contenders():
    k, contenders = 2, 5
    for _ in range(3):                         # a loaded machine may never fill it: retry
        with SharedRegion(24) as region:
            sem, lock, stats = Semaphore(k), Mutex(), region.view("q")
            with Children() as kids:
                pids = [kids.fork(workloads.occupy, sem, lock, stats, 3, 0.02) for _ in range(contenders)]
                assert [kids.wait(pid, timeout_s=30) for pid in pids] == [0] * contenders
            most, entries = stats[OCCUPANCY["max"]], stats[OCCUPANCY["entries"]]
            sem.close()
            lock.close()
        assert most <= k and entries == 3 * contenders
        if most == k:
            break
    assert most == k


def test_acquire_counts_down_then_times_out():
    with_value = Semaphore(2)
    try:
        assert with_value.acquire() and with_value.acquire(timeout=0)
        assert with_value.value == 0
        start = time.monotonic()
        assert with_value.acquire(timeout=0.15) is False
        assert 0.14 <= time.monotonic() - start < 2
        with_value.release()
        assert with_value.value == 1
    finally:
        with_value.close()


def test_release_in_another_process_wakes_a_waiting_thread():
    sem = Semaphore(0)
    got = []
    thread = threading.Thread(target=lambda: got.append(sem.acquire(timeout=5)))
    thread.start()
    try:
        with Children() as kids:
            assert kids.wait(kids.fork(lambda: (time.sleep(0.1), sem.release())[1])) == 0
        thread.join(5)
        assert got == [True] and sem.value == 0
    finally:
        sem.close()


def test_a_posix_semaphore_is_not_given_back_when_its_holder_dies():
    sem = Semaphore(1)
    try:
        with Children() as kids:
            pid = kids.fork_ready(workloads.hold_until_killed, sem)
            assert workloads.kill_and_reap(kids, pid) == -signal.SIGKILL
        assert sem.value == 0
    finally:
        sem.close()


def test_a_named_semaphore_is_shared_with_an_unrelated_process():
    sem = Semaphore(0, named=True)
    try:
        script = "import sys\nfrom osvirt.sync import Semaphore\ns = Semaphore.open(sys.argv[1]); s.release(); s.release()\n"
        with Children() as kids:
            assert kids.spawn([sys.executable, "-c", script, sem.name]).wait(30) == 0
        assert sem.value == 2
    finally:
        sem.close()


@pytest.mark.parametrize("value, error", [(-1, ValueError), (SEM_VALUE_MAX + 1, ValueError),
                                          (1.0, TypeError), (None, TypeError)])
def test_bad_values_are_refused(value, error):
    with pytest.raises(error, match="value"):
        Semaphore(value)


def test_release_past_sem_value_max_is_eoverflow():
    sem = Semaphore(SEM_VALUE_MAX)
    try:
        with pytest.raises(OSError, match="sem_post") as caught:
            sem.release()
        assert caught.value.errno == errno.EOVERFLOW
    finally:
        sem.close()


def test_sysv_semaphore_with_sem_undo_is_given_back_by_the_kernel():
    sem = SysVSemaphore(1, undo=True)
    try:
        assert sem.undo and f"id {sem.id}" in sem.where
        with Children() as kids:
            pid = kids.fork_ready(workloads.hold_until_killed, sem)
            assert sem.value == 0 and sem.last_pid == pid
            assert workloads.kill_and_reap(kids, pid) == -signal.SIGKILL
        assert sem.value == 1                  # the kernel undid the child's -1
        ipcs = subprocess.run(["ipcs", "-s", "-i", str(sem.id)], capture_output=True, text=True)
        if ipcs.returncode == 0:               # ipcs agrees
            assert "semnum" in ipcs.stdout
    finally:
        sem.close()


def test_sysv_semaphore_without_undo_stays_taken():
    sem = SysVSemaphore(1, undo=False)
    try:
        with Children() as kids:
            pid = kids.fork_ready(workloads.hold_until_killed, sem)
            workloads.kill_and_reap(kids, pid)
        assert sem.value == 0
    finally:
        sem.close()


def test_sysv_acquire_non_blocking_and_open_by_key():
    sem = SysVSemaphore(1)
    key = sem.key
    try:
        assert sem.acquire(blocking=False) and not sem.acquire(blocking=False)
        other = SysVSemaphore.open(sem.key)
        other.release()
        assert sem.value == 1
        other.close()                          # not the creator: the set stays
        assert sem.value == 1
    finally:
        sem.close()
    with pytest.raises(sysv_ipc.ExistentialError):
        SysVSemaphore.open(key)                # the creator removed it


@pytest.mark.parametrize("value, error", [(-1, ValueError), (SYSV_VALUE_MAX + 1, ValueError), ("1", TypeError)])
def test_sysv_bad_values_are_refused(value, error):
    with pytest.raises(error, match="value"):
        SysVSemaphore(value)


def test_used_after_close_is_value_error():
    sem, sysv = Semaphore(1), SysVSemaphore(1)
    sem.close()
    sysv.close()
    for call in (sem.acquire, sem.release, lambda: sem.value, sysv.acquire, sysv.release, lambda: sysv.value,
                 sem.__enter__, lambda: sem.__exit__(None, None, None), lambda: sem.acquire(timeout=0)):
        with pytest.raises(ValueError, match="after close"):
            call()


# acquire, release and `with` are C (osvirt._fastlock) until they need to wait or fail.
def test_with_and_acquire_wait_for_a_release_from_another_thread():
    sem = Semaphore(0)
    try:
        for take in (sem.acquire, sem.__enter__):
            timer = threading.Timer(0.2, sem.release)
            t0 = time.monotonic()
            timer.start()
            take()
            waited = time.monotonic() - t0
            timer.join()
            assert 0.15 < waited < 5, f"{take.__name__} returned after {waited:.3f} s, the release came at 0.2 s"
            assert sem.value == 0
        sem.release()
        with sem:                              # count 1: taken without a wait
            assert sem.value == 0
        assert sem.value == 1                  # __exit__ posted
    finally:
        sem.close()


def test_a_timed_acquire_keeps_its_deadline_across_signal_handlers():
    """sem_clockwait ends with EINTR on every handled signal (SA_RESTART or not): a
    handler that returns must neither end the wait nor restart its timeout."""
    sem, runs = Semaphore(0), []
    old = signal.signal(signal.SIGALRM, lambda *_: runs.append(time.monotonic()))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
        t0 = time.monotonic()
        assert sem.acquire(timeout=0.5) is False
        waited = time.monotonic() - t0
        signal.setitimer(signal.ITIMER_REAL, 0)
        assert len(runs) >= 3, f"only {len(runs)} SIGALRM handler runs during a 0.5 s wait"
        assert 0.45 < waited < 3, f"acquire(timeout=0.5) returned after {waited:.3f} s"
        threading.Timer(0.3, sem.release).start()
        signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
        assert sem.acquire() is True           # untimed: handlers run, the wait goes on
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        sem.close()


@pytest.mark.parametrize("args, kwargs, error", [
    ((), {"timeout": "1"}, TypeError), ((False, 1), {}, ValueError), ((True, 1e300), {}, OverflowError),
    ((True, 1, 2), {}, TypeError), ((), {"timeout_s": 1}, TypeError),
])
def test_acquire_checks_its_arguments_before_any_call(args, kwargs, error):
    sem = Semaphore(1)
    try:
        with pytest.raises(error):
            sem.acquire(*args, **kwargs)
        assert sem.value == 1                  # nothing taken
    finally:
        sem.close()


@settings(max_examples=100, deadline=None)
@given(value=st.one_of(st.integers(), st.floats(), st.none(), st.booleans()))
def test_no_initial_value_crashes_anything(value):
    try:
        sem = Semaphore(value)
    except (TypeError, ValueError):
        assert not (type(value) is int and 0 <= value <= SEM_VALUE_MAX)
    else:
        assert sem.value == value
        sem.close()
