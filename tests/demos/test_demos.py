"""Every demo in demos/ runs with --json, and every check that ran held.

The demo list comes from the directory itself, so a new demo is tested
without anyone adding it here. The demos run once, through
`osvirt demo all --json` (each in its own interpreter); each demo's result is
then judged on its own.
"""
import json
import os
import subprocess
import sys

import pytest

from osvirt.cli import demos

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_FILES = sorted(f for f in os.listdir(os.path.join(ROOT, "demos")) if f[:2].isdigit() and f.endswith(".py"))


@pytest.fixture(scope="module")
def all_results():
    proc = subprocess.run([sys.executable, "-m", "osvirt", "demo", "all", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    result = json.loads(proc.stdout)  # exactly one object: anything else on stdout breaks this
    assert result["ok"] == (proc.returncode == 0), proc.stderr
    return {d["demo"]: dict(d, stderr=proc.stderr) for d in result["demos"]}


def test_every_demo_file_is_a_registered_demo():
    assert [m.__name__.rsplit(".", 1)[1] + ".py" for m in demos().values()] == DEMO_FILES


@pytest.mark.parametrize("filename", DEMO_FILES)
def test_demo_runs_as_a_file(filename):
    proc = subprocess.run([sys.executable, os.path.join("demos", filename), "--help"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and "--json" in proc.stdout, proc.stderr


@pytest.mark.parametrize("name", list(demos()))
def test_demo_checks_hold_or_skip_with_a_reason(name, all_results):
    result = all_results[name]
    failed = [c for c in result["checks"] if not c["ok"]]
    assert not failed, f"{name}: {failed}\n{result['stderr']}"
    assert result["checks"], f"{name} checked nothing"
    for skip in result["skipped"]:
        assert skip["reason"].strip(), f"{name}: skipped {skip['name']} without a reason"
