"""Loop devices: a regular file served as a block device by the loop driver.

The kernel keeps a pool of loop devices; /dev/loop-control hands out a free
one (LOOP_CTL_GET_FREE, creating it if needed). Attaching binds a backing
file to it (LOOP_CONFIGURE, or on kernels before 5.8 LOOP_SET_FD then
LOOP_SET_STATUS64); from then on /dev/loopN is a block device whose size is
the file's (BLKGETSIZE64) and whose sysfs directory names the file
(/sys/block/loopN/loop/backing_file). LOOP_CLR_FD detaches it.

`LoopDevice` always detaches: it attaches with LO_FLAGS_AUTOCLEAR, so the
kernel itself detaches the device when the last descriptor closes, even if
this process is SIGKILLed, and `close()` asks for LOOP_CLR_FD and closes.
All of this needs read-write opens of /dev/loop-control and /dev/loopN, no
capability (osvirt.env.can("loop")).
"""
import errno
import glob
import os
import time

from osvirt.device import _native
from osvirt._owned import OwnedFd
from osvirt.device.ioctl import (BLKGETSIZE64, BLKSSZGET, LOOP_CLR_FD, LOOP_CONFIGURE,
                                 LOOP_CTL_GET_FREE, LOOP_GET_STATUS64, LOOP_SET_FD,
                                 LOOP_SET_STATUS64, ioctl, ioctl_int)
from osvirt.errors import kernel_error

__all__ = ["LoopDevice", "get_free", "attached", "backing_file", "block_size_bytes", "size_bytes"]

LOOP_CONTROL = "/dev/loop-control"
_BLOCK_SIZES = (512, 1024, 2048, 4096)  # the loop driver accepts powers of two from 512 to the page size


def get_free() -> int:
    """LOOP_CTL_GET_FREE: the number of a free loop device (the kernel adds one if none is)."""
    try:
        fd = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        assert e.errno is not None  # set by every failed system call
        raise kernel_error(e.errno, f"open({LOOP_CONTROL})", "needs read-write access to it", LOOP_CONTROL) from None
    try:
        return ioctl(fd, LOOP_CTL_GET_FREE, name="LOOP_CTL_GET_FREE")
    finally:
        os.close(fd)


def size_bytes(fd: int) -> int:
    """BLKGETSIZE64: a block device's size in bytes."""
    return ioctl_int(fd, BLKGETSIZE64, name="BLKGETSIZE64", fmt="Q")


def block_size_bytes(fd: int) -> int:
    """BLKSSZGET: a block device's logical block (sector) size in bytes."""
    return ioctl_int(fd, BLKSSZGET, name="BLKSSZGET")


def backing_file(number: int) -> str | None:
    """The file loop device `number` serves, from sysfs; None when it is detached."""
    try:
        with open(f"/sys/block/loop{int(number)}/loop/backing_file") as f:
            return f.read().rstrip("\n")
    except FileNotFoundError:
        return None


def attached() -> dict[int, str]:
    """{loop number: backing file} for every attached loop device, from sysfs."""
    found = {}
    for path in glob.glob("/sys/block/loop*/loop/backing_file"):
        number = int(path.split("/")[3][4:])
        try:
            with open(path) as f:
                found[number] = f.read().rstrip("\n")
        except FileNotFoundError:  # detached since the glob
            pass
    return found


class LoopDevice(OwnedFd):
    """A loop device from the kernel's pool attached to `backing`, detached on close.

    configure=False attaches the way kernels before 5.8 must (LOOP_SET_FD,
    then LOOP_SET_STATUS64 for the flags and name); `method` says which ran.

    >>> with LoopDevice("/var/tmp/disk.img") as loop:   # doctest: +SKIP
    ...     loop.path, loop.size_bytes()
    ('/dev/loop3', 1048576)
    """

    def __init__(self, backing: str | bytes | os.PathLike[str] | os.PathLike[bytes], *, read_only: bool = False,
                 block_size: int = 0, configure: bool = True, attempts: int = 5) -> None:
        if not isinstance(backing, (str, bytes, os.PathLike)):
            raise TypeError(f"loop device: backing must be a path, not {type(backing).__name__}")
        if block_size != 0 and block_size not in _BLOCK_SIZES:
            raise ValueError(f"loop device: block_size must be 0 (default) or one of {_BLOCK_SIZES}, not {block_size}")
        if block_size and not configure:
            raise ValueError("loop device: block_size needs LOOP_CONFIGURE (configure=True)")
        if type(attempts) is not int or attempts < 1:
            raise ValueError(f"loop device: attempts must be a positive int, not {attempts!r}")
        self.number: int | None = None
        self.backing = os.path.abspath(os.fsdecode(backing))
        self.method: str | None = None
        flags = _native.LO_FLAGS_AUTOCLEAR | (_native.LO_FLAGS_READ_ONLY if read_only else 0)
        file_fd = os.open(self.backing, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
        try:
            # Another process may take the free device between GET_FREE and the
            # attach: the attach then fails with EBUSY, and we ask again.
            for attempt in range(attempts):
                number = get_free()
                fd = os.open(f"/dev/loop{number}", (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
                try:
                    self.method = self._attach(fd, file_fd, block_size, flags, configure)
                except BaseException as e:  # Ctrl-C too: closing undoes an autoclear attach
                    os.close(fd)
                    if not isinstance(e, OSError) or e.errno != errno.EBUSY or attempt == attempts - 1:
                        raise
                    continue
                self.fd, self.number = fd, number
                break
        finally:
            os.close(file_fd)  # the loop driver holds its own reference to the file

    def _attach(self, fd: int, file_fd: int, block_size: int, flags: int, configure: bool) -> str:
        if configure:
            try:
                ioctl(fd, LOOP_CONFIGURE, _native.loop_config(file_fd, block_size, self.backing, flags),
                      name="LOOP_CONFIGURE")
                return "LOOP_CONFIGURE"
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOTTY):  # kernels before 5.8 lack LOOP_CONFIGURE
                    raise
        ioctl(fd, LOOP_SET_FD, file_fd, name="LOOP_SET_FD")
        try:
            ioctl(fd, LOOP_SET_STATUS64, _native.loop_info64(self.backing, flags), name="LOOP_SET_STATUS64")
        except BaseException:
            ioctl(fd, LOOP_CLR_FD, name="LOOP_CLR_FD")
            raise
        return "LOOP_SET_FD + LOOP_SET_STATUS64"

    @property
    def what(self) -> str:  # type: ignore[override]  # OwnedFd's is a class attribute; a loop device's name comes with its number
        return f"loop device {self.path}"

    @property
    def path(self) -> str:
        return f"/dev/loop{self.number}"

    def size_bytes(self) -> int:
        """BLKGETSIZE64 on the device."""
        return size_bytes(self._open_fd())

    def block_size_bytes(self) -> int:
        """BLKSSZGET on the device."""
        return block_size_bytes(self._open_fd())

    def file_name(self) -> str:
        """lo_file_name, as LOOP_GET_STATUS64 returns it (the kernel's copy, truncated to 63 bytes)."""
        data = ioctl(self._open_fd(), LOOP_GET_STATUS64, bytes(_native.LOOP_INFO64_SIZE), name="LOOP_GET_STATUS64")
        return _native.loop_info64_file_name(data)

    def close(self, timeout_s: float = 2.0) -> None:
        """LOOP_CLR_FD and close; waits (up to timeout_s) until sysfs shows it detached. Idempotent."""
        fd, self.fd = self.fd, -1
        if fd < 0:
            return
        try:
            ioctl(fd, LOOP_CLR_FD, name="LOOP_CLR_FD")
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: already detached
                raise
        finally:
            os.close(fd)  # the last close: autoclear detaches if LOOP_CLR_FD could not
        # The detach completes when the last opener (perhaps udev, briefly) closes.
        assert self.number is not None  # set with fd
        deadline = time.monotonic() + timeout_s
        while backing_file(self.number) == self.backing and time.monotonic() < deadline:
            time.sleep(0.01)

    def __del__(self) -> None:
        if self.fd >= 0:
            self.close(timeout_s=0)

    def __repr__(self) -> str:
        return f"<LoopDevice {self.path if self.number is not None else '?'} -> {self.backing}>"
