import errno
import os
import signal
import time

import pytest

from osvirt import fs
from osvirt.process import Children


@pytest.fixture
def path(tmp):
    p = os.path.join(tmp, "locked")
    with open(p, "wb") as f:
        f.write(b"\0" * 4096)
    return p


def test_flock_conflicts_between_processes_with_ewouldblock(path):
    fd = os.open(path, os.O_RDWR)
    try:
        with Children() as kids:
            fs.hold_in_child(kids, path, lambda f: fs.flock(f, "exclusive"))
            with pytest.raises(BlockingIOError) as info:
                fs.flock(fd, "shared", wait=False)
            assert info.value.errno == errno.EWOULDBLOCK and "flock" in str(info.value)
        fs.flock(fd, "exclusive", wait=False)  # the holder is dead: its lock went with it
        fs.flock(fd, "unlock")
    finally:
        os.close(fd)
    with pytest.raises(ValueError):
        fs.flock(0, "everything")


def test_fcntl_range_lock_blocks_overlap_not_disjoint_and_getlk_names_the_holder(path):
    fd = os.open(path, os.O_RDWR)
    try:
        with Children() as kids:
            pid = fs.hold_in_child(kids, path, lambda f: fs.setlk(f, 0, 100, "write"))
            assert fs.getlk(fd, 50, 10) == fs.LockHolder(pid, 0, 100, "write")
            assert fs.getlk(fd, 100, 100) is None
            with pytest.raises(BlockingIOError) as info:
                fs.setlk(fd, 99, 2, "read")
            assert info.value.errno == errno.EAGAIN
            fs.setlk(fd, 100, 100, "write")  # disjoint: granted at once
            os.kill(pid, signal.SIGKILL)
            assert kids.wait(pid) == -signal.SIGKILL
            assert fs.getlk(fd, 0, 100) is None  # the kernel dropped the dead holder's lock
            fs.setlk(fd, 0, 100, "write")
    finally:
        os.close(fd)


def test_read_locks_share_and_getlk_reports_a_to_eof_lock(path):
    fd = os.open(path, os.O_RDWR)
    try:
        with Children() as kids:
            pid = fs.hold_in_child(kids, path, lambda f: fs.setlk(f, 10, 0, "read"))  # length 0: to EOF
            assert fs.getlk(fd, 10, 1, "read") is None
            assert fs.getlk(fd, 1 << 40, 1, "write") == fs.LockHolder(pid, 10, 0, "read")
            fs.setlk(fd, 0, 0, "read")
    finally:
        os.close(fd)


def _release_later(path, ready_w, delay_s):
    fd = os.open(path, os.O_RDWR)
    fs.setlk(fd, 0, 10, "write")
    os.write(ready_w, b"!")
    time.sleep(delay_s)
    fs.setlk(fd, 0, 10, "unlock")
    time.sleep(60)


def test_hold_in_child_reports_a_holder_that_dies_first(path):
    with Children() as kids:
        with pytest.raises(RuntimeError, match="exited before taking its lock"):
            fs.hold_in_child(kids, path, lambda fd: 1 / 0)


def test_setlkw_waits_until_the_holder_unlocks(path):
    fd = os.open(path, os.O_RDWR)
    try:
        with Children() as kids:
            r, w = os.pipe()
            kids.fork(_release_later, path, w, 0.3)
            os.close(w)
            assert os.read(r, 1) == b"!"
            os.close(r)
            start = time.monotonic()
            fs.setlk(fd, 0, 10, "write", wait=True)
            assert time.monotonic() - start >= 0.2
    finally:
        os.close(fd)


def test_process_locks_ignore_a_second_open_and_die_with_any_close(path):
    a, b = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        fs.setlk(a, 0, 10)
        fs.setlk(b, 0, 10)  # same process: no conflict, whichever fd
        os.close(b)
        b = None
        with Children() as kids:
            # POSIX: closing any fd of the file drops the process's locks on it.
            r, w = os.pipe()
            pid = kids.fork(lambda: os.write(w, b"0" if fs.getlk(os.open(path, os.O_RDWR), 0, 10) is None else b"1"))
            os.close(w)
            assert os.read(r, 1) == b"0"
            os.close(r)
            kids.wait(pid)
    finally:
        os.close(a)
        if b is not None:
            os.close(b)


def test_ofd_locks_conflict_between_descriptions_and_report_pid_minus_1(path):
    a, b = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        fs.setlk(a, 0, 10, ofd=True)
        assert fs.getlk(b, 0, 10, ofd=True) == fs.LockHolder(-1, 0, 10, "write")
        with pytest.raises(BlockingIOError):
            fs.setlk(b, 5, 1, "read", ofd=True)
        fs.setlk(b, 10, 10, ofd=True)
        fs.setlk(a, 0, 10, "unlock", ofd=True)
        assert fs.getlk(b, 0, 10, ofd=True) is None
    finally:
        os.close(a)
        os.close(b)


def test_lock_arguments_are_checked_before_fcntl(path):
    for bad in (lambda: fs.setlk(0, -1, 1), lambda: fs.setlk(0, 0, 1, "exclusive"),
                lambda: fs.getlk(0, 0, 1, "unlock"), lambda: fs.setlk(0, 0, 2 ** 63)):
        with pytest.raises(ValueError):
            bad()
