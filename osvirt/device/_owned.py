"""The shape of every osvirt.device object that owns file descriptors."""
import os


class Owned:
    """A context manager whose exit and __del__ call close(), which subclasses
    make idempotent and safe on a half-built object (__init__ may have failed)."""

    def close(self):
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()


class OwnedFd(Owned):
    """Owns `self.fd`: close() sets it to -1 before closing (the number may be
    reused at once), so a second close does nothing."""

    fd = -1
    what = "device"

    def _open_fd(self):
        if self.fd < 0:
            raise ValueError(f"{self.what}: closed")
        return self.fd

    def close(self):
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
