"""osvirt.vm.loader: Debian's bzImage parsed and unpacked on the host, checked against `file`
and `readelf`; a small bzImage-shaped file built here for every error path, each raised
before guest memory is touched."""
import bz2
import gzip
import lzma
import mmap
import re
import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from osvirt.vm import loader
from osvirt.vm.ram import GuestRam

MiB = 1 << 20


def zero_page_field(ram, offset, fmt):
    return struct.unpack_from("<" + fmt, ram.read(loader.ZERO_PAGE_ADDR + offset, struct.calcsize(fmt)))[0]


# -- a synthetic kernel: an ELF with one segment, in a bzImage of our own making ----------------------
def tiny_elf(paddr=0x100_0000, code=b"\xf4" * 64, bss=4096, entry=None):
    """An ELF64 x86-64 executable: one PT_LOAD of `code` at `paddr` (virtual 0xffffffff80000000 + paddr),
    `bss` zero bytes after it; e_entry physical unless given."""
    ehdr_size, phdr_size = 64, 56
    offset = 0x1000
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = struct.pack("<16sHHIQQQIHHHHHH", ident, 2, 62, 1, paddr if entry is None else entry, ehdr_size, 0, 0,
                       ehdr_size, phdr_size, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, offset, 0xFFFF_FFFF_8000_0000 + paddr, paddr, len(code), len(code) + bss,
                       0x200000)
    return (ehdr + phdr).ljust(offset, b"\0") + code


def xz_bcj(data):
    """XZ as the kernel's scripts/xz_wrap.sh makes it for x86: the BCJ filter before LZMA2, CRC32."""
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                         filters=[{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2}])


COMPRESS = {"gzip": gzip.compress, "bzip2": bz2.compress, "xz": xz_bcj,
            "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE)}


def bzimage(payload=None, *, version=0x020F, setup_sects=4, magic=b"HdrS", loadflags=0x01, xloadflags=0x01,
            size_trailer=None, init_size=0x10_0000):
    """A bzImage-shaped file: boot sector and setup sectors with a setup header, then a
    protected-mode part of a 0x200-byte stand-in decompressor followed by the payload and
    the unpacked size (the kernel's size_append)."""
    elf = tiny_elf()
    if payload is None:
        payload = gzip.compress(elf)
    payload += struct.pack("<I", len(elf) if size_trailer is None else size_trailer)
    setup = bytearray((setup_sects + 1) * 512)
    pm = b"\x90" * 0x200 + payload
    pm += bytes(-len(pm) % 16)  # the build pads the protected-mode part to whole paragraphs
    struct.pack_into("<B", setup, 0x1F1, setup_sects)
    struct.pack_into("<I", setup, 0x1F4, -(-len(pm) // 16))  # syssize
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)
    setup[0x200:0x202] = bytes([0xEB, 0x6A])  # jmp: the header ends at 0x202 + 0x6a = 0x26c
    setup[0x202:0x206] = magic
    struct.pack_into("<H", setup, 0x206, version)
    struct.pack_into("<H", setup, 0x20E, 0x400)  # kernel_version at 0x600
    setup[0x600:0x613] = b"9.9.9-synthetic #1\0"
    struct.pack_into("<B", setup, 0x211, loadflags)
    struct.pack_into("<I", setup, 0x22C, 0x7FFF_FFFF)  # initrd_addr_max
    struct.pack_into("<I", setup, 0x230, 0x20_0000)  # kernel_alignment
    struct.pack_into("<H", setup, 0x236, xloadflags)
    struct.pack_into("<I", setup, 0x238, 2047)  # cmdline_size
    struct.pack_into("<II", setup, 0x248, 0x200, len(payload))  # payload_offset, payload_length
    struct.pack_into("<Q", setup, 0x258, 0x100_0000)  # pref_address
    struct.pack_into("<I", setup, 0x260, init_size)
    return bytes(setup) + pm


@pytest.fixture
def ram():
    buf = bytearray(32 * MiB)
    return GuestRam(buf), buf


def untouched(buf):
    return buf == bytes(len(buf))


@pytest.mark.parametrize("kind", sorted(COMPRESS))
def test_a_synthetic_bzimage_unpacks_and_loads(ram, kind):
    ram, buf = ram
    image = loader.BzImage(bzimage(COMPRESS[kind](tiny_elf())), "synthetic")
    assert image.compression() == kind
    assert image.header.version_text == "2.15" and image.version_string == "9.9.9-synthetic #1"
    assert image.vmlinux() == tiny_elf()
    state = loader.load_linux(ram, bzimage(COMPRESS[kind](tiny_elf())), cmdline="console=ttyS0 quiet",
                              initrd=b"070701" + b"\0" * 1000)
    assert state.entry == "vmlinux" and state.rip == 0x100_0000
    assert ram.read(0x100_0000, 64) == b"\xf4" * 64 and ram.read(0x100_0000 + 64, 4096) == bytes(4096)
    assert zero_page_field(ram, 0x202, "I") == 0x53726448 and zero_page_field(ram, 0x210, "B") == 0xFF
    assert ram.read(zero_page_field(ram, 0x228, "I"), 20) == b"console=ttyS0 quiet\0"
    image_addr, size = zero_page_field(ram, 0x218, "I"), zero_page_field(ram, 0x21C, "I")
    assert (image_addr, size) == state.initrd and size == 1006
    assert image_addr % 4096 == 0 and image_addr + size <= 32 * MiB and ram.read(image_addr, 6) == b"070701"


def test_the_long_mode_state_is_what_the_boot_protocol_asks(ram):
    ram, buf = ram
    state = loader.load_linux(ram, bzimage())
    # paging: PML4[0] -> PDPT[0] -> PD with 2 MiB pages mapping themselves
    pml4 = state.cr3
    pdpt = ram.read_u64(pml4) & ~0xFFF
    pd = ram.read_u64(pdpt) & ~0xFFF
    for i in (0, 8, 511):
        entry = ram.read_u64(pd + 8 * i)
        assert entry & 0x81 == 0x81 and entry & ~0xFFF == i << 21  # present, 2 MiB page, identity
    assert state.cr0 & 0x8000_0001 == 0x8000_0001 and state.cr4 & 0x20 and state.efer & 0x500 == 0x500
    # GDT: __BOOT_CS (0x10) a 64-bit code segment, __BOOT_DS (0x18) a flat data segment
    base, limit = state.gdt
    cs = ram.read_u64(base + 0x10)
    ds = ram.read_u64(base + 0x18)
    assert (cs >> 53) & 1 == 1 and (cs >> 43) & 1 == 1 and (cs >> 47) & 1 == 1  # L, executable, present
    assert (ds >> 43) & 1 == 0 and (ds >> 41) & 1 == 1 and (ds >> 54) & 1 == 1  # data, writable, 32-bit flat
    assert state.cs.selector == 0x10 and state.ds.selector == state.ss.selector == 0x18 and limit >= 0x27
    assert state.rsi == state.zero_page and state.rflags & 0x200 == 0  # interrupts off
    # e820: RAM below the EBDA and from 1 MiB, read back from the zero page
    n = zero_page_field(ram, 0x1E8, "B")
    table = [struct.unpack("<QQI", ram.read(loader.ZERO_PAGE_ADDR + 0x2D0 + 20 * i, 20)) for i in range(n)]
    assert table == [(0, 0x9FC00, 1), (0x9FC00, 0x100000 - 0x9FC00, 2), (0x100000, 31 * MiB, 1)]


def test_the_decompressor_entry_when_not_unpacked(ram):
    ram, buf = ram
    data = bzimage()
    state = loader.load_linux(ram, data, unpack=False)
    assert state.entry == "decompressor" and state.rip == 0x100200
    setup_size = 5 * 512
    assert ram.read(0x100000, len(data) - setup_size) == data[setup_size:]
    assert zero_page_field(ram, 0x214, "I") == 0x100000  # code32_start


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d[:0x202] + b"Nope" + d[0x206:], "no \"HdrS\""),
    (lambda d: d[:0x1FE] + b"\0\0" + d[0x200:], "boot_flag"),
    (lambda d: d[:0x206] + struct.pack("<H", 0x0204) + d[0x208:], "protocol 2.04"),
    (lambda d: d[:0x211] + b"\0" + d[0x212:], "zImage"),
    (lambda d: d[:0x240], "too short"),
    (lambda d: d[:5 * 512 + 0x210], "truncated"),  # inside the payload
    (lambda d: d[:2000], "too short|inside the setup"),
])
def test_a_broken_image_is_refused_before_anything(ram, mutate, message):
    ram, buf = ram
    with pytest.raises(loader.KernelImageError, match=message):
        loader.load_linux(ram, mutate(bzimage()))
    assert untouched(buf)


@pytest.mark.parametrize("kind, magic", [("zstd", b"\x28\xb5\x2f\xfd"), ("lz4", b"\x02\x21"), ("lzo", b"\x89LZO")])
def test_formats_without_a_stdlib_decompressor_are_named(ram, kind, magic):
    ram, buf = ram
    data = bzimage(magic + b"\0" * 100)
    with pytest.raises(loader.UnsupportedCompression, match=f"{kind}-compressed.*gzip, bzip2, lzma, xz.*unpack=False"):
        loader.load_linux(ram, data)
    assert untouched(buf)
    assert loader.load_linux(ram, data, unpack=False).entry == "decompressor"  # the kernel's own decompressor


@pytest.mark.parametrize("payload, kw, message", [
    (gzip.compress(tiny_elf())[:-20], {}, "does not unpack|truncated"),
    (gzip.compress(tiny_elf()), {"size_trailer": 12345}, "trailer says 12345"),
    (gzip.compress(b"not an elf" * 10), {"size_trailer": 100}, "not an ELF"),
    (b"\x00\x01\x02\x03", {}, "no compression format"),
])
def test_a_bad_payload_is_refused(ram, payload, kw, message):
    ram, buf = ram
    with pytest.raises(loader.KernelImageError, match=message):
        loader.load_linux(ram, bzimage(payload, **kw))
    assert untouched(buf)


def test_what_does_not_fit_is_refused_before_anything(ram):
    ram, buf = ram
    with pytest.raises(loader.KernelImageError, match=r"\[0x1000000, 0x5000000\).*more than 80 MiB"):
        loader.load_linux(ram, bzimage(init_size=64 * MiB))
    with pytest.raises(loader.KernelImageError, match="do not fit"):
        loader.load_linux(ram, bzimage(), initrd=b"x" * (31 * MiB))
    with pytest.raises(loader.KernelImageError, match="at most 2047"):
        loader.load_linux(ram, bzimage(), cmdline="x" * 2048)
    with pytest.raises(loader.KernelImageError, match="XLF_KERNEL_64"):
        loader.load_linux(ram, bzimage(xloadflags=0), unpack=False)
    elf = tiny_elf(paddr=40 * MiB)
    with pytest.raises(loader.KernelImageError, match="outside guest RAM|more than"):
        loader.load_linux(ram, elf)
    assert untouched(buf)


def test_an_elf_kernel_loads_as_it_is(ram):
    ram, buf = ram
    state = loader.load_linux(ram, tiny_elf(entry=0xFFFF_FFFF_8000_0000 + 0x100_0010), cmdline="x")
    assert state.rip == 0x100_0010  # a virtual e_entry, translated through its segment
    assert zero_page_field(ram, 0x202, "I") == 0x53726448 and zero_page_field(ram, 0x1FE, "H") == 0xAA55
    with pytest.raises(loader.KernelImageError, match="no PT_LOAD"):
        loader.Elf(tiny_elf()[:56] + struct.pack("<I", 0) + tiny_elf()[60:])
    with pytest.raises(loader.KernelImageError, match="EM_X86_64"):
        loader.Elf(tiny_elf()[:18] + struct.pack("<H", 183) + tiny_elf()[20:])  # aarch64
    with pytest.raises(loader.KernelImageError, match="in no PT_LOAD"):
        loader.Elf(tiny_elf(entry=0x1234))


# -- Debian's kernel ----------------------------------------------------------------------------------
def test_debians_bzimage_header(debian_kernel):
    image = loader.BzImage.from_file(debian_kernel)
    h = image.header
    assert h.header == 0x53726448 and h.boot_flag == 0xAA55
    assert h.version >= 0x020F and re.fullmatch(r"2\.\d\d", h.version_text)  # bookworm's is 2.15
    assert h.loadflags & 0x01 and h.xloadflags & 0x01  # a bzImage with the 64-bit entry
    assert h.relocatable_kernel and h.kernel_alignment == 0x20_0000 and h.pref_address == 0x100_0000
    release = debian_kernel.rsplit("vmlinuz-", 1)[1]  # the package's file name: vmlinuz-<release>
    assert image.version_string.startswith(release + " ")
    if shutil.which("file"):  # file(1)'s magic reads the same string from the same header
        described = subprocess.run(["file", "-b", debian_kernel], capture_output=True, text=True).stdout
        assert f"version {image.version_string}" in described, described
    assert image.compression() == "xz"


def test_debians_payload_unpacks_to_its_vmlinux(debian_kernel, tmp_path):
    image = loader.BzImage.from_file(debian_kernel)
    vmlinux = image.vmlinux()
    elf = loader.Elf(vmlinux)
    release = debian_kernel.rsplit("vmlinuz-", 1)[1]
    assert b"Linux version " + release.encode() in vmlinux
    assert elf.entry_physical == image.header.pref_address  # startup_64 at the kernel's physical start
    # readelf's view of the same bytes: entry and PT_LOAD segments
    if shutil.which("readelf") is None:
        pytest.skip("readelf (binutils) is not installed")
    path = tmp_path / "vmlinux"
    path.write_bytes(vmlinux)
    out = subprocess.run(["readelf", "-lhW", str(path)], capture_output=True, text=True, check=True).stdout
    assert int(re.search(r"Entry point address:\s+(0x[0-9a-f]+)", out).group(1), 16) == elf.entry_physical
    loads = [tuple(int(x, 16) for x in m) for m in
             re.findall(r"^\s+LOAD\s+(0x\w+) (0x\w+) (0x\w+) (0x\w+) (0x\w+)", out, re.M)]
    assert loads == [(s.offset, s.vaddr, s.paddr, s.filesz, s.memsz) for s in elf.segments]
    assert elf.start == 0x100_0000 and all(s.paddr % 4096 == 0 for s in elf.segments)


def test_debians_kernel_loads_into_guest_ram(debian_kernel):
    with mmap.mmap(-1, 256 * MiB) as memory:
        ram = GuestRam(memory)
        state = loader.load_linux(ram, debian_kernel, cmdline="console=ttyS0 earlyprintk=ttyS0",
                                  initrd=b"070701" + bytes(4090))
        elf = loader.Elf(loader.BzImage.from_file(debian_kernel).vmlinux())
        for s in elf.segments:  # each segment's first and last page, where the ELF put them
            assert ram.read(s.paddr, 4096) == elf.data[s.offset:s.offset + 4096]
            assert ram.read(s.paddr + s.filesz - 4096, 4096) == elf.data[s.offset + s.filesz - 4096:s.offset + s.filesz]
        assert state.rip == 0x100_0000 and state.kernel[1] > elf.end - 1
        assert state.initrd[0] >= state.kernel[1] and state.initrd[0] + 4096 <= 256 * MiB
        assert zero_page_field(ram, 0x206, "H") >= 0x020F  # the kernel's own header, copied in
        ram.release()


def test_the_state_fills_kvm_structs_by_their_field_names(ram):
    """BootState.fill_sregs/fill_regs set struct kvm_sregs/kvm_regs fields by name (stand-ins here)."""
    from types import SimpleNamespace
    ram, buf = ram
    state = loader.load_linux(ram, bzimage())
    fields = ("selector", "base", "limit", "type", "present", "dpl", "db", "s", "l", "g", "avl", "unusable")
    sregs = SimpleNamespace(**{name: SimpleNamespace(**dict.fromkeys(fields)) for name in
                               ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")},
                            gdt=SimpleNamespace(base=None, limit=None), idt=SimpleNamespace(base=None, limit=None),
                            cr0=0, cr3=0, cr4=0, efer=0, apic_base=0xFEE00900)
    state.fill_sregs(sregs)
    assert (sregs.cs.selector, sregs.cs.l, sregs.cs.type) == (0x10, 1, 0xB)
    assert (sregs.ss.selector, sregs.ss.db, sregs.tr.type, sregs.ldt.present) == (0x18, 1, 0xB, 0)
    assert (sregs.gdt.base, sregs.gdt.limit) == state.gdt and sregs.cr3 == state.cr3
    assert sregs.apic_base == 0xFEE00900  # not the loader's to change
    regs = SimpleNamespace(rax=7)
    state.fill_regs(regs)
    assert (regs.rip, regs.rsi, regs.rax, regs.rflags) == (0x100_0000, loader.ZERO_PAGE_ADDR, 0, 2)


@settings(max_examples=300, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0x1F1, 0x26B), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.integers(0, 3000))
def test_any_header_bytes_give_a_kernel_image_error_or_an_elf(edits, cut):
    """Whatever a file's setup header says, the loader answers with a KernelImageError or a checked ELF."""
    data = bytearray(bzimage())
    for offset, value in edits:
        data[offset] = value
    if cut:
        data = data[:-cut]
    try:
        elf = loader.Elf(loader.BzImage(bytes(data), "fuzzed").vmlinux())
    except loader.KernelImageError:
        return
    assert elf.entry_physical == 0x100_0000
