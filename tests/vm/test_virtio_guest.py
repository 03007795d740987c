"""virtio on /dev/kvm: osvirt's own guest drives osvirt.vm.virtio's devices (its driver: guest/virtio.h).
virtio-blk reads a host file's sectors and the guest's hash of them is the host's; a request costs
one exit (its notify), not one per byte; virtio-console sends a buffer per exit where the UART
takes an exit per byte."""
import os

import pytest

from osvirt.vm.guest import DemoGuest, fnv1a64
from osvirt.vm.machine import MMIO_HOLE
from osvirt.vm.virtio.blk import VirtioBlk
from osvirt.vm.virtio.console import VirtioConsole
from osvirt.vm.virtio.mmio import WINDOW, VirtioMmio

BLK_BASE = MMIO_HOLE + 0x1000_0000
CONSOLE_BASE = BLK_BASE + 0x1000
SETUP_EXITS = 25  # the MMIO accesses of vio_open (guest/virtio.h): 14 to FEATURES_OK, 10 for the queue, DRIVER_OK


@pytest.fixture
def guest(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(os.urandom(256 * 512))
    out = tmp_path / "console.out"
    with open(out, "wb") as console_out, VirtioBlk(disk, read_only=True) as blk:
        g = DemoGuest(memory_mib=64)
        m = g.machine
        with m:
            g.blk = VirtioMmio(blk, m.ram)
            m.mmio.attach(BLK_BASE, WINDOW, g.blk, irq=m.irq_line(5), name="virtio-blk")
            g.console = VirtioConsole(console_out)
            g.console_transport = VirtioMmio(g.console, m.ram)
            m.mmio.attach(CONSOLE_BASE, WINDOW, g.console_transport, irq=m.irq_line(6), name="virtio-console")
            g.disk, g.console_path = disk, out
            g.boot()
            yield g


@pytest.mark.needs("kvm")
def test_the_guest_reads_host_sectors_through_a_virtqueue(guest):
    sectors, per = 256, 16
    r = guest.command("CMD_VIRTIO_BLK", BLK_BASE, sectors, per)
    assert r["result1"] == 0, "a request came back with a status other than OK"
    assert r["result0"] == fnv1a64(guest.disk.read_bytes()[:sectors * 512])  # the guest's hash is the host's
    requests = sectors // per
    device = guest.blk.device
    assert device.requests["in"] == requests and device.bytes_read == sectors * 512
    assert guest.blk.notifies == requests and guest.blk.errors == []
    # exits: the setup's register accesses and one notify per request; none per byte (128 KiB read)
    assert r["exits"].get("KVM_EXIT_MMIO", 0) == SETUP_EXITS + requests, r["exits"]
    # a read past the end of the disk is an error the guest sees, and the host goes on
    r = guest.command("CMD_VIRTIO_BLK", BLK_BASE, sectors + per, per)
    assert r["result1"] == 1 and device.errors == 1


@pytest.mark.needs("kvm")
def test_virtio_console_costs_an_exit_per_buffer_the_uart_one_per_byte(guest):
    text = b"virtio-console: a line through a virtqueue\n" * 20  # 860 bytes
    ram, L = guest.machine.ram, guest.L
    ram.write(L["GUEST_MAILBOX"] + L["MB_TEXT"], text)
    r = guest.command("CMD_VIRTIO_CONSOLE", CONSOLE_BASE, len(text), 256)
    buffers = -(-len(text) // 256)
    assert r["result0"] == buffers == guest.console.buffers_out
    assert guest.console_path.read_bytes() == text
    assert r["exits"].get("KVM_EXIT_MMIO", 0) == SETUP_EXITS + buffers, r["exits"]
    uart = guest.command("CMD_UART_WRITE", len(text))
    assert uart["exits"].get("KVM_EXIT_IO", 0) >= len(text)  # the UART: an OUT a byte
    assert bytes(guest.uart.transmitted).endswith(text)
