"""The one module of osvirt.container that touches the C extension.

It hands the kernel a BPF program osvirt.container.seccomp has already
checked (whole 8-byte instructions, 1 to BPF_MAXINSNS of them), and turns
-1/errno into `kernel_error`. The numbers a filter compares come from the
headers through the cdef (csrc/seccomp.h); so do mount(2)'s MS_* and
umount2(2)'s MNT_* flags and mount_setattr(2)'s MOUNT_ATTR_* (csrc/mounts.h), for osvirt.container.mounts;
the CLONE_NEW* flags (csrc/namespaces.h) and every capability's number
(csrc/capabilities.h, a table osvirt/_build_native.py generates from
<linux/capability.h>'s macros); IFNAMSIZ and the IFF_* interface flags
(csrc/network.h), for osvirt.container.network.
"""
import errno
import os
import sys
from collections.abc import Callable
from types import MappingProxyType

from osvirt._native import ffi, lib
from osvirt.errors import kernel_error

# name -> number of every system call this build's headers know.
SYSCALLS: MappingProxyType[str, int] = MappingProxyType(
    {os.fsdecode(ffi.string(s.name)): s.nr for s in lib.osv_syscalls[0:lib.osv_syscall_count]})
AUDIT_ARCH: int = lib.OSV_AUDIT_ARCH  # this build's own (0: a machine osvirt has no table for)
X32_SYSCALL_BIT: int = lib.OSV_X32_SYSCALL_BIT  # 0 but on x86_64
AUDIT_ARCH_NAMES: dict[int, str] = {getattr(lib, name): name for name in (
    "AUDIT_ARCH_X86_64", "AUDIT_ARCH_I386", "AUDIT_ARCH_AARCH64", "AUDIT_ARCH_ARM")}
RET: dict[str, int] = {name: getattr(lib, f"SECCOMP_RET_{name}") for name in (
    "KILL_PROCESS", "KILL_THREAD", "TRAP", "ERRNO", "LOG", "ALLOW")}
RET_ACTION_FULL: int = lib.SECCOMP_RET_ACTION_FULL
RET_DATA: int = lib.SECCOMP_RET_DATA
BPF: dict[str, int] = {name: getattr(lib, f"BPF_{name}") for name in (
    "LD", "W", "ABS", "ALU", "AND", "JMP", "JA", "JEQ", "JGT", "JGE", "K", "RET")}
BPF_MAXINSNS: int = lib.BPF_MAXINSNS
# Offsets in struct seccomp_data of nr, arch, and each argument's low and
# high 32-bit words (a BPF load reads one word; which half comes first is
# the machine's byte order).
OFFSET_NR: int = ffi.offsetof("struct seccomp_data", "nr")
OFFSET_ARCH: int = ffi.offsetof("struct seccomp_data", "arch")
_args = ffi.offsetof("struct seccomp_data", "args")
_low_first = sys.byteorder == "little"
OFFSET_ARG_LOW: tuple[int, ...] = tuple(_args + 8 * i + (0 if _low_first else 4) for i in range(6))
OFFSET_ARG_HIGH: tuple[int, ...] = tuple(_args + 8 * i + (4 if _low_first else 0) for i in range(6))


def prctl_set_no_new_privs() -> None:
    if lib.osv_prctl_set_no_new_privs() == -1:
        raise kernel_error(ffi.errno, "prctl(PR_SET_NO_NEW_PRIVS)")


FILTER_FLAGS: dict[str, int] = {name: getattr(lib, name) for name in (
    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW")}


def seccomp_set_mode_filter(program: bytes, flags: int = 0) -> None:
    count = len(program) // 8
    if lib.osv_seccomp_set_mode_filter(ffi.from_buffer(program), count, flags) == -1:
        err = ffi.errno
        shown = f"flags {flags:#x}, " if flags else ""
        raise kernel_error(err, f"seccomp(SECCOMP_SET_MODE_FILTER, {shown}a {count}-instruction program)",
                           _HINTS.get(err))


_HINTS = {
    errno.EACCES: "needs no_new_privs or CAP_SYS_ADMIN in the caller's user namespace",
    errno.EINVAL: "the kernel's checker refused the program (a jump out of it, no return at its end, an unknown "
                  "opcode), or a flag this kernel does not know",
    errno.ESRCH: "SECCOMP_FILTER_FLAG_TSYNC: another thread of this process has a filter this one does not",
    errno.ENOMEM: "the filters stacked on this thread would exceed 32768 instructions in all (MAX_INSNS_PER_PATH)",
}


# --- mounts (csrc/mounts.h) ------------------------------------------------
MS: dict[str, int] = {name: getattr(lib, f"MS_{name}") for name in (
    "RDONLY", "NOSUID", "NODEV", "NOEXEC", "SYNCHRONOUS", "REMOUNT", "MANDLOCK", "DIRSYNC", "NOSYMFOLLOW",
    "NOATIME", "NODIRATIME", "BIND", "MOVE", "REC", "SILENT", "UNBINDABLE", "PRIVATE", "SLAVE", "SHARED",
    "RELATIME", "STRICTATIME", "LAZYTIME")}
MNT: dict[str, int] = {name: getattr(lib, name) for name in ("MNT_FORCE", "MNT_DETACH", "MNT_EXPIRE", "UMOUNT_NOFOLLOW")}


_NEEDS_CAP_SYS_ADMIN = "needs CAP_SYS_ADMIN in the user namespace owning this mount namespace"


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None,
          facility: str | Callable[[], str]) -> None:
    """mount(2), NULL for a None (it reads no source, fstype or data then); `facility` names the call in the
    error (a function making the name: only on failure)."""
    if lib.osv_mount(ffi.NULL if source is None else os.fsencode(source), os.fsencode(target),
                     ffi.NULL if fstype is None else os.fsencode(fstype), flags,
                     ffi.NULL if data is None else os.fsencode(data)) == -1:
        err = ffi.errno
        raise kernel_error(err, facility if isinstance(facility, str) else facility(),
                           _NEEDS_CAP_SYS_ADMIN if err == errno.EPERM else None, target)


def umount2(target: str, flags: int, facility: str) -> None:
    if lib.osv_umount2(os.fsencode(target), flags) == -1:
        raise kernel_error(ffi.errno, facility, None, target)


def pivot_root(new_root: str, put_old: str) -> None:
    if lib.osv_pivot_root(os.fsencode(new_root), os.fsencode(put_old)) == -1:
        err = ffi.errno
        raise kernel_error(err, f"pivot_root({new_root!r}, {put_old!r})", _PIVOT_HINTS.get(err), new_root)


AT_RECURSIVE: int = lib.AT_RECURSIVE
MOUNT_ATTR: dict[str, int] = {name: getattr(lib, f"MOUNT_ATTR_{name}") for name in ("RDONLY", "NOSUID", "NODEV",
                                                                                   "NOEXEC")}


def mount_setattr(path: str, flags: int, attr_set: int, attr_clr: int, facility: str) -> bool:
    """mount_setattr(2); False where the kernel (before 5.12) or the headers lack it, the kernel knows not a
    flag, or refuses it (EPERM: the caller's remounts, which it does instead, then say why)."""
    if lib.osv_mount_setattr(os.fsencode(path), flags, attr_set, attr_clr) == -1:
        err = ffi.errno
        if err in (errno.ENOSYS, errno.EINVAL, errno.EPERM):
            return False
        raise kernel_error(err, facility, None, path)
    return True


# statfs(2)'s f_type of a cgroup filesystem, v1 or v2 (csrc/fs.h: <linux/magic.h>).
CGROUP_MAGICS = frozenset({lib.CGROUP_SUPER_MAGIC, lib.CGROUP2_SUPER_MAGIC})


def statfs_type(path: str) -> int | None:
    """statfs(2)'s f_type of the filesystem `path` is in, or None when statfs fails (no such path)."""
    out = ffi.new("long *")
    return None if lib.osv_statfs_type(os.fsencode(path), out) == -1 else int(out[0])


_PIVOT_HINTS = {
    errno.EINVAL: "new_root must be a mount point, not the current root, and neither it nor its parent mount "
                  "may be shared (make_private first)",
    errno.EPERM: _NEEDS_CAP_SYS_ADMIN,
}


# --- namespaces (csrc/namespaces.h) ----------------------------------------
CLONE_NEW: dict[str, int] = {name: getattr(lib, f"CLONE_NEW{name}") for name in (
    "CGROUP", "IPC", "NS", "NET", "PID", "TIME", "USER", "UTS")}


def unshare(flags: int, facility: str, hint: str | None) -> None:
    if lib.osv_unshare(flags) == -1:
        raise kernel_error(ffi.errno, facility, hint)


def setns(fd: int, nstype: int, facility: str, hint: str | None) -> None:
    if lib.osv_setns(fd, nstype) == -1:
        raise kernel_error(ffi.errno, facility, hint)


def setdomainname(name: bytes) -> None:
    if lib.osv_setdomainname(name, len(name)) == -1:
        raise kernel_error(ffi.errno, f"setdomainname({name!r})", "needs CAP_SYS_ADMIN over the UTS namespace")


# --- capabilities (csrc/capabilities.h) ------------------------------------
# name -> number of every capability this build's <linux/capability.h> defines.
CAPABILITIES: MappingProxyType[str, int] = MappingProxyType(dict(sorted(
    ((os.fsdecode(ffi.string(c.name)), c.nr) for c in lib.osv_capabilities[0:lib.osv_capability_count]),
    key=lambda item: item[1])))  # in number order (the preprocessor lists macros in no order)
CAP_LAST_CAP: int = lib.CAP_LAST_CAP
AMBIENT: dict[str, int] = {name: getattr(lib, f"PR_CAP_AMBIENT_{name}") for name in ("RAISE", "LOWER", "CLEAR_ALL")}


def capget(pid: int) -> tuple[int, int, int]:
    sets = ffi.new("uint64_t[3]")
    if lib.osv_capget(pid, sets) == -1:
        raise kernel_error(ffi.errno, f"capget(pid {pid})")
    return sets[0], sets[1], sets[2]


def capset(effective: int, permitted: int, inheritable: int, facility: str | Callable[[], str],
           hint: str | None) -> None:
    """capset(2); `facility` names the call in the error (a function making the name: only on failure)."""
    if lib.osv_capset(ffi.new("uint64_t[3]", [effective, permitted, inheritable])) == -1:
        err = ffi.errno
        raise kernel_error(err, facility if isinstance(facility, str) else facility(), hint)


def capbset_drop(cap: int, facility: str | None = None) -> None:
    """prctl(PR_CAPBSET_DROP); `facility` None: named by the capability's number."""
    if lib.osv_capbset_drop(cap) == -1:
        err = ffi.errno
        raise kernel_error(err, facility or f"prctl(PR_CAPBSET_DROP, {cap})",
                           "needs CAP_SETPCAP" if err == errno.EPERM else None)


def cap_ambient(op: str, cap: int, facility: str, hint: str | None) -> None:
    if lib.osv_cap_ambient(AMBIENT[op], cap) == -1:
        raise kernel_error(ffi.errno, facility, hint)


def set_keepcaps(keep: bool) -> None:
    if lib.osv_set_keepcaps(int(keep)) == -1:
        raise kernel_error(ffi.errno, f"prctl(PR_SET_KEEPCAPS, {int(keep)})")


# --- network (csrc/network.h) ----------------------------------------------
IFNAMSIZ: int = lib.IFNAMSIZ  # an interface name's bytes, its NUL included
IFF: dict[str, int] = {name: getattr(lib, f"IFF_{name}") for name in ("UP", "LOWER_UP")}


def ifflags_get(sockfd: int, name: str, facility: str) -> int:
    flags: int = lib.osv_ifflags_get(sockfd, os.fsencode(name))
    if flags == -1:
        raise kernel_error(ffi.errno, facility)
    return flags


def ifflags_set(sockfd: int, name: str, flags: int, facility: str) -> None:
    if lib.osv_ifflags_set(sockfd, os.fsencode(name), flags) == -1:
        err = ffi.errno
        raise kernel_error(err, facility, "needs CAP_NET_ADMIN over the network namespace" if err == errno.EPERM else None)
