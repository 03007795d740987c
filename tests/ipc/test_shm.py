import errno
import os
import time

import posix_ipc
import pytest

from osvirt.ipc import Memfd, PosixSharedMemory, SysVSharedMemory
from osvirt.process import Children


def _wait_for(buffer, value, timeout_s=10):
    deadline = time.monotonic() + timeout_s
    while bytes(buffer[:len(value)]) != value:  # plain loads from our mapping: no system call
        if time.monotonic() > deadline:
            return False
    return True


def _sysv_shm_ids():
    with open("/proc/sysvipc/shm") as f:
        return {int(line.split()[1]) for line in list(f)[1:]}


def test_posix_shm_write_by_another_opener_is_seen_and_unlinked_on_close():
    with PosixSharedMemory(8192) as shm, Children() as kids:
        assert os.stat(shm.path).st_mode & 0o777 == 0o600 and os.stat(shm.path).st_size == 8192

        def child():
            with PosixSharedMemory.open(shm.name) as other:
                other.buffer[:5] = b"hello"
        assert kids.wait(kids.fork(child)) == 0
        assert _wait_for(shm.buffer, b"hello")
        assert os.path.exists(shm.path)  # the child's close only unmapped
    assert not os.path.exists(shm.path)
    with pytest.raises(posix_ipc.ExistentialError):
        posix_ipc.SharedMemory(shm.name)


def test_sysv_shm_attached_by_id_in_another_process():
    with SysVSharedMemory(4096) as shm, Children() as kids:
        def child():
            with SysVSharedMemory.attach(shm.id) as other:
                other.buffer[100:103] = b"abc"
        assert kids.wait(kids.fork(child)) == 0
        assert bytes(shm.buffer[100:103]) == b"abc"
        with open("/proc/sysvipc/shm") as f:
            row = next(line.split() for line in f if line.split()[1] == str(shm.id))
        assert int(row[0]) == 0 and int(row[2], 8) & 0o777 == 0o600 and int(row[3]) == 4096
    assert shm.id not in _sysv_shm_ids()


def test_memfd_opened_by_path_shares_pages():
    with Memfd(3 * 4096) as mem, Children() as kids:
        def child():
            with Memfd.open(mem.path) as other:
                other.buffer[-1] = 42
                return other.size_bytes // 4096
        assert kids.wait(kids.fork(child)) == 3
        assert mem.buffer[-1] == 42
        assert os.readlink(mem.path).startswith("/memfd:osvirt")
    assert mem.fd == -1


def test_opening_what_is_gone_is_enoent_or_einval():
    with PosixSharedMemory(4096) as shm, SysVSharedMemory(4096) as seg, Memfd(4096) as mem:
        pass
    with pytest.raises(FileNotFoundError) as e:
        PosixSharedMemory.open(shm.name)
    assert e.value.errno == errno.ENOENT
    with pytest.raises(OSError) as e:
        SysVSharedMemory.attach(seg.id)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(FileNotFoundError):
        Memfd.open(mem.path.rsplit("/", 1)[0] + "/999999")


def _mapped(path, inode):
    """Whether /proc/self/maps has a mapping of `path` (a prefix: maps may add " (deleted)") with that inode."""
    with open("/proc/self/maps") as maps:
        return any(f[4] == str(inode) and f[5].startswith(path) for f in map(str.split, maps) if len(f) > 5)


def test_close_unmaps_and_removes_once_and_a_second_close_touches_nothing():
    posix, sysv, memfd = PosixSharedMemory(4096), SysVSharedMemory(4096), Memfd(4096)
    fd = memfd.fd
    # How the kernel lists each mapping: a SysV segment's inode is its id.
    mappings = [(posix.path, os.stat(posix.path).st_ino), ("/SYSV00000000", sysv.id),
                ("/memfd:osvirt", os.fstat(fd).st_ino)]
    assert all(_mapped(*m) for m in mappings)
    for shm in (posix, sysv, memfd):
        shm.close()
    assert not [m for m in mappings if _mapped(*m)]
    assert not os.path.exists(posix.path) and sysv.id not in _sysv_shm_ids()
    with pytest.raises(OSError) as e:
        os.fstat(fd)
    assert e.value.errno == errno.EBADF and memfd.fd == -1
    reused = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        assert reused == fd  # the lowest free number: the one the memfd's close freed
        for shm in (posix, sysv, memfd):
            shm.close()
        os.fstat(reused)  # still open: the second close did not close the number again
    finally:
        os.close(reused)


@pytest.mark.parametrize("cls", [PosixSharedMemory, SysVSharedMemory, Memfd])
@pytest.mark.parametrize("size", [0, -4096])
def test_bad_sizes_are_rejected(cls, size):
    with pytest.raises(ValueError, match="size_bytes"):
        cls(size)
