"""Every demo in demos/ runs with --json, and every check that ran held.

The demo list comes from the directory itself, so a new demo is tested
without anyone adding it here.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_FILES = sorted(f for f in os.listdir(os.path.join(ROOT, "demos")) if f[:2].isdigit() and f.endswith(".py"))


@pytest.mark.parametrize("filename", DEMO_FILES)
def test_demo_checks_hold_or_skip_with_a_reason(filename):
    proc = subprocess.run([sys.executable, os.path.join("demos", filename), "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    result = json.loads(proc.stdout)  # exactly one object: anything else on stdout breaks this
    failed = [c for c in result["checks"] if not c["ok"]]
    assert not failed, f"{filename}: {failed}\n{proc.stderr}"
    assert proc.returncode == 0, proc.stderr
    assert result["checks"], f"{filename} checked nothing"
    for skip in result["skipped"]:
        assert skip["reason"].strip(), f"{filename}: skipped {skip['name']} without a reason"
