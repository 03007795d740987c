"""The one module of osvirt.device that touches the C extension.

It gives one call, the int-answer ioctl (from osvirt._quickcalls); and the compiler gives the layout
of the loop structs and the KVM capability numbers from <linux/loop.h> and
<linux/kvm.h>.
"""
import os
from collections.abc import Callable
from typing import Any, TypeVar, cast

from osvirt import _quickcalls
from osvirt._native import ffi, lib
from osvirt.errors import kernel_error

_F = TypeVar("_F", bound=Callable[..., int])

# ioctl(fd, request, &int) returning the int, made by osvirt._quickcalls with the
# GIL held (ioctl_int is for requests the driver answers at once): ~340 ns, against
# ~600 over cffi and ~870 through fcntl.ioctl, a buffer and struct.unpack (bench
# row fionread). ioctl_int's own Python call (a frame, a keyword argument) cost
# ~120 ns more, 1.3x: so its valid call is made in C (checked_ioctl_int), and the
# Python function takes the others, calling quick_ioctl_int itself.
quick_ioctl_int = _quickcalls.ioctl_int


def ioctl_error(err: int, name: str) -> OSError:
    return kernel_error(err, f"ioctl({name})")


def checked_ioctl_int(function: _F) -> _F:
    """`function` (ioctl_int), with its valid calls made in C (osvirt._quickcalls.checked)."""
    return cast(_F, _quickcalls.checked("ioctl_int", function, ioctl_error))


LO_FLAGS_READ_ONLY: int = lib.LO_FLAGS_READ_ONLY
LO_FLAGS_AUTOCLEAR: int = lib.LO_FLAGS_AUTOCLEAR
KVM_API_VERSION: int = lib.KVM_API_VERSION
KVM_CAPS: dict[str, int] = {
    "KVM_CAP_IRQCHIP": lib.KVM_CAP_IRQCHIP,
    "KVM_CAP_HLT": lib.KVM_CAP_HLT,
    "KVM_CAP_USER_MEMORY": lib.KVM_CAP_USER_MEMORY,
    "KVM_CAP_NR_VCPUS": lib.KVM_CAP_NR_VCPUS,
    "KVM_CAP_MAX_VCPUS": lib.KVM_CAP_MAX_VCPUS,
    "KVM_CAP_NR_MEMSLOTS": lib.KVM_CAP_NR_MEMSLOTS,
    "KVM_CAP_IOEVENTFD": lib.KVM_CAP_IOEVENTFD,
    "KVM_CAP_IRQFD": lib.KVM_CAP_IRQFD,
}


# `info`, `config`: a struct's cdata, whose fields (the cdef's) are unknown to mypy: Any.
def _fill_info(info: Any, file_name: str | os.PathLike[str], flags: int) -> None:
    name = os.fsencode(file_name)[:lib.LO_NAME_SIZE - 1]  # the kernel keeps a truncated, NUL-ended copy
    info.lo_flags = flags
    ffi.memmove(info.lo_file_name, name, len(name))


def loop_info64(file_name: str | os.PathLike[str], flags: int) -> bytes:
    """struct loop_info64 for LOOP_SET_STATUS64, as bytes."""
    info: Any = ffi.new("struct loop_info64 *")
    _fill_info(info, file_name, flags)
    return bytes(ffi.buffer(info))


def loop_config(backing_fd: int, block_size: int, file_name: str | os.PathLike[str], flags: int) -> bytes:
    """struct loop_config for LOOP_CONFIGURE, as bytes (block_size 0: the kernel's default)."""
    config: Any = ffi.new("struct loop_config *")
    config.fd = backing_fd
    config.block_size = block_size
    _fill_info(config.info, file_name, flags)
    return bytes(ffi.buffer(config))


def loop_info64_file_name(data: bytes) -> str:
    """lo_file_name out of a struct loop_info64 returned by LOOP_GET_STATUS64."""
    if len(data) != ffi.sizeof("struct loop_info64"):
        raise ValueError(f"LOOP_GET_STATUS64: {len(data)} bytes is not a struct loop_info64")
    info: Any = ffi.new("struct loop_info64 *")
    ffi.memmove(info, data, len(data))
    return os.fsdecode(ffi.string(info.lo_file_name))


LOOP_INFO64_SIZE: int = ffi.sizeof("struct loop_info64")
