"""Container primitives: a container's start, to its program's exit, next to runc's.

One bundle, `runc spec`'s config (its namespaces, mounts, three
capabilities, no_new_privs, a read-only root) with the host's /usr
bound read-only into an empty root and /bin, /lib... linked into it, runs
/bin/true: through osvirt.container.Container (create, start, wait, delete,
in this process) and through `runc run` of the same bundle (its binary's own
start included, as a caller of runc pays it). The C loop is the bare process
start a container wraps, posix_spawn and waitpid of /bin/true; the floor,
the namespaces alone (namespaces.fork_in, then exec).
"""
import itertools
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from osvirt.bench.harness import Primitive, rig
from osvirt.naming import private_dir

if TYPE_CHECKING:
    from osvirt.container import Container

__all__ = ["PRIMITIVES", "bundle", "compare", "report"]

TRUE = "/bin/true"
_USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def bundle(directory: str, args: list[str]) -> str:
    """Write a bundle running `args` in `directory` (config.json and rootfs/); returns it.

    The config is `runc spec`'s (osvirt-runtime's spec()) with terminal off,
    the host's /usr bound read-only, and usrmerge's links as the host has them.
    """
    from osvirt.container import runtime
    rootfs = os.path.join(directory, "rootfs")
    os.mkdir(rootfs)
    for name in _USR_LINKS:
        if os.path.islink(f"/{name}"):
            os.symlink(os.readlink(f"/{name}"), os.path.join(rootfs, name))
    config = runtime.spec()
    config["process"].update(terminal=False, args=args)
    config["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr",
                             "options": ["rbind", "ro", "nosuid", "nodev"]})
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return directory


def _run_true(c: "Container") -> None:
    """create, start and wait for a container running /bin/true (RuntimeError unless it exits 0)."""
    c.create()
    c.start()
    if c.wait() != 0:
        raise RuntimeError("/bin/true failed in the container")


@rig
def _osvirt_start() -> Iterator[Callable[[], None]]:
    from osvirt.container import Container, oci
    with private_dir(tempfile.gettempdir()) as directory:
        spec = oci.load(bundle(directory, [TRUE]))

        def start_to_exit() -> None:
            c = Container(spec)
            try:
                _run_true(c)
            finally:
                c.delete(force=True)
        yield start_to_exit


@rig
def _runc_run() -> Iterator[Callable[[], None]]:
    runc = shutil.which("runc")
    if runc is None:
        raise FileNotFoundError("runc is not installed")
    with private_dir(tempfile.gettempdir()) as directory:
        path = bundle(directory, [TRUE])
        root = os.path.join(directory, "runc-state")  # runc's own state, inside what is removed after
        ids = itertools.count()

        def runc_run() -> None:
            # not osvirt-*: runc names its cgroup after the id, and osvirt's names are the tracker's
            subprocess.run([runc, "--root", root, "run", "--bundle", path, f"bench-{os.getpid()}-{next(ids)}"],
                           check=True, stdin=subprocess.DEVNULL)
        yield runc_run


def _namespaces_only() -> None:
    from osvirt.container import namespaces
    from osvirt.process import Children
    with Children() as kids:
        started = namespaces.fork_in(kids, ["pid", "network", "ipc", "uts", "mount"], os.execv, TRUE, [TRUE])
        if kids.wait(started.owned) != 0:
            raise RuntimeError("/bin/true failed")


PRIMITIVES = [
    Primitive(
        "container-start", "a container running /bin/true, from create to its exit and delete: "
                           "osvirt.container.Container on a `runc spec`-like bundle",
        python=_osvirt_start, c="spawn_wait", c_args=(TRUE,),
        floor=("namespaces.fork_in(pid, net, ipc, uts, mount) + exec", _namespaces_only),
        peer=("runc run (same bundle)", _runc_run) if shutil.which("runc") else None,
        needs=("cap_sys_admin", "mount_namespace"),
        note="the C loop is the bare process start a container wraps (posix_spawn + waitpid, no "
             "namespaces); the floor, its namespaces alone; runc's figure includes its binary's start, as "
             "any caller of runc pays it" + ("" if shutil.which("runc") else "; no peer: runc is not installed")),
]


def compare(runs: int = 20) -> dict[str, list[float]]:
    """Seconds for each of `runs` starts of the same bundle, osvirt's and runc's taken in turn (after one
    warm-up each): {"osvirt to exit", "osvirt to delete", "runc run"} (the last empty without runc)."""
    from osvirt.container import Container, oci
    runc = shutil.which("runc")
    times: dict[str, list[float]] = {"osvirt to exit": [], "osvirt to delete": [], "runc run": []}
    with private_dir(tempfile.gettempdir()) as directory:
        spec = oci.load(bundle(directory, [TRUE]))
        for i in range(runs + 1):
            t0 = time.perf_counter()
            c = Container(spec)
            try:
                _run_true(c)
                t1 = time.perf_counter()
            finally:
                c.delete(force=True)
            t2 = time.perf_counter()
            if runc:
                subprocess.run([runc, "--root", os.path.join(directory, "runc-state"), "run", "--bundle", directory,
                                f"bench-{os.getpid()}-{i}"], check=True, stdin=subprocess.DEVNULL)
            t3 = time.perf_counter()
            if i:
                times["osvirt to exit"].append(t1 - t0)
                times["osvirt to delete"].append(t2 - t0)
                if runc:
                    times["runc run"].append(t3 - t2)
    return times


def report(runs: int = 20) -> None:
    """Print compare(runs)'s medians: python -c 'from osvirt.bench import container; container.report()'."""
    for what, seconds in compare(runs).items():
        if seconds:
            print(f"{what:18} median {statistics.median(seconds) * 1e3:6.1f} ms  (min {min(seconds) * 1e3:.1f}, "
                  f"max {max(seconds) * 1e3:.1f}, {len(seconds)} runs)")
