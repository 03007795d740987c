"""Hardware virtualization (seed §2, §3.4): a virtual machine monitor on /dev/kvm.

`osvirt.vm.kvm` is the KVM API (system, VM and vCPU descriptors; layouts and
ioctl numbers from <linux/kvm.h>), `osvirt.vm.machine` a machine with guest
RAM, an in-kernel irqchip and PIT, a vCPU thread and a run loop dispatching
exits to the port and MMIO buses (`osvirt.vm.bus`), whose devices are
emulated in Python (`osvirt.vm.devices`, `osvirt.vm.virtio`). Guest memory
is a GuestRam (`osvirt.vm.ram`). Guests: osvirt's own (`osvirt.vm.guest`),
and Linux (`osvirt.vm.loader` reads a bzImage or vmlinux into guest RAM,
`osvirt.vm.linux` runs it in a machine, `osvirt.vm.cpio` builds its
initramfs). Import the module you need: nothing here loads the C extension.
"""
