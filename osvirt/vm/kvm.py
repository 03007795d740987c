"""The KVM API: /dev/kvm, a VM's descriptor and a vCPU's, as kvmtool and Firecracker use them.

Three levels of file descriptor: /dev/kvm (`Kvm`: the API version, the
capabilities, what the CPU offers a guest), a VM (`Vm`, from KVM_CREATE_VM:
its memory slots, dirty log, in-kernel interrupt controllers and PIT) and a
vCPU (`Vcpu`, from KVM_CREATE_VCPU: its registers and KVM_RUN, with the
shared `struct kvm_run` mapped from the vCPU fd). Struct layouts and ioctl
numbers are <linux/kvm.h>'s, through the C extension (csrc/kvm.h). A
refused ioctl raises the OSError subclass for its errno, naming the ioctl.

`backing_module()` says which kernel module does the virtualization:
kvm_intel (VMX) or kvm_amd (SVM) run the guest on the CPU's own support;
kvm_pvm runs it in software, deprivileged: the guest's kernel mode too runs
in the CPU's user mode, and each privileged instruction (syscall, iretq,
wrmsr, port I/O, page-table writes) is a trip through the hypervisor (the
vm demo times one). Tests and the demo name it when they skip.
"""
from __future__ import annotations

import errno
import os
from typing import Any

from osvirt.device import kvm as _device_kvm
from osvirt.memory import Mapping
from osvirt._owned import OwnedFd
from osvirt.vm._native import EXIT_NAMES, INTERNAL_ERROR_NAMES, check, ffi, lib
from osvirt.vm.errors import VmError

__all__ = ["API_VERSION", "Kvm", "Vm", "Vcpu", "backing_module", "BACKING_MODULES", "EXIT_NAMES", "INTERNAL_ERROR_NAMES",
           "exit_name", "IRQCHIPS", "KVM_EXIT", "REQUIRED_CAPABILITIES"]

API_VERSION = _device_kvm.API_VERSION  # 12: what KVM_GET_API_VERSION must answer
BACKING_MODULES = ("kvm_intel", "kvm_amd", "kvm_pvm")
KVM_EXIT: dict[str, int] = {name: number for number, name in EXIT_NAMES.items()}
# What a Machine relies on, asked of the VM before it is used (Firecracker's check_kvm_capabilities):
# KVM_CAP_ name -> what needs it.
REQUIRED_CAPABILITIES = {
    "USER_MEMORY": "guest RAM in this process's memory (KVM_SET_USER_MEMORY_REGION)",
    "SYNC_MMU": "guest RAM that follows the host's page tables (faulted in on first touch, madvise seen)",
    "IRQCHIP": "the in-kernel PIC pair, IOAPIC and local APIC (KVM_CREATE_IRQCHIP, KVM_IRQ_LINE)",
    "PIT2": "the in-kernel PIT (KVM_CREATE_PIT2)",
    "EXT_CPUID": "the host's CPUID for the guest (KVM_GET_SUPPORTED_CPUID, KVM_SET_CPUID2)",
    "IMMEDIATE_EXIT": "pausing a vCPU (kvm_run.immediate_exit)",
    "PIT_STATE2": "a snapshot's PIT (KVM_GET_PIT2)",
    "VCPU_EVENTS": "a snapshot's pending exceptions and interrupts (KVM_GET_VCPU_EVENTS)",
    "ADJUST_CLOCK": "a snapshot's kvmclock (KVM_GET_CLOCK)",
}
IRQCHIPS = {"pic_master": lib.KVM_IRQCHIP_PIC_MASTER, "pic_slave": lib.KVM_IRQCHIP_PIC_SLAVE,
            "ioapic": lib.KVM_IRQCHIP_IOAPIC}


def exit_name(reason: int) -> str:
    """KVM_EXIT_IO for 2, ...; an unknown number as KVM_EXIT_<n>."""
    return EXIT_NAMES.get(reason, f"KVM_EXIT_{reason}")


def backing_module() -> str | None:
    """The module behind /dev/kvm: kvm_intel, kvm_amd or kvm_pvm (from /sys/module, else
    /proc/modules), or None if none is loaded."""
    for name in BACKING_MODULES:
        if os.path.isdir(f"/sys/module/{name}"):
            return name
    try:
        with open("/proc/modules") as f:
            loaded = {line.split()[0] for line in f if line.strip()}
    except OSError:
        return None
    return next((name for name in BACKING_MODULES if name in loaded), None)


def _ioctl(fd: int, request: int, arg: Any, name: str, hint: str | None = None) -> int:
    return check(lib.osv_kvm_ioctl(fd, request, arg), name, hint)


def _ioctl_num(fd: int, request: int, arg: int, name: str) -> int:
    return check(lib.osv_kvm_ioctl_num(fd, request, arg), name)


class Kvm(_device_kvm.Kvm):
    """/dev/kvm, open read-write (osvirt.env.can("kvm")): the system ioctls."""

    def vcpu_mmap_size(self) -> int:
        """KVM_GET_VCPU_MMAP_SIZE: the bytes to map from a vCPU fd (struct kvm_run and what follows)."""
        return _ioctl_num(self._open_fd(), lib.KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")

    def msr_index_list(self) -> list[int]:
        """KVM_GET_MSR_INDEX_LIST: the MSRs a snapshot saves."""
        room = 256
        while True:
            indices = ffi.new("uint32_t[]", room)
            n = lib.osv_kvm_msr_index_list(self._open_fd(), indices, room)
            if n == -errno.E2BIG and room < 65536:
                room *= 4
                continue
            return list(indices[0:check(n, "KVM_GET_MSR_INDEX_LIST")])

    def create_vm(self) -> Vm:
        """KVM_CREATE_VM (type 0: the default machine)."""
        return Vm(self)


class Vm(OwnedFd):
    """A virtual machine's descriptor (KVM_CREATE_VM): memory, interrupt controllers, vCPUs."""

    what = "KVM VM"

    def __init__(self, kvm: Kvm) -> None:
        self.kvm = kvm
        self.fd = _ioctl_num(kvm._open_fd(), lib.KVM_CREATE_VM, 0, "KVM_CREATE_VM")
        os.set_inheritable(self.fd, False)  # KVM gives O_CLOEXEC already; said here for the reader

    def check_extension(self, capability: int) -> int:
        """KVM_CHECK_EXTENSION on the VM (some answers depend on the VM)."""
        return _ioctl_num(self._open_fd(), lib.KVM_CHECK_EXTENSION, capability, "KVM_CHECK_EXTENSION")

    def require_capabilities(self) -> None:
        """KVM_CHECK_EXTENSION of each of REQUIRED_CAPABILITIES: VmError naming those this KVM lacks."""
        missing = [f"KVM_CAP_{name} ({why})" for name, why in REQUIRED_CAPABILITIES.items()
                   if not self.check_extension(getattr(lib, f"KVM_CAP_{name}"))]
        if missing:
            raise VmError(f"KVM_CHECK_EXTENSION: /dev/kvm ({backing_module()}) lacks {'; '.join(missing)}")

    def set_user_memory_region(self, slot: int, guest_phys_addr: int, memory_size: int, userspace_addr: int,
                               *, log_dirty: bool = False) -> None:
        """KVM_SET_USER_MEMORY_REGION: guest physical [gpa, gpa + size) is host memory at userspace_addr
        (page-aligned); `log_dirty` turns on dirty-page logging for the slot. Size 0 deletes the slot."""
        if guest_phys_addr % 4096 or memory_size % 4096 or userspace_addr % 4096:
            raise ValueError("KVM_SET_USER_MEMORY_REGION: guest_phys_addr, memory_size and userspace_addr "
                             f"must be page-aligned, not {guest_phys_addr:#x}, {memory_size:#x}, {userspace_addr:#x}")
        region = ffi.new("struct kvm_userspace_memory_region *")
        region.slot, region.guest_phys_addr, region.memory_size = slot, guest_phys_addr, memory_size
        region.userspace_addr = userspace_addr
        region.flags = lib.KVM_MEM_LOG_DIRTY_PAGES if log_dirty else 0
        _ioctl(self._open_fd(), lib.KVM_SET_USER_MEMORY_REGION, region, "KVM_SET_USER_MEMORY_REGION")

    def get_dirty_log(self, slot: int, pages: int) -> bytes:
        """KVM_GET_DIRTY_LOG: a bitmap (bit n: page n of the slot written since the last call; the call
        clears it), `pages` bits rounded up to 64."""
        words = (pages + 63) // 64
        bitmap = ffi.new("uint64_t[]", max(words, 1))
        check(lib.osv_kvm_get_dirty_log(self._open_fd(), slot, bitmap), "KVM_GET_DIRTY_LOG")
        return bytes(ffi.buffer(bitmap, words * 8))

    def create_irqchip(self) -> None:
        """KVM_CREATE_IRQCHIP: the PIC pair, IOAPIC and a local APIC per vCPU, emulated in the kernel."""
        _ioctl_num(self._open_fd(), lib.KVM_CREATE_IRQCHIP, 0, "KVM_CREATE_IRQCHIP")

    def create_pit2(self) -> None:
        """KVM_CREATE_PIT2: the i8254 timer in the kernel (the speaker port a dummy)."""
        config = ffi.new("struct kvm_pit_config *")
        config.flags = lib.KVM_PIT_SPEAKER_DUMMY
        _ioctl(self._open_fd(), lib.KVM_CREATE_PIT2, config, "KVM_CREATE_PIT2")

    def irq_line(self, irq: int, level: bool) -> None:
        """KVM_IRQ_LINE: drive interrupt line `irq` (GSI: the PIC and the IOAPIC pin) to `level`."""
        line = ffi.new("struct kvm_irq_level *")
        line.irq, line.level = irq, 1 if level else 0
        _ioctl(self._open_fd(), lib.KVM_IRQ_LINE, line, "KVM_IRQ_LINE")

    def set_tss_addr(self, addr: int) -> None:
        """KVM_SET_TSS_ADDR: three pages of guest physical space Intel's real-mode emulation needs
        (an unsigned long argument: 0xfffbd000 does not fit a C int)."""
        _ioctl_num(self._open_fd(), lib.KVM_SET_TSS_ADDR, addr, "KVM_SET_TSS_ADDR")

    def set_identity_map_addr(self, addr: int) -> None:
        """KVM_SET_IDENTITY_MAP_ADDR: the page Intel's EPT-less real mode uses (a pointer to a u64)."""
        value = ffi.new("uint64_t *", addr)
        _ioctl(self._open_fd(), lib.KVM_SET_IDENTITY_MAP_ADDR, value, "KVM_SET_IDENTITY_MAP_ADDR")

    def _blob(self, get: int, set_: int | None, ctype: str, name: str, data: bytes | None,
              init: Any = None) -> bytes:
        obj = ffi.new(ctype)
        if init is not None:
            init(obj)
        if data is None:
            _ioctl(self._open_fd(), get, obj, f"KVM_GET_{name}")
            return bytes(ffi.buffer(obj))
        ffi.buffer(obj)[:] = data
        assert set_ is not None
        _ioctl(self._open_fd(), set_, obj, f"KVM_SET_{name}")
        return data

    def get_irqchip(self, chip: str) -> bytes:
        """KVM_GET_IRQCHIP of "pic_master", "pic_slave" or "ioapic": the raw struct kvm_irqchip."""
        def init(obj: Any) -> None:
            obj.chip_id = IRQCHIPS[chip]
        return self._blob(lib.KVM_GET_IRQCHIP, None, "struct kvm_irqchip *", "IRQCHIP", None, init)

    def set_irqchip(self, data: bytes) -> None:
        self._blob(lib.KVM_GET_IRQCHIP, lib.KVM_SET_IRQCHIP, "struct kvm_irqchip *", "IRQCHIP", data)

    def get_pit2(self) -> bytes:
        return self._blob(lib.KVM_GET_PIT2, None, "struct kvm_pit_state2 *", "PIT2", None)

    def set_pit2(self, data: bytes) -> None:
        self._blob(lib.KVM_GET_PIT2, lib.KVM_SET_PIT2, "struct kvm_pit_state2 *", "PIT2", data)

    def get_clock(self) -> bytes:
        """KVM_GET_CLOCK: the guest's kvmclock (what a restore sets again, so guest time goes on)."""
        return self._blob(lib.KVM_GET_CLOCK, None, "struct kvm_clock_data *", "CLOCK", None)

    def set_clock(self, data: bytes) -> None:
        obj = ffi.new("struct kvm_clock_data *")
        ffi.buffer(obj)[:] = data
        obj.flags = 0  # only KVM_CLOCK_REALTIME may be set on input; GET's flags mean something else
        _ioctl(self._open_fd(), lib.KVM_SET_CLOCK, obj, "KVM_SET_CLOCK")

    def save_state(self) -> dict[str, Any]:
        """What a snapshot keeps of the VM: the in-kernel PIC pair and IOAPIC, PIT and kvmclock, raw."""
        return {"irqchip": {chip: self.get_irqchip(chip) for chip in IRQCHIPS}, "pit2": self.get_pit2(),
                "clock": self.get_clock()}

    def restore_state(self, state: dict[str, Any]) -> None:
        self.set_pit2(state["pit2"])
        self.set_clock(state["clock"])
        for blob in state["irqchip"].values():
            self.set_irqchip(blob)

    def create_vcpu(self, vcpu_id: int = 0) -> Vcpu:
        """KVM_CREATE_VCPU, its kvm_run mapped."""
        return Vcpu(self, vcpu_id)


class Vcpu(OwnedFd):
    """A vCPU's descriptor (KVM_CREATE_VCPU) and its mapped struct kvm_run."""

    what = "KVM vCPU"
    _run_map: Mapping | None = None

    def __init__(self, vm: Vm, vcpu_id: int) -> None:
        self.vm, self.id = vm, vcpu_id
        self.fd = _ioctl_num(vm._open_fd(), lib.KVM_CREATE_VCPU, vcpu_id, "KVM_CREATE_VCPU")
        self._run_map = Mapping(vm.kvm.vcpu_mmap_size(), shared=True, fd=self.fd)
        self.run_struct: Any = ffi.cast("struct kvm_run *", self._run_map.address)
        self.exit: Any = ffi.new("osv_kvm_exit *")  # what the last KVM_RUN ended with, and the counts
        self._completion: Any = ffi.new("osv_kvm_exit *")

    def close(self) -> None:
        run_map, self._run_map = self._run_map, None
        if run_map is not None:
            self.run_struct = ffi.NULL
            run_map.close()
        super().close()

    # -- running ------------------------------------------------------------------
    def run(self, in_value: int = 0) -> int:
        """KVM_RUN: the exit reason (self.exit says the rest), or -errno (-EINTR: a kick or
        immediate_exit). `in_value` answers the previous exit's IO in or MMIO read."""
        return lib.osv_kvm_run(self.fd, self.run_struct, in_value, self.exit)  # type: ignore[no-any-return]

    def complete(self, in_value: int = 0) -> int:
        """KVM_RUN with immediate_exit set: finishes the instruction of a pending IO or MMIO exit (an IN or
        read answered with `in_value`) without running the guest, so its registers are consistent. Not
        counted as an exit. Returns -EINTR, as KVM does."""
        self.immediate_exit = True
        try:
            return lib.osv_kvm_run(self.fd, self.run_struct, in_value, self._completion)  # type: ignore[no-any-return]
        finally:
            self.immediate_exit = False

    @property
    def immediate_exit(self) -> bool:
        return bool(self.run_struct.immediate_exit)

    @immediate_exit.setter
    def immediate_exit(self, value: bool) -> None:
        self.run_struct.immediate_exit = 1 if value else 0

    def io_data(self) -> bytes:
        """The data of a rep ins/outs exit (count > 1): count * size bytes."""
        buf = ffi.new("uint8_t[]", self.exit.size * self.exit.count)
        lib.osv_kvm_io_data(self.run_struct, self.exit, buf, 0)
        return bytes(ffi.buffer(buf))

    def set_io_data(self, data: bytes) -> None:
        """Answer a rep ins exit with count * size bytes."""
        if len(data) != self.exit.size * self.exit.count:
            raise ValueError(f"rep ins: {self.exit.size * self.exit.count} bytes wanted, {len(data)} given")
        lib.osv_kvm_io_data(self.run_struct, self.exit, ffi.from_buffer(data), 1)

    # -- registers ----------------------------------------------------------------
    def _get(self, request: int, ctype: str, name: str) -> Any:
        obj = ffi.new(ctype)
        _ioctl(self._open_fd(), request, obj, name)
        return obj

    def get_regs(self) -> Any:
        """KVM_GET_REGS: a struct kvm_regs (rax..r15, rip, rflags)."""
        return self._get(lib.KVM_GET_REGS, "struct kvm_regs *", "KVM_GET_REGS")

    def set_regs(self, regs: Any) -> None:
        _ioctl(self._open_fd(), lib.KVM_SET_REGS, regs, "KVM_SET_REGS")

    def get_sregs(self) -> Any:
        """KVM_GET_SREGS: a struct kvm_sregs (segments, descriptor tables, control registers, EFER)."""
        return self._get(lib.KVM_GET_SREGS, "struct kvm_sregs *", "KVM_GET_SREGS")

    def set_sregs(self, sregs: Any) -> None:
        _ioctl(self._open_fd(), lib.KVM_SET_SREGS, sregs, "KVM_SET_SREGS")

    def get_blob(self, what: str) -> bytes:
        """The raw struct of KVM_GET_<what>: FPU, LAPIC, VCPU_EVENTS, MP_STATE, REGS or SREGS."""
        request, ctype = _BLOBS[what]
        return bytes(ffi.buffer(self._get(request[0], ctype, f"KVM_GET_{what}")))

    def set_blob(self, what: str, data: bytes) -> None:
        request, ctype = _BLOBS[what]
        obj = ffi.new(ctype)
        if len(data) != ffi.sizeof(obj[0]):
            raise ValueError(f"KVM_SET_{what}: {ffi.sizeof(obj[0])} bytes wanted (this kernel's header), "
                             f"{len(data)} given")
        ffi.buffer(obj)[:] = data
        _ioctl(self._open_fd(), request[1], obj, f"KVM_SET_{what}")

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        """KVM_GET_MSRS: {index: value} for those of `indices` the kernel reads (one it refuses is left
        out, the rest read on)."""
        values: dict[int, int] = {}
        todo = list(indices)
        while todo:
            idx = ffi.new("uint32_t[]", todo)
            out = ffi.new("uint64_t[]", len(todo))
            n = check(lib.osv_kvm_get_msrs(self._open_fd(), len(todo), idx, out), "KVM_GET_MSRS")
            values.update(zip(todo[:n], out[0:n]))
            todo = todo[n + 1:]  # the kernel stopped at todo[n]: skip it
        return values

    def set_msrs(self, msrs: dict[int, int]) -> int:
        """KVM_SET_MSRS: how many were set (the kernel stops at the first it refuses)."""
        indices = list(msrs)
        n = lib.osv_kvm_set_msrs(self._open_fd(), len(indices), ffi.new("uint32_t[]", indices),
                                 ffi.new("uint64_t[]", [msrs[i] for i in indices]))
        return check(n, "KVM_SET_MSRS")

    def save_state(self) -> dict[str, Any]:
        """What a snapshot keeps of the vCPU (paused, its pending instruction completed): the raw
        structs of _BLOBS and the MSRs of KVM_GET_MSR_INDEX_LIST, as [index, value] pairs."""
        msrs = self.get_msrs(self.vm.kvm.msr_index_list())
        return {"blobs": {name: self.get_blob(name) for name in _BLOBS}, "msrs": sorted(msrs.items())}

    def restore_state(self, state: dict[str, Any]) -> None:
        """Set them again: the segments and registers, the MSRs, then the LAPIC (after the APIC base
        MSR), MP state and pending events. A refused MSR raises VmError naming it."""
        blobs = state["blobs"]
        for name in ("SREGS", "REGS", "FPU"):
            self.set_blob(name, blobs[name])
        msrs = {int(i): int(v) for i, v in state["msrs"]}
        if self.set_msrs(msrs) != len(msrs):  # one at a time, to name the one refused
            refused = [hex(i) for i, v in msrs.items() if self.set_msrs({i: v}) != 1]
            raise VmError(f"KVM_SET_MSRS refused MSR {', '.join(refused)}")
        for name in ("LAPIC", "MP_STATE", "VCPU_EVENTS"):
            self.set_blob(name, blobs[name])

    def set_supported_cpuid(self) -> int:
        """KVM_SET_CPUID2 from KVM_GET_SUPPORTED_CPUID: the guest sees what the CPU and KVM offer.
        Returns the number of CPUID entries."""
        return check(lib.osv_kvm_set_supported_cpuid(self.vm.kvm._open_fd(), self._open_fd()),
                     "KVM_SET_CPUID2")


_BLOBS: dict[str, tuple[tuple[int, int], str]] = {
    "REGS": ((lib.KVM_GET_REGS, lib.KVM_SET_REGS), "struct kvm_regs *"),
    "SREGS": ((lib.KVM_GET_SREGS, lib.KVM_SET_SREGS), "struct kvm_sregs *"),
    "FPU": ((lib.KVM_GET_FPU, lib.KVM_SET_FPU), "struct kvm_fpu *"),
    "LAPIC": ((lib.KVM_GET_LAPIC, lib.KVM_SET_LAPIC), "struct kvm_lapic_state *"),
    "VCPU_EVENTS": ((lib.KVM_GET_VCPU_EVENTS, lib.KVM_SET_VCPU_EVENTS), "struct kvm_vcpu_events *"),
    "MP_STATE": ((lib.KVM_GET_MP_STATE, lib.KVM_SET_MP_STATE), "struct kvm_mp_state *"),
}
