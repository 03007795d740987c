import errno
import os

import pytest

from osvirt import env
from osvirt.ipc import PIPE_BUF, Pipe, concurrent_writes, fill, get_pipe_size, pipe_max_size, set_pipe_size
from osvirt.process import Children


def test_pipe_buf_is_what_the_kernel_reports():
    with Pipe() as p:
        assert PIPE_BUF == os.fpathconf(p.write_fd, "PC_PIPE_BUF") == 4096


def test_pipe_is_one_way_and_eof_after_the_write_end_closes():
    with Pipe() as p:
        with pytest.raises(OSError) as e:
            os.write(p.read_fd, b"x")
        assert e.value.errno == errno.EBADF
        os.write(p.write_fd, b"abc")
        p.close_write()
        assert os.read(p.read_fd, 10) == b"abc"
        assert os.read(p.read_fd, 10) == b""


def test_close_is_idempotent_and_sets_the_fds_to_minus_one():
    p = Pipe()
    r = p.read_fd
    p.close()
    p.close()
    assert (p.read_fd, p.write_fd) == (-1, -1)
    with pytest.raises(OSError):
        os.fstat(r)


def test_fill_measures_the_capacity_and_set_pipe_size_changes_it():
    with Pipe() as p:
        assert get_pipe_size(p.write_fd) == 65536
        assert fill(p.write_fd) == 65536
        assert os.get_blocking(p.write_fd)  # restored
        os.read(p.read_fd, 65536)
        assert set_pipe_size(p.write_fd, 100_000) == 131072  # rounded up to a power of two of pages
        assert fill(p.write_fd) == 131072 == get_pipe_size(p.read_fd)


def test_shrinking_below_the_contents_is_ebusy():
    with Pipe() as p:
        os.write(p.write_fd, bytes(3 * 4096))
        with pytest.raises(OSError) as e:
            set_pipe_size(p.write_fd, 4096)
        assert e.value.errno == errno.EBUSY


def test_above_pipe_max_size_is_eperm_without_cap_sys_resource():
    if env.can("cap_sys_resource"):
        pytest.skip("CAP_SYS_RESOURCE lets F_SETPIPE_SZ go past pipe-max-size")
    with Pipe() as p:
        with pytest.raises(PermissionError) as e:
            set_pipe_size(p.write_fd, pipe_max_size() * 2)
        assert e.value.errno == errno.EPERM and "CAP_SYS_RESOURCE" in str(e.value)


def test_get_pipe_size_of_a_non_pipe_is_ebadf():
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            get_pipe_size(fd)
        assert e.value.errno == errno.EBADF
    finally:
        os.close(fd)


@pytest.mark.parametrize("fd, error", [(True, TypeError), ("3", TypeError), (1.0, TypeError), (-1, ValueError),
                                       (2**31, ValueError)])
def test_a_bad_fd_is_refused_before_any_call(fd, error):
    with pytest.raises(error, match=r"^fcntl\(F_GETPIPE_SZ\): fd"):
        get_pipe_size(fd)


@pytest.mark.parametrize("size", [0, -1, 2**31, 1.5])
def test_set_pipe_size_rejects_bad_sizes(size):
    with Pipe() as p, pytest.raises(ValueError, match="F_SETPIPE_SZ"):
        set_pipe_size(p.write_fd, size)


def test_writes_of_pipe_buf_never_interleave():
    with Children() as kids:
        result = concurrent_writes(kids, writers=4, records=500, record_bytes=PIPE_BUF)
    assert result == (2000, 0, 0)


def test_writes_larger_than_the_capacity_interleave():
    for _ in range(3):  # likely, not promised: retry before failing
        with Children() as kids:
            result = concurrent_writes(kids, writers=4, records=8, record_bytes=256 * 1024)
        if result.torn:
            break
    assert result.records == 32 and result.torn > 0


@pytest.mark.parametrize("kwargs", [dict(writers=0, records=1, record_bytes=4096),
                                    dict(writers=1, records=-1, record_bytes=4096),
                                    dict(writers=1, records=1, record_bytes=2)])
def test_concurrent_writes_rejects_bad_arguments(kwargs):
    with Children() as kids, pytest.raises(ValueError):
        concurrent_writes(kids, **kwargs)
