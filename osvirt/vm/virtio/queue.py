"""The split virtqueue (virtio 1.x, 2.7): three areas of guest memory a driver lays out.

- the descriptor table: `size` entries of 16 bytes, {u64 addr; u32 len;
  u16 flags; u16 next}; NEXT chains an entry to `next`, WRITE marks a buffer
  the device writes (else it reads it), INDIRECT makes `addr` point at a table
  of further descriptors (`len` bytes of them);
- the available ring (driver area): {u16 flags; u16 idx; u16 ring[size];
  u16 used_event}: the driver writes a chain's head at ring[idx % size], then
  increments idx;
- the used ring (device area): {u16 flags; u16 idx; {u32 id; u32 len}
  ring[size]; u16 avail_event}: the device writes the head it is done with and
  the bytes it wrote, then increments idx.

Indexes run freely modulo 2**16. With VIRTIO_F_RING_EVENT_IDX the driver
says in used_event after which used index it wants an interrupt, and the
device says in avail_event at which available index it wants a notification;
without it, the avail ring's flags bit 0 (NO_INTERRUPT) suppresses interrupts.

Everything here reads guest memory through a GuestRam, and every chain is
checked before the device acts on it: the guest can hand any bytes, and the
host must survive them (a ChainError, never an exception from the host's own
memory).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from osvirt.vm.errors import GuestMemoryError
from osvirt.vm.ram import GuestRam
from osvirt.vm.virtio import ChainError

__all__ = ["Virtqueue", "Chain", "DESC_F_NEXT", "DESC_F_WRITE", "DESC_F_INDIRECT", "AVAIL_F_NO_INTERRUPT",
           "MAX_SIZE", "need_event", "split"]

DESC_F_NEXT = 1
DESC_F_WRITE = 2
DESC_F_INDIRECT = 4
AVAIL_F_NO_INTERRUPT = 1
DESC_SIZE = 16
MAX_SIZE = 32768  # a split queue's size is a power of 2 up to 2**15


def need_event(event: int, new: int, old: int) -> bool:
    """Whether moving an index from `old` to `new` passed `event` (the spec's vring_need_event)."""
    return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF


def split(views: list[memoryview], n: int) -> tuple[list[memoryview], list[memoryview]]:
    """The first `n` bytes of a list of buffers, and the rest, as buffers (no copy)."""
    head: list[memoryview] = []
    for i, v in enumerate(views):
        if n <= 0:
            return head, views[i:]
        if len(v) <= n:
            head.append(v)
            n -= len(v)
        else:
            return head + [v[:n]], [v[n:]] + views[i + 1:]
    return head, []


@dataclass
class Chain:
    """A descriptor chain taken from the available ring: the buffers the device reads
    (`readable`) and then those it writes (`writable`), as views of guest memory."""
    head: int
    readable: list[memoryview] = field(default_factory=list)
    writable: list[memoryview] = field(default_factory=list)
    descriptors: int = 0

    @property
    def readable_len(self) -> int:
        return sum(len(v) for v in self.readable)

    @property
    def writable_len(self) -> int:
        return sum(len(v) for v in self.writable)

    def read(self) -> bytes:
        """Every readable byte of the chain, in order."""
        return b"".join(bytes(v) for v in self.readable)

    def write(self, data: bytes | memoryview, views: Iterable[memoryview] | None = None) -> int:
        """Copy `data` into the writable buffers (or `views`) in order; the bytes copied."""
        done = 0
        for v in self.writable if views is None else views:
            if done >= len(data):
                break
            n = min(len(v), len(data) - done)
            v[:n] = data[done:done + n]
            done += n
        return done


class Virtqueue:
    """One split virtqueue of `size` entries whose areas are at desc, avail and used in `ram`.

    `pop()` takes the next available chain (checked: a ChainError says what is
    wrong with it), `push(head, length)` puts it in the used ring, and
    `should_interrupt()` says whether the driver asked to be interrupted for
    what was pushed since the last call."""

    def __init__(self, ram: GuestRam, size: int, desc: int, avail: int, used: int, *,
                 event_idx: bool = False, indirect: bool = False,
                 last_avail: int = 0, used_idx: int = 0, signalled_used: int | None = None) -> None:
        if not 0 < size <= MAX_SIZE or size & (size - 1):
            raise ChainError(f"virtqueue: size {size} is not a power of 2 in [1, {MAX_SIZE}]")
        self.ram, self.size = ram, size
        self.desc, self.avail, self.used = desc, avail, used
        self.event_idx, self.indirect = event_idx, indirect
        for name, gpa, length, align in (("descriptor table", desc, DESC_SIZE * size, 16),
                                         ("available ring", avail, 6 + 2 * size, 2),
                                         ("used ring", used, 6 + 8 * size, 4)):
            if gpa % align:
                raise ChainError(f"virtqueue: the {name} at {gpa:#x} is not {align}-byte aligned")
            if not ram.contains(gpa, length):
                raise ChainError(f"virtqueue: the {name} [{gpa:#x}, {gpa + length:#x}) is outside guest RAM")
        self.last_avail = last_avail  # the next available-ring index the device will take
        self.used_idx = used_idx  # the device's copy of used.idx
        self.signalled_used = used_idx if signalled_used is None else signalled_used
        self.popped = 0
        self.pushed = 0

    def state(self) -> dict[str, int | bool]:
        return {"size": self.size, "desc": self.desc, "avail": self.avail, "used": self.used,
                "event_idx": self.event_idx, "indirect": self.indirect, "last_avail": self.last_avail,
                "used_idx": self.used_idx, "signalled_used": self.signalled_used}

    # -- the available ring ------------------------------------------------------
    def avail_idx(self) -> int:
        return self.ram.read_u16(self.avail + 2)

    def pending(self) -> int:
        """Chains the driver made available that the device has not taken (checked against the size)."""
        n = (self.avail_idx() - self.last_avail) & 0xFFFF
        if n > self.size:
            raise ChainError(f"virtqueue: avail.idx {self.avail_idx()} is {n} ahead of the device's "
                             f"{self.last_avail}, more than the queue's {self.size} entries")
        return n

    def pop(self) -> Chain | None:
        """The next available chain, or None if there is none."""
        if not self.pending():
            return None
        head = self.ram.read_u16(self.avail + 4 + 2 * (self.last_avail % self.size))
        self.last_avail = (self.last_avail + 1) & 0xFFFF
        if self.event_idx:  # avail_event: notify me when you make the next one available
            self.ram.write_u16(self.used + 4 + 8 * self.size, self.last_avail)
        self.popped += 1
        return self._chain(head)

    def _chain(self, head: int) -> Chain:
        if head >= self.size:
            raise ChainError(f"virtqueue: head {head} is past the queue's {self.size} descriptors")
        chain = Chain(head)
        table, entries, index = self.desc, self.size, head
        seen = 0
        in_indirect = False
        while True:
            seen += 1
            if seen > entries:  # a chain visits each descriptor at most once: longer is a loop
                raise ChainError(f"virtqueue: the chain from head {head} is longer than its table's "
                                 f"{entries} descriptors (a loop)")
            try:
                addr = self.ram.read_u64(table + DESC_SIZE * index)
                length = self.ram.read_u32(table + DESC_SIZE * index + 8)
                flags = self.ram.read_u16(table + DESC_SIZE * index + 12)
                nxt = self.ram.read_u16(table + DESC_SIZE * index + 14)
            except GuestMemoryError as e:
                raise ChainError(f"virtqueue: descriptor {index} of the chain from head {head}: {e}") from None
            chain.descriptors += 1
            if flags & DESC_F_INDIRECT:
                if in_indirect:
                    raise ChainError(f"virtqueue: chain from head {head}: an indirect table inside an indirect table")
                if not self.indirect:
                    raise ChainError(f"virtqueue: chain from head {head}: INDIRECT without VIRTIO_F_RING_INDIRECT_DESC")
                if flags & DESC_F_NEXT:
                    raise ChainError(f"virtqueue: chain from head {head}: INDIRECT and NEXT in one descriptor")
                if length == 0 or length % DESC_SIZE or not self.ram.contains(addr, length):
                    raise ChainError(f"virtqueue: chain from head {head}: an indirect table of {length} bytes at "
                                     f"{addr:#x} (a multiple of 16, inside guest RAM)")
                table, entries, index, seen, in_indirect = addr, length // DESC_SIZE, 0, 0, True
                continue
            try:
                view = self.ram.view(addr, length)
            except GuestMemoryError as e:
                raise ChainError(f"virtqueue: chain from head {head}, descriptor {index}: {e}") from None
            if flags & DESC_F_WRITE:
                chain.writable.append(view)
            elif chain.writable:
                raise ChainError(f"virtqueue: chain from head {head}: a readable descriptor after a writable one")
            else:
                chain.readable.append(view)
            if not flags & DESC_F_NEXT:
                return chain
            if nxt >= entries:
                raise ChainError(f"virtqueue: chain from head {head}: next {nxt} is past the table's {entries} entries")
            index = nxt

    # -- the used ring -----------------------------------------------------------
    def push(self, head: int, length: int) -> None:
        """Give chain `head` back to the driver, with `length` bytes written into it."""
        slot = self.used + 4 + 8 * (self.used_idx % self.size)
        self.ram.write_u32(slot, head)
        self.ram.write_u32(slot + 4, length)
        self.used_idx = (self.used_idx + 1) & 0xFFFF
        self.ram.write_u16(self.used + 2, self.used_idx)  # after the element: the driver reads idx first
        self.pushed += 1

    def should_interrupt(self) -> bool:
        """Whether the driver wants an interrupt for what was pushed since the last call."""
        old, new = self.signalled_used, self.used_idx
        if old == new:
            return False
        self.signalled_used = new
        if self.event_idx:
            used_event = self.ram.read_u16(self.avail + 4 + 2 * self.size)
            return need_event(used_event, new, old)
        return not self.ram.read_u16(self.avail) & AVAIL_F_NO_INTERRUPT
