"""The hot calls (mmap, munmap, mprotect) through osvirt._quickcalls: what the kernel did,
the errno and the facility of a refusal, and arguments refused before any system call."""
import errno
import os

import pytest

from osvirt import _quickcalls
from osvirt.errors import ProtectionFault
from osvirt.memory import PAGE_SIZE, PROT_NONE, PROT_READ, PROT_WRITE, SEGV_ACCERR, Mapping, procfs
from osvirt.memory import _native

P = PAGE_SIZE
PRIVATE_ANONYMOUS = _native.MAP["MAP_PRIVATE"] | _native.MAP["MAP_ANONYMOUS"]


def _perms(addr, length):
    """(start, end, perms) of the /proc/self/maps areas in [addr, addr+length), clipped to it:
    the kernel may merge a new mapping with a neighbour that has the same protection."""
    end = addr + length
    return [(max(v.start, addr), min(v.end, end), v.perms) for v in procfs.maps(addr, end)]


def test_mmap_gives_an_address_that_maps_shows_and_munmap_removes_it():
    addr = _native.mmap(3 * P, PROT_READ | PROT_WRITE, PRIVATE_ANONYMOUS, -1, 0)
    try:
        assert addr % P == 0
        assert _perms(addr, 3 * P) == [(addr, addr + 3 * P, "rw-p")]
        _native.write(addr + P, b"kept")
        assert _native.read(addr + P, 4) == b"kept"
    finally:
        _native.munmap(addr, 3 * P)
    assert _perms(addr, 3 * P) == []


def test_a_populated_file_mapping_holds_the_files_bytes(tmp_path):
    # The mmap that may wait (a file, MAP_POPULATE): made with the GIL released.
    path = tmp_path / "data"
    path.write_bytes(b"0123456789" * 1000)
    flags = _native.MAP["MAP_SHARED"] | _native.MAP["MAP_POPULATE"]
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _native.mmap(3 * P, PROT_READ, flags, fd, P)
    finally:
        os.close(fd)
    try:
        assert _native.read(addr, 10) == (b"0123456789" * 1000)[P:P + 10]
        assert [b & 1 for b in _native.mincore(addr, 2 * P, 2)] == [1, 1]  # in by MAP_POPULATE
        assert procfs.maps(addr, addr + P)[0].path == str(path)
    finally:
        _native.munmap(addr, 3 * P)


def test_mprotect_to_prot_none_shows_in_maps_and_faults_then_back_reads_the_data():
    addr = _native.mmap(2 * P, PROT_READ | PROT_WRITE, PRIVATE_ANONYMOUS, -1, 0)
    try:
        _native.write(addr + P, b"data")
        _native.mprotect(addr + P, P, PROT_NONE)
        assert _perms(addr, 2 * P) == [(addr, addr + P, "rw-p"), (addr + P, addr + 2 * P, "---p")]
        with pytest.raises(ProtectionFault) as fault:
            _native.read(addr + P, 1)
        assert (fault.value.address, fault.value.si_code) == (addr + P, SEGV_ACCERR)
        _native.mprotect(addr + P, P, PROT_READ)
        assert _native.read(addr + P, 4) == b"data"
        assert _perms(addr, 2 * P)[1] == (addr + P, addr + 2 * P, "r--p")
    finally:
        _native.munmap(addr, 2 * P)


def test_a_mapping_mprotect_with_an_int_flag_goes_through_the_checks_and_reaches_the_kernel():
    import enum

    class Prot(enum.IntFlag):  # equal to a valid prot, but not exactly an int
        READ = PROT_READ
    with Mapping(P) as m:
        m.mprotect(Prot.READ)
        assert [v.perms for v in m.maps()] == ["r--p"]


@pytest.mark.parametrize("prot", [True, 1.0, [], "1", None])
def test_a_mapping_mprotect_of_a_non_int_names_mprotect_and_changes_nothing(prot):
    with Mapping(P) as m:
        with pytest.raises(TypeError, match="mprotect: prot must be an int"):
            m.mprotect(prot)
        assert [v.perms for v in m.maps()] == ["rw-p"]


def test_refusals_carry_the_kernels_errno_and_name_the_call():
    addr = _native.mmap(P, PROT_READ, PRIVATE_ANONYMOUS, -1, 0)
    try:
        with pytest.raises(OSError, match=rf"mprotect\({addr + 1:#x}, {P}, 0x1\): Invalid argument "
                                          r"\(the address must be page-aligned\)") as e:
            _native.mprotect(addr + 1, P, PROT_READ)
        assert e.value.errno == errno.EINVAL
        with pytest.raises(OSError, match=rf"munmap\({addr + 1:#x}, {P}\): Invalid argument") as e:
            _native.munmap(addr + 1, P)
        assert e.value.errno == errno.EINVAL
        assert _perms(addr, P) == [(addr, addr + P, "r--p")]  # still mapped
    finally:
        _native.munmap(addr, P)
    r, w = os.pipe()
    os.close(r)
    os.close(w)  # a number no descriptor has now
    shared = _native.MAP["MAP_SHARED"]
    with pytest.raises(OSError, match=rf"mmap\(NULL, {P}, 0x1, {shared:#x}, {r}, 0\): Bad file descriptor") as e:
        _native.mmap(P, PROT_READ, shared, r, 0)
    assert e.value.errno == errno.EBADF


@pytest.mark.parametrize("bad, error", [
    (True, TypeError), (1.0, TypeError), ("1", TypeError), (None, TypeError),
    (-1, OverflowError), (1 << 64, OverflowError),
])
def test_quick_calls_refuse_what_is_not_a_c_number_before_any_syscall(bad, error):
    addr = _native.mmap(2 * P, PROT_READ | PROT_WRITE, PRIVATE_ANONYMOUS, -1, 0)
    try:
        # A bad address or length: the mapping is untouched (-1 is no address 2**64-1,
        # and a length of 2**64 + P is not taken as P, truncated to 64 bits).
        for call, args in [(_quickcalls.munmap, (bad, P)), (_quickcalls.munmap, (addr, bad)),
                           (_quickcalls.mprotect, (bad, P, PROT_NONE)),
                           (_quickcalls.mprotect, (addr, bad, PROT_NONE)),
                           (_quickcalls.mprotect, (addr, (1 << 64) + P, PROT_NONE)),
                           (_quickcalls.mmap, (bad, PROT_READ, PRIVATE_ANONYMOUS, -1, 0))]:
            with pytest.raises(OverflowError if args[1] == (1 << 64) + P else error):
                call(*args)
        assert _perms(addr, 2 * P) == [(addr, addr + 2 * P, "rw-p")]
    finally:
        _native.munmap(addr, 2 * P)


@pytest.mark.parametrize("call, args", [
    (_quickcalls.mmap, (P, PROT_READ, PRIVATE_ANONYMOUS, -1)),  # one short
    (_quickcalls.munmap, (1, 2, 3)), (_quickcalls.mprotect, ()),
    (_quickcalls.mmap, (P, PROT_READ, PRIVATE_ANONYMOUS, -1, 1.5)),
    (_quickcalls.mmap, (P, 1 << 31, PRIVATE_ANONYMOUS, -1, 0)),  # no C int
    (_quickcalls.mmap, (P, PROT_READ, PRIVATE_ANONYMOUS, -1, 1 << 63)),  # no off_t
])
def test_quick_calls_check_their_argument_count_and_c_types(call, args):
    with pytest.raises((TypeError, OverflowError)):
        call(*args)
