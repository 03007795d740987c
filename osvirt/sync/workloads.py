"""What the sync demo and its tests run in their child processes.

Each function is a child's whole life (pass it to `Children.fork`) or the
parent's side of an experiment, working on counters in a SharedRegion viewed
as int64 ('q'). They measure; they do not judge: the demo and the tests
compare what they record with what theory says.
"""
import os
import signal
import sys
import time
from collections.abc import Iterable
from typing import NoReturn

from osvirt.errors import OwnerDead
from osvirt.process.spawn import ready
from osvirt.process import Children
from osvirt.sync.barrier import Barrier
from osvirt.sync.condition import Condition
from osvirt.sync.mutex import Mutex
from osvirt.sync.region import SharedRegion
from osvirt.sync.semaphore import Semaphore, SysVSemaphore

__all__ = ["increment", "increment_by_name", "update_pair", "hold_mid_update", "hold_until_killed", "repair_pair", "occupy", "produce", "consume",
           "run_phases", "kill_and_reap", "PAIR", "OCCUPANCY", "BUFFER"]


def increment(counter: memoryview, times: int, mutex: Mutex | None = None, yield_between: bool = False) -> None:
    """counter[0] += 1, `times` times, as a read and a separate write (under `mutex` if given).

    `yield_between` calls sched_yield(2) between the read and the write, so
    on a loaded CPU another process runs there: without a mutex its update
    is overwritten (a lost update).
    """
    for _ in range(times):
        if mutex is not None:
            mutex.lock()
        value = counter[0]
        if yield_between:
            os.sched_yield()
        counter[0] = value + 1
        if mutex is not None:
            mutex.unlock()


def increment_by_name(mutex_name: str, region_name: str, times: int) -> None:
    """In an unrelated process: open a named mutex and region, and increment under the mutex.

    Run as `python -m osvirt.sync.workloads MUTEX_NAME REGION_NAME TIMES`.
    """
    mutex, region = Mutex.open(mutex_name), SharedRegion.open(region_name)
    try:
        increment(region.view("q"), times, mutex)
    finally:
        mutex.close()
        region.close()


# A pair of counters that must stay equal outside the critical section:
# pair[FIRST] is bumped, then pair[SECOND]. A holder killed between the two
# leaves them unequal: the state a robust mutex's next holder must repair.
PAIR = {"first": 0, "second": 1, "repairs": 2}


def _hang() -> NoReturn:
    while True:
        time.sleep(60)


def update_pair(mutex: Mutex, pair: memoryview, times: int | None = None, ready_fd: int | None = None) -> None:
    """Bump both halves of the pair under `mutex`, `times` times (None: until killed).

    With `ready_fd`, writes one byte there once the first update is done, so a
    parent knows the loop runs (and holds the mutex much of the time) before it kills.
    """
    done = 0
    while times is None or done < times:
        with mutex:
            pair[PAIR["first"]] += 1
            os.sched_yield()  # widen the window in which a kill leaves the pair unequal
            pair[PAIR["second"]] += 1
        done += 1
        if ready_fd is not None and done == 1:
            ready(ready_fd)


def hold_mid_update(mutex: Mutex, pair: memoryview, ready_fd: int) -> NoReturn:
    """Lock `mutex`, do half of a pair update, tell the parent, and hang there until killed."""
    mutex.lock()
    pair[PAIR["first"]] += 1
    ready(ready_fd)
    _hang()


def hold_until_killed(semaphore: Semaphore | SysVSemaphore, ready_fd: int) -> NoReturn:
    """Take one unit of `semaphore`, tell the parent, and hang until killed."""
    semaphore.acquire()
    ready(ready_fd)
    _hang()


def repair_pair(mutex: Mutex, pair: memoryview, timeout_s: float = 5.0) -> tuple[bool, tuple[int, int]]:
    """Lock `mutex`; on OwnerDead make the pair equal again and mark it consistent.

    Returns (owner_died, pair_before_repair). Leaves the mutex unlocked.
    """
    try:
        if not mutex.lock(timeout_s):
            raise TimeoutError(f"pthread_mutex_lock: {mutex.where} still held after {timeout_s} s")
        owner_died = False
    except OwnerDead:
        owner_died = True
    before = (pair[PAIR["first"]], pair[PAIR["second"]])
    if owner_died:
        pair[PAIR["second"]] = pair[PAIR["first"]]  # the interrupted update, completed
        pair[PAIR["repairs"]] += 1
        mutex.make_consistent()
    mutex.unlock()
    return owner_died, before


# Occupancy of a semaphore: how many are inside now, the most ever seen, entries.
OCCUPANCY = {"inside": 0, "max": 1, "entries": 2}


def occupy(semaphore: Semaphore, mutex: Mutex, stats: memoryview, rounds: int, hold_s: float) -> None:
    """Enter `semaphore` `rounds` times, hold it `hold_s`, counting occupancy in `stats` under `mutex`."""
    for _ in range(rounds):
        with semaphore:
            with mutex:
                stats[OCCUPANCY["inside"]] += 1
                stats[OCCUPANCY["entries"]] += 1
                stats[OCCUPANCY["max"]] = max(stats[OCCUPANCY["max"]], stats[OCCUPANCY["inside"]])
            time.sleep(hold_s)
            with mutex:
                stats[OCCUPANCY["inside"]] -= 1


# A bounded ring buffer: head (next to take), tail (next to put), then the slots.
BUFFER = {"head": 0, "tail": 1, "slots": 2}


def produce(cond_not_full: Condition, cond_not_empty: Condition, ring: memoryview, capacity: int,
            items: Iterable[int]) -> None:
    """Put each of `items` into the ring, waiting while it is full."""
    with cond_not_full:
        for item in items:
            cond_not_full.wait_for(lambda: ring[BUFFER["tail"]] - ring[BUFFER["head"]] < capacity)
            ring[BUFFER["slots"] + ring[BUFFER["tail"]] % capacity] = item
            ring[BUFFER["tail"]] += 1
            cond_not_empty.notify()


def consume(cond_not_full: Condition, cond_not_empty: Condition, ring: memoryview, capacity: int, count: int,
            received: memoryview) -> None:
    """Take `count` items from the ring, waiting while it is empty; received[i] is the i-th taken."""
    with cond_not_empty:
        for i in range(count):
            cond_not_empty.wait_for(lambda: ring[BUFFER["tail"]] > ring[BUFFER["head"]])
            received[i] = ring[BUFFER["slots"] + ring[BUFFER["head"]] % capacity]
            ring[BUFFER["head"]] += 1
            cond_not_full.notify()


def run_phases(barrier: Barrier, me: int, parties: int, phases: int, stamps: memoryview, serials: memoryview,
               work_s: float) -> None:
    """Party `me` runs `phases` phases, each `work_s` (scaled by rank) then barrier.wait().

    stamps[(phase * parties + me) * 2] / [+ 1] get CLOCK_MONOTONIC ns at the
    phase's start and end; serials[phase * parties + me] is 1 if this party
    arrived first at that phase's barrier (wait() returned index 0).
    """
    for phase in range(phases):
        slot = phase * parties + me
        stamps[slot * 2] = time.monotonic_ns()
        time.sleep(work_s * (1 + me) / parties)  # unequal work: the fast wait for the slow
        stamps[slot * 2 + 1] = time.monotonic_ns()
        serials[slot] = int(barrier.wait() == 0)


def kill_and_reap(children: Children, pid: int) -> int:
    """SIGKILL a child and reap it; its wait status as an exit code (-9)."""
    os.kill(pid, signal.SIGKILL)
    return children.wait(pid)


if __name__ == "__main__":
    increment_by_name(sys.argv[1], sys.argv[2], int(sys.argv[3]))
