"""container: software virtualization, one kernel facility at a time (seed §2, §5).

The article's §2 names software virtualization, one kernel giving each user
an isolated environment, and §5 praises its "security and isolation" without
saying what provides them. On Linux a container is an ordinary process that
the kernel shows a different world: namespaces give it its own process ids
(it is PID 1 and reaps orphans), hostname, SysV IPC, mount table, network
interfaces and user ids (root inside, an unprivileged uid outside); cgroups
bound what it uses (the OOM killer at the memory limit, a CPU quota and
weights, a pids limit); seccomp and capabilities take away what even root
inside may ask. Each step asks the kernel for one of them and shows, from the
host, what the kernel did; the last times a container's start next to runc's.

Unprivileged, the namespace steps run in a user namespace of their own
(rootless) where the kernel allows one; cgroup steps need write access to a
cgroup. Inside a container whose seccomp profile refuses unshare (Docker's),
the namespace steps skip with that reason.

Usage: python demos/12_container.py [--json]
"""
import contextlib
import errno
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time

import sysv_ipc

from osvirt import env, tracker
from osvirt.container import Container, capabilities, docker, mounts, namespaces, network, seccomp
from osvirt.container.cgroups import Cgroup, cgroup_directory, cgroup_mounts, kill_and_rmdir, own_cgroups
from osvirt.demo import run
from osvirt.memory import userfaultfd
from osvirt.naming import private_dir, unique_name

NAME = "container"
SEED = "2 software virtualization, 5 isolation"
SUMMARY = "namespaces, cgroup limits (OOM, CPU quota and weight, pids), seccomp, capabilities, start cost vs runc"

WAIT_S = 30  # a cap for a hung child, not a measurement
MiB = 1 << 20
# Where a root-run demo maps uid 0 of its user namespace: the first id of the
# range useradd gives a user in /etc/subuid (SUB_UID_MIN), owned by no one here.
SUBORDINATE_ID = 100000


class _Talk:
    """Two pipes between this process and a child: JSON lines up to here, a byte down to go on."""

    def __init__(self):
        self._up_r, self._up_w = os.pipe()
        self._down_r, self._down_w = os.pipe()
        self._lines = os.fdopen(self._up_r, "rb")

    # -- the child's side
    def send(self, value):
        os.write(self._up_w, json.dumps(value).encode() + b"\n")

    def wait(self):
        os.read(self._down_r, 1)

    # -- this side
    def started(self):
        """Close the child's ends here: EOF once the child (and every process holding them) is gone."""
        for fd in (self._up_w, self._down_r):
            os.close(fd)
        self._up_w = self._down_r = -1

    def receive(self):
        line = self._lines.readline()
        if not line:
            raise ChildProcessError("the child exited before it answered (its traceback is on stderr)")
        return json.loads(line)

    def go(self):
        os.write(self._down_w, b"g")

    def close(self):
        self._lines.close()
        for fd in (self._up_w, self._down_r, self._down_w):
            if fd >= 0:
                os.close(fd)


def _unshare_allowed():
    """Whether this process may make namespaces: with CAP_SYS_ADMIN, or in a user namespace of its own."""
    admin = env.can("cap_sys_admin")
    if admin:
        return admin
    userns = env.can("userns")
    return userns if userns else env.Answer(False, f"{admin.reason}, and no user namespace to get it in: "
                                                   f"{userns.reason}")


def _namespaces(*kinds):
    """`kinds` as this process makes them, and the id maps: as they are with CAP_SYS_ADMIN; else inside
    a user namespace of their own, uid and gid 0 there being ours outside (rootless)."""
    if env.can("cap_sys_admin"):
        return list(kinds), {}
    return ["user", *kinds], {"uid_map": [(0, os.geteuid(), 1)], "gid_map": [(0, os.getegid(), 1)]}


def _inside(demo, kinds, target, *args):
    """Start `target(talk, *args)` in a child in new namespaces of `kinds`; (talk, Started)."""
    demo.require(_unshare_allowed())
    kinds, maps = _namespaces(*kinds)
    talk = demo.own(contextlib.closing(_Talk()))
    started = namespaces.fork_in(demo.children, kinds, target, talk, *args, **maps)
    talk.started()
    return talk, started


def _finish(demo, talk, started):
    """Let the child go on, and its exit status."""
    talk.go()
    return demo.children.wait(started.owned, timeout_s=WAIT_S)


def _status(pid, field):
    """A field of /proc/PID/status, as this process's PID namespace sees `pid`; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith(field + ":"))
    except FileNotFoundError:
        return None


def _errno_of(call):
    """'ok' if call() returned, else the errno's name it failed with."""
    try:
        call()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


# -- 1. PID namespace -------------------------------------------------------------------
def _pid1(talk):
    """PID 1 of a new PID namespace: its own pid, then an orphan it must reap."""
    gone_r, gone_w = os.pipe()
    parent = os.fork()
    if parent == 0:  # the orphan's parent: forks it, says its pid, exits
        orphan = os.fork()
        if orphan == 0:
            os.close(gone_w)
            os.read(gone_r, 1)  # EOF: its parent has exited
            talk.send({"orphan_ppid": os.getppid(), "orphan_host_pid": int(os.readlink("/proc/self"))})
            os._exit(7)
        os._exit(0)
    os.close(gone_r)
    os.waitpid(parent, 0)  # the parent reaped; its child is now an orphan
    os.close(gone_w)
    talk.send({"pid": os.getpid(), "ppid": os.getppid()})
    talk.wait()  # the host looks at the orphan's zombie now
    reaped, status = os.waitpid(-1, 0)
    talk.send({"reaped": reaped, "code": os.waitstatus_to_exitcode(status)})
    talk.wait()


def _pid_step(demo):
    talk, started = _inside(demo, ["pid"], _pid1)
    orphan, me = talk.receive(), talk.receive()
    if "pid" in orphan:
        orphan, me = me, orphan
    nspid = _status(started.pid, "NSpid")
    demo.check("its own pid, and the host's view of it", "getpid() = 1 inside; the host sees another pid, whose "
               "/proc/PID/status NSpid lists both", f"getpid() = {me['pid']} (getppid() = {me['ppid']}); the host "
               f"sees pid {started.pid}, NSpid: {nspid}",
               me["pid"] == 1 and started.pid != 1 and (nspid or "").split() == [str(started.pid), "1"])
    host_pid = orphan["orphan_host_pid"]
    deadline = time.monotonic() + WAIT_S
    while (state := _status(host_pid, "State")) and not state.startswith("Z") and time.monotonic() < deadline:
        time.sleep(0.005)  # until the orphan has exited
    ppid = _status(host_pid, "PPid")
    demo.check("an orphan inside (its parent exited) is adopted by PID 1",
               f"getppid() = 1 inside; once it exits, a zombie whose parent is pid {started.pid} (PID 1)",
               f"getppid() = {orphan['orphan_ppid']}; host pid {host_pid}: State {state}, PPid {ppid}",
               orphan["orphan_ppid"] == 1 and (state or "").startswith("Z") and ppid == str(started.pid))
    talk.go()
    reaped = talk.receive()
    after = _status(host_pid, "State")
    demo.check("PID 1 waits for it: the zombie is gone", "waitpid(-1) in PID 1 returns it, exit 7; "
               f"/proc/{host_pid} gone", f"waitpid: pid {reaped['reaped']}, exit {reaped['code']}; "
               f"/proc/{host_pid}: {'gone' if after is None else after}",
               reaped["code"] == 7 and after is None)
    demo.say("PID 1 of a namespace inherits every orphan in it, as init does on the host: a container whose "
             "PID 1 never calls wait() fills up with zombies (Docker's --init adds one that does).")
    code = _finish(demo, talk, started)
    demo.check("PID 1's exit", "0", str(code), code == 0)


# -- 2. UTS, IPC, mount and network namespaces -------------------------------------------
def _uts(talk, name):
    namespaces.sethostname(name)
    talk.send(os.uname().nodename)
    talk.wait()


def _ipc(talk, key):
    queue = sysv_ipc.MessageQueue(key, sysv_ipc.IPC_CREX, mode=0o600)
    with open("/proc/sysvipc/msg") as f:
        listed = any(int(line.split()[0]) == key for line in list(f)[1:])
    talk.send({"id": queue.id, "listed": listed})
    talk.wait()
    queue.remove()


def _mount(talk, path):
    mounts.make_private("/")  # else the mount would propagate back to the host's shared mounts
    mounts.mount("tmpfs", path, "tmpfs", 0, "size=1m,mode=0700")
    with open(os.path.join(path, "inside"), "w") as f:
        f.write("made inside\n")
    rows = [row for row in mounts.mountinfo() if row.mount_point == path]
    talk.send({"rows": [f"{r.mount_point} {r.fstype}" for r in rows], "files": os.listdir(path)})
    talk.wait()


def _show(interface):
    return f"{interface.name} {'UP' if interface.up else 'DOWN'} {list(interface.addresses)}"


def _net(talk):
    before = [_show(i) for i in network.interfaces()]
    network.loopback_up()
    talk.send({"before": before, "after": [_show(i) for i in network.interfaces()]})
    talk.wait()


# -- 3. user namespace --------------------------------------------------------------------
def _root_inside(talk, directory):
    """uid 0 of a user namespace: become it (when our uid outside is not the mapped one), make a file."""
    if os.getuid() != 0:  # the map names another uid than ours outside: setuid to it
        with contextlib.suppress(PermissionError):
            os.setgroups([])  # allowed: the mapping process held CAP_SETGID
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    path = os.path.join(directory, "made-inside")
    with open(path, "w") as f:
        f.write("root inside\n")
    talk.send({"uid": os.getuid(), "file_uid": os.stat(path).st_uid,
               "caps": len(capabilities.sets().effective)})
    talk.wait()


# -- 4. cgroups -----------------------------------------------------------------------------
def _allocate(cgroup, report_fd, size):
    """In `cgroup`, take `size` bytes, 1 MiB at a time (each written), telling how far it got."""
    cgroup.add(os.getpid())
    held = []
    while len(held) * MiB < size:
        held.append(b"\1" * MiB)  # written: charged at once
        os.write(report_fd, b".")
    return 0


def _spin(cgroup, cpu, ready_fd):
    """In `cgroup` (on `cpu`, unless None), burn CPU until killed."""
    cgroup.add(os.getpid())
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    os.write(ready_fd, b".")
    os.close(ready_fd)
    while True:
        pass


def _start(demo, target, *args):
    return demo.children.fork_ready(target, *args, timeout_s=WAIT_S)


def _kill(demo, pids):
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return [demo.children.wait(pid, timeout_s=WAIT_S) for pid in pids]


def _cpu_share(demo, quota_us, period_us, window_s):
    cgroup = Cgroup(["cpu"], cpu_quota=(quota_us, period_us))
    try:
        pid = _start(demo, _spin, cgroup, None)
        time.sleep(period_us / 1e6)  # a whole period first: the child starts mid-period
        used, start = cgroup.cpu_usage_us(), time.monotonic()
        time.sleep(window_s)
        used, took = cgroup.cpu_usage_us() - used, time.monotonic() - start
        _kill(demo, [pid])
    finally:
        cgroup.close()
    return used / 1e6 / took


def _weight_split(demo, weights, window_s):
    cpu = min(os.sched_getaffinity(0))
    groups = []
    try:
        for weight in weights:
            groups.append(Cgroup(["cpu"], cpu_weight=weight))
        pids = [_start(demo, _spin, group, cpu) for group in groups]
        time.sleep(0.1)
        before = [group.cpu_usage_us() for group in groups]
        time.sleep(window_s)
        used = [group.cpu_usage_us() - b for group, b in zip(groups, before)]
        _kill(demo, pids)
    finally:
        for group in groups:
            group.close()
    return used


def _fork_until_refused(cgroup, talk, ready_fd):
    """In `cgroup`: fork children that wait, until fork fails; say how many and why."""
    cgroup.add(os.getpid())
    hold_r, hold_w = os.pipe()
    forked, refused = 0, None
    while forked < 1000:  # a cap should the limit not hold
        try:
            pid = os.fork()
        except OSError as e:
            refused = errno.errorcode.get(e.errno, str(e.errno))
            break
        if pid == 0:
            os.close(hold_w)
            os.read(hold_r, 1)  # EOF when the forking process exits
            os._exit(0)
        forked += 1
    talk.send({"forked": forked, "refused": refused})
    os.write(ready_fd, b".")
    talk.wait()
    os.close(hold_w)
    for _ in range(forked):
        os.wait()


# -- 5. seccomp and capabilities ----------------------------------------------------------------
def _refusals():
    return {"unshare(CLONE_NEWNS)": _errno_of(lambda: namespaces.unshare("mount")),
            "userfaultfd(UFFD_USER_MODE_ONLY)": _errno_of(lambda: os.close(userfaultfd())),
            "getpid()": _errno_of(os.getpid)}


def _under_docker_profile(talk):
    before, filters = _refusals(), _status("self", "Seccomp_filters")
    seccomp.install(seccomp.compile_filter(docker.seccomp()))
    talk.send({"before": before, "filters": filters, "after": _refusals(), "mode": _status("self", "Seccomp")})
    talk.wait()


def _with_dockers_capabilities(talk, name):
    capabilities.limit_to(docker.CAPABILITIES)
    mask = env.capability_masks()["CapEff"]
    if "CAP_SYS_ADMIN" in capabilities.names(mask):  # never rename a host: only a refusal is shown here
        tried = "not tried: CAP_SYS_ADMIN still effective"
    else:
        tried = _errno_of(lambda: namespaces.sethostname(name))
    talk.send({"mask": f"{mask:016x}", "names": sorted(capabilities.names(mask)), "sethostname": tried})
    talk.wait()


def _plain(demo, target, *args):
    """`target(talk, *args)` in a plain child (no new namespace); (talk, pid) as _inside gives them."""
    talk = demo.own(contextlib.closing(_Talk()))
    pid = demo.children.fork(target, talk, *args)
    talk.started()
    return talk, namespaces.Started(pid, pid)


# -- 6. the cost of a start ---------------------------------------------------------------------
def _time_container():
    """Container.run(["/bin/true"]) to its exit and removal, as `runc run` does it all; the seconds."""
    start = time.perf_counter()
    with Container.run(["/bin/true"], init=False) as container:  # /bin/true is PID 1, as under runc
        code = container.wait(timeout_s=WAIT_S)
    took = time.perf_counter() - start
    if code:
        raise ChildProcessError(f"/bin/true in an osvirt container exited {code}")
    return took


def _runc_bundle(directory, rootless):
    """A runc bundle running /bin/true on a rootfs of the host's /usr (bound read-only, in the container's
    mount namespace only); `runc spec`'s defaults otherwise (`--rootless`: in a user namespace of its own)."""
    bundle, rootfs = os.path.join(directory, "bundle"), os.path.join(directory, "bundle", "rootfs")
    os.makedirs(rootfs)
    subprocess.run(["runc", "spec", "--bundle", bundle] + (["--rootless"] if rootless else []), check=True,
                   capture_output=True, timeout=WAIT_S)
    for name in ("usr", "proc", "dev", "sys", "tmp"):
        os.mkdir(os.path.join(rootfs, name))
    for name in ("bin", "sbin", "lib", "lib64"):
        if os.path.islink(f"/{name}"):  # usrmerge: /bin -> usr/bin, and the same inside
            os.symlink(os.readlink(f"/{name}"), os.path.join(rootfs, name))
    with open(os.path.join(bundle, "config.json")) as f:
        config = json.load(f)
    config["process"].update(args=["/bin/true"], terminal=False)
    config["root"]["readonly"] = True
    config["mounts"].append({"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]})
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f)
    return bundle


def _runc_cgroups(name):
    """Where runc makes its container's cgroups: `name` under this process's cgroup in every hierarchy."""
    own = own_cgroups()
    paths = set()
    for mount in cgroup_mounts():
        for controller in mount.controllers or {""}:
            directory = cgroup_directory(mount, own[controller]) if controller in own else None
            if directory is not None and not mount.read_only and os.access(directory, os.W_OK):
                paths.add(os.path.join(directory, name))
    return sorted(paths)


@contextlib.contextmanager
def _runc_leftovers(paths):
    """runc's cgroups, registered with the tracker (which kills what is in them and removes them should
    this process be SIGKILLed) and removed here if a runc killed midway left them."""
    for path in paths:
        tracker.register("cgroup", path)
    try:
        yield
    finally:
        for path in paths:
            kill_and_rmdir(path)
            tracker.unregister("cgroup", path)


def _time_runc(demo, state, bundle, name):
    start = time.perf_counter()
    proc = demo.children.spawn(["runc", "--root", state, "run", "--bundle", bundle, name],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=WAIT_S)
    took = time.perf_counter() - start
    if proc.returncode:
        raise ChildProcessError(f"runc run exited {proc.returncode}: {err.decode().strip()}")
    return took


def _median_ms(times):
    return statistics.median(times) * 1e3


RUNS = 20


def _runc(demo, rootless):
    """A function timing one `runc run` of /bin/true, or None with why not."""
    if not shutil.which("runc"):
        return None, "runc is not on PATH"
    directory = demo.own(private_dir())
    bundle = _runc_bundle(directory, rootless)
    state = os.path.join(directory, "state")  # runc's state, in the demo's own directory
    name = unique_name()  # runc names its cgroups after the container
    demo.own(_runc_leftovers(_runc_cgroups(name)))
    return lambda: _time_runc(demo, state, bundle, name), None


def _cost_step(demo):
    demo.require(_unshare_allowed())
    kinds, _ = _namespaces("pid", "network", "ipc", "uts", "mount")
    runc, why_not = _runc(demo, rootless="user" in kinds)
    ours, theirs = [], []
    for _ in range(RUNS):  # in turn: the machine's load, which moves, weighs on both alike
        ours.append(_time_container())  # each raises unless /bin/true exited 0
        if runc:
            theirs.append(runc())
    cgroup = "a memory, cpu and pids cgroup" if env.can("cgroup_memory") else "no cgroup (none may be made here)"
    demo.say(f"osvirt's Container.run: the namespaces ({', '.join(kinds)}), {cgroup}, the host's /usr read-only "
             "as its root with its own /proc, /dev and /tmp, pivot_root, Docker's 14 capabilities and seccomp "
             "profile (compiled each time), exec; then all of it removed. runc run does the same with runc "
             "spec's defaults and a rootfs of the host's /usr.")
    demo.check(f"osvirt: start to exit, median of {RUNS}", f"{RUNS} runs, each /bin/true exiting 0",
               f"{_median_ms(ours):.1f} ms (min {min(ours) * 1e3:.1f}, max {max(ours) * 1e3:.1f})",
               len(ours) == RUNS)
    if not runc:
        demo.skip("runc's, the same way", why_not)
        return
    version = subprocess.run(["runc", "--version"], capture_output=True, text=True, timeout=WAIT_S).stdout.split()
    demo.check(f"runc {version[2] if len(version) > 2 else ''}{' (rootless)' if 'user' in kinds else ''} on the "
               f"same /bin/true, median of {RUNS}, run in turn with osvirt's",
               f"{RUNS} runs, each /bin/true exiting 0 (the issue's goal, osvirt no slower, is a figure to "
               "compare, not a check: speed targets belong to benchmarks)",
               f"{_median_ms(theirs):.1f} ms (min {min(theirs) * 1e3:.1f}, max {max(theirs) * 1e3:.1f}); "
               f"osvirt's {_median_ms(ours):.1f} ms is {_median_ms(ours) / _median_ms(theirs):.2f}x",
               len(theirs) == RUNS)


def body(demo):
    with demo.step("PID namespace: the command is PID 1, and reaps orphans",
                   asked="unshare(CLONE_NEWPID); fork() -> PID 1; in it fork() twice, the middle one exits; "
                         "waitpid(-1) in PID 1"):
        _pid_step(demo)

    with demo.step("UTS namespace: a hostname of its own", asked="unshare(CLONE_NEWUTS); sethostname()"):
        host = os.uname().nodename
        name = unique_name()
        talk, started = _inside(demo, ["uts"], _uts, name)
        inside = talk.receive()
        demo.check("the hostname inside, and the host's", f"{name} inside; {host} unchanged on the host",
                   f"{inside} inside; {os.uname().nodename} on the host",
                   inside == name and os.uname().nodename == host)
        _finish(demo, talk, started)

    with demo.step("IPC namespace: a SysV queue made inside is invisible outside",
                   asked="unshare(CLONE_NEWIPC); msgget(key, IPC_CREAT|IPC_EXCL); msgget(key) on the host"):
        key = secrets.randbelow(2**31 - 2) + 1
        talk, started = _inside(demo, ["ipc"], _ipc, key)
        inside = talk.receive()
        try:
            sysv_ipc.MessageQueue(key)
            outside = "found"
        except sysv_ipc.ExistentialError:
            outside = "ENOENT"
        with open("/proc/sysvipc/msg") as f:
            listed = any(int(line.split()[0]) == key for line in list(f)[1:])
        demo.check(f"queue key {key:#x}: inside, and on the host",
                   "inside: made and listed in /proc/sysvipc/msg; host: msgget ENOENT, not listed",
                   f"inside: id {inside['id']}, listed {inside['listed']}; host: msgget {outside}, listed {listed}",
                   inside["listed"] and outside == "ENOENT" and not listed)
        _finish(demo, talk, started)

    with demo.step("mount namespace: a tmpfs mounted inside is not mounted outside",
                   asked="unshare(CLONE_NEWNS); mount(NULL, /, MS_REC|MS_PRIVATE); mount(tmpfs, DIR)"):
        directory = demo.own(private_dir())
        talk, started = _inside(demo, ["mount"], _mount, directory)
        inside = talk.receive()
        outside = [row for row in mounts.mountinfo() if row.mount_point == directory]
        files = os.listdir(directory)
        demo.check(f"{directory} in /proc/self/mountinfo", "inside: a tmpfs holding the file made there; "
                   "host: not listed, the directory empty", f"inside: {inside['rows']} holding {inside['files']}; "
                   f"host: {len(outside)} rows, files {files}",
                   inside["rows"] == [f"{directory} tmpfs"] and inside["files"] == ["inside"]
                   and not outside and not files)
        _finish(demo, talk, started)

    with demo.step("network namespace: only a loopback inside",
                   asked="unshare(CLONE_NEWNET); netlink RTM_GETLINK, RTM_GETADDR; ioctl(SIOCSIFFLAGS, lo, IFF_UP)"):
        talk, started = _inside(demo, ["network"], _net)
        inside = talk.receive()
        host = [i.name for i in network.interfaces()]
        demo.say(f"the host's interfaces: {', '.join(host)}")
        demo.check("interfaces inside", "lo alone, DOWN and without an address: not even 127.0.0.1 answers",
                   "; ".join(inside["before"]), len(inside["before"]) == 1
                   and inside["before"][0] == "lo DOWN []")
        demo.check("after lo is brought up inside", "lo UP with 127.0.0.1/8 and ::1/128 (the kernel adds them)",
                   "; ".join(inside["after"]), inside["after"] == ["lo UP ['127.0.0.1/8', '::1/128']"])
        _finish(demo, talk, started)

    with demo.step("user namespace: root inside is an unprivileged uid outside",
                   asked="unshare(CLONE_NEWUSER); write /proc/PID/uid_map '0 OUTSIDE 1'; setresuid(0, 0, 0)"):
        demo.require(env.can("userns"))
        # Without CAP_SETUID, the only uid a map may name outside is one's own.
        mapped = env.can("setuid") and env.can("cap_chown")
        outside = (SUBORDINATE_ID, SUBORDINATE_ID) if mapped else (os.geteuid(), os.getegid())
        parent = demo.own(private_dir())
        directory = os.path.join(parent, "shared")
        os.mkdir(directory, 0o700)
        if mapped:  # where the mapped uid can write
            os.chmod(parent, 0o711)
            os.chown(directory, *outside)
        talk = demo.own(contextlib.closing(_Talk()))
        started = namespaces.fork_in(demo.children, ["user"], _root_inside, talk, directory,
                                     uid_map=[(0, outside[0], 1)], gid_map=[(0, outside[1], 1)])
        talk.started()
        inside = talk.receive()
        uid_line = _status(started.pid, "Uid")
        file_uid = os.stat(os.path.join(directory, "made-inside")).st_uid
        demo.check("uid inside, and the host's view of the process (its /proc/PID/status Uid line)",
                   f"0 inside, holding every capability there; Uid {outside[0]} "
                   "(x4) outside, not 0", f"{inside['uid']} inside with {inside['caps']} capabilities; "
                   f"Uid {' '.join(uid_line.split())}", inside["uid"] == 0 and
                   uid_line.split() == [str(outside[0])] * 4 and outside[0] != 0)
        demo.check("the owner of a file made inside", f"0 as stat() sees it inside, {outside[0]} on the host",
                   f"{inside['file_uid']} inside, {file_uid} on the host",
                   inside["file_uid"] == 0 and file_uid == outside[0])
        _finish(demo, talk, started)

    limit = 64 * MiB
    with demo.step("memory limit 64 MiB: a child taking 128 MiB is OOM-killed",
                   asked="mkdir a memory cgroup; memory.max (v1: memory.limit_in_bytes) = 64 MiB; "
                         "write 128 MiB in it"):
        demo.require(env.can("cgroup_memory"))
        cgroup = demo.own(Cgroup(["memory"], memory_max_bytes=limit))
        kills = cgroup.oom_kill_count()
        progress_r, progress_w = os.pipe()
        pid = demo.children.fork(_allocate, cgroup, progress_w, 2 * limit)
        os.close(progress_w)
        with os.fdopen(progress_r, "rb") as progress:
            got = len(progress.read())
        code = demo.children.wait(pid, timeout_s=WAIT_S)
        after, peak = cgroup.oom_kill_count(), cgroup.memory_peak_bytes()
        demo.say(f"cgroup v{cgroup.versions['memory']}: {cgroup.paths['memory']}")
        demo.check("the child's end", "SIGKILL (-9) by the OOM killer before 128 MiB: no allocation fails "
                   "(a MemoryError would exit 1), the kernel kills instead",
                   f"exit {code} after {got} MiB written", code == -signal.SIGKILL and got < 128)
        demo.check("the cgroup's OOM-kill count", f"{kills} -> {kills + 1}: exactly one", f"{kills} -> {after}",
                   after == kills + 1)
        demo.check("the cgroup's peak memory", "64 MiB within 10 %", f"{peak / MiB:.1f} MiB",
                   abs(peak - limit) <= limit * 0.1)

    with demo.step("CPU quota: 20 % of a CPU for a busy loop",
                   asked="cpu.max (v1: cpu.cfs_quota_us / cfs_period_us) = 20000 / 100000; spin"):
        demo.require(env.can("cgroup_cpu"))
        share = demo.retry(lambda: _cpu_share(demo, 20000, 100000, 1.0), lambda s: abs(s / 0.2 - 1) <= 0.25, tries=2)
        demo.check("CPU time / wall time over 1 s", "0.20 within 25 % (0.15 .. 0.25): throttled each period "
                   "once its 20 ms are used", f"{share:.3f}", abs(share / 0.2 - 1) <= 0.25)

    with demo.step("CPU weights 100 : 300 on one CPU",
                   asked="cpu.weight 100 and 300 (v1: cpu.shares 2597 and 7841); sched_setaffinity to one CPU; "
                         "spin in each"):
        demo.require(env.can("cgroup_cpu"))
        used = demo.retry(lambda: _weight_split(demo, (100, 300), 1.0),
                          lambda u: u[0] > 0 and abs(u[1] / u[0] / 3 - 1) <= 0.25, tries=2)
        ratio = used[1] / used[0] if used[0] else float("inf")
        demo.check("CPU time of the 300 one / the 100 one", "3.0 within 25 % (CFS divides a busy CPU by weight)",
                   f"{ratio:.2f} ({used[0] / 1e3:.0f} ms : {used[1] / 1e3:.0f} ms)", abs(ratio / 3 - 1) <= 0.25)

    with demo.step("pids limit 16: the fork past it fails",
                   asked="pids.max = 16; fork() until it fails"):
        demo.require(env.can("cgroup_pids"))
        cgroup = demo.own(Cgroup(["pids"], pids_max=16))
        talk = demo.own(contextlib.closing(_Talk()))
        pid = demo.children.fork_ready(_fork_until_refused, cgroup, talk, timeout_s=WAIT_S)
        talk.started()
        seen = talk.receive()
        current = cgroup.pids_current()
        talk.go()
        code = demo.children.wait(pid, timeout_s=WAIT_S)
        demo.check("forks that succeeded, and the one past the limit", "15 (the forking process is the 16th), "
                   "then EAGAIN", f"{seen['forked']}, then {seen['refused']}; pids.current {current}",
                   seen["forked"] == 15 and seen["refused"] == "EAGAIN" and current == 16 and code == 0)

    with demo.step("seccomp: Docker's default profile",
                   asked="seccomp(SECCOMP_SET_MODE_FILTER, osvirt's BPF of the profile); unshare(CLONE_NEWNS); "
                         "userfaultfd(); getpid()"):
        demo.require(env.can("seccomp_filter"))
        # Rootless, in a user namespace of its own: there unshare needs no privilege it lacks,
        # so what refuses it is the filter.
        rootless = not env.can("cap_sys_admin") and env.can("userns")
        talk, started = (_inside(demo, [], _under_docker_profile) if rootless else
                         _plain(demo, _under_docker_profile))
        seen = talk.receive()
        _finish(demo, talk, started)
        demo.say(f"before the filter: {seen['before']}")
        if set(seen["before"].values()) == {"ok"}:
            demo.check("before the filter", "all three allowed", str(seen["before"]), True)
        else:
            demo.skip("before the filter: all three allowed", f"refused before osvirt's filter too, by "
                      f"{seen['filters']} seccomp filter(s) already on this process (/proc/self/status "
                      "Seccomp_filters: a container's, as Docker's refuses both) or the kernel's own checks")
        demo.check("under the filter (/proc/self/status Seccomp: 2)", "unshare EPERM, userfaultfd EPERM, getpid ok",
                   f"{seen['after']}; Seccomp: {seen['mode']}",
                   seen["after"] == {"unshare(CLONE_NEWNS)": "EPERM", "userfaultfd(UFFD_USER_MODE_ONLY)": "EPERM",
                                     "getpid()": "ok"} and seen["mode"] == "2")

    with demo.step("capabilities: Docker's 14, and sethostname without CAP_SYS_ADMIN",
                   asked="prctl(PR_CAPBSET_DROP) all but 14; capset(); read CapEff; sethostname()"):
        name = unique_name()
        if _unshare_allowed():
            talk, started = _inside(demo, ["uts"], _with_dockers_capabilities, name)
        else:  # no namespace to be had: the host's UTS one, whose name the kernel guards (see the child)
            talk, started = _plain(demo, _with_dockers_capabilities, name)
        seen = talk.receive()
        _finish(demo, talk, started)
        want = sorted(docker.CAPABILITIES)
        demo.check("CapEff in /proc/self/status, decoded", f"exactly Docker's {len(want)}: {', '.join(want)}",
                   f"{seen['mask']}: {len(seen['names'])}: {', '.join(seen['names'])}", seen["names"] == want)
        demo.check("sethostname() with them", "EPERM: it needs CAP_SYS_ADMIN, which is not among them",
                   seen["sethostname"], seen["sethostname"] == "EPERM")

    with demo.step("the cost of a start: /bin/true in a new container",
                   asked=f"{RUNS} x Container.run(['/bin/true']) and wait; {RUNS} x runc run on the same"):
        _cost_step(demo)


def main(argv=None):
    return run(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
