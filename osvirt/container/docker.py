"""What `docker run` gives a container by default, as osvirt's own tables.

A container's confinement is data: which capabilities it keeps, which system
calls its seccomp filter lets through, which /proc and /sys paths it cannot
see or write, what /dev and /dev/shm hold. Docker's defaults are the ones most
people meet, so osvirt keeps them here, in the shape Docker itself resolves
them at `docker run`: a system call is allowed outright, or on some
architectures, or when the container holds a capability, or when its
arguments compare so; everything else fails with EPERM. tests/container holds
these tables against Docker's own profile (moby/profiles seccomp/default.json),
syscall by syscall. Only x86_64 and aarch64 are kept: the architectures
osvirt builds for.

`seccomp(machine, capabilities)` resolves the profile for one container, in
the OCI runtime-spec's `linux.seccomp` form; `oci_config(...)` writes the
whole `config.json` a `docker run` of a command would hand runc.
"""
import errno
import os
from collections.abc import Collection, Iterable, Sequence

from osvirt.container.capabilities import CAPABILITIES as _ALL_CAPABILITIES  # every one, by name

__all__ = [
    "CAPABILITIES", "MASKED_PATHS", "READONLY_PATHS", "SHM_SIZE_BYTES", "SECCOMP_ALLOW",
    "SECCOMP_ALLOW_ON", "SECCOMP_ALLOW_WITH", "SECCOMP_ALLOW_SINCE", "SECCOMP_ALLOW_IF",
    "CLONE_NAMESPACE_FLAGS", "ARCHITECTURES", "Arg", "seccomp", "oci_config",
]

# The 14 capabilities a container keeps (moby oci/caps/defaults.go).
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

# Hidden from the container (a file under /dev/null, a directory under an
# empty read-only tmpfs): what they show is the host's, or lets it be probed.
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
# Readable but not writable: a write there would change the host's kernel.
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

SHM_SIZE_BYTES = 64 << 20  # /dev/shm, a tmpfs of its own

# --- seccomp ---------------------------------------------------------------
# Allowed to every container, whatever it holds. Names the running kernel
# does not know (newer calls, other architectures' calls) are skipped by the
# runtime that compiles the filter.
SECCOMP_ALLOW = frozenset("""
    accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown
    chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
    clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
    copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
    epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
    exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir fchmod
    fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr
    flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate
    ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat
    getcpu getcwd getdents getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32
    getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid getppid getpriority
    getrandom getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage
    getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32 getxattr
    getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl
    io_destroy io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup
    io_submit ipc kill landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown
    lchown32 lgetxattr link linkat listen listmount listxattr listxattrat llistxattr _llseek
    lremovexattr lseek lsetxattr lstat lstat64 madvise map_shadow_stack membarrier memfd_create
    memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect
    mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
    mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock
    munlockall munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2
    pause pidfd_open pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll
    ppoll_time64 prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6
    pselect6_time64 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv
    recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename
    renameat renameat2 restart_syscall riscv_hwprobe rmdir rseq rt_sigaction rt_sigpending
    rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
    rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
    sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
    sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
    sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
    semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
    setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
    setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
    setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid setuid32
    setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd signalfd4
    sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64 statmount
    statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create
    timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64
    timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times
    tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat uretprobe utime utimensat
    utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid write writev
""".split())

# Allowed on one architecture only (its own calls, or the 32-bit ones it runs).
SECCOMP_ALLOW_ON = {
    "x86_64": ("arch_prctl", "modify_ldt"),
    "aarch64": ("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint",
                "cacheflush", "set_tls"),
}

# Allowed when the container holds the capability: the kernel checks that
# capability anyway, and without it the filter keeps a kernel bug behind the
# call out of reach.
SECCOMP_ALLOW_WITH = {
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_SYS_ADMIN": (
        "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
        "lookup_dcookie", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr", "mount",
        "mount_setattr", "move_mount", "open_tree", "perf_event_open", "quotactl", "quotactl_fd",
        "setdomainname", "sethostname", "setns", "syslog", "umount", "umount2", "unshare"),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_CHROOT": ("chroot",),
    "CAP_SYS_MODULE": ("delete_module", "init_module", "finit_module"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_PTRACE": ("kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv",
                       "process_vm_writev", "ptrace"),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_settime64"),
    "CAP_SYS_TTY_CONFIG": ("vhangup",),
    "CAP_SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}

# Allowed to all from this kernel on: before 4.8 ptrace could bypass seccomp.
SECCOMP_ALLOW_SINCE: dict[tuple[int, int], tuple[str, ...]] = {(4, 8): ("process_vm_readv", "process_vm_writev", "ptrace")}


class Arg(tuple[int, str, int, int]):
    """One comparison of a system call's argument: `Arg(index, op, value, value_two=0)`.

    `op` is the OCI name's tail: "lt", "le", "eq", "ne", "ge", "gt", or
    "masked_eq" (allowed when arg & value == value_two).
    """
    OPS = ("lt", "le", "eq", "ne", "ge", "gt", "masked_eq")

    def __new__(cls, index: int, op: str, value: int, value_two: int = 0) -> "Arg":
        if index not in range(6) or op not in cls.OPS:
            raise ValueError(f"seccomp Arg: index {index!r} not in 0..5 or op {op!r} not in {cls.OPS}")
        return super().__new__(cls, (index, op, value, value_two))

    def oci(self) -> dict[str, object]:
        index, op, value, value_two = self
        return {"index": index, "value": value, "valueTwo": value_two, "op": f"SCMP_CMP_{op.upper()}"}


AF_ALG, AF_VSOCK = 38, 40
# Allowed when one of the comparisons holds.
SECCOMP_ALLOW_IF = {
    # every address family but the kernel crypto API's and VM sockets
    "socket": (Arg(0, "lt", AF_ALG), Arg(0, "eq", AF_ALG + 1), Arg(0, "gt", AF_VSOCK)),
    # PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and 0xffffffff: a query
    "personality": tuple(Arg(0, "eq", v) for v in (0x0, 0x8, 0x20000, 0x20008, 0xffffffff)),
}

# Without CAP_SYS_ADMIN, clone is allowed only without a namespace flag
# (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET), and
# clone3, whose flags lie in memory a filter cannot read, answers ENOSYS so
# that the C library falls back to clone.
CLONE_NAMESPACE_FLAGS = 0x7E020000
_CLONE_WITHOUT_NAMESPACES = Arg(0, "masked_eq", CLONE_NAMESPACE_FLAGS, 0)

# machine (uname -m) -> the architectures a filter there must accept: the
# native one first, then those whose binaries the kernel also runs.
ARCHITECTURES = {
    "x86_64": ("SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"),
    "aarch64": ("SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"),
}


def _kernel_version() -> tuple[int, ...]:
    return tuple(int(part) for part in os.uname().release.split("-")[0].split(".")[:2])


def seccomp(machine: str | None = None, capabilities: Collection[str] = CAPABILITIES,
            kernel: tuple[int, ...] | None = None) -> dict[str, object]:
    """Docker's default profile for a container holding `capabilities`, as OCI `linux.seccomp`.

    `machine` defaults to this one's (`uname -m`), `kernel` to the running
    kernel's (major, minor). Rules with the same verdict are grouped as
    Docker groups them: names allowed outright, then each conditional rule.
    """
    machine = machine or os.uname().machine
    if machine not in ARCHITECTURES:
        raise ValueError(f"seccomp: no profile for machine {machine!r} (only {sorted(ARCHITECTURES)})")
    unknown = set(capabilities) - set(_ALL_CAPABILITIES)
    if unknown:
        raise ValueError(f"seccomp: unknown capabilities {sorted(unknown)}")
    kernel = kernel or _kernel_version()
    allowed = set(SECCOMP_ALLOW) | set(SECCOMP_ALLOW_ON[machine])
    for since, names in SECCOMP_ALLOW_SINCE.items():
        if kernel >= since:
            allowed.update(names)
    for cap, names in SECCOMP_ALLOW_WITH.items():
        if cap in capabilities:
            allowed.update(names)
    rules: list[dict[str, object]] = [{"names": sorted(allowed), "action": "SCMP_ACT_ALLOW"}]
    for name, alternatives in SECCOMP_ALLOW_IF.items():
        rules += [{"names": [name], "action": "SCMP_ACT_ALLOW", "args": [arg.oci()]} for arg in alternatives]
    if "CAP_SYS_ADMIN" not in capabilities:
        rules.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [_CLONE_WITHOUT_NAMESPACES.oci()]})
        rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS})
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EPERM,
            "architectures": list(ARCHITECTURES[machine]), "syscalls": rules}


def _mount(destination: str, fstype: str, source: str, *options: str) -> dict[str, object]:
    return {"destination": destination, "type": fstype, "source": source, "options": list(options)}


def oci_config(rootfs: str, args: Sequence[str], *, cwd: str = "/", env: Iterable[str] = (),
               binds: Iterable[tuple[str, str, bool]] = (), hostname: str = "osvirt",
               network: bool = False) -> dict[str, object]:
    """The `config.json` a `docker run` of `args` in `rootfs` would give runc.

    Root in the container with Docker's 14 capabilities (none inheritable or
    ambient), its seccomp profile, masked and read-only paths, a private
    /dev with runc's default devices, a 64 MiB /dev/shm, /dev/mqueue, /sys
    read-only; PID, IPC, UTS and mount namespaces of its own. `binds` are
    (host path, container path, read_only) triples. With `network=False` the
    container shares the host's network namespace (`docker run
    --network host`); with True it gets its own, with loopback only.
    """
    if not os.path.isabs(rootfs):
        raise ValueError(f"oci_config: rootfs {rootfs!r} must be an absolute path (runc resolves it so)")
    if not args:
        raise ValueError("oci_config: args must name a program")
    caps = list(CAPABILITIES)
    mounts = [
        _mount("/proc", "proc", "proc", "nosuid", "noexec", "nodev"),
        _mount("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
        _mount("/dev/pts", "devpts", "devpts", "nosuid", "noexec", "newinstance", "ptmxmode=0666",
               "mode=0620", "gid=5"),
        _mount("/sys", "sysfs", "sysfs", "nosuid", "noexec", "nodev", "ro"),
        _mount("/sys/fs/cgroup", "cgroup", "cgroup", "nosuid", "noexec", "nodev", "relatime", "ro"),
        _mount("/dev/mqueue", "mqueue", "mqueue", "nosuid", "noexec", "nodev"),
        _mount("/dev/shm", "tmpfs", "shm", "nosuid", "noexec", "nodev", "mode=1777",
               f"size={SHM_SIZE_BYTES}"),
    ]
    for host, guest, read_only in binds:
        mounts.append(_mount(guest, "bind", host, "rbind", "ro" if read_only else "rw"))
    namespaces = ["pid", "ipc", "uts", "mount"] + (["network"] if network else [])
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": list(env),
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": False,
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": [{"type": kind} for kind in namespaces],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "seccomp": seccomp(),
            # runc adds its default devices to this deny-all; Docker lets mknod make any node
            "resources": {"devices": [{"allow": False, "access": "rwm"},
                                      {"allow": True, "type": "c", "access": "m"},
                                      {"allow": True, "type": "b", "access": "m"}]},
        },
    }
