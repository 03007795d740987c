import resource

from osvirt.bench import memory


def _minflt():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def test_each_page_fault_batch_faults_once_per_page_it_times():
    for primitive in (p for p in memory.PRIMITIVES if p.name.startswith("page-fault")):
        for batch in (primitive.python, primitive.peer[1]):
            before = _minflt()
            assert batch.fn(256) > 0
            assert _minflt() - before >= 256, primitive.name
