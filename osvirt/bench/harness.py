"""How a primitive is measured: lmbench's and pyperf's methods, in one place.

A Primitive names one operation and up to three ways to do it: the Python
path (what an osvirt user writes), a C loop of the same operation
(csrc/bench.c), and optionally the best other Python way (the peer, e.g.
multiprocessing.Lock). Each way is one series, measured like this:

- the series runs in worker processes forked one after another (2 by
  default), so that one process's luck (its heap layout, the CPU it landed
  on, a page it happened to share) does not become the figure;
- the first worker warms up and calibrates the batch size n: an n whose
  batch lasts at least `min_batch_ns` (1 ms at least, so clock reads and the
  loop's start are negligible); later workers warm up with one batch of that
  n; batches that still come out shorter are timed again with a larger n;
- 11 batches in all are timed, spread over the workers; each gives the time
  per operation, and the series reports their median, minimum and median
  absolute deviation (MAD);
- the loop's own cost is not subtracted: the `loop` primitive times an empty
  loop of the same shape, Python and C, and the report prints it;
- a primitive with `pin` runs its worker and every process it talks to on
  one CPU (the last usable one, since tests that pin tend to pick CPU 0); the
  CPUs each series ran on are recorded.

Workers run the series of one primitive in turn (Python, C, peer for worker
1, then again for worker 2), so a burst of load from elsewhere lands on all
of them rather than on one.
"""
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
import typing

from osvirt import env
from osvirt.bench import _native
from osvirt.process import Children

__all__ = ["Primitive", "Batch", "Rig", "rig", "LOOP", "time_ops", "calibrate", "summarize",
           "measure", "run", "pin_cpu"]

BATCHES = 11
WORKERS = 2
MIN_BATCH_NS = 1_000_000         # lmbench: a timed interval of at least a millisecond
DEFAULT_BATCH_NS = 10_000_000    # the default run: 10 ms batches
VARIANTS = ("python", "c", "peer")


class Rig:
    """A setup for one series: a generator function that starts what the
    operation needs (children, pipes, queues), yields the operation (or, for
    a C loop, the loop's arguments), and removes it all afterwards."""

    def __init__(self, generator_fn):
        self.open = contextlib.contextmanager(generator_fn)
        self.__name__ = generator_fn.__name__
        self.__doc__ = generator_fn.__doc__


def rig(generator_fn):
    """Decorator: `@rig def setup(): ...; yield op` (see Rig)."""
    return Rig(generator_fn)


class Batch:
    """An operation that times its own batch: `fn(n)` returns the ns for n
    operations, for those whose per-batch setup must stay out of the timing
    (a fresh mapping to fault in)."""

    def __init__(self, fn):
        self.fn = fn


@dataclasses.dataclass(frozen=True)
class Primitive:
    """One operation, measured from Python, from C and optionally a peer."""
    name: str                   # as typed after `osvirt bench`
    does: str                   # one operation, in words, with the Python path it takes
    python: typing.Any          # the Python path: an operation to call, or a @rig yielding one
    c: str                      # the C loop: osv_bench_<c>(*c_args, n)
    c_args: typing.Any = ()     # the C loop's arguments, or a @rig yielding them
    peer: typing.Optional[tuple] = None  # (what it is, an operation or @rig): the best other Python way
    pin: bool = False           # run pinned to one CPU with every process it talks to
    bytes_per_op: int = 0       # for a bandwidth figure
    needs: tuple = ()           # osvirt.env probes that must answer yes
    note: str = ""              # what the figures mean for a user

    def ways(self):
        """{variant: (label, path)} for the series this primitive has."""
        ways = {"python": ("Python", self.python), "c": (f"C osv_bench_{self.c}", None)}
        if self.peer:
            ways["peer"] = self.peer
        return ways


def _nothing():
    pass


LOOP = Primitive("loop", "an empty loop: Python calls a no-op function, C runs a compiler barrier",
                 python=_nothing, c="empty",
                 note="the loop overhead every other row includes (not subtracted)")


# -- timing ---------------------------------------------------------------------
def time_ops(op, n):
    """ns for n calls of op() in the loop every Python series uses."""
    loop = itertools.repeat(None, n)
    t0 = time.perf_counter_ns()
    for _ in loop:
        op()
    return time.perf_counter_ns() - t0


def calibrate(timed, min_batch_ns=MIN_BATCH_NS):
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


def summarize(per_op_ns):
    """Median, minimum and median absolute deviation of per-operation times."""
    med = statistics.median(per_op_ns)
    return {"median_ns": med, "min_ns": min(per_op_ns),
            "mad_ns": statistics.median(abs(x - med) for x in per_op_ns)}


def pin_cpu():
    """The CPU pinned primitives run on: the last one this process may use
    (tests that pin processes tend to pick CPU 0)."""
    return max(os.sched_getaffinity(0))


def _children_minor_faults():
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt


@contextlib.contextmanager
def _opened(path):
    if isinstance(path, Rig):
        with path.open() as value:
            yield value
    else:
        yield path


@contextlib.contextmanager
def _timer(primitive, variant):
    """A function n -> elapsed ns for one series of the primitive."""
    if variant == "c":
        with _opened(primitive.c_args) as args:
            yield lambda n: _native.c_loop(primitive.c, args, n)
        return
    with _opened(primitive.ways()[variant][1]) as op:
        if isinstance(op, Batch):
            yield op.fn
        else:
            yield lambda n: time_ops(op, n)


def measure(primitive, variant, batches, n=None, min_batch_ns=MIN_BATCH_NS):
    """Time `batches` batches of one series here, in this process.

    Without n, calibrates first (which warms up); with n, warms up with one
    batch. Should a batch then come out shorter than min_batch_ns, all are
    timed again with a larger n, until none is (n grows at least 1.25-fold a
    round, so a loop's batches soon last long enough). Returns {"n",
    "elapsed_ns": [per batch], "child_minor_faults", "cpus", "pid"}:
    child_minor_faults are those of the children reaped during the timed
    batches (a fork's copy-on-write cost, where an operation starts and
    reaps a process; the rigs' helpers are reaped after).
    """
    gc.disable()  # as timeit does: a collection is not the primitive's cost
    try:
        with _timer(primitive, variant) as timed:
            if n is None:
                # 25 % headroom: an operation that gets faster once warm still
                # gives batches of at least min_batch_ns.
                n, _ = calibrate(timed, min_batch_ns * 1.25)
            else:
                timed(n)
            while True:
                faults = _children_minor_faults()
                elapsed = [timed(n) for _ in range(batches)]
                faults = _children_minor_faults() - faults
                if min(elapsed) >= min_batch_ns:
                    break
                # Faster than when calibrated (the load eased): larger batches, timed again.
                n = math.ceil(n * 1.25 * min_batch_ns / max(min(elapsed), 1))
    finally:
        gc.enable()
    return {"n": n, "elapsed_ns": elapsed, "child_minor_faults": faults,
            "cpus": sorted(os.sched_getaffinity(0)), "pid": os.getpid()}


# -- workers ----------------------------------------------------------------------
def _interrupt_once(signo, frame):
    # A second Ctrl-C (the terminal's and the parent's forwarded one) must
    # not cut short the rig's cleanup that the first one started.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _worker(out_fd, primitive, variant, batches, n, min_batch_ns, cpu):
    signal.signal(signal.SIGINT, _interrupt_once)
    with os.fdopen(out_fd, "w") as out:
        try:
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})  # inherited by every process the rig starts
            result = measure(primitive, variant, batches, n, min_batch_ns)
        except Exception as e:  # noqa: BLE001 - the parent reports it as this series' error
            result = {"error": f"{type(e).__name__}: {e}"}
        json.dump(result, out)
    return 0


def _in_worker(kids, *args):
    r, w = os.pipe()
    try:
        pid = kids.fork(_worker, w, *args)
    finally:
        os.close(w)
    try:
        with os.fdopen(r) as f:
            text = f.read()
    except KeyboardInterrupt:
        # Let the worker remove what its rig made (named queues, files) before
        # Children.close would SIGKILL it.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            kids.wait(pid, timeout_s=5)
        raise
    kids.wait(pid)
    return json.loads(text) if text else {"error": "the worker died without a result"}


def _split(batches, workers):
    return [batches // workers + (i < batches % workers) for i in range(workers)]


def _series(label, runs, bytes_per_op):
    per_op = [e / r["n"] for r in runs for e in r["elapsed_ns"]]
    ops = sum(r["n"] * len(r["elapsed_ns"]) for r in runs)
    series = {"path": label, "n": [r["n"] for r in runs], "per_op_ns": per_op,
              "child_minor_faults_per_op": sum(r["child_minor_faults"] for r in runs) / ops,
              "batch_ns_min": min(e for r in runs for e in r["elapsed_ns"]),
              "cpus": sorted({c for r in runs for c in r["cpus"]}), "pids": [r["pid"] for r in runs],
              **summarize(per_op)}
    if bytes_per_op:
        series["bytes_per_s"] = bytes_per_op / series["median_ns"] * 1e9
    return series


def _measure_primitive(kids, primitive, batches, workers, min_batch_ns, progress):
    cpu = pin_cpu() if primitive.pin else None
    ways = primitive.ways()
    runs = {v: [] for v in ways}
    errors = {}
    for w, share in enumerate(_split(batches, workers)):
        for variant in ways:
            if variant in errors:
                continue
            if progress:
                progress(primitive.name, variant, w + 1, workers)
            n = runs[variant][0]["n"] if runs[variant] else None
            result = _in_worker(kids, primitive, variant, share, n, min_batch_ns, cpu)
            if "error" in result:
                errors[variant] = result["error"]
            else:
                runs[variant].append(result)
    row = {"name": primitive.name, "does": primitive.does, "note": primitive.note,
           "pinned": cpu, "bytes_per_op": primitive.bytes_per_op, "errors": errors}
    for variant, (label, _) in ways.items():
        row[variant] = None if variant in errors else _series(label, runs[variant], primitive.bytes_per_op)
    if row["python"] and row["c"] and primitive is not LOOP:
        row["python_over_c"] = row["python"]["median_ns"] / row["c"]["median_ns"]
    return row


def _cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run(primitives, *, batches=BATCHES, workers=WORKERS, min_batch_ns=DEFAULT_BATCH_NS, progress=None):
    """Measure `primitives` (the loop overhead first, always); the results as plain data.

    `progress(name, variant, worker, workers)` is called before each worker starts.
    """
    if batches < 1 or workers < 1 or min_batch_ns < MIN_BATCH_NS:
        raise ValueError(f"osvirt bench: batches and workers must be >= 1 and batches last "
                         f">= {MIN_BATCH_NS} ns, not {batches}, {workers}, {min_batch_ns}")
    started = time.monotonic()
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(), "cpus_online": os.cpu_count(), "cpus_usable": sorted(os.sched_getaffinity(0)),
        "kernel": platform.release(), "python": platform.python_version(),
        "load_average_before": os.getloadavg(),
        "batches": batches, "workers": workers, "min_batch_ns": min_batch_ns,
        "pinned_cpu": pin_cpu(), "primitives": [], "skipped": [],
    }
    todo = [LOOP] + [p for p in primitives if p is not LOOP]
    with Children() as kids:
        for primitive in todo:
            refused = [env.can(what) for what in primitive.needs]
            refused = [a.reason for a in refused if not a]
            if refused:
                result["skipped"].append({"name": primitive.name, "reason": "; ".join(refused)})
                continue
            result["primitives"].append(
                _measure_primitive(kids, primitive, batches, workers, min_batch_ns, progress))
    loop = result["primitives"][0]
    result["loop_overhead_ns"] = {v: loop[v] and loop[v]["median_ns"] for v in ("python", "c")}
    result["load_average_after"] = os.getloadavg()
    result["duration_s"] = time.monotonic() - started
    return result
