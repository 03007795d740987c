"""`osvirt bench`: what each primitive costs, from Python next to a C loop.

Every primitive is a small record (see harness.Primitive) in the module of
its area; `run()` measures them with the method harness.py describes, and
report.py turns the result into a table, JSON or a chart.

    >>> from osvirt import bench
    >>> result = bench.run(bench.select(["getppid"]))
    >>> result["primitives"][1]["c"]["median_ns"]    # [0] is the loop overhead
    167.3
"""
from collections.abc import Collection

from osvirt.bench import container, device, fs, ipc, memory, process, sync, vm
from osvirt.bench.harness import BATCHES, LOOP, WORKERS, Batch, Primitive, rig, run

__all__ = ["AREAS", "BATCHES", "LOOP", "PRIMITIVES", "WORKERS", "Batch", "Primitive", "rig", "run", "select"]

AREAS: dict[str, list[Primitive]] = {
    "process": process.PRIMITIVES,
    "ipc": ipc.PRIMITIVES,
    "memory": memory.PRIMITIVES,
    "fs": fs.PRIMITIVES,
    "sync": sync.PRIMITIVES,
    "device": device.PRIMITIVES,
    "vm": vm.PRIMITIVES,
    "container": container.PRIMITIVES,
}
PRIMITIVES = [LOOP] + [p for area in AREAS.values() for p in area]


def select(names: Collection[str] = ()) -> list[Primitive]:
    """The primitives named (a primitive's or an area's name), in table order;
    all of them when names is empty. ValueError names the unknown ones."""
    if not names:
        return list(PRIMITIVES)
    by_name = {p.name: [p] for p in PRIMITIVES} | AREAS
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"osvirt bench: unknown primitive or area {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(by_name)}")
    chosen = {id(p) for n in names for p in by_name[n]}
    return [p for p in PRIMITIVES if id(p) in chosen]
