"""ioctl encoding: Python's numbers are the C headers' numbers, and decode inverts encode."""
import os

import pytest
from hypothesis import given, strategies as st

from osvirt import _quickcalls, env
from osvirt.device import cc, ioctl
from osvirt.device.ioctl import IO, IOR, IOW, IOWR, READ, WRITE, NONE, decode, describe

# Every request number osvirt.device computes, with the header that defines it.
HEADERS = ["sys/ioctl.h", "linux/loop.h", "linux/fs.h", "linux/fiemap.h", "linux/kvm.h"]
NAMES = ["TIOCSCTTY", "TIOCGWINSZ", "TIOCSWINSZ", "TIOCEXCL", "TIOCNXCL", "TIOCGEXCL", "TIOCGPTN",
         "FIONREAD", "LOOP_SET_FD", "LOOP_CLR_FD", "LOOP_SET_STATUS64", "LOOP_GET_STATUS64",
         "LOOP_CONFIGURE", "LOOP_CTL_GET_FREE", "BLKSSZGET", "BLKGETSIZE64",
         "KVM_GET_API_VERSION", "KVM_CHECK_EXTENSION", "FS_IOC_FIEMAP"]


def test_every_request_is_listed_here():
    assert sorted(NAMES) == sorted(n for n in ioctl.__all__ if n.isupper() and n not in
                                   ("NONE", "WRITE", "READ", "IOC", "IO", "IOW", "IOR", "IOWR"))


@pytest.mark.needs("cc")
def test_request_numbers_match_the_system_headers():
    from_headers = cc.header_values(NAMES, HEADERS)
    ours = {name: getattr(ioctl, name) for name in NAMES}
    assert ours == from_headers


def test_known_numbers_take_apart_into_their_fields():
    assert decode(ioctl.BLKGETSIZE64) == (READ, 0x12, 114, 8)
    assert decode(ioctl.FS_IOC_FIEMAP) == (READ | WRITE, ord("f"), 11, 32)
    # A legacy terminal number: it copies a struct winsize, but says nothing of it.
    assert decode(ioctl.TIOCGWINSZ) == (NONE, ord("T"), 0x13, 0)
    assert describe(ioctl.BLKGETSIZE64) == "_IOR(0x12, 0x72, 8)"
    assert describe(ioctl.TIOCGWINSZ) == "_IO('T', 0x13)"


@given(direction=st.integers(0, 3), magic=st.integers(0, 255), number=st.integers(0, 255),
       size=st.integers(0, (1 << 14) - 1))
def test_decode_inverts_encode(direction, magic, number, size):
    assert decode(ioctl.IOC(direction, magic, number, size)) == (direction, magic, number, size)


def test_the_four_macros_set_the_direction():
    assert [decode(f("X", 1, 4)).direction for f in (IOW, IOR, IOWR)] == [WRITE, READ, READ | WRITE]
    assert decode(IO("X", 1)).size == 0
    assert IOR("X", 1, "Q") == IOR("X", 1, 8)


@pytest.mark.parametrize("args, message", [
    (("T", 256, 0), "number 256 not in 0..255"),
    (("TT", 1, 0), "one character"),
    ((300, 1, 0), "type 300 not in 0..255"),
    (("T", 1, 1 << 14), "size 16384 not in 0..16383"),
    (("T", -1, 0), "number -1"),
    (("T", 1, -4), "size -4"),
])
def test_out_of_range_fields_raise_valueerror(args, message):
    with pytest.raises(ValueError, match=message):
        IOR(*args)


def test_bad_requests_and_fds_raise_before_any_syscall():
    with pytest.raises(ValueError, match="request"):
        decode(1 << 32)
    with pytest.raises(ValueError, match="fd -1"):
        ioctl.ioctl(-1, ioctl.FIONREAD, name="FIONREAD")
    with pytest.raises(TypeError, match="arg must be"):
        ioctl.ioctl(0, ioctl.FIONREAD, 1.5, name="FIONREAD")
    with pytest.raises(ValueError, match="1024"):
        ioctl.ioctl(0, ioctl.FIONREAD, bytes(2000), name="FIONREAD")


def test_a_refusal_names_the_request():
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(OSError, match=r"ioctl\(TIOCGWINSZ\): Inappropriate ioctl") as e:
            ioctl.ioctl(fd, ioctl.TIOCGWINSZ, bytes(8), name="TIOCGWINSZ")
        assert e.value.errno == 25  # ENOTTY: /dev/null is no terminal
    finally:
        os.close(fd)


def test_fionread_counts_the_bytes_waiting_in_a_pipe():
    r, w = os.pipe()
    try:
        assert ioctl.ioctl_int(r, ioctl.FIONREAD, name="FIONREAD") == 0
        os.write(w, b"x" * 1234)
        assert ioctl.ioctl_int(r, ioctl.FIONREAD, name="FIONREAD") == 1234
        os.read(r, 1000)
        assert ioctl.ioctl_int(r, ioctl.FIONREAD, name="FIONREAD") == 234
        with open(r, "rb", closefd=False) as pipe:  # an object with fileno(): its descriptor
            assert ioctl.ioctl_int(pipe, ioctl.FIONREAD, name="FIONREAD") == 234
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("fd, number, error", [
    (-1, ioctl.FIONREAD, ValueError), (1 << 31, ioctl.FIONREAD, ValueError),
    (1.5, ioctl.FIONREAD, TypeError), (True, ioctl.FIONREAD, TypeError),
    ("0", ioctl.FIONREAD, TypeError), (0, 1 << 32, ValueError), (0, -1, ValueError),
    (0, float(ioctl.FIONREAD), TypeError),
])
def test_ioctl_int_refuses_bad_fds_and_requests_before_any_syscall(fd, number, error):
    with pytest.raises(error, match="ioctl"):
        ioctl.ioctl_int(fd, number, name="FIONREAD")


def test_ioctl_int_never_truncates_an_fd_or_a_request_to_its_c_type():
    # The C call (osvirt._quickcalls) is the valid path's check: (1 << 32) | FIONREAD would be
    # FIONREAD to the kernel's unsigned int cmd, and fd + 2**32 the fd itself to a C int. Both
    # are refused before any syscall, and ioctl_int's checks name the facility.
    r, w = os.pipe()
    try:
        os.write(w, b"x" * 5)
        assert _quickcalls.ioctl_int(r, ioctl.FIONREAD) == 5  # the bare call ioctl_int makes
        for fd, request in [(r, 1 << 32 | ioctl.FIONREAD), (r + (1 << 32), ioctl.FIONREAD)]:
            with pytest.raises(ValueError, match=r"ioctl"):
                ioctl.ioctl_int(fd, request, name="FIONREAD")
            with pytest.raises(OverflowError):
                _quickcalls.ioctl_int(fd, request)
        for args in [(-1, ioctl.FIONREAD), (r, -1)]:
            with pytest.raises(OverflowError):
                _quickcalls.ioctl_int(*args)
        for args in [(True, ioctl.FIONREAD), (r, float(ioctl.FIONREAD)), (r,), (r, ioctl.FIONREAD, 0)]:
            with pytest.raises(TypeError):
                _quickcalls.ioctl_int(*args)
        assert ioctl.ioctl_int(r, ioctl.FIONREAD, name="FIONREAD") == 5  # nothing read meanwhile
    finally:
        os.close(r)
        os.close(w)


def test_ioctl_int_refusals_carry_the_kernels_errno_and_name_the_request():
    import resource
    unused = resource.getrlimit(resource.RLIMIT_NOFILE)[0] + 10  # no fd can have this number
    with pytest.raises(OSError, match=r"ioctl\(FIONREAD\): Bad file descriptor") as e:
        ioctl.ioctl_int(unused, ioctl.FIONREAD, name="FIONREAD")
    assert e.value.errno == 9  # EBADF
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(OSError, match=r"ioctl\(FIONREAD\)") as e:
            ioctl.ioctl_int(fd, ioctl.FIONREAD, name="FIONREAD")
        assert e.value.errno == 25  # ENOTTY: the null driver answers no ioctl
    finally:
        os.close(fd)


def test_ioctl_int_reads_a_files_remaining_bytes_and_the_fileno_path_agrees(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(b"x" * 1000)
    with open(path, "rb", buffering=0) as f:
        f.seek(300)
        assert ioctl.ioctl_int(f.fileno(), ioctl.FIONREAD, name="FIONREAD") == 700  # i_size - pos
        assert ioctl.ioctl_int(f, ioctl.FIONREAD, name="FIONREAD") == 700  # an object with fileno()


def test_ioctl_int_gives_the_first_int_of_a_larger_answer():
    # TIOCGWINSZ copies out a whole struct winsize (8 bytes): the C call has room for
    # it, and the first int holds ws_row and ws_col (little-endian shorts).
    from osvirt.device import pty
    with pty.PseudoTerminal() as p:
        pty.set_window_size(p.master, 50, 132, 640, 480)
        assert ioctl.ioctl_int(p.slave, ioctl.TIOCGWINSZ, name="TIOCGWINSZ") == 50 | 132 << 16
        assert ioctl.ioctl_int(p.slave, ioctl.TIOCGWINSZ, name="TIOCGWINSZ", fmt="Q") == \
            50 | 132 << 16 | 640 << 32 | 480 << 48  # the same answer through fcntl.ioctl


def test_ioctl_int_shows_its_python_functions_signature_and_docstring():
    # Its valid call is made in C (osvirt._quickcalls.checked), the others by the function.
    import inspect
    f = ioctl.ioctl_int
    assert inspect.signature(f) == inspect.signature(f.__wrapped__)
    assert str(inspect.signature(f)).startswith("(fd: int | osvirt.descriptors.HasFileno, request: int, *, name: str")
    assert f.__doc__ and f.__doc__ == f.__wrapped__.__doc__
    assert (f.__module__, f.__name__) == ("osvirt.device.ioctl", "ioctl_int")


def test_ioctl_int_from_c_raises_from_none_inside_an_except_block():
    import resource
    unused = resource.getrlimit(resource.RLIMIT_NOFILE)[0] + 10
    with pytest.raises(OSError, match=r"ioctl\(FIONREAD\)") as e:
        try:
            raise KeyError("handled")
        except KeyError:
            ioctl.ioctl_int(unused, ioctl.FIONREAD, name="FIONREAD", fmt="i")
    assert e.value.errno == 9 and e.value.__suppress_context__ and e.value.__cause__ is None


def test_env_probe_cc_names_the_compiler():
    answer = env.can("cc")
    assert bool(answer) == (cc.compiler() is not None)
    assert answer.reason
