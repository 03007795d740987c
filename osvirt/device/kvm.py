"""KVM: the kernel's hypervisor, reached through ioctls on /dev/kvm.

/dev/kvm answers system ioctls before any virtual machine exists:
KVM_GET_API_VERSION (12 on every kernel since 2.6.22; a different number
would mean an incompatible API) and KVM_CHECK_EXTENSION, which says whether
a capability is there (1/0) or, for some, how much of it (a number of vCPUs
or memory slots). The capability numbers come from <linux/kvm.h>.
"""
import os

from osvirt.device import _native
from osvirt._owned import OwnedFd
from osvirt.device.ioctl import KVM_CHECK_EXTENSION, KVM_GET_API_VERSION, ioctl
from osvirt.errors import kernel_error

__all__ = ["Kvm", "API_VERSION", "CAPABILITIES"]

DEVICE = "/dev/kvm"
API_VERSION: int = _native.KVM_API_VERSION  # the version <linux/kvm.h> was written for: 12
CAPABILITIES = dict(_native.KVM_CAPS)  # name: number, for check_extension


class Kvm(OwnedFd):
    """An open /dev/kvm. Needs read-write access to it (osvirt.env.can("kvm"))."""

    what = DEVICE

    def __init__(self) -> None:
        try:
            self.fd = os.open(DEVICE, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            assert e.errno is not None  # set by every failed system call
            raise kernel_error(e.errno, f"open({DEVICE})", filename=DEVICE) from None

    def api_version(self) -> int:
        """KVM_GET_API_VERSION."""
        return ioctl(self._open_fd(), KVM_GET_API_VERSION, name="KVM_GET_API_VERSION")

    def check_extension(self, capability: str | int) -> int:
        """KVM_CHECK_EXTENSION for a capability name ('KVM_CAP_USER_MEMORY') or number."""
        if isinstance(capability, str):
            if capability not in CAPABILITIES:
                raise ValueError(f"KVM_CHECK_EXTENSION: unknown capability {capability!r}; "
                                 f"known: {', '.join(CAPABILITIES)}")
            capability = CAPABILITIES[capability]
        if type(capability) is not int or not 0 <= capability < 1 << 31:
            raise ValueError(f"KVM_CHECK_EXTENSION: capability must be a name or a number >= 0, not {capability!r}")
        return ioctl(self._open_fd(), KVM_CHECK_EXTENSION, capability, name="KVM_CHECK_EXTENSION")
