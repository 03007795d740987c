"""protect: memory protection, enforced by the MMU and reported by the kernel.

The seed's protect_memory (§4.2.2) is mprotect(2). This demo makes a page
read-only and writes to it: the CPU faults, the kernel sends SIGSEGV with the
faulting address and SEGV_ACCERR, and osvirt's guarded access turns that
into a Python exception, so the interpreter lives on. It then shows a
PROT_NONE guard page stopping an overrun at the first byte past a buffer,
SEGV_MAPERR for an address with nothing mapped, a child that writes without
the guard dying of SIGSEGV, /proc/self/maps with the new permission bits,
and the kernel refusing an unaligned address.

Usage: python demos/05_protect.py [--json]
"""
import errno
import signal
import sys

from osvirt.demo import run
from osvirt.memory import (PAGE_SIZE, PROT_NONE, PROT_READ, SEGV_ACCERR, SEGV_MAPERR, Mapping,
                           ProtectionFault)

NAME = "protect"
SEED = "4.2.2 protect_memory"
SUMMARY = ("mprotect: a write to read-only memory raises a Python exception with the faulting "
           "address, guard pages, SEGV_MAPERR, /proc/self/maps")

P = PAGE_SIZE


def _fault(access):
    """Run `access`; the ProtectionFault it raised, or None."""
    try:
        access()
    except ProtectionFault as fault:
        return fault
    return None


def _show(fault):
    return "no fault" if fault is None else f"{fault.code_name} at {fault.address:#x}"


def _write_without_guard(mapping):
    import faulthandler
    faulthandler.disable()  # let the default action (core/terminate) happen, no traceback
    mapping.write_unguarded(0, b"x")  # the kernel's SIGSEGV kills this child here
    return 0


def body(demo):
    m = demo.own(Mapping(4 * P))
    target = m.address + P + 100
    with demo.step("write to a page made read-only",
                   asked=f"mprotect({m.address + P:#x}, {P}, PROT_READ); store one byte at {target:#x}"):
        m.write(P, b"written before mprotect")
        m.mprotect(PROT_READ, P, P)
        fault = _fault(lambda: m.write(P + 100, b"!"))
        demo.check("the write faults at the exact address", f"ProtectionFault at {target:#x}",
                   _show(fault), fault is not None and fault.address == target)
        demo.check("the reason is SEGV_ACCERR (mapped, but not writable)", f"si_code {SEGV_ACCERR}",
                   "no fault" if fault is None else f"si_code {fault.si_code} ({fault.code_name})",
                   fault is not None and fault.si_code == SEGV_ACCERR)
        back = m.read(P, 23)
        demo.check("reading the page still works, the interpreter lives on",
                   "b'written before mprotect'", repr(back), back == b"written before mprotect")

    with demo.step("/proc/self/maps after mprotect", asked="read /proc/self/maps"):
        lines = {v.start: v for v in m.maps()}
        page = lines.get(m.address + P)
        demo.check("one VMA for exactly the protected page, r--p",
                   f"{m.address + P:x}-{m.address + 2 * P:x} r--p",
                   "none" if page is None else f"{page.start:x}-{page.end:x} {page.perms}",
                   page is not None and (page.end, page.perms) == (m.address + 2 * P, "r--p"))
        after = lines.get(m.address + 2 * P)
        demo.check("the pages after it keep rw-p", "rw-p", after.perms if after else "none",
                   after is not None and after.perms == "rw-p")

    with demo.step("a PROT_NONE guard page after a 3-page buffer; write 100 bytes too many",
                   asked="mprotect(buffer end, 4096, PROT_NONE); copy 3*4096+100 bytes"):
        guarded = demo.own(Mapping(4 * P))
        guarded.mprotect(PROT_NONE, 3 * P, P)
        end = guarded.address + 3 * P
        fault = _fault(lambda: guarded.write(0, b"\xab" * (3 * P + 100)))
        demo.check("the overrun stops at the first byte past the end", f"SEGV_ACCERR at {end:#x}",
                   _show(fault), fault is not None and (fault.address, fault.si_code) == (end, SEGV_ACCERR))
        inside = guarded.read(0, 3 * P)
        wrong = [i for i, byte in enumerate(inside) if byte != 0xab]
        demo.check("every byte inside the buffer was written", f"all {3 * P} bytes 0xab",
                   f"{3 * P - len(wrong)} of {3 * P} bytes 0xab"
                   + (f", the first other at offset {wrong[0]}: {inside[wrong[0]]:#04x}" if wrong else ""),
                   not wrong)

    with demo.step("an address with nothing mapped", asked="munmap one page of our own, then read it"):
        m.unmap(3 * P, P)
        hole = m.address + 3 * P + 8
        fault = _fault(lambda: m.read(3 * P + 8, 1))
        demo.check("the read faults SEGV_MAPERR at that address", f"SEGV_MAPERR (si_code {SEGV_MAPERR}) at {hole:#x}",
                   _show(fault), fault is not None and (fault.address, fault.si_code) == (hole, SEGV_MAPERR))

    with demo.step("a child writes to the read-only page, with no guard",
                   asked="fork(); the child stores one byte in the PROT_READ page; waitpid()"):
        ro = demo.own(Mapping(P))
        ro.mprotect(PROT_READ)
        status = demo.children.wait(demo.children.fork(_write_without_guard, ro), timeout_s=30)
        demo.check("the child dies of SIGSEGV", f"wait status -{signal.SIGSEGV:d} (killed by SIGSEGV)",
                   f"wait status {status}", status == -signal.SIGSEGV)

    with demo.step("an unaligned address", asked=f"mprotect({m.address + 1:#x}, {P}, PROT_READ)"):
        try:
            m.mprotect(PROT_READ, 1, P)
            checked = "no error"
        except ValueError as e:
            checked = f"ValueError: {e}"
        demo.check("osvirt refuses it before the kernel", "ValueError naming mprotect and the page size",
                   checked, checked.startswith("ValueError: mprotect") and str(P) in checked)
        try:
            m.mprotect(PROT_READ, 1, P, kernel_checks_alignment=True)
            refused = None
        except OSError as e:
            refused = e
        demo.check("the kernel itself answers EINVAL", "OSError EINVAL from mprotect(2)",
                   f"{type(refused).__name__}: {refused}" if refused else "accepted",
                   refused is not None and refused.errno == errno.EINVAL)


def main(argv=None):
    return run(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
