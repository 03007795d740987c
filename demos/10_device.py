"""Talking to drivers from user space: device numbers, ioctls, a device of our own.

The seed's §4.4.1 opens /dev/mydevice and calls an empty develop_driver(fd).
This demo does what a program can really do there. It identifies real device
nodes the way the kernel does (kind and major:minor, the driver registered
for the major in /proc/devices, the sysfs directory). It asks real drivers
through ioctl, with request numbers encoded here and checked against the C
headers: the pty driver's window size and SIGWINCH, termios raw mode, FIONREAD
on a pipe, a loop device's size, the KVM API version. Then it serves a
device itself: a virtual serial sensor on a pty master, driven by a client
through the slave as a serial port. A real driver is kernel code, which the
last step says.

Usage: python demos/10_device.py [--json]
"""
import contextlib
import errno
import os
import sys

from osvirt import env
from osvirt.demo import run
from osvirt.device import cc, devices, ioctl, kvm, loop, pty, serial
from osvirt.naming import private_dir, unique_name

NAME = "device"
SEED = "4.4.1 develop_driver"
SUMMARY = "devices from /dev and /sys, ioctls answered by real drivers, a user-space virtual serial device on a pty"

# Documentation/admin-guide/devices.txt: numbers the kernel assigns for good.
ASSIGNED = {"/dev/null": ("char", 1, 3), "/dev/tty": ("char", 5, 0), "/dev/ptmx": ("char", 5, 2),
            "/dev/loop0": ("block", 7, 0), "/dev/kvm": ("char", 10, 232)}
REQUESTS = ["TIOCGWINSZ", "TIOCSWINSZ", "TIOCEXCL", "TIOCNXCL", "TIOCGPTN", "FIONREAD",
            "LOOP_CTL_GET_FREE", "LOOP_CONFIGURE", "LOOP_SET_FD", "LOOP_CLR_FD", "LOOP_SET_STATUS64",
            "BLKGETSIZE64", "BLKSSZGET", "KVM_GET_API_VERSION", "KVM_CHECK_EXTENSION"]
HEADERS = ["sys/ioctl.h", "linux/loop.h", "linux/fs.h", "linux/kvm.h"]
SEED_SNIPPET = """#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/ioctl.h>
int develop_driver(int fd) { return 0; }
int main() {
    int fd = open("/dev/mydevice", O_RDWR);
    develop_driver(fd);
    close(fd);
    return 0;
}
"""


@contextlib.contextmanager
def _pipe():
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


def _loop_part_shift():
    """The low bits of a loop minor that number its partitions: fls(max_part) of the loop
    module (drivers/block/loop.c), so /dev/loopN is minor N << shift; 0 without partitions."""
    try:
        with open("/sys/module/loop/parameters/max_part") as f:
            return int(f.read()).bit_length()
    except FileNotFoundError:  # loop built in without the parameter exposed: no partitions
        return 0


def _sensor(p):
    os.close(p.slave)  # the device holds only the master: EIO once the client has gone
    serial.serve(p.master, serial.VirtualSensor(temp_c=21.5))


def body(demo):
    with demo.step("device nodes identified as the kernel knows them",
                   asked="stat(node).st_rdev; /proc/devices; /sys/dev/{char,block}/M:m"):
        opened = demo.own(pty.PseudoTerminal())
        for node in [*ASSIGNED, opened.path]:
            if not os.path.exists(node):
                demo.skip(f"identify {node}", f"{node} does not exist here")
                continue
            dev = devices.identify(node)
            where = f"sysfs {dev.sysfs}" if dev.sysfs else "no sysfs directory (devpts)"
            seen = f"{dev.kind} {dev.number}, driver {dev.handled_by}, {where}"
            if node in ASSIGNED:
                kind, major, minor = ASSIGNED[node]
                demo.check(f"{node}", f"{kind} {major}:{minor} (devices.txt)", seen,
                           (dev.kind, dev.major, dev.minor) == ASSIGNED[node])
            else:  # a pty slave: major 136-143 ("pts"), the minor is its number N
                demo.check(f"{node} (a pty slave)", f"char 136+:{opened.number % 256}, driver pts",
                           seen, dev.kind == "char" and "pts" in dev.registered and dev.minor == opened.number % 256)

    with demo.step("ioctl request numbers: encoded in Python, compared with the C headers",
                   asked="cc: printf(\"%lu\", TIOCGWINSZ) ... from " + ", ".join(HEADERS)):
        demo.require(env.can("cc"))
        from_headers = cc.header_values(REQUESTS, HEADERS)
        wrong = [n for n in REQUESTS if getattr(ioctl, n) != from_headers[n]]
        for name in ("TIOCGWINSZ", "TIOCGPTN", "BLKGETSIZE64", "KVM_GET_API_VERSION"):
            demo.say(f"{name:20} = {getattr(ioctl, name):#010x} = {ioctl.describe(getattr(ioctl, name))}")
        demo.check("request numbers equal to the headers'", f"all {len(REQUESTS)}",
                   f"{len(REQUESTS) - len(wrong)} equal" + (f", differ: {wrong}" if wrong else ""), not wrong)

    with demo.step("the window size set on a pty master is read on the slave, and its foreground gets SIGWINCH",
                   asked="setsid(); ioctl(slave, TIOCSCTTY); ioctl(master, TIOCSWINSZ, 50x132); ioctl(slave, TIOCGWINSZ)"):
        p = demo.own(pty.PseudoTerminal())
        r, w = demo.own(_pipe())
        pid = demo.children.fork(pty.foreground_resize_watch, p.slave, w, 10.0)
        pty.read_line(r, 10)
        demo.check("foreground process group of the terminal", f"the child's, {pid}",
                   os.tcgetpgrp(p.master), os.tcgetpgrp(p.master) == pid)
        pty.set_window_size(p.master, 50, 132)
        demo.check("size read on the slave", "50 x 132", "%d x %d" % pty.get_window_size(p.slave)[:2],
                   pty.get_window_size(p.slave)[:2] == (50, 132))
        report = pty.read_line(r, 10).decode().strip()
        demo.check("what the foreground child saw", "SIGWINCH 50 132", report, report == "SIGWINCH 50 132")
        demo.children.wait(pid, timeout_s=10)

    with demo.step("termios raw mode changes what the reader of the slave sees",
                   asked="write(master, \"abX<DEL>c\"), in canonical mode then after tcsetattr(raw)"):
        p = demo.own(pty.PseudoTerminal())
        os.write(p.master, b"abX\x7fc")
        echo = pty.read_for(p.master, 5, size=7)
        waiting = ioctl.ioctl_int(p.slave, ioctl.FIONREAD, name="FIONREAD")
        os.write(p.master, b"\n")
        line = pty.read_for(p.slave, 5, size=4)
        demo.check("canonical: readable before Enter (FIONREAD)", "0 bytes (line buffered)", waiting, waiting == 0)
        demo.check("canonical: the read after Enter", repr(b"abc\n") + " (DEL erased X)", repr(line), line == b"abc\n")
        demo.check("canonical: echoed to the master", repr(b"abX\b \bc"), repr(echo), echo == b"abX\b \bc")
        pty.read_for(p.master, 1, size=2)  # the echo of Enter
        pty.set_raw(p.slave)
        os.write(p.master, b"abX\x7fc")
        raw = pty.read_for(p.slave, 5, size=5)
        raw_echo = pty.read_for(p.master, 0.3)
        demo.check("raw: the read, no Enter needed", repr(b"abX\x7fc") + " (every byte, DEL too)", repr(raw),
                   raw == b"abX\x7fc")
        demo.check("raw: echoed to the master", repr(b""), repr(raw_echo), raw_echo == b"")

    with demo.step("FIONREAD on a pipe counts the bytes waiting", asked="ioctl(pipe_r, FIONREAD)"):
        r, w = demo.own(_pipe())
        os.write(w, b"x" * 1000)
        before = ioctl.ioctl_int(r, ioctl.FIONREAD, name="FIONREAD")
        os.read(r, 300)
        after = ioctl.ioctl_int(r, ioctl.FIONREAD, name="FIONREAD")
        demo.check("after writing 1000, then reading 300", "1000, then 700", f"{before}, then {after}",
                   (before, after) == (1000, 700))

    with demo.step("BLKGETSIZE64 on a loop device equals its backing file's size",
                   asked="LOOP_CTL_GET_FREE; LOOP_CONFIGURE; ioctl(loop, BLKGETSIZE64); ioctl(loop, BLKSSZGET)"):
        demo.require(env.can("loop"))
        path = os.path.join(demo.own(private_dir()), unique_name("disk.img"))
        with open(path, "wb") as f:
            f.truncate(5 * 1024 * 1024 + 512)
        dev = demo.own(loop.LoopDevice(path))
        demo.check(f"{dev.path}: BLKGETSIZE64", f"{os.path.getsize(path)} (st_size)", dev.size_bytes(),
                   dev.size_bytes() == os.path.getsize(path))
        demo.check(f"{dev.path}: BLKSSZGET", "512 (the loop driver's default)", dev.block_size_bytes(),
                   dev.block_size_bytes() == 512)
        n = int(os.path.basename(dev.path).removeprefix("loop"))
        minor = n << _loop_part_shift()
        seen = devices.identify(dev.path)
        served = loop.backing_file(n)  # /sys/block/loopN/loop/: the loop driver's own attributes
        demo.check(f"{dev.path} identified", f"block 7:{minor} (N = {n} from the name), /proc/devices 7 = loop, "
                   f"sysfs .../block/loop{n} whose loop/backing_file is {os.path.basename(path)}",
                   f"{seen.kind} {seen.number}, /proc/devices 7 = {', '.join(seen.registered) or 'none'}, "
                   f"sysfs {seen.sysfs} whose loop/backing_file is {os.path.basename(served or '-')}",
                   (seen.kind, seen.major, seen.minor) == ("block", 7, minor) and "loop" in seen.registered
                   and os.path.basename(seen.sysfs or "") == f"loop{n}" and served == path)

    with demo.step("KVM answers on /dev/kvm", asked="ioctl(kvm, KVM_GET_API_VERSION); KVM_CHECK_EXTENSION"):
        demo.require(env.can("kvm"))
        k = demo.own(kvm.Kvm())
        demo.check("KVM_GET_API_VERSION", f"12 (KVM_API_VERSION in <linux/kvm.h>: {kvm.API_VERSION})",
                   k.api_version(), k.api_version() == 12)
        caps = {name: k.check_extension(name) for name in kvm.CAPABILITIES}
        demo.say("KVM_CHECK_EXTENSION: " + ", ".join(f"{n[8:]}={v}" for n, v in caps.items()))
        demo.check("KVM_CAP_USER_MEMORY", "1 (every KVM has it)", caps["KVM_CAP_USER_MEMORY"],
                   caps["KVM_CAP_USER_MEMORY"] == 1)

    with demo.step("a virtual serial sensor served on a pty master, driven through the slave as a serial port",
                   asked="open(/dev/pts/N, O_NOCTTY); tcsetattr(raw, CS8, cfsetospeed(B9600)); write/read lines"):
        p = demo.own(pty.PseudoTerminal())
        demo.children.fork(_sensor, p)
        port = demo.own(serial.SerialPort(p.path, baud=9600))
        demo.check("port settings read back (tcgetattr, cfgetospeed)", "9600 8N1, raw",
                   f"{port.settings()['baud']} {port.settings()['frame']}, raw={port.settings()['raw']}",
                   port.settings() == {"baud": 9600, "frame": "8N1", "raw": True})
        script = [("ID?", serial.VirtualSensor.ID), ("READ TEMP", "TEMP 21.5 C"), ("SET TEMP 30.5", "OK"),
                  ("READ TEMP", "TEMP 30.5 C"), ("READ COUNT", "COUNT 5"), ("HELLO", "ERR unknown command: HELLO")]
        for command, expected in script:
            reply = port.command(command)
            demo.check(f"-> {command}", expected, reply, reply == expected)
        try:
            port.configure(9600, data_bits=7, parity="E", stop_bits=1)
            refused = "tcsetattr returned 0"
        except OSError as e:
            refused = f"tcsetattr: {errno.errorcode[e.errno]}"
        kept = port.settings()["frame"]
        demo.check("asked for 7E1: the frame the pty driver kept", "8N1 (no UART: pty_set_termios forces CS8 "
                   "and clears PARENB)", f"{kept} ({refused})", kept == "8N1")

    with demo.step("the seed's develop_driver: what it really is",
                   asked="open(\"/dev/mydevice\", O_RDWR); cc -Werror=implicit-function-declaration seed.c"):
        err = pty.open_errno("/dev/mydevice")
        demo.check("open(/dev/mydevice)", "ENOENT: no driver made that node", errno.errorcode.get(err, err),
                   err == errno.ENOENT)
        demo.say("Erratum: \"developing a driver\" is kernel work: a driver is kernel code that registers a "
                 "major number (see /proc/devices) and is built against the kernel and loaded with "
                 "CAP_SYS_MODULE. A program can only talk to drivers through ioctl, as above, or serve a "
                 "virtual device itself, as the pty sensor does. And the seed calls open() and uses O_RDWR "
                 "without #include <fcntl.h>:")
        demo.require(env.can("cc"))
        code, diagnostics, _ = cc.compile_source(SEED_SNIPPET, ["-fsyntax-only",
                                                                "-Werror=implicit-function-declaration"])
        named = [w for w in ("implicit declaration of function 'open'", "'O_RDWR' undeclared")
                 if w in diagnostics.replace("\u2018", "'").replace("\u2019", "'")]
        demo.check("the seed's snippet compiled as written", "fails: open and O_RDWR undeclared",
                   f"exit {code}: " + "; ".join(named), code != 0 and len(named) == 2)
        fixed, _, _ = cc.compile_source("#include <fcntl.h>\n" + SEED_SNIPPET, ["-fsyntax-only",
                                                                                "-Werror=implicit-function-declaration"])
        demo.check("with #include <fcntl.h>", "compiles (exit 0)", f"exit {fixed}", fixed == 0)


def main(argv=None):
    return run(sys.modules[__name__], argv)


if __name__ == "__main__":
    sys.exit(main())
