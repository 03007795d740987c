"""The container's root filesystem, built in its own mount namespace: the spec's mounts, /dev, the cgroup mount.

Every target is resolved inside the root (`secure_join`: a symlink in the
root leads nowhere outside it). Binds take their options through a remount,
as the kernel needs; where a user namespace forbids a mount (sysfs, mqueue,
cgroup) the host's is bound instead, as runc does.
"""
import errno
import os

from osvirt.container import cgroups as _cgroups
from osvirt.container import mounts as _mounts
from osvirt.container import oci
from osvirt.container._native import MS

__all__ = ["HOST_ROOT_ANNOTATION", "secure_join", "mount_one", "default_devices", "write_file"]

HOST_ROOT_ANNOTATION = "org.osvirt.root"
"""An annotation: "host-usr" makes the root a read-only view of the host's /usr (mounts.host_usr_root),
built on root.path, instead of binding root.path."""


def secure_join(root: str, path: str) -> str:
    """`path` inside `root`, its symlinks resolved as if `root` were `/` (so none leads out of it)."""
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root + "/" + "/".join(resolved + [part])
        if os.path.islink(candidate):
            links += 1
            if links > 40:
                raise OSError(errno.ELOOP, "too many symbolic links", candidate)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return root + "/" + "/".join(resolved) if resolved else root


def _directory(path: str) -> None:
    """os.makedirs(path, exist_ok=True), one stat when it exists (a mount point mostly does)."""
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)


def _make_target(source: str | None, target: str, is_file: bool) -> None:
    if is_file:
        if not os.path.exists(target):
            _directory(os.path.dirname(target))
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    else:
        _directory(target)


_BIND_KEEP = MS["BIND"] | MS["REC"]


def _bind(source: str, target: str, flags: int, recursive: bool) -> None:
    _mounts.mount(source, target, None, MS["BIND"] | (MS["REC"] if recursive else 0))
    extra = flags & ~_BIND_KEEP & ~MS["REMOUNT"]
    # A bind takes its source's flags: the options need a remount; read-only, per mount the rbind made.
    if extra & MS["RDONLY"]:
        _mounts._remount_read_only(target, recursive, extra & ~MS["RDONLY"])
    elif extra:
        _mounts.mount(None, target, None, MS["BIND"] | MS["REMOUNT"] | extra | _mounts._kept_flags(target))


def _cgroup_mount(target: str, flags: int, host: list[_cgroups.Mount] | None = None) -> None:
    """/sys/fs/cgroup as runc makes it: cgroup2 on a v2-only host, else a tmpfs with each v1 hierarchy
    (and the unified one) mounted again; where the kernel refuses (a user namespace), binds of the host's.
    `host`: the cgroup mounts of the namespace this one copied, as its creator read them (else read here)."""
    hierarchies = [m for m in (_cgroups.cgroup_mounts() if host is None else host)
                   if m.point == "/sys/fs/cgroup" or m.point.startswith("/sys/fs/cgroup/")]
    plain = flags & (MS["NOSUID"] | MS["NODEV"] | MS["NOEXEC"] | MS["RELATIME"])
    if any(m.version == 2 and m.point == "/sys/fs/cgroup" for m in hierarchies):
        try:
            _mounts.mount("cgroup2", target, "cgroup2", flags)
        except PermissionError:
            _bind("/sys/fs/cgroup", target, flags, True)
        return
    _mounts.mount("tmpfs", target, "tmpfs", plain, "mode=755")
    for m in hierarchies:
        if m.point == "/sys/fs/cgroup":
            continue
        sub = target + m.point[len("/sys/fs/cgroup"):]
        os.makedirs(sub, exist_ok=True)  # a hierarchy may be mounted twice on one point
        options = None
        if m.version == 1:  # its controllers, or for a named hierarchy (name=systemd) its name
            options = ",".join(sorted(m.controllers)) or f"none,name={os.path.basename(m.point)}"
        try:
            _mounts.mount("cgroup", sub, "cgroup" if m.version == 1 else "cgroup2", flags, options)
        except OSError:
            _bind(m.point, sub, flags, False)
    if flags & MS["RDONLY"]:
        _mounts.mount(None, target, None, MS["REMOUNT"] | MS["RDONLY"] | plain)


def mount_one(root: str, m: oci.Mount, cgroup_mounts: list[_cgroups.Mount] | None = None) -> None:
    """Mount `m` in `root` (its destination resolved in it); `cgroup_mounts`, see _cgroup_mount."""
    target = secure_join(root, m.destination)
    flags = m.flags
    if m.is_bind:
        source = m.resolved_source or ""
        _make_target(source, target, not os.path.isdir(source))
        _bind(source, target, flags, m.recursive)
    elif m.type == "cgroup":
        _directory(target)
        _cgroup_mount(target, flags, cgroup_mounts)
    else:
        _directory(target)
        try:
            _mounts.mount(m.source or m.type, target, m.type, flags, m.data)
        except PermissionError:
            if m.type == "sysfs":  # a user namespace without a network namespace of its own: runc binds /sys
                _bind("/sys", target, flags, True)
            elif m.type == "mqueue":  # a user namespace without an IPC namespace of its own
                _bind("/dev/mqueue", target, flags, False)
            else:
                raise
        except OSError as e:
            if e.errno == errno.EINVAL and m.type == "devpts" and m.data and "gid=" in m.data:
                # gid=5 (tty) is not mapped in a rootless user namespace: `runc spec --rootless` drops it too
                data = ",".join(o for o in m.data.split(",") if not o.startswith("gid="))
                _mounts.mount(m.source or m.type, target, m.type, flags, data or None)
            else:
                raise
    for propagation in m.propagation:
        _mounts.mount(None, target, None, propagation)


def default_devices(root: str) -> None:
    """runc's default devices in root/dev, bound from the host's (a bind works rootless, mknod does not)."""
    dev = root + "/dev"
    _directory(dev)
    for name in _mounts.DEVICES:
        path = f"{dev}/{name}"
        present = os.path.lexists(path)
        if present and not os.path.isfile(path):
            continue
        if not os.path.exists(f"/dev/{name}"):
            continue
        if not present:  # the target of the bind (dev is made above)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
        _mounts.mount(f"/dev/{name}", path, None, MS["BIND"])
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx")):
        path = f"{dev}/{name}"
        if name == "ptmx" and os.path.lexists(path) and not os.path.islink(path):
            continue  # a ptmx node the spec bound: kept
        if not os.path.lexists(path):
            os.symlink(target, path)


def write_file(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
