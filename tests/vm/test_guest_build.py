"""The demo guest's build cache, and `osvirt vm run`, SIGKILLed mid-way: nothing half-written, nothing left.

Each run has a cache ($XDG_CACHE_HOME) and a TMPDIR of its own, both empty at
the start, so the build happens in the run and whatever it leaves is seen.
"""
import os
import shutil
import subprocess
import sys
import time

import psutil
import pytest

from osvirt.naming import private_dir
from osvirt.process import Children

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = "from osvirt.vm.guest import build; print(build())"
COMPILERS = {"cc1", "as", "collect2", "ld"}  # what gcc runs to compile (not `gcc --version`, which comes first)

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                                reason="no C compiler (gcc) to build the demo guest with")


def _spawn(kids, argv, cache, tmp):
    environ = {**os.environ, "XDG_CACHE_HOME": cache, "TMPDIR": tmp}
    # stderr is a pipe the tracker inherits: its EOF means the tracker has done its removals too
    return kids.spawn(argv, cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_while_compiling(proc, timeout_s=60.0):
    """SIGKILL `proc` once the compiler's passes run under it: the build is half done."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            names = {child.name() for child in psutil.Process(proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            names = set()
        if names & COMPILERS:
            proc.kill()
            return proc.communicate(timeout=60)[1]
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    raise AssertionError(f"no compiler was seen running under the build: {proc.communicate()[1]}")


def _listing(directory):
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def _leftovers(*dirs):
    return {d: _listing(d) for d in dirs if _listing(d)}


def test_a_build_sigkilled_while_compiling_leaves_nothing_and_the_next_one_builds_whole():
    with Children() as kids, private_dir() as cache, private_dir() as tmp:
        err = _kill_while_compiling(_spawn(kids, [sys.executable, "-c", BUILD], cache, tmp))
        osvirt_cache = os.path.join(cache, "osvirt")
        assert _leftovers(osvirt_cache, tmp) == {}, err  # no temp file, no half-written binary in the cache
        built = _spawn(kids, [sys.executable, "-c", BUILD], cache, tmp)
        out, err = built.communicate(timeout=120)
        assert built.returncode == 0, err
        path = out.strip()
        assert _listing(osvirt_cache) == [os.path.basename(path)] and _leftovers(tmp) == {}
        with open(path, "rb") as f:
            binary = f.read()
        assert binary.startswith(b"\xe8")  # entry.S's first instruction: call setup


@pytest.mark.needs("kvm")
@pytest.mark.parametrize("moment", ["compiling", "running"])
def test_a_sigkilled_osvirt_vm_run_leaves_nothing(moment):
    """Killed while it builds its guest, or once the guest has booted and written to its UART."""
    run = [sys.executable, "-m", "osvirt", "vm", "run", "--guest", "demo", "--memory-mib", "16"]
    with Children() as kids, private_dir() as cache, private_dir() as tmp:
        if moment == "running":
            assert _spawn(kids, [sys.executable, "-c", BUILD], cache, tmp).wait(120) == 0
            proc = _spawn(kids, run, cache, tmp)
            line = proc.stdout.readline()
            assert line.startswith("osvirt demo guest"), proc.communicate()[1]
            proc.kill()
            err = proc.communicate(timeout=60)[1]
        else:
            err = _kill_while_compiling(_spawn(kids, run, cache, tmp))
        assert _leftovers(tmp) == {}, err
        cached = _listing(os.path.join(cache, "osvirt"))
        assert len(cached) == (0 if moment == "compiling" else 1), cached  # the one whole binary, or none
