import importlib.util
import os

import pytest

from osvirt.bench import harness, report


@pytest.fixture(scope="module")
def result():
    return harness.run([harness.Primitive("getppid", "null system call", python=os.getppid, c="getppid",
                                          floor=("os.getppid again", os.getppid), note="a note")],
                       batches=3, min_batch_ns=1_000_000)


def test_duration_picks_the_unit():
    assert report.duration(0.278) == "0.278 ns"
    assert report.duration(213.4) == "213 ns"
    assert report.duration(5800) == "5.8 µs"
    assert report.duration(1_380_000) == "1.38 ms"
    assert report.duration(2e9) == "2 s"
    # rounded before the unit is chosen: never "1e+03 ns"
    assert report.duration(999.7) == "1 µs" and report.duration(999_600) == "1 ms"
    assert report.duration(999.4) == "999 ns"
    assert report._rate(999.7e6) == "1 GB/s" and report._rate(5e5) == "500 kB/s"


def test_table_shows_each_series_the_overhead_and_what_each_row_does(result):
    text = report.table(result)
    row = result["primitives"][1]
    assert "loop overhead per operation" in text and report.duration(result["loop_overhead_ns"]["python"]) in text
    assert report.duration(row["c"]["median_ns"]) in text and f"{row['python_over_c']:4.2f}x" in text
    assert "null system call" in text and "note: a note" in text
    assert result["cpu"] in text


def test_table_and_markdown_give_the_three_ratios_of_a_row_with_a_floor(result):
    row = result["primitives"][1]
    assert row["python_over_floor"] == row["python"]["median_ns"] / row["floor"]["median_ns"]
    assert row["floor_over_c"] == row["floor"]["median_ns"] / row["c"]["median_ns"]
    assert f"{row['python_over_floor']:4.2f}x" in report.table(result)
    (line,) = [line for line in report.markdown(result).splitlines() if line.startswith("| `getppid`")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:5] == [report.duration(row[v]["median_ns"]) for v in ("python", "floor", "c")]
    assert cells[5:8] == [f"{row[k]:4.2f}" for k in ("python_over_floor", "floor_over_c", "python_over_c")]
    assert "| primitive | CPU | Python | floor | C |" in report.markdown(result)


def test_plot_without_matplotlib_names_the_extra(monkeypatch, result, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(report.PlotUnavailable, match=r"pip install osvirt\[plot\]"):
        report.plot(result, tmp_path / "bench.png")
    assert not (tmp_path / "bench.png").exists()


def test_plot_writes_a_png(result, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib, the optional extra osvirt[plot], is not installed")
    path = tmp_path / "bench.png"
    report.plot(result, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_table_shows_the_minor_faults_of_children_an_operation_starts():
    fork = harness.Primitive("fork-c", "fork", python=lambda: os.waitpid(os.fork() or os._exit(0), 0), c="fork")
    result = harness.run([fork], batches=2, min_batch_ns=1_000_000)
    faults = result["primitives"][1]["c"]["child_minor_faults_per_op"]
    assert faults >= 1 and f"{faults:.0f} minor faults in the child" in report.table(result)
    assert result["primitives"][0]["c"]["child_minor_faults_per_op"] == 0  # the loop starts none
