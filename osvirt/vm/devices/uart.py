"""A 16550A UART, as a PC's COM1 (ports 0x3f8-0x3ff, IRQ 4): the serial console of a guest.

Its eight registers, by offset from the base port (DLAB is LCR bit 7):

    0  read RBR (received byte)       write THR (byte to send)     DLAB: DLL (divisor low)
    1  IER (interrupt enable)                                       DLAB: DLM (divisor high)
    2  read IIR (interrupt identity)  write FCR (FIFO control)
    3  LCR (line control)   4 MCR (modem control)   5 LSR (line status)
    6  MSR (modem status)   7 SCR (scratch)

A byte written to THR is sent at once (to `output`, and kept in
`transmitted`): THR is empty again right after, so LSR always shows THRE
and TEMT. The host types into the guest with `feed(data)`: bytes wait in
the receive FIFO (16 bytes; more is an overrun, LSR.OE), LSR.DR says one
is there, RBR reads it.

Interrupts, by priority, each only when its IER bit is set: line status
(an overrun; LSR read clears it), received data (the FIFO not empty),
THR empty (set when THR empties or ETBEI is turned on with THR empty;
cleared by writing THR or by reading IIR while it is the one IIR names).
The line (`connect_irq`) is driven to whether one is pending, each time
that changes, as QEMU's and kvmtool's 8250 do (MCR's OUT2, which gates the
line on a real PC, is not modelled). MCR's loopback (bit 4) sends THR to
the receive FIFO and shows MCR's outputs in MSR.
"""
from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

from osvirt.vm.bus import Irq, LevelIrq

__all__ = ["Uart", "COM1_BASE", "COM1_IRQ", "FIFO_SIZE", "IER_RDI", "IER_THRI", "IER_RLSI", "IER_MSI",
           "IIR_NO_INT", "IIR_RLSI", "IIR_RDI", "IIR_THRI", "IIR_MSI", "LSR_DR", "LSR_OE", "LSR_THRE", "LSR_TEMT",
           "LCR_DLAB", "MCR_LOOP"]

COM1_BASE, COM1_IRQ = 0x3F8, 4
FIFO_SIZE = 16
IER_RDI, IER_THRI, IER_RLSI, IER_MSI = 0x01, 0x02, 0x04, 0x08
IIR_NO_INT, IIR_MSI, IIR_THRI, IIR_RDI, IIR_RLSI = 0x01, 0x00, 0x02, 0x04, 0x06
IIR_FIFO_ENABLED = 0xC0
FCR_ENABLE, FCR_CLEAR_RX = 0x01, 0x02
LSR_DR, LSR_OE, LSR_THRE, LSR_TEMT = 0x01, 0x02, 0x20, 0x40
LCR_DLAB = 0x80
MCR_DTR, MCR_RTS, MCR_OUT1, MCR_OUT2, MCR_LOOP = 0x01, 0x02, 0x04, 0x08, 0x10
MSR_CTS, MSR_DSR, MSR_RI, MSR_DCD = 0x10, 0x20, 0x40, 0x80


class Uart:
    """A 16550A. `output(data)` gets every byte the guest sends (default: kept in `transmitted` only)."""

    def __init__(self, output: Callable[[bytes], object] | None = None) -> None:
        self.output = output
        self.transmitted = bytearray()
        self._lock = threading.Lock()  # feed() comes from host threads, the registers from the vCPU's
        self._line = LevelIrq()
        self._rx: collections.deque[int] = collections.deque()
        self.ier = self.lcr = self.mcr = self.scr = self.fcr = 0
        self.dll, self.dlm = 12, 0  # 9600 baud from the 1.8432 MHz clock; nothing here depends on it
        self.thri_pending = False
        self.overrun = False

    @property
    def interrupts(self) -> int:
        """Times the line went up."""
        return self._line.rises

    def connect_irq(self, irq: Irq) -> None:
        self._line.connect(irq)

    # -- the host side --------------------------------------------------------------
    def feed(self, data: bytes) -> int:
        """Bytes typed into the guest's receive FIFO; returns how many fitted (the rest overran)."""
        with self._lock:
            room = FIFO_SIZE - len(self._rx)
            self._rx.extend(data[:max(room, 0)])
            if len(data) > room:
                self.overrun = True
            self._update()
        return min(len(data), max(room, 0))

    # -- the guest side -------------------------------------------------------------
    def io_in(self, offset: int, size: int) -> int:
        with self._lock:
            value = self._read(offset)
            self._update()
            return value

    def io_out(self, offset: int, size: int, value: int) -> None:
        with self._lock:
            self._write(offset, value & 0xFF)
            self._update()

    def _read(self, offset: int) -> int:
        dlab = self.lcr & LCR_DLAB
        if offset == 0:
            if dlab:
                return self.dll
            return self._rx.popleft() if self._rx else 0
        if offset == 1:
            return self.dlm if dlab else self.ier
        if offset == 2:
            iir = self._identity()
            if iir == IIR_THRI:
                self.thri_pending = False  # reading IIR naming THRE clears it
            return iir | (IIR_FIFO_ENABLED if self.fcr & FCR_ENABLE else 0)
        if offset == 3:
            return self.lcr
        if offset == 4:
            return self.mcr
        if offset == 5:
            lsr = LSR_THRE | LSR_TEMT | (LSR_DR if self._rx else 0) | (LSR_OE if self.overrun else 0)
            self.overrun = False
            return lsr
        if offset == 6:
            if self.mcr & MCR_LOOP:  # the outputs wired back: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD
                m = self.mcr
                return ((m & MCR_RTS) << 3) | ((m & MCR_DTR) << 5) | ((m & MCR_OUT1) << 4) | ((m & MCR_OUT2) << 4)
            return MSR_DCD | MSR_DSR | MSR_CTS  # a terminal is there, ready
        return self.scr

    def _write(self, offset: int, value: int) -> None:
        dlab = self.lcr & LCR_DLAB
        if offset == 0:
            if dlab:
                self.dll = value
                return
            self._transmit(value)
        elif offset == 1:
            if dlab:
                self.dlm = value
                return
            if value & IER_THRI and not self.ier & IER_THRI:
                self.thri_pending = True  # THR is empty: turning ETBEI on raises THRE at once
            self.ier = value & 0x0F
        elif offset == 2:
            self.fcr = value
            if value & FCR_CLEAR_RX:
                self._rx.clear()
        elif offset == 3:
            self.lcr = value
        elif offset == 4:
            self.mcr = value & 0x1F
        elif offset == 7:
            self.scr = value
        # 5 (LSR) and 6 (MSR) are read-only: a write is dropped, as on the chip

    def _transmit(self, byte: int) -> None:
        if self.mcr & MCR_LOOP:
            if len(self._rx) < FIFO_SIZE:
                self._rx.append(byte)
            else:
                self.overrun = True
        else:
            self.transmitted.append(byte)
            if self.output is not None:
                self.output(bytes((byte,)))
        self.thri_pending = True  # sent at once: THR is empty again

    def _identity(self) -> int:
        if self.ier & IER_RLSI and self.overrun:
            return IIR_RLSI
        if self.ier & IER_RDI and self._rx:
            return IIR_RDI
        if self.ier & IER_THRI and self.thri_pending:
            return IIR_THRI
        return IIR_NO_INT

    def _update(self) -> None:
        self._line.set(self._identity() != IIR_NO_INT)

    # -- state ----------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"ier": self.ier, "lcr": self.lcr, "mcr": self.mcr, "scr": self.scr, "fcr": self.fcr,
                    "dll": self.dll, "dlm": self.dlm, "thri_pending": self.thri_pending,
                    "overrun": self.overrun, "rx": list(self._rx), "level": self._line.level}

    def restore(self, state: dict[str, Any]) -> None:
        with self._lock:
            for key in ("ier", "lcr", "mcr", "scr", "fcr", "dll", "dlm", "thri_pending", "overrun"):
                setattr(self, key, state[key])
            self._rx = collections.deque(state["rx"])
            self._line.level = not state["level"]  # so _update drives the line to the saved level
            self._update()
