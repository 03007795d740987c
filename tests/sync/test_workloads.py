from osvirt.process import Children
from osvirt.sync import Mutex, SharedRegion, workloads
from osvirt.sync.workloads import PAIR


def test_increment_in_one_process_counts_exactly():
    with SharedRegion(8) as region:
        counter = region.view("q")
        workloads.increment(counter, 1000, None, True)
        assert counter[0] == 1000


def test_repair_pair_completes_a_half_update_and_marks_the_mutex_consistent():
    m = Mutex()
    try:
        with SharedRegion(24) as region, Children() as kids:
            pair = region.view("q")
            pid = kids.fork_ready(workloads.hold_mid_update, m, pair)
            assert workloads.kill_and_reap(kids, pid) == -9
            assert workloads.repair_pair(m, pair) == (True, (1, 0))
            assert (pair[PAIR["first"]], pair[PAIR["second"]], pair[PAIR["repairs"]]) == (1, 1, 1)
            assert workloads.repair_pair(m, pair) == (False, (1, 1))
    finally:
        m.close()
