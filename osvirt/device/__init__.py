"""Devices: ioctl encoding, device identification, ptys, loop devices, KVM (seed §4.4).

The ioctl call itself, checked and naming what it asked, is osvirt.device.ioctl.ioctl
(not re-exported here: the module osvirt.device.ioctl keeps its name)."""
from osvirt.device.devices import Device, by_devt, identify, list_devices, registered_drivers
from osvirt.device.ioctl import IO, IOR, IOW, IOWR, Request, decode, describe
from osvirt.device.kvm import Kvm
from osvirt.device.loop import LoopDevice, attached, backing_file, block_size_bytes, get_free, size_bytes
from osvirt.device.pty import (PseudoTerminal, WindowSize, foreground_resize_watch, get_window_size,
                               is_exclusive, open_errno, read_for, read_line,
                               set_controlling_terminal, set_exclusive, set_raw, set_window_size)
from osvirt.device.serial import SerialPort, VirtualSensor, serve

__all__ = [
    "Device", "by_devt", "identify", "list_devices", "registered_drivers",
    "IO", "IOR", "IOW", "IOWR", "Request", "decode", "describe",
    "Kvm",
    "LoopDevice", "attached", "backing_file", "block_size_bytes", "get_free", "size_bytes",
    "PseudoTerminal", "WindowSize", "foreground_resize_watch", "get_window_size", "is_exclusive", "open_errno",
    "read_for", "read_line",
    "set_controlling_terminal", "set_exclusive", "set_raw", "set_window_size",
    "SerialPort", "VirtualSensor", "serve",
]
