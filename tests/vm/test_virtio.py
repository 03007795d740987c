"""osvirt.vm.virtio without /dev/kvm: a driver written here, from the virtio 1.x spec and the
order Linux's virtio_mmio.c follows, lays out split virtqueues in a GuestRam over a bytearray
and drives the device through an MMIO Bus whose trace records every register access."""
import hashlib
import io
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from osvirt.vm.bus import Bus
from osvirt.vm.ram import GuestRam
from osvirt.vm.virtio import VirtioError, blk, console, mmio

BASE = 0xD000_0000  # where the window sits on the bus
RAM_SIZE = 1 << 20

# The registers by name, as the spec's table spells them (written here, not imported from the device).
REG = {0x000: "MagicValue", 0x004: "Version", 0x008: "DeviceID", 0x00C: "VendorID", 0x010: "DeviceFeatures",
       0x014: "DeviceFeaturesSel", 0x020: "DriverFeatures", 0x024: "DriverFeaturesSel", 0x030: "QueueSel",
       0x034: "QueueNumMax", 0x038: "QueueNum", 0x044: "QueueReady", 0x050: "QueueNotify",
       0x060: "InterruptStatus", 0x064: "InterruptACK", 0x070: "Status", 0x080: "QueueDescLow",
       0x084: "QueueDescHigh", 0x090: "QueueDriverLow", 0x094: "QueueDriverHigh", 0x0A0: "QueueDeviceLow",
       0x0A4: "QueueDeviceHigh", 0x0FC: "ConfigGeneration"}
OFF = {name: off for off, name in REG.items()}
ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK, NEEDS_RESET = 1, 2, 4, 8, 64
VERSION_1, INDIRECT_DESC, EVENT_IDX = 32, 28, 29
NEXT, WRITE, INDIRECT = 1, 2, 4


def trace_lines(trace):
    """The bus trace as a reader would write it: 'r Status -> 0x3', 'w QueueNotify 0x0'."""
    lines = []
    for a in trace:
        off = a.addr - BASE
        name = REG.get(off, f"config+{off - 0x100:#x}" if off >= 0x100 else f"{off:#x}")
        lines.append(f"r{a.size * 8} {name} -> {a.value:#x}" if a.op == "r" else f"w{a.size * 8} {name} {a.value:#x}")
    return lines


class SplitQueue:
    """The driver's side of one split virtqueue in guest memory."""

    def __init__(self, ram, alloc, size):
        self.ram, self.size = ram, size
        self.desc = alloc(16 * size, 16)
        self.avail = alloc(6 + 2 * size, 2)
        self.used = alloc(6 + 8 * size, 4)
        self.free = list(range(size))
        self.avail_idx = 0
        self.last_used = 0

    def write_desc(self, i, addr, length, flags, nxt=0, table=None):
        self.ram.write(((self.desc if table is None else table) + 16 * i), struct.pack("<QIHH", addr, length, flags, nxt))

    def add(self, buffers):
        """Chain [(addr, len, writable)] through free descriptors; make it available; the head."""
        ids = [self.free.pop(0) for _ in buffers]
        for k, (i, (addr, length, writable)) in enumerate(zip(ids, buffers)):
            last = k == len(buffers) - 1
            self.write_desc(i, addr, length, (WRITE if writable else 0) | (0 if last else NEXT), 0 if last else ids[k + 1])
        self.offer(ids[0])
        return ids[0]

    def offer(self, head):
        self.ram.write_u16(self.avail + 4 + 2 * (self.avail_idx % self.size), head)
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.ram.write_u16(self.avail + 2, self.avail_idx)

    def take_used(self):
        """[(id, len)] the device put in the used ring since last time; their descriptors freed."""
        out = []
        while self.last_used != self.ram.read_u16(self.used + 2):
            slot = self.used + 4 + 8 * (self.last_used % self.size)
            out.append((self.ram.read_u32(slot), self.ram.read_u32(slot + 4)))
            self.last_used = (self.last_used + 1) & 0xFFFF
        for head, _ in out:  # free the chain
            i = head
            while True:
                self.free.append(i)
                flags, nxt = struct.unpack("<HH", self.ram.read(self.desc + 16 * i + 12, 4))
                if not flags & NEXT:
                    break
                i = nxt
        return out


class Driver:
    """A virtio-mmio driver doing what Linux's virtio_mmio.c and virtio.c do, in their order."""

    def __init__(self, bus, ram):
        self.bus, self.ram = bus, ram
        self.next_free = 0x1000
        self.queues = {}

    def alloc(self, n, align=16):
        addr = -(-self.next_free // align) * align
        self.next_free = addr + n
        assert self.next_free <= RAM_SIZE
        return addr

    def r(self, name, size=4):
        return self.bus.read(BASE + OFF[name], size)

    def w(self, name, value, size=4):
        self.bus.write(BASE + OFF[name], size, value)

    def add_status(self, bit):
        self.w("Status", self.r("Status") | bit)

    def probe(self, wanted):
        """vm_probe, then virtio_dev_probe up to FEATURES_OK: the features taken, or None if refused."""
        assert self.r("MagicValue") == 0x74726976
        assert self.r("Version") == 2
        device_id = self.r("DeviceID")
        assert device_id != 0
        self.r("VendorID")
        self.w("Status", 0)  # reset
        assert self.r("Status") == 0
        self.add_status(ACKNOWLEDGE)
        self.add_status(DRIVER)
        self.w("DeviceFeaturesSel", 1)
        offered = self.r("DeviceFeatures") << 32
        self.w("DeviceFeaturesSel", 0)
        offered |= self.r("DeviceFeatures")
        taken = offered & wanted
        self.w("DriverFeaturesSel", 1)
        self.w("DriverFeatures", taken >> 32)
        self.w("DriverFeaturesSel", 0)
        self.w("DriverFeatures", taken & 0xFFFFFFFF)
        self.add_status(FEATURES_OK)
        if not self.r("Status") & FEATURES_OK:
            return None
        self.offered, self.taken = offered, taken
        return taken

    def setup_queue(self, index, size=None):
        self.w("QueueSel", index)
        assert self.r("QueueReady") == 0
        num_max = self.r("QueueNumMax")
        assert num_max > 0
        q = SplitQueue(self.ram, self.alloc, size or num_max)
        self.w("QueueNum", q.size)
        for reg, addr in (("QueueDesc", q.desc), ("QueueDriver", q.avail), ("QueueDevice", q.used)):
            self.w(reg + "Low", addr & 0xFFFFFFFF)
            self.w(reg + "High", addr >> 32)
        self.w("QueueReady", 1)
        self.queues[index] = q
        return q

    def config_u64(self, offset):
        """virtio_cread64: two 32-bit reads between equal ConfigGeneration reads."""
        while True:
            gen = self.r("ConfigGeneration")
            low = self.bus.read(BASE + 0x100 + offset, 4)
            high = self.bus.read(BASE + 0x100 + offset + 4, 4)
            if self.r("ConfigGeneration") == gen:
                return high << 32 | low

    def kick(self, index):
        self.w("QueueNotify", index)

    def interrupt(self):
        """vm_interrupt: read InterruptStatus, acknowledge it."""
        status = self.r("InterruptStatus")
        self.w("InterruptACK", status)
        return status


class Line:
    """An interrupt line recording its levels."""

    def __init__(self):
        self.levels = []

    def __call__(self, level):
        self.levels.append(level)

    @property
    def up(self):
        return bool(self.levels) and self.levels[-1]


WANTED = (1 << VERSION_1) | (1 << INDIRECT_DESC) | (1 << 9)  # VERSION_1, INDIRECT_DESC, VIRTIO_BLK_F_FLUSH


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(64 * 512))
    return path


def machine(device):
    ram = GuestRam(bytearray(RAM_SIZE))
    bus = Bus("mmio")
    bus.trace = []
    line = Line()
    transport = mmio.VirtioMmio(device, ram)
    bus.attach(BASE, mmio.WINDOW, transport, irq=line, name="virtio0")
    return ram, bus, transport, line, Driver(bus, ram)


@pytest.fixture
def blk_machine(disk):
    with blk.VirtioBlk(disk) as device:
        yield (device, *machine(device))


def blk_driver(drv, wanted=WANTED):
    assert drv.probe(wanted) is not None
    q = drv.setup_queue(0, 16)
    drv.add_status(DRIVER_OK)
    return q


def request(drv, q, rtype, sector, data_len=0, data=None, split_at=None):
    """Queue one blk request: header, data (in two descriptors if split_at), status; the (head, addrs)."""
    header = drv.alloc(16)
    drv.ram.write(header, struct.pack("<IIQ", rtype, 0, sector))
    bufs = [(header, 16, False)]
    data_addr = None
    if data_len:
        data_addr = drv.alloc(data_len)
        if data is not None:
            drv.ram.write(data_addr, data)
        writable = rtype in (blk.T_IN, blk.T_GET_ID)
        cut = split_at or data_len
        bufs.append((data_addr, cut, writable))
        if cut < data_len:
            bufs.append((data_addr + cut, data_len - cut, writable))
    status = drv.alloc(1)
    drv.ram.write(status, b"\xee")
    bufs.append((status, 1, True))
    return q.add(bufs), data_addr, status


def test_the_probe_reads_like_linuxs(blk_machine):
    device, ram, bus, transport, line, drv = blk_machine
    blk_driver(drv)
    capacity = drv.config_u64(0)
    assert trace_lines(bus.trace) == [
        "r32 MagicValue -> 0x74726976", "r32 Version -> 0x2", "r32 DeviceID -> 0x2", "r32 VendorID -> 0x5456534f",
        "w32 Status 0x0", "r32 Status -> 0x0",
        "r32 Status -> 0x0", "w32 Status 0x1", "r32 Status -> 0x1", "w32 Status 0x3",
        "w32 DeviceFeaturesSel 0x1", "r32 DeviceFeatures -> 0x1",  # VERSION_1 is bit 32
        "w32 DeviceFeaturesSel 0x0", "r32 DeviceFeatures -> 0x30000244",  # EVENT_IDX, INDIRECT, FLUSH, BLK_SIZE, SEG_MAX
        "w32 DriverFeaturesSel 0x1", "w32 DriverFeatures 0x1", "w32 DriverFeaturesSel 0x0",
        "w32 DriverFeatures 0x10000200",
        "r32 Status -> 0x3", "w32 Status 0xb", "r32 Status -> 0xb",
        "w32 QueueSel 0x0", "r32 QueueReady -> 0x0", "r32 QueueNumMax -> 0x100", "w32 QueueNum 0x10",
        "w32 QueueDescLow 0x1000", "w32 QueueDescHigh 0x0", "w32 QueueDriverLow 0x1100", "w32 QueueDriverHigh 0x0",
        "w32 QueueDeviceLow 0x1128", "w32 QueueDeviceHigh 0x0", "w32 QueueReady 0x1",
        "r32 Status -> 0xb", "w32 Status 0xf",
        "r32 ConfigGeneration -> 0x0", "r32 config+0x0 -> 0x40", "r32 config+0x4 -> 0x0",
        "r32 ConfigGeneration -> 0x0",
    ]
    assert capacity == 64  # sectors of the 32 KiB file
    assert drv.r("QueueReady") == 1 and transport.negotiated(VERSION_1)
    assert line.levels == [] and transport.errors == []


def test_a_read_of_host_sectors_checks_out_in_one_exit(blk_machine, disk):
    device, ram, bus, transport, line, drv = blk_machine
    q = blk_driver(drv)
    head, data, status = request(drv, q, blk.T_IN, 3, 8 * 512, split_at=1000)  # data split mid-sector
    bus.trace.clear()
    drv.kick(0)
    assert trace_lines(bus.trace) == ["w32 QueueNotify 0x0"]  # the one exit for 4 KiB
    assert line.levels == [True]
    assert q.take_used() == [(head, 8 * 512 + 1)]
    assert ram.read_u8(status) == blk.S_OK
    host = disk.read_bytes()[3 * 512:11 * 512]
    assert hashlib.sha256(ram.read(data, 8 * 512)).hexdigest() == hashlib.sha256(host).hexdigest()
    assert drv.interrupt() == 1  # used buffer
    assert line.levels == [True, False] and drv.r("InterruptStatus") == 0
    assert device.requests["in"] == 1 and device.bytes_read == 4096 and transport.notifies == 1


def test_many_requests_one_notify(blk_machine, disk):
    device, ram, bus, transport, line, drv = blk_machine
    q = blk_driver(drv)
    reqs = [request(drv, q, blk.T_IN, s, 512) for s in range(5)]  # 5 chains of 3 descriptors in 16
    drv.kick(0)
    used = q.take_used()
    assert [u[0] for u in used] == [r[0] for r in reqs]
    assert b"".join(ram.read(r[1], 512) for r in reqs) == disk.read_bytes()[:5 * 512]
    assert device.requests["in"] == 5 and transport.notifies == 1 and line.levels == [True]


def test_write_flush_and_get_id(blk_machine, disk):
    device, ram, bus, transport, line, drv = blk_machine
    q = blk_driver(drv)
    payload = bytes(range(256)) * 4
    head, _, status = request(drv, q, blk.T_OUT, 10, 1024, data=payload, split_at=100)
    drv.kick(0)
    assert q.take_used() == [(head, 1)] and ram.read_u8(status) == blk.S_OK
    assert disk.read_bytes()[10 * 512:12 * 512] == payload  # on the host file
    head, _, status = request(drv, q, blk.T_FLUSH, 0)
    drv.kick(0)
    assert q.take_used() == [(head, 1)] and ram.read_u8(status) == blk.S_OK
    head, ident, status = request(drv, q, blk.T_GET_ID, 0, 20)
    drv.kick(0)
    assert q.take_used() == [(head, 21)] and ram.read(ident, 20) == b"disk.img".ljust(20, b"\0")
    head, _, status = request(drv, q, 99, 0)  # a type the device does not know
    drv.kick(0)
    assert q.take_used() == [(head, 1)] and ram.read_u8(status) == blk.S_UNSUPP
    assert device.requests == {"in": 0, "out": 1, "flush": 1, "get_id": 1, "unsupported": 1}


def test_out_of_range_sectors_are_ioerr_and_the_device_goes_on(blk_machine):
    device, ram, bus, transport, line, drv = blk_machine
    q = blk_driver(drv)
    bad = [request(drv, q, blk.T_IN, 63, 1024),  # runs past sector 64
           request(drv, q, blk.T_IN, 1 << 60, 512),
           request(drv, q, blk.T_OUT, 64, 512, data=b"x" * 512),
           request(drv, q, blk.T_IN, 0, 100)]  # not whole sectors
    good = request(drv, q, blk.T_IN, 63, 512)
    drv.kick(0)
    used = dict(q.take_used())
    assert [ram.read_u8(s) for _, _, s in bad] == [blk.S_IOERR] * 4
    assert used[good[0]] == 513 and ram.read_u8(good[2]) == blk.S_OK
    assert device.errors == 4 and not drv.r("Status") & NEEDS_RESET


def test_a_read_only_disk_refuses_writes(disk):
    before = disk.read_bytes()
    with blk.VirtioBlk(disk, read_only=True) as device:
        ram, bus, transport, line, drv = machine(device)
        q = blk_driver(drv, WANTED | 1 << blk.F_RO)
        assert drv.offered >> blk.F_RO & 1
        head, _, status = request(drv, q, blk.T_OUT, 0, 512, data=b"y" * 512)
        drv.kick(0)
        assert q.take_used() == [(head, 1)] and ram.read_u8(status) == blk.S_IOERR
    assert disk.read_bytes() == before


def test_features_without_version_1_are_refused(blk_machine):
    device, ram, bus, transport, line, drv = blk_machine
    assert drv.probe(1 << 9) is None  # FLUSH alone: a legacy driver
    assert "VERSION_1" in transport.errors[0]
    bus.write(BASE + OFF["Status"], 4, 0)  # reset, and again properly
    assert drv.probe(WANTED) is not None


def test_features_not_offered_are_refused(blk_machine):
    device, ram, bus, transport, line, drv = blk_machine
    drv.w("DriverFeaturesSel", 0)
    drv.add_status(ACKNOWLEDGE | DRIVER)
    drv.w("DriverFeatures", 1 << 5)  # RO, which a writable disk does not offer
    drv.w("DriverFeaturesSel", 1)
    drv.w("DriverFeatures", 1)
    drv.add_status(FEATURES_OK)
    assert not drv.r("Status") & FEATURES_OK and "not offered" in transport.errors[0]


def broken(drv, transport, line, needle):
    """The device marked itself as needing a reset, interrupted with a config change, said why."""
    assert drv.r("Status") & NEEDS_RESET
    assert line.up and drv.interrupt() & 2
    assert any(needle in e for e in transport.errors), transport.errors


def test_a_descriptor_loop_needs_a_reset_then_works_again(blk_machine, disk):
    device, ram, bus, transport, line, drv = blk_machine
    q = blk_driver(drv)
    q.write_desc(0, drv.alloc(16), 16, NEXT, 1)
    q.write_desc(1, drv.alloc(16), 16, NEXT, 0)
    q.offer(0)
    drv.kick(0)
    broken(drv, transport, line, "loop")
    drv.kick(0)  # ignored until the reset
    assert device.requests["in"] == 0 and transport.notifies == 2
    # reset: Status 0, then the whole probe again; the device serves as before
    drv.queues.clear()
    assert drv.probe(WANTED) is not None and drv.r("Status") & NEEDS_RESET == 0
    q = drv.setup_queue(0, 16)
    drv.add_status(DRIVER_OK)
    head, data, status = request(drv, q, blk.T_IN, 0, 512)
    drv.kick(0)
    assert q.take_used() == [(head, 513)] and ram.read(data, 512) == disk.read_bytes()[:512]


@pytest.mark.parametrize("case, needle", [
    ("buffer outside RAM", "outside guest RAM"),
    ("next past the table", "past the table"),
    ("head past the queue", "past the queue"),
    ("avail.idx too far ahead", "ahead"),
    ("readable after writable", "readable descriptor after a writable"),
    ("indirect without the feature", "INDIRECT without"),
    ("indirect and next", "INDIRECT and NEXT"),
    ("nested indirect", "inside an indirect"),
    ("indirect table loop", "loop"),
    ("indirect table of odd length", "multiple of 16"),
    ("no status byte", "no writable status"),
])
def test_malformed_chains_never_reach_the_host(disk, case, needle):
    with blk.VirtioBlk(disk) as device:
        ram, bus, transport, line, drv = machine(device)
        wanted = WANTED & ~(1 << INDIRECT_DESC) if case == "indirect without the feature" else WANTED
        q = blk_driver(drv, wanted)
        hdr = drv.alloc(16)
        ram.write(hdr, struct.pack("<IIQ", blk.T_IN, 0, 0))
        table = drv.alloc(64, 16)
        if case == "buffer outside RAM":
            q.add([(hdr, 16, False), (RAM_SIZE - 100, 512, True), (drv.alloc(1), 1, True)])
        elif case == "next past the table":
            q.write_desc(0, hdr, 16, NEXT, 200)
            q.offer(0)
        elif case == "head past the queue":
            q.offer(16)
        elif case == "avail.idx too far ahead":
            ram.write_u16(q.avail + 2, 17)
        elif case == "readable after writable":
            q.add([(hdr, 16, False), (drv.alloc(512), 512, True), (drv.alloc(1), 1, False)])
        elif case in ("indirect without the feature", "indirect and next"):
            q.write_desc(0, hdr, 16, 0, table=table)
            q.write_desc(0, table, 16, INDIRECT | (NEXT if case == "indirect and next" else 0), 1)
            q.offer(0)
        elif case == "nested indirect":
            q.write_desc(0, table + 16, 16, INDIRECT, table=table)
            q.write_desc(0, table, 32, INDIRECT)
            q.offer(0)
        elif case == "indirect table loop":
            q.write_desc(0, hdr, 16, NEXT, 1, table=table)
            q.write_desc(1, hdr, 16, NEXT, 0, table=table)
            q.write_desc(0, table, 32, INDIRECT)
            q.offer(0)
        elif case == "indirect table of odd length":
            q.write_desc(0, table, 20, INDIRECT)
            q.offer(0)
        elif case == "no status byte":
            q.add([(hdr, 16, False)])
        drv.kick(0)  # the bus returns: nothing raised on the host
        broken(drv, transport, line, needle)
        assert transport.error_count == 1


def test_an_indirect_table_serves_a_request(blk_machine, disk):
    device, ram, bus, transport, line, drv = blk_machine
    q = blk_driver(drv)
    hdr, data, status = drv.alloc(16), drv.alloc(1024), drv.alloc(1)
    ram.write(hdr, struct.pack("<IIQ", blk.T_IN, 0, 4))
    table = drv.alloc(48, 16)
    q.write_desc(0, hdr, 16, NEXT, 1, table=table)
    q.write_desc(1, data, 1024, NEXT | WRITE, 2, table=table)
    q.write_desc(2, status, 1, WRITE, table=table)
    head = q.free.pop(0)
    q.write_desc(head, table, 48, INDIRECT)
    q.offer(head)
    drv.kick(0)
    assert q.take_used() == [(head, 1025)] and ram.read(data, 1024) == disk.read_bytes()[4 * 512:6 * 512]


def test_queue_areas_outside_ram_or_a_bad_size_are_refused(blk_machine):
    device, ram, bus, transport, line, drv = blk_machine
    assert drv.probe(WANTED) is not None
    drv.w("QueueSel", 0)
    drv.w("QueueNum", 16)
    drv.w("QueueDescLow", RAM_SIZE - 16)
    drv.w("QueueReady", 1)
    assert drv.r("QueueReady") == 0 and "outside guest RAM" in transport.errors[-1]
    drv.w("QueueNum", 12)
    drv.w("QueueDescLow", 0x1000)
    drv.w("QueueReady", 1)
    assert drv.r("QueueReady") == 0 and "power of 2" in transport.errors[-1]
    drv.w("QueueSel", 5)  # no such queue
    assert drv.r("QueueNumMax") == 0


def test_bad_register_accesses_are_counted_and_dropped(blk_machine):
    device, ram, bus, transport, line, drv = blk_machine
    assert bus.read(BASE + 0x70, 2) == 0  # a 16-bit read of Status
    bus.write(BASE + 0x72, 4, 0xFF)  # unaligned
    bus.write(BASE + 0x0, 4, 1)  # MagicValue is read-only
    assert bus.read(BASE + 0x100 + 60, 4) == 0  # past the config space
    assert bus.read(BASE + 0x100 + 3, 2) == 0  # misaligned in it
    drv.w("QueueNotify", 7)  # a queue that does not exist
    assert transport.bad_accesses == 6 and drv.r("Status") == 0


def test_event_idx_suppresses_and_requests_interrupts(blk_machine):
    device, ram, bus, transport, line, drv = blk_machine
    q = blk_driver(drv, WANTED | 1 << EVENT_IDX)
    ram.write_u16(q.avail + 4 + 2 * q.size, 2)  # used_event: interrupt me once used.idx passes 2
    for s in range(2):
        request(drv, q, blk.T_IN, s, 512)
    drv.kick(0)
    assert line.levels == [] and len(q.take_used()) == 2  # used.idx 0 -> 2 did not pass 2
    assert ram.read_u16(q.used + 4 + 8 * q.size) == 2  # avail_event: the device wants to hear of index 2
    request(drv, q, blk.T_IN, 2, 512)
    drv.kick(0)
    assert line.levels == [True]  # 2 -> 3 passed it


def test_no_interrupt_flag_without_event_idx(blk_machine):
    device, ram, bus, transport, line, drv = blk_machine
    q = blk_driver(drv)
    ram.write_u16(q.avail, 1)  # VIRTQ_AVAIL_F_NO_INTERRUPT
    request(drv, q, blk.T_IN, 0, 512)
    drv.kick(0)
    assert line.levels == [] and len(q.take_used()) == 1


def test_snapshot_and_restore_carry_the_queue_on(blk_machine, disk):
    device, ram, bus, transport, line, drv = blk_machine
    q = blk_driver(drv)
    request(drv, q, blk.T_IN, 0, 512)
    drv.kick(0)
    q.take_used()
    state = transport.snapshot()
    # another device and transport over a copy of the guest's memory, as in another process
    ram2 = GuestRam(bytearray(ram.read(0, RAM_SIZE)))
    with blk.VirtioBlk(disk) as device2:
        transport2 = mmio.VirtioMmio(device2, ram2)
        transport2.restore(state)
        assert transport2.snapshot() == state
        q.ram = ram2
        head, data, status = request(drv_on(drv, ram2), q, blk.T_IN, 7, 512)
        transport2.mmio_write(0x50, 4, 0)
        assert q.take_used() == [(head, 513)] and ram2.read(data, 512) == disk.read_bytes()[7 * 512:8 * 512]
        assert device2.requests["in"] == 2 and transport2.notifies == 2
    smaller = disk.with_name("smaller.img")
    smaller.write_bytes(bytes(512))
    with blk.VirtioBlk(smaller) as other, pytest.raises(VirtioError, match="64 sectors"):
        mmio.VirtioMmio(other, ram).restore(state)


def drv_on(drv, ram):
    """The same driver's allocator over another RAM."""
    drv.ram = ram
    return drv


def test_console_output_is_one_exit_per_buffer():
    out = io.BytesIO()
    device = console.VirtioConsole(out)
    ram, bus, transport, line, drv = machine(device)
    assert drv.probe(1 << VERSION_1) is not None
    rx, tx = drv.setup_queue(0, 8), drv.setup_queue(1, 8)
    drv.add_status(DRIVER_OK)
    lines = [b"hello, world\n", b"virtio-console: " + b"x" * 300 + b"\n", b"bye\n"]
    for text in lines:
        buf = drv.alloc(len(text))
        ram.write(buf, text)
        tx.add([(buf, len(text), False)])
    bus.trace.clear()
    drv.kick(1)
    assert trace_lines(bus.trace) == ["w32 QueueNotify 0x1"]
    assert out.getvalue() == b"".join(lines)
    assert device.buffers_out == 3 and device.bytes_out == sum(map(len, lines)) and transport.notifies == 1
    assert [length for _, length in tx.take_used()] == [0, 0, 0]


def test_console_input_waits_for_receive_buffers():
    device = console.VirtioConsole(io.BytesIO())
    ram, bus, transport, line, drv = machine(device)
    assert drv.probe(1 << VERSION_1) is not None
    rx, tx = drv.setup_queue(0, 8), drv.setup_queue(1, 8)
    drv.add_status(DRIVER_OK)
    device.feed(b"ls -l\n")  # no receive buffer yet: kept
    assert device.pending_input == 6 and line.levels == []
    a, b = drv.alloc(4), drv.alloc(16)
    ha = rx.add([(a, 4, True)])
    hb = rx.add([(b, 16, True)])
    drv.kick(0)
    assert rx.take_used() == [(ha, 4), (hb, 2)]
    assert ram.read(a, 4) + ram.read(b, 2) == b"ls -l\n" and device.pending_input == 0
    assert line.levels == [True] and drv.interrupt() == 1
    hc = rx.add([(drv.alloc(8), 8, True)])
    drv.kick(0)
    device.feed(b"pwd\n")  # from the host side: straight into the posted buffer
    assert rx.take_used() == [(hc, 4)] and device.bytes_in == 10
    # emergency write: a byte through the config space, no queue
    bus.write(BASE + 0x100 + 8, 4, ord("!"))
    assert device.output.getvalue() == b"!" and device.emergency_bytes == 1


_descriptor = st.tuples(st.sampled_from([0, 0x8000, 0x9000, RAM_SIZE - 8, RAM_SIZE, 1 << 63]),  # addr
                        st.sampled_from([0, 1, 16, 17, 512, 4096, 0xFFFFFFFF]),  # len
                        st.integers(0, 7), st.integers(0, 20))  # flags (NEXT, WRITE, INDIRECT), next


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=st.lists(_descriptor, min_size=16, max_size=16), heads=st.lists(st.integers(0, 20), max_size=16),
       avail_idx=st.integers(0, 0xFFFF), headers=st.binary(min_size=16, max_size=16), kicks=st.integers(1, 3))
def test_any_guest_bytes_leave_the_host_standing(disk, table, heads, avail_idx, headers, kicks):
    """Descriptor tables, rings and request headers a guest could write: every notify
    returns; the device either served the chains or needs a reset, and says why."""
    before = disk.read_bytes()
    with blk.VirtioBlk(disk, read_only=True) as device:
        ram, bus, transport, line, drv = machine(device)
        q = blk_driver(drv, WANTED | 1 << EVENT_IDX)
        for i, (addr, length, flags, nxt) in enumerate(table):
            q.write_desc(i, addr, length, flags, nxt)
        for i, head in enumerate(heads):
            ram.write_u16(q.avail + 4 + 2 * i, head)
        ram.write_u16(q.avail + 2, avail_idx if avail_idx > 16 else len(heads))
        for addr in (0x8000, 0x9000):
            ram.write(addr, headers)
        for _ in range(kicks):
            drv.kick(0)
        status = drv.r("Status")
        assert bool(status & NEEDS_RESET) == bool(transport.errors)
        assert len(q.take_used()) == sum(device.requests.values())
    assert disk.read_bytes() == before
