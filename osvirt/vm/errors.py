"""The exceptions of osvirt.vm.

A failed KVM ioctl is the stdlib's OSError subclass for its errno, as
everywhere in osvirt (osvirt.errors.kernel_error). What is not an errno is a
VmError: a guest physical address outside RAM, a bus address claimed twice,
a guest that stopped in a way the host did not ask for (GuestError, with the
exit that ended it). All of them pickle: a snapshot's restore may run in
another process.
"""
from osvirt.errors import OsvirtError

__all__ = ["VmError", "GuestMemoryError", "BusError", "GuestError"]


class VmError(OsvirtError):
    """Base of osvirt.vm's own errors."""


class GuestMemoryError(VmError):
    """A guest physical range [gpa, gpa + length) not inside guest RAM [base, base + size)."""

    def __init__(self, gpa: int, length: int, base: int, size: int) -> None:
        super().__init__(gpa, length, base, size)
        self.gpa, self.length, self.base, self.size = gpa, length, base, size

    def __str__(self) -> str:
        return (f"guest physical range gpa={self.gpa:#x} length={self.length} is outside guest RAM "
                f"[{self.base:#x}, {self.base + self.size:#x})")


class BusError(VmError):
    """A bus refused an attachment: a range that overlaps another, or is empty."""


class GuestError(VmError):
    """The guest stopped in a way the host did not ask for: `reason` names the exit
    (KVM_EXIT_SHUTDOWN, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_FAIL_ENTRY, ...) and
    `detail` decodes it (suberror, hardware reason, the guest's rip)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail

    def __str__(self) -> str:
        return f"guest stopped: {self.reason}" + (f": {self.detail}" if self.detail else "")
