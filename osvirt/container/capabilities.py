"""Capabilities: root's privileges split into ~40 named pieces, in five sets a process holds.

The kernel checks a capability, not uid 0: CAP_SYS_ADMIN for sethostname,
CAP_NET_BIND_SERVICE for a port below 1024, and so on (`CAPABILITIES`, name
-> number, from <linux/capability.h>). A process holds five sets of them,
which /proc/PID/status shows as masks (`sets`):

    effective    what the kernel checks now
    permitted    the ceiling of effective (capset may lower it, never raise it)
    inheritable  kept over execve for a program whose file grants them too
    bounding     the ceiling of what any execve may ever grant (prctl PR_CAPBSET_DROP)
    ambient      kept over execve of a plain program by a non-root uid (PR_CAP_AMBIENT)

`capget`/`capset` read and write the first three (the 64-bit version 3
layout), `drop_bounding` and `ambient_raise`/`ambient_lower`/`ambient_clear`
the last two, `set_keepcaps` keeps permitted over a setuid away from root.
`limit_to` leaves a process with exactly the sets a container is given, as a
runtime does before exec: Docker's are `osvirt.container.docker.CAPABILITIES`.

A capability counts in the user namespace the process is in: root of a new
user namespace holds all of them there, and none over the host's objects.
"""
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from osvirt import env
from osvirt.container import _native

__all__ = ["CAPABILITIES", "CAP_LAST_CAP", "KERNEL_LAST_CAP", "ALL", "Sets", "mask", "names", "sets", "capget", "capset",
           "drop_bounding", "ambient_raise", "ambient_lower", "ambient_clear", "set_keepcaps", "limit_to"]

CAPABILITIES: Mapping[str, int] = _native.CAPABILITIES
"""name -> number of every capability this build's <linux/capability.h> defines."""
_NAMES = {nr: name for name, nr in CAPABILITIES.items()}
CAP_LAST_CAP: int = _native.CAP_LAST_CAP
"""The highest number the headers know."""


def _kernel_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:  # no /proc/sys here: the headers' answer
        return CAP_LAST_CAP


KERNEL_LAST_CAP: int = _kernel_last_cap()
"""The highest number the running kernel knows (/proc/sys/kernel/cap_last_cap): a kernel newer than the
headers has bits `names` cannot name; one older refuses the numbers above it (EINVAL)."""
ALL: int = (1 << KERNEL_LAST_CAP + 1) - 1
"""The mask of every capability the running kernel knows."""

# The /proc/PID/status lines, and the Sets field each fills.
_STATUS = {"CapInh": "inheritable", "CapPrm": "permitted", "CapEff": "effective", "CapBnd": "bounding",
           "CapAmb": "ambient"}


class Sets(NamedTuple):
    """A process's five capability sets, as names."""
    inheritable: frozenset[str]
    permitted: frozenset[str]
    effective: frozenset[str]
    bounding: frozenset[str]
    ambient: frozenset[str]


def _known(caps: Iterable[str], facility: str) -> frozenset[str]:
    if isinstance(caps, str):
        raise TypeError(f"{facility}: capabilities must be a collection of names, not the str {caps!r}")
    found = frozenset(caps)
    unknown = [cap for cap in found if cap not in CAPABILITIES]
    if unknown:
        raise ValueError(f"{facility}: {sorted(unknown)} not capabilities (osvirt.container.capabilities."
                         "CAPABILITIES lists them)")
    beyond = [cap for cap in found if CAPABILITIES[cap] > KERNEL_LAST_CAP]
    if beyond:
        raise ValueError(f"{facility}: {sorted(beyond)} unknown to this kernel (cap_last_cap {KERNEL_LAST_CAP})")
    return found


def mask(caps: Iterable[str]) -> int:
    """The bit mask of capability names, as /proc/PID/status and capset write them."""
    return sum(1 << CAPABILITIES[cap] for cap in _known(caps, "mask"))


def names(bits: int) -> frozenset[str]:
    """The names of the capabilities in a mask."""
    return frozenset(name for name, nr in CAPABILITIES.items() if bits >> nr & 1)


def sets(pid: int = 0) -> Sets:
    """The five sets of process `pid` (0: this one), from /proc/PID/status (env's reader)."""
    masks = env.capability_masks(pid)
    return Sets(**{field: names(masks[line]) for line, field in _STATUS.items()})


def capget(pid: int = 0) -> Sets:
    """capget(2): effective, permitted and inheritable of `pid` (0: this one); bounding and ambient empty
    (capget does not report them: `sets` reads all five)."""
    effective, permitted, inheritable = _native.capget(pid)
    return Sets(names(inheritable), names(permitted), names(effective), frozenset(), frozenset())


def capset(effective: Iterable[str], permitted: Iterable[str], inheritable: Iterable[str]) -> None:
    """capset(2) on this process (every thread must do its own).

    The kernel lets permitted only shrink, effective lie within permitted,
    and inheritable grow only within the bounding set with CAP_SETPCAP
    (within permitted without it).
    """
    e, p, i = (_known(s, "capset") for s in (effective, permitted, inheritable))
    if not e <= p:
        raise ValueError(f"capset: effective holds {sorted(e - p)}, not in permitted")
    _native.capset(mask(e), mask(p), mask(i), lambda: f"capset(effective {_short(e)}, permitted {_short(p)}, "
                   f"inheritable {_short(i)})", "permitted may only shrink; inheritable grow only within "
                   "bounding, with CAP_SETPCAP")


def _short(caps: frozenset[str]) -> str:
    return "{" + ", ".join(sorted(cap[4:] for cap in caps)) + "}"


def drop_bounding(caps: Iterable[str]) -> None:
    """prctl(PR_CAPBSET_DROP) each of `caps`: no later execve can grant them (needs CAP_SETPCAP)."""
    for cap in sorted(_known(caps, "drop_bounding"), key=CAPABILITIES.__getitem__):
        _native.capbset_drop(CAPABILITIES[cap], f"prctl(PR_CAPBSET_DROP, {cap})")


def ambient_raise(caps: Iterable[str]) -> None:
    """prctl(PR_CAP_AMBIENT_RAISE) each: kept over execve of a program without file capabilities."""
    for cap in sorted(_known(caps, "ambient_raise"), key=CAPABILITIES.__getitem__):
        _native.cap_ambient("RAISE", CAPABILITIES[cap], f"prctl(PR_CAP_AMBIENT_RAISE, {cap})",
                            "must be in both permitted and inheritable, and SECBIT_NO_CAP_AMBIENT_RAISE unset")


def ambient_lower(caps: Iterable[str]) -> None:
    """prctl(PR_CAP_AMBIENT_LOWER) each."""
    for cap in sorted(_known(caps, "ambient_lower"), key=CAPABILITIES.__getitem__):
        _native.cap_ambient("LOWER", CAPABILITIES[cap], f"prctl(PR_CAP_AMBIENT_LOWER, {cap})", None)


def ambient_clear() -> None:
    """prctl(PR_CAP_AMBIENT_CLEAR_ALL)."""
    _native.cap_ambient("CLEAR_ALL", 0, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)", None)


def set_keepcaps(keep: bool) -> None:
    """prctl(PR_SET_KEEPCAPS): keep permitted when every uid changes from 0 to non-zero.

    Effective and ambient are cleared all the same (a program written before
    ambient capabilities expects setuid away from root to drop them): capset
    and raise them again after the setuid. execve clears the flag.
    """
    if not isinstance(keep, bool):
        raise TypeError(f"prctl(PR_SET_KEEPCAPS): keep must be a bool, not {type(keep).__name__}")
    _native.set_keepcaps(keep)


def limit_to(bounding: Iterable[str], effective: Iterable[str] | None = None,
             permitted: Iterable[str] | None = None, inheritable: Iterable[str] | None = None,
             ambient: Iterable[str] | None = None) -> None:
    """Leave this process with exactly these five sets, as OCI's process.capabilities lists them.

    A set left None is `bounding`'s. In runc's order: every capability
    outside `bounding` dropped from it (while CAP_SETPCAP still allows), the
    ambient set cleared, capset, then ambient raised. The bounding set is
    the process's for good; the rest, a later execve recomputes from it.
    """
    b = _known(bounding, "limit_to")
    e, p, i, a = (b if s is None else _known(s, "limit_to") for s in (effective, permitted, inheritable, ambient))
    if not e <= p:
        raise ValueError(f"limit_to: effective holds {sorted(e - p)}, not in permitted")
    if not a <= p & i:
        raise ValueError(f"limit_to: ambient holds {sorted(a - (p & i))}, not in both permitted and inheritable")
    # By number, up to the kernel's last: a capability newer than the headers is dropped too. Only what
    # is held: PR_CAPBSET_DROP wants CAP_SETPCAP even for one already gone.
    held, keep = env.capability_masks()["CapBnd"], mask(b)
    for nr in range(KERNEL_LAST_CAP + 1):
        if held >> nr & 1 and not keep >> nr & 1:
            _native.capbset_drop(nr, f"prctl(PR_CAPBSET_DROP, {_NAMES.get(nr, nr)})")
    ambient_clear()
    capset(e, p, i)
    ambient_raise(a)
