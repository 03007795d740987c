import errno
import os
import pickle
import resource
import signal
import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from osvirt.env import capabilities
from osvirt.memory import (MADV, PAGE_SIZE, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE, SEGV_ACCERR,
                           SEGV_MAPERR, Mapping, ProtectionFault, children_faults, huge_page_size,
                           usage)
from osvirt.naming import private_dir
from osvirt.process import Children

P = PAGE_SIZE


def test_a_write_to_read_only_memory_raises_with_the_exact_address_and_reads_still_work():
    with Mapping(4 * P) as m:
        m.write(P, b"kept")
        m.mprotect(PROT_READ, P, P)
        with pytest.raises(ProtectionFault) as fault:
            m.write(P + 123, b"x")
        assert fault.value.address == m.address + P + 123
        assert fault.value.si_code == SEGV_ACCERR and fault.value.signo == signal.SIGSEGV
        assert fault.value.code_name == "SEGV_ACCERR"
        assert m.read(P, 4) == b"kept"
        m.write(0, b"neighbours stay writable")


def test_prot_none_refuses_reads_too():
    with Mapping(2 * P) as m:
        m.mprotect(PROT_NONE, P)
        with pytest.raises(ProtectionFault) as fault:
            m.read(P - 2, 4)  # starts readable, faults at the first byte of the guard page
        assert fault.value.address == m.address + P and fault.value.si_code == SEGV_ACCERR


def test_an_unmapped_page_faults_maperr_and_close_leaves_it_alone():
    with Mapping(3 * P) as m:
        m.unmap(P, P)
        with pytest.raises(ProtectionFault) as fault:
            m.read(P + 5, 1)
        assert fault.value.si_code == SEGV_MAPERR and fault.value.address == m.address + P + 5
        with pytest.raises(ValueError, match="unmapped"):
            m.write(P, b"x")
        with pytest.raises(ValueError, match="unmapped"):
            m.mprotect(PROT_READ)
        start = m.address
    assert not any(v.start < start + 3 * P and v.end > start for v in _maps_near(start, 3 * P))


def _maps_near(start, size):
    from osvirt.memory.procfs import maps
    return maps(start, start + size)


def test_a_file_mapping_past_the_end_of_its_file_faults_sigbus():
    with private_dir("/var/tmp") as d:
        path = os.path.join(d, "short")
        with open(path, "wb") as f:
            f.write(b"x" * P)
        with open(path, "rb") as f, Mapping(2 * P, fd=f, prot=PROT_READ) as m:
            assert m.read(0, 1) == b"x"
            with pytest.raises(ProtectionFault) as fault:
                m.read(P, 1)
            assert fault.value.signo == signal.SIGBUS and fault.value.code_name == "BUS_ADRERR"


def test_mprotect_of_the_whole_mapping_shows_in_maps_and_faults():
    with Mapping(3 * P) as m:
        m.write(3 * P - 4, b"kept")
        m.mprotect(PROT_READ)  # the default range: the whole mapping
        assert [(v.start, v.end, v.perms) for v in m.maps()] == [(m.address, m.address + 3 * P, "r--p")]
        with pytest.raises(ProtectionFault) as fault:
            m.write(3 * P - 1, b"x")
        assert fault.value.address == m.address + 3 * P - 1 and fault.value.si_code == SEGV_ACCERR
        m.mprotect(PROT_READ | PROT_WRITE)
        assert [v.perms for v in m.maps()] == ["rw-p"]
        m.write(3 * P - 1, b"!")
        assert m.read(3 * P - 4, 4) == b"kep!"


@pytest.mark.parametrize("prot, error", [(8, ValueError), (-1, ValueError), (1 << 40, ValueError),
                                         (True, TypeError), (1.0, TypeError), ("1", TypeError)])
def test_a_bad_prot_for_the_whole_mapping_is_refused_before_the_kernel(prot, error):
    with Mapping(2 * P) as m:
        with pytest.raises(error, match="mprotect"):
            m.mprotect(prot)
        assert [v.perms for v in m.maps()] == ["rw-p"]  # the kernel was not asked


def test_mprotect_of_a_closed_mapping_is_a_value_error():
    m = Mapping(P)
    m.close()
    with pytest.raises(ValueError, match="closed"):
        m.mprotect(PROT_READ)


def test_a_refused_mmap_carries_the_kernels_errno():
    unused = resource.getrlimit(resource.RLIMIT_NOFILE)[0] + 10  # no fd can have this number
    with pytest.raises(OSError, match=r"mmap\(NULL, 4096") as refused:
        Mapping(P, fd=unused)
    assert refused.value.errno == errno.EBADF


@pytest.mark.parametrize("shared, perms", [(False, "rw-p"), (True, "rw-s")])
def test_a_mapping_is_what_its_flags_asked_and_close_or_del_unmaps_it(shared, perms):
    m = Mapping(1 << 20, shared=shared)
    start = m.address
    assert m.shared is shared and not m.file_backed
    # One VMA covers it (a private one may have merged with an anonymous neighbour);
    # shared anonymous memory is a file in the kernel's shmem, with an inode.
    [vma] = m.maps()
    assert vma.start <= start and vma.end >= start + (1 << 20)
    assert (vma.perms, vma.inode == 0) == (perms, not shared)
    m.close()
    assert not _maps_near(start, 1 << 20)
    m = Mapping(3 * P + 1, shared=shared)  # rounded up to whole pages
    start = m.address
    assert m.size == 4 * P and m.read(4 * P - 1, 1) == b"\0"  # the last page is there
    del m  # __del__ unmaps
    assert not _maps_near(start, 4 * P)


def test_the_kernel_refuses_an_unaligned_mprotect_with_einval():
    with Mapping(2 * P) as m:
        with pytest.raises(ValueError, match="page size"):
            m.mprotect(PROT_READ, 1, P)
        with pytest.raises(OSError) as refused:
            m.mprotect(PROT_READ, 1, P, kernel_checks_alignment=True)
        assert refused.value.errno == 22 and "mprotect" in str(refused.value)


@pytest.mark.parametrize("call", [
    lambda m: m.read(-1, 1), lambda m: m.read(0, 3 * P), lambda m: m.write(2 * P, b"x"),
    lambda m: m.mprotect(PROT_READ | 0x100), lambda m: m.madvise(12345), lambda m: m.touch(0),
    lambda m: m.mincore(P // 2), lambda m: m.mlock(0, -1), lambda m: m.pagemap(1),
])
def test_bad_arguments_are_value_errors_before_the_kernel(call):
    with Mapping(2 * P) as m:
        with pytest.raises(ValueError):
            call(m)


def test_non_integers_are_type_errors():
    with Mapping(P) as m:
        with pytest.raises(TypeError):
            m.read(0.5, 1)
        with pytest.raises(TypeError):
            m.mprotect(True)
    with pytest.raises(TypeError):
        Mapping("4096")


def test_use_after_close_is_a_value_error_and_close_is_idempotent():
    m = Mapping(P)
    start = m.address
    m.close()
    m.close()
    assert m.closed and not _maps_near(start, P)  # munmapped: /proc/self/maps has nothing there
    for call in (lambda: m.address, lambda: m.read(0, 1), lambda: m.touch(), lambda: m.maps()):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_touch_costs_one_minor_fault_per_page_and_makes_every_page_resident():
    pages = 2048
    for _attempt in range(3):  # the interpreter's own faults between the snapshots are noise
        with Mapping(pages * P) as m:
            assert not any(m.mincore())
            before = usage()
            assert m.touch(write=True) == pages
            cost = usage() - before
            resident = m.mincore()
        if pages <= cost.minflt <= pages * 1.05:
            break
    assert pages <= cost.minflt <= pages * 1.05
    assert all(resident)


def test_map_populate_prefaults():
    with Mapping(512 * P, populate=True) as m:
        assert all(m.mincore())
        before = usage()
        m.touch(write=True)
        assert (usage() - before).minflt < 512 * 0.05


def test_touch_keeps_the_data():
    with Mapping(8 * P) as m:
        data = os.urandom(8 * P)
        m.write(0, data)
        m.touch(write=True)
        assert m.read(0, 8 * P) == data


def _child_writes(m, data):
    m.write(0, data)
    m.touch(write=True)


@pytest.mark.parametrize("shared", [False, True])
def test_fork_copies_a_private_mapping_on_write_and_shares_a_shared_one(shared):
    pages = 256
    with Mapping(pages * P, shared=shared) as m, Children() as kids:
        m.write(0, b"parent")
        m.touch(write=True)
        faults_before = children_faults()[0]
        assert kids.wait(kids.fork(_child_writes, m, b"child!")) == 0
        child_faults = children_faults()[0] - faults_before
        assert m.read(0, 6) == (b"child!" if shared else b"parent")
        if not shared:  # every page the child rewrote was copied for it
            assert child_faults >= pages


def _child_dies_writing(m):
    import faulthandler
    faulthandler.disable()  # pytest's handler would print a traceback before the default action
    m.write_unguarded(0, b"x")
    return 0


def test_a_child_writing_protected_memory_dies_of_sigsegv():
    with Mapping(P) as m, Children() as kids:
        m.mprotect(PROT_READ)
        assert kids.wait(kids.fork(_child_dies_writing, m)) == -signal.SIGSEGV


def test_madvise_dontneed_zero_fills_private_anonymous_memory():
    with Mapping(4 * P) as m:
        m.write(0, b"\xff" * 4 * P)
        m.madvise(MADV["MADV_DONTNEED"], P, 2 * P)
        assert m.mincore() == [True, False, False, True]
        assert m.read(0, 4 * P) == b"\xff" * P + bytes(2 * P) + b"\xff" * P


def test_mlock_makes_pages_resident():
    with Mapping(16 * P) as m:
        m.mlock(0, 8 * P)
        assert m.mincore() == [True] * 8 + [False] * 8
        assert m.smaps()[0].kb("Locked") >= 8 * P // 1024
        m.munlock()


def test_mlock_beyond_rlimit_memlock_is_refused_with_enomem_naming_the_limit():
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if "CAP_IPC_LOCK" in capabilities() or soft == resource.RLIM_INFINITY:
        pytest.skip("CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK: no limit to hit")
    with Mapping(soft + P) as m:
        with pytest.raises(OSError) as refused:
            m.mlock()
        assert refused.value.errno in (errno.ENOMEM, errno.EPERM)  # EPERM: a limit of 0
        assert "mlock" in str(refused.value) and "RLIMIT_MEMLOCK" in str(refused.value)
        assert not any(m.mincore())  # nothing was locked, so nothing was faulted in


@pytest.mark.needs("thp")
def test_a_hugepage_mapping_is_aligned_and_faults_once_per_huge_page():
    huge = huge_page_size()
    with Mapping(4 * huge, hugepage=True) as m:
        assert m.address % huge == 0
        for _ in range(3):  # a huge page needs 2 MiB of free contiguous memory: may need compaction
            before = usage()
            m.touch(write=True)
            cost = usage() - before
            anon_huge = sum(v.kb("AnonHugePages") for v in m.smaps())
            if anon_huge:
                break
            m.madvise(MADV["MADV_DONTNEED"])
        assert anon_huge * 1024 >= huge
        assert cost.minflt < (4 * huge // P) // 8


def test_guarded_faults_on_two_threads_are_each_reported_to_their_own_thread():
    errors = []
    with Mapping(2 * P, prot=PROT_READ) as m:
        def fault_many(offset):
            for _ in range(200):
                try:
                    m.write(offset, b"x")
                    errors.append("no fault")
                except ProtectionFault as e:
                    if e.address != m.address + offset:
                        errors.append(hex(e.address))
        threads = [threading.Thread(target=fault_many, args=(o,)) for o in (7, P + 9)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


def test_protection_fault_pickles():
    fault = ProtectionFault("write", 0x1000, signal.SIGSEGV, SEGV_ACCERR, "SEGV_ACCERR")
    back = pickle.loads(pickle.dumps(fault))
    assert (back.address, back.si_code, str(back)) == (0x1000, SEGV_ACCERR, str(fault))


_PROTS = st.sampled_from([PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE, PROT_WRITE, PROT_EXEC,
                          PROT_READ | PROT_EXEC]) | st.integers(-2**64, 2**64)
_OFFSETS = st.integers(-3 * P, 6 * P) | st.integers(-2**70, 2**70)
_LENGTHS = st.none() | st.integers(-P, 6 * P) | st.integers(-2**70, 2**70)


@settings(max_examples=200, deadline=None)
@given(st.integers(-2**70, 2**70), st.integers(-2**70, 2**70), st.integers(-2**70, 2**70), _PROTS)
def test_random_constructor_arguments_raise_or_map(size, offset, fd, prot):
    try:
        with Mapping(size, offset=offset, fd=fd if fd % 2 else None, prot=prot) as m:
            m.read(0, 1)  # one page at most: a large mapping that succeeds must not be filled
    except (ValueError, TypeError, OSError, ProtectionFault):
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["read", "write", "mprotect", "madvise", "mincore", "touch",
                                           "mlock", "unmap", "pagemap"]),
                          _OFFSETS, _LENGTHS, _PROTS,
                          st.sampled_from(list(MADV.values())) | st.integers(-5, 200)),
                max_size=8))
def test_random_calls_never_kill_the_interpreter(calls):
    with Mapping(4 * P) as m:
        for name, offset, length, prot, advice in calls:
            try:
                if name == "read":
                    m.read(offset, length if length is not None else 1)
                elif name == "write":
                    m.write(offset, bytes(max(0, min(length or 0, 6 * P))))
                elif name == "mprotect":
                    m.mprotect(prot, offset, length, kernel_checks_alignment=bool(advice & 1))
                elif name == "madvise":
                    m.madvise(advice, offset, length)
                elif name in ("mincore", "mlock", "pagemap"):
                    getattr(m, name)(offset, length)
                elif name == "touch":
                    m.touch(prot if isinstance(prot, int) and prot > 0 else P, write=bool(advice & 1),
                            offset=offset, length=length)
                else:
                    m.unmap(offset, length if length is not None else P)
            except (ValueError, TypeError, OSError, ProtectionFault):
                pass
    assert m.closed


def _caught_signals():
    """The kernel's view of which signals have a handler here (SigCgt in /proc/self/status)."""
    mask = int(next(line for line in open("/proc/self/status") if line.startswith("SigCgt:")).split()[1], 16)
    return {signo for signo in (signal.SIGSEGV, signal.SIGBUS) if mask >> (signo - 1) & 1}


def _fault_with_default_handlers():
    import faulthandler
    faulthandler.disable()  # SIGSEGV and SIGBUS back to SIG_DFL
    if _caught_signals():
        return 2
    with Mapping(P, prot=PROT_READ) as m:
        try:
            m.write(0, b"x")
        except ProtectionFault:
            pass
    return 3 if _caught_signals() else 0  # still SIG_DFL: the guard put the default back


def test_the_guard_puts_the_previous_handlers_back():
    before = _caught_signals()
    with Mapping(P, prot=PROT_READ) as m:
        with pytest.raises(ProtectionFault):
            m.write(0, b"x")
    assert _caught_signals() == before
    with Children() as kids:
        assert kids.wait(kids.fork(_fault_with_default_handlers)) == 0


def test_mapping_paths_made_in_c_show_their_methods_signature_and_docstring():
    # Mapping(size) and its finalizer (osvirt._quickcalls.mapping_class), close() and
    # mprotect(prot) (osvirt._quickcalls.checked) are made in C; every other call is Python's.
    import inspect
    for name in ("close", "mprotect"):
        method = getattr(Mapping, name)
        assert inspect.signature(method) == inspect.signature(method.__wrapped__)
        assert method.__doc__ == method.__wrapped__.__doc__
        assert method.__qualname__ == f"Mapping.{name}"
    assert Mapping.__del__ is Mapping.close
    assert list(inspect.signature(Mapping).parameters) == ["size_bytes", "prot", "shared", "fd", "offset",
                                                           "populate", "hugepage"]  # __init__'s
    m = Mapping(PAGE_SIZE + 1)  # whole pages, as the Python path rounds
    assert m.size == 2 * PAGE_SIZE and m.maps()[0].perms == "rw-p"
    m.mprotect(PROT_READ)
    assert m.maps()[0].perms == "r--p"
    address = m.address
    m.close()
    m.close()
    from osvirt.memory.procfs import maps
    assert m.closed and maps(address, address + 1) == []


@pytest.mark.parametrize("make", [lambda: Mapping(3 * P), lambda: Mapping(3 * P, prot=PROT_READ | PROT_WRITE)],
                         ids=["plain call, made in C", "with a keyword, __init__"])
def test_a_mapping_dropped_without_close_is_unmapped_by_its_finalizer(make):
    from osvirt.memory.procfs import maps
    m = make()
    address = m.address
    assert [v.perms for v in maps(address, address + 3 * P)] == ["rw-p"] and m.size == 3 * P
    assert vars(m) == {}  # its address, size and holes live in the object, not in a __dict__
    del m
    assert maps(address, address + 3 * P) == []


def test_a_mapping_with_a_hole_dropped_without_close_unmaps_the_rest_and_leaves_the_hole():
    from osvirt.memory.procfs import maps
    m = Mapping(3 * P)
    address = m.address
    m.unmap(P, P)
    with Mapping(P) as filler:  # it may land in the hole, which is then not m's to unmap
        del m  # the finalizer: close() in Python, which skips the hole
        assert maps(address, address + P) == [] and maps(address + 2 * P, address + 3 * P) == []
        assert [v.perms for v in filler.maps()] == ["rw-p"]
