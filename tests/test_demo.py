"""The demo protocol, on small demos defined here."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types

import psutil
import pytest

from osvirt.demo import Demo, run
from osvirt.env import Answer


def _demo(body, **extra):
    return types.SimpleNamespace(NAME="toy", SEED="0.0", SUMMARY="a toy", body=body, **extra)


def _json(capsys, module, argv=("--json",)):
    status = run(module, list(argv))
    out = capsys.readouterr().out
    return status, json.loads(out), out


def test_json_mode_prints_exactly_one_object(capsys):
    def body(demo):
        with demo.step("one step", asked="getpid()"):
            demo.say("explanation that must not reach stdout in --json mode")
            demo.check("pid", os.getpid(), os.getpid(), True)
    status, result, out = _json(capsys, _demo(body))
    assert status == 0
    assert out.count("\n") == 1
    assert result == {"demo": "toy", "checks": [{"name": "pid", "expected": os.getpid(),
                                                 "observed": os.getpid(), "ok": True}], "skipped": []}


def test_a_failed_check_exits_1(capsys):
    status, result, _ = _json(capsys, _demo(lambda d: d.check("x", 1, 2, False)))
    assert status == 1 and result["checks"][0]["ok"] is False


def test_an_exception_fails_its_step_and_the_next_step_runs(capsys):
    def body(demo):
        with demo.step("breaks"):
            raise RuntimeError("boom")
        with demo.step("runs"):
            demo.check("after", "reached", "reached", True)
    status, result, _ = _json(capsys, _demo(body))
    assert status == 1
    assert [c["ok"] for c in result["checks"]] == [False, True]
    assert "RuntimeError: boom" in result["checks"][0]["observed"]


def test_require_skips_the_rest_of_the_step_with_the_reason(capsys):
    def body(demo):
        with demo.step("needs a thing"):
            demo.require(Answer(False, "needs CAP_SYS_NICE (not in effective set)"))
            demo.check("never", 1, 1, True)
    status, result, _ = _json(capsys, _demo(body))
    assert status == 0 and result["checks"] == []
    assert result["skipped"] == [{"name": "needs a thing", "reason": "needs CAP_SYS_NICE (not in effective set)"}]


def test_human_mode_prints_steps_theory_observed_and_verdict(capsys):
    def body(demo):
        with demo.step("a step", asked="kill(pid, 0)"):
            demo.check("alive", "0", "0", True)
    assert run(_demo(body), []) == 0
    out = capsys.readouterr().out
    for text in ("[1] a step", "asked the kernel : kill(pid, 0)", "theory expects : 0",
                 "observed       : 0   [ok]", "PASSED toy: 1 checks held, 0 failed, 0 skipped"):
        assert text in out


def test_children_are_reaped_and_objects_removed_even_after_an_exception(capsys, tmp_path):
    removed = []

    class Owned:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            removed.append(True)

    pids = []

    def body(demo):
        demo.own(Owned())
        pids.append(demo.children.fork(time.sleep, 60))
        raise RuntimeError("outside any step")

    try:
        run(_demo(body), ["--json"])
    except RuntimeError:
        pass
    assert removed == [True]
    assert not psutil.pid_exists(pids[0])


_SCRIPT = textwrap.dedent("""
    import sys, time, types
    from osvirt.demo import run
    def body(demo):
        for _ in range(2):
            demo.children.fork(time.sleep, 60)
        print("ready", flush=True)
        time.sleep(60)
    sys.exit(run(types.SimpleNamespace(NAME="toy", SEED="0", SUMMARY="t", body=body), []))
""")


def _interrupt(signo):
    proc = subprocess.Popen([sys.executable, "-c", _SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        while proc.stdout.readline().strip() != "ready":
            pass
        kids = psutil.Process(proc.pid).children()
        assert len(kids) == 2
        proc.send_signal(signo)
        return proc.wait(timeout=10), kids
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_sigint_reaps_children_and_exits_130():
    status, kids = _interrupt(signal.SIGINT)
    assert status == 130
    assert not any(k.is_running() for k in kids)


def test_sigterm_reaps_children_and_exits_143():
    status, kids = _interrupt(signal.SIGTERM)
    assert status == 143
    assert not any(k.is_running() for k in kids)


def test_retry_measures_until_the_figure_holds_at_most_tries_times():
    figures = iter([5, 3, 1, 0])
    assert Demo.retry(lambda: next(figures), lambda f: f <= 3) == 3  # second try held
    calls = []
    assert Demo.retry(lambda: calls.append(1) or len(calls), lambda f: False, tries=4) == 4  # the last figure
    assert len(calls) == 4
    with pytest.raises(ValueError, match="Demo.retry: tries"):
        Demo.retry(lambda: 0, lambda f: True, tries=0)


def test_ctrl_c_while_a_resource_is_being_owned_still_removes_it():
    removed = []

    class InterruptedWhileCreated:
        def __enter__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the object exists, its exit is not yet registered
            return self

        def __exit__(self, *exc):
            removed.append(True)

    assert run(_demo(lambda demo: demo.own(InterruptedWhileCreated())), ["--json"]) == 130
    assert removed == [True]


def test_ctrl_c_during_the_cleanup_of_a_finished_demo_is_an_interruption(capsys):
    removed = []

    class InterruptedWhileRemoved:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            os.kill(os.getpid(), signal.SIGINT)  # held back until the cleanup ends
            removed.append(True)

    assert run(_demo(lambda demo: demo.own(InterruptedWhileRemoved())), ["--json"]) == 130
    assert removed == [True]
    captured = capsys.readouterr()
    assert captured.out == ""  # no verdict for an interrupted run
    assert "interrupted, children reaped and objects removed" in captured.err
