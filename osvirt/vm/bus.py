"""Buses: where a guest's port I/O and MMIO accesses go.

A machine has two: the port bus (x86 IN/OUT, 64 KiB of ports) and the MMIO
bus (guest physical addresses no RAM backs). A device is attached over a
range [base, base + length) and sees offsets from `base`:

- a port device implements `io_in(offset, size) -> int` and
  `io_out(offset, size, value)` (PortDevice);
- an MMIO device implements `mmio_read(offset, size) -> int` and
  `mmio_write(offset, size, value)` (MmioDevice).

`size` is the access width in bytes (1, 2, 4, or 8 for MMIO); values are
unsigned ints of that width. An access no device claims is handled here, as
hardware does: a read returns all ones (0xff.. of the width, what a PC's
floating bus reads), a write is dropped, and both are counted
(`unclaimed_reads`, `unclaimed_writes`). Nothing a guest does on a bus
raises on the host, except a device's own exceptions.

Interrupts: a device that raises one takes `irq`, a Callable[[bool], None]
driving a level-triggered line (True: asserted). Pass it to `attach(...,
irq=...)`, which calls the device's `connect_irq(irq)` (IrqDevice); in a
machine, `Machine.irq_line(n)` makes one that issues KVM_IRQ_LINE, in a test
any callable recording the levels does.

State: a device may implement `snapshot() -> dict` and `restore(dict)` (plain
data: ints, str, bytes, lists, dicts): `Bus.snapshot()` gathers them by
attachment name for a machine snapshot, `Bus.restore()` hands them back.

`Bus.trace`, when set to a list, records every access as an Access: a guest
run's accesses can be kept and replayed against a device without /dev/kvm
(`replay`).
"""
from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from osvirt.vm.errors import BusError

__all__ = ["PortDevice", "MmioDevice", "IrqDevice", "StatefulDevice", "Irq", "LevelIrq", "Attachment", "Access",
           "Bus", "replay", "ones"]

Irq = Callable[[bool], None]  # a level-triggered interrupt line: irq(True) asserts it, irq(False) deasserts


@runtime_checkable
class PortDevice(Protocol):
    """A device on the port bus (x86 IN/OUT)."""

    def io_in(self, offset: int, size: int) -> int: ...

    def io_out(self, offset: int, size: int, value: int) -> None: ...


@runtime_checkable
class MmioDevice(Protocol):
    """A device on the MMIO bus."""

    def mmio_read(self, offset: int, size: int) -> int: ...

    def mmio_write(self, offset: int, size: int, value: int) -> None: ...


@runtime_checkable
class IrqDevice(Protocol):
    """A device that raises interrupts: `attach(..., irq=line)` hands it its line."""

    def connect_irq(self, irq: Irq) -> None: ...


@runtime_checkable
class StatefulDevice(Protocol):
    """A device whose state a machine snapshot saves beside it."""

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


class LevelIrq:
    """A device's end of its interrupt line: `set(level)` drives the line (once connected) only when the
    level changes, and counts the rises (`rises`: the interrupts raised)."""

    def __init__(self) -> None:
        self.irq: Irq | None = None
        self.level = False
        self.rises = 0

    def connect(self, irq: Irq) -> None:
        self.irq = irq

    def set(self, level: bool) -> None:
        if level != self.level:
            self.level = level
            if level:
                self.rises += 1
            if self.irq is not None:
                self.irq(level)


def ones(size: int) -> int:
    """All ones of `size` bytes: what an unclaimed read returns."""
    return (1 << (8 * size)) - 1


class Access(NamedTuple):
    """One guest access as Bus.trace records it: `op` is "r" or "w", `value` what was read or written."""
    op: str
    addr: int
    size: int
    value: int


@dataclasses.dataclass(eq=False)
class Attachment:
    """A device attached at [base, base + length), with its access counts."""
    base: int
    length: int
    device: object
    name: str
    reads: int = 0
    writes: int = 0

    @property
    def end(self) -> int:
        return self.base + self.length


class Bus:
    """A port bus (kind="pio": devices are PortDevices) or an MMIO bus (kind="mmio": MmioDevices)."""

    def __init__(self, kind: Literal["pio", "mmio"] = "pio", name: str | None = None) -> None:
        if kind not in ("pio", "mmio"):
            raise ValueError(f"Bus: kind must be 'pio' or 'mmio', not {kind!r}")
        self.kind = kind
        self.name = name or kind
        self._limit = 1 << 16 if kind == "pio" else 1 << 64
        self._bases: list[int] = []  # sorted bases, parallel to _attached
        self._attached: list[Attachment] = []
        # addr -> (attachment, read method, write method): filled on first access to each address
        self._hits: dict[int, tuple[Attachment, Callable[[int, int], int], Callable[[int, int, int], None]]] = {}
        self.unclaimed_reads = 0
        self.unclaimed_writes = 0
        self.unclaimed_last: Access | None = None  # the latest unclaimed access
        self.trace: list[Access] | None = None

    def __repr__(self) -> str:
        return f"Bus({self.kind!r}, {[(a.name, hex(a.base), a.length) for a in self._attached]})"

    # -- attaching ---------------------------------------------------------------
    def attach(self, base: int, length: int, device: object, *, irq: Irq | None = None,
               name: str | None = None) -> Attachment:
        """Attach `device` over [base, base + length); `irq` goes to its connect_irq. Raises BusError
        if the range is empty, outside the bus or overlaps an attached one."""
        wanted = PortDevice if self.kind == "pio" else MmioDevice
        if not isinstance(device, wanted):
            raise TypeError(f"{self.name} bus: {type(device).__name__} is not a {wanted.__name__} "
                            f"({'io_in/io_out' if self.kind == 'pio' else 'mmio_read/mmio_write'})")
        if type(base) is not int or type(length) is not int or length <= 0 or base < 0 or base + length > self._limit:
            raise BusError(f"{self.name} bus: range base={base!r} length={length!r} is empty or outside "
                           f"[0, {self._limit:#x})")
        name = name or f"{type(device).__name__}@{base:#x}"
        if any(a.name == name for a in self._attached):
            raise BusError(f"{self.name} bus: an attachment is already named {name!r}")
        i = bisect.bisect_right(self._bases, base)
        for other in self._attached[max(i - 1, 0):i + 1]:
            if base < other.end and other.base < base + length:
                raise BusError(f"{self.name} bus: [{base:#x}, {base + length:#x}) overlaps {other.name} at "
                               f"[{other.base:#x}, {other.end:#x})")
        attachment = Attachment(base, length, device, name)
        self._bases.insert(i, base)
        self._attached.insert(i, attachment)
        self._hits.clear()
        if irq is not None:
            if not isinstance(device, IrqDevice):
                raise TypeError(f"{self.name} bus: {name} takes no interrupt line (no connect_irq)")
            device.connect_irq(irq)
        return attachment

    def detach(self, name: str) -> None:
        for i, a in enumerate(self._attached):
            if a.name == name:
                del self._attached[i], self._bases[i]
                self._hits.clear()
                return
        raise KeyError(f"{self.name} bus: nothing attached as {name!r}")

    @property
    def attachments(self) -> list[Attachment]:
        return list(self._attached)

    def _lookup(self, addr: int) -> Attachment | None:
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0 and addr < self._attached[i].end:
            return self._attached[i]
        return None

    def find(self, addr: int) -> tuple[object, int] | None:
        """(device, offset) for the device claiming `addr`, or None if none does."""
        a = self._lookup(addr)
        return None if a is None else (a.device, addr - a.base)

    def _entry(self, addr: int) -> tuple[Attachment, Callable[[int, int], int], Callable[[int, int, int], None]] | None:
        a = self._lookup(addr)
        if a is None:
            return None
        dev: Any = a.device
        entry = (a, dev.io_in, dev.io_out) if self.kind == "pio" else (a, dev.mmio_read, dev.mmio_write)
        if len(self._hits) < 4096:
            self._hits[addr] = entry
        return entry

    # -- dispatch ----------------------------------------------------------------
    def read(self, addr: int, size: int) -> int:
        """A guest read of `size` bytes at `addr`: the device's answer, all ones if none claims it."""
        entry = self._hits.get(addr) or self._entry(addr)
        if entry is None:
            self.unclaimed_reads += 1
            value = ones(size)
            self.unclaimed_last = Access("r", addr, size, value)
        else:
            a = entry[0]
            a.reads += 1
            value = entry[1](addr - a.base, size) & ones(size)
        if self.trace is not None:
            self.trace.append(Access("r", addr, size, value))
        return value

    def write(self, addr: int, size: int, value: int) -> None:
        """A guest write of `size` bytes at `addr`: to the device claiming it, dropped if none does."""
        if self.trace is not None:
            self.trace.append(Access("w", addr, size, value))
        entry = self._hits.get(addr) or self._entry(addr)
        if entry is None:
            self.unclaimed_writes += 1
            self.unclaimed_last = Access("w", addr, size, value)
            return
        a = entry[0]
        a.writes += 1
        entry[2](addr - a.base, size, value)

    # -- counts and state --------------------------------------------------------
    def counts(self) -> dict[str, dict[str, int]]:
        """{attachment name: {"reads", "writes"}}, and "unclaimed"."""
        out = {a.name: {"reads": a.reads, "writes": a.writes} for a in self._attached}
        out["unclaimed"] = {"reads": self.unclaimed_reads, "writes": self.unclaimed_writes}
        return out

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """{attachment name: device.snapshot()} for every device that has state."""
        return {a.name: a.device.snapshot() for a in self._attached if isinstance(a.device, StatefulDevice)}

    def restore(self, states: dict[str, dict[str, Any]]) -> None:
        """Hand each attached device its state from snapshot(); a name not attached here raises BusError."""
        by_name = {a.name: a for a in self._attached}
        missing = sorted(set(states) - set(by_name))
        if missing:
            raise BusError(f"{self.name} bus: the snapshot has state for {', '.join(missing)}, not attached here")
        for name, state in states.items():
            device = by_name[name].device
            if not isinstance(device, StatefulDevice):
                raise BusError(f"{self.name} bus: {name} has no restore()")
            device.restore(state)


def replay(bus: Bus, accesses: Iterable[Access]) -> list[tuple[Access, int | None]]:
    """Play recorded accesses on `bus`: [(access, value read now or None for a write)]."""
    out: list[tuple[Access, int | None]] = []
    for access in accesses:
        if access.op == "r":
            out.append((access, bus.read(access.addr, access.size)))
        elif access.op == "w":
            bus.write(access.addr, access.size, access.value)
            out.append((access, None))
        else:
            raise ValueError(f"replay: op must be 'r' or 'w', not {access.op!r}")
    return out
