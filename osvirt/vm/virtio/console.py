"""virtio-console (virtio 1.x, 5.3) with one port: a console whose exits are per buffer.

Queue 0 (receiveq) holds writable buffers the driver lends the device for
input; queue 1 (transmitq) holds the driver's output. A guest that prints a
line puts it in one buffer and notifies once: one exit for the line, where a
16550 UART takes one exit per byte. Output goes to a host binary stream;
input given to `feed()` fills the receive buffers as the driver posts them.
EMERG_WRITE is offered: a byte written to the configuration's emerg_wr goes
out at once, without a queue (early output before the driver set queues up).
"""
from __future__ import annotations

import struct
import threading
from typing import IO, Any

from osvirt.vm.virtio.mmio import VirtioMmio
from osvirt.vm.virtio.queue import Virtqueue

__all__ = ["VirtioConsole", "DEVICE_ID", "F_SIZE", "F_MULTIPORT", "F_EMERG_WRITE", "RECEIVEQ", "TRANSMITQ"]

DEVICE_ID = 3
F_SIZE, F_MULTIPORT, F_EMERG_WRITE = 0, 1, 2
RECEIVEQ, TRANSMITQ = 0, 1
QUEUE_SIZE = 128
_EMERG_WR = 8  # offset of le32 emerg_wr in struct virtio_console_config {le16 cols, rows; le32 max_nr_ports, emerg_wr}


class VirtioConsole:
    """A virtio-console whose output goes to `output` (a binary stream, flushed per buffer)."""

    device_id = DEVICE_ID
    queue_sizes: tuple[int, ...] = (QUEUE_SIZE, QUEUE_SIZE)
    features = 1 << F_EMERG_WRITE

    def __init__(self, output: IO[bytes]) -> None:
        self.output = output
        self._pending = bytearray()  # input fed but not yet in a receive buffer
        self._pending_lock = threading.Lock()
        self._transport: VirtioMmio | None = None
        self.buffers_out = self.bytes_out = 0
        self.buffers_in = self.bytes_in = 0
        self.emergency_bytes = 0

    def bind(self, transport: VirtioMmio) -> None:
        self._transport = transport

    def config(self) -> bytes:
        return struct.pack("<HHII", 0, 0, 1, 0)

    def config_write(self, offset: int, data: bytes) -> None:
        if offset == _EMERG_WR:
            self.output.write(data[:1])
            self.output.flush()
            self.emergency_bytes += 1

    def reset(self) -> None:
        pass  # pending input stays for the next driver

    def notify(self, transport: VirtioMmio, index: int, queue: Virtqueue) -> None:
        if index == TRANSMITQ:
            while (chain := queue.pop()) is not None:
                data = chain.read()
                self.output.write(data)
                self.output.flush()
                self.buffers_out += 1
                self.bytes_out += len(data)
                queue.push(chain.head, 0)
        else:
            self._deliver(queue)
        transport.used_buffers(queue)

    def _deliver(self, queue: Virtqueue) -> None:
        with self._pending_lock:
            while self._pending and (chain := queue.pop()) is not None:
                n = chain.write(bytes(self._pending))
                del self._pending[:n]
                self.buffers_in += 1
                self.bytes_in += n
                queue.push(chain.head, n)

    def feed(self, data: bytes) -> None:
        """Input for the guest: into the receive buffers the driver posted, the rest when it posts more."""
        with self._pending_lock:
            self._pending += data
        if self._transport is not None:
            self._transport.serve(RECEIVEQ)

    @property
    def pending_input(self) -> int:
        return len(self._pending)

    def snapshot(self) -> dict[str, Any]:
        with self._pending_lock:
            return {"pending": bytes(self._pending), "buffers_out": self.buffers_out, "bytes_out": self.bytes_out,
                    "buffers_in": self.buffers_in, "bytes_in": self.bytes_in,
                    "emergency_bytes": self.emergency_bytes}

    def restore(self, state: dict[str, Any]) -> None:
        with self._pending_lock:
            self._pending = bytearray(state["pending"])
        self.buffers_out, self.bytes_out = state["buffers_out"], state["bytes_out"]
        self.buffers_in, self.bytes_in = state["buffers_in"], state["bytes_in"]
        self.emergency_bytes = state["emergency_bytes"]
