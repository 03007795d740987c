"""Debian's kernel in osvirt's machine: its payload unpacked on the host, entered at its 64-bit
entry, its banner on osvirt's 16550A. Here /dev/kvm is kvm_pvm, where the kernel prints
"Linux version" after ~35 s (each privileged instruction of its CPL0 code a trip through the
hypervisor), then crawls on (and may stop at an int3: KVM_EXIT_INTERNAL_ERROR); on kvm_intel or kvm_amd it boots on to an initramfs shell."""
import os
import re
import time

import pytest

from osvirt.vm import cpio
from osvirt.vm.errors import GuestError
from osvirt.vm.kvm import backing_module
from osvirt.vm.linux import LinuxGuest
from osvirt.vm.machine import Machine

BANNER_TIMEOUT_S = 240  # ~35 s on an idle machine here; CI shares two cores with the rest of the suite


def _stop(machine):
    """Stop the guest; a guest that already stopped itself (an int3 under kvm_pvm) says why."""
    try:
        machine.stop()
    except GuestError as e:
        return str(e)
    return machine.stop_reason


def type_in(uart, data, timeout=10.0):
    """Feed bytes to the UART no faster than its 16-byte FIFO takes them."""
    deadline = time.monotonic() + timeout
    while data:
        data = data[uart.feed(data[:1]):]
        if time.monotonic() > deadline:
            raise TimeoutError(f"the guest did not read its UART: {data!r} left")
        time.sleep(0.005)


@pytest.mark.needs("kvm")
@pytest.mark.timeout(BANNER_TIMEOUT_S + 60)
def test_debians_kernel_prints_its_banner_on_the_uart(debian_kernel):
    release = os.path.basename(debian_kernel).removeprefix("vmlinuz-")
    with Machine(256) as m:
        guest = LinuxGuest(m, debian_kernel)
        assert guest.state.entry == "vmlinux" and guest.state.rip == 0x100_0000
        guest.start()
        took = guest.wait_for(b"Linux version", BANNER_TIMEOUT_S)
        # then the lines that show the zero page arrived: the command line, and the e820 map read back
        last_e820 = b"BIOS-e820: [mem 0x0000000000100000-0x000000000fffffff] usable"
        rest = guest.wait_for(last_e820, 60) if took is not None else None
        stopped = _stop(m)
        console = bytes(guest.console)  # after the stop: nothing more comes in
        assert took is not None, (f"no banner in {BANNER_TIMEOUT_S} s on {m.backing}; console {console[-400:]!r}; "
                                  f"exits {m.exits}; stopped: {stopped}")
        banner = re.search(rb"Linux version (\S+)", console)
        assert banner and banner.group(1).decode() == release  # the kernel file's own release
        assert rest is not None, f"no e820 map within 60 s of the banner: {console[-400:]!r}"
        assert f"Command line: {guest.cmdline}".encode() in console
        assert re.findall(rb"BIOS-e820: \[mem (0x\w+)-(0x\w+)\] (\w+)", console) == [
            (b"0x0000000000000000", b"0x000000000009fbff", b"usable"),
            (b"0x000000000009fc00", b"0x00000000000fffff", b"reserved"),
            (b"0x0000000000100000", b"0x000000000fffffff", b"usable")]  # 256 MiB, as the loader's e820 says
        # every console byte came through a port-I/O exit to the UART's THR
        assert m.exits.get("KVM_EXIT_IO", 0) >= len(console)
        assert bytes(guest.uart.transmitted) == console
        print(f"banner after {took:.1f} s, e820 after {rest:.1f} s on {m.backing}; {len(console)} console bytes; "
              f"exits {m.exits}; stopped: {stopped}")


@pytest.mark.needs("kvm")
@pytest.mark.timeout(120)
def test_the_kernels_own_decompressor_takes_over_at_its_64_bit_entry(debian_kernel):
    """unpack=False: the protected-mode part at 0x100000, entered at startup_64 (+0x200) with the
    loader's page tables. The decompressor moves itself into the init_size region above
    pref_address and switches to page tables of its own (CR3 leaves the loader's): the boot
    state the protocol asks for was right. (Under kvm_pvm its XZ decoding then takes minutes.)"""
    with Machine(256) as m:
        guest = LinuxGuest(m, debian_kernel, unpack=False)
        state = guest.state
        assert state.entry == "decompressor" and state.rip == 0x100200
        guest.start()
        deadline = time.monotonic() + 60
        while True:
            time.sleep(0.5)
            assert m.pause(), f"the guest stopped: {_stop(m)}"
            cr3, rip = m.vcpu.get_sregs().cr3, m.vcpu.get_regs().rip
            m.resume()
            if cr3 != state.cr3 or time.monotonic() > deadline:
                break
        stopped = _stop(m)
        end = state.kernel[1]
        assert cr3 != state.cr3, f"CR3 still the loader's {cr3:#x} after 60 s; rip {rip:#x}; stopped: {stopped}"
        assert 0x100_0000 <= cr3 < end and (0x100_0000 <= rip < end or rip >= 0xFFFF_FFFF_8000_0000), \
            f"cr3 {cr3:#x}, rip {rip:#x}: not in the kernel's region [16 MiB, {end:#x}) nor the kernel proper"


def test_an_initramfs_shell_runs_a_command(debian_kernel, request, tmp_path):
    """Needs kvm_intel or kvm_amd: under kvm_pvm the kernel crawls, and may stop at an int3, long before init."""
    from osvirt import env
    if not env.can("kvm"):
        pytest.skip(f"needs kvm: {env.can('kvm').reason}")
    backing = backing_module()
    if backing not in ("kvm_intel", "kvm_amd"):
        pytest.skip(f"/dev/kvm is backed by {backing}: the kernel reaches userspace in time only on "
                    "kvm_intel or kvm_amd (under kvm_pvm each privileged instruction of the kernel's is a trip "
                    "through the hypervisor: the banner takes ~35 s, init would take far longer, and an int3 "
                    "may end it first)")
    busybox = request.getfixturevalue("debian_busybox")
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "proc").mkdir()
    (root / "bin" / "busybox").write_bytes(open(busybox, "rb").read())
    os.chmod(root / "bin" / "busybox", 0o755)
    os.symlink("busybox", root / "bin" / "sh")
    (root / "init").write_text("#!/bin/sh\n/bin/busybox mount -t proc proc /proc\n"
                               "echo osvirt-initramfs-ready\nexec /bin/sh\n")
    os.chmod(root / "init", 0o755)
    initrd = tmp_path / "initramfs.cpio"
    cpio.from_directory(root, console=True).write(initrd)
    with Machine(256) as m:
        guest = LinuxGuest(m, debian_kernel, initrd=initrd,
                           cmdline="console=ttyS0 reboot=k panic=-1 rdinit=/init")
        guest.start()
        assert guest.wait_for(b"osvirt-initramfs-ready", 120) is not None, bytes(guest.console[-800:])
        type_in(guest.uart, b"echo $((6 * 7))-from-the-guest\n")
        assert guest.wait_for(b"42-from-the-guest", 30) is not None, bytes(guest.console[-800:])
        _stop(m)
