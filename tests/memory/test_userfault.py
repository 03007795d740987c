"""osvirt.memory.userfaultfd: the descriptor the kernel gives, and its refusals."""
import errno
import fcntl
import os

import pytest

from osvirt import env
from osvirt.memory import userfaultfd


def test_a_user_mode_only_userfaultfd_is_a_close_on_exec_anon_inode():
    try:
        fd = userfaultfd()
    except PermissionError as e:  # Docker's seccomp profile refuses the call to everyone
        pytest.skip(f"userfaultfd refused here: {e}")
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[userfaultfd]"
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    finally:
        os.close(fd)


def test_bad_arguments_are_refused_before_the_call():
    with pytest.raises(TypeError, match="userfaultfd"):
        userfaultfd(user_mode_only=1)


def test_kernel_mode_faults_are_refused_without_the_privilege_or_the_sysctl():
    with open("/proc/sys/vm/unprivileged_userfaultfd") as f:
        sysctl = int(f.read())
    if sysctl or env.can("cap_sys_ptrace"):
        pytest.skip("vm.unprivileged_userfaultfd is 1 or CAP_SYS_PTRACE is held: the kernel allows it")
    with pytest.raises(PermissionError) as caught:
        userfaultfd(user_mode_only=False)
    assert caught.value.errno == errno.EPERM
