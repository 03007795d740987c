import os
import time

import pytest

from osvirt.bench import harness
from osvirt.bench.harness import LOOP, Primitive, calibrate, measure, run, summarize, time_ops


def test_summarize_gives_median_min_and_mad_of_known_data():
    # median 3; deviations 2,1,0,1,97 -> MAD 1: one outlier moves neither
    assert summarize([1, 2, 3, 4, 100]) == {"median_ns": 3, "min_ns": 1, "mad_ns": 1}
    assert summarize([5, 1, 3, 2]) == {"median_ns": 2.5, "min_ns": 1, "mad_ns": 1.0}
    assert summarize([7.0]) == {"median_ns": 7.0, "min_ns": 7.0, "mad_ns": 0.0}


def test_time_ops_calls_the_operation_n_times():
    calls = []
    assert time_ops(lambda: calls.append(1), 1000) > 0
    assert len(calls) == 1000


def test_calibration_makes_a_batch_last_at_least_its_minimum():
    # sleep(0.3 ms) never returns early (under load it may return late), so
    # 4 of them always last 1 ms: calibration never needs more
    timed = lambda n: time_ops(lambda: time.sleep(0.0003), n)  # noqa: E731
    n, elapsed = calibrate(timed, 1_000_000)
    assert elapsed >= 1_000_000 and 1 <= n <= 4


def test_calibration_of_a_fast_operation_takes_many_per_batch():
    n, elapsed = calibrate(lambda n: time_ops(os.getppid, n), 1_000_000)
    assert elapsed >= 1_000_000
    assert n > 100  # a system call is well under 10 us


def test_measure_calibrates_then_times_batches_of_at_least_the_minimum():
    result = measure(LOOP, "c", batches=3, min_batch_ns=1_000_000)
    assert len(result["elapsed_ns"]) == 3 and all(e >= 1_000_000 for e in result["elapsed_ns"])
    assert result["n"] > 1000 and result["pid"] == os.getpid()
    # with n given, no calibration: that batch size, if its batches last long enough
    slow = Primitive("slow", "sleeps 0.3 ms", python=lambda: time.sleep(0.0003), c="empty")
    assert measure(slow, "python", batches=2, n=4, min_batch_ns=1_000_000)["n"] == 4
    # and if they do not, a larger one
    grown = measure(LOOP, "python", batches=2, n=10, min_batch_ns=1_000_000)
    assert grown["n"] > 10 and min(grown["elapsed_ns"]) >= 1_000_000


def test_run_spreads_the_batches_over_worker_processes_and_pins_where_asked():
    pinned = Primitive("pinned-getppid", "getppid, pinned", python=os.getppid, c="getppid", pin=True)
    result = run([pinned], batches=5, workers=2, min_batch_ns=1_000_000)
    loop, row = result["primitives"]
    assert loop["name"] == "loop"  # always first: the overhead every row includes
    assert result["loop_overhead_ns"]["c"] == loop["c"]["median_ns"] > 0
    for variant in ("python", "c"):
        series = row[variant]
        assert len(series["per_op_ns"]) == 5
        assert len(set(series["pids"])) == 2 and os.getpid() not in series["pids"]
        assert series["cpus"] == [harness.pin_cpu()] == [row["pinned"]]
        assert series["batch_ns_min"] >= 1_000_000
        assert series["min_ns"] <= series["median_ns"]
    assert loop["pinned"] is None and loop["c"]["cpus"] == sorted(os.sched_getaffinity(0))
    assert row["python_over_c"] == row["python"]["median_ns"] / row["c"]["median_ns"]


def _spin_1us():
    end = time.perf_counter_ns() + 1000
    while time.perf_counter_ns() < end:
        pass


def test_per_op_figures_times_n_are_batches_that_fit_in_the_run_s_wall_time():
    spin = Primitive("spin", "busy-waits 1 us", python=_spin_1us, c="empty")
    started = time.perf_counter_ns()
    result = run([spin], batches=3, workers=1, min_batch_ns=1_000_000)
    wall_ns = time.perf_counter_ns() - started
    series = result["primitives"][1]["python"]
    (n,) = series["n"]
    batches_ns = [per_op * n for per_op in series["per_op_ns"]]
    # Each batch lasted at least its minimum, and the timed batches are a part of the run.
    assert min(batches_ns) >= 1_000_000 and sum(batches_ns) <= wall_ns, (n, series["per_op_ns"], wall_ns)
    assert min(series["per_op_ns"]) >= 1000  # no operation ends before its busy wait


def test_a_failing_series_is_reported_with_its_error_and_the_rest_runs():
    broken = Primitive("broken", "reads a closed fd", python=lambda: os.read(-1, 1), c="getppid")
    row = run([broken], batches=2, min_batch_ns=1_000_000)["primitives"][1]
    assert row["python"] is None and "Bad file descriptor" in row["errors"]["python"]
    assert row["c"]["median_ns"] > 0


def test_a_primitive_the_environment_forbids_is_skipped_with_the_reason():
    needy = Primitive("needy", "needs /dev/kvm", python=os.getppid, c="getppid", needs=("kvm",))
    result = run([needy], batches=1, min_batch_ns=1_000_000)
    if result["skipped"]:
        from osvirt import env
        assert result["skipped"] == [{"name": "needy", "reason": env.can("kvm").reason}]
    else:
        assert result["primitives"][1]["name"] == "needy"


def test_run_refuses_batches_shorter_than_a_millisecond():
    with pytest.raises(ValueError, match="osvirt bench"):
        run([], min_batch_ns=999_999)


def _siblings_states():
    """{pid: state} of the other processes whose parent is this process's parent (the other workers)."""
    me, parent, states = os.getpid(), os.getppid(), {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(fields[1]) == parent:
                states[int(entry)] = fields[0]
    return states


def _recording_batch(path, variant):
    """A Batch that appends, to `path`, its variant and the states of the other workers while it runs."""
    def batch(n):
        started = time.perf_counter_ns()
        time.sleep(0.002)
        with open(path, "a") as f:
            f.write(f"{variant} {''.join(sorted(_siblings_states().values()))}\n")
        return time.perf_counter_ns() - started
    return harness.Batch(batch)


def test_the_series_batches_are_timed_in_rounds_while_the_other_workers_wait_stopped(tmp_path):
    path = str(tmp_path / "batches")
    both = Primitive("both", "sleeps 2 ms", python=_recording_batch(path, "python"), c="empty",
                     floor=("the same", _recording_batch(path, "floor")))
    result = run([both], batches=6, workers=2, min_batch_ns=1_000_000)
    assert not result["primitives"][1]["errors"]
    records = [line.split() for line in open(path)]
    # Each worker: its set-up (two calibration batches in the first, one warm-up in the
    # second, one worker started after the other), then 3 rounds of one batch each.
    first, second = records[:4 + 6], records[4 + 6:]
    assert [v for v, *_ in first[:4]] == ["python", "python", "floor", "floor"]
    assert [v for v, *_ in second[:2]] == ["python", "floor"] and len(second) == 2 + 6
    for timed in (first[4:], second[2:]):
        assert [{timed[i][0], timed[i + 1][0]} for i in range(0, 6, 2)] == [{"python", "floor"}] * 3
        # while one series' batch runs, the other two's workers (floor or Python, C) wait stopped (state T)
        assert all(states == ["TT"] for _, *states in timed), timed
