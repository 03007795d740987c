"""The legacy PC devices every guest here gets, at a PC's ports (kvmtool's hw/ set): COM1's 16550A on
IRQ 4, the i8042's reset line, the CMOS RTC."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from osvirt.vm.devices.i8042 import COMMAND_PORT, I8042
from osvirt.vm.devices.rtc import BASE_PORT, Rtc
from osvirt.vm.devices.uart import COM1_BASE, COM1_IRQ, Uart

if TYPE_CHECKING:
    from osvirt.vm.machine import Machine

__all__ = ["PcDevices", "attach_pc_devices"]


class PcDevices(NamedTuple):
    uart: Uart
    i8042: I8042
    rtc: Rtc


def attach_pc_devices(machine: Machine, uart_output: Callable[[bytes], object] | None,
                      reset_reason: str) -> PcDevices:
    """Attach the three to `machine`'s port bus (as "uart", "i8042", "rtc": the names a snapshot keeps
    their state under); the i8042's reset stops the machine with `reset_reason`."""
    devices = PcDevices(Uart(uart_output), I8042(lambda: machine.request_stop(reset_reason)), Rtc())
    machine.pio.attach(COM1_BASE, 8, devices.uart, irq=machine.irq_line(COM1_IRQ), name="uart")
    machine.pio.attach(COMMAND_PORT, 1, devices.i8042, name="i8042")
    machine.pio.attach(BASE_PORT, 2, devices.rtc, name="rtc")
    return devices
