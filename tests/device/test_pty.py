"""Pseudo-terminals: window size, SIGWINCH, raw mode, exclusive mode, allocation and release."""
import errno
import os
import termios

import pytest

from osvirt.device import pty
from osvirt.device.ioctl import FIONREAD, ioctl_int
from osvirt.fs.perms import drop_to
from osvirt.process import Children


def test_a_pair_has_a_number_and_a_slave_node_that_go_away_on_close():
    for _ in range(3):  # another process may be given the released N at once: try again
        p = pty.PseudoTerminal()
        assert p.path == f"/dev/pts/{p.number}"
        assert os.stat(p.path).st_rdev == os.fstat(p.slave).st_rdev
        p.close()
        p.close()  # idempotent
        assert p.master == p.slave == -1
        if not os.path.exists(p.path):  # the kernel released N with the master
            break
    assert not os.path.exists(p.path)


def test_pairs_open_at_once_get_distinct_numbers():
    pairs = [pty.PseudoTerminal() for _ in range(4)]
    try:
        assert len({p.number for p in pairs}) == 4
    finally:
        for p in pairs:
            p.close()


def test_window_size_set_on_the_master_is_read_on_the_slave():
    with pty.PseudoTerminal() as p:
        pty.set_window_size(p.master, 37, 121, 640, 480)
        assert pty.get_window_size(p.slave) == (37, 121, 640, 480)


@pytest.mark.parametrize("rows, cols", [(-1, 80), (24, 70000), (24.0, 80)])
def test_bad_window_sizes_raise_valueerror(rows, cols):
    with pty.PseudoTerminal() as p:
        with pytest.raises(ValueError, match="TIOCSWINSZ"):
            pty.set_window_size(p.master, rows, cols)


def test_the_foreground_process_gets_sigwinch_and_reads_the_new_size():
    r, w = os.pipe()
    try:
        with pty.PseudoTerminal() as p, Children() as kids:
            pid = kids.fork(pty.foreground_resize_watch, p.slave, w, 10.0)
            assert pty.read_line(r, 10) == b"ready\n"
            assert os.tcgetpgrp(p.master) == pid  # the child's group is the terminal's foreground
            pty.set_window_size(p.master, 50, 132)
            assert pty.read_line(r, 10) == b"SIGWINCH 50 132\n"
            assert kids.wait(pid, timeout_s=10) == 0
    finally:
        os.close(r)
        os.close(w)


def test_raw_mode_hands_over_bytes_at_once_and_stops_echo():
    with pty.PseudoTerminal() as p:
        os.write(p.master, b"abX\x7fc")  # typed, with a DEL (VERASE)
        assert pty.read_for(p.master, 5, size=7) == b"abX\b \bc"  # echoed, the erase drawn
        assert ioctl_int(p.slave, FIONREAD, name="FIONREAD") == 0  # canonical: no line yet
        os.write(p.master, b"\n")
        assert pty.read_for(p.slave, 5, size=4) == b"abc\n"  # the line, edited
        before = pty.set_raw(p.slave)
        os.write(p.master, b"abX\x7fc")
        assert pty.read_for(p.slave, 5, size=5) == b"abX\x7fc"  # raw: every byte, no newline needed
        assert pty.read_for(p.master, 0.2) == b"\r\n"  # only the canonical newline's echo; raw echoes nothing
        assert before[3] & termios.ICANON and not termios.tcgetattr(p.slave)[3] & termios.ICANON


def _open_as(path, uid):
    drop_to(uid, uid)  # no CAP_SYS_ADMIN after this: TIOCEXCL applies
    return pty.open_errno(path)


@pytest.mark.needs("not_cap_sys_admin")  # the tty layer lets CAP_SYS_ADMIN through TIOCEXCL
def test_exclusive_mode_refuses_a_second_opener_with_ebusy():
    with pty.PseudoTerminal() as p:
        assert pty.open_errno(p.path) == 0
        pty.set_exclusive(p.slave)
        assert pty.is_exclusive(p.slave)
        assert pty.open_errno(p.path) == errno.EBUSY
        pty.set_exclusive(p.slave, False)
        assert not pty.is_exclusive(p.slave)
        assert pty.open_errno(p.path) == 0


@pytest.mark.needs("cap_sys_admin", "setuid")
def test_exclusive_mode_lets_cap_sys_admin_through_and_refuses_another_uid():
    nobody = 65534
    with pty.PseudoTerminal() as p, Children() as kids:
        os.fchown(p.slave, nobody, -1)  # the terminal handed to that user, as grantpt would
        pty.set_exclusive(p.slave)
        assert pty.open_errno(p.path) == 0  # CAP_SYS_ADMIN bypasses TIOCEXCL
        assert kids.wait(kids.fork(_open_as, p.path, nobody), timeout_s=10) == errno.EBUSY
        pty.set_exclusive(p.slave, False)
        assert kids.wait(kids.fork(_open_as, p.path, nobody), timeout_s=10) == 0


def test_helpers_check_their_arguments():
    with pytest.raises(ValueError):
        pty.read_line(0, 0)
    with pytest.raises(ValueError):
        pty.read_for(0, -1)
    with pytest.raises(ValueError):
        pty.set_raw(-1)
    with pytest.raises(ValueError):
        pty.foreground_resize_watch(0, 1, 0)
