import errno
import gc
import os
import sys

from osvirt._owned import Owned, OwnedFd
from osvirt.process import Children


class _Tracked(Owned):
    """Counts the closes that would remove the kernel object (creator only)."""

    removed = 0

    def __init__(self, fail=False):
        if fail:
            raise RuntimeError("half-built")
        self._creator = os.getpid()
        self._open = True

    def close(self):
        if getattr(self, "_open", False):
            self._open = False
            if self._is_creator:
                type(self).removed += 1


def test_context_manager_closes_once():
    _Tracked.removed = 0
    with _Tracked() as obj:
        assert obj._is_creator
    obj.close()
    del obj
    assert _Tracked.removed == 1


def test_half_built_object_del_is_safe(monkeypatch):
    class Half(OwnedFd):
        def __init__(self):
            raise RuntimeError("before the open")

    raised_in_del = []
    monkeypatch.setattr(sys, "unraisablehook", raised_in_del.append)
    try:
        Half()
    except RuntimeError:
        pass
    gc.collect()
    assert raised_in_del == []


def test_forked_childs_copy_is_not_the_creator():
    r, w = os.pipe()
    obj = _Tracked()
    with Children() as kids:
        pid = kids.fork(lambda: os.write(w, b"1" if obj._is_creator else b"0") and 0)
        assert kids.wait(pid, timeout_s=10) == 0
    assert os.read(r, 1) == b"0"  # the child saw a copy it did not create
    assert obj._is_creator
    os.close(r)
    os.close(w)
    obj.close()


def test_owned_fd_closes_the_descriptor_once():
    fd = os.open(os.devnull, os.O_RDONLY)

    class Dev(OwnedFd):
        what = "null device"

    dev = Dev()
    dev.fd = fd
    with dev:
        assert dev._open_fd() == fd
    assert dev.fd == -1
    try:
        os.fstat(fd)
    except OSError as e:
        assert e.errno == errno.EBADF  # the kernel no longer knows the number
    else:
        raise AssertionError(f"fd {fd} still open after close()")
    dev.close()
