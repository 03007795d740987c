"""What this environment allows, probed, never assumed.

`can(what)` answers "can I X here?" with an Answer that is truthy when the
answer is yes and always carries the reason: the capability, device, errno
or setting that decided it. Demos skip steps with that reason, and the test
suite's `needs(what)` marker skips tests with it. `facts()` gathers
everything `osvirt info` shows.

Answers are computed on first use and cached for the life of the process
(privileges do not grow; a child that drops them should not ask its parent's
cache).
"""
import errno
import functools
import os
import resource
from collections.abc import Callable
from typing import NamedTuple, TypedDict

__all__ = ["Answer", "CAPABILITIES", "capabilities", "capability_masks", "can", "probe", "probes", "facts", "Facts",
           "thp_mode", "cgroups", "Cgroups", "container_hints", "vm_hints"]

# Bit numbers from <linux/capability.h>: CapEff in /proc/self/status is a mask of these.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)


class Answer(NamedTuple):
    """A yes or no, and why."""
    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


def _read(path: str, default: str | None = None) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def capability_masks(pid: int = 0) -> dict[str, int]:
    """The capability sets of process `pid` (0: this one) as /proc/PID/status shows them: CapInh, CapPrm,
    CapEff, CapBnd, CapAmb -> mask. The one reader of them (osvirt.container.capabilities names all five)."""
    with open(f"/proc/{pid or 'self'}/status") as f:
        return {key: int(value, 16) for key, _, value in (line.partition(":") for line in f) if key.startswith("Cap")}


def capabilities(mask: int | None = None) -> frozenset[str]:
    """Names of the capabilities in a mask (default: this process's effective set, CapEff)."""
    if mask is None:
        mask = capability_masks()["CapEff"]
    return frozenset(name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1)


def _open_answer(path: str, flags: int = os.O_RDWR) -> Answer:
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except OSError as e:
        assert e.errno is not None  # set by every failed system call
        return Answer(False, f"open({path}) failed: {errno.errorcode.get(e.errno, e.errno)} ({e.strerror})")
    os.close(fd)
    return Answer(True, f"{path} opens read-write")


# -- the probes: one function per "can I X?" ----------------------------------
_PROBES: "dict[str, functools._lru_cache_wrapper[Answer]]" = {}


def probe(name: str) -> Callable[[Callable[[], Answer]], Callable[[], Answer]]:
    """Register a probe under `name` (the word demos and tests ask `can` for)."""
    def register(fn: Callable[[], Answer]) -> Callable[[], Answer]:
        _PROBES[name] = functools.lru_cache(maxsize=None)(fn)
        return fn
    return register


def _capability_probe(cap: str) -> Callable[[], Answer]:
    def answer() -> Answer:
        if cap in capabilities():
            return Answer(True, f"{cap} in the effective set")
        return Answer(False, f"needs {cap} (not in effective set)")
    answer.__doc__ = f"the effective set holds {cap}"
    return answer


for _cap in CAPABILITIES:
    probe(_cap.lower())(_capability_probe(_cap))


@probe("setuid")
def _setuid() -> Answer:
    """this process can become another user (setgroups, setgid, setuid: CAP_SETGID and CAP_SETUID)"""
    missing = [cap for cap in ("CAP_SETGID", "CAP_SETUID") if cap not in capabilities()]
    if missing:
        return Answer(False, f"needs {' and '.join(missing)} (not in effective set)")
    return Answer(True, "CAP_SETGID and CAP_SETUID in the effective set")


@probe("kvm")
def _kvm() -> Answer:
    """/dev/kvm can be opened"""
    return _open_answer("/dev/kvm")


@probe("loop")
def _loop() -> Answer:
    """loop devices can be taken from /dev/loop-control and attached: it opens read-write"""
    # LOOP_CTL_GET_FREE and LOOP_CONFIGURE check no capability: what decides is opening
    # /dev/loop-control and /dev/loopN (their modes, and a container's device rules).
    return _open_answer("/dev/loop-control")


@probe("cc")
def _cc() -> Answer:
    """a C compiler (cc or gcc) is on PATH"""
    import shutil  # here, not at import: with bz2 and lzma it costs more than all of osvirt.env
    for name in ("cc", "gcc"):
        path = shutil.which(name)
        if path:
            return Answer(True, f"C compiler: {path}")
    return Answer(False, "no C compiler (cc or gcc) on PATH")


@probe("swap")
def _swap() -> Answer:
    """swap is active (/proc/swaps lists a device or file)"""
    lines = (_read("/proc/swaps") or "").splitlines()[1:]
    if lines:
        return Answer(True, f"active swap: {', '.join(line.split()[0] for line in lines)}")
    return Answer(False, "no active swap (/proc/swaps lists none)")


@probe("thp")
def _thp() -> Answer:
    """transparent huge pages can back an madvise(MADV_HUGEPAGE) region"""
    mode = thp_mode()
    if mode in ("always", "madvise"):
        return Answer(True, f"THP mode is {mode}")
    return Answer(False, f"THP mode is {mode or 'unknown (no /sys/kernel/mm/transparent_hugepage)'}")


def _tried_in_child(what: str, attempt: Callable[[], object]) -> Answer:
    """Run `attempt()` in a short-lived child and answer with what the kernel said.

    Some refusals only the kernel knows (a cpu cgroup without real-time runtime
    refuses SCHED_FIFO even to root), so these probes really try, in a child
    that exits at once, so the attempt changes nothing here.
    """
    from osvirt.process.spawn import fork  # env is imported by osvirt.process: import late

    def child(report_w: int) -> int:
        try:
            attempt()
        except OSError as e:
            assert e.errno is not None
            os.write(report_w, f"{errno.errorcode.get(e.errno, e.errno)}: {e.strerror}".encode())
        return 0

    report_r, report_w = os.pipe()
    try:
        pid = fork(child, report_w)
    except BaseException:
        os.close(report_r)
        raise
    finally:
        os.close(report_w)
    try:
        with os.fdopen(report_r, "rb") as f:
            failure = f.read().decode()
    finally:  # reaped even if interrupted: the child exits at once
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if failure:
        return Answer(False, f"{what} refused in a test child: {failure}")
    if status != 0:
        return Answer(False, f"{what}: the test child exited with status {status}")
    return Answer(True, f"{what} allowed (tried in a test child)")


@probe("sched_fifo")
def _sched_fifo() -> Answer:
    """a process can switch itself to SCHED_FIFO priority 1 (tried in a child)"""
    from osvirt.process import sched
    return _tried_in_child("sched_setscheduler(SCHED_FIFO, 1)",
                           lambda: sched.sched_setscheduler(0, sched.Policy.SCHED_FIFO, 1))


@probe("sched_rr")
def _sched_rr() -> Answer:
    """a process can switch itself to SCHED_RR priority 1 (tried in a child)"""
    from osvirt.process import sched
    return _tried_in_child("sched_setscheduler(SCHED_RR, 1)",
                           lambda: sched.sched_setscheduler(0, sched.Policy.SCHED_RR, 1))


@probe("sched_deadline")
def _sched_deadline() -> Answer:
    """a process can switch itself to SCHED_DEADLINE 10 ms every 100 ms (tried in a child)"""
    from osvirt.process import sched
    return _tried_in_child("sched_setattr(SCHED_DEADLINE, 10 ms / 100 ms)",
                           lambda: sched.sched_setattr(0, sched.Policy.SCHED_DEADLINE, runtime_ns=10**7,
                                                       deadline_ns=10**8, period_ns=10**8))


@probe("sigqueue_1000")
def _sigqueue_1000() -> Answer:
    """RLIMIT_SIGPENDING lets this user queue 1000 more signals (sigqueue fails with EAGAIN past it)"""
    soft = resource.getrlimit(resource.RLIMIT_SIGPENDING)[0]
    if soft == resource.RLIM_INFINITY or soft >= 1024:
        return Answer(True, f"RLIMIT_SIGPENDING is {'unlimited' if soft == resource.RLIM_INFINITY else soft}")
    return Answer(False, f"RLIMIT_SIGPENDING is {soft}, below the 1024 needed to queue 1000 signals")


def _cgroup_probe(controller: str) -> Callable[[], Answer]:
    def answer() -> Answer:
        from osvirt.container import cgroups  # it imports osvirt.process, which imports env: import late
        try:
            reasons = []
            for placement in cgroups.placements((controller,)).values():  # v1 cpu: cpuacct too
                ok, reason = cgroups.writable(placement)
                if not ok:
                    return Answer(False, reason)
                reasons.append(reason)
            return Answer(True, "; ".join(reasons))
        except OSError as e:
            return Answer(False, f"cgroup {controller} controller: {e}")
    answer.__doc__ = f"a child cgroup with the {controller} controller can be made under this process's own"
    return answer


for _controller in ("memory", "cpu", "pids"):
    probe(f"cgroup_{_controller}")(_cgroup_probe(_controller))


@probe("cgroup_v2")
def _cgroup_v2() -> Answer:
    """a child cgroup v2 with a controller can be made under this process's own (any controller v2 offers)"""
    from osvirt.container import cgroups
    try:
        own = cgroups.v2_own()
        if own is None:
            return Answer(False, "no cgroup v2 hierarchy reaches this process's cgroup")
        parent, offered = own
        if not offered:
            return Answer(False, f"cgroup v2 at {parent} offers no controller (cgroup.controllers is empty)")
        return Answer(*cgroups.writable(cgroups.Placement(sorted(offered)[0], 2, parent)))
    except OSError as e:
        return Answer(False, f"cgroup v2: {e}")


@probe("seccomp_filter")
def _seccomp_filter() -> Answer:
    """a process can put a seccomp filter on itself (an allow-all one, tried in a child)"""
    # The kernel may lack CONFIG_SECCOMP_FILTER, or a filter already there may refuse seccomp() itself.
    from osvirt.container import seccomp  # it imports env: import late
    return _tried_in_child("seccomp(SECCOMP_SET_MODE_FILTER)",
                           lambda: seccomp.install(seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW"})))


@probe("mount_namespace")
def _mount_namespace() -> Answer:
    """a process can mount in a mount namespace of its own (CAP_SYS_ADMIN, else a new user namespace; tried in a child)"""
    # Docker's seccomp profile refuses unshare without CAP_SYS_ADMIN; a kernel may refuse user namespaces.
    from osvirt.container import mounts, namespaces  # they import env: import late

    def attempt() -> None:
        namespaces.unshare(["mount"] if "CAP_SYS_ADMIN" in capabilities() else ["user", "mount"])
        mounts.make_private("/")  # before the mount, which must not reach the host
        mounts.mount("tmpfs", "/tmp", "tmpfs")
    return _tried_in_child("unshare(CLONE_NEWNS) and mount(tmpfs)", attempt)


@probe("userns")
def _userns() -> Answer:
    """a process can make a user namespace of its own, as it is (unshare(CLONE_NEWUSER), tried in a child)"""
    # No capability is needed, but user.max_user_namespaces (0: none), a distribution's sysctl, or a seccomp
    # filter may refuse it: Docker's refuses unshare without CAP_SYS_ADMIN (EPERM).
    from osvirt.container import namespaces  # it imports osvirt.process, which imports env: import late
    return _tried_in_child("unshare(CLONE_NEWUSER)", lambda: namespaces.unshare("user"))


@probe("network_namespace")
def _network_namespace() -> Answer:
    """a process can make a network namespace of its own and bring its lo up (CAP_SYS_ADMIN, else in a new user namespace; tried in a child)"""
    # Docker's seccomp profile refuses unshare without CAP_SYS_ADMIN; a kernel may refuse user namespaces.
    from osvirt.container import namespaces, network  # they import env: import late
    rootless = "CAP_SYS_ADMIN" not in capabilities()

    def attempt() -> None:
        namespaces.unshare(["user", "network"] if rootless else ["network"])
        network.loopback_up()  # CAP_NET_ADMIN over the new namespace: its owner's, even rootless
    what = "unshare(CLONE_NEWUSER|CLONE_NEWNET) (rootless: no CAP_SYS_ADMIN)" if rootless else "unshare(CLONE_NEWNET)"
    return _tried_in_child(f"{what} and lo up", attempt)


@probe("veth")
def _veth() -> Answer:
    """a veth pair can link a new network namespace to this one (CAP_NET_ADMIN here, CAP_SYS_ADMIN to configure the far end; the kernel's veth driver tried in a child, inside a namespace of its own)"""
    netns = can("network_namespace")
    if not netns:
        return Answer(False, f"no network namespace to link to: {netns.reason}")
    missing = [cap for cap in ("CAP_NET_ADMIN", "CAP_SYS_ADMIN") if cap not in capabilities()]
    if missing:
        return Answer(False, f"needs {' and '.join(missing)} (not in effective set): a rootless container (user "
                             "and network namespaces of its own) can bring its lo up, not make a veth to the host")
    from osvirt.container import namespaces, network  # they import env: import late

    def attempt() -> None:
        namespaces.unshare(["network"])  # both ends made in it, and gone with it: the host sees nothing
        network._try_veth()
    return _tried_in_child("a veth pair (netlink RTM_NEWLINK, in a new network namespace)", attempt)


def can(what: str) -> Answer:
    """Answer whether `what` (a probe name, see `probes()`) is allowed here.

    "not_" before a name asks the opposite, with the same reason: a step that
    shows a refusal needs the privilege that would bypass it to be absent
    (`can("not_cap_sys_admin")`). A privilege is a capability to probe, never
    a uid to compare: a container's root lacks most of them.
    """
    negated = isinstance(what, str) and what.startswith("not_")
    try:
        fn = _PROBES[what[4:] if negated else what]
    except KeyError:
        raise ValueError(f"osvirt.env.can: no probe named {what!r}; known: {', '.join(sorted(_PROBES))}, "
                         "each also as not_NAME") from None
    answer = fn()
    return Answer(not answer.ok, answer.reason) if negated else answer


def probes() -> dict[str, str]:
    """The names `can` answers, with what each asks."""
    return {name: (fn.__wrapped__.__doc__ or "").strip() for name, fn in sorted(_PROBES.items())}


# -- facts for `osvirt info` ---------------------------------------------------
def thp_mode() -> str | None:
    text = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    if text and "[" in text:
        return text.split("[", 1)[1].split("]", 1)[0]
    return None


def _mounts() -> list[tuple[str, str, str]]:
    rows = []
    for line in (_read("/proc/self/mounts") or "").splitlines():
        dev, point, fstype, opts = line.split()[:4]
        rows.append((point.replace("\\040", " "), fstype, opts))
    return rows


class Cgroups(TypedDict):
    """What cgroups() finds: the version, the cgroup mounts, and /proc/self/cgroup's lines."""
    version: str
    mounts: list[str]
    self: list[str]


def cgroups() -> Cgroups:
    """cgroup version (1, 2 or hybrid) and its mounts, from /proc/self/mounts."""
    mounts = [(p, t, o) for p, t, o in _mounts() if t in ("cgroup", "cgroup2")]
    kinds = {t for _, t, _ in mounts}
    version = {frozenset({"cgroup2"}): "2", frozenset({"cgroup"}): "1"}.get(
        frozenset(kinds), "hybrid (v1 controllers and a v2 hierarchy)" if kinds else "none mounted")
    own = (_read("/proc/self/cgroup") or "").split()
    return {"version": version, "mounts": [f"{p} ({t})" for p, t, _ in mounts], "self": own}


def container_hints() -> list[str]:
    """Signs that this is a container; each names its evidence."""
    hints = []
    for path in ("/.dockerenv", "/run/.containerenv"):
        if os.path.exists(path):
            hints.append(f"{path} exists")
    environ = _read("/proc/1/environ")
    if environ:
        for var in environ.split("\0"):
            if var.startswith("container="):
                hints.append(f"pid 1 has {var}")
    cg = _read("/proc/1/cgroup") or ""
    for word in ("docker", "kubepods", "containerd", "lxc", "libpod"):
        if word in cg:
            hints.append(f"/proc/1/cgroup mentions {word}")
    return hints


def vm_hints() -> list[str]:
    """Signs that this runs on a hypervisor; each names its evidence."""
    hints = []
    cpuinfo = _read("/proc/cpuinfo") or ""
    if " hypervisor" in cpuinfo:
        hints.append("CPU flag 'hypervisor' in /proc/cpuinfo")
    for name in ("sys_vendor", "product_name"):
        value = (_read(f"/sys/class/dmi/id/{name}") or "").strip()
        if value:
            hints.append(f"DMI {name}: {value}")
    return hints


def _rlimit(name: str) -> dict[str, int | str]:
    soft, hard = resource.getrlimit(getattr(resource, name))

    def show(v: int) -> int | str:
        return "unlimited" if v == resource.RLIM_INFINITY else v

    return {"soft": show(soft), "hard": show(hard)}


class Facts(TypedDict):
    """What facts() returns: plain data, as `osvirt info --json` prints it."""
    kernel: str
    machine: str
    uid: int
    euid: int
    gid: int
    capabilities: list[str]
    container_hints: list[str]
    vm_hints: list[str]
    cpus: dict[str, int | list[int] | None]  # online (None: unknown) and usable
    cgroup: Cgroups
    devices: dict[str, bool]
    mqueue_mounted: bool
    swap: list[str]
    thp_mode: str | None
    sched_rt_runtime_us: str | None
    rlimits: dict[str, dict[str, int | str]]  # soft and hard: a number or "unlimited"
    can: dict[str, dict[str, object]]  # an Answer's fields: ok and reason


def facts() -> Facts:
    """Everything `osvirt info` shows, as plain data."""
    import platform  # only `osvirt info` asks
    swaps = (_read("/proc/swaps") or "").splitlines()[1:]
    return {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
        "capabilities": sorted(capabilities()),
        "container_hints": container_hints(),
        "vm_hints": vm_hints(),
        "cpus": {"online": os.cpu_count(), "usable": sorted(os.sched_getaffinity(0))},
        "cgroup": cgroups(),
        "devices": {p: os.path.exists(p) for p in ("/dev/kvm", "/dev/loop-control", "/dev/ptmx")},
        "mqueue_mounted": any(t == "mqueue" for _, t, _ in _mounts()),
        "swap": [line.split()[0] for line in swaps],
        "thp_mode": thp_mode(),
        "sched_rt_runtime_us": (_read("/proc/sys/kernel/sched_rt_runtime_us") or "").strip() or None,
        "rlimits": {n: _rlimit(n) for n in ("RLIMIT_MEMLOCK", "RLIMIT_SIGPENDING", "RLIMIT_RTPRIO",
                                             "RLIMIT_NOFILE", "RLIMIT_NPROC")},
        "can": {name: can(name)._asdict() for name in _PROBES
                if not name.startswith("cap_") or name in _INFO_CAPS},
    }


# The capabilities worth a line in `osvirt info` (the rest are in "capabilities").
_INFO_CAPS = ("cap_sys_nice", "cap_sys_admin", "cap_ipc_lock", "cap_setuid", "cap_sys_resource")
