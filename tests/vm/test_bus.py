"""osvirt.vm.bus and osvirt.vm.ram without /dev/kvm: dispatch, counts, unclaimed accesses, bounds."""
import pickle

import pytest

from osvirt.vm.bus import Access, Bus, ones, replay
from osvirt.vm.errors import BusError, GuestMemoryError
from osvirt.vm.ram import GuestRam


class Recorder:
    def __init__(self):
        self.seen = []
        self.state = {"x": 1}

    def io_in(self, offset, size):
        self.seen.append(("in", offset, size))
        return 0x1_2345_6789  # wider than any access: the bus cuts it to the width

    def io_out(self, offset, size, value):
        self.seen.append(("out", offset, size, value))

    def snapshot(self):
        return dict(self.state)

    def restore(self, state):
        self.state = dict(state)


def test_dispatch_by_range_with_offsets_and_counts():
    bus = Bus("pio")
    dev = Recorder()
    bus.attach(0x3F8, 8, dev, name="uart")
    assert bus.find(0x3FA) == (dev, 2)
    assert bus.find(0x3F7) is None and bus.find(0x400) is None
    assert bus.read(0x3F9, 1) == 0x89
    assert bus.read(0x3F9, 2) == 0x6789
    bus.write(0x3F8, 1, 0x41)
    assert dev.seen == [("in", 1, 1), ("in", 1, 2), ("out", 0, 1, 0x41)]
    assert bus.counts()["uart"] == {"reads": 2, "writes": 1}


def test_unclaimed_reads_are_all_ones_and_writes_dropped():
    bus = Bus("mmio")
    assert bus.read(0xD000_0000, 4) == 0xFFFF_FFFF == ones(4)
    assert bus.read(0xD000_0000, 8) == (1 << 64) - 1
    bus.write(0xD000_0000, 4, 5)
    assert bus.counts()["unclaimed"] == {"reads": 2, "writes": 1}
    assert bus.unclaimed_last == Access("w", 0xD000_0000, 4, 5)


def test_attach_refuses_overlaps_and_wrong_kinds():
    bus = Bus("pio")
    bus.attach(0x70, 2, Recorder(), name="rtc")
    with pytest.raises(BusError, match="overlaps rtc"):
        bus.attach(0x71, 4, Recorder())
    with pytest.raises(BusError, match="outside"):
        bus.attach(0xFFFF, 2, Recorder())
    with pytest.raises(TypeError, match="MmioDevice"):
        Bus("mmio").attach(0, 4, Recorder())
    with pytest.raises(TypeError, match="no interrupt line"):
        bus.attach(0x80, 1, Recorder(), irq=lambda level: None)


def test_trace_replay_and_state():
    bus = Bus("pio")
    dev = Recorder()
    bus.attach(0x510, 1, dev, name="d")
    bus.trace = []
    bus.write(0x510, 1, 7)
    bus.read(0x511, 1)
    assert bus.trace == [Access("w", 0x510, 1, 7), Access("r", 0x511, 1, 0xFF)]
    other = Bus("pio")
    other.attach(0x510, 1, Recorder(), name="d")
    assert [value for _, value in replay(other, bus.trace)] == [None, 0xFF]
    dev.state = {"x": 2}
    saved = bus.snapshot()
    other.restore(saved)
    assert other.find(0x510)[0].state == {"x": 2}
    with pytest.raises(BusError, match="not attached here"):
        Bus("pio").restore(saved)


def test_guest_ram_reads_writes_little_endian_within_bounds():
    buf = bytearray(0x2000)
    ram = GuestRam(buf, base=0x10000)
    ram.write_u32(0x10004, 0xDEADBEEF)
    assert buf[4:8] == b"\xef\xbe\xad\xde"
    assert ram.read_u16(0x10004) == 0xBEEF and ram.read_u64(0x10000) == 0xDEADBEEF_00000000
    ram.view(0x11FF8, 8)[:] = b"12345678"
    assert ram.read(0x11FF8, 8) == b"12345678"
    with pytest.raises(GuestMemoryError, match="gpa=0x11ff9 length=8") as caught:
        ram.read_u64(0x11FF9)
    assert pickle.loads(pickle.dumps(caught.value)).gpa == 0x11FF9
    with pytest.raises(GuestMemoryError):
        ram.view(0xFFFF, 1)
    with pytest.raises(TypeError, match="writable"):
        GuestRam(b"read-only")


def test_guest_ram_tracks_host_writes_when_asked():
    ram = GuestRam(bytearray(4 * 4096))
    ram.write(0, b"x")
    ram.dirty = set()
    ram.write_u64(4096 + 4092, 1)  # straddles pages 1 and 2
    ram.view(3 * 4096, 1)
    assert ram.dirty == {1, 2, 3}


def test_level_irq_drives_the_line_on_changes_only():
    from osvirt.vm.bus import LevelIrq
    line, seen = LevelIrq(), []
    line.set(True)  # before connect: kept, not driven
    line.connect(seen.append)
    for level in (True, False, False, True):
        line.set(level)
    assert seen == [False, True] and line.rises == 2 and line.level
