"""Loading Linux into guest RAM: a bzImage's setup header, its payload unpacked on the host, an ELF vmlinux.

A bzImage (Documentation/arch/x86/boot.rst, "The Linux/x86 Boot Protocol")
is a real-mode setup program of `setup_sects` 512-byte sectors after the boot
sector, then the protected-mode part: a decompressor carrying the kernel as
a compressed payload. The setup header at 0x1f1 describes both; a boot loader
copies it into the zero page (struct boot_params, zero-page.rst), fills in
the command line, initrd and memory map there, and jumps in.

The 64-bit boot protocol enters the decompressor at its load address + 0x200
(startup_64) in long mode, with paging on and the kernel, zero page and
command line identity-mapped. Under kvm_pvm every instruction at CPL0 costs
microseconds and the decompressor would take minutes, so by default this
loader unpacks the payload on the host instead (payload_offset and
payload_length locate it; stdlib decompressors: gzip through zlib, XZ and
LZMA through lzma, bzip2 through bz2) into the ELF vmlinux the decompressor
would have made, loads its PT_LOAD segments at their physical addresses and
enters the kernel proper at the ELF entry (its own startup_64) with the same
zero page: what the decompressor hands over. Firecracker boots vmlinux the
same way. LZ4, ZSTD and LZO payloads have no stdlib decompressor: for them
`load_linux(..., unpack=False)` enters the kernel's own decompressor.

XZ: the kernel compresses with the x86 BCJ filter (scripts/xz_wrap.sh); the
filter chain is recorded in the .xz block headers and liblzma, which
Python's lzma module wraps, decodes it with FORMAT_XZ. The payload ends with
the uncompressed size as a little-endian u32 (scripts/Makefile.lib's
size_append), checked here against what came out.

`load_linux` returns a BootState: the registers and segments a core applies
with KVM_SET_REGS/KVM_SET_SREGS (the page tables and the GDT it describes are
already written into guest RAM). Field offsets below are the boot
protocol's, a documented ABI, spelt with the documentation's names.
"""
from __future__ import annotations

import bz2
import dataclasses
import lzma
import os
import struct
import zlib
from collections.abc import Sequence
from typing import Any

from osvirt.vm.errors import VmError
from osvirt.vm.ram import GuestRam

__all__ = ["KernelImageError", "UnsupportedCompression", "SetupHeader", "BzImage", "Elf", "ElfSegment",
           "Segment", "BootState", "E820", "load_elf", "load_linux", "identity_map", "write_gdt", "default_e820",
           "COMPRESSIONS"]


class KernelImageError(VmError):
    """A kernel image this loader cannot use (not a bzImage, too old a protocol, truncated, a bad ELF),
    or one that does not fit the guest's RAM: raised before guest memory is touched."""


class UnsupportedCompression(KernelImageError):
    """A payload compressed with a format the stdlib cannot undo (LZ4, ZSTD, LZO)."""


# -- the setup header (boot.rst, "The Real-Mode Kernel Header") -------------------
HEADER_OFFSET = 0x1F1
# name: (offset in the file and in boot_params, struct format)
FIELDS: dict[str, tuple[int, str]] = {
    "setup_sects": (0x1F1, "B"), "root_flags": (0x1F2, "H"), "syssize": (0x1F4, "I"),
    "ram_size": (0x1F8, "H"), "vid_mode": (0x1FA, "H"), "root_dev": (0x1FC, "H"), "boot_flag": (0x1FE, "H"),
    "jump": (0x200, "H"), "header": (0x202, "I"), "version": (0x206, "H"), "realmode_swtch": (0x208, "I"),
    "start_sys_seg": (0x20C, "H"), "kernel_version": (0x20E, "H"), "type_of_loader": (0x210, "B"),
    "loadflags": (0x211, "B"), "setup_move_size": (0x212, "H"), "code32_start": (0x214, "I"),
    "ramdisk_image": (0x218, "I"), "ramdisk_size": (0x21C, "I"), "bootsect_kludge": (0x220, "I"),
    "heap_end_ptr": (0x224, "H"), "ext_loader_ver": (0x226, "B"), "ext_loader_type": (0x227, "B"),
    "cmd_line_ptr": (0x228, "I"), "initrd_addr_max": (0x22C, "I"), "kernel_alignment": (0x230, "I"),
    "relocatable_kernel": (0x234, "B"), "min_alignment": (0x235, "B"), "xloadflags": (0x236, "H"),
    "cmdline_size": (0x238, "I"), "hardware_subarch": (0x23C, "I"), "hardware_subarch_data": (0x240, "Q"),
    "payload_offset": (0x248, "I"), "payload_length": (0x24C, "I"), "setup_data": (0x250, "Q"),
    "pref_address": (0x258, "Q"), "init_size": (0x260, "I"), "handover_offset": (0x264, "I"),
    "kernel_info_offset": (0x268, "I"),
}
HDRS_MAGIC = 0x53726448  # "HdrS"
BOOT_FLAG = 0xAA55
MIN_VERSION = 0x0206  # cmdline_size (2.06), payload_offset/length (2.08), xloadflags (2.12) are read when present
LOADED_HIGH, CAN_USE_HEAP = 0x01, 0x80  # loadflags
XLF_KERNEL_64 = 0x01  # xloadflags: the 64-bit entry at load address + 0x200
TYPE_OF_LOADER_UNDEFINED = 0xFF  # no assigned boot loader id
VID_MODE_NORMAL = 0xFFFF

# -- the zero page (zero-page.rst) ------------------------------------------------
ZERO_PAGE_SIZE = 0x1000
EXT_RAMDISK_IMAGE, EXT_RAMDISK_SIZE, EXT_CMD_LINE_PTR = 0x0C0, 0x0C4, 0x0C8
E820_ENTRIES, E820_TABLE, E820_MAX = 0x1E8, 0x2D0, 128
_E820_ENTRY = struct.Struct("<QQI")  # struct boot_e820_entry {u64 addr; u64 size; u32 type;} (packed)
E820_RAM, E820_RESERVED = 1, 2

# -- where this loader puts things in guest physical memory -----------------------
GDT_ADDR = 0x500
ZERO_PAGE_ADDR = 0x7000
STACK_TOP = 0x8FF0
PML4_ADDR = 0x9000  # then the PDPT and the page directories
CMDLINE_ADDR = 0x20000
EBDA_START = 0x9FC00  # the top 1 KiB of conventional memory, and 0xA0000-0x100000, are not RAM on a PC
HIGH_MEMORY = 0x100000
BZIMAGE_LOAD_ADDR = 0x100000  # where a bzImage's protected-mode part goes (boot.rst)
IDENTITY_MAPPED = 4 << 30  # 2 MiB pages over the first 4 GiB

# GDT: the boot protocol's selectors __BOOT_CS (0x10) and __BOOT_DS (0x18), and a TSS (0x20) for VMX's entry checks
BOOT_CS, BOOT_DS, BOOT_TSS = 0x10, 0x18, 0x20

# payload magic numbers (boot.rst, payload_offset)
COMPRESSIONS: dict[str, bytes] = {"gzip": b"\x1f\x8b", "bzip2": b"BZh", "lzma": b"\x5d\x00", "xz": b"\xfd7zXZ",
                                  "lz4": b"\x02\x21", "zstd": b"\x28\xb5\x2f\xfd", "lzo": b"\x89LZO"}
UNPACKED_BY_STDLIB = ("gzip", "bzip2", "lzma", "xz")
_MAX_VMLINUX = 1 << 30  # an unpacked kernel larger than this is a corrupt (or hostile) size


@dataclasses.dataclass(frozen=True)
class SetupHeader:
    """The setup header's fields by the documentation's names (0 for those the image's
    protocol version predates), and its bytes as the file has them."""
    fields: dict[str, int]
    raw: bytes  # 0x1f1 up to 0x202 + the jump's offset byte: what is copied into the zero page

    def __getattr__(self, name: str) -> int:
        if name == "fields":  # not set yet (a copy or unpickling in progress)
            raise AttributeError(name)
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def version_text(self) -> str:
        return f"{self.fields['version'] >> 8}.{self.fields['version'] & 0xFF:02d}"


def _parse_header(data: bytes, name: str) -> SetupHeader:
    if len(data) < 0x250:
        raise KernelImageError(f"{name}: {len(data)} bytes, too short for a bzImage's setup header (0x1f1-0x26c)")
    magic = struct.unpack_from("<I", data, 0x202)[0]
    if magic != HDRS_MAGIC:
        raise KernelImageError(f"{name}: no \"HdrS\" at 0x202 (found {magic:#010x}): not a bzImage of boot "
                               "protocol 2.00 or later")
    boot_flag = struct.unpack_from("<H", data, 0x1FE)[0]
    if boot_flag != BOOT_FLAG:
        raise KernelImageError(f"{name}: boot_flag at 0x1fe is {boot_flag:#06x}, not 0xaa55")
    version = struct.unpack_from("<H", data, 0x206)[0]
    if version < MIN_VERSION:
        raise KernelImageError(f"{name}: boot protocol {version >> 8}.{version & 0xFF:02d}; this loader needs 2.06 "
                               "or later (Linux 2.6.22, 2007)")
    end = 0x202 + data[0x201]  # the jump's offset byte: the header's end
    if end > len(data) or end < 0x26C and version >= 0x020F:
        raise KernelImageError(f"{name}: the setup header ends at {end:#x}, inconsistent with protocol "
                               f"{version >> 8}.{version & 0xFF:02d}")
    fields = {field: struct.unpack_from("<" + fmt, data, off)[0] if off + struct.calcsize(fmt) <= end else 0
              for field, (off, fmt) in FIELDS.items()}
    if fields["setup_sects"] == 0:
        fields["setup_sects"] = 4  # boot.rst: 0 means 4
    return SetupHeader(fields, bytes(data[HEADER_OFFSET:end]))


class BzImage:
    """A bzImage kernel read from `data` (the file's bytes); `name` appears in errors."""

    def __init__(self, data: bytes, name: str = "kernel") -> None:
        self.name = name
        self.data = data
        self.header = _parse_header(data, name)
        h = self.header
        if not h.loadflags & LOADED_HIGH:
            raise KernelImageError(f"{name}: loadflags has no LOADED_HIGH: a zImage, whose protected-mode part "
                                   "loads at 0x10000; only bzImages are loaded here")
        self.setup_size = (h.setup_sects + 1) * 512
        if self.setup_size >= len(data):
            raise KernelImageError(f"{name}: {len(data)} bytes end inside the setup code "
                                   f"({h.setup_sects} sectors + the boot sector = {self.setup_size} bytes)")
        if h.syssize and self.setup_size + 16 * h.syssize > len(data):
            raise KernelImageError(f"{name}: truncated: syssize says {16 * h.syssize} bytes of protected-mode "
                                   f"code after {self.setup_size}, the file has {len(data) - self.setup_size}")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BzImage:
        with open(path, "rb") as f:
            return cls(f.read(), os.fspath(path))

    @property
    def protected_mode(self) -> memoryview:
        """The protected-mode part: the decompressor and its payload, loaded at 0x100000."""
        return memoryview(self.data)[self.setup_size:]

    @property
    def version_string(self) -> str:
        """The kernel_version string ("6.1.0-... (builder) #1 SMP ..."), or "" if the header has none."""
        pointer = self.header.kernel_version
        if not pointer:
            return ""
        start = pointer + 0x200
        end = self.data.find(b"\0", start, start + 512)
        return self.data[start:end].decode("ascii", "replace") if end > 0 else ""

    def payload(self) -> bytes:
        """The compressed payload (protocol 2.08+: payload_offset from the protected-mode part)."""
        h = self.header
        if h.version < 0x0208 or not h.payload_length:
            raise KernelImageError(f"{self.name}: boot protocol {h.version_text} has no payload_offset/length "
                                   "(2.08+): the payload cannot be found without running the decompressor")
        start = self.setup_size + h.payload_offset
        if h.payload_length < 8:  # a magic number and the 4-byte size after the stream, at least
            raise KernelImageError(f"{self.name}: payload_length {h.payload_length} is too short for a payload")
        if start + h.payload_length > len(self.data):
            raise KernelImageError(f"{self.name}: truncated: the payload [{start:#x}, "
                                   f"{start + h.payload_length:#x}) runs past the file's {len(self.data):#x} bytes")
        return self.data[start:start + h.payload_length]

    def compression(self) -> str:
        """The payload's format by its magic number: gzip, bzip2, lzma, xz, lz4, zstd or lzo."""
        payload = self.payload()
        for name, magic in COMPRESSIONS.items():
            if payload.startswith(magic):
                return name
        raise KernelImageError(f"{self.name}: the payload starts with {payload[:6].hex(' ')}, "
                               f"no compression format the boot protocol lists")

    def vmlinux(self) -> bytes:
        """The payload decompressed on the host: the kernel's ELF vmlinux."""
        kind = self.compression()
        if kind not in UNPACKED_BY_STDLIB:
            raise UnsupportedCompression(
                f"{self.name}: the payload is {kind}-compressed; Python's stdlib unpacks only "
                f"{', '.join(UNPACKED_BY_STDLIB)}: load it with unpack=False (the kernel's own decompressor) "
                "or pass an uncompressed vmlinux")
        payload = self.payload()
        declared = struct.unpack("<I", payload[-4:])[0]  # size_append: the unpacked size after the stream
        limit = declared if 0 < declared <= _MAX_VMLINUX else _MAX_VMLINUX
        out = _decompress(kind, payload, limit + 1, self.name)
        if declared and len(out) != declared:
            raise KernelImageError(f"{self.name}: the {kind} payload unpacked to {len(out)} bytes, its trailer "
                                   f"says {declared}: corrupt or truncated")
        if not out.startswith(b"\x7fELF"):
            raise KernelImageError(f"{self.name}: the unpacked payload is not an ELF file (starts {out[:4]!r})")
        return out


def _decompress(kind: str, payload: bytes, max_length: int, name: str) -> bytes:
    decompressor: zlib._Decompress | lzma.LZMADecompressor | bz2.BZ2Decompressor
    if kind == "gzip":
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    elif kind == "bzip2":
        decompressor = bz2.BZ2Decompressor()
    else:
        decompressor = lzma.LZMADecompressor(lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE)
    try:
        out = decompressor.decompress(payload, max_length)
    except (zlib.error, lzma.LZMAError, OSError, EOFError) as e:
        raise KernelImageError(f"{name}: the {kind} payload does not unpack: {e}") from None
    if len(out) >= max_length:
        raise KernelImageError(f"{name}: the {kind} payload unpacks to more than {max_length - 1} bytes")
    if not decompressor.eof:
        raise KernelImageError(f"{name}: the {kind} payload is truncated (the stream does not end)")
    return out


# -- ELF --------------------------------------------------------------------------
PT_LOAD = 1
_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")


@dataclasses.dataclass(frozen=True)
class ElfSegment:
    """A PT_LOAD program header: `filesz` bytes from `offset` at physical `paddr`, zeroed up to `memsz`."""
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    flags: int


class Elf:
    """A 64-bit little-endian x86-64 ELF executable's header and PT_LOAD segments."""

    def __init__(self, data: bytes, name: str = "vmlinux") -> None:
        self.name, self.data = name, data
        if len(data) < _EHDR.size or not data.startswith(b"\x7fELF"):
            raise KernelImageError(f"{name}: not an ELF file")
        ident, etype, machine, _v, entry, phoff, _shoff, _flags, _ehsize, phentsize, phnum, *_ = \
            _EHDR.unpack_from(data)
        if ident[4] != 2 or ident[5] != 1:
            raise KernelImageError(f"{name}: ELF class {ident[4]}, data {ident[5]}: need ELFCLASS64 (2), "
                                   "little-endian (1)")
        if machine != 62 or etype != 2:
            raise KernelImageError(f"{name}: ELF machine {machine}, type {etype}: need EM_X86_64 (62), ET_EXEC (2)")
        if phentsize != _PHDR.size or phoff + phnum * phentsize > len(data):
            raise KernelImageError(f"{name}: program headers at {phoff:#x} ({phnum} of {phentsize} bytes) "
                                   f"are not inside the file's {len(data)} bytes")
        self.segments: list[ElfSegment] = []
        for i in range(phnum):
            ptype, pflags, offset, vaddr, paddr, filesz, memsz, _align = _PHDR.unpack_from(data, phoff + i * phentsize)
            if ptype != PT_LOAD:
                continue
            if filesz > memsz or offset + filesz > len(data):
                raise KernelImageError(f"{name}: PT_LOAD {i}: filesz {filesz:#x} at {offset:#x}, memsz {memsz:#x}: "
                                       "outside the file or larger than its memory size")
            self.segments.append(ElfSegment(offset, vaddr, paddr, filesz, memsz, pflags))
        if not self.segments:
            raise KernelImageError(f"{name}: no PT_LOAD segment")
        self.entry_physical = self._physical(entry)

    def _physical(self, entry: int) -> int:
        """The entry point's physical address: as it is if a segment holds it there, else through the
        segment whose virtual range holds it (a kernel's e_entry is physical, a program's virtual)."""
        for s in self.segments:
            if s.paddr <= entry < s.paddr + s.memsz:
                return entry
        for s in self.segments:
            if s.vaddr <= entry < s.vaddr + s.memsz:
                return entry - s.vaddr + s.paddr
        raise KernelImageError(f"{self.name}: the entry point {entry:#x} is in no PT_LOAD segment")

    @property
    def start(self) -> int:
        return min(s.paddr for s in self.segments)

    @property
    def end(self) -> int:
        return max(s.paddr + s.memsz for s in self.segments)


def load_elf(ram: GuestRam, elf: Elf) -> int:
    """Copy the PT_LOAD segments to their physical addresses (zeroing each past filesz); the entry point.
    Checks every segment against RAM before writing any."""
    for s in elf.segments:
        if not ram.contains(s.paddr, s.memsz):
            raise KernelImageError(f"{elf.name}: segment [{s.paddr:#x}, {s.paddr + s.memsz:#x}) is outside guest RAM "
                                   f"[{ram.base:#x}, {ram.base + ram.size:#x}): give the guest more memory")
    for s in elf.segments:
        ram.write(s.paddr, memoryview(elf.data)[s.offset:s.offset + s.filesz])
        if s.memsz > s.filesz:
            ram.view(s.paddr + s.filesz, s.memsz - s.filesz)[:] = bytes(s.memsz - s.filesz)
    return elf.entry_physical


# -- long mode: page tables, GDT, the state a core applies -------------------------
def identity_map(ram: GuestRam, pml4: int = PML4_ADDR, size: int = IDENTITY_MAPPED) -> int:
    """Identity-map [0, size) with 2 MiB pages: a PML4, a PDPT and one page directory per GiB at
    pml4 + 0x1000...; the CR3 value (pml4)."""
    gib = -(-size // (1 << 30))
    if gib > 512:
        raise ValueError(f"identity_map: {size:#x} bytes need more than one PDPT")
    pdpt = pml4 + 0x1000
    ram.view(pml4, 0x1000 * (2 + gib))[:] = bytes(0x1000 * (2 + gib))
    present_writable = 0x3
    ram.write_u64(pml4, pdpt | present_writable)
    for g in range(gib):
        pd = pdpt + 0x1000 * (1 + g)
        ram.write_u64(pdpt + 8 * g, pd | present_writable)
        ram.write(pd, b"".join(struct.pack("<Q", ((g << 30) + (i << 21)) | present_writable | 0x80)  # PS: 2 MiB
                               for i in range(512)))
    return pml4


@dataclasses.dataclass(frozen=True)
class Segment:
    """A segment register as struct kvm_segment has it."""
    selector: int
    base: int = 0
    limit: int = 0xFFFFFFFF
    type: int = 0
    present: int = 1
    dpl: int = 0
    db: int = 0
    s: int = 1
    l: int = 0  # noqa: E741  (kvm_segment's name)
    g: int = 1
    avl: int = 0
    unusable: int = 0

    def descriptor(self) -> int:
        """The 8-byte GDT descriptor for this segment."""
        limit = self.limit >> 12 if self.g else self.limit
        return ((limit & 0xFFFF) | (self.base & 0xFFFFFF) << 16 | self.type << 40 | self.s << 44
                | self.dpl << 45 | self.present << 47 | (limit >> 16 & 0xF) << 48 | self.avl << 52
                | self.l << 53 | self.db << 54 | self.g << 55 | (self.base >> 24 & 0xFF) << 56)


CODE64 = Segment(BOOT_CS, type=0xB, l=1)  # execute/read, accessed; long mode
DATA = Segment(BOOT_DS, type=0x3, db=1)  # read/write, accessed; 4 GiB flat
TSS = Segment(BOOT_TSS, limit=0x67, type=0xB, s=0, g=0)  # a busy 64-bit TSS: VMX entry wants a usable TR

CR0_PE, CR0_ET, CR0_PG = 1 << 0, 1 << 4, 1 << 31
CR4_PAE = 1 << 5
EFER_LME, EFER_LMA = 1 << 8, 1 << 10


def write_gdt(ram: GuestRam, addr: int = GDT_ADDR) -> tuple[int, int]:
    """A GDT with null descriptors, __BOOT_CS at 0x10, __BOOT_DS at 0x18 and a TSS at 0x20; (base, limit)."""
    entries = [0, 0, CODE64.descriptor(), DATA.descriptor(), TSS.descriptor(), 0]  # a 64-bit TSS takes two slots
    ram.write(addr, struct.pack(f"<{len(entries)}Q", *entries))
    return addr, 8 * len(entries) - 1


@dataclasses.dataclass(frozen=True)
class BootState:
    """How to start the vCPU: regs and sregs as KVM_SET_REGS/KVM_SET_SREGS take them, and where things went."""
    rip: int
    rsi: int  # the zero page
    rsp: int
    rflags: int
    cr0: int
    cr3: int
    cr4: int
    efer: int
    gdt: tuple[int, int]  # (base, limit)
    idt: tuple[int, int]
    cs: Segment
    ds: Segment
    es: Segment
    fs: Segment
    gs: Segment
    ss: Segment
    tr: Segment
    ldt: Segment
    # what was placed where: for the log and the tests
    entry: str  # "vmlinux" (the kernel proper, unpacked on the host) or "decompressor"
    kernel: tuple[int, int]  # [start, end) the kernel occupies
    zero_page: int
    cmdline: tuple[int, int]  # (address, length without the NUL)
    initrd: tuple[int, int]  # (address, size); (0, 0) without one
    e820: tuple[tuple[int, int, int], ...]  # (addr, size, type)

    def regs(self) -> dict[str, int]:
        """The general registers (rip, rsi, rsp, rflags; the others are 0)."""
        return {"rip": self.rip, "rsi": self.rsi, "rsp": self.rsp, "rflags": self.rflags}

    def fill_sregs(self, sregs: Any) -> None:
        """Set these fields on a struct kvm_sregs (from KVM_GET_SREGS, for KVM_SET_SREGS): segments,
        descriptor tables, control registers and EFER; the rest (apic_base, interrupt_bitmap) kept."""
        for name in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"):
            segment, target = getattr(self, name), getattr(sregs, name)
            for field in dataclasses.fields(Segment):
                setattr(target, field.name, getattr(segment, field.name))
        sregs.gdt.base, sregs.gdt.limit = self.gdt
        sregs.idt.base, sregs.idt.limit = self.idt
        sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer = self.cr0, self.cr3, self.cr4, self.efer

    def fill_regs(self, regs: Any) -> None:
        """Set rip, rsi, rsp and rflags on a struct kvm_regs, and zero the other registers."""
        for name in ("rax", "rbx", "rcx", "rdx", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"):
            setattr(regs, name, 0)
        for name, value in self.regs().items():
            setattr(regs, name, value)


E820 = tuple[int, int, int]


def default_e820(ram: GuestRam) -> tuple[E820, ...]:
    """A PC's memory map over guest RAM from 0: conventional memory below the EBDA, the legacy
    hole 0x9fc00-0x100000 reserved, then RAM to the end."""
    if ram.base != 0 or ram.size <= HIGH_MEMORY:
        raise KernelImageError(f"load_linux: guest RAM must start at 0 and pass 1 MiB (it is {ram!r})")
    return ((0, EBDA_START, E820_RAM), (EBDA_START, HIGH_MEMORY - EBDA_START, E820_RESERVED),
            (HIGH_MEMORY, ram.size - HIGH_MEMORY, E820_RAM))


def _read_source(source: str | os.PathLike[str] | bytes, what: str) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), what
    with open(source, "rb") as f:
        return f.read(), os.fspath(source)


def load_linux(ram: GuestRam, kernel: str | os.PathLike[str] | bytes, *, cmdline: str = "",
               initrd: str | os.PathLike[str] | bytes | None = None, unpack: bool = True,
               e820: Sequence[E820] | None = None) -> BootState:
    """Load a Linux bzImage (or an ELF vmlinux) into `ram` for the 64-bit boot protocol.

    unpack=True (the default for a bzImage): the payload is unpacked on the host and the kernel
    proper entered at its ELF entry; unpack=False: the protected-mode part at 0x100000, entered
    at its startup_64 (0x100200), which decompresses the kernel in the guest. An ELF `kernel`
    is loaded as it is (it has no setup header: the zero page gets a minimal one).
    The initrd goes at the highest page-aligned address below initrd_addr_max and the end of
    RAM, above the kernel. Everything is checked before guest memory is written."""
    data, name = _read_source(kernel, "kernel")
    e820 = tuple(e820) if e820 is not None else default_e820(ram)
    image: BzImage | None = None
    elf: Elf | None = None
    if data.startswith(b"\x7fELF"):
        elf = Elf(data, name)
        header_raw, initrd_max, cmdline_max = b"", 0x37FFFFFF, 2047
    else:
        image = BzImage(data, name)
        h = image.header
        if unpack:
            elf = Elf(image.vmlinux(), f"{name} (unpacked)")
        elif not h.xloadflags & XLF_KERNEL_64:
            raise KernelImageError(f"{name}: xloadflags has no XLF_KERNEL_64: no 64-bit entry at 0x200")
        header_raw, initrd_max = image.header.raw, h.initrd_addr_max or 0x37FFFFFF
        cmdline_max = h.cmdline_size or 255
    encoded = cmdline.encode()
    if len(encoded) > cmdline_max or b"\0" in encoded:
        raise KernelImageError(f"{name}: the command line is {len(encoded)} bytes; this kernel takes at most "
                               f"{cmdline_max}, without NUL bytes")
    if CMDLINE_ADDR + len(encoded) + 1 > EBDA_START:
        raise KernelImageError(f"{name}: the command line does not fit below the EBDA")
    # where the kernel goes, and how far it reaches while it starts
    if elf is not None:
        kernel_start, kernel_end = elf.start, elf.end
        if image is not None:  # the decompressed kernel still uses init_size from where it runs
            runtime_start = max(image.header.pref_address, kernel_start)
            kernel_end = max(kernel_end, runtime_start + image.header.init_size)
    else:
        assert image is not None
        h = image.header
        runtime_start = max(h.pref_address, BZIMAGE_LOAD_ADDR)
        kernel_start = BZIMAGE_LOAD_ADDR
        kernel_end = max(BZIMAGE_LOAD_ADDR + len(image.protected_mode), runtime_start + h.init_size)
    if kernel_start < HIGH_MEMORY or not ram.contains(kernel_start, kernel_end - kernel_start):
        mib = -(-kernel_end // (1 << 20))
        raise KernelImageError(f"{name}: the kernel needs [{kernel_start:#x}, {kernel_end:#x}) in guest RAM "
                               f"[{ram.base:#x}, {ram.base + ram.size:#x}): give the guest more than {mib} MiB")
    initrd_data = b""
    initrd_addr = 0
    if initrd is not None:
        initrd_data, initrd_name = _read_source(initrd, "initrd")
        top = min(initrd_max + 1, ram.base + ram.size, IDENTITY_MAPPED)
        initrd_addr = (top - len(initrd_data)) & ~0xFFF
        if not initrd_data or initrd_addr < kernel_end:
            raise KernelImageError(f"{initrd_name}: {len(initrd_data)} bytes do not fit between the kernel's end "
                                   f"{kernel_end:#x} and {top:#x} (initrd_addr_max {initrd_max:#x}, end of RAM)")
    if len(e820) > E820_MAX:
        raise KernelImageError(f"load_linux: {len(e820)} e820 entries, the zero page holds {E820_MAX}")

    # -- everything checked: write guest memory --------------------------------------
    if elf is not None:
        rip = load_elf(ram, elf)
        entry = "vmlinux"
    else:
        assert image is not None
        ram.write(BZIMAGE_LOAD_ADDR, image.protected_mode)
        rip = BZIMAGE_LOAD_ADDR + 0x200
        entry = "decompressor"
    zero = bytearray(ZERO_PAGE_SIZE)
    zero[HEADER_OFFSET:HEADER_OFFSET + len(header_raw)] = header_raw
    if not header_raw:  # an ELF kernel: the fields the kernel checks for a 2.x boot loader
        struct.pack_into("<H", zero, 0x1FE, BOOT_FLAG)
        struct.pack_into("<I", zero, 0x202, HDRS_MAGIC)
        struct.pack_into("<H", zero, 0x206, MIN_VERSION)
        zero[0x211] = LOADED_HIGH
    struct.pack_into("<H", zero, FIELDS["vid_mode"][0], VID_MODE_NORMAL)
    zero[FIELDS["type_of_loader"][0]] = TYPE_OF_LOADER_UNDEFINED
    zero[FIELDS["loadflags"][0]] |= CAN_USE_HEAP
    struct.pack_into("<H", zero, FIELDS["heap_end_ptr"][0], 0xE000 - 0x200)  # boot.rst's sample configuration
    if entry == "decompressor":
        struct.pack_into("<I", zero, FIELDS["code32_start"][0], BZIMAGE_LOAD_ADDR)
    struct.pack_into("<I", zero, FIELDS["cmd_line_ptr"][0], CMDLINE_ADDR)
    struct.pack_into("<I", zero, EXT_CMD_LINE_PTR, CMDLINE_ADDR >> 32)
    struct.pack_into("<I", zero, FIELDS["ramdisk_image"][0], initrd_addr & 0xFFFFFFFF)
    struct.pack_into("<I", zero, FIELDS["ramdisk_size"][0], len(initrd_data) & 0xFFFFFFFF)
    struct.pack_into("<I", zero, EXT_RAMDISK_IMAGE, initrd_addr >> 32)
    struct.pack_into("<I", zero, EXT_RAMDISK_SIZE, len(initrd_data) >> 32)
    zero[E820_ENTRIES] = len(e820)
    for i, entry_ in enumerate(e820):
        _E820_ENTRY.pack_into(zero, E820_TABLE + i * _E820_ENTRY.size, *entry_)
    ram.write(ZERO_PAGE_ADDR, zero)
    ram.write(CMDLINE_ADDR, encoded + b"\0")
    if initrd_data:
        ram.write(initrd_addr, initrd_data)
    cr3 = identity_map(ram, PML4_ADDR, min(IDENTITY_MAPPED, max(ram.base + ram.size, 1 << 30)))
    gdt = write_gdt(ram)
    return BootState(
        rip=rip, rsi=ZERO_PAGE_ADDR, rsp=STACK_TOP, rflags=0x2,
        cr0=CR0_PE | CR0_ET | CR0_PG, cr3=cr3, cr4=CR4_PAE, efer=EFER_LME | EFER_LMA,
        gdt=gdt, idt=(0, 0), cs=CODE64, ds=DATA, es=DATA, fs=DATA, gs=DATA, ss=DATA, tr=TSS,
        ldt=Segment(0, limit=0, present=0, s=0, g=0, unusable=1),
        entry=entry, kernel=(kernel_start, kernel_end), zero_page=ZERO_PAGE_ADDR,
        cmdline=(CMDLINE_ADDR, len(encoded)), initrd=(initrd_addr, len(initrd_data)), e820=e820)
