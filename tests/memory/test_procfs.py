import signal

import pytest
from hypothesis import given, settings, strategies as st

from osvirt.memory import PAGE_SIZE, PROT_NONE, PROT_READ, Mapping, pagemap, status
from osvirt.memory.procfs import PAGEMAP_MAX_PAGES, maps, smaps
from osvirt.process import Children, ready

P = PAGE_SIZE


def test_maps_shows_the_new_permissions_for_exactly_the_protected_range():
    with Mapping(5 * P) as m:
        m.mprotect(PROT_READ, 2 * P, P)
        m.mprotect(PROT_NONE, 4 * P, P)
        by_start = {v.start: v for v in m.maps()}
        assert (by_start[m.address + 2 * P].end, by_start[m.address + 2 * P].perms) == (m.address + 3 * P, "r--p")
        assert by_start[m.address + 4 * P].perms == "---p"
        assert by_start[m.address + 3 * P].perms == "rw-p"
        assert maps(m.address, m.address + 5 * P) == m.maps()


def test_smaps_counts_what_was_touched():
    with Mapping(64 * P) as m:
        m.touch(write=True, length=16 * P)
        (vma,) = [v for v in m.smaps() if v.start <= m.address < v.end]
        assert vma.kb("Anonymous") >= 16 * P // 1024
        assert smaps(m.address, m.address + P)[0].start == vma.start


def test_pagemap_present_bits_agree_with_mincore():
    with Mapping(8 * P) as m:
        m.touch(write=True, offset=2 * P, length=3 * P)
        states = m.pagemap()
        assert [s.present for s in states] == m.mincore() == [False] * 2 + [True] * 3 + [False] * 3
        assert not any(s.swapped or s.file for s in states)
        assert pagemap(m.address, 8) == states


def test_pagemap_of_a_child_shows_the_pages_it_wrote_and_not_ours():
    with Mapping(4 * P) as m, Children() as kids:
        m.touch(write=True, length=P)  # here: page 0 only
        pid = kids.fork_ready(lambda ready_fd: (m.touch(write=True, offset=2 * P, length=2 * P), ready(ready_fd),
                                                signal.pause()))
        # The child's copy of page 0 (inherited, present), pages 2 and 3 (its own writes).
        assert [s.present for s in pagemap(m.address, 4, pid)] == [True, False, True, True]
        assert [s.present for s in pagemap(m.address, 4)] == [True, False, False, False]
    with pytest.raises(ValueError, match="pid must be >= 0"):
        pagemap(0, 1, -1)


def test_status_reads_vmrss_in_bytes():
    sizes = status()
    assert sizes["VmRSS"] > 0 and sizes["VmRSS"] % 1024 == 0
    assert "VmSwap" in sizes


@settings(max_examples=200, deadline=None)
@given(st.integers(-2**70, 2**70) | st.integers(0, 1 << 48), st.integers(-2**70, 2**70) | st.integers(0, 64))
def test_pagemap_of_any_address_is_a_list_or_a_value_error(address, pages):
    try:
        states = pagemap(address, pages)
    except ValueError:
        return
    assert len(states) <= pages


def test_pagemap_refuses_more_pages_than_one_call_reads():
    with pytest.raises(ValueError, match="more than one call reads"):
        pagemap(0, PAGEMAP_MAX_PAGES + 1)
    assert len(pagemap(0, 4)) == 4  # page 0 is never mapped: four entries, none present
    assert not any(state.present for state in pagemap(0, 4))


def test_pagemap_refuses_non_integers():
    with pytest.raises(TypeError):
        pagemap(0.0, 1)
