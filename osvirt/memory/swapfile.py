"""A temporary swap file: made, enabled, and always disabled and removed.

`SwapFile(size_mb)` allocates a file on a disk filesystem (fallocate: no
holes, which swapon refuses), writes the swap header itself (the layout of
`union swap_header` in <linux/swap.h>: version 1, last usable page, no bad
pages, and the "SWAPSPACE2" signature in the last 10 bytes of page 0),
and enables it with swapon(2) at the lowest priority, so it is used only
after any swap the machine already had. `close()` (idempotent; also on
`with` exit) runs swapoff(2), which brings every page in it back to RAM,
then removes the file. swapon and swapoff need CAP_SYS_ADMIN.
"""
import os
import struct

from osvirt import tracker
from osvirt._owned import Owned
from osvirt.memory import _native
from osvirt.naming import unique_name

__all__ = ["SwapFile", "swaps"]

_PAGE = os.sysconf("SC_PAGE_SIZE")
_SIGNATURE = b"SWAPSPACE2"
# A tmpfs or ramfs cannot hold a swap file; /var/tmp is on disk by the FHS.
DEFAULT_DIRECTORY = "/var/tmp"


def swaps() -> list[str]:
    """The paths /proc/swaps lists (active swap devices and files)."""
    with open("/proc/swaps") as f:
        return [line.split()[0].replace("\\040", " ") for line in list(f)[1:]]


def _header(pages: int) -> bytes:
    import uuid  # for the one call that writes a header
    info = struct.pack("<III16s16s", 1, pages - 1, 0, uuid.uuid4().bytes, b"osvirt")
    page = bytearray(_PAGE)
    page[1024:1024 + len(info)] = info
    page[-len(_SIGNATURE):] = _SIGNATURE
    return bytes(page)


class SwapFile(Owned):
    """A swap file of `size_mb` MiB in `directory` (a temp directory: osvirt.tracker
    swaps it off and removes it should this process be SIGKILLed), active until `close()`.

    Only the process that created it swaps it off and removes it: a forked
    child's copy closing (its __del__) leaves it alone.
    """

    path: str | None = None  # until the file exists
    active = False

    def __init__(self, size_mb: int, directory: str | os.PathLike[str] = DEFAULT_DIRECTORY) -> None:
        if isinstance(size_mb, bool) or not isinstance(size_mb, int):
            raise TypeError(f"swap file: size_mb must be an int, not {type(size_mb).__name__}")
        if not 1 <= size_mb <= 1 << 20:
            raise ValueError(f"swap file: size_mb {size_mb} not in 1..{1 << 20}")
        path = os.path.join(os.path.abspath(directory), unique_name("swap"))
        with tracker.tracked("swap", path):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self.path, self._creator = path, os.getpid()
        try:
            size = size_mb << 20
            os.posix_fallocate(fd, 0, size)
            os.pwrite(fd, _header(size // _PAGE), 0)
            os.fsync(fd)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(fd)
        try:
            _native.swapon(path, 0)  # no SWAP_FLAG_PREFER: the kernel gives it the lowest priority
        except BaseException:
            self.close()
            raise
        self.active = True

    def close(self) -> None:
        """swapoff (every page in it comes back to RAM) and remove the file. Idempotent."""
        path, self.path = self.path, None
        if path is None or not self._is_creator:
            return
        try:
            if self.active:
                self.active = False
                _native.swapoff(path)
        finally:
            os.unlink(path)
            tracker.unregister("swap", path)
