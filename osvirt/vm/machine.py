"""A machine: guest RAM, the in-kernel irqchip and PIT, one vCPU on a host thread, and the run loop.

The run loop is what a VMM is: KVM_RUN until the guest does something the
kernel does not handle itself, then handle it in user space and go back in.
An exit is counted by reason (`exits`) with the time its KVM_RUN took
(`exit_ns`); an IO exit goes to the port bus, an MMIO exit (an access to a
guest physical address no memory slot backs) to the MMIO bus; both answer
even when no device is there (all ones, dropped writes). SHUTDOWN (a triple
fault), INTERNAL_ERROR (decoded with its suberror), FAIL_ENTRY and the
like stop the machine with a GuestError the caller sees at wait() or stop().

Control from other threads: `pause()` sets kvm_run's immediate_exit and
sends the vCPU thread a signal (osv_kvm_install_kick: a handler that does
nothing, without SA_RESTART), so KVM_RUN returns EINTR even from the
in-kernel HLT; before parking, the loop re-enters KVM_RUN once with
immediate_exit set, which completes a pending IO or MMIO instruction, so
the registers a snapshot reads are consistent (KVM's API documentation,
"KVM_RUN"). `stop()` does the same and ends the thread.

Guest RAM is an anonymous osvirt.memory.Mapping registered in slot 0 at
guest physical 0 (KVM_SET_USER_MEMORY_REGION), with dirty logging on:
`dirty_pages()` is the pages the guest wrote since the previous call.
Transparent huge pages are advised off (one host fault per 4 KiB page the
guest touches, as the demo shows) unless `hugepages=True`.

A snapshot (`snapshot(path)`, osvirt.vm.snapshot) saves the vCPU, the VM's
in-kernel devices, each device's state and memory (all of it, or only what
changed since the previous snapshot); `restore(path)` on a machine built
alike, in any process, loads it all, and the guest goes on where it was.
"""
from __future__ import annotations

import errno
import os
import signal
import struct
import threading
from typing import Any

from osvirt._owned import Owned
from osvirt.errors import kernel_error
from osvirt.memory import MADV, PAGE_SIZE, Mapping
from osvirt.vm import kvm as _kvm
from osvirt.vm import snapshot as _snapshot
from osvirt.vm._native import INTERNAL_ERROR_NAMES, lib
from osvirt.vm.bus import Bus, Irq
from osvirt.vm.errors import GuestError, VmError
from osvirt.vm.ram import GuestRam

__all__ = ["Machine", "MMIO_HOLE", "MAX_MEMORY_MIB"]

MMIO_HOLE = 0xC000_0000  # guest RAM ends below: [3 GiB, 4 GiB) is for MMIO devices, as on a PC
MAX_MEMORY_MIB = MMIO_HOLE >> 20
TSS_ADDR = 0xFFFB_D000  # where kvmtool and QEMU put Intel's three real-mode pages, below the BIOS
IDENTITY_MAP_ADDR = 0xFFFB_C000

_IO, _MMIO = _kvm.KVM_EXIT["KVM_EXIT_IO"], _kvm.KVM_EXIT["KVM_EXIT_MMIO"]
_EINTR = -errno.EINTR
_FAST_IO = lib.OSV_KVM_FAST_IO
_KICK = lib.osv_kvm_kick_signal()


class Machine(Owned):
    """A VM with `memory_mib` MiB of RAM, an in-kernel irqchip and PIT, one vCPU, and two buses.

    Needs read-write /dev/kvm (osvirt.env.can("kvm")). Use it as a context manager, or call close():
    the vCPU thread is stopped and joined, descriptors closed, RAM unmapped.
    """

    _closed = True  # until __init__ has made everything close() undoes
    _thread: threading.Thread | None = None

    def __init__(self, memory_mib: int = 64, *, hugepages: bool = False) -> None:
        if type(memory_mib) is not int or not 1 <= memory_mib <= MAX_MEMORY_MIB:
            raise ValueError(f"Machine: memory_mib must be an int in 1..{MAX_MEMORY_MIB} (RAM ends below the "
                             f"MMIO hole at {MMIO_HOLE:#x}), not {memory_mib!r}")
        self._closed = False
        self._owned: list[Owned] = []
        try:
            self._build(memory_mib, hugepages)
        except BaseException:
            self.close()
            raise

    def _build(self, memory_mib: int, hugepages: bool) -> None:
        self.kvm = self._own(_kvm.Kvm())
        if self.kvm.api_version() != _kvm.API_VERSION:
            raise VmError(f"KVM_GET_API_VERSION says {self.kvm.api_version()}, not {_kvm.API_VERSION}")
        self.backing = _kvm.backing_module()
        self.vm = self._own(self.kvm.create_vm())
        self.vm.require_capabilities()
        if self.vm.check_extension(lib.KVM_CAP_SET_TSS_ADDR):
            self.vm.set_tss_addr(TSS_ADDR)
        if self.vm.check_extension(lib.KVM_CAP_SET_IDENTITY_MAP_ADDR):
            self.vm.set_identity_map_addr(IDENTITY_MAP_ADDR)
        self.vm.create_irqchip()
        self.vm.create_pit2()
        self.memory_size = memory_mib << 20
        self.memory = self._own(Mapping(self.memory_size))
        if not hugepages:
            self.memory.madvise(MADV["MADV_NOHUGEPAGE"])
        self.vm.set_user_memory_region(0, 0, self.memory_size, self.memory.address, log_dirty=True)
        self.ram = GuestRam(self.memory)
        self.ram.dirty = set()  # pages the host writes: KVM's dirty log sees only the guest's
        self.vcpu = self._own(self.vm.create_vcpu(0))
        self.vcpu.set_supported_cpuid()
        self.pio = Bus("pio", "port")
        self.mmio = Bus("mmio", "MMIO")
        self._failed: dict[int, int] = {}  # -errno of a KVM_RUN that failed (not EINTR) -> count
        self._failed_ns: dict[int, int] = {}
        self.error: BaseException | None = None  # what stopped the guest, if not the host
        self.stop_reason: str | None = None
        self._control = threading.Condition()
        self._want: str | None = None  # None (run), "pause" or "stop"
        self._parked = False
        self._thread_ident: int | None = None
        self.lineage = _snapshot.Lineage(bytearray((self.memory_size // PAGE_SIZE + 7) // 8))
        self.vcpu_tid: int | None = None  # the vCPU thread's kernel tid (its faults are in /proc/self/task/TID)
        err = lib.osv_kvm_install_kick()
        if err:
            raise kernel_error(err, "sigaction(SIGRTMIN+4) for the vCPU kick")

    def _own(self, obj: Any) -> Any:
        self._owned.append(obj)
        return obj

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self.running else "stopped"
        return f"Machine({self.memory_size >> 20} MiB, {state}, backing={self.backing})"

    # -- devices and interrupts ---------------------------------------------------
    def irq_line(self, irq: int) -> Irq:
        """A level-triggered interrupt line for a device: irq(True) asserts GSI `irq` (KVM_IRQ_LINE)."""
        if type(irq) is not int or not 0 <= irq < 24:
            raise ValueError(f"irq_line: irq must be an int in 0..23 (the IOAPIC's pins), not {irq!r}")
        line = self.vm.irq_line
        return lambda level: line(irq, level)

    # -- the run loop --------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def started(self) -> bool:
        """start() was called once (a restore wants a machine that never ran)."""
        return self._thread is not None

    def start(self) -> None:
        """Start the vCPU thread (the guest runs until stopped, paused or it stops itself)."""
        if self._closed:
            raise ValueError("Machine: closed")
        if self.running:
            raise VmError("Machine.start: already running")
        self._want, self.error, self.stop_reason = None, None, None
        self._thread = threading.Thread(target=self._thread_main, name="osvirt-vcpu0", daemon=True)
        self._thread.start()

    def _thread_main(self) -> None:
        self._thread_ident = threading.get_ident()
        self.vcpu_tid = threading.get_native_id()
        try:
            self.run_exits()
        except BaseException as e:  # a device's exception: the guest stops, the caller sees it
            self.error = e
            self.stop_reason = f"{type(e).__name__}: {e}"
        finally:
            self.vcpu.immediate_exit = False  # a stop's kick set it: a later KVM_RUN from any thread runs
            with self._control:
                self._parked = False
                self._control.notify_all()

    def run_exits(self, limit: int | None = None) -> int:
        """The run loop, on the calling thread: until stopped (or after `limit` exits: the bench's way
        of timing it, on a machine with no vCPU thread running). Returns the number of exits handled."""
        vcpu = self.vcpu
        if threading.get_ident() != self._thread_ident:
            if self.running:
                raise VmError("Machine.run_exits: the vCPU thread runs this machine")
            self._want = None
            vcpu.immediate_exit = False
        krun, fd, run_struct, ex = lib.osv_kvm_run, vcpu.fd, vcpu.run_struct, vcpu.exit  # Vcpu.run, inlined
        pio_read, pio_write, mmio_read, mmio_write = self.pio.read, self.pio.write, self.mmio.read, self.mmio.write
        handled = 0
        in_value = 0
        # Each exit's reason and time are counted in C (osv_kvm_exit): this loop only dispatches. An IO
        # exit of one access comes packed in the answer (OSV_KVM_FAST_IO), read with no struct field.
        try:
            while limit is None or handled < limit:
                if self._want is not None:
                    if not self._park(in_value):
                        break
                    in_value = 0
                r = krun(fd, run_struct, in_value, ex)
                in_value = 0
                if r & _FAST_IO and r > 0:
                    if r & 0x100:
                        pio_write(r >> 13 & 0xFFFF, r >> 9 & 7, r >> 29)
                    else:
                        in_value = pio_read(r >> 13 & 0xFFFF, r >> 9 & 7)
                elif r == _MMIO:
                    if ex.write:
                        mmio_write(ex.addr, ex.size, ex.data)
                    else:
                        in_value = mmio_read(ex.addr, ex.size)
                elif r == _IO:
                    self._rep_io()
                elif r == _EINTR:  # a kick: the loop's head sees why
                    continue
                else:
                    self._other_exit(r)
                    continue
                handled += 1
        finally:
            if in_value and self._want is None:  # a limited run ended on a read: answer it now
                vcpu.complete(in_value)
        return handled

    def _count(self, reason: int, ns: int) -> None:
        """A KVM_RUN that failed other than with EINTR (C counts the rest)."""
        self._failed[reason] = self._failed.get(reason, 0) + 1
        self._failed_ns[reason] = self._failed_ns.get(reason, 0) + ns

    def _tallies(self) -> dict[str, tuple[int, int]]:
        ex = self.vcpu.exit
        out = {_kvm.exit_name(r): (int(ex.counts[r]), int(ex.ns_total[r]))
               for r in range(lib.OSV_KVM_REASONS) if ex.counts[r]}
        if ex.eintr:
            out["KVM_RUN failed: EINTR"] = (int(ex.eintr), int(ex.eintr_ns))
        for r, n in self._failed.items():
            out[f"KVM_RUN failed: {errno.errorcode.get(-r, -r)}"] = (n, self._failed_ns[r])
        return out

    @property
    def exits(self) -> dict[str, int]:
        """{exit reason name: count} so far ("KVM_RUN failed: EINTR" counts the kicks)."""
        return {name: n for name, (n, _) in self._tallies().items()}

    @property
    def exit_ns(self) -> dict[str, int]:
        """{exit reason name: ns spent in the KVM_RUN calls that ended with it}."""
        return {name: ns for name, (_, ns) in self._tallies().items()}

    def _rep_io(self) -> None:
        """A rep ins/outs: count accesses of size bytes, each to the same port."""
        ex, vcpu = self.vcpu.exit, self.vcpu
        size, port = ex.size, ex.addr
        if ex.write:
            data = vcpu.io_data()
            for i in range(ex.count):
                self.pio.write(port, size, int.from_bytes(data[i * size:(i + 1) * size], "little"))
        else:
            vcpu.set_io_data(b"".join(self.pio.read(port, size).to_bytes(size, "little") for _ in range(ex.count)))

    def _other_exit(self, r: int) -> None:
        ex = self.vcpu.exit
        if r < 0:
            self._count(r, ex.ns)
            raise kernel_error(-r, "ioctl(KVM_RUN)")
        name = _kvm.exit_name(r)
        rip = self.vcpu.get_regs().rip
        if name == "KVM_EXIT_INTERNAL_ERROR":
            data = " ".join(f"{ex.extra[i]:#x}" for i in range(ex.ndata))
            raise GuestError(name, f"suberror {ex.suberror} ({INTERNAL_ERROR_NAMES.get(ex.suberror, '?')}), "
                                   f"data [{data}], rip {rip:#x}")
        if name == "KVM_EXIT_FAIL_ENTRY":
            raise GuestError(name, f"hardware_entry_failure_reason {ex.suberror:#x} on cpu {ex.extra[0]}, "
                                   f"rip {rip:#x}")
        if name == "KVM_EXIT_SHUTDOWN":
            raise GuestError(name, f"the guest triple-faulted (or asked for a shutdown), rip {rip:#x}")
        if name == "KVM_EXIT_HLT":  # only without an in-kernel irqchip: the guest has nothing more to do
            self.request_stop("the guest halted (KVM_EXIT_HLT)")
            return
        if name == "KVM_EXIT_UNKNOWN":
            raise GuestError(name, f"hardware_exit_reason {ex.suberror:#x}, rip {rip:#x}")
        if name == "KVM_EXIT_SYSTEM_EVENT":
            raise GuestError(name, f"type {ex.suberror}, rip {rip:#x}")
        raise GuestError(name, f"not handled by osvirt, rip {rip:#x}")

    def _park(self, in_value: int) -> bool:
        """At the loop's head with a pause or stop asked: complete a pending instruction (KVM_RUN with
        immediate_exit, answering a pending read with `in_value`), then wait while paused. False: stop."""
        vcpu = self.vcpu
        r = vcpu.complete(in_value)
        if r != _EINTR:  # cannot happen: with immediate_exit KVM_RUN enters no guest
            raise VmError(f"KVM_RUN with immediate_exit returned {r}")
        with self._control:
            while self._want == "pause":
                self._parked = True
                self._control.notify_all()
                self._control.wait()
            self._parked = False
            self._control.notify_all()
            vcpu.immediate_exit = self._want == "stop"  # a kick while parked set it
            return self._want != "stop"

    # -- control from other threads -----------------------------------------------
    def _kick(self) -> None:
        self.vcpu.immediate_exit = True  # a KVM_RUN about to start returns at once
        if self._thread_ident is not None and self.running:
            try:
                signal.pthread_kill(self._thread_ident, _KICK)
            except ProcessLookupError:  # the thread has just ended
                pass

    def request_pause(self) -> None:
        """Ask the vCPU to park at its next exit (a device calls this from the vCPU thread)."""
        with self._control:
            if self._want is None:
                self._want = "pause"

    def request_stop(self, reason: str) -> None:
        """Ask the vCPU thread to end at its next exit (a device's reset calls this)."""
        with self._control:
            self._want = "stop"
            self.stop_reason = self.stop_reason or reason
            self._control.notify_all()

    def pause(self, timeout: float | None = 10.0) -> bool:
        """Park the vCPU (kicking it out of the guest); returns False if it was not running."""
        if not self.running:
            return False
        self.request_pause()
        if threading.get_ident() != self._thread_ident:
            self._kick()
        return self.wait_parked(timeout)

    @property
    def parked(self) -> bool:
        """The vCPU thread waits, paused, out of KVM_RUN."""
        return self._parked and self.running

    def wait_parked(self, timeout: float | None = 10.0) -> bool:
        """Wait until the vCPU thread is parked (True) or has ended (False)."""
        with self._control:
            if not self._control.wait_for(lambda: self._parked or not self.running, timeout):
                raise TimeoutError(f"the vCPU did not park within {timeout} s")
            return self._parked

    def resume(self) -> None:
        with self._control:
            if self._want == "pause":
                self._want = None
                self._control.notify_all()

    def stop(self, reason: str = "stopped by the host", timeout: float = 10.0) -> None:
        """End the vCPU thread and join it. Raises what stopped the guest, if something did."""
        if self.running:
            self.request_stop(reason)
            self._kick()
        self.wait(timeout)

    def wait(self, timeout: float | None = None) -> str | None:
        """Wait for the vCPU thread to end; its stop reason. Raises the error that ended it (GuestError,
        or a device's exception), TimeoutError if it still runs after `timeout`."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the guest still runs after {timeout} s")
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return self.stop_reason

    # -- memory --------------------------------------------------------------------
    def dirty_pages(self) -> list[int]:
        """KVM_GET_DIRTY_LOG: the guest page numbers written since the previous call (slot 0)."""
        bitmap = self.vm.get_dirty_log(0, self.memory_size // PAGE_SIZE)
        acc = self.lineage.dirty
        pages = []
        for word_index, (word,) in enumerate(struct.iter_unpack("<Q", bitmap)):
            if word:
                for bit in range(64):
                    if word >> bit & 1:
                        page = word_index * 64 + bit
                        pages.append(page)
                        acc[page >> 3] |= 1 << (page & 7)
        return pages

    def vcpu_faults(self) -> int:
        """Minor faults of the vCPU thread so far (/proc/self/task/TID/stat): KVM faults guest memory in
        on that thread, one host fault per page the guest touches first."""
        if self.vcpu_tid is None:
            raise VmError("vcpu_faults: the vCPU thread has not run")
        with open(f"/proc/self/task/{self.vcpu_tid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[7])

    # -- snapshot and restore (osvirt.vm.snapshot) --------------------------------
    def snapshot(self, path: str | os.PathLike[str], *, incremental: bool = False) -> dict[str, Any]:
        """Save the paused (or not started) machine to `path`. `incremental`: only the pages written since
        the previous snapshot (or the restore), which becomes its parent. Returns what was written."""
        return _snapshot.save(self, path, incremental=incremental)

    def restore(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Load a snapshot (and its parents, for an incremental one) into this machine, which must be
        built alike and never started: afterwards start() goes on where the saved guest was."""
        return _snapshot.restore(self, path)

    # -- cleanup -------------------------------------------------------------------
    def close(self) -> None:
        """Stop and join the vCPU thread, close the vCPU, VM and /dev/kvm, unmap RAM. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.running:
                self.request_stop("closed")
                self._kick()
                assert self._thread is not None
                self._thread.join()
        finally:
            ram = getattr(self, "ram", None)
            if ram is not None:
                ram.release()
            for owned in reversed(self._owned):
                owned.close()

