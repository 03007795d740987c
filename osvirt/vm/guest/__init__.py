"""osvirt's own guest: a few hundred lines of freestanding C and assembly (this directory) that
exercise the machine from inside.

`build()` compiles it with gcc into a flat binary, on first use, into a cache
directory keyed by the hash of its sources and the compiler's version
($XDG_CACHE_HOME/osvirt, else ~/.cache/osvirt; a temporary directory if
neither is writable). `layout()` reads the ABI both sides share from
layout.h (addresses, ports, mailbox offsets, commands).

`DemoGuest` loads it into a Machine and boots it in 64-bit mode straight
from the host, as kvmtool and Firecracker boot a 64-bit kernel: the host
writes the page tables (identity map of 4 GiB in 2 MiB pages, user
accessible), the GDT (kernel and user code and data, a TSS) and the TSS,
and sets the registers and long mode with KVM_SET_SREGS, so the guest's
CPL0 part (entry.S, setup() in guest.c: the IDT, the PIC, the syscall MSRs,
then iretq to CPL3) is a few hundred instructions, few of them privileged:
under kvm_pvm each of those is a trip through the hypervisor. Everything
else runs at CPL3, where port I/O is allowed by the TSS's I/O permission
bitmap (kvm_pvm drops IOPL 3 from the flags an iretq loads).

The guest then rings a doorbell (an OUT to PORT_DOORBELL) and runs the
command the host left in the mailbox page. `command()` writes the mailbox
while the vCPU is parked at the doorbell, resumes it and waits for the next
ring: the command's exits, faults and time are what happened in between.
"""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from osvirt.vm.devices.pc import attach_pc_devices
from osvirt.vm.errors import GuestError, VmError
from osvirt.vm.machine import MMIO_HOLE, Machine

__all__ = ["SOURCES", "layout", "build", "DemoGuest", "CommandResult", "GUEST_CFLAGS", "fnv1a64"]

HERE = Path(__file__).resolve().parent
SOURCES = ("layout.h", "entry.S", "guest.c", "virtio.h", "guest.ld")
GUEST_CFLAGS = ("-O2", "-ffreestanding", "-fno-pic", "-no-pie", "-mno-red-zone", "-mgeneral-regs-only",
                "-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-nostdlib", "-static",
                "-Wall", "-Wextra", "-Werror", "-Wl,--build-id=none", "-Wl,--oformat=binary",
                "-Wl,-z,noexecstack")


@lru_cache(maxsize=None)
def layout() -> dict[str, int]:
    """The `#define NAME value` lines of layout.h: addresses, selectors, ports, mailbox offsets, commands."""
    text = (HERE / "layout.h").read_text()
    return {name: int(value, 0) for name, value in re.findall(r"^#define (\w+)\s+(0x[0-9a-fA-F]+|\d+)\b", text, re.M)}


def fnv1a64(data: bytes) -> int:
    """FNV-1a, 64 bits: the hash CMD_VIRTIO_BLK computes over the sectors it read (virtio.h), on the host."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & (1 << 64) - 1
    return h


def _cc() -> list[str]:
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")


def _cache_dir() -> Path:
    for base in (os.environ.get("XDG_CACHE_HOME"), os.path.join(os.path.expanduser("~"), ".cache")):
        if base:
            path = Path(base) / "osvirt"
            try:
                path.mkdir(parents=True, exist_ok=True)
                if os.access(path, os.W_OK):
                    return path
            except OSError:
                pass
    return Path(tempfile.gettempdir())


def build() -> Path:
    """The guest binary, compiled now if the cache has none for these sources and this compiler.

    The compiler runs in a private directory (its TMPDIR too: cc1's and as's temporaries) and dies with
    this process; the binary is copied into the cache through naming.replacing. So a build interrupted
    anywhere, even by SIGKILL, leaves no half-written binary for a later run to trust, and no temp file."""
    from osvirt.naming import private_dir, replacing
    from osvirt.process import Children
    cc = _cc()
    version = subprocess.run([*cc, "--version"], capture_output=True, text=True, check=True).stdout
    digest = hashlib.sha256(version.encode() + " ".join(GUEST_CFLAGS).encode())
    for name in SOURCES:
        digest.update((HERE / name).read_bytes())
    out = _cache_dir() / f"guest-{digest.hexdigest()[:16]}.bin"
    if out.exists():
        return out
    with private_dir() as d, Children() as kids:
        argv = [*cc, *GUEST_CFLAGS, f"-I{HERE}", str(HERE / "entry.S"), str(HERE / "guest.c"),
                "-T", str(HERE / "guest.ld"), "-o", os.path.join(d, "guest.bin")]
        compiler = kids.spawn(argv, env={**os.environ, "TMPDIR": d}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        errors = compiler.communicate()[1]
        if compiler.returncode:
            raise VmError(f"building the demo guest failed ({' '.join(argv)}):\n{errors}")
        with open(os.path.join(d, "guest.bin"), "rb") as binary, replacing(out) as f:
            shutil.copyfileobj(binary, f)
    return out


# Page-table and descriptor bits (Intel SDM vol. 3, 4.5 and 3.4.5)
_PRESENT, _WRITABLE, _USER, _ACCESSED, _DIRTY, _HUGE = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80
_CR0_PE, _CR0_MP, _CR0_ET, _CR0_NE, _CR0_WP, _CR0_PG = 1, 2, 0x10, 0x20, 0x10000, 0x8000_0000
_CR4_PAE, _CR4_OSFXSR, _CR4_OSXMMEXCPT = 0x20, 0x200, 0x400
_EFER_LME, _EFER_LMA = 0x100, 0x400
# GDT entries: flat 4 GiB segments; L (bit 53) for 64-bit code; DPL 3 for the user pair
_GDT = (0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF, 0x00CFF2000000FFFF, 0x00AFFA000000FFFF)
_TSS_SIZE = 0x68
_IOPB_SIZE = 8192 + 1  # a bit per port, all clear (allowed), and the 0xff byte that ends the bitmap
_TSS_LIMIT = _TSS_SIZE + _IOPB_SIZE - 1


class CommandResult(dict[str, Any]):
    """What a command did: result0/result1 from the mailbox, its exits by reason, the vCPU thread's minor
    faults and the wall time from resume to the next doorbell."""


class DemoGuest:
    """The demo guest in a Machine with a UART (COM1, IRQ 4), the i8042's reset and a CMOS RTC."""

    def __init__(self, machine: Machine | None = None, *, memory_mib: int = 64,
                 uart_output: Callable[[bytes], object] | None = None) -> None:
        self.L = layout()
        self.machine = machine if machine is not None else Machine(memory_mib)
        m = self.machine
        self.uart, self.i8042, self.rtc = attach_pc_devices(m, uart_output, "i8042 reset (0xfe to port 0x64)")
        m.pio.attach(self.L["PORT_DOORBELL"], 1, _Doorbell(self), name="doorbell")
        m.pio.attach(self.L["PORT_BENCH"], 1, _Sink(), name="bench")
        m.pio.attach(self.L["PORT_FAULT"], 1, _Fault(self), name="fault")
        self.rings = 0
        self._rung = threading.Event()

    # -- boot ----------------------------------------------------------------------
    def load(self, code: bytes | None = None) -> None:
        """Write the binary (or `code`), page tables, GDT and TSS into RAM, and the registers: the guest
        starts at its entry in 64-bit mode at CPL0, interrupts off."""
        L, ram = self.L, self.machine.ram
        ram.write(L["GUEST_CODE"], build().read_bytes() if code is None else code)
        pml4, pdpt, pd = L["GUEST_PML4"], L["GUEST_PML4"] + 0x1000, L["GUEST_PML4"] + 0x2000
        # Accessed and dirty set already: the CPU's page walk would otherwise write them into these pages,
        # which the dirty log would then report beside the pages the guest wrote itself.
        flags = _PRESENT | _WRITABLE | _USER | _ACCESSED
        ram.write_u64(pml4, pdpt | flags)
        for i in range(L["GUEST_MAPPED"] >> 30):  # a PD per GiB, 2 MiB pages
            ram.write_u64(pdpt + 8 * i, (pd + 0x1000 * i) | flags)
        ram.write(pd, b"".join(((i << 21) | flags | _DIRTY | _HUGE).to_bytes(8, "little")
                               for i in range(L["GUEST_MAPPED"] >> 21)))
        gdt, tss = L["GUEST_GDT"], L["GUEST_TSS"]
        for i, entry in enumerate(_GDT):
            ram.write_u64(gdt + 8 * i, entry)
        # the 64-bit TSS descriptor (16 bytes, type 9: available): base split over both halves
        low = (_TSS_LIMIT | (tss & 0xFFFFFF) << 16 | 0x89 << 40 | (tss >> 24 & 0xFF) << 56)
        ram.write_u64(gdt + 8 * len(_GDT), low)
        ram.write_u64(gdt + 8 * len(_GDT) + 8, tss >> 32)
        ram.write(tss, bytes(_TSS_SIZE + _IOPB_SIZE - 1) + b"\xff")
        ram.write_u64(tss + 4, L["GUEST_KSTACK_TOP"])  # rsp0: the stack an interrupt from CPL3 switches to
        ram.write_u16(tss + 0x66, _TSS_SIZE)  # the I/O permission bitmap follows: every port allowed at CPL3
        vcpu = self.machine.vcpu
        sregs = vcpu.get_sregs()
        self._segment(sregs.cs, L["SEL_KCODE"], code=True)
        for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
            self._segment(seg, L["SEL_KDATA"], code=False)
        sregs.tr.selector, sregs.tr.base, sregs.tr.limit = L["SEL_TSS"], tss, _TSS_LIMIT
        sregs.tr.type, sregs.tr.present, sregs.tr.s, sregs.tr.unusable = 11, 1, 0, 0  # 64-bit TSS, busy
        sregs.gdt.base, sregs.gdt.limit = gdt, 8 * (len(_GDT) + 2) - 1
        sregs.idt.base, sregs.idt.limit = L["GUEST_IDT"], 256 * 16 - 1
        sregs.cr3 = pml4
        sregs.cr4 = _CR4_PAE | _CR4_OSFXSR | _CR4_OSXMMEXCPT
        sregs.cr0 = _CR0_PE | _CR0_MP | _CR0_ET | _CR0_NE | _CR0_WP | _CR0_PG
        sregs.efer = _EFER_LME | _EFER_LMA
        vcpu.set_sregs(sregs)
        regs = vcpu.get_regs()
        regs.rip, regs.rsp, regs.rflags = L["GUEST_CODE"], L["GUEST_KSTACK_TOP"], 0x2
        vcpu.set_regs(regs)

    @staticmethod
    def _segment(seg: Any, selector: int, *, code: bool) -> None:
        seg.selector, seg.base, seg.limit, seg.present, seg.dpl, seg.s, seg.g = selector, 0, 0xFFFFFFFF, 1, 0, 1, 1
        seg.type = 11 if code else 3  # execute/read, accessed; read/write, accessed
        seg.l, seg.db, seg.avl, seg.unusable = (1, 0, 0, 0) if code else (0, 1, 0, 0)

    def boot(self, timeout: float = 10.0) -> float:
        """Load, start, and wait for the first doorbell: the guest is at CPL3, ready for commands.
        Returns the seconds it took from start.

        Then one empty command, so that the guest has read its mailbox once: KVM's first mapping of a
        page whose guest PTE is dirty already is writable, and KVM logs such a page as dirty even on a
        read (shadow paging, as under kvm_pvm), which would add the mailbox to the next dirty log."""
        self.load()
        t0 = time.perf_counter()
        self._rung.clear()
        self.machine.start()
        self._wait_ring(timeout)
        elapsed = time.perf_counter() - t0
        self.command("CMD_NONE", timeout=timeout)
        return elapsed

    def run_code(self, code: bytes, timeout: float) -> str:
        """Run `code` instead of the guest (at CPL0, no IDT: any exception ends in a triple fault), for
        `timeout` s at most; what ended it: a GuestError's exit, the reason a device stopped it, or
        "running" (stopped by the host then)."""
        m = self.machine
        self.load(code)
        m.start()
        try:
            try:
                m.wait(timeout)
            except TimeoutError:
                m.stop("the host, after the timeout")
                return "running"
        except GuestError as e:
            return e.reason
        return m.stop_reason or "stopped"

    # -- commands ------------------------------------------------------------------
    def mailbox(self, name: str) -> int:
        return self.machine.ram.read_u64(self.L["GUEST_MAILBOX"] + self.L[name])

    def set_mailbox(self, name: str, value: int) -> None:
        self.machine.ram.write_u64(self.L["GUEST_MAILBOX"] + self.L[name], value & (1 << 64) - 1)

    def _post(self, cmd: str, args: tuple[int, ...]) -> None:
        if len(args) > 3:
            raise ValueError(f"{cmd}: at most 3 arguments, not {len(args)}")
        if self.machine.running and not self.machine.parked:
            raise VmError(f"{cmd}: the guest is not at its doorbell")
        for i, arg in enumerate(args + (0,) * (3 - len(args))):
            self.set_mailbox(f"MB_ARG{i}", arg)
        self.set_mailbox("MB_CMD", self.L[cmd])

    def command(self, cmd: str, *args: int, timeout: float = 30.0) -> CommandResult:
        """Run command `cmd` (a CMD_* name of layout.h) and wait until the guest rings again."""
        m = self.machine
        self._post(cmd, args)
        exits_before = dict(m.exits)
        faults_before = m.vcpu_faults()
        self._rung.clear()
        t0 = time.perf_counter_ns()
        m.resume()
        self._wait_ring(timeout)
        ns = time.perf_counter_ns() - t0
        exits = {k: v - exits_before.get(k, 0) for k, v in m.exits.items() if v != exits_before.get(k, 0)}
        return CommandResult(result0=self.mailbox("MB_RESULT0"), result1=self.mailbox("MB_RESULT1"),
                             exits=exits, faults=m.vcpu_faults() - faults_before, ns=ns)

    def start_command(self, cmd: str, *args: int) -> None:
        """Start a command that does not end (CMD_COUNT, CMD_BENCH_*): pause() or stop() the machine."""
        self._post(cmd, args)
        self.machine.resume()

    def end_count(self, timeout: float = 30.0) -> None:
        """End a CMD_COUNT (running or paused): set its stop flag (arg1) and wait for the doorbell."""
        m = self.machine
        if not m.parked:
            m.pause()
        self.set_mailbox("MB_ARG1", 1)
        self._rung.clear()
        m.resume()
        self._wait_ring(timeout)

    def _wait_ring(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._rung.wait(0.05):
            if not self.machine.running:
                self.machine.wait()  # raises what stopped it
                raise VmError(f"the guest stopped before ringing: {self.machine.stop_reason}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the guest did not ring its doorbell within {timeout} s")
        self.machine.wait_parked(timeout)

    def bench_exits(self, mmio: bool = False) -> tuple[int, int]:
        """Boot and leave the guest in CMD_BENCH_PIO (or CMD_BENCH_MMIO at MMIO_HOLE, to a device that
        drops the writes) with no vCPU thread: Machine.run_exits(n) then handles n exits on the calling
        thread, as the C loop osv_bench_vm_exit does. Returns (the port or address, the kvm_run size)."""
        m = self.machine
        addr = MMIO_HOLE if mmio else self.L["PORT_BENCH"]
        if mmio:
            m.mmio.attach(MMIO_HOLE, 4, _Sink(), name="bench")
        self.boot()
        self._post("CMD_BENCH_MMIO" if mmio else "CMD_BENCH_PIO", (addr,))
        m.stop()
        return addr, m.kvm.vcpu_mmap_size()

    def fault(self) -> GuestError:
        """The exception the guest's CPL0 handler reported (vector, error code, rip), as a GuestError."""
        return GuestError("guest exception", f"vector {self.mailbox('MB_FAULT_VECTOR')}, error code "
                          f"{self.mailbox('MB_FAULT_ERROR'):#x}, rip {self.mailbox('MB_FAULT_RIP'):#x}")


class _GuestPort:
    """A port of the guest's own protocol: written to, read as 0."""

    def __init__(self, guest: DemoGuest) -> None:
        self.guest = guest

    def io_in(self, offset: int, size: int) -> int:
        return 0


class _Doorbell(_GuestPort):
    """PORT_DOORBELL: the guest is done with a command; park the vCPU for the host's next."""

    def io_out(self, offset: int, size: int, value: int) -> None:
        self.guest.rings += 1
        self.guest.machine.request_pause()
        self.guest._rung.set()


class _Sink:
    """PORT_BENCH (and the MMIO bench's address): every write dropped (the bench rows time the exit,
    not a device)."""

    def io_in(self, offset: int, size: int) -> int:
        return 0

    def io_out(self, offset: int, size: int, value: int) -> None:
        pass

    mmio_read = io_in
    mmio_write = io_out


class _Fault(_GuestPort):
    """PORT_FAULT: an exception reached the guest's handler: stop with it."""

    def io_out(self, offset: int, size: int, value: int) -> None:
        raise self.guest.fault()
