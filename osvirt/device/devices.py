"""Devices as the kernel lists them: /dev nodes, /sys/dev and /proc/devices.

A device is a number pair (major:minor) of a kind (char or block). The node
in /dev is only a name for it; the kernel finds its driver by the number:
/proc/devices lists which driver registered each major, and sysfs
(/sys/dev/{char,block}/M:m) links to the device's directory, whose
`device/driver` link names the driver bound to the hardware behind it, and
whose `subsystem` link names its class (mem, tty, misc, block).
"""
import os
import stat
from typing import NamedTuple

__all__ = ["Device", "identify", "by_devt", "list_devices", "registered_drivers"]

KINDS = ("char", "block")


class Device(NamedTuple):
    """One device number and what the kernel says about it."""
    kind: str            # "char" or "block"
    major: int
    minor: int
    node: str | None     # the /dev path, when one names it
    registered: tuple[str, ...]  # driver names registered for the major in /proc/devices
    driver: str | None   # driver bound to the hardware (sysfs device/driver), if any
    subsystem: str | None
    sysfs: str | None    # the device's directory in sysfs, if it has one

    @property
    def devt(self) -> int:
        return os.makedev(self.major, self.minor)

    @property
    def number(self) -> str:
        return f"{self.major}:{self.minor}"

    @property
    def handled_by(self) -> str | None:
        """The bound driver, else the subsystem, else the major's registration."""
        return self.driver or self.subsystem or ", ".join(self.registered) or None


def registered_drivers(kind: str) -> dict[int, tuple[str, ...]]:
    """{major: (names...)} from /proc/devices for 'char' or 'block'."""
    _kind(kind)
    section = {"char": "Character devices:", "block": "Block devices:"}[kind]
    drivers: dict[int, tuple[str, ...]] = {}
    inside = False
    with open("/proc/devices") as f:
        for line in f:
            line = line.strip()
            if line.endswith(":"):
                inside = line == section
            elif line and inside:
                major, name = line.split(None, 1)
                drivers[int(major)] = drivers.get(int(major), ()) + (name,)
    return drivers


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"device kind must be one of {KINDS}, not {kind!r}")
    return kind


def _link_name(path: str) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def _uevent(sysfs: str) -> dict[str, str]:
    values = {}
    try:
        with open(os.path.join(sysfs, "uevent")) as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                values[key] = value
    except OSError:
        pass
    return values


def by_devt(kind: str, devt: int, node: str | None = None) -> Device:
    """The Device with number `devt` (os.makedev(major, minor)) of `kind`."""
    _kind(kind)
    if type(devt) is not int or devt < 0:
        raise ValueError(f"device number must be a non-negative int, not {devt!r}")
    major, minor = os.major(devt), os.minor(devt)
    link = f"/sys/dev/{kind}/{major}:{minor}"
    sysfs = os.path.realpath(link) if os.path.exists(link) else None
    if sysfs and node is None and _uevent(sysfs).get("DEVNAME"):
        node = "/dev/" + _uevent(sysfs)["DEVNAME"]
    return Device(kind=kind, major=major, minor=minor, node=node,
                  registered=registered_drivers(kind).get(major, ()),
                  driver=_link_name(os.path.join(sysfs, "device", "driver")) if sysfs else None,
                  subsystem=_link_name(os.path.join(sysfs, "subsystem")) if sysfs else None,
                  sysfs=sysfs)


def identify(name: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> Device:
    """The Device behind a node: a path, or a name under /dev ('null', 'pts/3', 'kvm')."""
    if not isinstance(name, (str, bytes, os.PathLike)):
        raise TypeError(f"identify: name must be a path, not {type(name).__name__}")
    path = os.fsdecode(name)
    if not path:
        raise ValueError("identify: empty device name")
    if not os.path.isabs(path):
        path = os.path.join("/dev", path)
    st = os.stat(path)
    if stat.S_ISCHR(st.st_mode):
        kind = "char"
    elif stat.S_ISBLK(st.st_mode):
        kind = "block"
    else:
        raise ValueError(f"identify: {path} is not a device node (mode {stat.filemode(st.st_mode)})")
    return by_devt(kind, st.st_rdev, node=path)


def list_devices(kind: str | None = None) -> list[Device]:
    """Every device sysfs lists under /sys/dev/{char,block}, sorted by number."""
    kinds = KINDS if kind is None else (_kind(kind),)
    found = []
    for k in kinds:
        for entry in os.listdir(f"/sys/dev/{k}"):
            major, minor = map(int, entry.split(":"))
            found.append(by_devt(k, os.makedev(major, minor)))
    return sorted(found, key=lambda d: (d.kind, d.major, d.minor))
