from osvirt.memory import PAGE_SIZE, Mapping, children_faults, usage
from osvirt.process import Children


def _proc_self_stat_faults():
    fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    return int(fields[7]), int(fields[9])  # minflt, majflt: fields 10 and 12 of stat(5)


def test_usage_agrees_with_proc_self_stat():
    before = usage()
    minflt, majflt = _proc_self_stat_faults()
    after = usage()
    assert before.minflt <= minflt <= after.minflt
    assert before.majflt <= majflt <= after.majflt


def _touch_cost(pages):
    with Mapping(pages * PAGE_SIZE) as m:
        before = usage()
        m.touch(write=True)
        return usage() - before


def test_usage_sees_the_faults_and_rss_of_touching_memory():
    pages = 4096
    for _attempt in range(3):  # the interpreter's own faults between the snapshots are noise
        cost = _touch_cost(pages)
        if pages <= cost.minflt <= pages * 1.05 and cost.rss_bytes >= pages * PAGE_SIZE * 0.95:
            break
    assert pages <= cost.minflt <= pages * 1.05
    assert cost.rss_bytes >= pages * PAGE_SIZE * 0.95


def _touch(m):
    m.touch(write=True)


def test_children_faults_counts_what_a_reaped_child_paid():
    with Mapping(512 * PAGE_SIZE) as m, Children() as kids:
        before = children_faults()[0]
        kids.wait(kids.fork(_touch, m))
        assert children_faults()[0] - before >= 512
