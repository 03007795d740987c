"""alloc: what allocating memory costs, and when the kernel pays it.

The seed's allocate_memory (§4.2.1) is mmap(2). This demo maps 256 MiB and
shows that the kernel only reserves addresses: RSS does not move until the
pages are touched, and then each page costs one minor fault. MAP_POPULATE
pays the faults up front; a private mapping is copied page by page when a
forked child writes to it, a shared one is not; transparent huge pages
cover 2 MiB per fault; munmap gives the memory back. Last, what the seed's
allocate_memory and munmap get wrong.

Usage: python demos/04_alloc.py [--json]
"""
import errno
import sys

from osvirt import env
from osvirt.demo import run
from osvirt.memory import (MADV, PAGE_SIZE, Mapping, ProtectionFault, children_faults,
                           huge_page_size, usage)

NAME = "alloc"
SEED = "4.2.1 allocate_memory"
SUMMARY = ("mmap costs no memory until touched, one minor fault per page, MAP_POPULATE, "
           "copy-on-write across fork, huge pages, munmap")

MiB = 1 << 20
BIG = 256 * MiB


def _child_rewrites(mapping, text):
    mapping.write(0, text)
    mapping.touch(write=True)  # a write to every page: each one is copied if private


def _within(value, target, fraction):
    return abs(value - target) <= target * fraction


def body(demo):
    pages = BIG // PAGE_SIZE
    with demo.step("mmap 256 MiB, anonymous and private",
                   asked="mmap(NULL, 256 MiB, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS); "
                         "madvise(MADV_NOHUGEPAGE)"):
        before = usage()
        big = demo.own(Mapping(BIG))
        big.madvise(MADV["MADV_NOHUGEPAGE"])  # 4 KiB pages whatever the THP mode: one fault each
        grew = usage().rss_bytes - before.rss_bytes
        demo.check("RSS grows by ~0: only addresses are reserved", "< 1 MiB", f"{grew / MiB:.2f} MiB",
                   grew < MiB)
        resident = sum(big.mincore())
        demo.check("no page is resident (mincore)", f"0 of {pages}", f"{resident} of {pages}", resident == 0)

    with demo.step("touch every page once", asked="write one byte in each 4 KiB page (C loop)"):
        before = usage()
        touched = big.touch(write=True)
        cost = usage() - before
        demo.check("one minor fault per page", f"{pages} within 5 %", f"{cost.minflt} ({touched} pages touched)",
                   _within(cost.minflt, pages, 0.05))
        demo.check("RSS grows by the mapping's size", "256 MiB within 5 %", f"{cost.rss_bytes / MiB:.1f} MiB",
                   _within(cost.rss_bytes, BIG, 0.05))

    with demo.step("MAP_POPULATE prefaults", asked="mmap(..., 64 MiB, MAP_PRIVATE|MAP_ANONYMOUS|MAP_POPULATE)"):
        with Mapping(64 * MiB, populate=True) as populated:
            populated.madvise(MADV["MADV_NOHUGEPAGE"])
            resident = sum(populated.mincore())
            demo.check("every page resident before any touch", f"{populated.pages}", f"{resident}",
                       resident == populated.pages)
            before = usage()
            populated.touch(write=True)
            faults = (usage() - before).minflt
            demo.check("touching it then costs ~no faults", f"< 1 % of {populated.pages} pages",
                       f"{faults}", faults < populated.pages * 0.01)

    for shared in (False, True):
        kind = "MAP_SHARED" if shared else "MAP_PRIVATE"
        with demo.step(f"a {kind} mapping across fork: the child writes to it",
                       asked=f"mmap(16 MiB, {kind}); fork(); the child writes every page; waitpid()"):
            with Mapping(16 * MiB, shared=shared) as m:
                m.write(0, b"parent")
                m.touch(write=True)
                faults = children_faults()[0]
                status = demo.children.wait(demo.children.fork(_child_rewrites, m, b"child!"), timeout_s=60)
                child_faults = children_faults()[0] - faults
                seen = m.read(0, 6)
                if shared:
                    demo.check("the parent sees the child's write", "b'child!'", repr(seen),
                               status == 0 and seen == b"child!")
                else:
                    demo.check("the parent does not see the child's write (copy-on-write)", "b'parent'",
                               repr(seen), status == 0 and seen == b"parent")
                    demo.check("the child pays a fault per page it copies", f">= {m.pages} minor faults",
                               f"{child_faults}", child_faults >= m.pages)

    with demo.step("transparent huge pages", asked="mmap 8 MiB aligned to 2 MiB; madvise(MADV_HUGEPAGE); touch"):
        demo.require(env.can("thp"), "transparent huge pages")
        huge = huge_page_size()

        def touch_huge():
            """(minor faults, AnonHugePages bytes) of touching a fresh huge-page-aligned mapping."""
            with Mapping(4 * huge, hugepage=True) as m:
                before = usage()
                m.touch(write=True)
                return (usage() - before).minflt, sum(v.kb("AnonHugePages") for v in m.smaps()) * 1024

        # a huge page needs 2 MiB free and contiguous: compaction may lag
        faults, anon_huge = demo.retry(touch_huge, lambda seen: seen[1] >= 2 * huge)
        demo.check("AnonHugePages in smaps", f">= {2 * huge // MiB} MiB of {4 * huge // MiB} MiB",
                   f"{anon_huge / MiB:.0f} MiB", anon_huge >= 2 * huge)
        small_pages = 4 * huge // PAGE_SIZE
        demo.check("far fewer faults than 4 KiB pages", f"~4 (one per huge page), < {small_pages // 8}",
                   f"{faults} (vs {small_pages} small pages)", faults < small_pages // 8)

    with demo.step("munmap returns the memory", asked="munmap(the 256 MiB mapping)"):
        before = usage().rss_bytes
        big.close()
        fell = before - usage().rss_bytes
        demo.check("RSS falls by the mapping's size", "256 MiB within 5 %", f"{fell / MiB:.1f} MiB",
                   _within(fell, BIG, 0.05))

    with demo.step("the seed's allocate_memory(1024) ... munmap(memory, 1024)",
                   asked="munmap(page + 1, 1024); munmap(page, 1024)"):
        demo.say("ERRATUM: the seed's allocate_memory is declared void * and returns nothing, so "
                 "`memory` is whatever the return register held; and it frees with munmap memory "
                 "it never mmapped. munmap only works on what mmap gave, in whole pages:")
        m = demo.own(Mapping(2 * PAGE_SIZE))
        try:
            m.unmap(1, 1024, kernel_checks_alignment=True)  # a malloc-style pointer, not page-aligned
            answer = "accepted"
        except OSError as e:
            answer = f"{errno.errorcode[e.errno]}"
        demo.check("munmap of a pointer that is not page-aligned (as malloc gives)", "EINVAL", answer,
                   answer == "EINVAL")
        m.unmap(0, 1024)
        try:
            m.read(2000, 1)
            gone = "byte 2000 still mapped"
        except ProtectionFault as fault:
            gone = f"byte 2000: {fault.code_name}"
        kept = m.read(PAGE_SIZE, 1)
        demo.check("munmap(memory, 1024) removes the whole 4096-byte page, not 1024 bytes",
                   "byte 2000: SEGV_MAPERR; next page still mapped", f"{gone}; next page read {kept!r}",
                   gone == "byte 2000: SEGV_MAPERR")


def main(argv=None):
    return run(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
