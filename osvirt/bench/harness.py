"""How a primitive is measured: lmbench's and pyperf's methods, in one place.

A Primitive names one operation and up to four ways to do it: the Python
path (what an osvirt user writes), a C loop of the same operation
(csrc/bench.c), the floor (the fewest, barest calls from Python that do the
same kernel work: the bare C-extension or stdlib call in a loop, no checks,
no objects), and optionally the best other Python way (the peer, e.g.
multiprocessing.Lock). A ratio to C mixes what osvirt adds with what any
Python call costs on this CPU; Python/floor is the first, floor/C the second.
Each way is one series, measured like this:

- the series runs in worker processes forked one after another (2 by
  default, `workers`), so that one process's luck (the physical pages it
  got, and so which of its lines share a cache set; the CPU it landed on)
  does not become the figure alone. That luck is large: the Condition round
  trip took 15.6-20.9 us in twenty children forked from five parents, four
  each, as far apart within one parent as across parents (its C loop
  12.0-16.3). Yet seven workers did not steady cond-rtt's Python/C (ten runs
  each: 1.06-1.24 with two, 1.10-1.25 with seven): the host's own drift
  is as large, and each worker costs its setup again;
- the first worker warms up and calibrates the batch size n: an n whose
  batch lasts at least `min_batch_ns` (1 ms at least, so clock reads and the
  loop's start are negligible); later workers warm up with one batch of that
  n; batches that still come out shorter are timed again with a larger n;
- 21 batches in all are timed, spread over the workers; each gives the time
  per operation, and the series reports their median, minimum and median
  absolute deviation (MAD). 21, not fewer: on a shared host one batch in
  ten can be 30% off, and a ratio of two medians of 11 moved by 10% from run
  to run (cond-rtt: 1.12-1.36 over eight runs), of 41 by 4% (1.11-1.19);
- the loop's own cost is not subtracted: the `loop` primitive times an empty
  loop of the same shape, Python and C, and the report prints it;
- a primitive with `pin` runs its worker and every process it talks to on
  one CPU (the last usable one, since tests that pin tend to pick CPU 0); the
  CPUs each series ran on are recorded.

The series' batches are interleaved: one worker process per series is
started and set up (its rig open, n calibrated), then the batches are timed
in rounds, one batch of each series a round (Python, floor, C, peer, the
order turning each round), while every other worker and whatever its rig
started waits stopped (SIGSTOP to its process group: a helper that never
blocks, such as ctx-switch's yielding partner, takes no CPU from the series
being timed). So drift in the machine's load, over the seconds a row takes,
lands on every series alike rather than on whichever ran last; and each
series keeps a process of its own (its heap, its mappings), as before. With
2 workers, this happens twice, with fresh processes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import itertools
import json
import math
import os
import platform
import resource
import signal
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import IO, TYPE_CHECKING, Generic, Literal, NoReturn, TypedDict, TypeVar, final

from osvirt import env
from osvirt.bench import _native
from osvirt.process import Children

if TYPE_CHECKING:  # typing_extensions is mypy's; typing.NotRequired is Python 3.11's
    from typing_extensions import NotRequired

__all__ = ["Primitive", "Batch", "Rig", "rig", "LOOP", "time_ops", "calibrate", "summarize",
           "measure", "run", "pin_cpu", "Summary", "Measured", "Failed", "Series", "Row", "Result"]

BATCHES = 21
WORKERS = 2
MIN_BATCH_NS = 1_000_000         # lmbench: a timed interval of at least a millisecond
DEFAULT_BATCH_NS = 10_000_000    # the default run: 10 ms batches
Variant = Literal["python", "floor", "c", "peer"]
VARIANTS: tuple[Variant, ...] = ("python", "floor", "c", "peer")

_T_co = TypeVar("_T_co", covariant=True)


class Rig(Generic[_T_co]):
    """A setup for one series: a generator function that starts what the
    operation needs (children, pipes, queues), yields the operation (or, for
    a C loop, the loop's arguments), and removes it all afterwards."""

    def __init__(self, generator_fn: Callable[[], Iterator[_T_co]]) -> None:
        self.open = contextlib.contextmanager(generator_fn)
        self.__name__ = generator_fn.__name__
        self.__doc__ = generator_fn.__doc__


def rig(generator_fn: Callable[[], Iterator[_T_co]]) -> Rig[_T_co]:
    """Decorator: `@rig def setup(): ...; yield op` (see Rig)."""
    return Rig(generator_fn)


class Batch:
    """An operation that times its own batch: `fn(n)` returns the ns for n
    operations, for those whose per-batch setup must stay out of the timing
    (a fresh mapping to fault in)."""

    def __init__(self, fn: Callable[[int], int]) -> None:
        self.fn = fn


# What a Python series times: an operation to call, or a Batch that times itself.
Operation = Callable[[], object] | Batch
# A Python path: an operation, or a @rig that sets one up.
Path = Operation | Rig[Operation]


@dataclasses.dataclass(frozen=True)
class Primitive:
    """One operation, measured from Python, from C, at its floor and optionally a peer."""
    name: str                   # as typed after `osvirt bench`
    does: str                   # one operation, in words, with the Python path it takes
    python: Path                # the Python path: an operation to call, or a @rig yielding one
    c: str                      # the C loop: osv_bench_<c>(*c_args, n)
    c_args: tuple[object, ...] | Rig[tuple[object, ...]] = ()  # the C loop's arguments, or a @rig yielding them
    # (what it is, an operation or @rig): the barest Python calls doing the same
    # kernel work; None only where the Python path is itself that (os.getppid).
    floor: tuple[str, Path] | None = None
    peer: tuple[str, Path] | None = None  # (what it is, an operation or @rig): the best other Python way
    pin: bool = False           # run pinned to one CPU with every process it talks to
    bytes_per_op: int = 0       # for a bandwidth figure
    needs: tuple[str, ...] = ()  # osvirt.env probes that must answer yes
    note: str = ""              # what the figures mean for a user

    def ways(self) -> dict[Variant, tuple[str, Path | None]]:
        """{variant: (label, path)} for the series this primitive has."""
        ways: dict[Variant, tuple[str, Path | None]] = {"python": ("Python", self.python)}
        if self.floor:
            ways["floor"] = (f"floor: {self.floor[0]}", self.floor[1])
        ways["c"] = (f"C osv_bench_{self.c}", None)
        if self.peer:
            ways["peer"] = self.peer
        return ways


def _nothing() -> None:
    pass


LOOP = Primitive("loop", "an empty loop: Python calls a no-op function, C runs a compiler barrier",
                 python=_nothing, c="empty",
                 note="the loop overhead every other row includes (not subtracted)")


# -- results: plain data (JSON from a worker, and out of run()) ----------------------
class Summary(TypedDict):
    median_ns: float
    min_ns: float
    mad_ns: float


@final  # so that `"error" in result` tells it from Failed
class Measured(TypedDict):
    """One worker's batches of one series (measure())."""
    n: int
    elapsed_ns: list[int]
    child_minor_faults: int
    cpus: list[int]
    pid: int


@final
class Failed(TypedDict):
    """A series that raised, in its worker: the exception, named."""
    error: str


class Series(Summary):
    """One series of a primitive, all its workers' batches together."""
    path: str
    n: list[int]
    per_op_ns: list[float]
    child_minor_faults_per_op: float
    batch_ns_min: int
    cpus: list[int]
    pids: list[int]
    bytes_per_s: NotRequired[float]


class Row(TypedDict):
    """One primitive's result: a Series per variant (None after an error), the errors by variant."""
    name: str
    does: str
    note: str
    pinned: int | None
    bytes_per_op: int
    errors: dict[str, str]
    python: NotRequired[Series | None]
    floor: NotRequired[Series | None]
    c: NotRequired[Series | None]
    peer: NotRequired[Series | None]
    python_over_c: NotRequired[float]
    python_over_floor: NotRequired[float]  # what osvirt adds to the barest call
    floor_over_c: NotRequired[float]       # what any Python call costs on this CPU


class Result(TypedDict):
    """What run() returns: the machine, the method, a Row per primitive measured, those skipped."""
    date: str
    cpu: str
    cpus_online: int | None
    cpus_usable: list[int]
    kernel: str
    python: str
    load_average_before: tuple[float, float, float]
    batches: int
    workers: int
    min_batch_ns: int
    pinned_cpu: int
    primitives: list[Row]
    skipped: list[dict[str, str]]
    loop_overhead_ns: dict[str, float | None]
    load_average_after: tuple[float, float, float]
    duration_s: float


# progress(name, variant, worker, workers), called before each worker starts.
Progress = Callable[[str, Variant, int, int], None]


# -- timing ---------------------------------------------------------------------
def time_ops(op: Callable[[], object], n: int) -> int:
    """ns for n calls of op() in the loop every Python series uses."""
    loop = itertools.repeat(None, n)
    t0 = time.perf_counter_ns()
    for _ in loop:
        op()
    return time.perf_counter_ns() - t0


def calibrate(timed: Callable[[int], int], min_batch_ns: float = MIN_BATCH_NS) -> tuple[int, int]:
    """(n, elapsed_ns): a batch size whose batch, timed by `timed(n)`, lasted
    at least min_batch_ns twice running. Each try also warms the operation up.

    Twice, because a first call can be slow for reasons that do not last (a
    child just forked and not yet scheduled, cold caches): that batch alone
    would make n far too small."""
    n = 1
    while True:
        elapsed = timed(n)
        if elapsed >= min_batch_ns:
            elapsed = timed(n)
            if elapsed >= min_batch_ns:
                return n, elapsed
        # Aim 20 % past the target, but grow at most 100-fold a step: a first
        # call that hit a cold cache or the clock's granularity misleads.
        n = max(2 * n, min(100 * n, math.ceil(n * 1.2 * min_batch_ns / max(elapsed, 1))))


def summarize(per_op_ns: list[float]) -> Summary:
    """Median, minimum and median absolute deviation of per-operation times."""
    med = statistics.median(per_op_ns)
    return {"median_ns": med, "min_ns": min(per_op_ns),
            "mad_ns": statistics.median(abs(x - med) for x in per_op_ns)}


def pin_cpu() -> int:
    """The CPU pinned primitives run on: the last one this process may use
    (tests that pin processes tend to pick CPU 0)."""
    return max(os.sched_getaffinity(0))


def _children_minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt


@contextlib.contextmanager
def _opened(path: _T_co | Rig[_T_co]) -> Iterator[_T_co]:
    if isinstance(path, Rig):
        with path.open() as value:
            yield value
    else:
        yield path


@contextlib.contextmanager
def _timer(primitive: Primitive, variant: Variant) -> Iterator[Callable[[int], int]]:
    """A function n -> elapsed ns for one series of the primitive."""
    if variant == "c":
        c_args: contextlib.AbstractContextManager[tuple[object, ...]] = _opened(primitive.c_args)
        with c_args as args:
            yield lambda n: _native.c_loop(primitive.c, args, n)
        return
    path = primitive.ways()[variant][1]
    assert path is not None  # only the C loop has none
    opened: contextlib.AbstractContextManager[Operation] = _opened(path)
    with opened as op:
        if isinstance(op, Batch):
            yield op.fn
        else:
            yield lambda n: time_ops(op, n)


class _Batches:
    """One series' batches in this process: its timer, its n, the batches kept so far."""

    def __init__(self, timed: Callable[[int], int], n: int | None, min_batch_ns: int) -> None:
        self.timed, self.min_batch_ns = timed, min_batch_ns
        if n is None:
            # 25 % headroom: an operation that gets faster once warm still
            # gives batches of at least min_batch_ns.
            n, _ = calibrate(timed, min_batch_ns * 1.25)
        else:
            timed(n)
        self.n, self.faults = n, 0
        self.elapsed: list[int] = []

    def time_one(self) -> int:
        """Time one batch; the number of batches kept. A batch shorter than
        min_batch_ns (the load eased since calibration) discards those kept, and
        n grows (at least 1.25-fold), so that all a series' batches have one n."""
        faults = _children_minor_faults()
        elapsed = self.timed(self.n)
        faults = _children_minor_faults() - faults
        if elapsed < self.min_batch_ns:
            self.n = math.ceil(self.n * 1.25 * self.min_batch_ns / max(elapsed, 1))
            self.elapsed, self.faults = [], 0
        else:
            self.elapsed.append(elapsed)
            self.faults += faults
        return len(self.elapsed)

    def measured(self) -> Measured:
        return {"n": self.n, "elapsed_ns": self.elapsed, "child_minor_faults": self.faults,
                "cpus": sorted(os.sched_getaffinity(0)), "pid": os.getpid()}


def measure(primitive: Primitive, variant: Variant, batches: int, n: int | None = None,
            min_batch_ns: int = MIN_BATCH_NS) -> Measured:
    """Time `batches` batches of one series here, in this process.

    Without n, calibrates first (which warms up); with n, warms up with one
    batch. Should a batch then come out shorter than min_batch_ns, those
    timed are dropped and timing goes on with a larger n, until `batches`
    batches of one n last long enough. Returns {"n", "elapsed_ns": [per
    batch], "child_minor_faults", "cpus", "pid"}: child_minor_faults are
    those of the children reaped during the timed batches (a fork's
    copy-on-write cost, where an operation starts and reaps a process; the
    rigs' helpers are reaped after).
    """
    gc.disable()  # as timeit does: a collection is not the primitive's cost
    try:
        with _timer(primitive, variant) as timed:
            timing = _Batches(timed, n, min_batch_ns)
            while timing.time_one() < batches:
                pass
            return timing.measured()
    finally:
        gc.enable()


# -- workers ----------------------------------------------------------------------
def _interrupt_once(signo: int, frame: FrameType | None) -> NoReturn:
    # A second Ctrl-C (the terminal's and the parent's forwarded one) must
    # not cut short the rig's cleanup that the first one started.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _worker(commands_fd: int, out_fd: int, primitive: Primitive, variant: Variant, n: int | None,
            min_batch_ns: int, cpu: int | None) -> int:
    """One series in its own process group (stopped as one while others are timed):
    set up, then one batch per "batch" line read, until "end"; a JSON line answers each."""
    signal.signal(signal.SIGINT, _interrupt_once)
    os.setpgid(0, 0)
    with os.fdopen(commands_fd) as commands, os.fdopen(out_fd, "w") as out:
        answer: dict[str, int] | Measured | Failed
        gc.disable()  # as timeit does: a collection is not the primitive's cost
        try:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})  # inherited by every process the rig starts
            with _timer(primitive, variant) as timed:
                timing = _Batches(timed, n, min_batch_ns)
                _answer(out, {"n": timing.n})
                while commands.readline() == "batch\n":
                    _answer(out, {"kept": timing.time_one()})
            answer = timing.measured()
        except Exception as e:  # noqa: BLE001 - the parent reports it as this series' error
            answer = {"error": f"{type(e).__name__}: {e}"}
        finally:
            gc.enable()
        _answer(out, answer)
    return 0


def _answer(out: IO[str], answer: dict[str, int] | Measured | Failed) -> None:
    out.write(json.dumps(answer) + "\n")
    out.flush()


class _Worker:
    """The parent's end of one _worker: commands, answers, and stop/continue of its process group."""

    def __init__(self, kids: Children, primitive: Primitive, variant: Variant, n: int | None,
                 min_batch_ns: int, cpu: int | None) -> None:
        commands_r, commands_w = os.pipe()
        answers_r, answers_w = os.pipe()
        try:
            self.pid = kids.fork(_worker, commands_r, answers_w, primitive, variant, n, min_batch_ns, cpu)
        except BaseException:
            os.close(commands_w)
            os.close(answers_r)
            raise
        finally:
            os.close(commands_r)
            os.close(answers_w)
        self.kids, self.stopped, self.commands = kids, False, commands_w
        self.answers = os.fdopen(answers_r)

    def ask(self, command: bytes = b"") -> dict[str, int] | Measured | Failed:
        """Continue the worker, send `command` (none: only read), and read its answer."""
        self.resume()
        if command:
            with contextlib.suppress(BrokenPipeError):  # it died: its answer, if any, is in the pipe
                os.write(self.commands, command)
        line = self.answers.readline()
        answer: dict[str, int] | Measured | Failed = (json.loads(line) if line  # what _worker wrote
                                                      else {"error": "the worker died without a result"})
        return answer

    def stop(self) -> None:
        """Stop the worker, parked in its read of commands, and its rig's processes; return once
        the worker is stopped (a signal takes effect when its target next runs: the next
        series' batch must not share the CPU with a worker still finishing its answer)."""
        os.killpg(self.pid, signal.SIGSTOP)
        self.stopped = True
        deadline = time.monotonic() + 1.0
        while _state(self.pid) not in "TtZX" and time.monotonic() < deadline:
            os.sched_yield()

    def resume(self) -> None:
        if self.stopped:
            os.killpg(self.pid, signal.SIGCONT)
            self.stopped = False

    def end(self) -> Measured | Failed:
        """Its batches (or its error), once its rig is closed and it has exited."""
        answer = self.ask(b"end\n")
        os.close(self.commands)
        self.answers.close()
        self.kids.wait(self.pid)
        return answer  # type: ignore[return-value]  # after "end": a Measured or a Failed


def _state(pid: int) -> str:
    """The process's state letter in /proc/PID/stat ("X" once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return "X"


def _interrupt(kids: Children) -> None:
    """Let every worker remove what its rig made (named queues, files) before
    Children.close would SIGKILL it: continued, then SIGINT (its _interrupt_once).
    kids' pids, not only the workers known: an interrupt can cut a fork short
    after Children owns the pid and before its _Worker has it."""
    pids = kids.pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # not (yet) a group of its own
            os.killpg(pid, signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGINT)
    for pid in pids:
        with contextlib.suppress(TimeoutError):
            kids.wait(pid, timeout_s=5)


def _split(batches: int, workers: int) -> list[int]:
    return [batches // workers + (i < batches % workers) for i in range(workers)]


def _series(label: str, runs: list[Measured], bytes_per_op: int) -> Series:
    per_op = [e / r["n"] for r in runs for e in r["elapsed_ns"]]
    ops = sum(r["n"] * len(r["elapsed_ns"]) for r in runs)
    summary = summarize(per_op)
    series: Series = {"path": label, "n": [r["n"] for r in runs], "per_op_ns": per_op,
              "child_minor_faults_per_op": sum(r["child_minor_faults"] for r in runs) / ops,
              "batch_ns_min": min(e for r in runs for e in r["elapsed_ns"]),
              "cpus": sorted({c for r in runs for c in r["cpus"]}), "pids": [r["pid"] for r in runs],
              "median_ns": summary["median_ns"], "min_ns": summary["min_ns"], "mad_ns": summary["mad_ns"]}
    if bytes_per_op:
        series["bytes_per_s"] = bytes_per_op / series["median_ns"] * 1e9
    return series


def _measure_primitive(kids: Children, primitive: Primitive, batches: int, workers: int, min_batch_ns: int,
                       progress: Progress | None) -> Row:
    cpu = pin_cpu() if primitive.pin else None
    ways = primitive.ways()
    runs: dict[Variant, list[Measured]] = {v: [] for v in ways}
    errors: dict[str, str] = {}
    for w, share in enumerate(_split(batches, workers)):
        if share:
            _interleaved(kids, primitive, share, min_batch_ns, cpu, w, workers, runs, errors, progress)
    row: Row = {"name": primitive.name, "does": primitive.does, "note": primitive.note,
                "pinned": cpu, "bytes_per_op": primitive.bytes_per_op, "errors": errors}
    for variant, (label, _) in ways.items():
        row[variant] = None if variant in errors else _series(label, runs[variant], primitive.bytes_per_op)
    if primitive is not LOOP:
        _ratios(row)
    return row


def _interleaved(kids: Children, primitive: Primitive, share: int, min_batch_ns: int, cpu: int | None,
                 w: int, workers: int, runs: dict[Variant, list[Measured]], errors: dict[str, str],
                 progress: Progress | None) -> None:
    """One worker per series still without an error, set up in turn, then `share`
    batches of each timed in rounds; their batches added to runs, or their errors to errors."""
    live: dict[Variant, _Worker] = {}
    kept: dict[Variant, int] = {}

    def failed(variant: Variant, answer: Measured | Failed | dict[str, int]) -> bool:
        if "error" in answer:
            errors[variant] = str(answer["error"])
            live.pop(variant).end()
            return True
        return False
    try:
        for variant in runs:
            if variant in errors:
                continue
            if progress:
                progress(primitive.name, variant, w + 1, workers)
            n = runs[variant][0]["n"] if runs[variant] else None
            live[variant] = _Worker(kids, primitive, variant, n, min_batch_ns, cpu)
            if not failed(variant, live[variant].ask()):  # set up, calibrated: {"n"}
                live[variant].stop()
                kept[variant] = 0
        for turn in itertools.count():
            todo = [v for v in live if kept[v] < share]
            if not todo:
                break
            for variant in todo[turn % len(todo):] + todo[:turn % len(todo)]:
                answer = live[variant].ask(b"batch\n")
                if not failed(variant, answer):
                    live[variant].stop()
                    kept[variant] = answer["kept"]  # type: ignore[typeddict-item]  # {"kept": n}
        while live:
            variant, worker = live.popitem()
            answer = worker.end()
            if "error" in answer:
                errors[variant] = answer["error"]
            else:
                runs[variant].append(answer)
    except KeyboardInterrupt:
        _interrupt(kids)
        raise


def _ratios(row: Row) -> None:
    python, floor, c = row.get("python"), row.get("floor"), row.get("c")
    if python and c:
        row["python_over_c"] = python["median_ns"] / c["median_ns"]
    if python and floor:
        row["python_over_floor"] = python["median_ns"] / floor["median_ns"]
    if floor and c:
        row["floor_over_c"] = floor["median_ns"] / c["median_ns"]


def _cpu_model() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run(primitives: Iterable[Primitive], *, batches: int = BATCHES, workers: int = WORKERS,
        min_batch_ns: int = DEFAULT_BATCH_NS, progress: Progress | None = None) -> Result:
    """Measure `primitives` (the loop overhead first, always); the results as plain data.

    `progress(name, variant, worker, workers)` is called before each worker starts.
    """
    if batches < 1 or workers < 1 or min_batch_ns < MIN_BATCH_NS:
        raise ValueError(f"osvirt bench: batches and workers must be >= 1 and batches last "
                         f">= {MIN_BATCH_NS} ns, not {batches}, {workers}, {min_batch_ns}")
    started = time.monotonic()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    cpu, cpus_online, cpus_usable = _cpu_model(), os.cpu_count(), sorted(os.sched_getaffinity(0))
    load_average_before, pinned_cpu = os.getloadavg(), pin_cpu()
    rows: list[Row] = []
    skipped: list[dict[str, str]] = []
    todo = [LOOP] + [p for p in primitives if p is not LOOP]
    with Children() as kids:
        for primitive in todo:
            refused = [answer.reason for answer in map(env.can, primitive.needs) if not answer]
            if refused:
                skipped.append({"name": primitive.name, "reason": "; ".join(refused)})
                continue
            rows.append(_measure_primitive(kids, primitive, batches, workers, min_batch_ns, progress))
    loop = rows[0]
    return {
        "date": date, "cpu": cpu, "cpus_online": cpus_online, "cpus_usable": cpus_usable,
        "kernel": platform.release(), "python": platform.python_version(),
        "load_average_before": load_average_before,
        "batches": batches, "workers": workers, "min_batch_ns": min_batch_ns,
        "pinned_cpu": pinned_cpu, "primitives": rows, "skipped": skipped,
        "loop_overhead_ns": {v: series and series["median_ns"]
                             for v, series in (("python", loop["python"]), ("c", loop["c"]))},
        "load_average_after": os.getloadavg(),
        "duration_s": time.monotonic() - started,
    }
