"""osvirt.container.namespaces: what a child in new namespaces sees, against what this process
sees, read from the kernel (/proc/PID/ns inodes, /proc/PID/status NSpid, /proc/sysvipc, errnos).

A namespace other than a user one needs CAP_SYS_ADMIN: with it (root) the children make just the
kinds asked; without it (uid 65534) they make a user namespace of their own first, uid 0 inside
mapped to their own uid outside (rootless), which gives them CAP_SYS_ADMIN there. Where neither
works (Docker's seccomp profile refuses unshare without CAP_SYS_ADMIN) the tests skip with why.
"""
import ctypes
import errno
import json
import os
import secrets
import signal
import socket
import tempfile

import pytest
import sysv_ipc

from osvirt import env
from osvirt.container import capabilities, namespaces
from osvirt.process import Children, ready


def _kinds(*kinds):
    """kinds as this environment can make them, and the maps: plain with CAP_SYS_ADMIN, else in a user ns."""
    if env.can("cap_sys_admin"):
        return list(kinds), {}
    userns = env.can("userns")
    if not userns:
        pytest.skip(f"needs CAP_SYS_ADMIN or a user namespace: {env.can('cap_sys_admin').reason}; {userns.reason}")
    return ["user", *kinds], {"uid_map": [(0, os.geteuid(), 1)], "gid_map": [(0, os.getegid(), 1)]}


def run_in(kinds, fn, check=None, maps=None):
    """fn() in a child in new namespaces of `kinds`; (its JSON result, Started, check(started, result)).

    The child holds on after reporting until `check` (in this process) has looked at the kernel.
    """
    if maps is None:
        kinds, maps = _kinds(*kinds)
    results_r, results_w = os.pipe()
    hold_r, hold_w = os.pipe()

    def child():
        os.close(results_r)
        os.write(results_w, json.dumps(fn()).encode() + b"\n")
        os.read(hold_r, 1)  # a byte, not EOF: fork_in's middle process holds a copy of hold_w

    with Children() as kids:
        started = namespaces.fork_in(kids, kinds, child, **maps)
        os.close(results_w)
        os.close(hold_r)
        with os.fdopen(results_r) as results:
            line = results.readline()
        try:
            assert line, f"the child failed: exit status {kids.wait(started.owned, timeout_s=30)}"
            result = json.loads(line)
            seen = check(started, result) if check else None
        finally:
            if line:  # else the child is gone
                os.write(hold_w, b"g")
            os.close(hold_w)
        assert kids.wait(started.owned, timeout_s=30) == 0
    return result, started, seen


def test_uts_hostname_set_inside_leaves_the_hosts():
    host = os.uname().nodename

    domain = _domainname()

    def inside():
        namespaces.sethostname("osvirt-inside")
        namespaces.setdomainname("osvirt.test")
        return os.uname().nodename, _domainname(), str(namespaces.identity(0, "uts"))

    (name, domain_inside, ident), _, _ = run_in(["uts"], inside)
    assert name == "osvirt-inside" and os.uname().nodename == host
    assert domain_inside == "osvirt.test" and _domainname() == domain
    assert ident != str(namespaces.identity(0, "uts")) and ident.startswith("uts:[")


def _domainname():
    with open("/proc/sys/kernel/domainname") as f:  # the reader's UTS namespace's
        return f.read().strip()


def _msg_keys():
    with open("/proc/sysvipc/msg") as f:  # the reader's IPC namespace's
        return {int(line.split()[0]) for line in list(f)[1:]}


def test_ipc_a_sysv_queue_made_inside_is_not_in_the_hosts_table():
    key = secrets.randbelow(1 << 30) + 1

    def inside():
        sysv_ipc.MessageQueue(key, sysv_ipc.IPC_CREX, 0o600)  # not removed: it goes with the namespace
        return key in _msg_keys()

    listed_inside, _, listed_here = run_in(["ipc"], inside, lambda started, result: key in _msg_keys())
    assert listed_inside and not listed_here  # looked while the queue existed inside


def test_mount_namespace_starts_as_a_copy_with_an_identity_of_its_own():
    def mount_points():
        with open("/proc/self/mountinfo") as f:
            points = sorted(line.split()[4] for line in f)
        return str(namespaces.identity(0, "mount")), points

    (ident, points), _, _ = run_in(["mount"], mount_points)
    assert ident != str(namespaces.identity(0, "mount")) and ident.startswith("mnt:[")
    assert points == mount_points()[1]


def test_pid_the_child_is_pid_1_inside_and_another_pid_here():
    def status_of(started, result):
        with open(f"/proc/{started.pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)

    inside_pid, started, status = run_in(["pid"], os.getpid, status_of)
    assert inside_pid == 1 and started.pid not in (1, started.owned)
    assert status["NSpid"].split() == [str(started.pid), "1"]  # its number in each PID namespace, outermost first


def test_network_only_loopback_inside():
    # /proc/self/net is the reader's network namespace; /sys/class/net would show the namespace that
    # mounted /sys, the host's.
    def interfaces():
        with open("/proc/self/net/dev") as f:
            return sorted(line.split(":")[0].strip() for line in list(f)[2:]), [n for _, n in socket.if_nameindex()]

    (listed, indexed), _, _ = run_in(["network"], interfaces)
    assert listed == ["lo"] and indexed == ["lo"]


def test_time_and_cgroup_namespaces_are_the_childs_own():
    # unshare(CLONE_NEWTIME) moves only later children (time_for_children): fork_in forks once more for it.
    def identities():
        return [str(namespaces.identity(0, kind)) for kind in ("time", "cgroup")]

    inside, _, _ = run_in(["time", "cgroup"], identities)
    assert all(a != b for a, b in zip(inside, identities()))
    assert os.readlink("/proc/self/ns/time_for_children") == os.readlink("/proc/self/ns/time")  # this one: unmoved


def test_identity_shared_with_a_child_and_entered_by_setns():
    with Children() as kids:
        plain = kids.fork_ready(lambda ready_fd: (ready(ready_fd), signal.pause()))
        assert namespaces.identity(plain, "uts") == namespaces.identity(0, "uts")  # fork shares them
    kinds, maps = _kinds("uts")

    def enter(started, result):
        """Two children enter the target's namespaces: by /proc/PID/ns paths, and by one pidfd."""
        def by_paths():
            for kind in kinds:  # user first: it gives CAP_SYS_ADMIN over its uts namespace
                namespaces.setns(f"/proc/{started.pid}/ns/{namespaces.KINDS[kind].file}", kind)
            return str(namespaces.identity(0, "uts")), os.uname().nodename

        def by_pidfd():
            pidfd = os.pidfd_open(started.pid)
            namespaces.setns(pidfd, kinds)
            return str(namespaces.identity(0, "uts")), os.uname().nodename

        return [run_here(fn) for fn in (by_paths, by_pidfd)]

    def target():
        namespaces.sethostname("osvirt-entered")
        return str(namespaces.identity(0, "uts"))

    ident, started, entered = run_in(kinds, target, enter, maps)
    assert ident != str(namespaces.identity(0, "uts"))
    assert entered == [[ident, "osvirt-entered"]] * 2


def run_here(fn):
    """fn() in a plain forked child; its JSON result."""
    r, w = os.pipe()

    def child():
        os.close(r)
        os.write(w, json.dumps(fn()).encode())

    with Children() as kids:
        pid = kids.fork(child)
        os.close(w)
        with os.fdopen(r) as f:
            text = f.read()
        assert kids.wait(pid, timeout_s=30) == 0 and text
    return json.loads(text)


@pytest.mark.needs("userns")
def test_rootless_uid_0_inside_is_an_unprivileged_uid_outside():
    """As uid 65534 without capabilities (root drops to it first): a user namespace with uid 0 mapped to 65534."""
    if os.geteuid() == 0 and not env.can("setuid"):
        pytest.skip(f"root must become uid 65534 first: {env.can('setuid').reason}")
    with tempfile.TemporaryDirectory() as shared:
        os.chmod(shared, 0o777)

        def inside():
            with open("/proc/self/uid_map") as f:
                uid_map = f.read().split()
            open(os.path.join(shared, "made-inside"), "w").close()
            try:
                namespaces.sethostname("osvirt-host")  # the host's UTS namespace: not this user namespace's
                refused = 0
            except PermissionError as e:
                refused = e.errno
            return os.getuid(), uid_map, sorted(capabilities.sets().effective), refused

        def rootless():
            if os.geteuid() == 0:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)  # every capability goes with uid 0
                # A process that was root is left non-dumpable, its /proc/PID files root's: as a user who
                # never was root, this one's children's uid_map must be its own to write.
                PR_SET_DUMPABLE = 4  # <linux/prctl.h>
                assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) == 0
            assert not capabilities.sets().effective
            return run_in(["user"], inside, maps={"uid_map": [(0, 65534, 1)], "gid_map": [(0, 65534, 1)]})[0]

        uid, uid_map, effective, refused = run_here(rootless)
        made = os.stat(os.path.join(shared, "made-inside"))
    assert uid == 0 and uid_map == ["0", "65534", "1"]
    assert made.st_uid == 65534 and made.st_gid == 65534  # the host sees the outer uid
    assert effective == sorted(n for n, nr in capabilities.CAPABILITIES.items() if nr <= capabilities.KERNEL_LAST_CAP)
    assert refused == errno.EPERM


def test_bad_arguments_are_refused_before_any_system_call():
    before = namespaces.identity(0, "uts")
    for bad in ("utsname", ["uts", "mnt"], []):
        with pytest.raises(ValueError, match="namespace kind"):
            namespaces.unshare(bad)
    with pytest.raises(ValueError, match="pidfd enters several"):
        namespaces.setns("/proc/self/ns/uts", ["uts", "ipc"])
    with pytest.raises(TypeError, match="setns: target"):
        namespaces.setns(3.0, "uts")
    with pytest.raises(ValueError, match="overlap"):
        namespaces.write_id_maps(os.getpid(), [(0, 1000, 10), (5, 2000, 1)], [])
    with pytest.raises(ValueError, match="count >= 1"):
        namespaces.write_id_maps(os.getpid(), [(0, 1000, 0)], [])
    with pytest.raises(ValueError, match="add 'user'"):
        namespaces.fork_in(Children(), ["uts"], print, uid_map=[(0, 0, 1)])
    with pytest.raises(ValueError, match="1 to 64 bytes"):
        namespaces.sethostname("x" * 65)
    assert namespaces.identity(0, "uts") == before


def test_kinds_table_names_each_proc_file():
    assert set(os.listdir("/proc/self/ns")) >= {k.file for k in namespaces.KINDS.values()}
    flags = [k.flag for k in namespaces.KINDS.values()]
    assert len(set(flags)) == len(flags) and all(bin(f).count("1") == 1 for f in flags)
    assert str(namespaces.identity(0, "network")) == os.readlink("/proc/self/ns/net")
