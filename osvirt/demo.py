"""The protocol every demo follows.

A demo is a module in demos/ with NAME, SEED (the article's section), SUMMARY
(one line), `body(demo)` and `main(argv=None)`, which returns
`run(sys.modules[__name__], argv)`. The body is a series of numbered steps:

    with demo.step("two children at nice 0 and nice 5 on CPU 0",
                   asked="sched_setaffinity({0}); setpriority(PRIO_PROCESS, pid, 5)"):
        demo.require(env.can("cap_sys_nice"))       # else: skipped, with the reason
        ratio = ...
        demo.check("CPU time ratio", expected="3.06 (1024:335) within 25 %",
                   observed=f"{ratio:.2f}", ok=abs(ratio / 3.06 - 1) <= 0.25)

A step prints what was asked of the kernel, what theory expects and what was
observed. An exception inside a step fails that step and the next one runs.
`--json` prints exactly one object, {"demo", "checks", "skipped"}, and nothing
else on stdout. The exit status is 0 when every check that ran held, 1 when
one failed, 130/143 after SIGINT/SIGTERM. Whatever happens, the demo's
children are killed and reaped, then the objects it owns are removed, with
SIGINT and SIGTERM blocked while that runs.
"""
import argparse
import contextlib
import json
import signal
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterator, Sequence
from types import FrameType, ModuleType
from typing import NoReturn, TextIO, TypeVar

from osvirt.env import Answer
from osvirt.process.spawn import Children, signals_deferred

__all__ = ["Demo", "StepSkipped", "run"]

_T = TypeVar("_T")


class StepSkipped(Exception):
    """Raised by Demo.require: the rest of the step cannot run here."""


class Demo:
    """One run of a demo: its steps, checks and skips, and what it owns."""

    def __init__(self, name: str, *, json_mode: bool = False, args: argparse.Namespace | None = None,
                 out: TextIO | None = None) -> None:
        self.name = name
        self.args = args
        self.json_mode = json_mode
        self.out = sys.stdout if out is None else out
        self.checks: list[dict[str, object]] = []
        self.skipped: list[dict[str, str]] = []
        self.children = Children()
        self._owned = contextlib.ExitStack()
        self._step_no = 0
        self._step_title: str | None = None

    # -- what a demo reports ---------------------------------------------------
    def say(self, text: object = "", indent: int = 4) -> None:
        """Print explanatory text (not in --json mode), wrapped."""
        if self.json_mode:
            return
        width = 100 - indent
        for para in str(text).split("\n"):
            # Broken at spaces only: a path or name (osvirt-<pid>-<random>) stays whole.
            print(textwrap.fill(para, width, initial_indent=" " * indent, subsequent_indent=" " * indent,
                                break_on_hyphens=False, break_long_words=False) if para else "", file=self.out)

    @contextlib.contextmanager
    def step(self, title: str, asked: str | None = None) -> Iterator["Demo"]:
        """A numbered step; an exception in it fails the step, not the demo."""
        self._step_no += 1
        self._step_title = title
        self.say(f"[{self._step_no}] {title}", indent=0)
        if asked:
            self.say(f"asked the kernel : {asked}")
        try:
            yield self
        except StepSkipped as e:
            self.skip(title, str(e))
        except Exception as e:  # noqa: BLE001 - a failed step is reported, the demo goes on
            traceback.print_exc(file=sys.stderr)
            self.check(f"{title}: runs to the end", "no exception", f"{type(e).__name__}: {e}", False)
        finally:
            self._step_title = None
            self.say()

    def check(self, name: str, expected: object, observed: object, ok: object) -> bool:
        """Record and print one comparison of theory with what the kernel did."""
        ok = bool(ok)
        self.checks.append({"name": name, "expected": expected, "observed": observed, "ok": ok})
        self.say(f"- {name}")
        self.say(f"theory expects : {expected}", indent=6)
        self.say(f"observed       : {observed}   [{'ok' if ok else 'FAILED'}]", indent=6)
        return ok

    @staticmethod
    def retry(measure: Callable[[], _T], holds: Callable[[_T], object], tries: int = 3) -> _T:
        """Call `measure()` until `holds(figure)`, at most `tries` times; the last figure.

        For timing- and load-sensitive measurements: the machine is shared, so
        a figure is measured again before the check that judges it fails.
        """
        if type(tries) is not int or tries < 1:
            raise ValueError(f"Demo.retry: tries must be an int >= 1, not {tries!r}")
        for _ in range(tries):
            figure = measure()
            if holds(figure):
                break
        return figure

    def skip(self, name: str, reason: object) -> None:
        """Record a step or check that this environment does not allow, with the exact reason."""
        self.skipped.append({"name": name, "reason": str(reason)})
        self.say(f"- {name}: skipped: {reason}")

    def require(self, answer: Answer, what: str | None = None) -> None:
        """Skip the rest of the current step unless `answer` (an osvirt.env.Answer) is ok."""
        if not answer:
            raise StepSkipped(answer.reason if what is None else f"{what}: {answer.reason}")

    # -- what a demo owns ------------------------------------------------------
    def own(self, resource: contextlib.AbstractContextManager[_T]) -> _T:
        """Enter a context manager now and exit it when the demo ends; returns its value.

        A Ctrl-C waits until the exit is registered: between creating the
        object and registering it, nothing would remove it.
        """
        with signals_deferred():
            return self._owned.enter_context(resource)

    def cleanup(self) -> None:
        """Kill and reap the children, then remove owned objects (children may be using them)."""
        try:
            self.children.close()
        finally:
            self._owned.close()

    # -- the verdict -------------------------------------------------------------
    @property
    def failed(self) -> list[dict[str, object]]:
        return [c for c in self.checks if not c["ok"]]

    def result(self) -> dict[str, object]:
        return {"demo": self.name, "checks": self.checks, "skipped": self.skipped}

    def verdict(self) -> str:
        held = len(self.checks) - len(self.failed)
        text = f"{self.name}: {held} checks held, {len(self.failed)} failed, {len(self.skipped)} skipped"
        return ("FAILED " if self.failed else "PASSED ") + text


def _raise_system_exit(signo: int, _frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signo)


def _parser_for(module: ModuleType) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"osvirt demo {module.NAME}",
        description=f"{module.SUMMARY} (seed §{module.SEED})")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object {demo, checks, skipped} and nothing else")
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    return parser


def run(module: ModuleType, argv: Sequence[str] | None = None) -> int | str:
    """Run a demo module's body under the protocol; returns the exit status
    (a str: the message of a sys.exit(message) in the body)."""
    args = _parser_for(module).parse_args(argv)
    demo = Demo(module.NAME, json_mode=args.json, args=args)
    previous = signal.signal(signal.SIGTERM, _raise_system_exit)
    status: int | str | None = None
    # A Ctrl-C anywhere in here, the first line and the cleanup included (one
    # held back during the cleanup is raised as it ends), ends the demo as an
    # interruption: exit 130 and the message, never a traceback.
    try:
        try:
            demo.say(f"osvirt demo {module.NAME}: seed §{module.SEED}: {module.SUMMARY}", indent=0)
            demo.say()
            module.body(demo)
        finally:
            with signals_deferred():
                demo.cleanup()
    except KeyboardInterrupt:
        status = 128 + signal.SIGINT
    except SystemExit as e:
        status = e.code
    finally:
        signal.signal(signal.SIGTERM, previous)
    if status is not None:
        print(f"osvirt demo {module.NAME}: interrupted, children reaped and objects removed",
              file=sys.stderr)
        return status
    if args.json:
        json.dump(demo.result(), sys.stdout, default=str)
        sys.stdout.write("\n")
    else:
        demo.say(demo.verdict(), indent=0)
    return 1 if demo.failed else 0
