"""seccomp: system-call filters compiled to classic BPF by osvirt itself, no libseccomp.

A container's seccomp profile is data (the OCI `linux.seccomp` dict that
`osvirt.container.docker.seccomp()` resolves and runc's config.json holds);
the kernel runs a program. `compile_filter(profile)` turns the first into
the second, a list of `struct sock_filter` the kernel runs on every system
call over `struct seccomp_data` (nr, arch, six 64-bit arguments), and
`install(filter)` hands it to `seccomp(SECCOMP_SET_MODE_FILTER)`.
`Filter.disassembly()` shows the program, commented, one instruction a line.

The program, top to bottom:

1. The architecture. System call numbers mean something only with the ABI
   they were made under, and osvirt has one table: the one this build's
   headers give (`SYSCALLS`). A call made under any other audit arch (i386 or
   arm32 binaries, which a profile may list among its `architectures`) is
   killed (SECCOMP_RET_KILL_PROCESS), as libseccomp kills an architecture
   its filter lacks: letting it through would bypass the profile, refusing it
   with an errno would leave a program looping on failures it cannot
   understand. On x86_64, x32 calls share AUDIT_ARCH_X86_64 and carry
   __X32_SYSCALL_BIT in their number: killed the same way, except nr -1 (a
   tracer's "skip this call"), which gets the default action.
2. A binary search on nr. The numbers with a verdict other than the
   default's split the 32-bit range into intervals; a tree of `jge` over
   their bounds reaches any interval in about log2(intervals) comparisons,
   and runs of neighbouring numbers with the same verdict cost one interval
   (the allow-list of Docker's profile is mostly such runs).
3. One block per system call whose rules compare arguments. Its rules are
   tried in the profile's order, the first that holds decides; within a rule
   every comparison must hold (as OCI and libseccomp read `args`). An
   argument is 64 bits and a BPF load 32, so each comparison reads the high
   word, then the low one. A call's rule without `args` applies when none of
   its comparing rules held; the default action when it has none.
4. The returns, one per distinct action.

BPF jumps only forward, and a conditional jump's offsets are 8 bits: a
target more than 255 instructions ahead is reached through a `ja` (32-bit
offset) placed right after the jump. Names this build's headers do not know
(other architectures' calls, calls newer than the headers) are skipped, as
runc skips them; `Filter.skipped` lists them.
"""
import errno
import struct
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

from osvirt import env
from osvirt.container import _native
from osvirt.container._native import BPF, RET
from osvirt.errors import OsvirtError

__all__ = ["SYSCALLS", "ACTIONS", "OPERATORS", "FLAGS", "Instruction", "Filter", "compile_filter", "install"]

SYSCALLS: Mapping[str, int] = _native.SYSCALLS
"""name -> number of every system call this build's headers know (this machine's ABI)."""

# OCI action -> SECCOMP_RET_* (SCMP_ACT_ERRNO adds its errno). SCMP_ACT_TRACE
# and SCMP_ACT_NOTIFY are absent: they hand the call to a tracer or a
# listener, which a compiled profile alone does not provide.
ACTIONS: Mapping[str, int] = MappingProxyType({
    "SCMP_ACT_KILL_PROCESS": RET["KILL_PROCESS"], "SCMP_ACT_KILL_THREAD": RET["KILL_THREAD"],
    "SCMP_ACT_KILL": RET["KILL_THREAD"], "SCMP_ACT_TRAP": RET["TRAP"], "SCMP_ACT_ERRNO": RET["ERRNO"],
    "SCMP_ACT_LOG": RET["LOG"], "SCMP_ACT_ALLOW": RET["ALLOW"]})
# OCI `linux.seccomp.flags` -> SECCOMP_FILTER_FLAG_*, for install(): TSYNC puts the filter on every
# thread of the process (ESRCH if one has a filter this one lacks), LOG logs every action but ALLOW,
# SPEC_ALLOW leaves the speculative-store-bypass mitigation a filter otherwise forces off.
FLAGS: Mapping[str, int] = MappingProxyType(_native.FILTER_FLAGS)
OPERATORS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
             "SCMP_CMP_MASKED_EQ")
_MAX_ERRNO = 4095  # the kernel caps SECCOMP_RET_ERRNO's data there (include/linux/err.h, not a uapi header)
_MAX_JUMP = 255  # jt and jf are 8 bits
_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1
_LD = BPF["LD"] | BPF["W"] | BPF["ABS"]
_AND = BPF["ALU"] | BPF["AND"] | BPF["K"]
_JA = BPF["JMP"] | BPF["JA"]
_JEQ, _JGT, _JGE = (BPF["JMP"] | BPF[op] | BPF["K"] for op in ("JEQ", "JGT", "JGE"))
_RET = BPF["RET"] | BPF["K"]
_MNEMONICS = {_LD: "ld", _AND: "and", _JA: "ja", _JEQ: "jeq", _JGT: "jgt", _JGE: "jge", _RET: "ret"}


class Instruction(NamedTuple):
    """One `struct sock_filter`."""
    code: int
    jt: int
    jf: int
    k: int


class Filter:
    """A compiled filter: its instructions, a comment for each ("" for none), and the names skipped.

    Immutable, compared by value. (Not a dataclass: importing dataclasses, and inspect with it, would
    cost every osvirt-runtime create or run several milliseconds.)
    """
    __slots__ = ("instructions", "comments", "skipped")
    instructions: tuple[Instruction, ...]
    comments: tuple[str, ...]
    skipped: tuple[str, ...]

    def __init__(self, instructions: tuple[Instruction, ...], comments: tuple[str, ...],
                 skipped: tuple[str, ...]) -> None:
        for name, value in (("instructions", instructions), ("comments", comments), ("skipped", skipped)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Filter is immutable: cannot assign to {name}")

    def _fields(self) -> tuple[tuple[Instruction, ...], tuple[str, ...], tuple[str, ...]]:
        return self.instructions, self.comments, self.skipped

    def __eq__(self, other: object) -> bool:
        return type(other) is Filter and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"Filter(instructions={self.instructions!r}, comments={self.comments!r}, skipped={self.skipped!r})"

    def __len__(self) -> int:
        return len(self.instructions)

    @property
    def program(self) -> bytes:
        """The instructions as the kernel reads them: `struct sock_filter[]`, native byte order."""
        return b"".join(struct.pack("=HBBI", *insn) for insn in self.instructions)

    def disassembly(self) -> str:
        """One line an instruction: address, mnemonic, operand, jump targets, comment."""
        lines = []
        for at, ((code, jt, jf, k), comment) in enumerate(zip(self.instructions, self.comments)):
            op = _MNEMONICS.get(code, f"code {code:#06x}")
            if code == _LD:
                text = f"{op:4} [{k}]"
            elif code == _JA:
                text = f"{op:4} {at + 1 + k:04}"
            elif code in (_JEQ, _JGT, _JGE):
                text = f"{op:4} #{k:#x}".ljust(18) + f" jt {at + 1 + jt:04}  jf {at + 1 + jf:04}"
            elif code == _RET:
                text = f"{op:4} {_action_name(k)}"
            else:
                text = f"{op:4} #{k:#x}"
            lines.append(f"{at:04}: {text:42} ; {comment}" if comment else f"{at:04}: {text}")
        return "\n".join(lines)


def _action_name(ret: int) -> str:
    action, data = ret & _native.RET_ACTION_FULL, ret & _native.RET_DATA
    name = next(n for n, v in RET.items() if v == action)
    return f"ERRNO({errno.errorcode.get(data, data)})" if action == RET["ERRNO"] else name


# --- reading the profile: every check before anything is compiled ----------

def _int(value: object, what: str, limit: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"seccomp: {what} must be an int, not {type(value).__name__}")
    if not 0 <= value <= limit:
        raise ValueError(f"seccomp: {what} {value} not in 0..{limit}")
    return int(value)  # an IntEnum (socket.AF_UNIX) as its number


def _action(action: object, errno_ret: object, what: str) -> int:
    if action not in ACTIONS:
        raise ValueError(f"seccomp: {what} action {action!r} not one of {sorted(ACTIONS)}")
    assert isinstance(action, str)
    if ACTIONS[action] != RET["ERRNO"]:
        return ACTIONS[action]
    # OCI leaves errnoRet out for EPERM (runc's default too).
    errno_ret = errno.EPERM if errno_ret is None else errno_ret
    return RET["ERRNO"] | _int(errno_ret, f"{what} errnoRet", _MAX_ERRNO)


class _Comparison(NamedTuple):
    arg: int
    op: str
    value: int
    value_two: int


def _comparison(arg: object, what: str) -> _Comparison:
    if not isinstance(arg, Mapping):
        raise TypeError(f"seccomp: {what} must be a dict, not {type(arg).__name__}")
    op = arg.get("op")
    if op not in OPERATORS:
        raise ValueError(f"seccomp: {what} op {op!r} not one of {OPERATORS}")
    return _Comparison(_int(arg.get("index"), f"{what} index", 5), op, _int(arg.get("value", 0), f"{what} value", _U64),
                       _int(arg.get("valueTwo", 0), f"{what} valueTwo", _U64))


class _Rule(NamedTuple):
    ret: int
    comparisons: tuple[_Comparison, ...]


def _list(value: object, what: str) -> Sequence[object]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"seccomp: {what} must be a list, not {type(value).__name__}")
    return value


def _rules(profile: Mapping[str, object]) -> tuple[int, dict[str, list[_Rule]]]:
    """The default action's return value, and each name's rules in the profile's order."""
    default = _action(profile.get("defaultAction"), profile.get("defaultErrnoRet"), "defaultAction")
    for arch in _list(profile.get("architectures") or [], "architectures"):
        if not isinstance(arch, str) or not arch.startswith("SCMP_ARCH_"):
            raise ValueError(f"seccomp: architecture {arch!r} is not an SCMP_ARCH_* name")
    rules: dict[str, list[_Rule]] = {}
    for i, entry in enumerate(_list(profile.get("syscalls") or [], "syscalls")):
        what = f"syscalls[{i}]"
        if not isinstance(entry, Mapping):
            raise TypeError(f"seccomp: {what} must be a dict, not {type(entry).__name__}")
        ret = _action(entry.get("action"), entry.get("errnoRet"), what)
        args = _list(entry.get("args") or [], f"{what} args")
        rule = _Rule(ret, tuple(_comparison(arg, f"{what} args[{j}]") for j, arg in enumerate(args)))
        for name in _list(entry.get("names") or [], f"{what} names"):
            if not isinstance(name, str):
                raise TypeError(f"seccomp: {what} names holds {name!r}, not a str")
            rules.setdefault(name, []).append(rule)
    return default, rules


# --- the program, with labels for jump targets ----------------------------

class _Label:
    """A jump target: the index of the instruction it names, once placed."""
    at = -1


class _Insn(NamedTuple):
    code: int
    k: int | _Label = 0
    jt: _Label | None = None
    jf: _Label | None = None
    comment: str = ""


class _Program:
    def __init__(self) -> None:
        self.code: list[_Insn] = []
        self.returns: dict[int, _Label] = {}

    def place(self, label: _Label) -> None:
        label.at = len(self.code)

    def emit(self, code: int, k: int | _Label = 0, jt: _Label | None = None, jf: _Label | None = None,
             comment: str = "") -> None:
        self.code.append(_Insn(code, k, jt, jf, comment))

    def ret(self, value: int) -> _Label:
        """The label of the shared `ret value`, emitted at the end."""
        return self.returns.setdefault(value, _Label())

    def link(self) -> tuple[list[Instruction], list[str]]:
        """Resolved instructions: each conditional target too far for 8 bits gets a `ja` right after its jump."""
        for value, label in self.returns.items():
            self.place(label)
            self.emit(_RET, value)
        far: set[tuple[int, str]] = set()  # (instruction, "jt"/"jf") that go through a ja
        while True:
            address, at = [], 0
            for i in range(len(self.code)):
                address.append(at)
                at += 1 + ((i, "jt") in far) + ((i, "jf") in far)
            grown = False
            for i, insn in enumerate(self.code):
                for branch in ("jt", "jf"):
                    target = getattr(insn, branch)
                    if target is not None and (i, branch) not in far and address[target.at] - address[i] - 1 > _MAX_JUMP:
                        far.add((i, branch))
                        grown = True
            if not grown:
                break
        out: list[Instruction] = []
        comments: list[str] = []
        for i, insn in enumerate(self.code):
            k = address[insn.k.at] - address[i] - 1 if isinstance(insn.k, _Label) else insn.k
            offsets: list[int] = []
            trampolines: list[int] = []
            for branch in ("jt", "jf"):
                target = getattr(insn, branch)
                if target is None:
                    offsets.append(0)
                elif (i, branch) in far:
                    offsets.append(len(trampolines))
                    trampolines.append(address[target.at])
                else:
                    offsets.append(address[target.at] - address[i] - 1)
            out.append(Instruction(insn.code, offsets[0], offsets[1], k))
            comments.append(insn.comment)
            for n, target_address in enumerate(trampolines):
                out.append(Instruction(_JA, 0, 0, target_address - (address[i] + 1 + n) - 1))
                comments.append("the jump above, beyond 8 bits")
        return out, comments


def _compare(p: _Program, c: _Comparison, passed: _Label, failed: _Label, comment: str) -> None:
    """Jump to `passed` or `failed` on a 64-bit `args[arg] op value`, high word first."""
    negated = {"SCMP_CMP_NE": "SCMP_CMP_EQ", "SCMP_CMP_LT": "SCMP_CMP_GE", "SCMP_CMP_LE": "SCMP_CMP_GT"}
    if c.op in negated:  # a != b is not (a == b); a < b is not (a >= b); a <= b is not (a > b)
        _compare(p, c._replace(op=negated[c.op]), failed, passed, comment)
        return
    masked = c.op == "SCMP_CMP_MASKED_EQ"
    value, mask = (c.value_two, c.value) if masked else (c.value, _U64)
    low_word = _Label()
    p.emit(_LD, _native.OFFSET_ARG_HIGH[c.arg], comment=f"{comment}args[{c.arg}]: high word")
    if masked:
        p.emit(_AND, mask >> 32)
    if c.op in ("SCMP_CMP_GT", "SCMP_CMP_GE"):  # a higher high word decides at once
        equal_high = _Label()
        p.emit(_JGT, value >> 32, passed, equal_high)
        p.place(equal_high)
    p.emit(_JEQ, value >> 32, low_word, failed)
    p.place(low_word)
    p.emit(_LD, _native.OFFSET_ARG_LOW[c.arg], comment=f"args[{c.arg}]: low word")
    if masked:
        p.emit(_AND, mask & _U32)
    p.emit({"SCMP_CMP_GT": _JGT, "SCMP_CMP_GE": _JGE}.get(c.op, _JEQ), value & _U32, passed, failed)


def _block(p: _Program, name: str, rules: list[_Rule], otherwise: int) -> None:
    """`name`'s comparing rules in order, the first that holds deciding; else `otherwise`."""
    for r, rule in enumerate(rules):
        last_rule = r + 1 == len(rules)
        next_rule = p.ret(otherwise) if last_rule else _Label()
        for c, comparison in enumerate(rule.comparisons):
            last = c + 1 == len(rule.comparisons)
            passed = p.ret(rule.ret) if last else _Label()
            say = f"{name} rule {r + 1}: {comparison.op[9:].lower()} {comparison.value:#x}" + (
                f" -> {comparison.value_two:#x}" if comparison.op == "SCMP_CMP_MASKED_EQ" else "") + ", "
            _compare(p, comparison, passed, next_rule, say if c == 0 else "")
            if not last:
                p.place(passed)
        if not last_rule:
            p.place(next_rule)


class _Segment(NamedTuple):
    start: int  # the first number of a run of numbers with one verdict
    target: _Label
    names: list[str]


def _search(p: _Program, segments: list[_Segment], entry: _Label | None) -> None:
    """A `jge` tree over the segments' bounds, each leaf a jump to its segment's target."""
    if entry is not None:
        p.place(entry)
    mid = len(segments) // 2
    left, right = segments[:mid], segments[mid:]
    below = left[0].target if len(left) == 1 else _Label()
    above = right[0].target if len(right) == 1 else _Label()
    p.emit(_JGE, right[0].start, above, below,
           comment=f"nr >= {right[0].start}" + (f": {', '.join(right[0].names[:3])}" if right[0].names else "")
           + (", ..." if len(right[0].names) > 3 else ""))
    if len(left) > 1:
        _search(p, left, below)
    if len(right) > 1:
        _search(p, right, above)


def compile_filter(profile: Mapping[str, object]) -> Filter:
    """The BPF program for an OCI `linux.seccomp` profile (see the module's docstring).

    ValueError or TypeError, naming the field, for anything the profile gets
    wrong (an unknown action or operator, an argument index above 5, an errno
    above 4095, a name given rules without `args` of two different actions)
    and for a program longer than the kernel takes (BPF_MAXINSNS).
    """
    if not isinstance(profile, Mapping):
        raise TypeError(f"seccomp: the profile must be a dict (OCI linux.seccomp), not {type(profile).__name__}")
    if not _native.AUDIT_ARCH:
        raise OsvirtError("seccomp: osvirt has no system-call table for this machine (x86_64 and aarch64 only)")
    default, rules = _rules(profile)
    p = _Program()
    targets: dict[int, tuple[str, _Label]] = {}
    blocks: list[tuple[_Label, str, list[_Rule], int]] = []
    for name, its in rules.items():
        if name not in SYSCALLS:
            continue
        plain = {rule.ret for rule in its if not rule.comparisons}
        if len(plain) > 1:
            raise ValueError(f"seccomp: {name} has rules without args of different actions: "
                             f"{sorted(map(_action_name, plain))}")
        otherwise = plain.pop() if plain else default
        comparing = [rule for rule in its if rule.comparisons]
        if comparing:
            blocks.append((_Label(), name, comparing, otherwise))
            targets[SYSCALLS[name]] = name, blocks[-1][0]
        elif otherwise != default:
            targets[SYSCALLS[name]] = name, p.ret(otherwise)
    default_ret, kill = p.ret(default), p.ret(RET["KILL_PROCESS"])
    segments: list[_Segment] = []
    following = 0  # the number after the last segment's run
    for nr in sorted(targets):
        name, target = targets[nr]
        if nr != following:
            segments.append(_Segment(following, default_ret, []))
        if segments and nr == following and segments[-1].target is target:
            segments[-1].names.append(name)
        else:
            segments.append(_Segment(nr, target, [name]))
        following = nr + 1
    segments.append(_Segment(following, default_ret, []))

    native, search = _Label(), _Label()
    p.emit(_LD, _native.OFFSET_ARCH, comment="seccomp_data.arch")
    p.emit(_JEQ, _native.AUDIT_ARCH, native, kill,
           comment=f"{_native.AUDIT_ARCH_NAMES.get(_native.AUDIT_ARCH, 'this build')}, else killed")
    p.place(native)
    p.emit(_LD, _native.OFFSET_NR, comment="seccomp_data.nr")
    if _native.X32_SYSCALL_BIT:
        x32 = _Label()
        p.emit(_JGE, _native.X32_SYSCALL_BIT, x32, search, comment="__X32_SYSCALL_BIT or above: x32's numbers")
        p.place(x32)
        p.emit(_JEQ, _U32, default_ret, kill, comment="nr -1: a tracer skipping the call, not a call")
    p.place(search)
    if len(segments) == 1:
        p.emit(_JA, default_ret, comment="no call has a verdict of its own")
    else:
        _search(p, segments, None)
    for label, name, comparing, otherwise in sorted(blocks, key=lambda b: SYSCALLS[b[1]]):
        p.place(label)
        _block(p, name, comparing, otherwise)
    instructions, comments = p.link()
    if len(instructions) > _native.BPF_MAXINSNS:
        raise ValueError(f"seccomp: the profile compiles to {len(instructions)} instructions; "
                         f"the kernel takes at most BPF_MAXINSNS ({_native.BPF_MAXINSNS})")
    return Filter(tuple(instructions), tuple(comments), tuple(sorted(name for name in rules if name not in SYSCALLS)))


def install(filter: Filter | bytes, flags: Sequence[str] = ()) -> None:
    """Put `filter` on the calling thread, for good: seccomp(SECCOMP_SET_MODE_FILTER).

    From then on every system call of this thread, of the threads and
    children it creates and of the programs it execs passes the filter, and
    any filter already there: the kernel runs them all, and the strictest
    verdict wins. Threads that already exist are not filtered. Without
    CAP_SYS_ADMIN the kernel wants no_new_privs first (a set-user-ID program
    must not run under a filter its owner did not choose): install sets it,
    and it cannot be unset. `filter` may also be a program's bytes (whole
    8-byte instructions, 1 to BPF_MAXINSNS of them), which the kernel checks.
    `flags` are `FLAGS` names (OCI's), e.g. SECCOMP_FILTER_FLAG_TSYNC.
    """
    if isinstance(flags, str) or any(flag not in FLAGS for flag in flags):
        raise ValueError(f"seccomp: flags {flags!r}: a sequence of {sorted(FLAGS)}")
    bits = 0
    for flag in flags:
        bits |= FLAGS[flag]
    program = filter.program if isinstance(filter, Filter) else filter
    if not isinstance(program, bytes):
        raise TypeError(f"seccomp: install takes a Filter or bytes, not {type(filter).__name__}")
    count, rest = divmod(len(program), 8)
    if rest or not 1 <= count <= _native.BPF_MAXINSNS:
        raise ValueError(f"seccomp: a program is 1 to {_native.BPF_MAXINSNS} instructions of 8 bytes, "
                         f"not {len(program)} bytes")
    if "CAP_SYS_ADMIN" not in env.capabilities():
        _native.prctl_set_no_new_privs()
    _native.seccomp_set_mode_filter(program, bits)
