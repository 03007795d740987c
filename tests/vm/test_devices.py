"""The device models against guest accesses, without /dev/kvm: recorded sequences a driver makes."""
import calendar

from osvirt.vm.bus import Bus
from osvirt.vm.devices import uart as U
from osvirt.vm.devices.i8042 import I8042
from osvirt.vm.devices.rtc import Rtc, bcd


def uart_on_bus():
    levels = []
    out = []
    dev = U.Uart(out.append)
    bus = Bus("pio")
    bus.attach(U.COM1_BASE, 8, dev, irq=levels.append, name="uart")
    return bus, dev, levels, out


def test_uart_transmits_each_byte_and_thr_is_always_empty():
    bus, dev, levels, out = uart_on_bus()
    for byte in b"hi\n":
        assert bus.read(U.COM1_BASE + 5, 1) & (U.LSR_THRE | U.LSR_TEMT) == U.LSR_THRE | U.LSR_TEMT
        bus.write(U.COM1_BASE, 1, byte)
    assert out == [b"h", b"i", b"\n"] and dev.transmitted == b"hi\n"
    assert levels == []  # no interrupt enabled: the line never moved


def test_uart_thre_interrupt_as_the_demo_guest_takes_it():
    """The sequence of CMD_UART_IRQ: IER=THRI (raises at once), then per byte the handler reads IIR (clears
    it) and the next THR write raises it again; IER=0 at the end."""
    bus, dev, levels, out = uart_on_bus()
    bus.write(U.COM1_BASE + 1, 1, U.IER_THRI)
    assert levels == [True]
    for byte in b"abc":
        assert bus.read(U.COM1_BASE + 2, 1) == U.IIR_THRI  # the handler: clears THRE
        assert levels[-1] is False
        bus.write(U.COM1_BASE, 1, byte)
        assert levels[-1] is True
    assert bus.read(U.COM1_BASE + 2, 1) == U.IIR_THRI
    bus.write(U.COM1_BASE + 1, 1, 0)
    assert levels.count(True) == 4 == dev.interrupts  # K + 1
    assert bus.read(U.COM1_BASE + 2, 1) == U.IIR_NO_INT


def test_uart_receive_fifo_dlab_loopback_and_overrun():
    bus, dev, levels, out = uart_on_bus()
    bus.write(U.COM1_BASE + 3, 1, U.LCR_DLAB)
    bus.write(U.COM1_BASE, 1, 1)  # divisor 1: 115200 baud
    assert bus.read(U.COM1_BASE, 1) == 1 and dev.dll == 1 and out == []
    bus.write(U.COM1_BASE + 3, 1, 0x03)  # 8N1
    bus.write(U.COM1_BASE + 1, 1, U.IER_RDI | U.IER_RLSI)
    assert dev.feed(b"x" * 20) == U.FIFO_SIZE
    assert levels == [True]
    assert bus.read(U.COM1_BASE + 2, 1) == U.IIR_RLSI  # the overrun first
    assert bus.read(U.COM1_BASE + 5, 1) & (U.LSR_OE | U.LSR_DR) == U.LSR_OE | U.LSR_DR
    assert bus.read(U.COM1_BASE + 2, 1) == U.IIR_RDI
    assert bytes(bus.read(U.COM1_BASE, 1) for _ in range(U.FIFO_SIZE)) == b"x" * 16
    assert levels[-1] is False and not bus.read(U.COM1_BASE + 5, 1) & U.LSR_DR
    bus.write(U.COM1_BASE + 4, 1, U.MCR_LOOP | U.MCR_DTR)
    bus.write(U.COM1_BASE, 1, ord("L"))
    assert bus.read(U.COM1_BASE, 1) == ord("L") and dev.transmitted == b""
    assert bus.read(U.COM1_BASE + 6, 1) & U.MSR_DSR


def test_uart_state_survives_snapshot_and_restore():
    bus, dev, levels, out = uart_on_bus()
    bus.write(U.COM1_BASE + 1, 1, U.IER_RDI)
    dev.feed(b"ab")
    state = dev.snapshot()
    levels2 = []
    other = U.Uart()
    other.connect_irq(levels2.append)
    other.restore(state)
    assert levels2 == [True]
    assert other.io_in(0, 1) == ord("a") and other.io_in(0, 1) == ord("b")


def test_rtc_reads_the_host_clock_in_bcd_and_binary():
    t = calendar.timegm((2026, 11, 27, 15, 4, 59, 0, 0, 0))  # a Friday
    rtc = Rtc(clock=lambda: t)
    bus = Bus("pio")
    bus.attach(0x70, 2, rtc, name="rtc")

    def read(reg):
        bus.write(0x70, 1, 0x80 | reg)  # NMI-disable bit set, as Linux does
        return bus.read(0x71, 1)
    assert [read(r) for r in (0, 2, 4, 7, 8, 9, 0x32)] == [0x59, 0x04, 0x15, 0x27, 0x11, 0x26, 0x20]
    assert read(6) == 6  # Friday: 1 is Sunday
    assert read(0x0A) & 0x80 == 0 and read(0x0D) == 0x80
    bus.write(0x70, 1, 0x0B)
    bus.write(0x71, 1, 0x04)  # binary, 12-hour
    assert read(0) == 59 and read(4) == 0x80 | 3  # 15:00 is 3 PM
    bus.write(0x70, 1, 0x40)
    bus.write(0x71, 1, 0xAB)  # CMOS RAM
    assert read(0x40) == 0xAB
    bus.write(0x70, 1, 0)
    bus.write(0x71, 1, 0x11)  # the time is the host's: dropped
    assert read(0) == 59
    assert bcd(59) == 0x59


def test_i8042_reset_calls_back_and_other_commands_do_not():
    resets = []
    dev = I8042(lambda: resets.append(1))
    bus = Bus("pio")
    bus.attach(0x64, 1, dev, name="i8042")
    assert bus.read(0x64, 1) == 0
    bus.write(0x64, 1, 0xAD)  # disable keyboard: dropped
    assert resets == []
    bus.write(0x64, 1, 0xFE)
    assert resets == [1] and dev.snapshot() == {"resets": 1}
