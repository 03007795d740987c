"""The bench's result as a table (text) or a chart (PNG, with matplotlib)."""
import importlib.util
import os
from collections.abc import Iterable
from typing import Literal

from osvirt.bench.harness import VARIANTS, Result, Row

__all__ = ["duration", "table", "markdown", "PlotUnavailable", "require_matplotlib", "plot"]

SERIES = VARIANTS
COLORS = {"python": "#3572a5", "floor": "#8fb3d9", "c": "#555555", "peer": "#e8a33d"}
LABELS = {"python": "Python", "floor": "Python floor", "c": "C loop", "peer": "Python peer"}
# The ratios on a row's Python line: what osvirt costs next to C, what it adds
# to the barest Python call, and what that call costs next to C on this CPU.
RatioKey = Literal["python_over_c", "python_over_floor", "floor_over_c"]
RATIOS: tuple[tuple[str, RatioKey], ...] = (
    ("Py/C", "python_over_c"), ("Py/floor", "python_over_floor"), ("floor/C", "floor_over_c"))


def _in_units(value: float, units: tuple[tuple[str, float], ...]) -> str:
    """`value` to 3 significant figures in the largest unit it reaches, the last unit
    (scale 1) if none. Rounded first: 999.7 ns is 1 µs, not "1e+03 ns"."""
    value = float(f"{value:.3g}")
    unit, scale = next(((u, s) for u, s in units if value >= s), units[-1])
    return f"{value / scale:.3g} {unit}"


def duration(ns: float) -> str:
    """3 significant figures in the unit that fits: 213 ns, 5.8 µs, 1.38 ms."""
    return _in_units(ns, (("s", 1e9), ("ms", 1e6), ("µs", 1e3), ("ns", 1)))


def _rate(bytes_per_s: float) -> str:
    return _in_units(bytes_per_s, (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)))


def _overhead(ns: float | None) -> str:
    """The loop overhead's duration; "-" when its series failed (its error is in its row)."""
    return "-" if ns is None else duration(ns)


def _ratio(row: Row, key: RatioKey) -> str:
    value = row.get(key)
    return "-" if value is None else f"{value:4.2f}x"


def _cpus(cpus: Iterable[int]) -> str:
    return ",".join(map(str, cpus))


def table(result: Result) -> str:
    """The result as text: a header on how it was measured, a row per series, then what each primitive does."""
    loop = result["loop_overhead_ns"]
    width = max([len("path")] + [len(s["path"]) for row in result["primitives"] for v in SERIES if (s := row.get(v))])
    names = max([len("primitive")] + [len(row["name"]) for row in result["primitives"] + result["skipped"]])
    lines = [
        f"osvirt bench, {result['date']}: {result['cpu']}, {result['cpus_online']} CPUs online "
        f"(usable {_cpus(result['cpus_usable'])}), Linux {result['kernel']}, Python {result['python']}",
        f"{result['batches']} batches of >= {duration(result['min_batch_ns'])} per series, spread over "
        f"{result['workers']} worker processes; per operation: median, min and MAD (median absolute "
        f"deviation) of the batches",
        f"loop overhead per operation, included in every figure (not subtracted): "
        f"Python {_overhead(loop['python'])}, C {_overhead(loop['c'])}",
        f"load average {result['load_average_before'][0]:.2f} before, "
        f"{result['load_average_after'][0]:.2f} after; {result['duration_s']:.0f} s",
        "",
        f"{'primitive':{names}} {'CPU':>5}  {'path':{width}} {'median':>9} {'min':>9} {'MAD':>9}  "
        + " ".join(f"{head:>8}" for head, _ in RATIOS),
    ]
    for row in result["primitives"]:
        first = True
        for variant in SERIES:
            series = row.get(variant)
            if variant in row["errors"]:
                cells = f"{row['errors'][variant]}"
                label: str = "Python" if variant == "python" else variant
            elif not series:
                continue
            else:
                label = series["path"]
                cells = " ".join(f"{duration(v):>9}" for v in (series["median_ns"], series["min_ns"], series["mad_ns"]))
                if variant == "python" and row["name"] != "loop":
                    cells += "  " + " ".join(f"{_ratio(row, key):>8}" for _, key in RATIOS)
                if "bytes_per_s" in series:
                    cells += f"  {_rate(series['bytes_per_s'])}"
                if series["child_minor_faults_per_op"] >= 1:
                    cells += f"  {series['child_minor_faults_per_op']:.0f} minor faults in the child"
            pinned = "" if not first else ("-" if row["pinned"] is None else str(row["pinned"]))
            lines.append(f"{row['name'] if first else '':{names}} {pinned:>5}  {label:{width}} {cells}")
            first = False
    lines += ["", "CPU: the CPU a pinned primitive and every process it talks to ran on; - unpinned.",
              "floor: the barest Python calls that do the same kernel work; Py/floor is what osvirt "
              "adds to them, floor/C what any Python call costs here.", ""]
    for row in result["primitives"]:
        lines.append(f"{row['name']:{names}} {row['does']}")
        if row["note"]:
            lines.append(f"{'':{names}} note: {row['note']}")
    for skip in result["skipped"]:
        lines.append(f"{skip['name']:{names}} skipped: {skip['reason']}")
    return "\n".join(lines)


_MARKDOWN_RATIOS: tuple[RatioKey, ...] = ("python_over_floor", "floor_over_c", "python_over_c")


def markdown(result: Result) -> str:
    """The result as the README's table: a line on the run, then a row per
    primitive with its medians and the three ratios (`osvirt bench --markdown`)."""
    loop = result["loop_overhead_ns"]
    lines = [
        f"Measured {result['date']} on {result['cpu']} ({result['cpus_online']} CPUs; load average "
        f"{result['load_average_before'][0]:.2f} before, {result['load_average_after'][0]:.2f} after), "
        f"Linux {result['kernel']}, Python {result['python']}; median of {result['batches']} batches of "
        f">= {duration(result['min_batch_ns'])}; the run took {result['duration_s']:.0f} s. Loop overhead, "
        f"included: Python {_overhead(loop['python'])}, C {_overhead(loop['c'])}.",
        "",
        "| primitive | CPU | Python | floor | C | Py/floor | floor/C | Py/C | peer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["primitives"]:
        if row["name"] == "loop":
            continue
        cells = [f"`{row['name']}`", "-" if row["pinned"] is None else str(row["pinned"])]
        for variant in SERIES[:3]:  # python, floor, c
            series = row.get(variant)
            cells.append(duration(series["median_ns"]) if series else
                         "error" if variant in row["errors"] else "(Python)" if variant == "floor" else "-")
        cells += [_ratio(row, key).rstrip("x") for key in _MARKDOWN_RATIOS]
        peer = row.get("peer")
        cells.append(f"{peer['path']}: {duration(peer['median_ns'])}" if peer else "")
        lines.append("| " + " | ".join(cells) + " |")
    for skip in result["skipped"]:
        lines.append(f"| `{skip['name']}` | skipped: {skip['reason']} | | | | | | | |")
    return "\n".join(lines)


class PlotUnavailable(RuntimeError):
    """--plot asked for, matplotlib not installed."""


def require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise PlotUnavailable("osvirt bench --plot needs matplotlib, an optional extra: "
                              "pip install osvirt[plot]")


def plot(result: Result, path: str | os.PathLike[str]) -> None:
    """A horizontal bar chart, log scale: per primitive, its median from Python, the floor, C and the peer."""
    require_matplotlib()
    import matplotlib
    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = [r for r in result["primitives"] if r.get("python") or r.get("c")]
    fig, ax = plt.subplots(figsize=(11, 1.5 + 0.62 * len(rows)))
    height = 0.2
    for i, row in enumerate(rows):
        for k, variant in enumerate(SERIES):
            series = row.get(variant)
            if not series:
                continue
            y = i + (k - 1.5) * height
            ax.barh(y, series["median_ns"], height, color=COLORS[variant], label=LABELS[variant])
            text = duration(series["median_ns"]) + (f"  {series['path']}" if variant in ("floor", "peer") else "")
            ax.text(series["median_ns"] * 1.08, y, text, va="center", fontsize=7)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda ns, _: duration(ns)))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["name"] + (f" (CPU {r['pinned']})" if r["pinned"] is not None else "")
                        for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("time per operation, median of the batches (log scale)")
    left, right = ax.get_xlim()
    ax.set_xlim(left, right * 30)  # room for the labels
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), loc="lower right")
    ax.set_title(f"osvirt bench, {result['date']}: {result['cpu']}, Linux {result['kernel']}, "
                 f"Python {result['python']}", fontsize=9)
    ax.grid(axis="x", which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
