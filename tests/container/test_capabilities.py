"""osvirt.container.capabilities: the table against the headers and the running kernel, the five
sets against /proc/PID/status, and what limit_to and the ambient set leave a process, in forked
children (and the programs they exec), with the kernel's errnos.

limit_to needs CAP_SETPCAP to drop from the bounding set: where this process lacks it (uid 65534)
the child makes a user namespace of its own first, where its uid 0 has every capability.
"""
import errno
import json
import os
import subprocess

import pytest

from osvirt import env
from osvirt.container import capabilities, docker, namespaces
from osvirt.process import Children

ALL = frozenset(name for name, nr in capabilities.CAPABILITIES.items() if nr <= capabilities.KERNEL_LAST_CAP)


def _status(text):
    return {line.split(":")[0]: int(line.split()[1], 16) for line in text.splitlines() if line.startswith("Cap")}


def run_child(fn, user_ns=False):
    """fn() in a forked child (in a user namespace of its own, uid 0 mapped to ours, if user_ns); its JSON result."""
    r, w = os.pipe()

    def child():
        os.close(r)
        os.write(w, json.dumps(fn()).encode())

    with Children() as kids:
        if user_ns:
            owned = namespaces.fork_in(kids, "user", child, uid_map=[(0, os.geteuid(), 1)],
                                       gid_map=[(0, os.getegid(), 1)]).owned
        else:
            owned = kids.fork(child)
        os.close(w)
        with os.fdopen(r) as f:
            text = f.read()
        assert kids.wait(owned, timeout_s=30) == 0 and text, "the child failed (its traceback is above)"
    return json.loads(text)


def _with_setpcap():
    """Whether a child must make a user namespace to hold CAP_SETPCAP (skip when it cannot)."""
    if env.can("cap_setpcap"):
        return False
    userns = env.can("userns")
    if not userns:
        pytest.skip(f"needs CAP_SETPCAP or a user namespace: {env.can('cap_setpcap').reason}; {userns.reason}")
    return True


def test_table_is_the_headers_and_the_running_kernels():
    numbers = list(capabilities.CAPABILITIES.values())
    assert numbers == list(range(len(numbers)))  # 0.. without a gap, in order
    assert capabilities.CAP_LAST_CAP == numbers[-1]
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert capabilities.KERNEL_LAST_CAP == int(f.read())
    if capabilities.KERNEL_LAST_CAP != capabilities.CAP_LAST_CAP:
        pytest.skip(f"this kernel knows capabilities up to {capabilities.KERNEL_LAST_CAP}, the headers up to "
                    f"{capabilities.CAP_LAST_CAP}")
    assert set(docker.CAPABILITIES) < set(capabilities.CAPABILITIES) and len(docker.CAPABILITIES) == 14
    assert env.CAPABILITIES == tuple(capabilities.CAPABILITIES)  # env's own list (it loads no C) holds to the headers
    assert capabilities.CAPABILITIES["CAP_SYS_ADMIN"] == 21 and capabilities.CAPABILITIES["CAP_CHOWN"] == 0


def test_sets_read_proc_status_and_capget_agrees():
    with open("/proc/self/status") as f:
        masks = _status(f.read())
    now = capabilities.sets()
    for line, field in (("CapInh", "inheritable"), ("CapPrm", "permitted"), ("CapEff", "effective"),
                        ("CapBnd", "bounding"), ("CapAmb", "ambient")):
        assert capabilities.mask(getattr(now, field)) == masks[line], line
    got = capabilities.capget()
    assert (got.effective, got.permitted, got.inheritable) == (now.effective, now.permitted, now.inheritable)
    assert capabilities.names(1 << 21 | 1 << 23) == {"CAP_SYS_ADMIN", "CAP_SYS_NICE"}
    assert env.capabilities() == now.effective


def test_limit_to_dockers_14_leaves_exactly_them_and_sethostname_is_eperm():
    user_ns = _with_setpcap()

    def limited():
        capabilities.limit_to(docker.CAPABILITIES, inheritable=(), ambient=())  # as docker's config.json says
        with open("/proc/self/status") as f:
            masks = _status(f.read())
        try:
            namespaces.sethostname("osvirt-limited")
            refused = 0
        except PermissionError as e:
            refused = e.errno
        return masks, refused

    masks, refused = run_child(limited, user_ns)
    fourteen = capabilities.mask(docker.CAPABILITIES)
    assert masks == {"CapInh": 0, "CapPrm": fourteen, "CapEff": fourteen, "CapBnd": fourteen, "CapAmb": 0}
    assert refused == errno.EPERM  # CAP_SYS_ADMIN is not among them


def test_limit_to_one_set_in_all_five():
    user_ns = _with_setpcap()
    chosen = {"CAP_KILL", "CAP_NET_BIND_SERVICE"}

    def limited():
        capabilities.limit_to(chosen)
        return [sorted(s) for s in capabilities.sets()]

    assert run_child(limited, user_ns) == [sorted(chosen)] * 5


@pytest.mark.needs("setuid")
def test_ambient_set_survives_exec_by_a_non_root_uid():
    chosen = ["CAP_KILL", "CAP_NET_BIND_SERVICE"]

    def as_65534(ambient):
        capabilities.set_keepcaps(True)  # permitted kept over the setuid; effective and ambient are not
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
        capabilities.capset(chosen, chosen, chosen)
        if ambient:
            capabilities.ambient_raise(chosen)
        # grep is a plain program: no setuid bit, no file capabilities
        return subprocess.run(["grep", "-E", "^(Uid|Cap)", "/proc/self/status"], capture_output=True, text=True,
                              check=True).stdout

    with_ambient = _status(run_child(lambda: as_65534(True)))
    without = _status(run_child(lambda: as_65534(False)))
    mask = capabilities.mask(chosen)
    assert with_ambient["CapAmb"] == with_ambient["CapEff"] == with_ambient["CapPrm"] == mask
    assert without["CapEff"] == without["CapPrm"] == without["CapAmb"] == 0  # execve recomputes: nothing left


def test_drop_bounding_and_ambient_lower():
    user_ns = _with_setpcap()

    def dropped():
        capabilities.drop_bounding(["CAP_SYS_BOOT"])
        capabilities.capset(["CAP_KILL"], ["CAP_KILL"], ["CAP_KILL"])
        capabilities.ambient_raise(["CAP_KILL"])
        raised = sorted(capabilities.sets().ambient)
        capabilities.ambient_lower(["CAP_KILL"])
        now = capabilities.sets()
        return "CAP_SYS_BOOT" in now.bounding, raised, sorted(now.ambient)

    assert run_child(dropped, user_ns) == [False, ["CAP_KILL"], []]


def test_bad_names_are_refused_before_any_system_call():
    before = capabilities.sets()
    with pytest.raises(ValueError, match="CAP_WARP"):
        capabilities.limit_to(["CAP_KILL", "CAP_WARP"])
    with pytest.raises(TypeError, match="not the str"):
        capabilities.drop_bounding("CAP_KILL")
    with pytest.raises(ValueError, match="not in permitted"):
        capabilities.capset(["CAP_KILL"], [], [])
    with pytest.raises(ValueError, match="ambient holds"):
        capabilities.limit_to(["CAP_KILL"], inheritable=())
    with pytest.raises(TypeError, match="PR_SET_KEEPCAPS"):
        capabilities.set_keepcaps(1)
    assert capabilities.sets() == before
