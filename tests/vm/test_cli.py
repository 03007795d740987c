"""`osvirt vm run`: the guest's console on stdout, the exits on stderr; a clear refusal without /dev/kvm."""
import subprocess
import sys

import pytest

from osvirt import env


def osvirt(*args):
    return subprocess.run([sys.executable, "-m", "osvirt", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.needs("kvm")
def test_vm_run_guest_demo_prints_its_console_and_the_exits():
    out = osvirt("vm", "run", "--guest", "demo", "--memory-mib", "16")
    assert out.returncode == 0, out.stderr
    line = "osvirt demo guest: hello from CPL3, through a 16550A emulated in Python\n"
    assert out.stdout == line
    assert "i8042 reset" in out.stderr
    table = out.stderr.splitlines()
    header = next(i for i, row in enumerate(table) if row.startswith("exit reason"))  # the last lines, the table
    rows = {row.split()[0]: row.split()[1:] for row in table[header + 1:]}
    count, total_ms, each_us = rows["KVM_EXIT_IO"]
    assert int(count) >= len(line)  # a byte an exit, and the doorbells
    assert 1 < float(each_us) < 10_000 and abs(float(total_ms) * 1e3 / int(count) - float(each_us)) < 1


def test_vm_run_needs_kvm_or_says_why():
    if env.can("kvm"):
        pytest.skip("/dev/kvm opens here: the refusal cannot be seen")
    out = osvirt("vm", "run", "--guest", "demo")
    assert out.returncode == 1 and env.can("kvm").reason in out.stderr


def test_vm_run_wants_a_kernel_or_a_guest():
    out = osvirt("vm", "run")
    assert out.returncode == 2 and "one of the arguments --kernel --guest is required" in out.stderr


@pytest.mark.needs("kvm")
def test_vm_run_refuses_a_memory_size_out_of_range_with_a_message():
    out = osvirt("vm", "run", "--guest", "demo", "--memory-mib", "0")
    assert out.returncode == 2 and "memory_mib must be an int in 1..3072" in out.stderr
    assert "Traceback" not in out.stderr
