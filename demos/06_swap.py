"""swap: which pages are in RAM, how they leave, and how they come back.

The seed's swap_memory (§4.2.3) has an empty body; on Linux the kernel
moves memory out page by page. This demo reads the residency map of a
file-backed mapping (mincore), evicts its pages (MADV_PAGEOUT,
POSIX_FADV_DONTNEED: only clean pages go, so dirty ones stay until fsync),
reads them back by major faults with the data intact, shows MADV_DONTNEED
zero-filling private anonymous memory and mlock keeping pages in RAM, and
sends anonymous pages to swap and back (VmSwap, /proc/self/pagemap): only
the pages asked leave, not the process.

The machine may have no swap: with CAP_SYS_ADMIN, `--swapfile SIZE_MB` makes a
temporary swap file for the last step, and always disables and removes it.

Usage: python demos/06_swap.py [--json] [--swapfile SIZE_MB]
"""
import contextlib
import errno
import hashlib
import os
import sys

from osvirt import env
from osvirt.demo import run
from osvirt.memory import MADV, PAGE_SIZE, Mapping, SwapFile, swaps, usage
from osvirt.memory.swapfile import DEFAULT_DIRECTORY
from osvirt.naming import private_dir
from osvirt.process import sched_setaffinity

NAME = "swap"
SEED = "4.2.3 swap_memory"
SUMMARY = "mincore residency, eviction and major faults, MADV_DONTNEED, swap of single pages, mlock"

PAGES = 256      # the file: 1 MiB
DIRTY = range(0, PAGES, 16)
ANON_PAGES = 4096  # the anonymous region sent to swap: 16 MiB


def add_arguments(parser):
    parser.add_argument("--swapfile", type=int, metavar="SIZE_MB",
                        help="with CAP_SYS_ADMIN (swapon): make a temporary swap file of SIZE_MB MiB for the swap step "
                             "(disabled and removed at the end, also on Ctrl-C)")


def _map(resident, width=64):
    """The first `width` pages of a residency list as '#' (in RAM) and '.'."""
    return "".join("#" if r else "." for r in resident[:width])


def _digest(data):
    return hashlib.sha256(data).hexdigest()[:16]


def _evict(m, fd):
    """Drop the file's pages: unmap them from us, write back, then let the page cache go."""
    m.madvise(MADV["MADV_DONTNEED"])  # shared file mapping: unmaps, the data stays in the file
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


@contextlib.contextmanager
def _on_one_cpu():
    """Run on one CPU. A page just faulted in waits in its CPU's batch before it joins the
    LRU lists, MADV_PAGEOUT takes only pages on those lists, and it drains only the batch
    of the CPU it runs on: a page faulted in on the other CPU would be skipped."""
    before = os.sched_getaffinity(0)
    sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        sched_setaffinity(0, before)


def body(demo):
    demo.own(_on_one_cpu())
    directory = demo.own(private_dir(DEFAULT_DIRECTORY))  # on disk: a tmpfs page has nowhere to go
    path = os.path.join(directory, "pages")
    data = bytearray(os.urandom(PAGES * PAGE_SIZE))
    with open(path, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())
    fd = demo.own(open(path, "r+b")).fileno()
    m = demo.own(Mapping(PAGES * PAGE_SIZE, fd=fd, shared=True))

    with demo.step("mincore residency map of a 1 MiB file mapping",
                   asked="posix_fadvise(POSIX_FADV_DONTNEED); mmap(MAP_SHARED); madvise(MADV_RANDOM); "
                         "read pages 0-31; mincore()"):
        _evict(m, fd)
        m.madvise(MADV["MADV_RANDOM"])  # no readahead: each page comes in on its own fault
        before = usage()
        m.touch(length=32 * PAGE_SIZE)
        cost = usage() - before
        resident = m.mincore()
        demo.say(f"residency of the first 64 pages: {_map(resident)}")
        pages_in = [i for i, r in enumerate(resident) if r]
        demo.check("exactly the pages read are resident", "32 pages: 0-31",
                   f"{len(pages_in)} pages: {pages_in[0]}-{pages_in[-1]}" if pages_in else "none",
                   pages_in == list(range(32)))
        demo.check("each came in by a major fault (read from disk)", "32 major faults within 10 %",
                   f"{cost.majflt} major, {cost.minflt} minor", abs(cost.majflt - 32) <= 3)

    with demo.step("MADV_PAGEOUT evicts clean pages; dirty ones stay",
                   asked=f"read every page; write to {len(DIRTY)} of them; madvise(MADV_PAGEOUT)"):
        m.touch()
        for page in DIRTY:
            m.write(page * PAGE_SIZE, b"dirty")
            data[page * PAGE_SIZE:page * PAGE_SIZE + 5] = b"dirty"

        def page_out():
            m.madvise(MADV["MADV_PAGEOUT"])
            resident = m.mincore()
            return resident, [i for i, r in enumerate(resident) if r]

        # a page still in a per-CPU LRU batch is skipped: ask again
        resident, left = demo.retry(page_out, lambda seen: seen[1] == list(DIRTY))
        demo.say(f"residency of the first 64 pages: {_map(resident)}")
        demo.check("only the dirty pages are still resident (reclaim does not write file pages)",
                   f"pages {list(DIRTY)[:4]}... ({len(DIRTY)})", f"{left[:4]}... ({len(left)})",
                   left == list(DIRTY))

    with demo.step("fsync, then POSIX_FADV_DONTNEED evicts them too",
                   asked="fsync(fd); posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)"):
        _evict(m, fd)
        resident = sum(m.mincore())
        demo.check("no page resident", f"0 of {PAGES}", f"{resident} of {PAGES}", resident == 0)

    with demo.step("read it all back", asked="madvise(MADV_RANDOM); read 1 MiB; compare checksums"):

        def read_back():
            _evict(m, fd)  # already out after the step above; again on a retry
            before = usage()
            back = m.read(0, PAGES * PAGE_SIZE)
            return back, usage() - before

        # another process touching the file would share the cost: retry
        back, cost = demo.retry(read_back, lambda seen: abs(seen[1].majflt - PAGES) <= PAGES * 0.05)
        demo.check("one major fault per page", f"{PAGES} within 5 %", f"{cost.majflt} major faults",
                   abs(cost.majflt - PAGES) <= PAGES * 0.05)
        demo.check("the data is intact, dirty writes included", f"sha256 {_digest(data)}",
                   f"sha256 {_digest(back)}", back == data)

    with demo.step("MADV_DONTNEED on private anonymous memory",
                   asked="mmap(16 pages, MAP_PRIVATE|MAP_ANONYMOUS); fill with 0xff; madvise(pages 4-7, MADV_DONTNEED)"):
        with Mapping(16 * PAGE_SIZE) as anon:
            anon.write(0, b"\xff" * 16 * PAGE_SIZE)
            anon.madvise(MADV["MADV_DONTNEED"], 4 * PAGE_SIZE, 4 * PAGE_SIZE)
            resident = anon.mincore()
            demo.check("those pages are no longer resident", "################ -> ####....########",
                       _map(resident), resident == [True] * 4 + [False] * 4 + [True] * 8)
            back = anon.read(0, 16 * PAGE_SIZE)
            zeros = back[4 * PAGE_SIZE:8 * PAGE_SIZE].count(0)
            kept = (back[:4 * PAGE_SIZE] + back[8 * PAGE_SIZE:]).count(0xff)
            demo.check("they read back as zeros, the rest keeps its data",
                       f"{4 * PAGE_SIZE} zero bytes, {12 * PAGE_SIZE} bytes still 0xff",
                       f"{zeros} zero bytes, {kept} bytes still 0xff",
                       zeros == 4 * PAGE_SIZE and kept == 12 * PAGE_SIZE)

    with demo.step("mlock keeps pages resident across a pageout attempt",
                   asked="read every page; mlock(second half); madvise(all, MADV_PAGEOUT)"):
        half = PAGES // 2
        m.touch()
        m.mlock(half * PAGE_SIZE)  # 512 KiB: within an unprivileged 8 MiB RLIMIT_MEMLOCK

        def page_out_locked():
            try:
                m.madvise(MADV["MADV_PAGEOUT"])
                answer = "accepted"
            except OSError as e:
                answer = errno.errorcode[e.errno]
            return answer, m.mincore()

        # a page still in a per-CPU LRU batch is skipped: ask again
        answer, resident = demo.retry(page_out_locked, lambda seen: not any(seen[1][:half]))
        m.munlock()
        demo.check("the kernel refuses to page out the locked range", "EINVAL (after the unlocked range)",
                   answer, answer == "EINVAL")
        demo.check("the unlocked half left, the locked half stayed",
                   f"0 of {half} and {half} of {half} resident",
                   f"{sum(resident[:half])} of {half} and {sum(resident[half:])} of {half} resident",
                   sum(resident[:half]) == 0 and sum(resident[half:]) == half)

    with demo.step("anonymous pages to swap and back, one page at a time",
                   asked="write 16 MiB; madvise(first half, MADV_PAGEOUT); read /proc/self/pagemap; read it back"):
        _swap_step(demo)


def _swap_step(demo):
    if demo.args.swapfile is not None:
        demo.require(env.can("cap_sys_admin"), "swapon for --swapfile")
        try:
            demo.own(SwapFile(demo.args.swapfile))
        except OSError as e:  # e.g. a filesystem or container that refuses swap files
            demo.require(env.Answer(False, str(e)))
    swap = env.can("swap")
    demo.require(swap if swap else env.Answer(False, f"{swap.reason}; with CAP_SYS_ADMIN, run with --swapfile SIZE_MB"))
    half = ANON_PAGES // 2
    with Mapping(ANON_PAGES * PAGE_SIZE) as anon:
        data = os.urandom(ANON_PAGES * PAGE_SIZE)
        anon.write(0, data)
        # another process's swapon/swapoff meanwhile moves pages: again
        _, seen = demo.retry(lambda: (swaps(), _page_out_and_back(anon, half)),
                             lambda figure: swaps() == figure[0])
        demo.check("VmSwap grows by the pages paged out", f"{half * PAGE_SIZE >> 20} MiB within 10 %",
                   f"{seen['grew'] / (1 << 20):.1f} MiB", abs(seen["grew"] - half * PAGE_SIZE) <= half * PAGE_SIZE * 0.1)
        demo.check("pagemap bit 62: the advised half is in swap", f"{half} of {half} swapped (within 10 %)",
                   f"{seen['swapped']} of {half}", seen["swapped"] >= half * 0.9)
        demo.check("the other half never left RAM", f"{half} of {half} present, none swapped",
                   f"{seen['stayed']} of {half}", seen["stayed"] == half)
        demo.say(f"mincore still called {seen['in_ram']} of {ANON_PAGES} pages resident: pages written to "
                 "swap stay in the swap cache until memory is needed, so only pagemap tells them apart.")
        demo.check("the data comes back intact", f"sha256 {_digest(data)}", f"sha256 {_digest(seen['back'])}",
                   seen["back"] == data)
        demo.check("VmSwap falls back", f"-{half * PAGE_SIZE >> 20} MiB within 10 %",
                   f"{-seen['fell'] / (1 << 20):.1f} MiB", abs(seen["fell"] - half * PAGE_SIZE) <= half * PAGE_SIZE * 0.1)
        demo.say(f"ERRATUM (§3.2.3): the article swaps whole processes out to disk. Linux moved "
                 f"{seen['swapped']} single pages of this process, left its other {seen['stayed']} "
                 "pages in RAM, and the process kept running throughout.")


def _page_out_and_back(anon, half):
    """Page out the first `half` pages, look where each page is, read it all back: the figures."""
    before = usage()
    anon.madvise(MADV["MADV_PAGEOUT"], 0, half * PAGE_SIZE)
    states = anon.pagemap()
    out = usage()
    in_ram = sum(anon.mincore())
    back = anon.read(0, anon.size)
    return {"grew": out.swap_bytes - before.swap_bytes, "fell": out.swap_bytes - usage().swap_bytes,
            "swapped": sum(s.swapped for s in states[:half]),
            "stayed": sum(s.present and not s.swapped for s in states[half:]),
            "in_ram": in_ram, "back": back}


def main(argv=None):
    return run(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
