"""Loop devices (where /dev/loop-control opens read-write): taken from the pool, attached, sized, detached; nothing left attached."""
import errno
import os
import signal
import time

import pytest

from osvirt import env
from osvirt.device import loop
from osvirt.device.pty import read_line
from osvirt.naming import private_dir, unique_name
from osvirt.process import Children

SIZE = 3 * 1024 * 1024 + 4096  # not a power of two: the device's size must be the file's


@pytest.fixture
def backing():
    with private_dir() as d:
        path = os.path.join(d, unique_name("disk.img"))
        with open(path, "wb") as f:
            f.truncate(SIZE)
        yield path


@pytest.mark.needs("loop")
@pytest.mark.parametrize("configure", [True, False], ids=["LOOP_CONFIGURE", "LOOP_SET_FD"])
def test_attach_size_and_detach(backing, configure):
    with loop.LoopDevice(backing, configure=configure) as dev:
        assert dev.method == ("LOOP_CONFIGURE" if configure else "LOOP_SET_FD + LOOP_SET_STATUS64")
        assert loop.attached()[dev.number] == backing  # sysfs names the file
        assert dev.file_name() == backing[:63]  # and LOOP_GET_STATUS64, in 64 bytes with the NUL
        assert dev.size_bytes() == os.path.getsize(backing) == SIZE
        assert dev.block_size_bytes() == 512
        number = dev.number
    assert loop.backing_file(number) != backing
    assert backing not in loop.attached().values()
    dev.close()  # idempotent


@pytest.mark.needs("loop")
def test_block_size_and_read_only(backing):
    with loop.LoopDevice(backing, block_size=4096, read_only=True) as dev:
        assert dev.block_size_bytes() == 4096
        assert open(f"/sys/block/loop{dev.number}/ro").read() == "1\n"
        fd = os.open(dev.path, os.O_WRONLY)
        try:
            with pytest.raises(PermissionError):  # the open succeeds, the write is refused: EPERM
                os.write(fd, bytes(4096))
        finally:
            os.close(fd)
    assert backing not in loop.attached().values()


@pytest.mark.needs("loop")
def test_an_exception_inside_still_detaches(backing):
    with pytest.raises(RuntimeError):
        with loop.LoopDevice(backing) as dev:
            raise RuntimeError("boom")
    assert loop.backing_file(dev.number) != backing


@pytest.mark.needs("loop")
def test_the_kernel_detaches_when_the_owner_is_killed(backing):
    r, w = os.pipe()
    try:
        def hold():
            dev = loop.LoopDevice(backing)
            os.write(w, f"{dev.number}\n".encode())
            signal.pause()

        with Children() as kids:
            pid = kids.fork(hold)
            number = int(read_line(r, 10))
            assert loop.backing_file(number) == backing
            os.kill(pid, signal.SIGKILL)  # no Python cleanup runs: LO_FLAGS_AUTOCLEAR does it
            assert kids.wait(pid, timeout_s=10) == -signal.SIGKILL
    finally:
        os.close(r)
        os.close(w)
    deadline = time.monotonic() + 5
    while loop.backing_file(number) == backing and time.monotonic() < deadline:
        time.sleep(0.02)
    assert loop.backing_file(number) != backing


def test_bad_arguments_raise_before_any_syscall(backing):
    with pytest.raises(ValueError, match="block_size"):
        loop.LoopDevice(backing, block_size=1000)
    with pytest.raises(ValueError, match="LOOP_CONFIGURE"):
        loop.LoopDevice(backing, block_size=4096, configure=False)
    with pytest.raises(TypeError):
        loop.LoopDevice(3)
    with pytest.raises(ValueError, match="attempts"):
        loop.LoopDevice(backing, attempts=0)


@pytest.mark.needs("not_loop")
def test_without_loop_control_the_probe_and_the_kernel_agree(backing):
    answer = env.can("loop")
    with pytest.raises(OSError) as e:
        loop.get_free()
    assert errno.errorcode[e.value.errno] in answer.reason  # EACCES unprivileged; ENOENT or EPERM in a container
    assert "loop-control" in str(e.value)
