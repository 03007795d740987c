"""Devices: ioctl encoding, device identification, ptys, loop devices, KVM (seed §4.4)."""
