import errno
import os
import stat

import pytest

from osvirt.ipc import Fifo
from osvirt.process import Children


def test_fifo_is_mode_0600_in_a_private_directory_and_removed_on_close():
    old = os.umask(0)  # mode must not depend on the umask
    try:
        fifo = Fifo()
    finally:
        os.umask(old)
    with fifo:
        st = os.stat(fifo.path)
        assert stat.S_ISFIFO(st.st_mode) and fifo.mode == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(fifo.path)).st_mode) == 0o700
        assert os.path.basename(os.path.dirname(fifo.path)).startswith(f"osvirt-{os.getpid()}-")
    assert not os.path.exists(os.path.dirname(fifo.path))
    fifo.close()  # idempotent


def test_mkfifo_refuses_an_existing_path():
    with Fifo() as fifo:
        with pytest.raises(FileExistsError) as e:
            os.mkfifo(fifo.path, 0o600)
        assert e.value.errno == errno.EEXIST


def test_one_fifo_is_one_byte_stream_a_process_reads_its_own_write():
    with Fifo() as fifo:
        fd = os.open(fifo.path, os.O_RDWR | os.O_NONBLOCK)  # Linux: both ends in one open
        try:
            os.write(fd, b"ping")
            assert os.read(fd, 10) == b"ping"
        finally:
            os.close(fd)


def test_a_forked_copy_does_not_remove_its_parents_fifo():
    with Fifo() as fifo, Children() as kids:
        assert kids.wait(kids.fork(fifo.close)) == 0
        assert stat.S_ISFIFO(os.stat(fifo.path).st_mode)


@pytest.mark.parametrize("name", ["", "a/b", "..", "."])
def test_fifo_name_must_be_one_component(name):
    with pytest.raises(ValueError, match="mkfifo"):
        Fifo(name)


def test_write_all_without_a_reader_times_out():
    with Fifo() as fifo, pytest.raises(TimeoutError):
        fifo.write_all(b"x", timeout_s=0.05)


def test_read_all_without_a_writer_times_out():
    with Fifo() as fifo, pytest.raises(TimeoutError):
        fifo.read_all(timeout_s=0.05)


def test_read_all_reads_every_writer_until_eof():
    with Fifo() as fifo, Children() as kids:
        pid = kids.fork(fifo.write_all, bytes(200_000))  # more than the capacity: read_all must drain
        assert fifo.read_all() == bytes(200_000)
        assert kids.wait(pid) == 0


@pytest.mark.parametrize("timeout_s", [-1, None])
def test_bad_timeouts_are_rejected(timeout_s):
    with Fifo() as fifo, pytest.raises(ValueError):
        fifo.read_all(timeout_s)
