"""Control groups: memory, CPU and pids limits on cgroup v2 and on cgroup v1.

A cgroup is a directory in a cgroup filesystem; its files are the kernel's
interface (write `memory.max`, read `memory.current`). On cgroup v2 one
hierarchy (the "unified" one) holds every controller enabled there; on v1
each controller has a hierarchy of its own, mounted alone (`memory`) or
co-mounted (`cpu,cpuacct`). A hybrid system has both, and each controller
lives in exactly one: `placements()` reads /proc/self/mountinfo (where the
hierarchies are mounted) and /proc/self/cgroup (where this process sits in
each), and puts each controller on v2 when the cgroup v2 parent lists it in
`cgroup.controllers`, else on the v1 hierarchy that has it.

`Cgroup` makes one directory per hierarchy it needs, named
`osvirt-<pid>-<random>`, under this process's own cgroup there, writes the
limits, and on `close()` kills what is still inside and removes the
directories. Each directory is registered with osvirt.tracker first, which
does the same should its owner be SIGKILLed.

The files, per version:

    limit / reading     cgroup v2                   cgroup v1
    memory limit        memory.max (+ swap.max 0)   memory.limit_in_bytes (+ memsw)
    memory now, peak    memory.current, .peak       memory.usage_in_bytes, .max_usage_in_bytes
    OOM kills           memory.events oom_kill      memory.oom_control oom_kill
    CPU quota           cpu.max "quota period"      cpu.cfs_period_us, cpu.cfs_quota_us
    CPU weight          cpu.weight (1..10000)       cpu.shares (2..262144), converted
    CPU time            cpu.stat usage_usec         cpuacct.usage (ns)
    pids limit, now     pids.max, pids.current      pids.max, pids.current
    kill all            cgroup.kill (>= 5.14)       SIGKILL each pid in cgroup.procs
"""
import errno
import functools
import os
import re
import signal
import stat
import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from osvirt import tracker
from osvirt._owned import Owned
from osvirt.container import _native as _cnative
from osvirt.container import mounts as _mounts  # its parser of mountinfo
from osvirt.errors import kernel_error
from osvirt.naming import unique_name
from osvirt.process.spawn import signals_deferred

__all__ = ["CONTROLLERS", "Mount", "Placement", "Cgroup", "cgroup_mounts", "own_cgroups", "cgroup_directory",
           "v2_own", "mount_of", "placements", "writable",
           "limit_writes", "weight_to_shares", "check_path", "kill_and_rmdir"]

CONTROLLERS = ("memory", "cpu", "pids")

# The kernel's ranges (Documentation/admin-guide/cgroup-v2.rst, kernel/sched/core.c).
CPU_WEIGHT_RANGE = (1, 10000)  # cpu.weight
CPU_SHARES_RANGE = (2, 262144)  # cpu.shares: MIN_SHARES .. MAX_SHARES
CPU_PERIOD_US_RANGE = (1000, 1000000)  # cfs_period_us: 1 ms .. 1 s
CPU_QUOTA_US_MIN = 1000  # cfs_quota_us: at least 1 ms
PIDS_MAX_LIMIT = 1 << 22  # PID_MAX_LIMIT on 64-bit: pids.max above it is refused


class Mount(NamedTuple):
    """A cgroup hierarchy as /proc/self/mountinfo shows it."""
    point: str  # where it is mounted
    root: str  # the cgroup at that point (not "/" when a sub-tree is bind-mounted, e.g. in a container)
    version: int  # 1 or 2
    controllers: frozenset[str]  # v1: those bound to this hierarchy; v2: empty (see cgroup.controllers)
    read_only: bool


class Placement(NamedTuple):
    """Where a controller's new cgroup goes: the hierarchy's version and the parent directory."""
    controller: str
    version: int
    parent: str


@functools.lru_cache(maxsize=1)  # the kernel's controllers: fixed once it has booted
def _v1_subsystems() -> frozenset[str]:
    with open("/proc/cgroups") as f:
        return frozenset(line.split()[0] for line in f if not line.startswith("#"))


def cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[Mount]:
    """The cgroup (v1) and cgroup2 mounts in `mountinfo`, in its order."""
    subsystems: frozenset[str] | None = None
    found = []
    for row in _mounts.mountinfo(mountinfo, ("cgroup", "cgroup2")):
        controllers = frozenset[str]()
        if row.fstype == "cgroup":  # its controllers are among its options ("rw,cpu,cpuacct")
            subsystems = _v1_subsystems() if subsystems is None else subsystems
            controllers = row.super_options & subsystems
        found.append(Mount(row.mount_point, row.root, 2 if row.fstype == "cgroup2" else 1, controllers,
                           "ro" in row.options or "ro" in row.super_options))
    return found


def own_cgroups(cgroup: str = "/proc/self/cgroup") -> dict[str, str]:
    """{controller: this process's cgroup path in its v1 hierarchy}, and "" for the v2 one."""
    own = {}
    with open(cgroup) as f:
        for line in f:
            hierarchy_id, controllers, path = line.rstrip("\n").split(":", 2)
            if hierarchy_id == "0":
                own[""] = path
            else:
                own.update((c, path) for c in controllers.split(","))
    return own


def cgroup_directory(mount: Mount, path: str) -> str | None:
    """The directory of cgroup `path` under `mount`, or None when the mount does not reach it."""
    relative = os.path.relpath(path, mount.root)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return None
    return os.path.normpath(os.path.join(mount.point, relative))


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def v2_own(mounts: list[Mount] | None = None, own: dict[str, str] | None = None) -> tuple[str, frozenset[str]] | None:
    """This process's cgroup v2 directory and the controllers it offers its children
    (cgroup.controllers); None without a v2 hierarchy that reaches it."""
    mounts = cgroup_mounts() if mounts is None else mounts
    own = own_cgroups() if own is None else own
    unified = next((m for m in mounts if m.version == 2), None)
    parent = cgroup_directory(unified, own[""]) if unified is not None and "" in own else None
    if parent is None:
        return None
    return parent, frozenset(_read(os.path.join(parent, "cgroup.controllers")).split())


def mount_of(path: str) -> Mount | None:
    """The cgroup mount `path` is in (the innermost), or None."""
    inside = [m for m in cgroup_mounts() if path == m.point or path.startswith(m.point.rstrip("/") + "/")]
    return max(inside, key=lambda m: len(m.point), default=None)


def placements(controllers: Iterable[str] = CONTROLLERS, mounts: list[Mount] | None = None) -> dict[str, Placement]:
    """{controller: Placement} for each of `controllers`, under this process's own cgroups.

    v2 when this process's v2 cgroup lists the controller in cgroup.controllers
    (its parent made it available), else the v1 hierarchy bound to it. The
    v1 cpu controller brings cpuacct along: CPU time is read there. A
    controller found nowhere is FileNotFoundError. `mounts`: cgroup_mounts(),
    when the caller has read them already.
    """
    mounts, own = cgroup_mounts() if mounts is None else mounts, own_cgroups()
    v2_parent, v2_available = v2_own(mounts, own) or (None, frozenset[str]())
    wanted = list(controllers)
    found: dict[str, Placement] = {}
    for controller in wanted:
        if controller in v2_available and v2_parent is not None:
            found[controller] = Placement(controller, 2, v2_parent)
            continue
        mount = next((m for m in mounts if m.version == 1 and controller in m.controllers), None)
        parent = cgroup_directory(mount, own[controller]) if mount is not None and controller in own else None
        if mount is None or parent is None:
            raise kernel_error(errno.ENOENT, f"cgroup({controller})",
                               "no cgroup v2 parent offers it and no v1 hierarchy of it is mounted here")
        found[controller] = Placement(controller, 1, parent)
        if controller == "cpu" and "cpuacct" not in wanted:
            wanted.append("cpuacct")  # cpuacct.usage: the v1 CPU time
    return found


def writable(placement: Placement) -> tuple[bool, str]:
    """Whether a child cgroup of `placement`'s controller can be made (and its controller enabled)
    there, and why: what the kernel would check, asked without making anything."""
    mount = mount_of(placement.parent)
    where = f"cgroup v{placement.version} {placement.controller} controller at {placement.parent}"
    if mount is not None and mount.read_only:
        return False, f"{where}: {mount.point} is mounted read-only"
    if not os.access(placement.parent, os.W_OK):  # mkdir needs write permission on the parent, not a uid
        return False, f"{where}: no write permission on it (mkdir of a child cgroup needs it)"
    if placement.version == 2:
        subtree = os.path.join(placement.parent, "cgroup.subtree_control")
        if placement.controller not in _read(subtree).split():
            if not os.access(subtree, os.W_OK):
                return False, f"{where}: not enabled for its children, and {subtree} is not writable"
            if _read(os.path.join(placement.parent, "cgroup.procs")).split() and not os.path.ismount(placement.parent):
                return False, (f"{where}: not enabled for its children, and it holds processes: cgroup v2's "
                               "no-internal-process rule forbids enabling it (EBUSY)")
    return True, f"{where}: a child cgroup can be made there"


# -- limits: checked (ValueError naming the file) before anything is written ----------------
def _check_int(facility: str, value: object, low: int, high: int) -> int:
    if type(value) is not int:
        raise TypeError(f"cgroup {facility}: must be int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"cgroup {facility}: {value} not in {low}..{high}")
    return value


def weight_to_shares(weight: int) -> int:
    """The v1 cpu.shares for a v2 cpu.weight, as crun converts them (crun(1), "cgroup v2").

    crun maps the ranges linearly onto each other: weight = 1 + (shares - 2)
    * 9999 / 262142, so shares = 2 + (weight - 1) * 262142 / 9999. The map is
    affine with a small offset, so ratios of weights become nearly the same
    ratios of shares (100 : 300 -> 2597 : 7841), which is what CFS divides
    CPU time by.
    """
    _check_int("cpu.weight", weight, *CPU_WEIGHT_RANGE)
    low, high = CPU_SHARES_RANGE
    return low + (weight - 1) * (high - low) // (CPU_WEIGHT_RANGE[1] - 1)


def limit_writes(version: int, *, memory_max_bytes: int | None = None, cpu_quota: tuple[int, int] | None = None,
                 cpu_weight: int | None = None, pids_max: int | None = None) -> dict[str, list[tuple[str, str]]]:
    """{controller: [(file, text), ...]}: what setting these limits writes on cgroup `version`, in order.

    Files that exist only with swap accounting (v2 memory.swap.max, v1
    memory.memsw.limit_in_bytes) are listed: the caller skips them where absent.
    Bad values raise ValueError naming the file before anything is written.
    """
    if version not in (1, 2):
        raise ValueError(f"cgroup: version must be 1 or 2, not {version!r}")
    writes: dict[str, list[tuple[str, str]]] = {}
    if memory_max_bytes is not None:
        size = str(_check_int("memory.max", memory_max_bytes, 1, 2**63 - 1))
        # Swap forbidden too: with swap, reclaim would page the cgroup out rather than
        # OOM-kill it, and the limit would bound RAM only, not what the child uses.
        writes["memory"] = ([("memory.max", size), ("memory.swap.max", "0")] if version == 2 else
                            [("memory.limit_in_bytes", size), ("memory.memsw.limit_in_bytes", size)])
    if cpu_quota is not None or cpu_weight is not None:
        writes["cpu"] = []
    if cpu_quota is not None:
        if not isinstance(cpu_quota, tuple) or len(cpu_quota) != 2:
            raise TypeError(f"cgroup cpu.max: cpu_quota must be (quota_us, period_us), not {cpu_quota!r}")
        period = _check_int("cpu.max period_us", cpu_quota[1], *CPU_PERIOD_US_RANGE)
        # Above period * CPUs the quota limits nothing, but the kernel takes it: so does this.
        quota = _check_int("cpu.max quota_us", cpu_quota[0], CPU_QUOTA_US_MIN, 2**44)
        writes["cpu"] += ([("cpu.max", f"{quota} {period}")] if version == 2 else
                          [("cpu.cfs_period_us", str(period)), ("cpu.cfs_quota_us", str(quota))])
    if cpu_weight is not None:
        _check_int("cpu.weight", cpu_weight, *CPU_WEIGHT_RANGE)
        writes["cpu"].append(("cpu.weight", str(cpu_weight)) if version == 2 else
                             ("cpu.shares", str(weight_to_shares(cpu_weight))))
    if pids_max is not None:
        writes["pids"] = [("pids.max", str(_check_int("pids.max", pids_max, 0, PIDS_MAX_LIMIT)))]
    return writes


_OPTIONAL = frozenset({"memory.swap.max", "memory.memsw.limit_in_bytes"})  # only with swap accounting


# -- the tracker's side: which paths it accepts, and how it removes one ----------------------
_NAME = re.compile(r"osvirt-[0-9]+-[0-9a-f]{8}")


def check_path(facility: str, path: str) -> None:
    """ValueError unless `path` is an osvirt-named directory inside a cgroup mount."""
    if (not os.path.isabs(path) or os.path.normpath(path) != path
            or not _NAME.fullmatch(os.path.basename(path))):
        raise ValueError(f"{facility}: {path!r} is not an absolute, normal path to an osvirt name")
    if _below_cgroup_mount(path):
        return
    mount = mount_of(path)  # mountinfo: a path in reach of none, or one whose parent is gone
    if mount is None or mount.point == path:
        raise ValueError(f"{facility}: {path!r} is not inside a cgroup mount")


def _below_cgroup_mount(path: str) -> bool:
    """Whether statfs(2) says `path`'s parent is in a cgroup filesystem (v1 or v2), and `path` is no
    mount point of its own (its device is its parent's, when it exists): no mountinfo read."""
    parent = os.path.dirname(path)
    if _cnative.statfs_type(parent) not in _cnative.CGROUP_MAGICS:
        return False
    try:
        device = os.lstat(path).st_dev
    except FileNotFoundError:  # not made yet (registered before mkdir) or removed already
        return True
    except OSError:
        return False
    try:
        return device == os.stat(parent).st_dev
    except OSError:  # the parent gone meanwhile: mountinfo decides
        return False


def _procs(path: str) -> list[int]:
    return [int(pid) for pid in _read(os.path.join(path, "cgroup.procs")).split()]


def _write(path: str, text: str, busy_hint: str | None = None) -> None:
    """Write `text` to a cgroup file; `busy_hint` says why, should the kernel answer EBUSY."""
    # O_WRONLY without O_CREAT: a file this kernel lacks is ENOENT, never created.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as e:
        err = e.errno or errno.EIO
        raise kernel_error(err, f"write({text!r})", busy_hint if err == errno.EBUSY else None, path) from None


def kill_and_rmdir(path: str, timeout_s: float = 10.0) -> bool:
    """SIGKILL every process in cgroup `path`, then rmdir it; False if it did not exist.

    Refuses a directory another uid owns (PermissionError). cgroup.kill (v2,
    Linux >= 5.14) kills them all at once, forks in flight included;
    without it each pid in cgroup.procs is killed, until none is left. A
    cgroup whose last process has died but not yet left is EBUSY to rmdir
    for a moment: retried until `timeout_s`.
    """
    check_path("rmdir", path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise ValueError(f"rmdir: {path} is not a directory")
    if st.st_uid != os.geteuid():
        raise PermissionError(f"rmdir({path}): owned by uid {st.st_uid}, not {os.geteuid()}: not ours to remove")
    try:  # empty already (its processes gone, as a container's are once its PID 1 has exited): done
        os.rmdir(path)
        return True
    except OSError:
        pass
    deadline = time.monotonic() + timeout_s
    kill_file = os.path.join(path, "cgroup.kill")
    has_kill = os.path.exists(kill_file)
    while True:
        pids = _procs(path)
        if has_kill and pids:
            _write(kill_file, "1")
        for pid in pids if not has_kill else ():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.rmdir(path)
            return True
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise kernel_error(e.errno or errno.EIO, "rmdir", f"{len(pids)} processes were in it",
                                   path) from None
        time.sleep(0.01)


class Cgroup(Owned):
    """A new cgroup for each of `controllers` (memory, cpu, pids by default), with limits.

    `memory_max_bytes`: memory use above it is reclaimed, then OOM-killed;
    swap is forbidden too where the kernel accounts it. `cpu_quota`:
    (quota_us, period_us), at most quota_us of CPU time every period_us.
    `cpu_weight` (1..10000, default 100): the share of a contended CPU
    (v1: cpu.shares, see weight_to_shares). `pids_max`: fork and clone fail
    with EAGAIN past it. A limit's controller joins `controllers`.

    `where` overrides `placements()` (e.g. a delegated parent); `mounts`, the
    cgroup_mounts() it reads, when the caller has read them. Bad values
    raise ValueError before any directory is made. On cgroup v2 a
    controller available but not yet enabled for the parent's children is
    enabled there (`+memory` into its cgroup.subtree_control), as runc
    does; that stays after close(): other cgroups may rely on it.
    """

    paths: dict[str, str] = {}  # controller -> its directory; the class default: nothing held
    versions: dict[str, int] = {}  # controller -> 1 or 2

    def __init__(self, controllers: Iterable[str] = CONTROLLERS, *, memory_max_bytes: int | None = None,
                 cpu_quota: tuple[int, int] | None = None, cpu_weight: int | None = None,
                 pids_max: int | None = None, where: Mapping[str, Placement] | None = None,
                 mounts: list[Mount] | None = None) -> None:
        def writes(version: int) -> dict[str, list[tuple[str, str]]]:
            return limit_writes(version, memory_max_bytes=memory_max_bytes, cpu_quota=cpu_quota,
                                cpu_weight=cpu_weight, pids_max=pids_max)

        # Every value checked here, before anything is made (the checks are the same on v1 and v2).
        wanted = set(controllers) | set(writes(2))
        found = dict(where) if where is not None else placements(sorted(wanted), mounts)
        missing = wanted - set(found)
        if missing:
            raise ValueError(f"cgroup: no placement given for {', '.join(sorted(missing))}")
        self._creator = os.getpid()
        self.paths = {}
        self.versions = {c: p.version for c, p in found.items()}
        name = unique_name()
        try:
            for controller, placement in found.items():
                self._make(controller, placement, name)
            for placement in found.values():
                for file, text in writes(placement.version).get(placement.controller, ()):
                    path = os.path.join(self.paths[placement.controller], file)
                    if file not in _OPTIONAL or os.path.exists(path):
                        _write(path, text)
        except BaseException:
            self.close()
            raise

    def _make(self, controller: str, placement: Placement, name: str) -> None:
        """mkdir the cgroup of `controller` (once per hierarchy: co-mounted controllers share it)."""
        path = os.path.join(placement.parent, name)
        if path in self.paths.values():
            self.paths[controller] = path
            return
        if placement.version == 2:
            subtree = os.path.join(placement.parent, "cgroup.subtree_control")
            if controller not in _read(subtree).split():
                _write(subtree, f"+{controller}", "cgroup v2 allows no processes in a cgroup that enables "
                       "controllers for its children, except the root: pass a parent that holds none")
        tracker.register("cgroup", path)  # before mkdir: no moment in which it exists untracked
        with signals_deferred():  # made and recorded, or neither: a Ctrl-C waits until both are done
            try:
                os.mkdir(path, 0o755)  # EEXIST rather than reuse a cgroup
            except OSError as e:
                tracker.unregister("cgroup", path)
                raise kernel_error(e.errno or errno.EIO, f"mkdir(cgroup {controller})", None, path) from None
            self.paths[controller] = path

    def _file(self, controller: str, v2_file: str, v1_file: str) -> str:
        """The path of `controller`'s file here: `v2_file` or `v1_file`, by its hierarchy's version."""
        if controller not in self.paths:
            raise ValueError(f"cgroup {v2_file}: this cgroup has no {controller} controller"
                             f"{' (closed)' if not self.paths else ''}")
        v2 = self.versions[controller] == 2
        # v1 keeps CPU time in the cpuacct hierarchy, which placements() brings along with cpu
        holder = "cpuacct" if v1_file.startswith("cpuacct.") and not v2 else controller
        if holder not in self.paths:
            raise ValueError(f"cgroup {v1_file}: this cgroup has no {holder} controller (not in `where`)")
        return os.path.join(self.paths[holder], v2_file if v2 else v1_file)

    def add(self, pid: int) -> None:
        """Move process `pid` (with its threads) into this cgroup, in every hierarchy."""
        if type(pid) is not int or pid <= 0:
            raise ValueError(f"cgroup.procs: pid must be a positive int, not {pid!r}")
        if not self.paths:
            raise ValueError("cgroup.procs: closed")
        for path in dict.fromkeys(self.paths.values()):
            _write(os.path.join(path, "cgroup.procs"), str(pid))

    def procs(self) -> list[int]:
        """The pids in this cgroup (cgroup.procs of its first hierarchy)."""
        if not self.paths:
            raise ValueError("cgroup.procs: closed")
        return _procs(next(iter(self.paths.values())))

    def memory_current_bytes(self) -> int:
        """Memory charged now (v2 memory.current, v1 memory.usage_in_bytes)."""
        return int(_read(self._file("memory", "memory.current", "memory.usage_in_bytes")))

    def memory_peak_bytes(self) -> int:
        """The most ever charged (v2 memory.peak, Linux >= 5.19; v1 memory.max_usage_in_bytes)."""
        return int(_read(self._file("memory", "memory.peak", "memory.max_usage_in_bytes")))

    def oom_kill_count(self) -> int:
        """Processes the OOM killer killed in this cgroup (the oom_kill line of v2 memory.events,
        v1 memory.oom_control)."""
        text = _read(self._file("memory", "memory.events", "memory.oom_control"))
        return int(dict(line.split() for line in text.splitlines())["oom_kill"])

    def cpu_usage_us(self) -> int:
        """CPU time its processes used, in microseconds (v2 cpu.stat usage_usec, v1 cpuacct.usage in ns)."""
        path = self._file("cpu", "cpu.stat", "cpuacct.usage")
        if self.versions["cpu"] == 2:
            return int(dict(line.split() for line in _read(path).splitlines())["usage_usec"])
        return int(_read(path)) // 1000

    def pids_current(self) -> int:
        """Processes and threads in it now (pids.current), those that failed to fork not counted."""
        return int(_read(self._file("pids", "pids.current", "pids.current")))

    def close(self) -> None:
        """Kill what is still inside and remove every directory (newest first). Idempotent."""
        if not self._is_creator:  # a forked child holds a copy: not its to remove
            return
        paths, self.paths = self.paths, {}
        failure: BaseException | None = None
        with signals_deferred():  # a Ctrl-C here waits: every directory is removed first
            for path in reversed(list(dict.fromkeys(paths.values()))):
                try:
                    kill_and_rmdir(path)
                except Exception as e:  # the other hierarchies' directories are still removed
                    failure = failure or e
                    continue  # still registered: the tracker tries again when this process is gone
                tracker.unregister("cgroup", path)
        if failure is not None:
            raise failure

