"""The PC devices osvirt emulates in Python, one module each: a 16550A UART (`uart`), the i8042
keyboard controller's reset line (`i8042`), the CMOS real-time clock (`rtc`). Each is a PortDevice
(osvirt.vm.bus) with snapshot()/restore(); the UART also raises its interrupt line."""
