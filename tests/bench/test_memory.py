import mmap
import resource

from osvirt.bench import memory


def _minflt():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def test_the_python_batch_faults_once_per_page_it_times():
    for flags in (memory.PRIVATE, mmap.MAP_SHARED):
        before = _minflt()
        assert memory._touch_fresh(flags).fn(256) > 0
        assert _minflt() - before >= 256
