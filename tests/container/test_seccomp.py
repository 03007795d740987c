"""osvirt.container.seccomp: the compiled program against the profile's theory
(a BPF interpreter here runs it for every system call), then the kernel's
verdicts in forked children that installed it: errnos, SIGSYS, /proc/self/status.
"""
import ctypes
import errno
import json
import os
import resource
import signal
import socket
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osvirt import env
from osvirt.container import _native, docker, seccomp
from osvirt.process import Children

SYSCALLS = seccomp.SYSCALLS
RET, BPF = _native.RET, _native.BPF
CLONE_NEWNS, CLONE_NEWUSER, CLONE_FS = 0x00020000, 0x10000000, 0x00000200  # <linux/sched.h>
U64 = (1 << 64) - 1
kernel = pytest.mark.needs("seccomp_filter")  # the tests that install a filter, in a child


# --- theory: what a profile says, read as the module's docstring says ------

def _ret(action, errno_ret):
    value = seccomp.ACTIONS[action]
    return value | (errno.EPERM if errno_ret is None else errno_ret) if value == RET["ERRNO"] else value


def _holds(arg, args):
    value, two, x = arg["value"], arg.get("valueTwo", 0), args[arg["index"]]
    return {"SCMP_CMP_NE": x != value, "SCMP_CMP_LT": x < value, "SCMP_CMP_LE": x <= value,
            "SCMP_CMP_EQ": x == value, "SCMP_CMP_GE": x >= value, "SCMP_CMP_GT": x > value,
            "SCMP_CMP_MASKED_EQ": x & value == two}[arg["op"]]


def theory(profile, name, args=(0,) * 6):
    default = _ret(profile["defaultAction"], profile.get("defaultErrnoRet"))
    rules = [r for r in profile["syscalls"] if name in r["names"]] if name in SYSCALLS else []
    for rule in rules:
        if rule.get("args") and all(_holds(arg, args) for arg in rule["args"]):
            return _ret(rule["action"], rule.get("errnoRet"))
    plain = [rule for rule in rules if not rule.get("args")]
    return _ret(plain[0]["action"], plain[0].get("errnoRet")) if plain else default


# --- the program, run here: classic BPF over struct seccomp_data -----------

def run(filter, nr, args=(0,) * 6, arch=_native.AUDIT_ARCH):
    data = struct.pack("=iIQ6Q", nr, arch, 0, *args)  # nr, arch, instruction_pointer, args (uapi layout)
    ld, alu_and = BPF["LD"] | BPF["W"] | BPF["ABS"], BPF["ALU"] | BPF["AND"] | BPF["K"]
    jumps = {BPF["JMP"] | BPF[op] | BPF["K"]: test for op, test in (
        ("JEQ", lambda a, k: a == k), ("JGT", lambda a, k: a > k), ("JGE", lambda a, k: a >= k))}
    a = pc = 0
    while True:
        code, jt, jf, k = filter.instructions[pc]
        if code == ld:
            a = struct.unpack_from("=I", data, k)[0]
        elif code == alu_and:
            a &= k
        elif code == BPF["JMP"] | BPF["JA"]:
            pc += k
        elif code in jumps:
            assert jt <= 255 and jf <= 255
            pc += jt if jumps[code](a, k) else jf
        else:
            assert code == BPF["RET"] | BPF["K"], f"unexpected opcode {code:#x} at {pc}"
            return k
        pc += 1


def _allow_all_but(names, action, **more):
    """A profile refusing `names` with `action` (ERRNO's errno in errnoRet), the rest allowed."""
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": list(names), "action": action, **more}]}


ARGS_OF_NOTE = [(0,) * 6, (1,) * 6, (0xFFFFFFFF,) * 6, (1 << 32,) * 6, (U64,) * 6,
                (socket.AF_VSOCK,) + (0,) * 5, (38,) + (0,) * 5, (39,) + (0,) * 5, (41,) + (0,) * 5,
                ((1 << 32) | socket.AF_VSOCK,) + (0,) * 5, (8,) + (0,) * 5, (0x20008,) + (0,) * 5,
                (CLONE_NEWNS,) + (0,) * 5, (CLONE_NEWNS | CLONE_FS | signal.SIGCHLD,) + (0,) * 5,
                (0x01200011,) + (0,) * 5]  # glibc fork()'s clone flags


@pytest.mark.parametrize("caps", [docker.CAPABILITIES, ()], ids=["docker's 14", "none"])
def test_dockers_profile_compiled_gives_every_syscall_the_profiles_verdict(caps):
    profile = docker.seccomp(capabilities=caps)
    compiled = seccomp.compile_filter(profile)
    for name, nr in SYSCALLS.items():
        for args in ARGS_OF_NOTE:
            assert run(compiled, nr, args) == theory(profile, name, args), (name, args)
    assert set(compiled.skipped) == {n for rule in profile["syscalls"] for n in rule["names"]} - set(SYSCALLS)
    for nr in (max(SYSCALLS.values()) + 1, 1000, 0x3FFFFFFF, -1):  # no call has these: the default
        assert run(compiled, nr) == RET["ERRNO"] | errno.EPERM
    foreign = [arch for arch in _native.AUDIT_ARCH_NAMES if arch != _native.AUDIT_ARCH]
    for arch in foreign + [0]:  # a call under any other ABI is killed
        assert run(compiled, SYSCALLS["getpid"], arch=arch) == RET["KILL_PROCESS"]
    if _native.X32_SYSCALL_BIT:
        assert run(compiled, _native.X32_SYSCALL_BIT | SYSCALLS["getpid"]) == RET["KILL_PROCESS"]


def test_the_disassembly_shows_each_step():
    compiled = seccomp.compile_filter(docker.seccomp())
    text = compiled.disassembly()
    lines = text.splitlines()
    assert len(lines) == len(compiled) and len(compiled.program) == 8 * len(compiled)
    assert lines[0].startswith("0000: ld   [4]") and "seccomp_data.arch" in lines[0]
    assert _native.AUDIT_ARCH_NAMES[_native.AUDIT_ARCH] in lines[1]
    assert "personality rule 5: eq 0xffffffff" in text and "clone rule 1: masked_eq 0x7e020000 -> 0x0" in text
    assert lines[-1].endswith("ret  KILL_PROCESS") and "ret  ERRNO(ENOSYS)" in text and "ret  ERRNO(EPERM)" in text


comparison = st.fixed_dictionaries({
    "index": st.integers(0, 5),
    "op": st.sampled_from(seccomp.OPERATORS),
    "value": st.one_of(st.sampled_from([0, 1, 0xFFFFFFFF, 1 << 32, U64]), st.integers(0, U64)),
    "valueTwo": st.one_of(st.sampled_from([0, 1, 1 << 32]), st.integers(0, U64)),
})
rule = st.fixed_dictionaries({
    "names": st.lists(st.sampled_from(["getpid", "socket", "personality", "clone", "read", "write", "no_such_call"]),
                      min_size=1, max_size=3),
    "action": st.sampled_from(["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_TRAP", "SCMP_ACT_LOG"]),
    "errnoRet": st.integers(0, 4095),
    "args": st.lists(comparison, min_size=1, max_size=3),
})


@settings(max_examples=60, deadline=None)
@given(st.lists(rule, max_size=8), st.lists(st.sampled_from([0, 1, 0xFFFFFFFF, 1 << 32, U64, 7]),
                                             min_size=6, max_size=6))
def test_comparing_rules_match_theory(rules, args):
    profile = {"defaultAction": "SCMP_ACT_KILL_THREAD", "syscalls": rules
               + [{"names": ["read", "write"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EIO}]}
    compiled = seccomp.compile_filter(profile)
    for name in ("getpid", "socket", "personality", "clone", "read", "write", "close"):
        assert run(compiled, SYSCALLS[name], args) == theory(profile, name, args), (name, args)


def _long_profile(rules):
    """getpgid refused with EDOM when its pid is (1 << 32) + v, v below `rules`: one rule a value, a long program."""
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EDOM,
         "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": (1 << 32) + v}]} for v in range(rules)]}


FAR = [0, 1 << 32, (1 << 32) + 199, 2 << 32]  # the kernel reads pid 2 << 32 as 0: this process


@kernel
def test_far_jumps_go_through_ja():
    profile = _long_profile(200)  # 4 instructions a rule: the default's return is ~800 ahead
    compiled = seccomp.compile_filter(profile)
    assert any(line.endswith("the jump above, beyond 8 bits") for line in compiled.disassembly().splitlines())
    for v in FAR:
        args = (v,) + (0,) * 5
        assert run(compiled, SYSCALLS["getpgid"], args) == theory(profile, "getpgid", args), hex(v)
    code, _, seen = in_child(compiled, lambda: [call("getpgid", v) for v in FAR])
    assert code == 0 and seen == [0, errno.EDOM, errno.EDOM, 0]  # the kernel took the ja's too


def test_bad_input_is_refused_before_any_system_call():
    good = {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}
    cases = [
        ({"defaultAction": "SCMP_ACT_NOPE"}, ValueError, "defaultAction action 'SCMP_ACT_NOPE'"),
        ({"defaultAction": "SCMP_ACT_TRACE"}, ValueError, "not one of"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 4096}, ValueError, "errnoRet 4096 not in 0..4095"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": "1"}, TypeError, "errnoRet must be an int"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["x86_64"]}, ValueError, "SCMP_ARCH_"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": good}, TypeError, "syscalls must be a list"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{**good, "names": "getpid"}]}, TypeError, "names must be a list"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{**good, "args": [{"index": 6, "op": "SCMP_CMP_EQ"}]}]},
         ValueError, r"syscalls\[0\] args\[0\] index 6 not in 0..5"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{**good, "args": [{"index": 0, "op": "SCMP_CMP_LIKE"}]}]},
         ValueError, "op 'SCMP_CMP_LIKE' not one of"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{**good, "args": [
            {"index": 0, "op": "SCMP_CMP_EQ", "value": 1 << 64}]}]}, ValueError, "value 18446744073709551616 not in"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [good, {**good, "action": "SCMP_ACT_KILL"}]},
         ValueError, "getpid has rules without args of different actions"),
    ]
    for profile, error, message in cases:
        with pytest.raises(error, match=message):
            seccomp.compile_filter(profile)
    with pytest.raises(TypeError, match="the profile must be a dict"):
        seccomp.compile_filter([good])
    with pytest.raises(ValueError, match="compiles to .* instructions; the kernel takes at most BPF_MAXINSNS"):
        seccomp.compile_filter(_long_profile(1100))
    for program in (b"", b"\0" * 12, b"\0" * 8 * (_native.BPF_MAXINSNS + 1)):
        with pytest.raises(ValueError, match="a program is 1 to 4096 instructions of 8 bytes"):
            seccomp.install(program)
    with pytest.raises(TypeError, match="install takes a Filter or bytes"):
        seccomp.install(bytearray(8))


# --- the kernel's side: a child installs the filter and reports -----------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def call(name, *args):
    """0 when the system call `name` succeeds, else its errno."""
    ctypes.set_errno(0)
    result = _libc.syscall(ctypes.c_long(SYSCALLS[name]),
                           *(ctypes.c_char_p(a) if isinstance(a, bytes) else ctypes.c_ulong(a) for a in args))
    return ctypes.get_errno() if result == -1 else 0


def _status():
    with open("/proc/self/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _child(filter, probe, report_w):
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a SIGSYS death dumps core: not into the tree
    before = _status()
    seccomp.install(filter)
    os.write(report_w, json.dumps({"installed": True, "before": before, "after": _status()}).encode() + b"\n")
    os.write(report_w, json.dumps(probe()).encode() + b"\n")
    return 0


def in_child(filter, probe):
    """(exit code, what the child reported before its probe, the probe's result or None)."""
    r, w = os.pipe()
    with Children() as kids:
        pid = kids.fork(_child, filter, probe, w)
        os.close(w)
        with os.fdopen(r, "rb") as reports:
            lines = reports.read().splitlines()
        code = kids.wait(pid, timeout_s=60)
    assert lines, f"the child reported nothing (exit {code})"
    return code, json.loads(lines[0]), json.loads(lines[1]) if len(lines) > 1 else None


MINE = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["getppid", "uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV},
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOTUNIQ},
    # both comparisons must hold: refused unless 0 (PER_LINUX) or 0xffffffff (a query)
    {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ECHRNG,
     "args": [{"index": 0, "op": "SCMP_CMP_NE", "value": 0}, {"index": 0, "op": "SCMP_CMP_NE", "value": 0xFFFFFFFF}]},
    {"names": ["clone", "unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EL2HLT,
     "args": [{"index": 0, "op": "SCMP_CMP_MASKED_EQ", "value": CLONE_NEWNS, "valueTwo": CLONE_NEWNS}]},
    {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOANO,
     "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": socket.AF_VSOCK}]},
    {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOANO,
     "args": [{"index": 0, "op": "SCMP_CMP_LT", "value": socket.AF_UNIX}]},
    # 64-bit arguments: the kernel truncates getpgid's pid to 32 bits, the filter must not
    {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EDOM,
     "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": (1 << 32) | 5}]},
    {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.E2BIG,
     "args": [{"index": 0, "op": "SCMP_CMP_GT", "value": 0xFFFFFFFF}]},
    {"names": ["getsid"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ERANGE,
     "args": [{"index": 0, "op": "SCMP_CMP_GE", "value": 1 << 32}, {"index": 0, "op": "SCMP_CMP_LE", "value": 2 << 32}]},
]}


def _probe_mine():
    try:
        os.mkdir("/osvirt-no-such-dir/x")  # ENOENT from the kernel, if the filter let it through
        made = 0
    except OSError as e:
        made = e.errno
    pid = os.fork()  # glibc's fork(): clone without a namespace flag
    if pid == 0:
        os._exit(7)
    forked = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return {
        "getppid": call("getppid"), "uname": call("uname", 0), "mkdir": made, "getpid": call("getpid"),
        "personality(0)": call("personality", 0), "personality(query)": call("personality", 0xFFFFFFFF),
        "personality(1)": call("personality", 1),
        "unshare(CLONE_NEWNS)": call("unshare", CLONE_NEWNS),
        # CLONE_FS with CLONE_NEWNS is EINVAL to the kernel: no process, whatever the filter does
        "clone(CLONE_NEWNS|CLONE_FS)": call("clone", CLONE_NEWNS | CLONE_FS | signal.SIGCHLD, 0, 0, 0, 0),
        "fork": forked,
        "socket(AF_VSOCK)": call("socket", socket.AF_VSOCK, socket.SOCK_STREAM, 0),
        "socket(AF_UNSPEC)": call("socket", 0, socket.SOCK_STREAM, 0),
        "socket(AF_UNIX)": call("socket", socket.AF_UNIX, socket.SOCK_STREAM, 0),
        "getpgid(0)": call("getpgid", 0), "getpgid(1<<32|5)": call("getpgid", (1 << 32) | 5),
        "getpgid(1<<32)": call("getpgid", 1 << 32), "getpgid(0xffffffff)": call("getpgid", 0xFFFFFFFF),
        "getsid(0)": call("getsid", 0), "getsid(1<<32)": call("getsid", 1 << 32),
        "getsid(2<<32)": call("getsid", 2 << 32), "getsid(2<<32|1)": call("getsid", (2 << 32) | 1),
    }


@kernel
def test_the_kernel_applies_errno_rules_and_argument_comparisons():
    code, installed, seen = in_child(seccomp.compile_filter(MINE), _probe_mine)
    assert code == 0 and installed["after"]["Seccomp"] == "2"
    assert seen == {
        "getppid": errno.EXDEV, "uname": errno.EXDEV, "mkdir": errno.ENOTUNIQ, "getpid": 0,
        "personality(0)": 0, "personality(query)": 0, "personality(1)": errno.ECHRNG,
        "unshare(CLONE_NEWNS)": errno.EL2HLT, "clone(CLONE_NEWNS|CLONE_FS)": errno.EL2HLT, "fork": 7,
        "socket(AF_VSOCK)": errno.ENOANO, "socket(AF_UNSPEC)": errno.ENOANO, "socket(AF_UNIX)": 0,
        "getpgid(0)": 0, "getpgid(1<<32|5)": errno.EDOM, "getpgid(1<<32)": errno.E2BIG,
        "getpgid(0xffffffff)": errno.ESRCH,  # let through: pid -1 is the kernel's to refuse
        "getsid(0)": 0, "getsid(1<<32)": errno.ERANGE, "getsid(2<<32)": errno.ERANGE,
        "getsid(2<<32|1)": 0,  # above the range: the kernel's getsid(1)
    }


@kernel
def test_status_shows_the_filter_and_no_new_privs_where_needed():
    code, installed, _ = in_child(seccomp.compile_filter(MINE), lambda: None)
    before, after = installed["before"], installed["after"]
    assert code == 0 and after["Seccomp"] == "2"  # SECCOMP_MODE_FILTER
    assert int(after["Seccomp_filters"]) == int(before["Seccomp_filters"]) + 1  # stacked on any already there
    # no_new_privs is the price of a filter without CAP_SYS_ADMIN; with it, install leaves it alone
    assert after["NoNewPrivs"] == ("1" if "CAP_SYS_ADMIN" not in env.capabilities() else before["NoNewPrivs"])


@kernel
def test_an_unlisted_call_gets_the_default_action():
    listed = sorted(set(SYSCALLS) - {"getppid", "uname"})
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOTUNIQ,
               "syscalls": [{"names": listed, "action": "SCMP_ACT_ALLOW"}]}
    code, _, seen = in_child(seccomp.compile_filter(profile), lambda: [call("getppid"), call("uname", 0), call("getpid")])
    assert code == 0 and seen == [errno.ENOTUNIQ, errno.ENOTUNIQ, 0]


@kernel
@pytest.mark.parametrize("action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL"])
def test_kill_actions_end_the_child_with_sigsys(action):
    code, installed, seen = in_child(seccomp.compile_filter(_allow_all_but(["getppid"], action)),
                                     lambda: call("getppid"))
    assert installed["installed"] and seen is None and code == -signal.SIGSYS


def _trapped():
    caught = []
    signal.signal(signal.SIGSYS, lambda signo, frame: caught.append(signo))
    call("getppid")
    return caught


@kernel
def test_trap_sends_sigsys_log_allows():
    _, _, caught = in_child(seccomp.compile_filter(_allow_all_but(["getppid"], "SCMP_ACT_TRAP")), _trapped)
    assert caught == [signal.SIGSYS]
    _, _, logged = in_child(seccomp.compile_filter(_allow_all_but(["getppid"], "SCMP_ACT_LOG")),
                            lambda: [call("getppid"), os.getppid() > 1])
    assert logged == [0, True]


@kernel
@pytest.mark.skipif(not _native.X32_SYSCALL_BIT, reason="x32 exists on x86_64 only")
def test_an_x32_call_is_killed():
    code, _, seen = in_child(seccomp.compile_filter(_allow_all_but([], "SCMP_ACT_ERRNO")),
                             lambda: _libc.syscall(ctypes.c_long(_native.X32_SYSCALL_BIT | SYSCALLS["getpid"])))
    assert seen is None and code == -signal.SIGSYS


@kernel
def test_the_kernel_refuses_a_program_its_checker_rejects():
    # one `ld [0]` and no return: the kernel's checker (sk_chk_filter) says EINVAL
    lone_load = struct.pack("=HBBI", BPF["LD"] | BPF["W"] | BPF["ABS"], 0, 0, 0)

    def refused():
        try:
            seccomp.install(lone_load)
        except OSError as e:
            return [e.errno, e.strerror]
        return None
    code, _, seen = in_child(seccomp.compile_filter(_allow_all_but([], "SCMP_ACT_ERRNO")), refused)
    assert code == 0 and seen[0] == errno.EINVAL
    assert seen[1].startswith("seccomp(SECCOMP_SET_MODE_FILTER, a 1-instruction program): Invalid argument (the kernel's checker")


# Docker's profile, probed: (name, args, what the kernel itself answers when
# the filter lets the call through; None for a call the profile refuses).
DOCKER_PROBES = [
    ("getpid", (), 0),
    ("unshare", (CLONE_NEWNS,), None),
    ("unshare", (CLONE_NEWUSER,), None),
    ("clone", (CLONE_NEWNS | CLONE_FS | signal.SIGCHLD, 0, 0, 0, 0), None),
    ("clone3", (0, 0), None),
    ("userfaultfd", (0,), None),
    ("keyctl", (0, 0), None),
    ("personality", (0xFFFFFFFF,), 0),
    ("personality", (1,), None),
    ("socket", (socket.AF_UNIX, socket.SOCK_STREAM, 0), 0),
    ("socket", (socket.AF_VSOCK, socket.SOCK_STREAM, 0), None),
    ("socket", (38, socket.SOCK_SEQPACKET, 0), None),  # AF_ALG
    ("setns", (U64, 0), None),
    ("kcmp", (os.getpid(), os.getpid(), 0, 0, 0), None),
    ("perf_event_open", (0, 0, 0, 0, 0), None),
    ("mbind", (0, 0, 0, 0, 0, 0), None),
    ("chroot", (b"/osvirt-no-such-dir",), errno.ENOENT),  # CAP_SYS_CHROOT is one of the 14
]


def _probe_docker():
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    true = subprocess.run(["/bin/true"]).returncode  # fork + exec, through clone3's ENOSYS if glibc tries it
    return {"results": [call(name, *args) for name, args, _ in DOCKER_PROBES],
            "fork": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), "true": true}


@kernel
def test_dockers_whole_profile_installed_refuses_what_it_says():
    profile = docker.seccomp()
    compiled = seccomp.compile_filter(profile)
    code, installed, seen = in_child(compiled, _probe_docker)
    assert code == 0 and installed["after"]["Seccomp"] == "2"
    assert seen["fork"] == 3 and seen["true"] == 0
    for (name, args, allowed), result in zip(DOCKER_PROBES, seen["results"]):
        verdict = theory(profile, name, tuple(a if isinstance(a, int) else 1 for a in args) + (0,) * (6 - len(args)))
        if allowed is None:
            assert verdict & _native.RET_ACTION_FULL == RET["ERRNO"], (name, args, "the profile allows it")
            assert result == verdict & _native.RET_DATA, (name, args, errno.errorcode.get(result, result))
        else:
            assert verdict == RET["ALLOW"], (name, args, "the profile refuses it")
            assert result == allowed, (name, args, errno.errorcode.get(result, result))


def _threads_filtered(flags, report_w):
    """In a child: a second thread waits; install with `flags`; report each thread's Seccomp_filters."""
    import threading
    go = threading.Event()
    done = threading.Event()
    other = threading.Thread(target=lambda: (go.set(), done.wait()))
    other.start()
    go.wait()

    def counts():
        found = []
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/status") as f:
                found.append(int(next(line for line in f if line.startswith("Seccomp_filters:")).split()[1]))
        return sorted(found)
    before = counts()  # a container's runtime may have put a filter on us already
    seccomp.install(seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW"}), flags)
    added = [after - was for after, was in zip(counts(), before)]
    done.set()
    other.join()
    os.write(report_w, json.dumps(added).encode())
    return 0


@kernel
@pytest.mark.parametrize("flags, counts", [((), [0, 1]), (("SECCOMP_FILTER_FLAG_TSYNC",), [1, 1]),
                                           (("SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"), [0, 1])])
def test_install_flags_reach_the_kernel(flags, counts):
    # TSYNC: the other thread gets the filter too (its Seccomp_filters count rises); LOG, SPEC_ALLOW: accepted
    r, w = os.pipe()
    with Children() as kids:
        pid = kids.fork(_threads_filtered, flags, w)
        os.close(w)
        with os.fdopen(r) as f:
            seen = f.read()
        assert kids.wait(pid, timeout_s=60) == 0
    assert json.loads(seen) == counts


def test_unknown_flags_are_refused_before_any_system_call():
    with pytest.raises(ValueError, match="flags"):
        seccomp.install(b"\0" * 8, ["SECCOMP_FILTER_FLAG_NEW_LISTENER"])
    with pytest.raises(ValueError, match="flags"):
        seccomp.install(b"\0" * 8, "SECCOMP_FILTER_FLAG_TSYNC")
