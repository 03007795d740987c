"""Devices identified from /dev, /sys and /proc/devices, checked against stat and the kernel's lists."""
import os

import pytest

from osvirt.device import devices, pty


def test_null_is_char_1_3_of_the_mem_driver():
    null = devices.identify("null")
    assert (null.kind, null.major, null.minor) == ("char", 1, 3)
    assert null.devt == os.stat("/dev/null").st_rdev
    assert null.registered == ("mem",) and null.subsystem == "mem"
    assert null.sysfs == os.path.realpath("/sys/dev/char/1:3")


def test_a_pty_slave_is_identified_by_path_and_number():
    with pty.PseudoTerminal() as p:
        dev = devices.identify(p.path)
        assert dev.kind == "char" and dev.minor == p.number
        assert "pts" in dev.registered  # /proc/devices: the major of the pty slaves
        assert dev.sysfs is None  # devpts nodes have no sysfs directory
        assert devices.by_devt("char", os.fstat(p.slave).st_rdev).number == dev.number


def test_a_bound_driver_is_read_from_sysfs_when_there_is_one():
    bound = [d for d in devices.list_devices() if d.driver]
    for dev in bound:
        assert os.path.basename(os.readlink(os.path.join(dev.sysfs, "device", "driver"))) == dev.driver
    listed = {(d.kind, d.number) for d in devices.list_devices()}
    assert ("char", "1:3") in listed
    assert len(listed) == sum(len(os.listdir(f"/sys/dev/{k}")) for k in ("char", "block"))


def test_registered_drivers_match_proc_devices():
    text = open("/proc/devices").read()
    chars = devices.registered_drivers("char")
    assert "mem" in chars[1] and "pts" in chars[136]
    assert all(f"{major:3d} {name}" in text for major, names in chars.items() for name in names)


@pytest.mark.parametrize("bad, error", [("", ValueError), (3, TypeError), ("/etc/passwd", ValueError)])
def test_bad_names_raise(bad, error):
    with pytest.raises(error):
        devices.identify(bad)


def test_bad_kinds_and_numbers_raise():
    with pytest.raises(ValueError, match="kind"):
        devices.by_devt("pipe", 0)
    with pytest.raises(ValueError, match="non-negative"):
        devices.by_devt("char", -1)
