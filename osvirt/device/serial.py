"""A virtual serial device served from user space on a pty, and a client for it.

A program cannot add a driver to the kernel, but it can be a device: it holds
the master end of a pty and answers whatever arrives, while a client opens
the slave /dev/pts/N and drives it exactly as it would drive a serial port
(termios raw mode, 8 data bits, no parity, 1 stop bit, a baud rate set with
cfsetospeed). `VirtualSensor` is such a device: a line protocol of the kind
lab instruments speak (`ID?`, `READ TEMP`, `SET TEMP 21.5`, `READ COUNT`,
`QUIT`), one reply line per command. `serve` runs any such device on a fd.

The pty driver is not a UART: it keeps the baud rate it is given (there is
no wire to clock, so it means nothing) and forces 8 data bits without parity
(drivers/tty/pty.c, pty_set_termios), which `SerialPort.settings` shows.
"""
import errno
import os
import termios

from osvirt._owned import OwnedFd
from osvirt.descriptors import HasFileno, fd_number
from osvirt.device.pty import read_line, set_raw
from osvirt.errors import kernel_error

__all__ = ["VirtualSensor", "serve", "SerialPort", "BAUD_RATES"]

BAUD_RATES: dict[int, int] = {rate: getattr(termios, f"B{rate}") for rate in
              (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)}
_LINE_MAX = 256  # a command longer than this is an error, not an unbounded buffer


class VirtualSensor:
    """A temperature sensor that exists only in user space."""

    ID = "OSVIRT,VSENSOR-1"

    def __init__(self, temp_c: float = 21.5) -> None:
        self.temp_c = float(temp_c)
        self.count = 0

    def handle(self, line: str) -> str | None:
        """The reply to one command line; None for QUIT (the device stops)."""
        self.count += 1
        words = line.split()
        if words == ["ID?"]:
            return self.ID
        if words == ["READ", "TEMP"]:
            return f"TEMP {self.temp_c:.1f} C"
        if words == ["READ", "COUNT"]:
            return f"COUNT {self.count}"
        if len(words) == 3 and words[:2] == ["SET", "TEMP"]:
            try:
                self.temp_c = float(words[2])
            except ValueError:
                return f"ERR not a number: {words[2]}"
            return "OK"
        if words == ["QUIT"]:
            return None
        return f"ERR unknown command: {line}"


def serve(fd: int | HasFileno, device: VirtualSensor) -> int:
    """Answer `device`'s commands arriving on fd (one per line, CR or LF ended)
    until QUIT, or until the other end is gone (EIO on a pty master). Returns
    the number of commands answered."""
    fd = fd_number(fd, "serve")
    pending, answered = b"", 0
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError as e:  # EIO: every slave descriptor closed
            if e.errno == errno.EIO:
                return answered
            raise
        if not data:
            return answered
        pending += data.replace(b"\r", b"\n")
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if not line.strip():
                continue
            reply = device.handle(line.decode("ascii", "replace").strip())
            if reply is None:
                return answered
            os.write(fd, reply.encode("ascii") + b"\r\n")
            answered += 1
        if len(pending) > _LINE_MAX:
            os.write(fd, b"ERR line too long\r\n")
            pending = b""


class SerialPort(OwnedFd):
    """The slave side of a pty (or any tty) opened and set up as a serial port: 8N1, raw."""

    what = "serial port"

    def __init__(self, path: str | os.PathLike[str], baud: int = 9600) -> None:
        if baud not in BAUD_RATES:
            raise ValueError(f"serial port: baud {baud!r} not one of {sorted(BAUD_RATES)}")
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as e:
            assert e.errno is not None  # set by every failed system call
            raise kernel_error(e.errno, f"open({path})", filename=path) from None
        try:
            self.configure(baud)
        except BaseException:
            self.close()
            raise

    def configure(self, baud: int, data_bits: int = 8, parity: str = "N", stop_bits: int = 1) -> None:
        """Raw mode, then the frame (data bits, parity N/E/O, stop bits) and
        cfsetospeed/cfsetispeed(baud), in one tcsetattr."""
        if baud not in BAUD_RATES or data_bits not in (5, 6, 7, 8) or parity not in "NEO" \
                or len(parity) != 1 or stop_bits not in (1, 2):
            raise ValueError(f"serial port: unsupported frame {baud} {data_bits}{parity}{stop_bits}")
        set_raw(self.fd)
        iflag, oflag, cflag, lflag, _, _, cc = termios.tcgetattr(self.fd)
        cflag &= ~(termios.CSIZE | termios.PARENB | termios.PARODD | termios.CSTOPB | termios.CRTSCTS)
        cflag |= getattr(termios, f"CS{data_bits}") | termios.CREAD | termios.CLOCAL
        cflag |= {"N": 0, "E": termios.PARENB, "O": termios.PARENB | termios.PARODD}[parity]
        cflag |= termios.CSTOPB if stop_bits == 2 else 0
        # termios.tcsetattr sets the speeds with cfsetispeed/cfsetospeed. Some
        # distributions patch glibc to read the settings back after TCSETS and
        # fail with EINVAL when the driver dropped bits it was asked for (a pty
        # drops CSIZE and PARENB): then the call fails, but the rest took effect.
        try:
            termios.tcsetattr(self.fd, termios.TCSANOW,
                              [iflag, oflag, cflag, lflag, BAUD_RATES[baud], BAUD_RATES[baud], cc])
        except termios.error as e:
            raise kernel_error(e.args[0], f"tcsetattr({baud} {data_bits}{parity}{stop_bits})",
                               "the driver did not keep the frame asked for") from None

    def settings(self) -> dict[str, object]:
        """What the driver kept, read back with tcgetattr/cfgetospeed: baud, data bits, parity, stop bits."""
        iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(self.fd)
        baud = {code: rate for rate, code in BAUD_RATES.items()}.get(ospeed, ospeed)
        size = {termios.CS5: 5, termios.CS6: 6, termios.CS7: 7, termios.CS8: 8}[cflag & termios.CSIZE]
        parity = "N" if not cflag & termios.PARENB else ("O" if cflag & termios.PARODD else "E")
        return {"baud": baud, "frame": f"{size}{parity}{2 if cflag & termios.CSTOPB else 1}",
                "raw": not lflag & (termios.ICANON | termios.ECHO)}

    def command(self, line: str, timeout_s: float = 5.0) -> str:
        """Send one command line and return the reply line (without CR LF)."""
        if "\n" in line or "\r" in line:
            raise ValueError(f"serial port: one command per call, without line ends: {line!r}")
        if timeout_s <= 0:
            raise ValueError(f"serial port: timeout_s must be > 0, not {timeout_s}")
        os.write(self.fd, line.encode("ascii") + b"\n")
        return read_line(self.fd, timeout_s).decode("ascii").rstrip("\r\n")
