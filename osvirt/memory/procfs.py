"""What the kernel says about this process's memory in /proc/self.

`maps()` and `smaps()` read the VMAs (virtual memory areas) that overlap an
address range, `pagemap()` the per-page flags (present, swapped, file) and
`status()` the Vm*/Rss* lines. Unprivileged readers of pagemap get the flags
with the page frame numbers zeroed, which is all that is read here.
"""
import os
import re
import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

__all__ = ["ADDRESS_LIMIT", "PAGEMAP_MAX_PAGES", "Vma", "PageState", "maps", "smaps", "pagemap", "status"]

ADDRESS_LIMIT = 1 << 47  # the end of the x86-64 user address space (4-level page tables)
# One pagemap() call reads 8 bytes and builds one PageState a page: 4 GiB of
# address space a call (8 MiB read) keeps any count a caller passes from
# exhausting memory, since unmapped pages read as zeros, not as a short read.
PAGEMAP_MAX_PAGES = 1 << 20
_VMA_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$")


class Vma(NamedTuple):
    """One line of /proc/self/maps (with its smaps fields when read from smaps).

    Equal and hashed by the line alone, not its fields: a maps() entry equals
    the smaps() entry of the same VMA."""
    start: int
    end: int
    perms: str          # e.g. "r--p": read, no write, no exec, private
    offset: int
    inode: int
    path: str
    fields: Mapping[str, str] = MappingProxyType({})  # smaps: "Rss" -> kB, ...

    def __eq__(self, other: object) -> bool:
        return self[:6] == other[:6] if isinstance(other, Vma) else NotImplemented

    def __ne__(self, other: object) -> bool:
        return self[:6] != other[:6] if isinstance(other, Vma) else NotImplemented

    def __hash__(self) -> int:
        return hash(self[:6])

    @property
    def size(self) -> int:
        return self.end - self.start

    def kb(self, name: str) -> int:
        """An smaps size field (e.g. "AnonHugePages") in kB."""
        return int(self.fields[name].split()[0])


def _vmas(path: str, start: int, end: int) -> list[Vma]:
    found: list[Vma] = []
    fields: dict[str, str] | None = None  # the current Vma's, while its smaps lines follow
    with open(path) as f:
        for line in f:
            m = _VMA_LINE.match(line)
            if m:
                lo, hi = int(m[1], 16), int(m[2], 16)
                fields = None
                if lo < end and hi > start:
                    fields = {}
                    found.append(Vma(lo, hi, m[3], int(m[4], 16), int(m[6]), m[7], fields))
            elif fields is not None and ":" in line:
                name, value = line.split(":", 1)
                fields[name] = value.strip()
    return found


def maps(start: int, end: int) -> list[Vma]:
    """The /proc/self/maps lines overlapping [start, end), whole (a VMA may reach past either end)."""
    return _vmas("/proc/self/maps", start, end)


def smaps(start: int, end: int) -> list[Vma]:
    """The /proc/self/smaps entries overlapping [start, end), with their fields."""
    return _vmas("/proc/self/smaps", start, end)


class PageState(NamedTuple):
    """Bits 63, 62 and 61 of a /proc/self/pagemap entry (Documentation/admin-guide/mm/pagemap.rst)."""
    present: bool   # in RAM, mapped by this process
    swapped: bool   # the page table holds a swap entry: the page is in swap
    file: bool      # a file page or shared anonymous page


def pagemap(address: int, pages: int, pid: int = 0) -> list[PageState]:
    """The PageState of `pages` pages from page-aligned `address`, in this process or in
    process `pid` (/proc/PID/pagemap: the flags need only ptrace-read access, as a
    parent has to its own children; the frame numbers, not read here, need CAP_SYS_ADMIN)."""
    page = os.sysconf("SC_PAGE_SIZE")
    if isinstance(address, bool) or isinstance(pages, bool) or isinstance(pid, bool) or \
            not isinstance(address, int) or not isinstance(pages, int) or not isinstance(pid, int):
        raise TypeError("pagemap: address, pages and pid must be ints")
    if pid < 0:
        raise ValueError(f"pagemap: pid must be >= 0 (0: this process), not {pid}")
    if not 0 <= address < ADDRESS_LIMIT or address % page or not 0 <= pages <= (ADDRESS_LIMIT - address) // page:
        raise ValueError(f"pagemap: address {address:#x} must be page-aligned and {pages} pages "
                         f"must lie below {ADDRESS_LIMIT:#x}")
    if pages > PAGEMAP_MAX_PAGES:
        raise ValueError(f"pagemap: {pages} pages is more than one call reads ({PAGEMAP_MAX_PAGES})")
    fd = os.open(f"/proc/{pid or 'self'}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        raw = os.pread(fd, 8 * pages, address // page * 8)
    finally:
        os.close(fd)
    return [PageState(bool(e >> 63 & 1), bool(e >> 62 & 1), bool(e >> 61 & 1))
            for e in struct.unpack(f"<{len(raw) // 8}Q", raw)]


def status() -> dict[str, int]:
    """The sizes in /proc/self/status (VmRSS, RssAnon, VmSwap, ...), in bytes."""
    sizes = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, value = line.split(":", 1)
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                sizes[name] = int(parts[0]) * 1024
    return sizes
