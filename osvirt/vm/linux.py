"""Linux in a Machine: the PC devices a kernel expects, the loader's boot state applied, the console watched.

`LinuxGuest` attaches a 16550A at COM1 (IRQ 4), the i8042's reset port and a
CMOS RTC, as kvmtool does for a serial-console guest; with a `disk`, a
virtio-blk over virtio-mmio in the MMIO hole, announced on the command line
as `virtio_mmio.device=<size>@<base>:<irq>` (a kernel with
VIRTIO_MMIO_CMDLINE_DEVICES and virtio-blk built in finds it there; Debian's
has them as modules and without that option, so its disk appears only once
an initramfs loads them). The kernel is loaded by osvirt.vm.loader (its
payload unpacked on the host unless `unpack=False`), and the BootState
applied with KVM_SET_SREGS and KVM_SET_REGS.
"""
from __future__ import annotations

import os
import threading
import time
from typing import IO, Any, Protocol

from osvirt.vm.devices.pc import attach_pc_devices
from osvirt.vm.loader import BootState, load_linux
from osvirt.vm.machine import MMIO_HOLE, Machine
from osvirt.vm.virtio.blk import VirtioBlk
from osvirt.vm.virtio.mmio import WINDOW, VirtioMmio

__all__ = ["LinuxGuest", "DEFAULT_CMDLINE", "VIRTIO_BASE", "VIRTIO_IRQ", "apply"]

# reboot=k: a reboot pulses the i8042's reset line, which stops the machine; panic=-1 reboots at once
DEFAULT_CMDLINE = "console=ttyS0 earlyprintk=ttyS0 reboot=k panic=-1"
VIRTIO_BASE = MMIO_HOLE + 0x1000_0000  # 0xd0000000, as kvmtool and Firecracker place theirs
VIRTIO_IRQ = 5


class _Vcpu(Protocol):
    def get_sregs(self) -> Any: ...

    def set_sregs(self, sregs: Any) -> None: ...

    def get_regs(self) -> Any: ...

    def set_regs(self, regs: Any) -> None: ...


def apply(state: BootState, vcpu: _Vcpu) -> None:
    """KVM_GET_SREGS, the boot state's segments and control registers, KVM_SET_SREGS; then the registers."""
    sregs = vcpu.get_sregs()
    state.fill_sregs(sregs)
    vcpu.set_sregs(sregs)
    regs = vcpu.get_regs()
    state.fill_regs(regs)
    vcpu.set_regs(regs)


class LinuxGuest:
    """A Linux kernel (bzImage or ELF vmlinux) loaded into `machine`, its serial console copied to `output`."""

    def __init__(self, machine: Machine, kernel: str | os.PathLike[str], *, initrd: str | os.PathLike[str] | None = None,
                 cmdline: str = DEFAULT_CMDLINE, disk: str | os.PathLike[str] | None = None, read_only: bool = False,
                 output: IO[bytes] | None = None, unpack: bool = True) -> None:
        self.machine = m = machine
        self.output = output
        self.console = bytearray()  # everything the guest wrote to COM1
        self._printed = threading.Condition()
        self.uart, self.i8042, self.rtc = attach_pc_devices(m, self._emit, "i8042 reset (the guest rebooted)")
        self.disk: VirtioBlk | None = None
        self.virtio: VirtioMmio | None = None
        if disk is not None:
            self.disk = VirtioBlk(disk, read_only=read_only)
            self.virtio = VirtioMmio(self.disk, m.ram)
            m.mmio.attach(VIRTIO_BASE, WINDOW, self.virtio, irq=m.irq_line(VIRTIO_IRQ), name="virtio-blk")
            cmdline += f" virtio_mmio.device={WINDOW}@{VIRTIO_BASE:#x}:{VIRTIO_IRQ}"
        self.cmdline = cmdline
        try:
            self.state = load_linux(m.ram, kernel, cmdline=cmdline, initrd=initrd, unpack=unpack)
            apply(self.state, m.vcpu)
        except BaseException:
            self.close()
            raise
        self.started: float | None = None

    def _emit(self, data: bytes) -> None:
        with self._printed:
            self.console += data
            self._printed.notify_all()
        if self.output is not None:
            self.output.write(data)
            self.output.flush()

    def start(self) -> None:
        self.started = time.monotonic()
        self.machine.start()

    def wait_for(self, text: bytes, timeout: float) -> float | None:
        """Seconds from start until `text` appeared on the console; None if it did not within
        `timeout` or the guest stopped first."""
        deadline = time.monotonic() + timeout
        with self._printed:
            while text not in self.console:
                left = deadline - time.monotonic()
                if left <= 0 or not self.machine.running:
                    return None
                self._printed.wait(min(left, 0.5))
        assert self.started is not None
        return time.monotonic() - self.started

    def close(self) -> None:
        if self.disk is not None:
            self.disk.close()
