"""`osvirt bench` end to end: the smoke test CI runs."""
import json
import os
import subprocess
import sys

from osvirt import bench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _osvirt(*args):
    return subprocess.run([sys.executable, "-m", "osvirt", "bench", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def test_quick_json_has_a_row_with_positive_numbers_for_every_primitive():
    proc = _osvirt("--quick", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    rows = {row["name"]: row for row in result["primitives"]}
    skipped = {s["name"] for s in result["skipped"]}
    assert set(rows) | skipped == {p.name for p in bench.PRIMITIVES}
    for p in bench.PRIMITIVES:
        if p.name in skipped:
            continue
        row = rows[p.name]
        assert not row["errors"], (p.name, row["errors"])
        for variant in p.ways():
            series = row[variant]
            assert len(series["per_op_ns"]) == result["batches"] == bench.BATCHES
            assert series["median_ns"] > 0 and series["min_ns"] > 0 and series["mad_ns"] >= 0, (p.name, variant)
    assert "[ 1/" in proc.stderr  # the progress display


def test_names_select_and_unknown_names_are_a_usage_error():
    proc = _osvirt("--list", "memory")
    assert proc.returncode == 0
    assert [line.split()[0] for line in proc.stdout.splitlines()] == [p.name for p in bench.AREAS["memory"]]
    proc = _osvirt("no-such-primitive")
    assert proc.returncode == 2 and "unknown primitive or area 'no-such-primitive'" in proc.stderr


def test_batches_sets_each_series_batch_count_and_must_be_a_whole_number_from_1():
    proc = _osvirt("--quick", "--json", "--batches", "3", "getppid")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["batches"] == 3
    for row in result["primitives"]:
        for variant in ("python", "c"):
            assert len(row[variant]["per_op_ns"]) == 3, (row["name"], variant)
    for bad in ("0", "-2", "two"):
        proc = _osvirt("--batches", bad, "getppid")
        assert proc.returncode == 2 and f"a whole number of batches >= 1, not '{bad}'" in proc.stderr


def test_workers_spread_each_series_over_that_many_processes_and_must_be_a_whole_number_from_1():
    proc = _osvirt("--quick", "--json", "--batches", "4", "--workers", "3", "getppid")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["workers"] == 3
    for row in result["primitives"]:
        for variant in ("python", "c"):
            series = row[variant]
            assert len(series["per_op_ns"]) == 4 and len(set(series["pids"])) == 3, (row["name"], variant)
    for bad in ("0", "-1", "seven"):
        proc = _osvirt("--workers", bad, "getppid")
        assert proc.returncode == 2 and f"a whole number of workers >= 1, not '{bad}'" in proc.stderr


def test_the_help_names_the_harness_defaults():
    text = " ".join(_osvirt("--help").stdout.split())
    assert f"(default {bench.BATCHES})" in text and f"in {bench.BATCHES} batches" in text
    assert f"(default {bench.WORKERS})" in text and f"over {bench.WORKERS} processes" in text


def test_ctrl_c_mid_run_exits_130_and_leaves_nothing():
    # The leak guard checks that no child, queue, semaphore or file is left.
    import signal
    proc = subprocess.Popen([sys.executable, "-m", "osvirt", "bench", "posix-mq", "sysv-mq", "semaphore",
                             "cond-rtt", "fsync-4k"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if line.startswith("[ 3/"):  # the queues have run, the semaphore's worker is up
                break
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        proc.kill()
        proc.wait()
