"""A virtual serial device on a pty master, driven through the slave as a serial port."""
import errno
import os

import pytest

from osvirt.device import pty, serial
from osvirt.process import Children


@pytest.fixture
def sensor_port():
    with pty.PseudoTerminal() as p, Children() as kids:
        def device():
            os.close(p.slave)
            return 0 if serial.serve(p.master, serial.VirtualSensor(21.5)) >= 0 else 1
        pid = kids.fork(device)
        with serial.SerialPort(p.path, baud=9600) as port:
            yield port, kids, pid


def test_the_sensor_answers_its_protocol(sensor_port):
    port, kids, pid = sensor_port
    assert port.command("ID?") == serial.VirtualSensor.ID
    assert port.command("READ TEMP") == "TEMP 21.5 C"
    assert port.command("SET TEMP 30.5") == "OK"
    assert port.command("READ TEMP") == "TEMP 30.5 C"
    assert port.command("SET TEMP hot") == "ERR not a number: hot"
    assert port.command("FLY") == "ERR unknown command: FLY"
    assert port.command("READ COUNT") == "COUNT 7"
    os.write(port.fd, b"QUIT\n")
    assert kids.wait(pid, timeout_s=10) == 0


def test_the_port_keeps_its_baud_and_the_pty_forces_8n(sensor_port):
    port, _, _ = sensor_port
    assert port.settings() == {"baud": 9600, "frame": "8N1", "raw": True}
    try:
        port.configure(115200, data_bits=7, parity="E", stop_bits=2)
    except OSError as e:  # a glibc that reads the settings back says the driver dropped some
        assert e.errno == errno.EINVAL and "tcsetattr(115200 7E2)" in str(e)
    assert port.settings() == {"baud": 115200, "frame": "8N2", "raw": True}  # no UART: CS8, no parity


def test_bad_settings_raise_before_any_syscall():
    with pytest.raises(ValueError, match="baud"):
        serial.SerialPort("/dev/null", baud=1234)
    with pty.PseudoTerminal() as p, serial.SerialPort(p.path) as port:
        with pytest.raises(ValueError, match="frame"):
            port.configure(9600, parity="X")
        with pytest.raises(ValueError, match="one command"):
            port.command("A\nB")
