"""The container demo skips a step only where this environment forbids it, and says why.

tests/demos/test_demos.py holds every demo to its checks and to a reason for each skip; here, a step
whose facility osvirt.env says is available must have run: the namespace steps wherever namespaces
can be made (CAP_SYS_ADMIN, or rootless in a user namespace), the cgroup steps wherever the cgroup can
be made, seccomp wherever a filter can be installed, the capability step everywhere. And a step it
skipped names the probe's own reason.
"""
import json
import os
import re
import subprocess
import sys

import pytest

from osvirt import env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _namespaces():
    return env.can("cap_sys_admin") or env.can("userns")


# The start of each step's title -> what allows it here.
STEPS = {
    "PID namespace": _namespaces,
    "UTS namespace": _namespaces,
    "IPC namespace": _namespaces,
    "mount namespace": _namespaces,
    "network namespace": _namespaces,
    "user namespace": lambda: env.can("userns"),
    "memory limit": lambda: env.can("cgroup_memory"),
    "CPU quota": lambda: env.can("cgroup_cpu"),
    "CPU weights": lambda: env.can("cgroup_cpu"),
    "pids limit": lambda: env.can("cgroup_pids"),
    "seccomp": lambda: env.can("seccomp_filter"),
    "capabilities": lambda: env.Answer(True, "always"),
    "the cost of a start": _namespaces,
}


@pytest.fixture(scope="module")
def result():
    proc = subprocess.run([sys.executable, os.path.join("demos", "12_container.py"), "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("step", list(STEPS))
def test_a_step_is_skipped_exactly_where_the_environment_forbids_it(result, step):
    allowed = STEPS[step]()
    skips = [s for s in result["skipped"] if s["name"].startswith(step)]
    if allowed:
        assert not skips, f"{step} skipped though {allowed.reason}: {skips}"
    else:
        assert skips, f"{step} ran though {allowed.reason}"
        assert allowed.reason in skips[0]["reason"] or skips[0]["reason"] in allowed.reason, skips


def test_every_step_of_the_demo_is_listed_here_once():
    with open(os.path.join(ROOT, "demos", "12_container.py")) as f:
        titles = re.findall(r'demo\.step\(f?"([^"]+)"', f.read())
    assert sorted(prefix for title in titles for prefix in STEPS if title.startswith(prefix)) == sorted(STEPS)
    assert len(titles) == len(STEPS)
