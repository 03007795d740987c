"""The one module of osvirt.vm that touches the C extension (csrc/kvm.[ch]).

Constants and struct layouts come from <linux/kvm.h> through the cdef; a
call's -errno becomes `kernel_error` naming the ioctl.
"""
from typing import Any

from osvirt import _native
from osvirt.errors import kernel_error

__all__ = ["ffi", "lib", "check", "EXIT_NAMES", "INTERNAL_ERROR_NAMES"]

ffi: Any = _native.ffi  # Any: cffi's structs have the header's fields, which no stub knows
lib: Any = _native.lib


def check(result: int, name: str, hint: str | None = None) -> int:
    """`result` if >= 0, else the OSError for -result naming ioctl(name)."""
    if result < 0:
        raise kernel_error(-result, f"ioctl({name})", hint)
    return result


def _names(table: Any, count: int) -> dict[int, str]:
    return {int(table[i].number): ffi.string(table[i].name).decode() for i in range(count)}


EXIT_NAMES: dict[int, str] = _names(lib.osv_kvm_exits, lib.osv_kvm_exit_count)  # KVM_EXIT_* by number
INTERNAL_ERROR_NAMES: dict[int, str] = _names(lib.osv_kvm_internal_errors, lib.osv_kvm_internal_error_count)
