import json
import os
import subprocess
import sys

from osvirt import env
from osvirt.cli import demos, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _osvirt(*args):
    return subprocess.run([sys.executable, "-m", "osvirt", *args], capture_output=True, text=True, cwd=ROOT)


def test_list_names_every_demo_file():
    files = sorted(f for f in os.listdir(os.path.join(ROOT, "demos")) if f[:2].isdigit() and f.endswith(".py"))
    assert len(demos()) == len(files)
    out = _osvirt("list").stdout
    for name, module in demos().items():
        assert name in out and module.SEED in out


def test_unknown_demo_exits_2_and_lists_the_demos():
    proc = _osvirt("demo", "no-such-demo")
    assert proc.returncode == 2
    assert "unknown demo 'no-such-demo'" in proc.stderr
    for name in demos():
        assert name in proc.stderr


def test_info_json_is_one_object_with_the_probes():
    proc = _osvirt("info", "--json")
    assert proc.returncode == 0
    facts = json.loads(proc.stdout)
    answer = env.can("cap_sys_admin")
    assert facts["can"]["cap_sys_admin"] == {"ok": answer.ok, "reason": answer.reason}


def test_info_table_shows_each_answer_with_its_reason(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "can I ...?" in out and env.can("kvm").reason in out


def test_bad_usage_is_a_usage_error():
    proc = _osvirt("list", "--bogus")
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr
