"""What importing the six areas loads: the import-time budget, kept structurally.

`import osvirt.process, osvirt.ipc, osvirt.sync, osvirt.memory, osvirt.fs,
osvirt.device` costs under 60 ms (cumulative -X importtime; it was ~100 ms)
because the modules that made most of it are imported by the calls that need
them, not at import. A timing bound would be flaky on a shared machine, so
these tests check the cause instead: a fresh interpreter that imports the six
areas has none of those modules, and typing made no ForwardRef (a string
annotation or TypeVar bound that typing evaluates: its compile() is the
process's first, ~1.5 ms of compiler set-up).
"""
import json
import subprocess
import sys

import pytest

AREAS = ("osvirt.process", "osvirt.ipc", "osvirt.sync", "osvirt.memory", "osvirt.fs", "osvirt.device")

# What was imported at import time before, and by what (the call that imports it now):
NOT_AT_IMPORT = {
    "psutil": "osvirt.process.sched (context_switches, a refusal's cause): ~20 ms with socket, subprocess",
    "dataclasses": "five records, now NamedTuples; it brings inspect, ast, dis, tokenize",
    "inspect": "dataclasses",
    "subprocess": "osvirt.tracker (starting the tracker), Children.spawn",
    "secrets": "osvirt.naming (os.urandom(4).hex() is what token_hex does); brings hashlib and OpenSSL",
    "hashlib": "secrets",
    "tempfile": "osvirt.naming.private_dir, osvirt.tracker's temp roots, osvirt.fs.perms.searchable_dir",
    "random": "tempfile",
    "shutil": "rmtree and which, in the calls that use them; brings bz2 and lzma",
    "platform": "osvirt.env.facts",
    "uuid": "osvirt.memory.swapfile's header",
    "traceback": "a forked child's uncaught exception",
    "socket": "psutil",
}

_PROBE = """
import json, sys, typing
made = []
init = typing.ForwardRef.__init__
def counting(self, arg, *args, **kwargs):
    made.append(arg)
    init(self, arg, *args, **kwargs)
typing.ForwardRef.__init__ = counting
import {areas}
typing.ForwardRef.__init__ = init
print(json.dumps({{"modules": sorted(sys.modules), "forward_refs": made}}))
"""


@pytest.fixture(scope="module")
def imported():
    out = subprocess.run([sys.executable, "-c", _PROBE.format(areas=", ".join(AREAS))],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_the_six_areas_import(imported):
    assert set(AREAS) <= set(imported["modules"])


@pytest.mark.parametrize("name", sorted(NOT_AT_IMPORT))
def test_a_heavy_module_is_left_to_the_call_that_needs_it(imported, name):
    assert name not in imported["modules"], f"{name} is imported again at import time ({NOT_AT_IMPORT[name]})"


def test_typing_evaluates_no_string_annotation(imported):
    assert imported["forward_refs"] == [], (
        "a NamedTuple field under `from __future__ import annotations`, or a TypeVar bound given as a "
        f"string, made ForwardRefs {imported['forward_refs']}: bind to the class, or drop the future import")
