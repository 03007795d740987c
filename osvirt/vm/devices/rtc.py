"""The CMOS real-time clock (MC146818) at ports 0x70 (index) and 0x71 (data).

A guest writes a register number to 0x70 (bit 7 there is the NMI mask, not
part of the number) and reads or writes it at 0x71. The time registers
(seconds 0x00, minutes 0x02, hours 0x04, weekday 0x06, day 0x07, month
0x08, year 0x09, century 0x32) read the host's clock (UTC) at the moment of
the read, in BCD unless status register B's DM bit (0x04) asks for binary,
24-hour unless its bit 0x02 is clear (then 12-hour, bit 7 for PM). Status A
says no update is in progress, C no interrupt, D that the battery is good.
The other bytes are the CMOS RAM: written and read back. Writes to the time
registers are dropped (the guest cannot set the host's clock).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["Rtc", "BASE_PORT", "REG_SECONDS", "REG_MINUTES", "REG_HOURS", "REG_WEEKDAY", "REG_DAY", "REG_MONTH",
           "REG_YEAR", "REG_CENTURY", "REG_A", "REG_B", "REG_C", "REG_D", "B_24H", "B_BINARY", "bcd"]

BASE_PORT = 0x70
REG_SECONDS, REG_MINUTES, REG_HOURS, REG_WEEKDAY = 0x00, 0x02, 0x04, 0x06
REG_DAY, REG_MONTH, REG_YEAR, REG_CENTURY = 0x07, 0x08, 0x09, 0x32
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
B_24H, B_BINARY = 0x02, 0x04
_TIME_REGS = (REG_SECONDS, REG_MINUTES, REG_HOURS, REG_WEEKDAY, REG_DAY, REG_MONTH, REG_YEAR, REG_CENTURY)


def bcd(value: int) -> int:
    """Binary-coded decimal of 0..99: 59 -> 0x59."""
    return (value // 10) << 4 | value % 10


class Rtc:
    """Attach at port 0x70, length 2. `clock` gives seconds since the epoch (default time.time)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.index = 0
        self.cmos = bytearray(128)
        self.cmos[REG_A] = 0x26  # 32.768 kHz time base, 1024 Hz rate; UIP (bit 7) clear
        self.cmos[REG_B] = B_24H  # BCD, 24-hour
        self.cmos[REG_D] = 0x80  # valid RAM and time: the battery is good

    def io_in(self, offset: int, size: int) -> int:
        if offset == 0:
            return self.index  # reads of the index port are not defined on every chipset; this is QEMU's answer
        return self._read(self.index)

    def io_out(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self.index = value & 0x7F  # bit 7: NMI disable, not part of the register number
        elif self.index not in _TIME_REGS and self.index not in (REG_C, REG_D):
            self.cmos[self.index] = value & 0xFF

    def _read(self, reg: int) -> int:
        if reg not in _TIME_REGS:
            return self.cmos[reg]
        t = time.gmtime(self.clock())
        hours = t.tm_hour
        pm = 0
        if not self.cmos[REG_B] & B_24H:
            pm = 0x80 if hours >= 12 else 0
            hours = hours % 12 or 12
        value = {REG_SECONDS: t.tm_sec, REG_MINUTES: t.tm_min, REG_HOURS: hours,
                 REG_WEEKDAY: (t.tm_wday + 1) % 7 + 1,  # 1 = Sunday
                 REG_DAY: t.tm_mday, REG_MONTH: t.tm_mon, REG_YEAR: t.tm_year % 100,
                 REG_CENTURY: t.tm_year // 100}[reg]
        return (value if self.cmos[REG_B] & B_BINARY else bcd(value)) | (pm if reg == REG_HOURS else 0)

    def snapshot(self) -> dict[str, Any]:
        return {"index": self.index, "cmos": self.cmos.hex()}

    def restore(self, state: dict[str, Any]) -> None:
        self.index = state["index"]
        self.cmos[:] = bytes.fromhex(state["cmos"])
