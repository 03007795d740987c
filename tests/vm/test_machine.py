"""osvirt.vm on /dev/kvm: the KVM API, the machine's run loop, and the demo guest driving it.

Each test boots osvirt's own guest (osvirt/vm/guest) and asserts what the
kernel and the guest did: exits KVM counted, the dirty log KVM_GET_DIRTY_LOG
returned, faults /proc counted on the vCPU thread, bytes the UART got.
Without read-write /dev/kvm (uid 65534: it is 0600; a container: no
/dev/kvm) they skip with the probe's reason.
"""
import calendar
import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest

from osvirt import naming
from osvirt.vm import kvm, snapshot
from osvirt.vm._native import lib
from osvirt.vm.errors import BusError, GuestError, VmError
from osvirt.vm.machine import Machine

pytestmark = pytest.mark.needs("kvm")


@pytest.fixture
def guest():
    from osvirt.vm.guest import DemoGuest
    g = DemoGuest(memory_mib=64)
    with g.machine:
        g.boot(timeout=30)
        yield g


def test_backing_module_and_api():
    assert kvm.backing_module() in kvm.BACKING_MODULES
    with kvm.Kvm() as k:
        assert k.api_version() == kvm.API_VERSION == 12
        assert k.vcpu_mmap_size() >= 4096
        assert 0x10 in k.msr_index_list()  # IA32_TIME_STAMP_COUNTER
    assert kvm.exit_name(2) == "KVM_EXIT_IO" and kvm.KVM_EXIT["KVM_EXIT_MMIO"] == 6


def test_k_bytes_to_the_uart_are_exactly_k_io_exits(guest):
    L = guest.L
    text = b"osvirt guest says hello\n"
    guest.machine.ram.write(L["GUEST_MAILBOX"] + L["MB_TEXT"], text)
    before = guest.machine.pio.counts()["uart"]["writes"]
    r = guest.command("CMD_UART_WRITE", len(text))
    assert bytes(guest.uart.transmitted) == text
    assert r["exits"] == {"KVM_EXIT_IO": len(text) + 1}  # and the doorbell
    assert guest.machine.pio.counts()["uart"]["writes"] - before == len(text)


def test_guest_memory_is_host_memory_both_ways(guest):
    guest.set_mailbox("MB_SHARED", 0x0123_4567_89AB_CDEF)
    r = guest.command("CMD_SHARED")
    assert r["result0"] == 0x0123_4567_89AB_CDEF  # the guest read what the host wrote
    assert guest.mailbox("MB_SHARED") == 0xFEDC_BA98_7654_3210  # the host reads what the guest wrote


def test_dirty_log_and_faults_count_exactly_the_pages_touched(guest):
    m, L = guest.machine, guest.L
    pages = 37
    start = L["GUEST_TOUCH"] + 0x200000
    m.dirty_pages()
    resident_before = sum(m.memory.mincore(start, pages * 4096))
    r = guest.command("CMD_TOUCH", start, pages, 0x5A)
    assert m.dirty_pages() == [start // 4096 + i for i in range(pages)]
    assert resident_before == 0 and sum(m.memory.mincore(start, pages * 4096)) == pages
    assert r["faults"] >= pages  # a first touch: at least one host fault each (the doorbell's stack page too)
    assert m.memory.read(start + 4096 * (pages - 1), 1) == b"\x5a"
    again = guest.command("CMD_TOUCH", start, pages, 0x5B)
    assert again["faults"] == 0 and len(m.dirty_pages()) == pages


def test_mmio_outside_ram_and_a_missing_port_are_handled(guest):
    m = guest.machine
    r = guest.command("CMD_MMIO", 0xD000_0000, 0x1234)
    assert r["result0"] == 0xFFFF_FFFF and r["exits"]["KVM_EXIT_MMIO"] == 2
    assert m.mmio.unclaimed_last.addr == 0xD000_0000 and m.mmio.unclaimed_last.value == 0x1234
    r = guest.command("CMD_PORT_IN", 0x2F8)  # COM2: nothing there
    assert r["result0"] == 0xFF and m.pio.counts()["unclaimed"]["reads"] >= 1


def test_uart_interrupt_reaches_the_guest_handler(guest):
    L, k = guest.L, 9
    guest.machine.ram.write(L["GUEST_MAILBOX"] + L["MB_TEXT"], b"interrupt")
    r = guest.command("CMD_UART_IRQ", k)
    assert r["result0"] == k + 1  # THRE when enabled, then after each byte
    assert guest.uart.interrupts >= k + 1


def test_pause_kicks_a_spinning_guest_and_stop_joins(guest):
    m = guest.machine
    guest.start_command("CMD_COUNT")
    time.sleep(0.05)
    assert m.pause(timeout=5)
    c1 = guest.mailbox("MB_COUNTER")
    time.sleep(0.05)
    assert guest.mailbox("MB_COUNTER") == c1 > 0  # parked: the guest does not run
    m.resume()
    time.sleep(0.05)
    m.stop()
    assert guest.mailbox("MB_COUNTER") > c1 and not m.running
    assert not [t for t in threading.enumerate() if t.name == "osvirt-vcpu0"]


def test_i8042_reset_stops_the_machine(guest):
    guest.start_command("CMD_RESET")
    assert "i8042 reset" in guest.machine.wait(10)


def test_a_device_exception_stops_the_guest_and_reaches_the_caller(guest):
    class Broken:
        def io_in(self, offset, size):
            raise RuntimeError("device broke")

        def io_out(self, offset, size, value):
            pass
    guest.machine.pio.attach(0x2F8, 1, Broken(), name="broken")
    with pytest.raises(RuntimeError, match="device broke"):
        guest.command("CMD_PORT_IN", 0x2F8, timeout=10)


def test_close_leaves_no_descriptor_or_thread():
    from osvirt.vm.guest import DemoGuest
    fds = set(os.listdir("/proc/self/fd"))
    g = DemoGuest(memory_mib=16)
    with g.machine:
        g.boot()
        g.start_command("CMD_COUNT")
    assert set(os.listdir("/proc/self/fd")) == fds
    assert not [t for t in threading.enumerate() if t.name == "osvirt-vcpu0"]


RESTORE = """
import json, sys, time
from osvirt.vm.guest import DemoGuest
g = DemoGuest(memory_mib=64)
with g.machine as m:
    m.restore(sys.argv[1])
    before = g.mailbox("MB_COUNTER")
    m.start(); time.sleep(0.1); m.pause()
    print(json.dumps({"before": before, "after": g.mailbox("MB_COUNTER"), "rings": g.rings,
                      "irqs": g.mailbox("MB_IRQ_COUNT")}))
"""


def test_snapshot_restored_in_another_process_goes_on(guest):
    m, L = guest.machine, guest.L
    guest.machine.ram.write(L["GUEST_MAILBOX"] + L["MB_TEXT"], b"ab")
    irqs = guest.command("CMD_UART_IRQ", 2)["result0"]
    guest.start_command("CMD_COUNT")
    time.sleep(0.05)
    m.pause()
    with naming.private_dir() as d:
        full = m.snapshot(os.path.join(d, "full"))
        counted = guest.mailbox("MB_COUNTER")
        m.resume()
        time.sleep(0.05)
        m.pause()
        inc = m.snapshot(os.path.join(d, "inc"), incremental=True)
        assert inc["pages"] < full["pages"] and inc["incremental"]
        later = guest.mailbox("MB_COUNTER")
        assert later > counted
        for path, saved in (("full", counted), ("inc", later)):
            out = subprocess.run([sys.executable, "-c", RESTORE, os.path.join(d, path)], capture_output=True,
                                 text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            seen = json.loads(out.stdout)
            assert seen["before"] == saved and seen["after"] > saved  # counted on from there
            assert seen["rings"] == 0 and seen["irqs"] == irqs  # no reboot: setup never ran again


def test_restore_refuses_a_machine_that_ran(guest, tmp_path):
    guest.machine.pause()
    path = tmp_path / "snap"
    guest.machine.snapshot(path)
    with pytest.raises(VmError, match="never ran"):
        guest.machine.restore(path)


def test_a_triple_fault_stops_the_guest_with_shutdown_decoded():
    from osvirt.vm.guest import DemoGuest
    g = DemoGuest(memory_mib=16)
    with g.machine as m:
        g.load()
        m.ram.write(g.L["GUEST_CODE"], b"\x0f\x0b")  # ud2 at CPL0 before any IDT: #UD, #GP, #DF, reset
        m.start()
        with pytest.raises(GuestError, match="KVM_EXIT_SHUTDOWN.*rip 0x100000") as caught:
            m.wait(10)
        assert caught.value.reason == "KVM_EXIT_SHUTDOWN" and m.exits == {"KVM_EXIT_SHUTDOWN": 1}
    assert not m.running


def test_guest_error_decodes_its_exit():
    err = GuestError("KVM_EXIT_INTERNAL_ERROR", "suberror 1 (KVM_INTERNAL_ERROR_EMULATION)")
    assert "KVM_EXIT_INTERNAL_ERROR: suberror 1" in str(err)


def test_cpl0_round_trips_keep_interrupts_on(guest):
    """syscall to CPL0 and iretq back (kvm_pvm: no int n, no sysretq, no sti there): the guest's loop at
    CPL0 runs, and its interrupts still arrive afterwards."""
    r = guest.command("CMD_SYSCALLS", 100)
    assert r["exits"] == {"KVM_EXIT_IO": 1}  # no exit for the CPL0 round trips themselves
    guest.command("CMD_SPIN_CPL0", 1000)
    assert guest.machine.vcpu.get_regs().rflags & 0x200  # IF
    guest.machine.ram.write(guest.L["GUEST_MAILBOX"] + guest.L["MB_TEXT"], b"x")
    assert guest.command("CMD_UART_IRQ", 1)["result0"] == 2


def test_restore_checks_the_file_its_size_and_its_parent(guest, tmp_path):
    m = guest.machine
    guest.command("CMD_TOUCH", guest.L["GUEST_TOUCH"], 3, 1)
    m.snapshot(tmp_path / "base")
    guest.command("CMD_TOUCH", guest.L["GUEST_TOUCH"], 3, 2)
    inc = m.snapshot(tmp_path / "inc", incremental=True)
    assert inc["pages"] >= 3
    (tmp_path / "junk").write_bytes(b"not a snapshot")
    header = json.dumps({"version": snapshot.VERSION + 1}).encode()
    (tmp_path / "newer").write_bytes(snapshot.MAGIC + len(header).to_bytes(8, "little") + header)
    with Machine(64) as fresh:
        with pytest.raises(VmError, match="not an osvirt VM snapshot"):
            fresh.restore(tmp_path / "junk")
        with pytest.raises(VmError, match=f"format version {snapshot.VERSION + 1}; this osvirt reads"):
            fresh.restore(tmp_path / "newer")
    with Machine(32) as small:
        with pytest.raises(VmError, match="a snapshot of 64 MiB, this machine has 32 MiB"):
            small.restore(tmp_path / "base")
    m.snapshot(tmp_path / "base")  # a new snapshot where the parent was
    with Machine(64) as fresh:
        with pytest.raises(VmError, match="is not the snapshot it was taken after"):
            fresh.restore(tmp_path / "inc")


SNAPSHOTS_FOREVER = """
import os, sys
from osvirt.vm.guest import DemoGuest
g = DemoGuest(memory_mib=128)
with g.machine as m:
    g.boot(timeout=30)
    m.pause()
    m.ram.write(0x1000000, os.urandom(96 << 20))  # 96 MiB to save: each snapshot takes a while to write
    print("booted", flush=True)
    while True:
        m.snapshot(os.path.join(sys.argv[1], "snap"))
"""


def test_a_snapshot_sigkilled_while_it_writes_leaves_no_temp_file():
    """The old snapshot stays whole where it was, and its successor's temp file goes (osvirt.tracker)."""
    from osvirt.process import Children
    with Children() as kids, naming.private_dir() as d:
        proc = kids.spawn([sys.executable, "-c", SNAPSHOTS_FOREVER, d], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "booted\n", proc.communicate()[1]
        deadline = time.monotonic() + 60
        while not (os.path.exists(os.path.join(d, "snap")) and len(os.listdir(d)) == 2):  # the next one is written
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[1]
            time.sleep(0.002)
        proc.kill()
        err = proc.communicate(timeout=60)[1]  # its stderr's EOF: the tracker has done its work too
        assert os.listdir(d) == ["snap"], err
        assert f"removed file written before a rename {os.path.join(d, '.snap.osvirt-')}" in err, err
        with open(os.path.join(d, "snap"), "rb") as f:
            assert f.read(len(snapshot.MAGIC)) == snapshot.MAGIC


def test_the_guest_reads_the_host_clock_from_the_cmos_rtc(guest):
    before = time.time()
    r = guest.command("CMD_RTC")
    after = time.time()
    sec, minute, hour, day, month, year, century = [(b >> 4) * 10 + (b & 0x0F)  # BCD, the RTC's default
                                                    for b in r["result0"].to_bytes(8, "little")[:7]]
    assert int(before) <= calendar.timegm((century * 100 + year, month, day, hour, minute, sec)) <= after
    assert r["exits"] == {"KVM_EXIT_IO": 2 * 8 + 1}  # index and data for status A and 7 registers; the doorbell
    assert guest.machine.pio.counts()["rtc"] == {"reads": 8, "writes": 8}


def test_the_host_survives_any_guest():
    """Random code at CPL0, a spin, a hlt with interrupts off: each ends with an exit the host decodes or
    is stopped by it; no thread, no descriptor left."""
    from osvirt.vm.guest import DemoGuest
    rng = random.Random(17)
    threads, fds = threading.active_count(), set(os.listdir("/proc/self/fd"))
    ends = []
    for code in [rng.randbytes(4096) for _ in range(24)] + [b"\xeb\xfe", b"\xf4"]:
        g = DemoGuest(memory_mib=16)
        with g.machine:
            ends.append(g.run_code(code, timeout=0.2))
    assert set(ends[:-2]) <= {"KVM_EXIT_SHUTDOWN", "KVM_EXIT_INTERNAL_ERROR", "guest exception", "running",
                              "i8042 reset (0xfe to port 0x64)"}, ends
    assert ends[-2:] == ["running", "running"]  # kicked out of the guest and out of the in-kernel HLT
    assert threading.active_count() == threads and set(os.listdir("/proc/self/fd")) == fds


def test_every_capability_a_machine_needs_is_asked_and_one_missing_is_refused_by_name(monkeypatch):
    with kvm.Kvm() as k, k.create_vm() as vm:
        assert all(vm.check_extension(getattr(lib, f"KVM_CAP_{name}")) for name in kvm.REQUIRED_CAPABILITIES)
    asked = []
    real = kvm.Vm.check_extension

    def without_immediate_exit(self, capability):
        asked.append(capability)
        return 0 if capability == lib.KVM_CAP_IMMEDIATE_EXIT else real(self, capability)
    monkeypatch.setattr(kvm.Vm, "check_extension", without_immediate_exit)
    fds = set(os.listdir("/proc/self/fd"))
    with pytest.raises(VmError, match=r"lacks KVM_CAP_IMMEDIATE_EXIT \(pausing a vCPU"):
        Machine(16)
    assert set(os.listdir("/proc/self/fd")) == fds  # what was opened before the refusal is closed
    assert {getattr(lib, f"KVM_CAP_{name}") for name in kvm.REQUIRED_CAPABILITIES} <= set(asked)


class Blob:
    """A port device whose state holds bytes: the snapshot file keeps them (as base64 in its JSON)."""

    def __init__(self, data=b""):
        self.data = data

    def io_in(self, offset, size):
        return 0

    def io_out(self, offset, size, value):
        pass

    def snapshot(self):
        return {"data": self.data}

    def restore(self, state):
        self.data = state["data"]


def test_a_device_state_with_bytes_survives_the_snapshot_file(guest, tmp_path):
    guest.machine.pio.attach(0x2F8, 8, Blob(bytes(range(256))), name="blob")
    guest.machine.pause()
    guest.machine.snapshot(tmp_path / "snap")
    with Machine(64) as fresh:
        restored = Blob()
        fresh.pio.attach(0x2F8, 8, restored, name="blob")
        with pytest.raises(BusError, match="not attached here"):  # built alike, or refused
            fresh.restore(tmp_path / "snap")
    from osvirt.vm.guest import DemoGuest
    other = DemoGuest(memory_mib=64)
    with other.machine:
        restored = Blob()
        other.machine.pio.attach(0x2F8, 8, restored, name="blob")
        other.machine.restore(tmp_path / "snap")
        assert restored.data == bytes(range(256))
