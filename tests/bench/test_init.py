import pytest

from osvirt import bench, env
from osvirt.bench import harness


def test_every_primitive_has_a_unique_name_and_a_c_loop():
    names = [p.name for p in bench.PRIMITIVES]
    assert len(names) == len(set(names))
    for p in bench.PRIMITIVES:
        assert bench._native.has_c_loop(p.c), p.name


def test_select_takes_primitive_and_area_names_in_table_order():
    assert bench.select() == bench.PRIMITIVES
    assert [p.name for p in bench.select(["pipe-bw", "getppid"])] == ["getppid", "pipe-bw"]
    assert bench.select(["ipc"]) == bench.AREAS["ipc"]
    with pytest.raises(ValueError, match="unknown primitive or area 'nope'"):
        bench.select(["getppid", "nope"])


@pytest.mark.parametrize("primitive", bench.PRIMITIVES, ids=lambda p: p.name)
def test_every_series_of_every_primitive_runs_a_tiny_batch(primitive):
    refused = [answer.reason for answer in map(env.can, primitive.needs) if not answer]
    if refused:  # what `osvirt bench` says when it skips the row
        pytest.skip(f"{primitive.name} needs {', '.join(primitive.needs)}: {'; '.join(refused)}")
    for variant in primitive.ways():
        result = harness.measure(primitive, variant, batches=1, n=2)
        assert result["elapsed_ns"][0] > 0, variant


def test_all_is_exported():
    for name in bench.__all__:
        assert hasattr(bench, name)


# Rows whose Python path is already the barest stdlib call (os.getppid, os.write
# and os.read, ...): their floor would be the same series again.
AT_THEIR_FLOOR = {"loop", "getppid", "ctx-switch", "pipe-rtt-pinned", "pipe-rtt", "pipe-bw-pinned", "pipe-bw",
                  "signal-self", "fsync-4k"}


def test_every_row_that_takes_an_osvirt_path_has_a_floor():
    without = {p.name for p in bench.PRIMITIVES if p.floor is None}
    assert without == AT_THEIR_FLOOR, "a new row needs a floor, or a place here with the reason"
    for p in bench.PRIMITIVES:
        if p.name in AT_THEIR_FLOOR:
            assert "osvirt." not in p.does, p.name  # its Python path is not osvirt's
