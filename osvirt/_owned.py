"""The owner protocol every osvirt object that holds a kernel object follows.

An owner is a context manager whose `close()` is idempotent, and whose
`__del__` calls that same `close()`: so close() must also work on a
half-built object (`__init__` may have raised before it held anything;
subclasses give the attribute close() looks at a class-level "nothing held"
default, such as `fd = -1`).

Only the process that created a kernel object removes it: a forked child
holds a copy of the owner, and its close() lets go of its own handle only,
never unlinking or killing what its parent still uses. Owners set
`_creator = os.getpid()` when they create and ask `_is_creator` before removing.
"""
from __future__ import annotations

import os
from typing import TypeVar

__all__ = ["Owned", "OwnedFd"]


class Owned:
    """Base of the owners: subclasses implement an idempotent `close()`."""

    _creator: int | None = None  # pid of the process that created the object (None: opened, not owned)

    @property
    def _is_creator(self) -> bool:
        return self._creator is not None and self._creator == os.getpid()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _O) -> _O:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


# Bound to the class itself, not to its name: a string bound is a ForwardRef, whose
# compile() would be the process's first (~1.5 ms: the compiler's set-up) at import.
_O = TypeVar("_O", bound=Owned)


class OwnedFd(Owned):
    """Owns `self.fd`: close() sets it to -1 before closing (the number may be
    reused at once), so a second close does nothing. `what` names the object
    in the error a use after close() raises."""

    fd = -1
    what = "device"

    def _open_fd(self) -> int:
        if self.fd < 0:
            raise ValueError(f"{self.what}: closed")
        return self.fd

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
