import time

import pytest

from osvirt.process import Children
from osvirt.sync import Barrier, SharedRegion, workloads


def test_no_party_starts_a_phase_before_all_finished_the_last():
    parties, phases = 3, 3
    with Barrier(parties) as barrier, SharedRegion(8 * 3 * parties * phases) as region:
        view = region.view("q")
        stamps, serials = view[:2 * parties * phases], view[2 * parties * phases:3 * parties * phases]
        with Children() as kids:
            pids = [kids.fork(workloads.run_phases, barrier, me, parties, phases, stamps, serials, 0.01)
                    for me in range(parties)]
            assert [kids.wait(pid, timeout_s=30) for pid in pids] == [0] * parties
        for phase in range(phases - 1):
            ends = [stamps[(phase * parties + p) * 2 + 1] for p in range(parties)]
            starts = [stamps[((phase + 1) * parties + p) * 2] for p in range(parties)]
            assert min(starts) >= max(ends)
        assert [sum(serials[k * parties:(k + 1) * parties]) for k in range(phases)] == [1] * phases  # one index 0


def _arrive_late(barrier, arrived):
    time.sleep(0.2)
    arrived[0] = time.monotonic_ns()  # CLOCK_MONOTONIC is one clock for every process
    barrier.wait()


def test_wait_blocks_until_the_last_party_arrives():
    # Judged by order, not by a duration: a duration measured from after fork()
    # shrinks when the parent is preempted while the child sleeps.
    with Barrier(2) as barrier, SharedRegion(8) as region:
        arrived = region.view("q")
        with Children() as kids:
            pid = kids.fork(_arrive_late, barrier, arrived)
            barrier.wait()
            released = time.monotonic_ns()
            assert kids.wait(pid, timeout_s=30) == 0
        assert 0 < arrived[0] <= released


def test_a_named_barrier_opens_by_name_with_its_parties():
    with Barrier(4, named=True) as barrier:
        opened = Barrier.open(barrier.name)
        assert opened.parties == 4 and opened.where == barrier.where
        opened.close()


@pytest.mark.parametrize("parties, error", [(0, ValueError), (-1, ValueError), (2 ** 62 + 1, ValueError),
                                            (1.0, TypeError), (True, TypeError)])
def test_bad_parties_are_refused(parties, error):
    with pytest.raises(error, match="parties"):
        Barrier(parties)


def test_used_after_close_is_value_error():
    barrier = Barrier(1)
    barrier.close()
    with pytest.raises(ValueError, match="after close"):
        barrier.wait()
