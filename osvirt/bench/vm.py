"""VM exits (osvirt.vm): a guest's port I/O or MMIO access handed to user space and answered there.

Each series boots osvirt's demo guest in its own machine and leaves it in a
loop of one access (an OUT to PORT_BENCH, or a 32-bit write to the MMIO
hole, where a device drops it): an operation is one exit, from KVM_RUN's
return through the dispatch to the device and back into the guest.
"""
import time
from collections.abc import Iterator

from osvirt.bench.harness import Batch, Primitive, rig

__all__ = ["PRIMITIVES"]


def _machine(mmio: bool) -> Iterator[tuple[object, int, int]]:
    from osvirt.vm.guest import DemoGuest
    guest = DemoGuest(memory_mib=16)
    with guest.machine as m:
        addr, size = guest.bench_exits(mmio)
        yield m, addr, size


def _python(mmio: bool) -> Iterator[Batch]:
    """Machine.run_exits(n): osvirt's run loop, the bus, the device."""
    for m, _, _ in _machine(mmio):
        def batch(n: int) -> int:
            t0 = time.perf_counter_ns()
            m.run_exits(n)  # type: ignore[attr-defined]  # a Machine
            return time.perf_counter_ns() - t0
        yield Batch(batch)


def _bare(mmio: bool) -> Iterator[Batch]:
    """The cffi call of osv_kvm_run in a loop: no dispatch, no device."""
    from osvirt.vm._native import lib
    for m, _, _ in _machine(mmio):
        vcpu: object = m.vcpu  # type: ignore[attr-defined]
        run, fd, struct, ex = lib.osv_kvm_run, vcpu.fd, vcpu.run_struct, vcpu.exit  # type: ignore[attr-defined]

        def batch(n: int) -> int:
            t0 = time.perf_counter_ns()
            for _ in range(n):
                run(fd, struct, 0, ex)
            return time.perf_counter_ns() - t0
        yield Batch(batch)


def _c(mmio: bool) -> Iterator[tuple[int, int, int, int]]:
    for m, addr, size in _machine(mmio):
        yield m.vcpu.fd, size, addr, int(mmio)  # type: ignore[attr-defined]


_NOTE = ("the exit is the cost: the guest's trip into the host kernel, out to user space and back (this "
         "machine is itself a guest, so each exit is nested), which load on the machine stretches: batches "
         "move by ~10%. Same system calls in all three (strace -c: one KVM_RUN ioctl an exit). Python adds "
         "the cffi call (the GIL released around KVM_RUN) and the dispatch through the bus to the device: "
         "an IO exit comes packed in osv_kvm_run's answer, an MMIO exit is read from four struct fields. "
         "For MMIO, in one process on one machine, batches interleaved: the dispatch alone (the four "
         "fields, Bus.write, the device) costs 0.46-0.75 us, the floor with that dispatch added 1.02-1.06x "
         "the floor, Machine.run_exits 1.04-1.08x it. floor/C 1.07-1.17: the cffi call and the loop's "
         "Python next to ~45 us an exit")


def _primitive(name: str, what: str, mmio: bool) -> Primitive:
    """The row of one kind of exit: its three series, each a rig around the same guest loop."""
    def python() -> Iterator[Batch]:
        yield from _python(mmio)

    def bare() -> Iterator[Batch]:
        yield from _bare(mmio)

    def c() -> Iterator[tuple[int, int, int, int]]:
        yield from _c(mmio)
    return Primitive(name, what, python=rig(python), c="vm_exit", c_args=rig(c),
                     floor=("osv_kvm_run over cffi, no dispatch", rig(bare)), needs=("kvm",), note=_NOTE)


PRIMITIVES = [
    _primitive("vm-exit-pio", "a guest OUT handled in user space: osvirt.vm.Machine.run_exits, the port bus, "
               "a device", mmio=False),
    _primitive("vm-exit-mmio", "a guest write to an address no RAM backs, handled in user space: "
               "Machine.run_exits, the MMIO bus, a device", mmio=True),
]
