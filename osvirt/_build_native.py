"""Builds osvirt._native from csrc/ (cffi API mode, out of line).

Each csrc/<topic>.h is both the C header of csrc/<topic>.c and cffi's cdef:
the cdef reads it with preprocessor lines dropped, so declarations under
`#ifdef OSV_CDEF` (constants whose values the C compiler takes from the system
headers, opaque typedefs) are seen by cffi and never by C. osv.h, the shared
types, comes first.
"""
import os
import re
import shlex
import subprocess
import sysconfig
from pathlib import Path

from cffi import FFI
from setuptools.command.build_ext import build_ext as _build_ext

CSRC = Path(__file__).resolve().parent.parent / "csrc"
HEADERS = sorted(CSRC.glob("*.h"), key=lambda h: (h.name != "osv.h", h.name))


def syscall_table() -> str:
    """C defining osv_syscalls (csrc/seccomp.h): every __NR_<name> <sys/syscall.h> defines.

    The preprocessor lists the macros (the kernel's headers choose this
    architecture's set), and the C compiler gives each its number: none is
    typed by hand. asm-generic's __NR_syscalls (a count) and
    __NR_arch_specific_syscall (a base) are not system calls.
    """
    names = sorted(set(re.findall(r"^#define __NR_(\w+) ", _macros("sys/syscall.h"), re.M))
                   - {"syscalls", "arch_specific_syscall"})
    rows = "".join(f'    {{"{name}", __NR_{name}}},\n' for name in names)
    return f"const osv_syscall osv_syscalls[] = {{\n{rows}}};\nconst int osv_syscall_count = {len(names)};\n"


def capability_table() -> str:
    """C defining osv_capabilities (csrc/capabilities.h): every CAP_<name> <linux/capability.h> numbers.

    Only the macros defined as a plain number: CAP_LAST_CAP names another,
    CAP_TO_INDEX and CAP_TO_MASK take an argument.
    """
    names = re.findall(r"^#define (CAP_\w+) \d+$", _macros("linux/capability.h"), re.M)
    rows = "".join(f'    {{"{name}", {name}}},\n' for name in names)
    return f"const osv_capability osv_capabilities[] = {{\n{rows}}};\nconst int osv_capability_count = {len(names)};\n"


def kvm_name_tables() -> str:
    """C defining osv_kvm_exits and osv_kvm_internal_errors (csrc/kvm.h): every KVM_EXIT_<name> and
    KVM_INTERNAL_ERROR_<name> <linux/kvm.h> defines as a plain number. Not exit reasons, though named
    alike: KVM_EXIT_IO_IN and _OUT (a direction) and the Hyper-V and Xen exits' own types."""
    macros = _macros("linux/kvm.h")

    def table(c_name: str, prefix: str, skip: set[str]) -> str:
        names = [n for n in re.findall(rf"^#define ({prefix}\w+) \d+$", macros, re.M) if n not in skip]
        rows = "".join(f'    {{"{name}", {name}}},\n' for name in names)
        return (f"const osv_kvm_name {c_name}[] = {{\n{rows}}};\n"
                f"const int {c_name[:-1]}_count = {len(names)};\n")
    return (table("osv_kvm_exits", "KVM_EXIT_", {"KVM_EXIT_IO_IN", "KVM_EXIT_IO_OUT", "KVM_EXIT_HYPERV_SYNIC", "KVM_EXIT_HYPERV_HCALL",
                                                  "KVM_EXIT_HYPERV_SYNDBG", "KVM_EXIT_XEN_HCALL"})
            + table("osv_kvm_internal_errors", "KVM_INTERNAL_ERROR_", set()))


def _macros(header: str) -> str:
    """The macros `header` defines, as the C preprocessor lists them (-dM)."""
    cc = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    return subprocess.run([*cc, "-E", "-dM", "-include", header, "-x", "c", os.devnull],
                          capture_output=True, text=True, check=True).stdout


ffibuilder = FFI()
for header in HEADERS:
    ffibuilder.cdef("".join(line for line in header.read_text().splitlines(True)
                            if not line.lstrip().startswith("#")))
ffibuilder.set_source(
    "osvirt._native",
    "".join(f'#include "{h.name}"\n' for h in HEADERS) + syscall_table() + capability_table() + kvm_name_tables(),
    sources=[f"csrc/{c.name}" for c in sorted(CSRC.glob("*.c"))],  # relative: setuptools wants them so
    include_dirs=["csrc"],
    extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-D_GNU_SOURCE"],
)


class build_ext(_build_ext):
    """Fills the extension declared in pyproject.toml with cffi's generated C."""

    def run(self) -> None:
        generated = ffibuilder.distutils_extension(self.build_temp)
        for ext in self.extensions:
            if ext.name == generated.name:
                ext.__dict__.update(vars(generated))
        super().run()
