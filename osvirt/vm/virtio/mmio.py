"""The virtio-mmio transport (virtio 1.x, 4.2.2): version 2 of its register window.

A 0x200-byte window on the MMIO bus; the driver makes only aligned 32-bit
accesses to the registers below 0x100, and accesses of 1, 2, 4 (or 8) bytes
to the device's configuration space from 0x100:

    0x000 MagicValue "virt"   0x004 Version 2         0x008 DeviceID
    0x00c VendorID            0x010 DeviceFeatures    0x014 DeviceFeaturesSel
    0x020 DriverFeatures      0x024 DriverFeaturesSel 0x030 QueueSel
    0x034 QueueNumMax         0x038 QueueNum          0x044 QueueReady
    0x050 QueueNotify         0x060 InterruptStatus   0x064 InterruptACK
    0x070 Status              0x080/0x084 QueueDesc   0x090/0x094 QueueDriver
    0x0a0/0x0a4 QueueDevice   0x0fc ConfigGeneration  0x100+ config

The driver's order (Linux's virtio_mmio.c and virtio.c do exactly this):
write Status 0 (reset), set ACKNOWLEDGE then DRIVER, read the 64 feature
bits 32 at a time through DeviceFeaturesSel, write the subset it takes
through DriverFeaturesSel, set FEATURES_OK and read it back (the device
clears it if it refuses the subset: without VIRTIO_F_VERSION_1, or with a
bit it did not offer), set up each queue (QueueSel, QueueNumMax, QueueNum,
the three areas' addresses, QueueReady 1), then DRIVER_OK. A write to
QueueNotify is the guest's doorbell: the device serves that queue. On a
used buffer the device sets InterruptStatus bit 0 and raises its line; the
driver reads InterruptStatus and writes the bits to InterruptACK, which
lowers the line once no bit is left.

A guest's mistake never raises on the host: a malformed chain, a queue
outside RAM, a bad register access set DEVICE_NEEDS_RESET (with a
configuration-change interrupt) or are dropped, and each is counted and
described in `errors`. Writing 0 to Status resets everything.
"""
from __future__ import annotations

import threading
from typing import Any, Protocol

from osvirt.vm.bus import Irq, LevelIrq
from osvirt.vm.errors import GuestMemoryError
from osvirt.vm.ram import GuestRam
from osvirt.vm.virtio import (ChainError, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC, F_VERSION_1, STATUS_ACKNOWLEDGE,
                              STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FAILED,
                              STATUS_FEATURES_OK)
from osvirt.vm.virtio.queue import Virtqueue

__all__ = ["VirtioMmio", "VirtioDevice", "WINDOW", "MAGIC", "VERSION", "VENDOR_ID", "INT_VRING", "INT_CONFIG"]

WINDOW = 0x200  # the register window's length on the bus
MAGIC = 0x74726976  # "virt", little-endian
VERSION = 2  # virtio 1.x register layout (1 was the legacy one)
VENDOR_ID = 0x5456534F  # "OSVT", little-endian as MagicValue is: free for a device to choose; Linux ignores it
INT_VRING = 1  # InterruptStatus bit 0: a used buffer
INT_CONFIG = 2  # bit 1: the configuration changed (or the device needs a reset)

# register offsets
MAGIC_VALUE, VERSION_REG, DEVICE_ID, VENDOR_ID_REG = 0x000, 0x004, 0x008, 0x00C
DEVICE_FEATURES, DEVICE_FEATURES_SEL, DRIVER_FEATURES, DRIVER_FEATURES_SEL = 0x010, 0x014, 0x020, 0x024
QUEUE_SEL, QUEUE_NUM_MAX, QUEUE_NUM, QUEUE_READY, QUEUE_NOTIFY = 0x030, 0x034, 0x038, 0x044, 0x050
INTERRUPT_STATUS, INTERRUPT_ACK, STATUS = 0x060, 0x064, 0x070
QUEUE_DESC_LOW, QUEUE_DESC_HIGH, QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH = 0x080, 0x084, 0x090, 0x094
QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH = 0x0A0, 0x0A4
SHM_SEL, SHM_LEN_LOW, SHM_LEN_HIGH, SHM_BASE_LOW, SHM_BASE_HIGH = 0x0AC, 0x0B0, 0x0B4, 0x0B8, 0x0BC
CONFIG_GENERATION, CONFIG = 0x0FC, 0x100

_ADDRESS_REGS = {QUEUE_DESC_LOW: ("desc", 0), QUEUE_DESC_HIGH: ("desc", 32),
                 QUEUE_DRIVER_LOW: ("driver", 0), QUEUE_DRIVER_HIGH: ("driver", 32),
                 QUEUE_DEVICE_LOW: ("device", 0), QUEUE_DEVICE_HIGH: ("device", 32)}
_TRANSPORT_FEATURES = (1 << F_VERSION_1) | (1 << F_RING_INDIRECT_DESC) | (1 << F_RING_EVENT_IDX)
_MAX_ERRORS = 32  # descriptions kept; the count goes on


class VirtioDevice(Protocol):
    """What a device type (blk, console) gives the transport."""

    device_id: int
    features: int  # its own feature bits (the transport adds VERSION_1, INDIRECT_DESC, EVENT_IDX)
    queue_sizes: tuple[int, ...]  # QueueNumMax of each queue

    def bind(self, transport: VirtioMmio) -> None:
        """The transport it is behind (a device that serves queues on its own, as console input does)."""
        ...

    def config(self) -> bytes:
        """Its configuration space as the driver reads it from 0x100."""
        ...

    def config_write(self, offset: int, data: bytes) -> None: ...

    def notify(self, transport: VirtioMmio, index: int, queue: Virtqueue) -> None:
        """Serve queue `index` after the driver's notification (push to the used ring, then
        `transport.used_buffers()`); a ChainError marks the device as needing a reset."""
        ...

    def reset(self) -> None: ...

    def snapshot(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


class _QueueRegs:
    """What the driver wrote for one queue; a Virtqueue exists while it is ready."""

    def __init__(self, num_max: int) -> None:
        self.num_max = num_max
        self.num = num_max
        self.desc = self.driver = self.device = 0
        self.live: Virtqueue | None = None
        self.notifies = 0


class VirtioMmio:
    """A virtio device behind the virtio-mmio register window, with guest memory `ram`."""

    def __init__(self, device: VirtioDevice, ram: GuestRam) -> None:
        self.device, self.ram = device, ram
        self.device_features = device.features | _TRANSPORT_FEATURES
        self.line = LevelIrq()
        self._lock = threading.RLock()  # the vCPU thread's accesses against a device's own thread (console input)
        self.bad_accesses = 0  # registers touched other than as 32-bit aligned words, unknown offsets
        self.errors: list[str] = []
        self.error_count = 0
        self._reset_state()
        device.bind(self)

    def _reset_state(self) -> None:
        self.status = 0
        self.device_features_sel = 0
        self.driver_features_sel = 0
        self.driver_features = 0
        self.queue_sel = 0
        self.interrupt_status = 0
        self.config_generation = 0
        self.queues = [_QueueRegs(n) for n in self.device.queue_sizes]

    def connect_irq(self, irq: Irq) -> None:
        self.line.connect(irq)

    # -- counts ------------------------------------------------------------------
    @property
    def interrupts(self) -> int:
        """Times the line went up."""
        return self.line.rises

    @property
    def notifies(self) -> int:
        return sum(q.notifies for q in self.queues)

    def negotiated(self, bit: int) -> bool:
        return bool(self.driver_features >> bit & 1)

    # -- interrupts --------------------------------------------------------------
    def _set_line(self) -> None:
        self.line.set(bool(self.interrupt_status))

    def used_buffers(self, queue: Virtqueue) -> None:
        """After a device pushed to `queue`: interrupt the driver if it asked for it."""
        if queue.should_interrupt():
            self.interrupt_status |= INT_VRING
            self._set_line()

    def fail(self, reason: str) -> None:
        """The device cannot go on (a guest's malformed chain or queue): DEVICE_NEEDS_RESET,
        a configuration-change interrupt, and the reason kept. Nothing is raised."""
        self.error_count += 1
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(reason)
        if self.status & STATUS_DRIVER_OK:  # before DRIVER_OK the driver is not listening
            self.status |= STATUS_DEVICE_NEEDS_RESET
            self.interrupt_status |= INT_CONFIG
            self._set_line()
        for q in self.queues:
            q.live = None

    # -- the bus's side ----------------------------------------------------------
    def mmio_read(self, offset: int, size: int) -> int:
        with self._lock:
            if offset >= CONFIG:
                return self._config_read(offset - CONFIG, size)
            if size != 4 or offset % 4:
                self.bad_accesses += 1
                return 0
            return self._register_read(offset)

    def mmio_write(self, offset: int, size: int, value: int) -> None:
        with self._lock:
            if offset >= CONFIG:
                self._config_write(offset - CONFIG, size, value)
            elif size != 4 or offset % 4:
                self.bad_accesses += 1
            else:
                self._register_write(offset, value)

    def _register_read(self, offset: int) -> int:
        q = self.queues[self.queue_sel] if self.queue_sel < len(self.queues) else None
        if offset == MAGIC_VALUE:
            return MAGIC
        if offset == VERSION_REG:
            return VERSION
        if offset == DEVICE_ID:
            return self.device.device_id
        if offset == VENDOR_ID_REG:
            return VENDOR_ID
        if offset == DEVICE_FEATURES:
            return (self.device_features >> (32 * self.device_features_sel)) & 0xFFFFFFFF \
                if self.device_features_sel < 2 else 0
        if offset == QUEUE_NUM_MAX:
            return q.num_max if q else 0  # 0: no such queue
        if offset == QUEUE_READY:
            return int(q is not None and q.live is not None)
        if offset == INTERRUPT_STATUS:
            return self.interrupt_status
        if offset == STATUS:
            return self.status
        if offset == CONFIG_GENERATION:
            return self.config_generation
        if offset in (SHM_LEN_LOW, SHM_LEN_HIGH):
            return 0xFFFFFFFF  # no shared memory region: a length of -1
        if offset in _ADDRESS_REGS and q is not None:
            area, shift = _ADDRESS_REGS[offset]
            return int(getattr(q, area) >> shift) & 0xFFFFFFFF
        self.bad_accesses += 1  # a write-only or unknown register
        return 0

    def _register_write(self, offset: int, value: int) -> None:
        q = self.queues[self.queue_sel] if self.queue_sel < len(self.queues) else None
        if offset == DEVICE_FEATURES_SEL:
            self.device_features_sel = value
        elif offset == DRIVER_FEATURES_SEL:
            self.driver_features_sel = value
        elif offset == DRIVER_FEATURES:
            if self.driver_features_sel < 2 and not self.status & STATUS_FEATURES_OK:
                shift = 32 * self.driver_features_sel
                self.driver_features = (self.driver_features & ~(0xFFFFFFFF << shift)) | (value << shift)
        elif offset == QUEUE_SEL:
            self.queue_sel = value
        elif offset == QUEUE_NUM:
            if q is not None and q.live is None:
                q.num = value
        elif offset == QUEUE_READY:
            if q is not None:
                self._queue_ready(q, value)
        elif offset == QUEUE_NOTIFY:
            self._notify(value & 0xFFFF)
        elif offset == INTERRUPT_ACK:
            self.interrupt_status &= ~value
            self._set_line()
        elif offset == STATUS:
            self._status_write(value)
        elif offset in _ADDRESS_REGS:
            if q is not None and q.live is None:
                area, shift = _ADDRESS_REGS[offset]
                setattr(q, area, (getattr(q, area) & ~(0xFFFFFFFF << shift)) | (value << shift))
        elif offset == SHM_SEL:
            pass
        else:
            self.bad_accesses += 1

    def _status_write(self, value: int) -> None:
        if value == 0:
            self.reset()
            return
        if value & ~self.status & STATUS_FEATURES_OK:  # the driver sets FEATURES_OK: accept the subset?
            refused = self._refuse_features()
            if refused:
                self.fail(refused)
                value &= ~STATUS_FEATURES_OK
        if value & STATUS_DRIVER_OK and not value & STATUS_FEATURES_OK:
            self.fail("Status: DRIVER_OK without FEATURES_OK")
            value &= ~STATUS_DRIVER_OK
        self.status = value | (self.status & STATUS_DEVICE_NEEDS_RESET)

    def _refuse_features(self) -> str | None:
        extra = self.driver_features & ~self.device_features
        if extra:
            return f"DriverFeatures: bits {extra:#x} were not offered (DeviceFeatures {self.device_features:#x})"
        if not self.negotiated(F_VERSION_1):
            return "DriverFeatures: without VIRTIO_F_VERSION_1 (bit 32): this device has no legacy interface"
        return None

    def _queue_ready(self, q: _QueueRegs, value: int) -> None:
        if not value:
            q.live = None
            return
        if q.live is not None:
            return
        if not 0 < q.num <= q.num_max or q.num & (q.num - 1):
            self.fail(f"QueueNum {q.num} of queue {self.queue_sel}: not a power of 2 in [1, {q.num_max}]")
            return
        try:
            q.live = Virtqueue(self.ram, q.num, q.desc, q.driver, q.device,
                               event_idx=self.negotiated(F_RING_EVENT_IDX),
                               indirect=self.negotiated(F_RING_INDIRECT_DESC))
        except ChainError as e:
            self.fail(f"queue {self.queue_sel}: {e}")

    def _notify(self, index: int) -> None:
        if index >= len(self.queues):
            self.bad_accesses += 1
            return
        q = self.queues[index]
        q.notifies += 1
        if q.live is None or not self.status & STATUS_DRIVER_OK or self.status & STATUS_DEVICE_NEEDS_RESET:
            return  # not set up, or broken until the driver resets the device
        try:
            self.device.notify(self, index, q.live)
        except (ChainError, GuestMemoryError) as e:
            self.fail(f"queue {index}: {e}")

    def queue(self, index: int) -> Virtqueue | None:
        """Queue `index` if the driver made it ready and the device works."""
        if self.status & STATUS_DEVICE_NEEDS_RESET or not self.status & STATUS_DRIVER_OK:
            return None
        return self.queues[index].live

    def serve(self, index: int) -> None:
        """Serve queue `index` from the device's own side (console input): as a notification
        would, without counting one."""
        with self._lock:
            q = self.queue(index)
            if q is not None:
                try:
                    self.device.notify(self, index, q)
                except (ChainError, GuestMemoryError) as e:
                    self.fail(f"queue {index}: {e}")

    def _config_read(self, offset: int, size: int) -> int:
        data = self.device.config()
        if size not in (1, 2, 4, 8) or offset % size or offset + size > len(data):
            self.bad_accesses += 1
            return 0
        return int.from_bytes(data[offset:offset + size], "little")

    def _config_write(self, offset: int, size: int, value: int) -> None:
        if size not in (1, 2, 4, 8) or offset % size or offset + size > len(self.device.config()):
            self.bad_accesses += 1
            return
        self.device.config_write(offset, value.to_bytes(size, "little"))

    def config_changed(self) -> None:
        """The device changed its configuration (a console resize): a new generation, an interrupt."""
        with self._lock:
            self.config_generation = (self.config_generation + 1) & 0xFFFFFFFF
            if self.status & STATUS_DRIVER_OK:
                self.interrupt_status |= INT_CONFIG
                self._set_line()

    def reset(self) -> None:
        """Status 0: every register, queue and the device back to their initial state; the line drops."""
        with self._lock:
            self._reset_state()
            self.device.reset()
            self._set_line()

    # -- state -------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "status": self.status, "device_features_sel": self.device_features_sel,
                "driver_features_sel": self.driver_features_sel, "driver_features": self.driver_features,
                "queue_sel": self.queue_sel, "interrupt_status": self.interrupt_status,
                "config_generation": self.config_generation,
                "queues": [{"num": q.num, "desc": q.desc, "driver": q.driver, "device": q.device,
                            "live": q.live.state() if q.live else None, "notifies": q.notifies}
                           for q in self.queues],
                "device": self.device.snapshot(),
            }

    def restore(self, state: dict[str, Any]) -> None:
        with self._lock:
            self._reset_state()
            for key in ("status", "device_features_sel", "driver_features_sel", "driver_features", "queue_sel",
                        "interrupt_status", "config_generation"):
                setattr(self, key, int(state[key]))
            if len(state["queues"]) != len(self.queues):
                raise ValueError(f"virtio-mmio restore: {len(state['queues'])} queues in the state, "
                                 f"{len(self.queues)} on this device")
            for q, saved in zip(self.queues, state["queues"]):
                q.num, q.desc, q.driver, q.device = saved["num"], saved["desc"], saved["driver"], saved["device"]
                q.notifies = saved["notifies"]
                live = saved["live"]
                if live is not None:
                    q.live = Virtqueue(self.ram, live["size"], live["desc"], live["avail"], live["used"],
                                       event_idx=live["event_idx"], indirect=live["indirect"],
                                       last_avail=live["last_avail"], used_idx=live["used_idx"],
                                       signalled_used=live["signalled_used"])
            self.device.restore(state["device"])
            self._set_line()
