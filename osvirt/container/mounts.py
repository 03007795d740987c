"""The container's filesystem: mounts in a mount namespace of its own, then pivot_root.

A runtime assembles the root a container sees out of mounts, in a new mount
namespace (unshare(CLONE_NEWNS), with CAP_SYS_ADMIN or in a user namespace of
its own) so that the host sees none of them, in this order:

1. `make_private("/")`: a new namespace starts with copies of the host's
   mounts in the host's peer groups, so a mount made under a shared one would
   propagate back to the host. MS_PRIVATE|MS_REC cuts every such tie.
2. A root: the caller's `rootfs` directory, or `host_usr_root()`, a tmpfs
   holding read-only binds of the host's /usr, its /bin, /lib... links or
   directories, and the /etc files a program reads.
3. `prepare_rootfs(root, ...)`: proc, sysfs (read-only), a minimal /dev
   (`minimal_dev`), a tmpfs /tmp, the caller's binds, then Docker's masked
   and read-only paths (`mask`, `read_only`).
4. `pivot_root(root)`: the root becomes `/` and the host's tree is unmounted
   from the namespace, so no path reaches it any more.

Every mount lives in the child's namespace and dies with its last process: a
SIGKILL leaves nothing on the host, so none is registered with osvirt.tracker.
The functions below mount in the namespace they are called in: call them in
a child's new mount namespace, never in the host's.

Arguments are checked before any system call: paths must be absolute str
without NUL, flags known MS_* (`MS`) or MNT_* (`MNT`) bits.
"""
import functools
import operator
import os
import stat
from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType
from typing import NamedTuple

from osvirt.container import _native
from osvirt.container.docker import MASKED_PATHS, READONLY_PATHS, SHM_SIZE_BYTES

__all__ = ["MS", "MNT", "DEVICES", "ETC_FILES", "MountInfo", "mountinfo", "mount", "umount2", "bind",
           "make_private", "pivot_root", "mask", "read_only", "minimal_dev", "prepare_rootfs", "host_usr_root"]

MS: Mapping[str, int] = MappingProxyType(_native.MS)
"""mount(2)'s flags without their MS_ prefix ("BIND", "REC", ...), valued from the headers."""
MNT: Mapping[str, int] = MappingProxyType(_native.MNT)
"""umount2(2)'s flags, by their full names (MNT_DETACH, UMOUNT_NOFOLLOW, ...)."""
_MS_ALL = functools.reduce(operator.or_, MS.values())
_MNT_ALL = functools.reduce(operator.or_, MNT.values())

# The character devices a container's /dev holds (runc's defaults but ptmx,
# which is a link to the devpts instance's own), bound from the host's.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# What a program run from the host's /usr reads in /etc: users and groups
# (id, ls -l), name resolution, and the loader's cache of library paths.
ETC_FILES = ("passwd", "group", "hosts", "resolv.conf", "nsswitch.conf", "ld.so.cache")
# The host's top-level directories that usrmerge makes links into /usr.
_USR_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


class MountInfo(NamedTuple):
    """One line of /proc/<pid>/mountinfo (see proc(5))."""
    mount_id: int
    parent_id: int
    root: str  # the directory of the filesystem mounted here ("/" unless a bind of a sub-tree)
    mount_point: str  # relative to the reader's root
    options: frozenset[str]  # per mount: ro, nosuid, ...
    propagation: frozenset[str]  # the optional fields: shared:N, master:N, propagate_from:N, unbindable
    fstype: str
    source: str
    super_options: frozenset[str]  # the filesystem's: for a v1 cgroup, its controllers among them


def _unescape(field: str) -> str:
    r"""A mountinfo path: the kernel writes space, tab, newline and backslash as \ooo."""
    if "\\" not in field:
        return field
    parts = field.split("\\")
    return parts[0] + "".join(chr(int(p[:3], 8)) + p[3:] for p in parts[1:])


def _mountinfo_lines(path: str) -> list[str]:
    with open(path) as f:
        return [line for line in f.read().split("\n") if line]  # not splitlines: \x1c is a path's byte


def mountinfo(path: str = "/proc/self/mountinfo", fstypes: Collection[str] | None = None) -> list[MountInfo]:
    """The mounts of a mount namespace as its process sees them, in the kernel's order (parents first);
    with `fstypes`, only the mounts of those filesystem types."""
    rows = []
    for line in _mountinfo_lines(path):
        if fstypes is not None:
            start = line.index(" - ") + 3
            if line[start:line.index(" ", start)] not in fstypes:
                continue
        fields = line.split()
        sep = fields.index("-", 6)
        rows.append(MountInfo(int(fields[0]), int(fields[1]), _unescape(fields[3]), _unescape(fields[4]),
                              frozenset(fields[5].split(",")), frozenset(fields[6:sep]),
                              fields[sep + 1], _unescape(fields[sep + 2]), frozenset(fields[sep + 3].split(","))))
    return rows


def _mounts_under(point: str) -> list[str]:
    """The mount points of the newest mount on `point` (a real path) and of every mount under it, in
    mountinfo's order: what an rbind onto `point` made. Only the three fields it needs are read."""
    rows = [line.split(" ", 5)[:5] for line in _mountinfo_lines("/proc/self/mountinfo")]
    tops = [row[0] for row in rows if _unescape(row[4]) == point]
    points = [point]
    below = set(tops[-1:])
    for mount_id, parent_id, _, _, where in rows:  # parents come before their children
        if parent_id in below:
            below.add(mount_id)
            points.append(_unescape(where))
    return points


# -- checks: ValueError or TypeError before any system call ---------------------
def _text(facility: str, what: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{facility}: {what} must be a str, not {type(value).__name__}")
    if "\0" in value:
        raise ValueError(f"{facility}: {what} {value!r} holds a NUL byte")
    return value


def _path(facility: str, what: str, value: object) -> str:
    path = _text(facility, what, value)
    if not os.path.isabs(path):
        raise ValueError(f"{facility}: {what} {path!r} must be an absolute path")
    return path


def _flags(facility: str, flags: object, kind: str, every: int) -> int:
    if not isinstance(flags, int) or isinstance(flags, bool):
        raise TypeError(f"{facility}: flags must be an int, not {type(flags).__name__}")
    if flags < 0 or flags & ~every:
        raise ValueError(f"{facility}: flags {flags:#x} hold bits no {kind} flag has")
    return flags


def _names(flags: int) -> str:
    return "|".join(f"MS_{name}" for name, bit in MS.items() if flags & bit) or "0"


# -- the system calls --------------------------------------------------------------
def mount(source: str | None, target: str, fstype: str | None = None, flags: int = 0,
          data: str | None = None) -> None:
    """mount(2): `source` (a device, a directory to bind, or a free label) on `target`.

    `flags` is an OR of `MS` values; `data` the filesystem's options
    ("mode=755,size=64k"). Raises the OSError the kernel gave, naming the call.
    """
    # The checks, inline where they pass (a container's start makes some forty mounts); the check
    # functions name what fails.
    if type(target) is not str or "\0" in target or not target.startswith("/"):
        _path("mount", "target", target)
    for what, value in (("source", source), ("fstype", fstype), ("data", data)):
        if value is not None and (type(value) is not str or "\0" in value):
            _text("mount", what, value)
    if type(flags) is not int or flags < 0 or flags & ~_MS_ALL:
        _flags("mount", flags, "MS_*", _MS_ALL)
    _native.mount(source, target, fstype, flags, data, lambda: f"mount({source!r}, {target!r}, {fstype!r}, "
                  f"{_names(flags)}" + (f", {data!r})" if data else ")"))


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2): unmount what is mounted on `target`; MNT_DETACH now, even if it is busy."""
    _path("umount2", "target", target)
    _flags("umount2", flags, "MNT_*", _MNT_ALL)
    _native.umount2(target, flags, f"umount2({target!r}, {flags:#x})")


def _kept_flags(path: str) -> int:
    """The per-mount flags a remount of `path` must restate: nosuid, nodev, noexec and the atime mode.

    A remount sets every per-mount flag anew, and the kernel refuses (EPERM)
    to clear those it locked on a mount a less privileged user namespace
    inherited (MNT_LOCK_NOSUID, ...), so a read-only remount keeps them as
    statvfs(3) shows them. No atime flag means strictatime.
    """
    shown = os.statvfs(path).f_flag
    kept = 0
    for st, ms in ((os.ST_NOSUID, "NOSUID"), (os.ST_NODEV, "NODEV"), (os.ST_NOEXEC, "NOEXEC"),
                   (os.ST_NOATIME, "NOATIME"), (os.ST_NODIRATIME, "NODIRATIME"), (os.ST_RELATIME, "RELATIME")):
        if shown & st:
            kept |= MS[ms]
    return kept if shown & (os.ST_NOATIME | os.ST_RELATIME) else kept | MS["STRICTATIME"]


def _remount_read_only(path: str, recursive: bool, flags: int = 0) -> None:
    """Make the mount on `path` read-only (with `flags`, further MS_* flags of the bind, on it alone),
    and with `recursive` every mount under it.

    A bind remount changes one mount (the kernel ignores MS_REC there), so the
    mounts an rbind brought along are found in mountinfo: the newest mount on
    `path` and its descendants. Where the kernel has mount_setattr(2) (5.12),
    one call with AT_RECURSIVE does the whole tree, and no mountinfo is read.
    """
    if recursive and _native.mount_setattr(path, _native.AT_RECURSIVE, _native.MOUNT_ATTR["RDONLY"], 0,
                                           f"mount_setattr({path!r}, AT_RECURSIVE, MOUNT_ATTR_RDONLY)"):
        points = [path] if flags else []
    else:  # mountinfo names mount points by their real paths
        points = _mounts_under(os.path.realpath(path)) if recursive else [path]
    for i, point in enumerate(points):
        mount(None, point, None, MS["BIND"] | MS["REMOUNT"] | MS["RDONLY"] | (0 if i else flags) | _kept_flags(point))


def bind(src: str, dst: str, read_only: bool = False, recursive: bool = True) -> None:
    """Bind `src` (a directory or a file) on `dst`, of the same kind; with `recursive`, the mounts under it too.

    A bind takes the flags of its source mount: read-only needs a second call,
    mount(MS_BIND|MS_REMOUNT|MS_RDONLY), on each mount the bind made.
    """
    _path("bind", "src", src)
    _path("bind", "dst", dst)
    mount(src, dst, None, MS["BIND"] | (MS["REC"] if recursive else 0))
    if read_only:
        _remount_read_only(dst, recursive)


def make_private(path: str = "/", recursive: bool = True) -> None:
    """MS_PRIVATE (and MS_REC): mounts and unmounts under `path` no longer propagate to or from other namespaces."""
    _path("make_private", "path", path)
    mount(None, path, None, MS["PRIVATE"] | (MS["REC"] if recursive else 0))


def pivot_root(new_root: str) -> None:
    """Make `new_root` (a mount point) this mount namespace's `/`, and unmount the old root.

    runc's way: pivot_root(".", ".") from inside new_root stacks the old root
    on top of the new one, and umount2(".", MNT_DETACH) takes it off. No
    put_old directory is needed in the new root, so a read-only root works,
    and none is left in it. The old root is made MS_SLAVE first, so the
    unmount cannot propagate to a peer in the host's namespace. The current
    directory ends at the new `/`.
    """
    _path("pivot_root", "new_root", new_root)
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        new = os.open(new_root, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fchdir(new)
            _native.pivot_root(".", ".")
        finally:
            os.close(new)
        os.fchdir(old)  # the kernel does not promise where "." is after pivot_root: the old root, surely
        _native.mount(None, ".", None, MS["SLAVE"] | MS["REC"], None, "mount(old root, MS_SLAVE|MS_REC)")
        _native.umount2(".", MNT["MNT_DETACH"], "umount2(old root, MNT_DETACH)")
    finally:
        os.close(old)
    os.chdir("/")


# -- what a container's root holds ------------------------------------------------
def _paths(facility: str, paths: Iterable[str]) -> list[str]:
    if isinstance(paths, str):
        raise TypeError(f"{facility}: paths must be an iterable of paths, not one str")
    return [_path(facility, "path", p) for p in paths]


def mask(paths: Iterable[str]) -> None:
    """Hide each path: a file under a bind of /dev/null, a directory under an empty read-only tmpfs.

    A path that does not exist is skipped (a kernel without that file).
    """
    for path in _paths("mask", paths):
        try:
            is_dir = stat.S_ISDIR(os.stat(path).st_mode)
        except FileNotFoundError:
            continue
        if is_dir:
            mount("tmpfs", path, "tmpfs", MS["RDONLY"])
        else:
            bind("/dev/null", path, recursive=False)


def read_only(paths: Iterable[str]) -> None:
    """Make each path (and every mount under it) read-only: bound on itself, remounted read-only.

    A path that does not exist is skipped.
    """
    for path in _paths("read_only", paths):
        if os.path.exists(path):
            bind(path, path, read_only=True)


def _touch(path: str) -> None:
    """An empty file for a file bind to land on (a bind needs a target of its source's kind)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def minimal_dev(root: str) -> None:
    """A tmpfs on root/dev holding only what a container needs, as Docker's /dev does.

    The devices (`DEVICES`) are binds of the host's nodes, never mknod: a
    bind works in a user namespace (where mknod is EPERM, and a node on a
    tmpfs mounted there would not open: SB_I_NODEV) as well as with
    CAP_MKNOD, and gives the host's own major:minor and mode. ptmx is a link
    to pts/ptmx, the multiplexer of a new devpts instance: this container's
    ptys are numbered from 0 and the host's are not there. /dev/shm is a
    tmpfs of SHM_SIZE_BYTES, /dev/mqueue the mqueue filesystem of this IPC
    namespace; fd, stdin, stdout and stderr link into /proc/self/fd.
    """
    dev = _path("minimal_dev", "root", root).rstrip("/") + "/dev"
    os.makedirs(dev, exist_ok=True)
    mount("tmpfs", dev, "tmpfs", MS["NOSUID"] | MS["STRICTATIME"], "mode=755,size=65536k")
    for name in DEVICES:
        _touch(f"{dev}/{name}")
        bind(f"/dev/{name}", f"{dev}/{name}", recursive=False)
    for name in ("pts", "shm", "mqueue"):
        os.mkdir(f"{dev}/{name}", 0o755)
    mount("devpts", f"{dev}/pts", "devpts", MS["NOSUID"] | MS["NOEXEC"], "newinstance,ptmxmode=0666,mode=0620")
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    mount("shm", f"{dev}/shm", "tmpfs", MS["NOSUID"] | MS["NODEV"] | MS["NOEXEC"], f"mode=1777,size={SHM_SIZE_BYTES}")
    mount("mqueue", f"{dev}/mqueue", "mqueue", MS["NOSUID"] | MS["NODEV"] | MS["NOEXEC"])
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")


def _bind_target(src: str, dst: str) -> None:
    """Make `dst` (and its parents) of `src`'s kind, for a bind of `src` to land on."""
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst):
            _touch(dst)


def prepare_rootfs(rootfs: str, *, binds: Iterable[tuple[str, str, bool]] = (),
                   readonly_rootfs: bool = False) -> None:
    """Assemble under `rootfs` what a container sees, ready for pivot_root(rootfs).

    rootfs becomes a mount point (bound on itself: pivot_root needs one),
    then gets proc, sysfs read-only, `minimal_dev`, a tmpfs /tmp, the
    `binds` ((host path, container path, read_only) triples, as
    docker.oci_config takes them), Docker's masked paths and its read-only
    ones; with `readonly_rootfs`, rootfs itself last (the mounts on it stay
    as they are). In a user namespace, proc needs a PID namespace of its own
    and sysfs a network namespace, both owned by it; mqueue an IPC one.
    """
    root = _path("prepare_rootfs", "rootfs", rootfs).rstrip("/") or "/"
    checked = []
    for entry in binds:
        host, guest, ro = entry
        checked.append((_path("prepare_rootfs", "bind's host path", host),
                        root + _path("prepare_rootfs", "bind's container path", guest), bool(ro)))
    bind(root, root)
    for name in ("proc", "sys", "tmp"):
        os.makedirs(f"{root}/{name}", exist_ok=True)
    mount("proc", f"{root}/proc", "proc", MS["NOSUID"] | MS["NODEV"] | MS["NOEXEC"])
    mount("sysfs", f"{root}/sys", "sysfs", MS["NOSUID"] | MS["NODEV"] | MS["NOEXEC"] | MS["RDONLY"])
    minimal_dev(root)
    mount("tmpfs", f"{root}/tmp", "tmpfs", MS["NOSUID"] | MS["NODEV"], "mode=1777")
    for host, target, ro in checked:
        _bind_target(host, target)
        bind(host, target, read_only=ro)
    mask(root + p for p in MASKED_PATHS)
    read_only(root + p for p in READONLY_PATHS)
    if readonly_rootfs:
        _remount_read_only(root, recursive=False)


def host_usr_root(where: str = "/mnt") -> str:
    """A root made of the host's programs, read-only: for a container without a rootfs; returns `where`.

    A tmpfs on `where` holds a read-only bind of the host's /usr; /bin, /sbin,
    /lib... as the host has them (usrmerge's links to usr/..., copied as
    links, or directories, bound read-only); and read-only binds of the
    host's `ETC_FILES` that exist. `prepare_rootfs(where)` adds the private
    /proc, /sys, /dev and /tmp.

    `where` is an existing directory, covered in this namespace only (hidden
    from no one else, and nothing is made on the host's disk): what the host
    has under it is out of reach from then on, so binds cannot come from
    there. The default, /mnt, is FHS's place for a temporary mount.
    """
    root = _path("host_usr_root", "where", where).rstrip("/")
    if not root:
        raise ValueError("host_usr_root: where must not be / (the new root goes on a directory of the old)")
    mount("tmpfs", root, "tmpfs", MS["NOSUID"] | MS["NODEV"], "mode=755")
    os.mkdir(f"{root}/usr", 0o755)
    bind("/usr", f"{root}/usr", read_only=True)
    for name in _USR_LINKS:
        host = f"/{name}"
        if os.path.islink(host):
            os.symlink(os.readlink(host), f"{root}/{name}")
        elif os.path.isdir(host):
            os.mkdir(f"{root}/{name}", 0o755)
            bind(host, f"{root}/{name}", read_only=True)
    os.mkdir(f"{root}/etc", 0o755)
    for name in ETC_FILES:
        if os.path.exists(f"/etc/{name}"):
            _touch(f"{root}/etc/{name}")
            bind(f"/etc/{name}", f"{root}/etc/{name}", read_only=True, recursive=False)
    return root
