"""virtio 1.x over MMIO: the paravirtual devices a guest drives through shared rings.

A virtio device is a set of virtqueues in guest memory plus a small register
window. The guest (the driver) puts buffers in a queue's descriptor table,
offers them in the available ring and writes the queue's index to a
notification register: one exit for as many buffers as it queued. The host
(the device) takes them, does the work, puts them in the used ring and raises
an interrupt. So the cost is an exit per request, not an exit per byte as with
a UART's data register.

- `osvirt.vm.virtio.queue`: the split virtqueue (descriptor table, available
  ring, used ring; NEXT, WRITE and INDIRECT descriptors; event index), which
  checks every chain a guest hands it;
- `osvirt.vm.virtio.mmio`: the virtio-mmio transport, version 2 register
  layout: feature negotiation, the device status state machine with reset,
  queue setup, notification, interrupt status and acknowledgement;
- `osvirt.vm.virtio.blk`: virtio-blk backed by a host file;
- `osvirt.vm.virtio.console`: virtio-console, one port.

Numbers are the virtio 1.x specification's (OASIS, "Virtual I/O Device
(VIRTIO) Version 1.2": 2.1 status, 2.7 split virtqueues, 4.2 MMIO, 5.2 block,
5.3 console) and Linux's include/uapi/linux/virtio_*.h, which carry the same
values: the guest-facing ABI, so they are spelt here as the spec spells them.
"""
from osvirt.vm.errors import VmError

__all__ = [
    "VirtioError", "ChainError",
    "STATUS_ACKNOWLEDGE", "STATUS_DRIVER", "STATUS_DRIVER_OK", "STATUS_FEATURES_OK",
    "STATUS_DEVICE_NEEDS_RESET", "STATUS_FAILED",
    "F_RING_INDIRECT_DESC", "F_RING_EVENT_IDX", "F_VERSION_1",
]

# Device status (spec 2.1)
STATUS_ACKNOWLEDGE = 1
STATUS_DRIVER = 2
STATUS_DRIVER_OK = 4
STATUS_FEATURES_OK = 8
STATUS_DEVICE_NEEDS_RESET = 64
STATUS_FAILED = 128

# Reserved feature bits (spec 6)
F_RING_INDIRECT_DESC = 28
F_RING_EVENT_IDX = 29
F_VERSION_1 = 32


class VirtioError(VmError):
    """A virtio device refused what its driver did (a bad queue size, features it did not offer)."""


class ChainError(VirtioError):
    """A descriptor chain the device cannot use: a loop, an index past the queue, a buffer
    outside guest RAM, a readable descriptor after a writable one, a nested indirect
    table. The device stops using the queue and sets DEVICE_NEEDS_RESET: the host goes on."""
