"""userfaultfd(2): a file descriptor through which a process handles its own page faults.

Only the call that makes one, for now: what it is refused by (the
vm.unprivileged_userfaultfd sysctl for faults in kernel mode, a seccomp
filter such as Docker's) is what the container demo shows. The descriptor
is the caller's to close.
"""
import os

from osvirt.memory import _native

__all__ = ["userfaultfd"]


def userfaultfd(user_mode_only: bool = True, cloexec: bool = True) -> int:
    """userfaultfd(2): a new userfaultfd descriptor.

    `user_mode_only` (UFFD_USER_MODE_ONLY, Linux 5.11+) handles faults in
    user mode only, which any process may ask for; without it the kernel wants
    CAP_SYS_PTRACE, or vm.unprivileged_userfaultfd set to 1.
    """
    if not isinstance(user_mode_only, bool) or not isinstance(cloexec, bool):
        raise TypeError("userfaultfd: user_mode_only and cloexec must be bools")
    return _native.userfaultfd((_native.UFFD_USER_MODE_ONLY if user_mode_only else 0)
                               | (os.O_CLOEXEC if cloexec else 0))
