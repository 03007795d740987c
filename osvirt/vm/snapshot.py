"""Snapshot and restore of a Machine, Firecracker's way: a file of state, then guest memory.

Each part saves its own state beside itself (Firecracker's persist.rs next
to each device): the vCPU (`Vcpu.save_state`: regs, sregs, FPU, LAPIC, MP
state, pending events, MSRs), the VM (`Vm.save_state`: the in-kernel PIC
pair, IOAPIC, PIT and kvmclock), and each device on the buses (its own
snapshot()/restore(), gathered by `Bus.snapshot` under its attachment name).
This module holds what joins them: the file format, which pages go in, and
the lineage of incremental snapshots.

The file, format VERSION:

    MAGIC ("OSVIRT-VM-SNAPSHOT\\n"), a u64 (little-endian): the header's length,
    the header: JSON {"version", "id", "memory_size", "vcpu", "vm", "devices",
                      "pages": [[first page, count], ...], "parent": {"path", "id"} (incremental only)},
    then the pages the header lists, in its order, 4 KiB each.

bytes anywhere in a state are stored as {"base64": "..."}. A full snapshot
holds every page but those all zero (a fresh machine's RAM is zeros
already); an incremental one only the pages written since the previous
snapshot or restore (KVM's dirty log for the guest's writes, GuestRam.dirty
for the host's), and names that file and its id as its parent: a restore
loads the parent first and checks it is still the one. The file is written
at a temp name and renamed (osvirt.naming.replacing): a reader never sees
half of it, and a SIGKILL leaves none of it behind.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import struct
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from osvirt.memory import PAGE_SIZE
from osvirt.naming import replacing
from osvirt.vm.errors import VmError

if TYPE_CHECKING:
    from osvirt.vm.machine import Machine

__all__ = ["MAGIC", "VERSION", "Lineage", "save", "restore"]

MAGIC = b"OSVIRT-VM-SNAPSHOT\n"
VERSION = 1
_LENGTH = struct.Struct("<Q")


@dataclasses.dataclass
class Lineage:
    """What a machine's next incremental snapshot builds on: the pages written since its last snapshot or
    restore (a bitmap, which Machine.dirty_pages fills), and that snapshot's id and path."""
    dirty: bytearray
    parent_id: str | None = None
    parent_path: str | None = None

    def mark(self, pages: Iterable[int]) -> None:
        """Add these page numbers to the bitmap."""
        for page in pages:
            self.dirty[page >> 3] |= 1 << (page & 7)

    def pages(self) -> list[int]:
        return [p for p in range(len(self.dirty) * 8) if self.dirty[p >> 3] >> (p & 7) & 1]

    def reset(self, snapshot_id: str, path: str) -> None:
        self.dirty[:] = bytes(len(self.dirty))
        self.parent_id, self.parent_path = snapshot_id, os.path.abspath(path)


def _encode(obj: object) -> object:
    if isinstance(obj, (bytes, bytearray)):
        return {"base64": base64.b64encode(obj).decode()}
    raise TypeError(f"snapshot: a device state holds a {type(obj).__name__}, not plain data")


def _decode(obj: dict[str, Any]) -> object:
    return base64.b64decode(obj["base64"]) if obj.keys() == {"base64"} else obj


def _ranges(pages: list[int]) -> list[tuple[int, int]]:
    """[(start, count)] runs of consecutive page numbers."""
    runs: list[tuple[int, int]] = []
    for page in pages:
        if runs and runs[-1][0] + runs[-1][1] == page:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((page, 1))
    return runs


def _nonzero_pages(machine: Machine) -> list[int]:
    """Every page but those all zero: a page never touched is neither present nor in swap (pagemap),
    and the rest are compared with zeros."""
    view = machine.ram.view(0, machine.memory_size)
    zero = bytes(PAGE_SIZE)
    return [p for p, st in enumerate(machine.memory.pagemap()) if (st.present or st.swapped)
            and view[p * PAGE_SIZE:(p + 1) * PAGE_SIZE] != zero]


def save(machine: Machine, path: str | os.PathLike[str], *, incremental: bool = False) -> dict[str, Any]:
    """Save the paused (or not started) `machine` to `path`; `incremental`: only the pages written since
    its previous snapshot (or restore), which becomes the parent. Returns what was written."""
    if machine.running and not machine.parked:
        raise VmError("Machine.snapshot: pause() first (the vCPU is running)")
    lineage = machine.lineage
    if incremental and lineage.parent_id is None:
        raise VmError("Machine.snapshot(incremental=True): no previous snapshot or restore to build on")
    t0 = time.perf_counter_ns()
    state: dict[str, Any] = {
        "version": VERSION, "id": uuid.uuid4().hex, "memory_size": machine.memory_size,
        "vcpu": machine.vcpu.save_state(), "vm": machine.vm.save_state(),
        "devices": {"pio": machine.pio.snapshot(), "mmio": machine.mmio.snapshot()},
    }
    machine.dirty_pages()  # the guest's writes, into the lineage
    lineage.mark(machine.ram.dirty or ())  # the host's
    if incremental:
        chosen = lineage.pages()
        state["parent"] = {"path": lineage.parent_path, "id": lineage.parent_id}
    else:
        chosen = _nonzero_pages(machine)
    state["pages"] = _ranges(chosen)
    header = json.dumps(state, default=_encode).encode()
    view = machine.ram.view(0, machine.memory_size)
    with replacing(path) as f:
        f.write(MAGIC + _LENGTH.pack(len(header)) + header)
        for start, count in state["pages"]:
            f.write(view[start * PAGE_SIZE:(start + count) * PAGE_SIZE])
    lineage.reset(state["id"], os.fspath(path))
    if machine.ram.dirty is not None:
        machine.ram.dirty.clear()
    return {"path": os.fspath(path), "pages": len(chosen), "bytes": os.path.getsize(path),
            "incremental": incremental, "ms": (time.perf_counter_ns() - t0) / 1e6}


def restore(machine: Machine, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a snapshot (and its parents, for an incremental one) into `machine`, which must be built
    alike (memory size, devices under the same names) and never started: its start() goes on where
    the saved guest was."""
    if machine.started:
        raise VmError("Machine.restore: into a machine that never ran (a full snapshot leaves out "
                      "the pages that were all zero)")
    t0 = time.perf_counter_ns()
    path = os.fspath(path)
    state = _load_memory(machine, path)
    try:
        machine.vcpu.restore_state(state["vcpu"])
    except VmError as e:
        raise VmError(f"{path}: {e}") from None
    machine.vm.restore_state(state["vm"])
    machine.pio.restore(state["devices"]["pio"])
    machine.mmio.restore(state["devices"]["mmio"])
    machine.dirty_pages()  # the restore's own writes are not the guest's
    machine.lineage.reset(state["id"], path)
    if machine.ram.dirty is not None:
        machine.ram.dirty.clear()
    return {"path": path, "ms": (time.perf_counter_ns() - t0) / 1e6}


def _load_memory(machine: Machine, path: str) -> dict[str, Any]:
    """Read `path`'s header and pages into RAM, its parent's first; the header."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise VmError(f"{path}: not an osvirt VM snapshot")
        (length,) = _LENGTH.unpack(f.read(_LENGTH.size))
        state: dict[str, Any] = json.loads(f.read(length), object_hook=_decode)
        if state.get("version") != VERSION:
            raise VmError(f"{path}: snapshot format version {state.get('version')}; this osvirt reads {VERSION}")
        if state["memory_size"] != machine.memory_size:
            raise VmError(f"{path}: a snapshot of {state['memory_size'] >> 20} MiB, this machine has "
                          f"{machine.memory_size >> 20} MiB")
        parent = state.get("parent")
        if parent and _load_memory(machine, parent["path"])["id"] != parent["id"]:
            raise VmError(f"{path}: its parent {parent['path']} is not the snapshot it was taken after")
        view = machine.ram.view(0, machine.memory_size)
        for start, count in state["pages"]:
            if f.readinto(view[start * PAGE_SIZE:(start + count) * PAGE_SIZE]) != count * PAGE_SIZE:
                raise VmError(f"{path}: truncated")
    return state
