"""`osvirt vm run`: a guest on /dev/kvm, its console on stdout and the exit counts on stderr at the end,
like kvmtool's `lkvm run`. Only argparse runs at import; the run imports what it needs."""
from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    vm = sub.add_parser("vm", help="hardware virtualization: run a guest on /dev/kvm")
    vm_sub = vm.add_subparsers(dest="vm_command", required=True)
    p = vm_sub.add_parser("run", help="run a guest: Linux (--kernel) or osvirt's own (--guest demo)",
                          description="Run a guest on /dev/kvm with a 16550A UART as its console (stdout); "
                                      "the exits by reason go to stderr at the end.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--kernel", metavar="FILE", help="a Linux bzImage or ELF vmlinux")
    what.add_argument("--guest", choices=["demo"], help="osvirt's own guest (osvirt/vm/guest)")
    p.add_argument("--initrd", metavar="FILE", help="an initramfs for --kernel")
    p.add_argument("--cmdline", metavar="TEXT", help="the kernel command line (default: a serial console, "
                   "reboot through the i8042)")
    p.add_argument("--memory-mib", type=int, default=256, metavar="N", help="guest RAM in MiB (default 256)")
    p.add_argument("--disk", metavar="FILE", help="a host file as the guest's virtio-blk disk")
    p.add_argument("--timeout-s", type=float, default=None, metavar="S", help="stop the guest after S seconds")
    p.set_defaults(run=run)


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    if data == b"\n":
        sys.stdout.flush()


def _report(machine: Any) -> None:
    """The exits by reason: how many, and the time their KVM_RUN calls took (the guest's run included)."""
    sys.stdout.flush()
    counts, ns = machine.exits, machine.exit_ns
    print(f"{'exit reason':28} {'count':>8} {'KVM_RUN ms':>11} {'µs each':>9}", file=sys.stderr)
    for name, count in sorted(counts.items()):
        print(f"{name:28} {count:8} {ns[name] / 1e6:11.1f} {ns[name] / 1e3 / count:9.1f}", file=sys.stderr)


def _run_linux(args: argparse.Namespace) -> int:
    """A Linux kernel, as kvmtool runs one: until it reboots (i8042 reset), stops, or --timeout-s."""
    try:
        from osvirt.vm.linux import DEFAULT_CMDLINE, LinuxGuest
    except ImportError as e:
        print(f"osvirt vm run --kernel: the Linux boot (osvirt.vm.linux) is not installed: {e}", file=sys.stderr)
        return 2
    from osvirt.vm.errors import GuestError, VmError
    from osvirt.vm.machine import Machine
    try:
        m = Machine(args.memory_mib)
    except (OSError, ValueError, VmError) as e:
        print(f"osvirt vm run: {e}", file=sys.stderr)
        return 2
    with m:
        try:
            guest = LinuxGuest(m, args.kernel, initrd=args.initrd, cmdline=args.cmdline or DEFAULT_CMDLINE,
                               disk=args.disk, output=sys.stdout.buffer)
        except (OSError, VmError) as e:
            print(f"osvirt vm run: {e}", file=sys.stderr)
            return 2
        status = 0
        try:
            guest.start()
            try:
                reason = m.wait(args.timeout_s)
            except TimeoutError:
                m.stop(f"--timeout-s {args.timeout_s} passed")
                reason = m.stop_reason
            print(f"\nguest stopped: {reason}", file=sys.stderr)
        except GuestError as e:
            print(f"\nosvirt vm run: {e}", file=sys.stderr)
            status = 1
        finally:
            guest.close()
            _report(m)
        return status


def run(args: argparse.Namespace) -> int:
    from osvirt import env
    answer = env.can("kvm")
    if not answer:
        print(f"osvirt vm run: {answer.reason}", file=sys.stderr)
        return 1
    if args.kernel:
        return _run_linux(args)
    from osvirt.vm.errors import VmError
    from osvirt.vm.guest import DemoGuest
    try:
        guest = DemoGuest(memory_mib=args.memory_mib, uart_output=_write)
    except (OSError, ValueError, VmError) as e:
        print(f"osvirt vm run: {e}", file=sys.stderr)
        return 2
    m = guest.machine
    status = 0
    try:
        with m:
            guest.boot(timeout=args.timeout_s or 30)
            text = b"osvirt demo guest: hello from CPL3, through a 16550A emulated in Python\n"
            m.ram.write(guest.L["GUEST_MAILBOX"] + guest.L["MB_TEXT"], text)
            guest.command("CMD_UART_WRITE", len(text), timeout=args.timeout_s or 30)
            guest.start_command("CMD_RESET")
            reason = m.wait(args.timeout_s)
            print(f"guest stopped: {reason}", file=sys.stderr)
    except (TimeoutError, VmError) as e:
        print(f"osvirt vm run: {e}", file=sys.stderr)
        status = 1
    finally:
        _report(m)
    return status
