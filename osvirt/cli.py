"""The `osvirt` command: list, demo NAME|all, info, bench, and each area's own
commands (`osvirt container run`, ...) from the modules in AREA_COMMANDS."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, TextIO

from osvirt import env

if TYPE_CHECKING:  # imported by `osvirt bench` alone: the other commands start without it
    from osvirt.bench.harness import Primitive, Variant

__all__ = ["AREA_COMMANDS", "demos", "main"]

# Each module here has `add_parser(sub)`, which adds its command to `osvirt`'s
# subparsers and sets `run=` (a function of the parsed args returning the exit
# status) as that parser's default. Only argparse runs at import: the work
# imports what it needs when it runs.
AREA_COMMANDS: tuple[str, ...] = ("osvirt.vm.cli", "osvirt.container.cli")


def demos() -> dict[str, ModuleType]:
    """{name: module} for every demo in demos/ (shipped as osvirt.demos), in file order."""
    import osvirt.demos
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(osvirt.demos.__path__), key=lambda i: i.name):
        if info.name[:2].isdigit():
            module = importlib.import_module(f"osvirt.demos.{info.name}")
            found[module.NAME] = module
    return found


def _list(args: argparse.Namespace) -> int:
    for name, module in demos().items():
        print(f"{name:14} §{module.SEED:28} {module.SUMMARY}")
    return 0


def _demo(args: argparse.Namespace, extra: list[str]) -> int | str:
    known = demos()
    if args.name == "all":
        return _demo_all(known, args.json, extra)
    if args.name not in known:
        print(f"osvirt demo: unknown demo {args.name!r}; the demos are: {', '.join(known)}, all",
              file=sys.stderr)
        return 2
    status: int | str = known[args.name].main((["--json"] if args.json else []) + extra)  # osvirt.demo.run's
    return status


def _demo_all(known: dict[str, ModuleType], as_json: bool, extra: list[str]) -> int:
    """Each demo in its own interpreter: one demo's scheduling policy, signal
    dispositions or affinity cannot leak into the next."""
    results: list[object] = []
    status = 0
    for name in known:
        cmd = [sys.executable, "-m", "osvirt", "demo", name] + (["--json"] if as_json else []) + extra
        proc = subprocess.run(cmd, stdout=subprocess.PIPE if as_json else None)
        if proc.returncode not in (0, 1):  # interrupted or crashed: stop here, say so
            return proc.returncode
        status = max(status, proc.returncode)
        if as_json:
            results.append(json.loads(proc.stdout))
        else:
            print()
    if as_json:
        json.dump({"demos": results, "ok": status == 0}, sys.stdout)
        sys.stdout.write("\n")
    return status


def _capability_summary(names: list[str]) -> str:
    missing = sorted(set(env.CAPABILITIES) - set(names))
    if not names:
        return "none"
    if len(missing) < len(names):
        return f"all {len(env.CAPABILITIES)} but: {', '.join(missing)}" if missing else "all"
    return ", ".join(names)


def _show(value: object) -> str:
    if isinstance(value, dict) and value.keys() == {"soft", "hard"}:
        return f"{value['soft']} soft, {value['hard']} hard"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _info(args: argparse.Namespace) -> int:
    facts = env.facts()
    if args.json:
        json.dump(facts, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    can = facts["can"]
    shown: dict[str, object] = {**facts, "capabilities": _capability_summary(facts["capabilities"])}
    del shown["can"]
    for key, value in shown.items():
        if isinstance(value, dict):
            print(key)
            for sub, subvalue in value.items():
                print(textwrap.fill(_show(subvalue), 100, initial_indent=f"  {sub:20} ",
                                    subsequent_indent=" " * 23))
        else:
            print(textwrap.fill(_show(value), 100, initial_indent=f"{key:22} ", subsequent_indent=" " * 23))
    print("\ncan I ...?")
    for name, answer in can.items():
        print(f"  {name:20} {'yes' if answer['ok'] else 'no ':3}  {answer['reason']}")
    return 0


class _Progress:
    """Where the bench is, on stderr: one line redrawn on a terminal, a line per primitive elsewhere."""

    def __init__(self, primitives: list[Primitive], stream: TextIO = sys.stderr) -> None:
        self.order = {p.name: i for i, p in enumerate(primitives, 1)}
        self.total = len(primitives)
        self.stream = stream
        self.tty = stream.isatty()
        self.last: str | None = None

    def __call__(self, name: str, variant: Variant, worker: int, workers: int) -> None:
        where = f"[{self.order[name]:2}/{self.total}] {name}"
        if self.tty:
            self.stream.write(f"\r\x1b[K{where}: {variant}, worker {worker}/{workers}")
        elif name != self.last:
            self.stream.write(where + "\n")
        self.last = name
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _at_least_1(what: str) -> Callable[[str], int]:
    """--batches, --workers: a whole number, at least 1."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            raise argparse.ArgumentTypeError(f"a whole number of {what} >= 1, not {text!r}")
        return n
    return parse


def _bench(args: argparse.Namespace) -> int:
    from osvirt import bench
    from osvirt.bench import report

    try:
        chosen = bench.select(args.names)
        if args.plot:
            report.require_matplotlib()
    except (ValueError, report.PlotUnavailable) as e:
        print(e, file=sys.stderr)
        return 2
    if args.list:
        for p in chosen:
            print(f"{p.name:16} {p.does}")
        return 0
    progress = _Progress([bench.LOOP] + [p for p in chosen if p is not bench.LOOP])  # run() adds LOOP
    try:
        result = bench.run(chosen, batches=args.batches or bench.BATCHES, workers=args.workers or bench.WORKERS,
                           min_batch_ns=1_000_000 if args.quick else 10_000_000, progress=progress)
    finally:
        progress.done()
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif args.markdown:
        print(report.markdown(result))
    else:
        print(report.table(result))
    if args.plot:
        report.plot(result, args.plot)
        print(f"chart written to {args.plot}", file=sys.stderr)
    return 1 if any(row["errors"] for row in result["primitives"]) else 0


def main(argv: Sequence[str] | None = None) -> int | str:
    parser = argparse.ArgumentParser(prog="osvirt", description=(
        "Operating-system virtualization on real Linux: each demo asks the kernel, "
        "prints what theory expects next to what was observed, and gives a verdict."))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the demos")
    demo = sub.add_parser("demo", help="run a demo, or all of them",
                          epilog="Further arguments go to the demo (see osvirt demo NAME --help).")
    demo.add_argument("name", help="a name from `osvirt list`, or all")
    demo.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    info = sub.add_parser("info", help="what this environment allows, and why")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    bench = sub.add_parser("bench", help="what each primitive costs: Python next to a C loop",
                           description="Time each primitive from Python, from a C loop and from the "
                                       "best other Python way, in 21 batches (--batches) over 2 processes "
                                       "(--workers).")
    bench.add_argument("names", nargs="*", metavar="NAME", help="primitives or areas to run (default: all)")
    bench.add_argument("--quick", action="store_true", help="1 ms batches instead of 10 ms")
    bench.add_argument("--batches", type=_at_least_1("batches"), metavar="N",
                       help="batches a series (default 21): more give a steadier median on a busy machine")
    bench.add_argument("--workers", type=_at_least_1("workers"), metavar="N",
                       help="processes a series' batches are spread over (default 2): more average out "
                            "each process's luck (its physical pages), and cost a setup each")
    output = bench.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object")
    output.add_argument("--markdown", action="store_true", help="print the README's table")
    bench.add_argument("--plot", metavar="FILE.png", help="draw a chart (needs matplotlib: pip install osvirt[plot])")
    bench.add_argument("--list", action="store_true", help="list the primitives and exit")
    for name in AREA_COMMANDS:
        importlib.import_module(name).add_parser(sub)
    args, extra = parser.parse_known_args(argv)
    if args.command != "demo" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "list":
            return _list(args)
        if args.command == "demo":
            return _demo(args, extra)
        if args.command == "bench":
            return _bench(args)
        if args.command == "info":
            return _info(args)
        status: int | str = args.run(args)
        return status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `osvirt info | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
