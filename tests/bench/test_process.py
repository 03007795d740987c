import os
import resource

from osvirt.bench import process, harness


def _switches():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


def test_with_the_yielding_partner_on_its_cpu_each_sched_yield_switches():
    ctx = next(p for p in process.PRIMITIVES if p.name == "ctx-switch")
    assert ctx.pin
    before_affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {harness.pin_cpu()})
    try:
        with ctx.python.open() as sched_yield:
            for _ in range(100):  # the partner gets going
                sched_yield()
            before = _switches()
            for _ in range(2000):
                sched_yield()
            assert _switches() - before >= 1800  # one switch away (and back) per call
    finally:
        os.sched_setaffinity(0, before_affinity)


def test_a_python_fork_child_faults_far_more_than_a_c_one():
    fork = next(p for p in process.PRIMITIVES if p.name == "fork")
    per_child = {}
    for variant in ("python", "c"):
        result = harness.measure(fork, variant, batches=2, n=5, min_batch_ns=1_000_000)
        per_child[variant] = result["child_minor_faults"] / (result["n"] * 2)
    # the interpreter's child writes to refcounts all over its heap; C's child only _exit()s
    assert per_child["python"] > 50 and per_child["python"] > 3 * per_child["c"], per_child
