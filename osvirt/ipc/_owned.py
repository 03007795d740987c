"""What every kernel object osvirt.ipc owns shares: a context manager whose close() is idempotent.

Only the process that created an object removes it: a forked child holds a
copy of the owner, and its close() must let go of its own handle only,
never unlink what its parent still uses.
"""
import os


class Owned:
    """Base of the owners: subclasses set `_creator` and implement `close()`."""

    _creator = None  # pid of the process that created the object (None: opened, not owned)

    @property
    def _is_creator(self):
        return self._creator == os.getpid()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        # __init__ may have failed before the object held anything.
        if "_closed" in vars(self):
            self.close()
